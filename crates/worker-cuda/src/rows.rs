//! Row ops of the CUDA backend: the embedding lookup, gathering,
//! scattering-adding and scaling rows of a buffer, and copying columns out
//! of fused projections. The row indices, token ids and multipliers are
//! staged on the device per call.

use crate::backend::{CudaBackend, CudaBuf, i32_of, need, shape};
use crate::kernels::per_element;
use crate::memory::Counted;
use crate::staging::Staging;
use crate::weight::{CudaWeight, DeviceMatrix};
use cudarc::driver::PushKernelArg;
use worker_compute::{ComputeError, Result};

impl CudaBackend {
    /// Stages `rows` as the device's i32 row indices.
    fn stage_row_indices<'a>(
        &self,
        st: &'a mut Staging,
        rows: &[usize],
    ) -> Result<&'a Counted<i32>> {
        let idx: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
        self.stage(&mut st.ints, &idx)?;
        st.ints
            .as_ref()
            .ok_or_else(|| ComputeError::Device("staging".into()))
    }

    pub(crate) fn add_rows_impl(
        &self,
        dst: &mut CudaBuf,
        src: &CudaBuf,
        rows: &[usize],
        dim: usize,
    ) -> Result<()> {
        need(src, rows.len() * dim, "add_rows")?;
        if let Some(&bad) = rows.iter().find(|&&r| (r + 1) * dim > dst.len()) {
            return Err(shape(format!("add_rows: row {bad} beyond the buffer")));
        }
        if rows.is_empty() || dim == 0 {
            return Ok(());
        }
        let mut st = self.staging();
        let dev = self.stage_row_indices(&mut st, rows)?;
        let (n, d) = (rows.len() as i32, i32_of(dim, "dim")?);
        let (mut a, cfg) = self.elementwise(&self.k.add_rows_f32, rows.len() * dim);
        a.arg(&mut dst.0.data)
            .arg(&src.0.data)
            .arg(&dev.data)
            .arg(&n)
            .arg(&d);
        self.launch(a, cfg, "a row add")
    }

    pub(crate) fn scale_rows_impl(
        &self,
        x: &mut CudaBuf,
        width: usize,
        factors: &[f32],
    ) -> Result<()> {
        need(x, factors.len() * width, "scale_rows")?;
        if factors.is_empty() || width == 0 {
            return Ok(());
        }
        let mut st = self.staging();
        self.stage(&mut st.row_scales, factors)?;
        let Some(dev) = st.row_scales.as_ref() else {
            return Err(ComputeError::Device("staging".into()));
        };
        let (n, w) = (factors.len() as i64, i32_of(width, "width")?);
        let (mut a, cfg) = self.elementwise(&self.k.scale_rows_f32, factors.len() * width);
        a.arg(&mut x.0.data).arg(&dev.data).arg(&n).arg(&w);
        self.launch(a, cfg, "a row scale")
    }

    pub(crate) fn gather_rows_impl(
        &self,
        src: &CudaBuf,
        rows: &[usize],
        dim: usize,
        dst: &mut CudaBuf,
    ) -> Result<()> {
        need(dst, rows.len() * dim, "gather_rows")?;
        if let Some(&bad) = rows.iter().find(|&&r| (r + 1) * dim > src.len()) {
            return Err(shape(format!("row {bad} beyond the buffer")));
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut st = self.staging();
        let dev = self.stage_row_indices(&mut st, rows)?;
        let (n, d) = (rows.len() as i32, i32_of(dim, "dim")?);
        let (mut a, cfg) = self.elementwise(&self.k.gather_rows, rows.len() * dim);
        a.arg(&src.0.data)
            .arg(&dev.data)
            .arg(&n)
            .arg(&d)
            .arg(&mut dst.0.data);
        self.launch(a, cfg, "a row gather")
    }

    pub(crate) fn copy_cols_impl(
        &self,
        src: &CudaBuf,
        n: usize,
        stride: usize,
        col: usize,
        width: usize,
        dst: &mut CudaBuf,
    ) -> Result<()> {
        need(src, n * stride, "copy_cols")?;
        need(dst, n * width, "copy_cols")?;
        if col + width > stride {
            return Err(shape(format!(
                "columns {col}+{width} beyond rows of {stride}"
            )));
        }
        let (nn, s, c, w) = (
            n as i64,
            i32_of(stride, "stride")?,
            col as i32,
            width as i32,
        );
        let (mut a, cfg) = self.elementwise(&self.k.copy_cols, n * width);
        a.arg(&src.0.data)
            .arg(&nn)
            .arg(&s)
            .arg(&c)
            .arg(&w)
            .arg(&mut dst.0.data);
        self.launch(a, cfg, "a column copy")
    }

    /// The embedding lookup: rows `ids` of `table`, decoded to f32.
    pub(crate) fn get_rows_impl(
        &self,
        table: &CudaWeight,
        ids: &[u32],
        out: &mut CudaBuf,
    ) -> Result<()> {
        let DeviceMatrix {
            data,
            code,
            rows,
            cols,
            row_bytes,
            ..
        } = table.matrix("get_rows")?;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= *rows) {
            return Err(shape(format!(
                "token id {bad} beyond {rows} embedding rows"
            )));
        }
        need(out, ids.len() * cols, "get_rows")?;
        let ids: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let mut st = self.staging();
        self.stage(&mut st.ints, &ids)?;
        let Some(dev_ids) = st.ints.as_ref() else {
            return Err(ComputeError::Device("staging".into()));
        };
        let (rb, c, n) = (*row_bytes as i64, i32_of(*cols, "cols")?, ids.len() as i32);
        let mut a = self.stream.launch_builder(&self.k.get_rows);
        a.arg(code)
            .arg(&data.data)
            .arg(&rb)
            .arg(&c)
            .arg(&dev_ids.data)
            .arg(&n)
            .arg(&mut out.0.data);
        self.launch(
            a,
            per_element(ids.len() * (cols / 32)),
            "an embedding lookup",
        )
    }
}
