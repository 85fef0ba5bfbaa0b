//! Facts about a model file, shared by `inspect`, `fetch` and the worker's report.

use serde::{Deserialize, Serialize};

/// What a GGUF file says about its model.
///
/// The same shape travels in `model.json` (written by `llorch-worker fetch`
/// beside the model), in the worker's readiness report, and, renamed to
/// camelCase, in the `ModelWorker` status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFacts {
    /// `general.architecture`, e.g. `llama`, `gemma3`.
    pub architecture: String,
    /// `general.name`, or the file stem when the file has none.
    pub name: String,
    /// The file type in llama.cpp's naming, e.g. `Q4_K_M`, `F16`.
    pub quantization: String,
    /// Total number of weights over all tensors.
    pub parameters: u64,
    /// The context length the model was trained for, when the file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    /// Size of the file in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the file, hex, when it has been computed (by `fetch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}
