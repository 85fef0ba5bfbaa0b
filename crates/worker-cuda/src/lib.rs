//! The CUDA backend, on `cudarc` with dynamic loading: the build needs no
//! CUDA toolkit and no GPU; the driver and NVRTC are found at run time.
//!
//! Status: not implemented yet. The CUDA issue fills this crate; until then
//! it exports nothing, and `--device cuda` is refused by the worker.
