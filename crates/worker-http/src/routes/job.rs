//! Building a [`JobRequest`] from a validated request: what every
//! generation route shares. A route checks its own body and hands over its
//! prompt text, how to tokenize it and its default length; this module
//! tokenizes within the context and sets the length.

use crate::engine::Engine;
use crate::error::ApiError;
use crate::validate::{Field, Violations};
use worker_common::ErrorCode;
use worker_common::job::{JobRequest, SamplingParams};

/// How many tokens a job may generate when the request does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultMaxTokens {
    /// This many, or fewer when the context has less room left.
    AtMost(usize),
    /// This many, even past the room left (the job then ends with
    /// `CONTEXT_FULL`).
    Exactly(usize),
    /// All the room the context has left.
    Room,
}

impl DefaultMaxTokens {
    fn within(self, room: usize) -> usize {
        match self {
            DefaultMaxTokens::AtMost(n) => n.min(room),
            DefaultMaxTokens::Exactly(n) => n,
            DefaultMaxTokens::Room => room,
        }
    }
}

/// A request's prompt, before it is checked against the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptInput {
    /// Raw text, tokenized here.
    Text {
        /// The text.
        text: String,
        /// Whether the tokenizer adds the model's special tokens (BOS).
        add_special: bool,
        /// Whether special-token text in the prompt becomes those tokens.
        parse_special: bool,
    },
    /// Tokens the engine made already (a chat template's, whose own text
    /// is parsed for control tokens and whose messages are not).
    Tokens(Vec<u32>),
}

/// A validated request, before tokenization.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The prompt.
    pub prompt: PromptInput,
    /// The request's `max_tokens`, if it gave one.
    pub max_tokens: Option<usize>,
    /// The route's default for `max_tokens`.
    pub default_max_tokens: DefaultMaxTokens,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Alternatives per token, when log-probabilities are asked for.
    pub logprobs: Option<usize>,
    /// Constrain the output to one JSON object.
    pub json_object: bool,
}

/// `max_tokens` (or a route's other name for it): 1 up to the context.
pub fn max_tokens(
    v: &mut Violations,
    name: &str,
    field: Option<Field<u64>>,
    ctx: usize,
) -> Option<usize> {
    v.integer(name, field, 1, ctx as u64).map(|n| n as usize)
}

/// Tokenizes the prompt within a context of `ctx` and sets the length: a
/// larger `max_tokens` than the room left runs into the end of the
/// context (`CONTEXT_FULL`).
pub fn build(engine: &dyn Engine, spec: JobSpec, ctx: usize) -> Result<JobRequest, ApiError> {
    let (prompt, room) = match spec.prompt {
        PromptInput::Text {
            text,
            add_special,
            parse_special,
        } => tokenize_prompt(engine, &text, add_special, parse_special, ctx)?,
        PromptInput::Tokens(tokens) => within_context(tokens, ctx)?,
    };
    Ok(JobRequest {
        prompt,
        max_tokens: spec
            .max_tokens
            .unwrap_or_else(|| spec.default_max_tokens.within(room)),
        sampling: spec.sampling,
        stop: spec.stop,
        logprobs: spec.logprobs,
        json_object: spec.json_object,
    })
}

/// The prompt's tokens and the room left for new ones in a context of
/// `ctx`; a prompt that fills the context is an invalid request.
pub fn tokenize_prompt(
    engine: &dyn Engine,
    text: &str,
    add_special: bool,
    parse_special: bool,
    ctx: usize,
) -> Result<(Vec<u32>, usize), ApiError> {
    let tokens = engine
        .tokenize(text, add_special, parse_special)
        .map_err(|e| ApiError::new(e.code, e.message))?;
    within_context(tokens, ctx)
}

/// `tokens` and the room they leave in a context of `ctx`; a prompt that
/// fills the context is an invalid request.
fn within_context(tokens: Vec<u32>, ctx: usize) -> Result<(Vec<u32>, usize), ApiError> {
    if tokens.len() >= ctx {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "the prompt has {} tokens but the context holds {ctx}",
                tokens.len()
            ),
        ));
    }
    let room = ctx - tokens.len();
    Ok((tokens, room))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_the_room_as_each_route_asks() {
        assert_eq!(DefaultMaxTokens::AtMost(256).within(100), 100);
        assert_eq!(DefaultMaxTokens::AtMost(256).within(1000), 256);
        assert_eq!(DefaultMaxTokens::Exactly(16).within(4), 16);
        assert_eq!(DefaultMaxTokens::Room.within(77), 77);
    }
}
