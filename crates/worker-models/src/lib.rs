//! Model architectures and the generation engine.
//!
//! - [`ModelConfig`]: one typed configuration per architecture (Llama,
//!   Qwen2, Phi-3, GPT-2, Gemma 3), read from GGUF metadata once, with
//!   errors that name the missing key.
//! - [`Model`]: the forward pass, written once against the
//!   [`worker_compute::Backend`] ops; architecture differences are fields
//!   of the configuration, not branches on names.
//! - [`Generator`]: one request at a time: prefill as batched matrix
//!   products, then sampling ([`Sampler`], llama.cpp's order), stop strings
//!   across token boundaries ([`StopMatcher`]), complete UTF-8 text streamed
//!   to a callback that can cancel between tokens.
//! - [`check_supported`]: whether the worker can run a file (its
//!   architecture, its weight types), from the header alone, so `fetch`
//!   refuses what `serve` could not load.

mod config;
mod error;
mod generate;
mod json_mode;
mod logprobs;
mod model;
mod prefix;
mod rope;
mod sampling;
mod scheduler;
mod stops;
mod support;
pub mod synthetic;
mod weights;

pub use config::{
    Arch, AttnTemperature, FfnKind, ModelConfig, MoeConfig, MoeGating, NormKind, QkNorm,
};
pub use error::{ModelError, Result};
pub use generate::{GenerateRequest, Generator, Outcome, StopReason};
pub use json_mode::{JsonState, JsonVocab};
pub use logprobs::{MAX_TOP as MAX_TOP_LOGPROBS, RowLogprobs, TokenLogprob};
pub use model::{Model, Workspace};
pub use rope::{RopeConfig, RopeOverrides, yarn_corr_dims};
pub use sampling::{Sampler, SamplingParams, StepOutput, Want, argmax};
pub use scheduler::{FailureKind, Job, JobEvent, JobSink, JobSpec, Scheduler};
pub use stops::{StopMatcher, StopOutcome};
pub use support::{Unsupported, architecture_list, check_supported};
