//! OpenAI-compatible routes: `POST /v1/completions` (raw prompt) and
//! `POST /v1/chat/completions` (the model's chat template), streaming or not,
//! with token log-probabilities when asked (`logprobs`, and `top_logprobs`
//! for chat).

use super::answer::{self, Kind};
use super::{Body, admit_many, authorize, off_runtime, ready_engine, refuse, start_job};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::state::AppState;
use crate::validate::{Fields, parse_object, sampling};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use worker_common::ErrorCode;
use worker_common::job::{ChatMessage, JobRequest};

/// Most choices one request may ask for (`n`).
pub const MAX_CHOICES: usize = 16;

pub async fn completions(state: State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(state, headers, body, Kind::Completion).await
}

pub async fn chat_completions(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, headers, body, Kind::Chat).await
}

struct Prepared {
    req: JobRequest,
    stream: bool,
    model: String,
    /// Choices to generate.
    n: usize,
    /// `stream_options.include_usage`.
    include_usage: bool,
    /// Whether the answer carries log-probabilities.
    req_logprobs: bool,
}

fn prompt_text(f: &mut Fields<'_>, map: &Map<String, Value>) -> Option<String> {
    match map.get("prompt") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 && a[0].as_str().is_some_and(|s| !s.is_empty()) => {
            a[0].as_str().map(str::to_string)
        }
        _ => {
            f.fail(
                "prompt",
                "a non-empty string",
                "prompt must be a non-empty string",
            );
            None
        }
    }
}

/// Roles a chat template understands.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// `messages`: a non-empty array of `{role, content}`, where `content` is a
/// string, an array of text parts (`{"type": "text", "text": ...}`, joined
/// by newlines, as OpenAI clients send them), or null (an assistant turn
/// with nothing to say). Every problem names its message.
fn messages(f: &mut Fields<'_>, map: &Map<String, Value>) -> Vec<ChatMessage> {
    let constraint = "a non-empty array of {role, content}";
    let Some(list) = map
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
    else {
        f.fail(
            "messages",
            constraint,
            "messages must be a non-empty array of {role, content}",
        );
        return Vec::new();
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        match message(m) {
            Ok(msg) => out.push(msg),
            Err(why) => {
                f.fail("messages", constraint, format!("messages[{i}]: {why}"));
                return Vec::new();
            }
        }
    }
    out
}

fn message(m: &Value) -> Result<ChatMessage, String> {
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or("role must be a string")?;
    if !ROLES.contains(&role) {
        return Err(format!("role {role:?} is not one of {}", ROLES.join(", ")));
    }
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => texts.push(t.as_str()),
                    (Some("text"), _) => return Err("a text part needs a text string".into()),
                    (Some(other), _) => {
                        return Err(format!(
                            "content parts of type {other:?} are not supported: this model reads text"
                        ));
                    }
                    (None, _) => return Err("each content part needs a type".into()),
                }
            }
            texts.join("\n")
        }
        Some(_) => return Err("content must be a string, an array of text parts or null".into()),
    };
    Ok(ChatMessage {
        role: role.to_string(),
        content,
    })
}

/// Options this server does not implement are refused, not ignored: an
/// answer that silently ignored JSON mode or tools would be something else
/// than what was asked for. Fields that change nothing here (`user`,
/// `stream_options`, `metadata`, …) pass.
fn unsupported(f: &mut Fields<'_>, map: &Map<String, Value>, kind: Kind) {
    let present = |name: &str| map.get(name).filter(|v| !v.is_null());
    if let Some(v) = present("response_format")
        && !matches!(
            v.get("type").and_then(Value::as_str),
            Some("text" | "json_object")
        )
    {
        f.fail(
            "response_format",
            "{\"type\": \"text\"} or {\"type\": \"json_object\"}",
            "response_format: only text and json_object are supported (a JSON schema is not)",
        );
    }
    for name in ["tools", "functions"] {
        if present(name).is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
            f.fail(
                name,
                "absent",
                format!("{name}: tool calling is not supported"),
            );
        }
    }
    if kind == Kind::Completion {
        if present("suffix").is_some_and(|v| v.as_str() != Some("")) {
            f.fail(
                "suffix",
                "absent",
                "suffix is not supported: the completion only continues the prompt",
            );
        }
        if present("best_of").is_some_and(|v| v.as_u64() != Some(1)) {
            f.fail(
                "best_of",
                "1",
                "best_of is not supported; n gives several choices",
            );
        }
    }
}

fn prepare(engine: &Arc<dyn Engine>, body: &[u8], kind: Kind) -> Result<Prepared, ApiError> {
    let map = parse_object(body)?;
    let mut f = Fields::new(&map);
    let ctx = engine.facts().context_length;
    let text = match kind {
        Kind::Completion => prompt_text(&mut f, &map).map(|t| (t, false)),
        Kind::Chat => {
            let msgs = messages(&mut f, &map);
            if msgs.is_empty() {
                None
            } else {
                Some(
                    engine
                        .chat_prompt(&msgs)
                        .map_err(|e| ApiError::new(e.code, e.message))?,
                )
            }
        }
    };
    let default_max = if kind == Kind::Completion {
        Some(16)
    } else {
        None
    };
    let max_tokens = f
        .integer("max_tokens", 1, ctx as u64)
        .or(f.integer("max_completion_tokens", 1, ctx as u64))
        .or(default_max);
    let s = sampling(&mut f, 1.0, engine.facts().vocab_size);
    let stop = f.stops("stop");
    let stream = f.boolean("stream").unwrap_or(false);
    let logprobs = match kind {
        // `logprobs`: how many alternatives (0–5), as the legacy API has it.
        Kind::Completion => f.integer("logprobs", 0, 5).map(|n| n as usize),
        Kind::Chat => {
            let on = f.boolean("logprobs").unwrap_or(false);
            let top = f.integer("top_logprobs", 0, super::MAX_TOP_LOGPROBS as u64);
            if top.is_some() && !on {
                f.fail(
                    "top_logprobs",
                    "with logprobs: true",
                    "top_logprobs needs logprobs: true",
                );
            }
            on.then(|| top.unwrap_or(0) as usize)
        }
    };
    if kind == Kind::Completion && f.boolean("echo") == Some(true) {
        f.fail(
            "echo",
            "false",
            "echo is not supported: the completion does not repeat the prompt",
        );
    }
    unsupported(&mut f, &map, kind);
    let json_object = map
        .get("response_format")
        .and_then(|v| v.get("type"))
        .and_then(Value::as_str)
        == Some("json_object");
    let include_usage = match map
        .get("stream_options")
        .filter(|v| !v.is_null())
        .map(|o| o.get("include_usage"))
    {
        None | Some(None | Some(Value::Null)) => false,
        Some(Some(Value::Bool(b))) => *b,
        Some(Some(_)) => {
            f.fail(
                "stream_options",
                "{\"include_usage\": boolean}",
                "stream_options.include_usage must be a boolean",
            );
            false
        }
    };
    let n = f
        .integer("n", 1, MAX_CHOICES as u64)
        .map_or(1, |n| n as usize);
    let _ = f.string("model");
    f.finish()?;
    let Some((text, has_bos)) = text else {
        return Err(ApiError::new(
            ErrorCode::Internal,
            "validation passed without a prompt",
        ));
    };
    // The chat template's own BOS text parses to the BOS id; otherwise the
    // model's add_bos_token decides.
    let (add_special, parse_special) = match kind {
        Kind::Completion => (true, false),
        Kind::Chat => (!has_bos, true),
    };
    let (prompt, room) =
        super::tokenize_prompt(engine.as_ref(), &text, add_special, parse_special, ctx)?;
    let req = JobRequest {
        prompt,
        max_tokens: max_tokens.map_or(room, |m| m as usize),
        sampling: s,
        stop,
        logprobs,
        json_object,
    };
    Ok(Prepared {
        n,
        include_usage,
        req_logprobs: req.logprobs.is_some(),
        req,
        stream,
        model: engine.facts().model,
    })
}

async fn handle(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(body): Body,
    kind: Kind,
) -> Response {
    let engine = match authorize(&state, &headers).and_then(|()| ready_engine(&state)) {
        Ok(e) => e,
        Err(e) => return refuse(&state, e),
    };
    let prepared = {
        let engine = engine.clone();
        off_runtime(move || prepare(&engine, &body, kind)).await
    };
    let p = match prepared {
        Ok(x) => x,
        Err(e) => return refuse(&state, e),
    };
    // One admission per choice, all or none.
    let permits = match admit_many(&state, p.n) {
        Ok(p) => p,
        Err(e) if e.code == ErrorCode::InvalidRequest => return refuse(&state, e),
        Err(e) => return e.into_response(),
    };
    // Random, so no other client can guess an id to `/cancel` it or take it
    // for an `/execute` job first.
    let r: u128 = rand::random();
    let id = match kind {
        Kind::Completion => format!("cmpl-{r:032x}"),
        Kind::Chat => format!("chatcmpl-{r:032x}"),
    };
    let mut receivers = Vec::with_capacity(p.n);
    for (i, permit) in permits.into_iter().enumerate() {
        let mut req = p.req.clone();
        // Seeded choices differ from each other and repeat as a whole.
        req.sampling.seed = req.sampling.seed.map(|s| s.wrapping_add(i as u64));
        let job_id = if p.n == 1 {
            id.clone()
        } else {
            format!("{id}-{i}")
        };
        match start_job(state.clone(), &engine, job_id, req, permit) {
            Ok(rx) => receivers.push(rx),
            // Choices already started are cancelled as their receivers go.
            Err(e) => return refuse(&state, e),
        }
    }
    let head = answer::Head {
        kind,
        id,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: p.model,
        logprobs: p.req_logprobs,
        include_usage: p.include_usage,
    };
    if p.stream {
        answer::stream(head, receivers)
    } else {
        answer::whole(head, receivers).await
    }
}
