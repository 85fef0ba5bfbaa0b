//! The readiness report a worker sends to the operator.

use crate::{ErrorCode, ModelFacts};
use serde::{Deserialize, Serialize};

/// `ready` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    /// The model is loaded and the worker serves.
    Ready,
    /// The model could not be loaded; the worker exits.
    Failed,
}

/// Why a worker failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportError {
    /// The error code.
    pub code: ErrorCode,
    /// What happened.
    pub message: String,
}

/// `POST <callback-url>` body: what a worker tells the operator about
/// itself once its model is loaded, or failed to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The worker's id (the pod name in Kubernetes).
    pub worker_id: String,
    /// Ready or failed.
    pub status: ReportStatus,
    /// This worker's base URL.
    pub uri: String,
    /// Where the model came from (`--model-ref`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_ref: Option<String>,
    /// The model, when its file could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelFacts>,
    /// `cpu` or `cuda`.
    pub backend: String,
    /// Device description.
    pub device: String,
    /// Memory the worker holds.
    pub memory_bytes: u64,
    /// `host` or `vram-only`.
    pub memory_architecture: String,
    /// Seconds the load took.
    pub load_seconds: f64,
    /// What the worker serves: `text-gen`, `sse`, `openai`.
    pub capabilities: Vec<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ReportError>,
    /// The pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The ModelWorker the pod belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_worker: Option<String>,
    /// The pod's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}
