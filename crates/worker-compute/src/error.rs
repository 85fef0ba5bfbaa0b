//! The compute crate's error type.

/// Why a compute operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// A tensor type the backend cannot compute with. The message lists
    /// the types it can, so the user knows which quantization to pick.
    #[error(
        "tensor {name:?}: weight type {ty} is not supported by the {backend} backend (supported weight types: {})",
        crate::support::matrix_type_list()
    )]
    UnsupportedType {
        /// The tensor.
        name: String,
        /// Its type.
        ty: worker_gguf::GgmlType,
        /// The backend.
        backend: &'static str,
    },
    /// Shapes that do not fit together (a bug in the caller, or a model
    /// file whose tensors disagree with its metadata).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Not enough memory for a buffer or the KV cache.
    #[error("cannot allocate {need_bytes} bytes for {what}")]
    OutOfMemory {
        /// What was being allocated.
        what: &'static str,
        /// How much.
        need_bytes: u64,
    },
    /// A token position beyond what the KV cache holds.
    #[error("position {pos} is beyond the context size {ctx}")]
    ContextFull {
        /// The position.
        pos: u32,
        /// The cache's context size.
        ctx: usize,
    },
    /// A sequence index beyond the cache's sequences.
    #[error("sequence {seq} is beyond the {n_seq} sequences of the KV cache")]
    BadSequence {
        /// The sequence.
        seq: usize,
        /// How many there are.
        n_seq: usize,
    },
    /// A recurrent layer's state was asked to continue from another
    /// position than the one it holds (it cannot be truncated).
    #[error(
        "sequence {seq}: a recurrent state holding positions 0..{held} cannot continue at position {pos}"
    )]
    StateGap {
        /// The sequence.
        seq: usize,
        /// The position asked for.
        pos: u32,
        /// The next position the state expects.
        held: u32,
    },
    /// A device failed (a driver error, a lost device, a kernel fault).
    #[error("device error: {0}")]
    Device(String),
    /// An operation this backend does not implement (callers fall back).
    #[error("the backend does not support {0}")]
    Unsupported(&'static str),
    /// Failure to build the thread pool.
    #[error("thread pool: {0}")]
    ThreadPool(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = ComputeError> = std::result::Result<T, E>;
