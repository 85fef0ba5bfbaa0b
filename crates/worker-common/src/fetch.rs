//! The last words of a failed `llorch-worker fetch`: one JSON line on
//! stderr, which Kubernetes keeps as the init container's termination
//! message and the operator reads back to set the ModelWorker's conditions
//! (a model that does not fit becomes `ModelAvailable=False`, reason
//! `InsufficientGPUMemory`; one the worker cannot run, reason
//! `UnsupportedModel`).

use crate::ErrorCode;
use serde::{Deserialize, Serialize};

/// Why `fetch` failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchFailure {
    /// `INSUFFICIENT_VRAM` when the model does not fit the declared GPU
    /// memory, `UNSUPPORTED_MODEL` when its architecture or a weight type
    /// is one the worker cannot run, `MODEL_LOAD_FAILED` for every other
    /// failure.
    pub code: ErrorCode,
    /// What happened and what to do, as one sentence.
    pub message: String,
    /// Bytes the model needs (weights, KV cache, runtime overhead), for a
    /// fit failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub need_bytes: Option<u64>,
    /// Bytes the GPU has (`--gpu-memory`), for a fit failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
}
