//! OpenAI-compatible routes: `POST /v1/completions` (raw prompt) and
//! `POST /v1/chat/completions` (the model's chat template), streaming or not,
//! with token log-probabilities when asked (`logprobs`, and `top_logprobs`
//! for chat).

use super::{
    Body, EndInfo, Item, admit, authorize, logprobs, off_runtime, ready_engine, refuse, start_job,
};
use crate::engine::{ChatMessage, Engine, FinishReason, GenRequest};
use crate::error::ApiError;
use crate::state::AppState;
use crate::validate::{Fields, parse_object, sampling};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use worker_common::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos | FinishReason::StopSequence => "stop",
        FinishReason::MaxTokens | FinishReason::ContextFull => "length",
    }
}

fn usage(end: &EndInfo) -> Value {
    json!({
        "prompt_tokens": end.tokens_in,
        "prompt_tokens_details": { "cached_tokens": end.tokens_cached },
        "completion_tokens": end.tokens_out,
        "total_tokens": end.tokens_in + end.tokens_out,
    })
}

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
    req: GenRequest,
    stream: bool,
    model: String,
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
    if let Some(n) = f.integer("n", 1, 1) {
        let _ = n;
    }
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
    let req = GenRequest {
        prompt,
        max_tokens: max_tokens.map_or(room, |m| m as usize),
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        min_p: s.min_p,
        repetition_penalty: s.repetition_penalty,
        frequency_penalty: s.frequency_penalty,
        presence_penalty: s.presence_penalty,
        logit_bias: s.logit_bias,
        seed: s.seed,
        stop,
        logprobs,
    };
    Ok(Prepared {
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
    let permit = match admit(&state) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // Random, so no other client can guess an id to `/cancel` it or take it
    // for an `/execute` job first.
    let n: u128 = rand::random();
    let id = match kind {
        Kind::Completion => format!("cmpl-{n:032x}"),
        Kind::Chat => format!("chatcmpl-{n:032x}"),
    };
    let mut rx = match start_job(state.clone(), &engine, id.clone(), p.req, permit) {
        Ok(rx) => rx,
        Err(e) => return refuse(&state, e),
    };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let object = match kind {
        Kind::Completion => "text_completion",
        Kind::Chat => "chat.completion",
    };

    let with_logprobs = p.req_logprobs;
    if !p.stream {
        let mut text = String::new();
        let mut lps = Vec::new();
        while let Some(item) = rx.recv().await {
            match item {
                Item::Text {
                    text: t, logprobs, ..
                } => {
                    text.push_str(&t);
                    lps.extend(logprobs);
                }
                Item::Progress { .. } => {}
                Item::End(end) => {
                    let choice = match kind {
                        Kind::Completion => {
                            let lp = if with_logprobs {
                                logprobs::Completion::default().chunk(&text, &lps)
                            } else {
                                Value::Null
                            };
                            json!({ "index": 0, "text": text, "logprobs": lp, "finish_reason": finish_reason(end.reason) })
                        }
                        Kind::Chat => {
                            let lp = if with_logprobs {
                                json!({ "content": logprobs::chat(&lps), "refusal": null })
                            } else {
                                Value::Null
                            };
                            json!({ "index": 0, "message": { "role": "assistant", "content": text }, "logprobs": lp, "finish_reason": finish_reason(end.reason) })
                        }
                    };
                    return Json(json!({
                        "id": id, "object": object, "created": created, "model": p.model,
                        "choices": [choice], "usage": usage(&end),
                    }))
                    .into_response();
                }
                Item::Error(e) => return e.into_response(),
            }
        }
        return ApiError::new(ErrorCode::Internal, "the job ended without a result")
            .into_response();
    }

    let chunk_object = match kind {
        Kind::Completion => "text_completion",
        Kind::Chat => "chat.completion.chunk",
    };
    let chunk = move |choice: Value, usage: Option<Value>| -> Result<Event, Infallible> {
        let mut c = json!({ "id": id, "object": chunk_object, "created": created, "model": p.model, "choices": [choice] });
        if let Some(u) = usage {
            c["usage"] = u;
        }
        Ok(Event::default().data(c.to_string()))
    };
    let first = match kind {
        Kind::Chat => Some(chunk(
            json!({ "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null }),
            None,
        )),
        Kind::Completion => None,
    };
    let mut form = logprobs::Completion::default();
    let body = ReceiverStream::new(rx).filter_map(move |item| match item {
        Item::Text { text, logprobs, .. } => Some(chunk(
            match kind {
                Kind::Completion => {
                    let lp = if with_logprobs {
                        form.chunk(&text, &logprobs)
                    } else {
                        Value::Null
                    };
                    json!({ "index": 0, "text": text, "logprobs": lp, "finish_reason": null })
                }
                Kind::Chat => {
                    let lp = if with_logprobs {
                        json!({ "content": logprobs::chat(&logprobs), "refusal": null })
                    } else {
                        Value::Null
                    };
                    json!({ "index": 0, "delta": { "content": text }, "logprobs": lp, "finish_reason": null })
                }
            },
            None,
        )),
        Item::Progress { .. } => None,
        Item::End(end) => Some(chunk(
            match kind {
                Kind::Completion => json!({ "index": 0, "text": "", "logprobs": null, "finish_reason": finish_reason(end.reason) }),
                Kind::Chat => json!({ "index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason(end.reason) }),
            },
            Some(usage(&end)),
        )),
        Item::Error(e) => Some(Ok(Event::default().data(e.body().to_string()))),
    });
    let done = tokio_stream::once(Ok::<_, Infallible>(Event::default().data("[DONE]")));
    let stream = tokio_stream::iter(first).chain(body).chain(done);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
        .into_response()
}
