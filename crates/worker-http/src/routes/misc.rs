//! Health, readiness, metrics, cancellation, tokenization, the model list
//! and the JSON 404.

use super::{Body, authorize, off_runtime, ready_engine};
use crate::error::ApiError;
use crate::state::{AppState, Phase};
use crate::validate::{Field, Violations, parse_body};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};
use worker_common::ErrorCode;

/// `GET /health`: 200 while the process works, with what it serves.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let mut body = json!({
        "status": state.phase().as_str(),
        "worker_id": state.config.worker_id,
        "uptime_seconds": state.uptime().as_secs_f64(),
    });
    if let Some(engine) = state.engine() {
        let f = engine.facts();
        body["model"] = json!(f.model);
        body["architecture"] = json!(f.architecture);
        body["quantization"] = json!(f.quantization);
        body["quant_kind"] = json!(f.quantization);
        body["tokenizer_kind"] = json!(f.tokenizer_kind);
        body["vocab_size"] = json!(f.vocab_size);
        body["context_length"] = json!(f.context_length);
        body["backend"] = json!(f.backend);
        body["device"] = json!(f.device);
        body["memory_bytes"] = json!(f.memory_bytes);
        body["memory_architecture"] = json!(f.memory_architecture);
        if let Some(g) = &f.gpu {
            body["gpu"] = json!({
                "name": g.name,
                "compute_capability": g.compute_capability,
                "vram_total_bytes": g.vram_total_bytes,
            });
        }
    }
    Json(body).into_response()
}

/// `GET /ready`: 200 only when a request can be taken.
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.phase() {
        Phase::Ready => (StatusCode::OK, Json(json!({ "ready": true }))).into_response(),
        p => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "status": p.as_str() })),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(state.uptime()),
    )
        .into_response()
}

/// `POST /cancel {job_id}`: 202, whether or not the job still runs.
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let result = authorize(&state, &headers)
        .and_then(|()| parse_body::<CancelBody>(&body))
        .and_then(CancelBody::validate);
    match result {
        Ok(id) => {
            let jobs = state.jobs.lock().unwrap_or_else(|e| e.into_inner());
            // An OpenAI answer's id names all its choices' jobs (`ID-i`).
            let openai = id.starts_with("cmpl-") || id.starts_with("chatcmpl-");
            let choices = format!("{id}-");
            for (key, job) in jobs.iter() {
                if *key == id || (openai && key.starts_with(&choices)) {
                    job.cancel.store(true, Ordering::Relaxed);
                    job.notify.notify_one();
                }
            }
            drop(jobs);
            (
                StatusCode::ACCEPTED,
                Json(json!({ "job_id": id, "status": "cancelling" })),
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The body of `/cancel`.
#[derive(Debug, Deserialize)]
struct CancelBody {
    job_id: Option<Field<String>>,
}

impl CancelBody {
    /// The job id (any string: an unknown job is no error).
    fn validate(self) -> Result<String, ApiError> {
        let mut v = Violations::default();
        let id = v.string("job_id", self.job_id);
        if id.is_none() {
            v.fail("job_id", "required", "job_id is required");
        }
        v.finish()?;
        Ok(id.unwrap_or_default())
    }
}

/// The body of `/tokenize`.
#[derive(Debug, Deserialize)]
struct TokenizeBody {
    content: Option<Field<String>>,
    add_special: Option<Field<bool>>,
}

impl TokenizeBody {
    /// The text, and whether special tokens are added and parsed.
    fn validate(self) -> Result<(String, bool), ApiError> {
        let mut v = Violations::default();
        let content = v.string("content", self.content);
        if content.is_none() {
            v.fail("content", "required", "content is required");
        }
        let add_special = v.boolean("add_special", self.add_special).unwrap_or(false);
        v.finish()?;
        Ok((content.unwrap_or_default(), add_special))
    }
}

/// The body of `/detokenize`.
#[derive(Debug, Deserialize)]
struct DetokenizeBody {
    tokens: Option<Field<Vec<u32>>>,
}

impl DetokenizeBody {
    fn validate(self) -> Result<Vec<u32>, ApiError> {
        let mut v = Violations::default();
        let ids = self.tokens.and_then(Field::typed);
        if ids.is_none() {
            v.fail(
                "tokens",
                "an array of token ids",
                "tokens must be an array of token ids",
            );
        }
        v.finish()?;
        Ok(ids.unwrap_or_default())
    }
}

/// `POST /tokenize {content, add_special?}` → `{tokens}`, worked on off the
/// async threads (see [`side_work`]).
pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let result = side_work(&state, &headers, move |engine| {
        let (content, add_special) = parse_body::<TokenizeBody>(&body)?.validate()?;
        let tokens = engine
            .tokenize(&content, add_special, add_special)
            .map_err(|e| ApiError::new(e.code, e.message))?;
        Ok(json!({ "tokens": tokens }))
    })
    .await;
    result.map_or_else(IntoResponse::into_response, |v| Json(v).into_response())
}

/// `POST /detokenize {tokens}` → `{content}`, as [`tokenize`].
pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let result = side_work(&state, &headers, move |engine| {
        let ids = parse_body::<DetokenizeBody>(&body)?.validate()?;
        let content = engine
            .detokenize(&ids)
            .map_err(|e| ApiError::new(e.code, e.message))?;
        Ok(json!({ "content": content }))
    })
    .await;
    result.map_or_else(IntoResponse::into_response, |v| Json(v).into_response())
}

/// Runs `work` for an authorized request on a ready worker, on the blocking
/// pool, holding one of [`crate::state::SIDE_WORK_AT_ONCE`] places; with
/// none free, 429. The async threads stay free to answer probes however
/// many such requests come.
async fn side_work(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    work: impl FnOnce(&dyn crate::engine::Engine) -> Result<Value, ApiError> + Send + 'static,
) -> Result<Value, ApiError> {
    authorize(state, headers)?;
    let engine = ready_engine(state)?;
    let place = state
        .side_work
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                ErrorCode::Overloaded,
                "too many tokenize requests at once; retry later",
            )
        })?;
    off_runtime(move || {
        let _place = place;
        work(engine.as_ref())
    })
    .await
}

/// `GET /v1/models`.
pub async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let result = (|| {
        authorize(&state, &headers)?;
        let engine = ready_engine(&state)?;
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok::<_, ApiError>(Json(json!({
            "object": "list",
            "data": [{ "id": engine.facts().model, "object": "model", "created": created, "owned_by": "llorch" }],
        })))
    })();
    result.map_or_else(IntoResponse::into_response, IntoResponse::into_response)
}

/// A known route with another method: 405 with a JSON body (axum's own
/// answer has none).
pub async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({ "error": { "code": "METHOD_NOT_ALLOWED", "message": "this route does not take that method", "retriable": false } })),
    )
        .into_response()
}

/// Any other route: 404 with a JSON body.
pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": { "code": "NOT_FOUND", "message": "no such route", "retriable": false } })),
    )
        .into_response()
}
