//! The compute backend abstraction (the trait every backend implements, so
//! each model architecture is written once) and the CPU backend: quantized
//! matrix products with a scalar reference and SIMD variants, norms, RoPE,
//! attention over a KV cache.
//!
//! Status: not implemented yet. The engine issue fills this crate; until
//! then it exports nothing.
