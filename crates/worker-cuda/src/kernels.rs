//! The compiled module's functions, loaded once.

use crate::compile;
use crate::error::CudaError;
use cudarc::driver::{CudaContext, CudaFunction, LaunchConfig};
use std::sync::Arc;

macro_rules! kernels {
    ($($name:ident),* $(,)?) => {
        /// One handle per kernel of the module.
        #[derive(Debug)]
        pub struct Kernels {
            $(pub $name: CudaFunction,)*
        }

        impl Kernels {
            /// Loads the kernels for the device of `ctx`: from the cache
            /// when the driver accepts the cached cubin, else compiled now.
            pub fn load(ctx: &Arc<CudaContext>, arch: &str) -> Result<Self, CudaError> {
                if let Some((path, cubin)) = compile::cached(arch) {
                    match Self::from_cubin(ctx, cubin) {
                        Ok(k) => return Ok(k),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "the driver rejects the cached kernels; compiling them again");
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Self::from_cubin(ctx, compile::compile_and_cache(arch)?)
            }

            fn from_cubin(ctx: &Arc<CudaContext>, cubin: Vec<u8>) -> Result<Self, CudaError> {
                let module = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin))?;
                Ok(Kernels {
                    $($name: module.load_function(stringify!($name))?,)*
                })
            }
        }

        /// The kernel names, as the PTX declares them.
        pub const NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

kernels!(
    mm_small,
    quantize_q8,
    mm_q8,
    dq_rows,
    get_rows,
    rms_norm,
    layer_norm,
    rope,
    scale_f32,
    add_f32,
    add_bias,
    act_f32,
    glu_f32,
    softcap_f32,
    scale_rows_f32,
    add_rows_f32,
    copy_cols,
    gather_rows,
    kv_store,
    attention,
    attention_merge,
    ssm_conv,
    delta_net,
    delta_net_chunked,
    argmax_rows,
    topk_first,
    topk_merge,
    draw_rows,
);

/// Threads per block of the element-wise kernels.
const THREADS: u32 = 256;

/// One thread per element of `n`.
pub fn per_element(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u64).div_ceil(u64::from(THREADS)).max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of `threads` per row.
pub fn per_row(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}
