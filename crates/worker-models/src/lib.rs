//! Model architectures and the generation engine.
//!
//! - [`ModelConfig`]: one typed configuration per architecture (Llama,
//!   Qwen2, Phi-3, GPT-2, Gemma 3), read from GGUF metadata once, with
//!   errors that name the missing key.
//! - [`Model`]: the forward pass, written once against the
//!   [`worker_compute::Backend`] ops; architecture differences are fields
//!   of the configuration, not branches on names.
//! - The engine: [`Scheduler`] batches the requests' steps (continuous
//!   batching, prompt caching in [`PromptCache`]); a per-request `Sequence`
//!   turns each logits row into events: the sampler ([`Sampler`],
//!   llama.cpp's order), constraints as logits processors
//!   ([`LogitsProcessor`], JSON mode), log-probabilities, stop strings
//!   across token boundaries ([`StopMatcher`]) and complete UTF-8 text.
//!   The request, event and outcome types are the job contract of
//!   `worker_common::job`, which the HTTP server shares. [`Generator`] is
//!   the scheduler with one slot, for the command line and tests.
//! - [`check_supported`]: whether the worker can run a file (its
//!   architecture, its weight types), from the header alone, so `fetch`
//!   refuses what `serve` could not load.

mod config;
mod constraint;
mod error;
mod generate;
mod json_mode;
mod logprobs;
mod model;
mod prefix;
mod rope;
mod sampling;
mod scheduler;
mod sequence;
mod stops;
mod support;
pub mod synthetic;
mod weights;

pub use config::{
    Arch, AttnTemperature, FfnKind, ModelConfig, MoeConfig, MoeGating, NormKind, QkNorm,
    RecurrentConfig,
};
pub use constraint::{JsonObject, LogitsProcessor, Verdict};
pub use error::{ModelError, Result};
pub use generate::Generator;
pub use json_mode::{JsonState, JsonVocab};
pub use logprobs::{RowLogprobs, Scored};
pub use model::{Model, Workspace};
pub use prefix::{Placement, PromptCache};
pub use rope::{RopeConfig, RopeOverrides, yarn_corr_dims};
pub use sampling::{Sampler, SamplingParams, StepOutput, Want, argmax};
pub use scheduler::Scheduler;
pub use sequence::{Job, JobSink};
pub use stops::{StopMatcher, StopOutcome};
pub use support::{Unsupported, architecture_list, check_supported};
pub use worker_common::job::{
    JobEvent, JobRequest, MAX_TOP_LOGPROBS, Outcome, StopReason, TokenLogprob, TokenText,
};
