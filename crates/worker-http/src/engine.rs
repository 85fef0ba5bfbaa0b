//! The engine the server drives, as a small trait: the server knows nothing
//! of models or backends, and tests can run it on any engine. Jobs speak
//! the contract of `worker_common::job`, which the engine shares.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::mpsc;
use worker_common::ErrorCode;
use worker_common::job::{ChatMessage, JobEvent, JobRequest};

/// A submitted job: its events, and a flag that cancels it.
#[derive(Debug)]
pub struct JobHandle {
    /// Events, ending with `Done` or `Failed`.
    pub events: mpsc::UnboundedReceiver<JobEvent>,
    /// Set to cancel the job.
    pub cancel: Arc<AtomicBool>,
}

/// What `/health`, `/v1/models` and reports say about the loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineFacts {
    /// Model name.
    pub model: String,
    /// Architecture.
    pub architecture: String,
    /// Quantization (file type).
    pub quantization: String,
    /// Tokenizer kind (`spm`, `bpe`, …).
    pub tokenizer_kind: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Context size per request.
    pub context_length: usize,
    /// `cpu` or `cuda`.
    pub backend: String,
    /// Device description.
    pub device: String,
    /// Memory the worker holds for the model and caches (VRAM on a GPU).
    pub memory_bytes: u64,
    /// `host` or `vram-only`.
    pub memory_architecture: String,
    /// The GPU, when the backend runs on one.
    pub gpu: Option<GpuFacts>,
}

/// What `/health` says about the GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuFacts {
    /// Device name.
    pub name: String,
    /// Compute capability, e.g. `9.0`.
    pub compute_capability: String,
    /// Total VRAM in bytes.
    pub vram_total_bytes: u64,
}

/// An engine failure outside a job.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    /// Error code.
    pub code: ErrorCode,
    /// What happened.
    pub message: String,
}

/// The engine behind the server.
pub trait Engine: Send + Sync + 'static {
    /// Starts a job; it waits for a slot if all are busy.
    fn submit(&self, req: JobRequest) -> Result<JobHandle, EngineError>;
    /// Facts about the model.
    fn facts(&self) -> EngineFacts;
    /// Token ids of `text`.
    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, EngineError>;
    /// Text of token ids.
    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError>;
    /// The tokens of `messages` in the chat template, ending where the
    /// assistant's reply begins: the template's own text with its control
    /// tokens parsed, each message's content as plain text (control-token
    /// text a user writes stays text, so no one can forge a turn).
    fn chat_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError>;
}
