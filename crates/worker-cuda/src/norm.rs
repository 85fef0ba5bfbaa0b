//! Row normalizations: RMS norm and layer norm, one block per row, with an
//! optional weight (and, for layer norm, bias).

use crate::backend::{CudaBackend, CudaBuf, i32_of, need};
use crate::kernels::per_row;
use crate::weight::CudaWeight;
use cudarc::driver::PushKernelArg;
use worker_compute::Result;

impl CudaBackend {
    pub(crate) fn rms_norm_impl(
        &self,
        x: &mut CudaBuf,
        rows: usize,
        dim: usize,
        w: Option<&CudaWeight>,
        eps: f32,
    ) -> Result<()> {
        need(x, rows * dim, "rms_norm")?;
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let d = i32_of(dim, "dim")?;
        let null = 0u64;
        let mut a = self.stream.launch_builder(&self.k.rms_norm);
        a.arg(&mut x.0.data).arg(&d);
        match w {
            Some(w) => a.arg(&w.vector(dim, "a norm weight")?.data),
            None => a.arg(&null),
        };
        a.arg(&eps);
        self.launch(a, per_row(rows, 256), "an RMS norm")
    }

    pub(crate) fn layer_norm_impl(
        &self,
        x: &mut CudaBuf,
        rows: usize,
        dim: usize,
        w: &CudaWeight,
        b: Option<&CudaWeight>,
        eps: f32,
    ) -> Result<()> {
        need(x, rows * dim, "layer_norm")?;
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let w = w.vector(dim, "a norm weight")?;
        let d = i32_of(dim, "dim")?;
        let null = 0u64;
        let mut a = self.stream.launch_builder(&self.k.layer_norm);
        a.arg(&mut x.0.data).arg(&d).arg(&w.data);
        match b {
            Some(b) => a.arg(&b.vector(dim, "a norm bias")?.data),
            None => a.arg(&null),
        };
        a.arg(&eps);
        self.launch(a, per_row(rows, 256), "a layer norm")
    }
}
