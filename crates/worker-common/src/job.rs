//! The job contract between the HTTP server and the engine: what a request
//! asks for ([`JobRequest`]), what happens to it ([`JobEvent`]), and how it
//! ends ([`Outcome`]). The server builds a `JobRequest` from a validated,
//! tokenized body; the engine answers with events in a fixed order. Both
//! sides use these types and no others, so a field added here reaches every
//! route and the engine at once.

use crate::ErrorCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Sampling settings of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy; higher flattens the distribution.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Drop tokens below `min_p` times the most likely one's probability.
    pub min_p: f32,
    /// Penalize tokens seen in the last `repeat_last_n` (1 = off).
    pub repeat_penalty: f32,
    /// Subtracted from a recent token's logit once per occurrence (0 =
    /// off; negative values favour repeats).
    pub frequency_penalty: f32,
    /// Subtracted once from the logit of every recent token (0 = off).
    pub presence_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: usize,
    /// Added to these tokens' logits before anything else (sorted by id,
    /// each id once).
    pub logit_bias: Vec<(u32, f32)>,
    /// The generator's seed; `None` picks a random one (reported back).
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    /// llama.cpp's defaults.
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repeat_last_n: 64,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }
}

/// What a job asks for: a tokenized prompt and how to continue it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Report each generated token's log-probability with this many
    /// alternatives (at most [`MAX_TOP_LOGPROBS`]); `None`: none.
    pub logprobs: Option<usize>,
    /// Constrain the output to one JSON object.
    pub json_object: bool,
}

/// Most alternatives a request may ask for per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Why a job stopped generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` were generated.
    MaxTokens,
    /// The model produced an end-of-generation token.
    Eos,
    /// A stop string matched.
    StopSequence,
    /// The context is full.
    ContextFull,
}

impl StopReason {
    /// The wire name (`MAX_TOKENS`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::MaxTokens => "MAX_TOKENS",
            StopReason::Eos => "EOS",
            StopReason::StopSequence => "STOP_SEQUENCE",
            StopReason::ContextFull => "CONTEXT_FULL",
        }
    }
}

/// A token as the log-probability options show it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenText {
    /// Its id.
    pub id: u32,
    /// Its text (invalid UTF-8 replaced, so a piece of a character shows as
    /// `\u{fffd}`; control tokens by their text).
    pub token: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its log-probability.
    pub logprob: f32,
}

/// A generated token's log-probability and the most likely tokens at its
/// position, most likely first (the larger logit, then the lower id).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token chosen.
    pub chosen: TokenText,
    /// The alternatives.
    pub top: Vec<TokenText>,
    /// Where the chosen token's text starts in the generated text, in
    /// bytes (a token that completes a character another began: that
    /// character).
    pub offset: usize,
}

/// How a job ended, with its counts and timings.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Why it stopped; `None` when it was cancelled.
    pub stop_reason: Option<StopReason>,
    /// The stop string that matched, if any.
    pub stop_sequence: Option<String>,
    /// Prompt tokens.
    pub tokens_in: usize,
    /// Prompt tokens whose cache rows an earlier request left (not
    /// computed again).
    pub tokens_cached: usize,
    /// Generated tokens.
    pub tokens_out: usize,
    /// The sampling seed used.
    pub seed: u64,
    /// Time to process the prompt.
    pub prompt_time: Duration,
    /// Time spent generating.
    pub decode_time: Duration,
}

/// What happens to a job, in order: `Started`, any number of `Text` (and,
/// when asked for, one `Logprob` per generated token, sent before the
/// `Text` in which the token's text starts, or before `Done`; none for the
/// tokens of a matched stop string), then exactly one `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// The job got a slot; prompt processing begins.
    Started {
        /// The sampling seed in use.
        seed: u64,
    },
    /// A generated token's log-probabilities (only when the job asked).
    Logprob(TokenLogprob),
    /// A piece of complete UTF-8 text.
    Text {
        /// The text.
        text: String,
        /// Tokens generated so far.
        tokens_out: usize,
    },
    /// The job ended (`stop_reason: None`: cancelled).
    Done(Outcome),
    /// The engine failed while running the job.
    Failed {
        /// The error code (`VRAM_OOM`, `CUDA_ERROR`, `INTERNAL`, …).
        code: ErrorCode,
        /// What happened.
        message: String,
    },
}

/// A chat message for the chat template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}
