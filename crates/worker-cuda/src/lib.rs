//! The CUDA backend, on `cudarc` with dynamic loading: the build needs no
//! CUDA toolkit and no GPU; the driver, NVRTC and cuBLAS are found at run
//! time, and a missing one is a typed error that names it.
//!
//! # Design
//!
//! [`CudaBackend`] implements the op-level [`worker_compute::Backend`]
//! trait, so every architecture in `worker-models` runs on it unchanged.
//! - **VRAM only.** Weights are uploaded once, byte for byte in their GGUF
//!   encoding; activations, the f16 KV cache and scratch live on the
//!   device. Only token ids go up and only logits come down.
//! - **Kernels are CUDA C compiled at run time** with NVRTC for the
//!   device's architecture (a cubin, which any CUDA 12 driver loads), cached
//!   on disk keyed by a hash of the sources ([`compile`]); the weights
//!   decoded for cuBLAS use one scratch area of at most 128 MiB. Each weight type decodes in groups
//!   of 32 values (`kernels/dequant.cuh`), so one decoder serves the
//!   matrix-vector product, the embedding lookup and the decode-for-GEMM.
//! - **Decode** (a few tokens): one warp per weight row reads the row once
//!   and dots it with up to 8 tokens' f32 activations (`mm_small`), or,
//!   with `LLORCH_CUDA_DECODE=q8` ([`CudaBackend::with_q8_decode`]), with
//!   activations quantized to 8 bits per 32 and `__dp4a` on the weights
//!   decoded to 8-bit integers (`mm_q8`: Q4_0, Q5_0, Q8_0, Q3_K, Q4_K, Q6_K,
//!   IQ4_NL, IQ4_XS, MXFP4; the other types stay on `mm_small`); this is bound by
//!   the weight bytes read. **Prefill** (16+ tokens): rows are
//!   decoded to f32 in chunks and multiplied with cuBLAS, on TF32 tensor
//!   cores except for F32 weights (`matmul.rs`).
//! - **Attention**: one block per (head, token, split) with an online
//!   softmax over tiles of keys, so no score row is stored and memory does
//!   not grow with the context; decode batches split long contexts over up
//!   to 32 blocks per head (flash-decoding) and merge the partial results.
//!   The cache layout (ring slots for sliding windows) is the CPU
//!   backend's, each layer's rows at its own K/V width; a layer that reads
//!   an earlier layer's rows (Gemma 4) keeps none and attends over that
//!   layer's (`attention_shared`), so its cache costs nothing.
//! - **Recurrent layers** (gated delta nets, `recurrent.rs`): a recurrent
//!   layer keeps no K/V rows but, per sequence, a live f32 state and a
//!   kept copy in VRAM; the positions they stand at are kept on the host
//!   and checked before anything is launched. The convolution runs one
//!   thread per (sequence, channel) through that sequence's tokens in
//!   order; the delta rule one block per (sequence, value head), each
//!   thread holding one row of the head's transposed matrix in registers
//!   (heads up to 128 wide), so a batch reads and writes each state once.
//!   A sequence's single token (decode) runs the recurrence; a run of
//!   tokens (a prompt) runs its chunked form, 64 tokens at a time: products
//!   with the state at the chunk's start and a triangular solve per column,
//!   the chunk's keys in shared memory, the state updated once per chunk.
//! - **No growth while serving**: staging arrays are sized for the
//!   largest batch when the KV cache is made, attention's partial results
//!   once for the model's heads, and the prefill's decode scratch depends
//!   only on matrix shapes, so it reaches its size (at most 128 MiB) in the
//!   first prefill that uses it. VRAM then stays level from request to
//!   request.
//! - **Token choice on the device** (`select.rs`): when every job of a
//!   step samples greedily, the engine asks for the argmax of each row
//!   (`argmax_rows`); when every job samples the whole row at a
//!   temperature (the HTTP default), for a draw with the uniform numbers
//!   of the jobs' samplers (`draw_rows`); either way only token ids cross
//!   to the host. When every job keeps a top-k (up to 256), for the k
//!   largest logits of each row (`top_k_rows`: chunks of 4096 sorted in
//!   shared memory, merged until one is left), so a few pairs per row
//!   cross instead of the vocabulary.
//! - **Memory accounting**: every allocation is counted and uncounted when
//!   dropped (`memory.rs`), so [`CudaBackend::allocated_bytes`] is what the
//!   worker holds. A failed allocation is `ComputeError::OutOfMemory`,
//!   which ends one request, not the worker.
//! - One stream runs every op in order, so no per-buffer events are
//!   recorded.
//! - **CUDA graphs** (`LLORCH_CUDA_GRAPHS=1`, [`CudaBackend::with_graphs`],
//!   off by default until measured): decode steps are recorded and replayed
//!   as one launch per step (`graph.rs`).

mod attention;
mod backend;
pub mod compile;
mod device;
mod elementwise;
mod error;
mod graph;
mod kernels;
mod kv;
mod matmul;
mod memory;
mod norm;
mod recurrent;
mod rope;
mod rows;
mod select;
mod staging;
mod weight;

pub use backend::{CudaBackend, CudaBuf, kernel_names};
pub use device::{DeviceFacts, cublas_present, driver_present};
pub use elementwise::act_code;
pub use error::CudaError;
pub use kv::{CudaKv, RowsShape, SeqGroups, StatePositions, group_table, rows_layout, rows_read};
pub use recurrent::{CHUNKED_FROM, DELTA_CHUNK, DELTA_MAX_DIM, delta_launch};
pub use select::{TOPK_MAX, topk_passes};
pub use weight::{CudaWeight, DeviceMatrix, type_code};
