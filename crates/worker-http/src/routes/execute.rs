//! `POST /execute`: the worker's own streaming contract.
//!
//! Body: `job_id`, `prompt` (raw text; BOS as the model asks), and optional
//! `max_tokens`, `temperature`, `seed`, `top_p`, `top_k`, `min_p`,
//! `repetition_penalty`, `stop`, `logprobs` (alternatives per token, 0–20).
//! Answer: an SSE stream of named events (`started`, `token`, `metrics`,
//! then exactly one of `end` or `error`), each with its name in a `type`
//! field too; with `logprobs`, each `token` event lists the log-probability
//! of the tokens it completes.

use super::job::{self, DefaultMaxTokens, JobSpec, PromptInput};
use super::{Body, Item, admit, authorize, off_runtime, ready_engine, refuse, start_job};
use crate::engine::Engine;
use crate::engine::EngineFacts;
use crate::error::ApiError;
use crate::state::AppState;
use crate::validate::{
    Field, SamplingFields, Stop, Violations, parse_body, sampling, valid_job_id,
};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
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
    let engine = match authorize(&state, &headers).and_then(|()| ready_engine(&state)) {
        Ok(e) => e,
        Err(e) => return refuse(&state, e),
    };
    // A place first: parsing and tokenizing a body is work a full worker
    // must not take on.
    let permit = match admit(&state) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let prepared = {
        let engine = engine.clone();
        off_runtime(move || prepare(engine.as_ref(), &body)).await
    };
    let (job_id, req, model) = match prepared {
        Ok(p) => p,
        Err(e) => return refuse(&state, e),
    };
    let with_logprobs = req.logprobs.is_some();
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
    let items = ReceiverStream::new(rx).map(move |item| item_event(item, with_logprobs));
    let stream = tokio_stream::once(started).chain(items);
    Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(5))
                .text("keep-alive"),
        )
        .into_response()
}

/// A job's item as its named event: `token`, `metrics`, `end` or `error`.
fn item_event(item: Item, with_logprobs: bool) -> Result<Event, Infallible> {
    match item {
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
    }
}

/// The body of `/execute`.
#[derive(Debug, Deserialize)]
struct ExecuteBody {
    job_id: Option<Field<String>>,
    prompt: Option<Field<String>>,
    max_tokens: Option<Field<u64>>,
    #[serde(flatten)]
    sampling: SamplingFields,
    stop: Option<Field<Stop>>,
    logprobs: Option<Field<u64>>,
}

/// A valid `/execute` request, before tokenization.
#[derive(Debug)]
struct Valid {
    job_id: String,
    spec: JobSpec,
}

impl ExecuteBody {
    /// Checks every field; the prompt is raw text, BOS as the model asks.
    fn validate(self, facts: &EngineFacts) -> Result<Valid, ApiError> {
        let mut v = Violations::default();
        let ctx = facts.context_length;
        let job_id = match v.string("job_id", self.job_id) {
            Some(id) if valid_job_id(&id) => Some(id),
            Some(_) => {
                v.fail(
                    "job_id",
                    "1-64 of [A-Za-z0-9._-]",
                    "job_id must be 1-64 of [A-Za-z0-9._-]",
                );
                None
            }
            None => {
                v.fail("job_id", "required", "job_id is required");
                None
            }
        };
        let prompt = match v.string("prompt", self.prompt) {
            Some(p) if !p.is_empty() => Some(p),
            Some(_) => {
                v.fail("prompt", "non-empty", "prompt must not be empty");
                None
            }
            None => {
                v.fail("prompt", "required", "prompt is required");
                None
            }
        };
        let max_tokens = job::max_tokens(&mut v, "max_tokens", self.max_tokens, ctx);
        let sampling = sampling(&mut v, self.sampling, 1.0, facts.vocab_size);
        let stop = v.stops("stop", self.stop);
        let logprobs = v
            .integer("logprobs", self.logprobs, 0, super::MAX_TOP_LOGPROBS as u64)
            .map(|n| n as usize);
        v.finish()?;
        let (Some(job_id), Some(text)) = (job_id, prompt) else {
            return Err(ApiError::new(
                ErrorCode::Internal,
                "validation passed without required fields",
            ));
        };
        let spec = JobSpec {
            prompt: PromptInput::Text {
                text,
                add_special: true,
                parse_special: false,
            },
            max_tokens,
            default_max_tokens: DefaultMaxTokens::AtMost(256),
            sampling,
            stop,
            logprobs,
            json_object: false,
        };
        Ok(Valid { job_id, spec })
    }
}

/// Auth, readiness, validation and tokenization: everything that can fail
/// before a stream starts.
fn prepare(engine: &dyn Engine, body: &[u8]) -> Result<(String, JobRequest, String), ApiError> {
    let facts = engine.facts();
    let valid = parse_body::<ExecuteBody>(body)?.validate(&facts)?;
    let req = job::build(engine, valid.spec, facts.context_length)?;
    Ok((valid.job_id, req, facts.model))
}
