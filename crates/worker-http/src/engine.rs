//! The engine the server drives, as a small trait: the server knows nothing
//! of models or backends, and tests can run it on any engine.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::mpsc;
use worker_common::ErrorCode;

/// A generation request, validated and tokenized by the server.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
    /// Top-k (0: off).
    pub top_k: usize,
    /// Top-p (1: off).
    pub top_p: f32,
    /// Min-p (0: off).
    pub min_p: f32,
    /// Repetition penalty (1: off).
    pub repetition_penalty: f32,
    /// Frequency penalty (0: off).
    pub frequency_penalty: f32,
    /// Presence penalty (0: off).
    pub presence_penalty: f32,
    /// Biases added to token logits (sorted by id, each once).
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed (`None`: random, reported in the end event).
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Each generated token's log-probability with this many alternatives
    /// (`None`: none).
    pub logprobs: Option<usize>,
    /// Constrain the output to one JSON object.
    pub json_object: bool,
}

/// A token as the log-probability options show it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenText {
    /// Its text (invalid UTF-8 replaced, so a piece of a character shows as
    /// `\u{fffd}`).
    pub token: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its log-probability.
    pub logprob: f32,
}

/// A generated token's log-probability and the most likely tokens at its
/// position, most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token chosen.
    pub chosen: TokenText,
    /// The alternatives.
    pub top: Vec<TokenText>,
    /// Where the chosen token's text starts in the generated text, in
    /// bytes.
    pub offset: usize,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_tokens` reached.
    MaxTokens,
    /// End-of-generation token.
    Eos,
    /// A stop string matched.
    StopSequence,
    /// The context is full.
    ContextFull,
}

impl FinishReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::MaxTokens => "MAX_TOKENS",
            FinishReason::Eos => "EOS",
            FinishReason::StopSequence => "STOP_SEQUENCE",
            FinishReason::ContextFull => "CONTEXT_FULL",
        }
    }
}

/// What the engine reports about a job.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// The job got a decoding slot.
    Started {
        /// Seed in use.
        seed: u64,
    },
    /// A generated token's log-probabilities (when the request asked),
    /// sent before the `Text` that holds the token's text.
    Logprob(TokenLogprob),
    /// Complete UTF-8 text.
    Text {
        /// The text.
        text: String,
        /// Tokens generated so far.
        tokens_out: usize,
    },
    /// The job finished (`reason: None`: cancelled).
    Done {
        /// Why.
        reason: Option<FinishReason>,
        /// The stop string that matched.
        stop_sequence: Option<String>,
        /// Prompt tokens.
        tokens_in: usize,
        /// Prompt tokens taken from the cache of an earlier request.
        tokens_cached: usize,
        /// Generated tokens.
        tokens_out: usize,
        /// Generation time in milliseconds.
        decode_time_ms: u64,
        /// Seed used.
        seed: u64,
    },
    /// The job failed.
    Failed {
        /// Error code.
        code: ErrorCode,
        /// What happened.
        message: String,
    },
}

/// A submitted job: its events, and a flag that cancels it.
#[derive(Debug)]
pub struct JobHandle {
    /// Events, ending with `Done` or `Failed`.
    pub events: mpsc::UnboundedReceiver<EngineEvent>,
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

/// A chat message for the chat template.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// The engine behind the server.
pub trait Engine: Send + Sync + 'static {
    /// Starts a job; it waits for a slot if all are busy.
    fn submit(&self, req: GenRequest) -> Result<JobHandle, EngineError>;
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
    /// The chat template applied to `messages`, ending where the assistant's
    /// reply begins; `bool`: whether it already holds the BOS text.
    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<(String, bool), EngineError>;
}
