//! Token choice on the device: the argmax of each logits row (greedy
//! sampling), a draw at a temperature from the whole row (sampling without
//! a top-k), and the top-k candidates of each row (top-k sampling), so a
//! step sends the host token ids or a few pairs per row, not the
//! vocabulary's logits (`kernels/select.cu`).

use crate::backend::{CudaBackend, CudaBuf, i32_of, need};
use crate::kernels::per_row;
use crate::memory::{self, Counted, driver_error};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use worker_compute::{Backend, ComputeError, Result, select};

/// The most candidates per row the kernels keep (more are chosen on the
/// host from the whole rows).
pub const TOPK_MAX: usize = 256;
/// Keys one block sorts (`TOPK_CHUNK` in `kernels/select.cu`).
const CHUNK: usize = 4096;
/// Threads per sorting block.
const THREADS: u32 = 256;

/// The sorting passes for rows of `dim` keeping `k`: the values per row
/// each pass reads, until one chunk is left.
pub fn topk_passes(dim: usize, k: usize) -> Vec<usize> {
    let mut passes = vec![dim];
    let mut n = dim;
    while n > CHUNK {
        n = n.div_ceil(CHUNK) * k;
        passes.push(n);
    }
    passes
}

/// Threads per row of the draw (`DRAW_THREADS` in `kernels/select.cu`).
const DRAW_THREADS: u32 = 256;

/// The device array of chosen token ids, for at least `rows`.
fn ids_out<'a>(
    b: &CudaBackend,
    st: &'a mut crate::staging::Staging,
    rows: usize,
) -> Result<&'a mut Counted<i32>> {
    if st.ids_out.as_ref().is_none_or(|x| x.data.len() < rows) {
        b.flush()?;
        st.ids_out = None;
        st.ids_out = Some(memory::alloc(&b.stream, &b.counter, rows, "token ids")?);
    }
    st.ids_out
        .as_mut()
        .ok_or_else(|| ComputeError::Device("staging".into()))
}

fn grid(rows: usize, n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(CHUNK) as u32, rows as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaBackend {
    pub(crate) fn argmax_impl(
        &self,
        x: &CudaBuf,
        rows: usize,
        dim: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        // A recorded step ends here: it runs before its read-back.
        self.flush()?;
        need(x, rows * dim, "argmax")?;
        out.clear();
        if rows == 0 || dim == 0 {
            out.resize(rows, 0);
            return Ok(());
        }
        let d = i32_of(dim, "dim")?;
        let mut st = self.staging();
        let ids = ids_out(self, &mut st, rows)?;
        let mut a = self.stream.launch_builder(&self.k.argmax_rows);
        a.arg(&x.0.data).arg(&d).arg(&mut ids.data);
        self.launch(a, per_row(rows, 256), "an argmax")?;
        self.read_ids(ids, rows, out)
    }

    pub(crate) fn draw_impl(
        &self,
        x: &CudaBuf,
        rows: usize,
        dim: usize,
        temps: &[f32],
        us: &[f32],
        out: &mut Vec<u32>,
    ) -> Result<()> {
        self.flush()?;
        need(x, rows * dim, "draw")?;
        worker_compute::draw::check_params(rows, temps, us)?;
        out.clear();
        if rows == 0 || dim == 0 {
            out.resize(rows, 0);
            return Ok(());
        }
        let d = i32_of(dim, "dim")?;
        let mut st = self.staging();
        let st = &mut *st;
        self.stage(&mut st.draw_t, &temps[..rows])?;
        self.stage(&mut st.draw_u, &us[..rows])?;
        ids_out(self, st, rows)?;
        let (Some(ids), Some(t), Some(u)) =
            (st.ids_out.as_mut(), st.draw_t.as_ref(), st.draw_u.as_ref())
        else {
            return Err(ComputeError::Device("staging".into()));
        };
        let mut a = self.stream.launch_builder(&self.k.draw_rows);
        a.arg(&x.0.data)
            .arg(&d)
            .arg(&t.data)
            .arg(&u.data)
            .arg(&mut ids.data);
        self.launch(a, per_row(rows, DRAW_THREADS), "a draw")?;
        self.read_ids(ids, rows, out)
    }

    /// The first `rows` token ids of `ids`, after the kernels before them.
    fn read_ids(&self, ids: &Counted<i32>, rows: usize, out: &mut Vec<u32>) -> Result<()> {
        let mut host = vec![0i32; rows];
        let view = ids.data.slice(0..rows);
        self.stream
            .memcpy_dtoh(&view, &mut host)
            .map_err(|e| driver_error(e, "a device-to-host copy", 0))?;
        self.synchronize()?;
        out.clear();
        out.extend(host.iter().map(|&i| i.max(0) as u32));
        Ok(())
    }

    pub(crate) fn top_k_impl(
        &self,
        x: &CudaBuf,
        rows: usize,
        dim: usize,
        k: usize,
        out: &mut Vec<(u32, f32)>,
    ) -> Result<()> {
        self.flush()?;
        need(x, rows * dim, "top-k")?;
        out.clear();
        let k = k.min(dim);
        if rows == 0 || k == 0 {
            return Ok(());
        }
        if k > TOPK_MAX {
            let mut host = vec![0f32; rows * dim];
            self.read(x, &mut host)?;
            select::top_k_rows(&host, dim, k, out);
            return Ok(());
        }
        let passes = topk_passes(dim, k);
        let (n0, kk) = (i32_of(dim, "dim")?, i32_of(k, "k")?);
        // Two halves: each pass writes the half the previous one did not.
        let half = rows * dim.div_ceil(CHUNK) * k;
        let mut st = self.staging();
        if st.topk.as_ref().is_none_or(|b| b.data.len() < 2 * half) {
            st.topk = None;
            st.topk = Some(memory::alloc(
                &self.stream,
                &self.counter,
                (2 * half).next_power_of_two(),
                "top-k keys",
            )?);
        }
        let Some(keys) = st.topk.as_mut() else {
            return Err(ComputeError::Device("staging".into()));
        };
        let (mut a_half, mut b_half) = keys.data.split_at_mut(half);
        let mut a = self.stream.launch_builder(&self.k.topk_first);
        a.arg(&x.0.data).arg(&n0).arg(&kk).arg(&mut a_half);
        self.launch(a, grid(rows, dim), "a top-k pass")?;
        for &n in &passes[1..] {
            let nn = i32_of(n, "candidates")?;
            let mut a = self.stream.launch_builder(&self.k.topk_merge);
            // Read only by the kernel; cudarc passes views by `&mut`.
            a.arg(&mut a_half).arg(&nn).arg(&kk).arg(&mut b_half);
            self.launch(a, grid(rows, n), "a top-k pass")?;
            std::mem::swap(&mut a_half, &mut b_half);
        }
        let mut host = vec![0u64; rows * k];
        let view = a_half.slice(0..rows * k);
        self.stream
            .memcpy_dtoh(&view, &mut host)
            .map_err(|e| driver_error(e, "a device-to-host copy", 0))?;
        self.synchronize()?;
        out.extend(host.iter().map(|&key| {
            let id = u32::MAX - key as u32;
            (id, select::from_order_key((key >> 32) as u32))
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_shrink_to_one_chunk() {
        assert_eq!(topk_passes(1000, 40), [1000]);
        assert_eq!(topk_passes(4096, 40), [4096]);
        // Gemma 3's vocabulary: 64 chunks of 40, then one chunk.
        assert_eq!(topk_passes(262_144, 40), [262_144, 2560]);
        assert_eq!(topk_passes(262_144, 256), [262_144, 16_384, 1024]);
        assert_eq!(topk_passes(151_936, 256), [151_936, 9728, 768]);
    }
}
