//! `POST /execute`: the worker's own streaming contract.
//!
//! Body: `job_id`, `prompt` (raw text; BOS as the model asks), and optional
//! `max_tokens`, `temperature`, `seed`, `top_p`, `top_k`, `min_p`,
//! `repetition_penalty`, `stop`, `logprobs` (alternatives per token, 0–20).
//! Answer: an SSE stream of named events (`started`, `token`, `metrics`,
//! then exactly one of `end` or `error`), each with its name in a `type`
//! field too; with `logprobs`, each `token` event lists the log-probability
//! of the tokens it completes.

use super::{Body, Item, admit, authorize, off_runtime, ready_engine, refuse, start_job};
use crate::error::ApiError;
use crate::state::AppState;
use crate::validate::{Fields, parse_object, sampling, valid_job_id};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use worker_common::ErrorCode;
use worker_common::job::JobRequest;

fn event(name: &'static str, mut data: serde_json::Value) -> Result<Event, Infallible> {
    data["type"] = json!(name);
    Ok(Event::default().event(name).data(data.to_string()))
}

pub async fn execute(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let prepared = {
        let state = state.clone();
        off_runtime(move || prepare(&state, &headers, &body)).await
    };
    match prepared {
        Ok((job_id, req, model)) => {
            let engine = match ready_engine(&state) {
                Ok(e) => e,
                Err(e) => return refuse(&state, e),
            };
            let permit = match admit(&state) {
                Ok(p) => p,
                Err(e) => return e.into_response(),
            };
            let req_logprobs = req.logprobs.is_some();
            let rx = match start_job(state.clone(), &engine, job_id.clone(), req, permit) {
                Ok(rx) => rx,
                Err(e) => return refuse(&state, e),
            };
            let started = event(
                "started",
                json!({
                    "job_id": job_id,
                    "model": model,
                    "started_at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                }),
            );
            let with_logprobs = req_logprobs;
            let items = ReceiverStream::new(rx).map(move |item| match item {
                Item::Text {
                    text,
                    index,
                    logprobs,
                } => {
                    let mut data = json!({ "t": text, "i": index });
                    if with_logprobs {
                        data["logprobs"] = super::logprobs::chat(&logprobs);
                    }
                    event("token", data)
                }
                Item::Progress {
                    tokens_out,
                    decode_ms,
                } => event(
                    "metrics",
                    json!({
                        "tokens_out": tokens_out,
                        "decode_time_ms": decode_ms,
                        "tokens_per_sec": tokens_out as f64 / (decode_ms.max(1) as f64 / 1000.0),
                    }),
                ),
                Item::End(reason, end) => {
                    let mut data = json!({
                        "tokens_in": end.tokens_in,
                        "tokens_cached": end.tokens_cached,
                        "tokens_out": end.tokens_out,
                        "decode_time_ms": end.decode_time.as_millis() as u64,
                        "stop_reason": reason.as_str(),
                        "seed": end.seed,
                    });
                    if let Some(s) = end.stop_sequence {
                        data["stop_sequence_matched"] = json!(s);
                    }
                    event("end", data)
                }
                Item::Error(e) => event("error", e.event_data()),
            });
            let stream = tokio_stream::once(started).chain(items);
            Sse::new(stream)
                .keep_alive(
                    KeepAlive::new()
                        .interval(Duration::from_secs(5))
                        .text("keep-alive"),
                )
                .into_response()
        }
        Err(e) => refuse(&state, e),
    }
}

/// Auth, readiness, validation and tokenization: everything that can fail
/// before a stream starts.
fn prepare(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, JobRequest, String), ApiError> {
    authorize(state, headers)?;
    let engine = ready_engine(state)?;
    let map = parse_object(body)?;
    let mut f = Fields::new(&map);
    let job_id = match f.string("job_id") {
        Some(id) if valid_job_id(id) => Some(id.to_string()),
        Some(_) => {
            f.fail(
                "job_id",
                "1-64 of [A-Za-z0-9._-]",
                "job_id must be 1-64 of [A-Za-z0-9._-]",
            );
            None
        }
        None => {
            f.fail("job_id", "required", "job_id is required");
            None
        }
    };
    let prompt = match f.string("prompt") {
        Some(p) if !p.is_empty() => Some(p),
        Some(_) => {
            f.fail("prompt", "non-empty", "prompt must not be empty");
            None
        }
        None => {
            f.fail("prompt", "required", "prompt is required");
            None
        }
    };
    let facts = engine.facts();
    let ctx = facts.context_length;
    let max_tokens = f.integer("max_tokens", 1, ctx as u64);
    let s = sampling(&mut f, 1.0, facts.vocab_size);
    let stop = f.stops("stop");
    let logprobs = f
        .integer("logprobs", 0, super::MAX_TOP_LOGPROBS as u64)
        .map(|n| n as usize);
    f.finish()?;
    let (Some(job_id), Some(prompt)) = (job_id, prompt) else {
        return Err(ApiError::new(
            ErrorCode::Internal,
            "validation passed without required fields",
        ));
    };
    let (tokens, room) = super::tokenize_prompt(engine.as_ref(), prompt, true, false, ctx)?;
    // A larger max_tokens runs into the end of the context: CONTEXT_FULL.
    let max_tokens = max_tokens.map_or(256.min(room), |m| m as usize);
    let req = JobRequest {
        prompt: tokens,
        max_tokens,
        sampling: s,
        stop,
        logprobs,
        json_object: false,
    };
    Ok((job_id, req, facts.model))
}
