//! Matrix products: the small-batch kernel for decode, cuBLAS on decoded
//! weights for prefill.
//!
//! The prefill GEMM runs on TF32 tensor cores for every weight type but
//! F32: the decoded weights carry no more precision than TF32 keeps (F16
//! and BF16 convert exactly; quantized values are coarser still), and the
//! activations' rounding to TF32 (2^-11 relative) is far below the 8-bit
//! activations the CPU backend and ggml use. F32 weights keep full f32
//! math, as their parity target (NMSE 1e-6) asks.

use crate::backend::{CudaBackend, CudaBuf, i32_of, need};
use crate::kernels::per_element;
use crate::weight::{CudaWeight, DeviceMatrix};
use cudarc::cublas::sys::{cublasMath_t, cublasOperation_t, cublasStatus_t};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use worker_compute::{ComputeError, Result};
use worker_gguf::GgmlType;

/// Tokens a small-batch product handles per pass (`MM_MAX_T` in the kernel).
const MM_MAX_T: usize = 8;
/// Tokens whose activations are quantized at once for `mm_q8`.
pub(crate) const Q8_CHUNK: usize = 16;
/// Batches above this go through cuBLAS on decoded weights.
const GEMM_MIN_BATCH: usize = 16;
/// The most weights decoded at once for cuBLAS (128 MiB of f32).
const DECODE_CHUNK_ELEMS: usize = 32 << 20;

impl CudaBackend {
    pub(crate) fn matmul_impl(
        &self,
        w: &CudaWeight,
        x: &CudaBuf,
        n: usize,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let w = w.matrix("matmul")?;
        need(x, n * w.cols, "matmul input")?;
        need(out, n * w.rows, "matmul output")?;
        if let Some(blas) = self.blas.as_ref().filter(|_| n >= GEMM_MIN_BATCH) {
            // cuBLAS is never recorded (batches this large are not).
            self.flush()?;
            return self.mm_gemm(blas, w, x, n, out);
        }
        if self.q8_decode && q8_decodes(w.ty) {
            return self.mm_q8(w, x, n, out);
        }
        let mut t0 = 0;
        while t0 < n {
            let tn = MM_MAX_T.min(n - t0);
            self.mm_small(w, x, t0, tn, out)?;
            t0 += tn;
        }
        Ok(())
    }

    /// `out[t] = w . x[t]` for up to [`MM_MAX_T`] rows of `x` starting at
    /// row `t0`.
    fn mm_small(
        &self,
        w: &DeviceMatrix,
        x: &CudaBuf,
        t0: usize,
        n: usize,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let (rows, cols) = (w.rows, w.cols);
        let x_view = x.0.data.slice(t0 * cols..(t0 + n) * cols);
        let mut o_view = out.0.data.slice_mut(t0 * rows..(t0 + n) * rows);
        let (rb, r, c, ni) = (
            w.row_bytes as i64,
            i32_of(rows, "rows")?,
            i32_of(cols, "cols")?,
            n as i32,
        );
        let mut a = self.stream.launch_builder(&self.k.mm_small);
        a.arg(&w.code)
            .arg(&w.data.data)
            .arg(&rb)
            .arg(&r)
            .arg(&c)
            .arg(&x_view)
            .arg(&ni)
            .arg(&mut o_view);
        self.launch(a, row_warps(rows), "a matrix product")
    }

    /// Small batches with 8-bit activations: each chunk of [`Q8_CHUNK`]
    /// tokens quantized once, then `mm_q8` for up to [`MM_MAX_T`] at a time.
    fn mm_q8(&self, w: &DeviceMatrix, x: &CudaBuf, n: usize, out: &mut CudaBuf) -> Result<()> {
        let (rows, cols) = (w.rows, w.cols);
        let (r, c) = (i32_of(rows, "rows")?, i32_of(cols, "cols")?);
        let rb = w.row_bytes as i64;
        let mut st = self.staging();
        let (xq, xd, xs) = self.q8_staging(&mut st, Q8_CHUNK.min(n) * cols)?;
        let mut c0 = 0;
        while c0 < n {
            let cn = Q8_CHUNK.min(n - c0);
            let x_view = x.0.data.slice(c0 * cols..(c0 + cn) * cols);
            let groups = (cn * cols / 32) as i64;
            let mut a = self.stream.launch_builder(&self.k.quantize_q8);
            a.arg(&x_view)
                .arg(&groups)
                .arg(&mut xq.data)
                .arg(&mut xd.data)
                .arg(&mut xs.data);
            self.launch(a, per_element(cn * cols), "quantizing activations")?;
            let mut t0 = 0;
            while t0 < cn {
                let tn = MM_MAX_T.min(cn - t0);
                let q_view = xq.data.slice(t0 * cols..(t0 + tn) * cols);
                let d_view = xd.data.slice(t0 * cols / 32..(t0 + tn) * cols / 32);
                let s_view = xs.data.slice(t0 * cols / 32..(t0 + tn) * cols / 32);
                let at = c0 + t0;
                let mut o_view = out.0.data.slice_mut(at * rows..(at + tn) * rows);
                let ni = tn as i32;
                let mut a = self.stream.launch_builder(&self.k.mm_q8);
                a.arg(&w.code)
                    .arg(&w.data.data)
                    .arg(&rb)
                    .arg(&r)
                    .arg(&c)
                    .arg(&q_view)
                    .arg(&d_view)
                    .arg(&s_view)
                    .arg(&ni)
                    .arg(&mut o_view);
                self.launch(a, row_warps(rows), "a matrix product")?;
                t0 += tn;
            }
            c0 += cn;
        }
        Ok(())
    }

    /// A large batch: weights decoded in row chunks, multiplied by cuBLAS.
    fn mm_gemm(
        &self,
        blas: &CudaBlas,
        w: &DeviceMatrix,
        x: &CudaBuf,
        n: usize,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let (rows, cols) = (w.rows, w.cols);
        let chunk = (DECODE_CHUNK_ELEMS / cols).clamp(1, rows);
        // Held for the whole product: it also keeps the handle's math mode
        // ours until the GEMMs below are enqueued.
        let mut st = self.staging();
        let f32_weights = w.ty == GgmlType::F32;
        let mode = if f32_weights {
            cublasMath_t::CUBLAS_DEFAULT_MATH
        } else {
            cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        };
        // SAFETY: the handle lives as long as `blas`; this only sets the
        // math mode of the calls that follow on this (single) stream.
        let status = unsafe { cudarc::cublas::sys::cublasSetMathMode(*blas.handle(), mode) };
        if status != cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            if f32_weights {
                // F32 weights must not run on TF32.
                return Err(ComputeError::Device(format!(
                    "cuBLAS: cannot set full f32 math ({status:?})"
                )));
            }
            tracing::debug!(?status, "cuBLAS kept its math mode");
        }
        let scratch = self.scratch(&mut st, chunk * cols)?;
        let mut r0 = 0;
        while r0 < rows {
            let nr = chunk.min(rows - r0);
            {
                let (rb, r0i, nri, c) = (w.row_bytes as i64, r0 as i32, nr as i32, cols as i32);
                let mut a = self.stream.launch_builder(&self.k.dq_rows);
                a.arg(&w.code)
                    .arg(&w.data.data)
                    .arg(&rb)
                    .arg(&r0i)
                    .arg(&nri)
                    .arg(&c)
                    .arg(&mut scratch.data);
                self.launch(a, per_element(nr * (cols / 32)), "decoding weights")?;
            }
            // Column-major view: out (rows x n, ld rows) = W^T(chunk) . X.
            let cfg = GemmConfig {
                transa: cublasOperation_t::CUBLAS_OP_T,
                transb: cublasOperation_t::CUBLAS_OP_N,
                m: nr as i32,
                n: n as i32,
                k: cols as i32,
                alpha: 1.0f32,
                lda: cols as i32,
                ldb: cols as i32,
                beta: 0.0f32,
                ldc: rows as i32,
            };
            let a_view = scratch.data.slice(0..nr * cols);
            let b_view = x.0.data.slice(0..n * cols);
            let mut c_view = out.0.data.slice_mut(r0..);
            // SAFETY: the views cover m*k, k*n and (n-1)*ldc + m elements.
            unsafe { blas.gemm(cfg, &a_view, &b_view, &mut c_view) }.map_err(|e| {
                // cuBLAS failing to allocate its workspace is out of memory
                // like any other: it ends the request, not the worker.
                if e.0 == cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED {
                    ComputeError::OutOfMemory {
                        what: "the cuBLAS workspace",
                        need_bytes: 0,
                    }
                } else {
                    ComputeError::Device(format!("cuBLAS: {e}"))
                }
            })?;
            r0 += nr;
        }
        Ok(())
    }
}

/// The weight types `mm_q8` decodes (`dq32_q8` in `kernels/dequant.cuh`).
pub(crate) fn q8_decodes(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q5_0
            | GgmlType::Q8_0
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_NL
            | GgmlType::IQ4_XS
            | GgmlType::MXFP4
    )
}

/// One warp per weight row, four per block (`mm_small`, `mm_q8`).
fn row_warps(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(4) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}
