//! The OpenAI routes' bodies and their validation. Both routes share most
//! fields ([`Generation`], [`Formats`], [`Delivery`]); each adds its prompt
//! and its form of log-probabilities. Fields are checked in a fixed order,
//! so the list of violations reads the same every time.
//!
//! Options this server does not implement are refused, not ignored: an
//! answer that silently ignored JSON mode or tools would be something else
//! than what was asked for. Fields that change nothing here (`user`,
//! `metadata`, …) pass.

use super::messages::{self, MessagesField};
use crate::engine::{Engine, EngineFacts};
use crate::error::ApiError;
use crate::routes::job::{self, DefaultMaxTokens, JobSpec, PromptInput};
use crate::validate::{Field, Object, SamplingFields, Stop, Violations, sampling};
use serde::Deserialize;
use serde_json::Value;
use worker_common::ErrorCode;
use worker_common::job::{JobRequest, MAX_TOP_LOGPROBS, SamplingParams};

/// Most choices one request may ask for (`n`).
pub const MAX_CHOICES: usize = 16;

/// The body of `/v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionBody {
    prompt: Option<Field<PromptField>>,
    /// How many alternatives (0–5), as the legacy API has it.
    logprobs: Option<Field<u64>>,
    echo: Option<Field<bool>>,
    suffix: Option<Field<String>>,
    best_of: Option<Field<u64>>,
    #[serde(flatten)]
    generation: Generation,
    #[serde(flatten)]
    formats: Formats,
    #[serde(flatten)]
    delivery: Delivery,
}

/// The body of `/v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatBody {
    messages: MessagesField,
    logprobs: Option<Field<bool>>,
    top_logprobs: Option<Field<u64>>,
    #[serde(flatten)]
    generation: Generation,
    #[serde(flatten)]
    formats: Formats,
    #[serde(flatten)]
    delivery: Delivery,
}

/// A completion prompt: a string, or a list of one string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PromptField {
    One(String),
    List(Vec<String>),
}

/// What to generate and how.
#[derive(Debug, Deserialize)]
struct Generation {
    max_tokens: Option<Field<u64>>,
    max_completion_tokens: Option<Field<u64>>,
    #[serde(flatten)]
    sampling: SamplingFields,
    stop: Option<Field<Stop>>,
    stream: Option<Field<bool>>,
}

/// The output's form.
#[derive(Debug, Deserialize)]
struct Formats {
    response_format: Option<Field<Object<ResponseFormat>>>,
    tools: Option<Field<Vec<Value>>>,
    functions: Option<Field<Vec<Value>>>,
}

#[derive(Debug, Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: Option<Field<String>>,
}

/// How the answer is delivered.
#[derive(Debug, Deserialize)]
struct Delivery {
    stream_options: Option<Field<Object<StreamOptions>>>,
    n: Option<Field<u64>>,
    /// Checked for its type only: this worker serves one model.
    model: Option<Field<String>>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<Field<bool>>,
}

/// A validated OpenAI request, tokenized.
#[derive(Debug)]
pub struct Prepared {
    pub req: JobRequest,
    pub stream: bool,
    pub model: String,
    /// Choices to generate.
    pub n: usize,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// Whether the answer carries log-probabilities.
    pub req_logprobs: bool,
}

/// The checked [`Generation`] fields.
struct Generated {
    max_tokens: Option<usize>,
    sampling: SamplingParams,
    stop: Vec<String>,
    stream: bool,
}

/// The checked [`Delivery`] fields.
struct Delivered {
    include_usage: bool,
    n: usize,
}

impl CompletionBody {
    /// Checks every field and tokenizes the prompt (raw text, BOS as the
    /// model asks).
    pub fn prepare(self, engine: &dyn Engine) -> Result<Prepared, ApiError> {
        let facts = engine.facts();
        let mut v = Violations::default();
        let prompt = completion_prompt(&mut v, self.prompt).map(|text| PromptInput::Text {
            text,
            add_special: true,
            parse_special: false,
        });
        let generated = self.generation.check(&mut v, &facts);
        let logprobs = v
            .integer("logprobs", self.logprobs, 0, 5)
            .map(|n| n as usize);
        if v.boolean("echo", self.echo) == Some(true) {
            v.fail(
                "echo",
                "false",
                "echo is not supported: the completion does not repeat the prompt",
            );
        }
        let json_object = self.formats.check(&mut v);
        if self
            .suffix
            .is_some_and(|s| s.typed().as_deref() != Some(""))
        {
            v.fail(
                "suffix",
                "absent",
                "suffix is not supported: the completion only continues the prompt",
            );
        }
        if self.best_of.is_some_and(|b| b.typed() != Some(1)) {
            v.fail(
                "best_of",
                "1",
                "best_of is not supported; n gives several choices",
            );
        }
        let delivered = self.delivery.check(&mut v);
        v.finish()?;
        let parts = Parts {
            prompt,
            generated,
            default_max_tokens: DefaultMaxTokens::Exactly(16),
            logprobs,
            json_object,
            delivered,
        };
        parts.build(engine, facts)
    }
}

impl ChatBody {
    /// Checks every field and applies the chat template.
    pub fn prepare(self, engine: &dyn Engine) -> Result<Prepared, ApiError> {
        let facts = engine.facts();
        let mut v = Violations::default();
        let msgs = messages::messages(&mut v, self.messages);
        let prompt = if msgs.is_empty() {
            None
        } else {
            // The template's own text is parsed for control tokens, the
            // messages' contents are not: a user cannot forge a turn.
            let tokens = engine
                .chat_tokens(&msgs)
                .map_err(|e| ApiError::new(e.code, e.message))?;
            Some(PromptInput::Tokens(tokens))
        };
        let generated = self.generation.check(&mut v, &facts);
        let on = v.boolean("logprobs", self.logprobs).unwrap_or(false);
        let top = v.integer(
            "top_logprobs",
            self.top_logprobs,
            0,
            MAX_TOP_LOGPROBS as u64,
        );
        if top.is_some() && !on {
            v.fail(
                "top_logprobs",
                "with logprobs: true",
                "top_logprobs needs logprobs: true",
            );
        }
        let logprobs = on.then(|| top.unwrap_or(0) as usize);
        let json_object = self.formats.check(&mut v);
        let delivered = self.delivery.check(&mut v);
        v.finish()?;
        let parts = Parts {
            prompt,
            generated,
            default_max_tokens: DefaultMaxTokens::Room,
            logprobs,
            json_object,
            delivered,
        };
        parts.build(engine, facts)
    }
}

/// `prompt`: a non-empty string, or a list of exactly one.
fn completion_prompt(v: &mut Violations, field: Option<Field<PromptField>>) -> Option<String> {
    let text = match field.and_then(Field::typed) {
        Some(PromptField::One(s)) => Some(s),
        Some(PromptField::List(list)) if list.len() == 1 => list.into_iter().next(),
        _ => None,
    };
    let text = text.filter(|s| !s.is_empty());
    if text.is_none() {
        v.fail(
            "prompt",
            "a non-empty string",
            "prompt must be a non-empty string",
        );
    }
    text
}

impl Generation {
    fn check(self, v: &mut Violations, facts: &EngineFacts) -> Generated {
        let ctx = facts.context_length;
        let max_tokens = job::max_tokens(v, "max_tokens", self.max_tokens, ctx);
        let max_completion_tokens =
            job::max_tokens(v, "max_completion_tokens", self.max_completion_tokens, ctx);
        Generated {
            max_tokens: max_tokens.or(max_completion_tokens),
            sampling: sampling(v, self.sampling, 1.0, facts.vocab_size),
            stop: v.stops("stop", self.stop),
            stream: v.boolean("stream", self.stream).unwrap_or(false),
        }
    }
}

impl Formats {
    /// Refuses JSON schemas and tools; whether JSON mode is on.
    fn check(self, v: &mut Violations) -> bool {
        let format = self.response_format.map(|f| {
            f.typed()
                .and_then(|Object(rf)| rf.kind)
                .and_then(Field::typed)
        });
        if let Some(kind) = &format
            && !matches!(kind.as_deref(), Some("text" | "json_object"))
        {
            v.fail(
                "response_format",
                "{\"type\": \"text\"} or {\"type\": \"json_object\"}",
                "response_format: only text and json_object are supported (a JSON schema is not)",
            );
        }
        for (name, field) in [("tools", self.tools), ("functions", self.functions)] {
            if field.is_some_and(|f| f.typed().is_none_or(|list| !list.is_empty())) {
                v.fail(
                    name,
                    "absent",
                    format!("{name}: tool calling is not supported"),
                );
            }
        }
        format.flatten().as_deref() == Some("json_object")
    }
}

impl Delivery {
    fn check(self, v: &mut Violations) -> Delivered {
        let include_usage = match self
            .stream_options
            .and_then(Field::typed)
            .and_then(|Object(o)| o.include_usage)
        {
            None => false,
            Some(Field::Typed(b)) => b,
            Some(Field::Other(_)) => {
                v.fail(
                    "stream_options",
                    "{\"include_usage\": boolean}",
                    "stream_options.include_usage must be a boolean",
                );
                false
            }
        };
        let n = v
            .integer("n", self.n, 1, MAX_CHOICES as u64)
            .map_or(1, |n| n as usize);
        let _ = v.string("model", self.model);
        Delivered { include_usage, n }
    }
}

/// A valid request's parts, before tokenization.
struct Parts {
    prompt: Option<PromptInput>,
    generated: Generated,
    default_max_tokens: DefaultMaxTokens,
    logprobs: Option<usize>,
    json_object: bool,
    delivered: Delivered,
}

impl Parts {
    fn build(self, engine: &dyn Engine, facts: EngineFacts) -> Result<Prepared, ApiError> {
        let Some(prompt) = self.prompt else {
            return Err(ApiError::new(
                ErrorCode::Internal,
                "validation passed without a prompt",
            ));
        };
        let spec = JobSpec {
            prompt,
            max_tokens: self.generated.max_tokens,
            default_max_tokens: self.default_max_tokens,
            sampling: self.generated.sampling,
            stop: self.generated.stop,
            logprobs: self.logprobs,
            json_object: self.json_object,
        };
        let req = job::build(engine, spec, facts.context_length)?;
        Ok(Prepared {
            stream: self.generated.stream,
            model: facts.model,
            n: self.delivered.n,
            include_usage: self.delivered.include_usage,
            req_logprobs: req.logprobs.is_some(),
            req,
        })
    }
}
