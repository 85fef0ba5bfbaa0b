//! The gateway's routes: the two OpenAI completion routes forwarded to a
//! replica, `GET /v1/models` from the catalog, probes and `/metrics`.

use super::catalog::{Model, ResolveError};
use super::keys::Denied;
use super::peek::{Peek, SESSION_HEADER, session_key};
use super::upstream::{Tracked, UpstreamError, forwarded};
use super::{Gateway, KeyState, balance, cold};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use worker_common::ErrorCode;

/// The metrics label of requests that name no known model.
const UNKNOWN_MODEL: &str = "(unknown)";

/// The router.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(
                |State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body| {
                    forward(gw, "/v1/chat/completions", headers, body)
                },
            ),
        )
        .route(
            "/v1/completions",
            post(
                |State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body| {
                    forward(gw, "/v1/completions", headers, body)
                },
            ),
        )
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            error(
                ErrorCode::InvalidRequest,
                "no such route: the gateway serves POST /v1/chat/completions, POST /v1/completions and GET /v1/models",
                None,
            )
            .with_status(StatusCode::NOT_FOUND)
        })
        .with_state(gw)
}

/// An error in OpenAI's envelope: `{"error": {message, type, code,
/// retriable}}`, with the code's status and `Retry-After` when given.
pub fn error(code: ErrorCode, message: impl Into<String>, retry_after: Option<u64>) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, axum::Json(error_body(code, &message.into()))).into_response();
    if let Some(s) = retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The envelope's JSON.
pub fn error_body(code: ErrorCode, message: &str) -> serde_json::Value {
    let kind = match code.http_status() {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    json!({"error": {
        "message": message,
        "type": kind,
        "code": code,
        "retriable": code.retriable(),
    }})
}

trait WithStatus {
    fn with_status(self, status: StatusCode) -> Response;
}

impl WithStatus for Response {
    fn with_status(mut self, status: StatusCode) -> Response {
        *self.status_mut() = status;
        self
    }
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.synced() {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the model list is not synced yet",
        )
            .into_response()
    }
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics.render(),
    )
        .into_response()
}

/// `GET /v1/models`: every ModelWorker (those the key grants, when keys
/// are required), scaled-to-zero ones included; `id` is the name to send,
/// `llorch` says where it stands.
async fn models(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let catalog = gw.catalog();
    let visible: Vec<&Model> = match gw.keys() {
        KeyState::Open => catalog.models().map(AsRef::as_ref).collect(),
        KeyState::Unreadable(why) => {
            return error(
                ErrorCode::NotReady,
                format!("the gateway cannot read its API keys: {why}"),
                Some(5),
            );
        }
        KeyState::Loaded(keys) => {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match keys.visible(auth, catalog.models().map(AsRef::as_ref)) {
                Ok(v) => v,
                Err(denied) => return error(ErrorCode::Unauthorized, denied.to_string(), None),
            }
        }
    };
    let data: Vec<serde_json::Value> = visible
        .into_iter()
        .map(|m| {
            json!({
                "id": catalog.public_name(m),
                "object": "model",
                "created": m.created,
                "owned_by": m.namespace,
                "llorch": {
                    "namespace": m.namespace,
                    "name": m.name,
                    "servedModelNames": m.served_names,
                    "phase": m.phase,
                    "replicas": m.replicas,
                    "readyReplicas": m.endpoints.len(),
                },
            })
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// A request on its way: what was read of it, and where it goes.
pub(crate) struct Job {
    pub started: Instant,
    pub path: &'static str,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub key: Option<[u8; 32]>,
    pub worker_key: Option<String>,
    pub streams: bool,
}

async fn forward(gw: Arc<Gateway>, path: &'static str, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let body = match axum::body::to_bytes(body, gw.cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => {
            return unrouted(
                &gw,
                ErrorCode::PayloadTooLarge,
                format!(
                    "the body is larger than the gateway's {} bytes",
                    gw.cfg.max_body_bytes
                ),
            );
        }
        Err(e) => {
            // The client broke off its body: nobody reads the answer.
            gw.metrics.model(UNKNOWN_MODEL).answered(499);
            return error(
                ErrorCode::InvalidRequest,
                format!("the body ended early: {e}"),
                None,
            );
        }
    };
    // Without a valid key nothing is said about models (not even which
    // names exist).
    if let KeyState::Loaded(keys) = gw.keys()
        && !keys.known(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )
    {
        return unrouted(
            &gw,
            ErrorCode::Unauthorized,
            Denied::Unauthorized.to_string(),
        );
    }
    let (peek, requested) = match Peek::parse(&body) {
        Ok(p) => p,
        Err(e) => return unrouted(&gw, ErrorCode::InvalidRequest, e.to_string()),
    };
    let model = match gw.catalog().resolve(&requested) {
        Ok(m) => m,
        Err(e @ ResolveError::NotFound(_)) => {
            return unrouted(&gw, ErrorCode::ModelNotFound, e.to_string());
        }
        Err(e @ ResolveError::Conflict { .. }) => {
            return unrouted(&gw, ErrorCode::ModelNameConflict, e.to_string());
        }
    };
    let m = gw.metrics.model(&model.id());
    if let Some(resp) = key_refusal(&gw, &headers, &requested, &model) {
        m.answered(resp.status().as_u16());
        return resp;
    }
    let worker_key = match gw.worker_key(&model).await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(model = %model.id(), error = %e, "cannot read the worker's API key");
            m.answered(503);
            return error(
                ErrorCode::NotReady,
                format!("cannot read the API key of model {requested:?}'s workers"),
                Some(5),
            );
        }
    };
    let session = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
    let job = Job {
        started,
        key: if gw.cfg.prefix_affinity {
            peek.affinity_key(session, gw.cfg.affinity_prefix_bytes)
        } else {
            session_key(session)
        },
        streams: peek.streams(),
        path,
        headers,
        body,
        worker_key,
    };
    if model.endpoints.is_empty() {
        return cold::hold(gw, model, job).await;
    }
    let pending = m.pending();
    let resp = match dispatch(&gw, &model, &job).await {
        Ok(sent) => respond(&gw, &model, sent, &job, false),
        Err(refusal) => refusal.into_response(),
    };
    pending.settle(resp.status().as_u16());
    resp
}

/// Whether reading a body failed on the size limit (not on a broken
/// connection).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// An error for a request that names no model it may use.
fn unrouted(gw: &Gateway, code: ErrorCode, message: String) -> Response {
    gw.metrics.model(UNKNOWN_MODEL).answered(code.http_status());
    error(code, message, None)
}

/// The key check's refusal, when keys are required and refuse.
fn key_refusal(
    gw: &Gateway,
    headers: &HeaderMap,
    requested: &str,
    model: &Model,
) -> Option<Response> {
    let keys = match gw.keys() {
        KeyState::Open => return None,
        KeyState::Unreadable(why) => {
            return Some(error(
                ErrorCode::NotReady,
                format!("the gateway cannot read its API keys: {why}"),
                Some(5),
            ));
        }
        KeyState::Loaded(keys) => keys,
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let denied = keys.admit(auth, requested, model, Instant::now()).err()?;
    Some(match &denied {
        Denied::Unauthorized => error(ErrorCode::Unauthorized, denied.to_string(), None),
        Denied::Forbidden(_) => error(ErrorCode::Forbidden, denied.to_string(), None),
        Denied::RateLimited { retry_after, .. } => error(
            ErrorCode::RateLimited,
            denied.to_string(),
            Some(*retry_after),
        ),
    })
}

/// A replica's answer, with the request counted on that replica.
pub(crate) struct Sent {
    pub resp: hyper::Response<hyper::body::Incoming>,
    pub outstanding: balance::Outstanding,
}

/// Why no replica took a request.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Every replica tried was full (429 or 503): retry after that many
    /// seconds.
    Full(u64),
    /// None could be reached.
    Unreachable(String),
    /// One failed after taking the request.
    Failed(String),
}

impl Refusal {
    pub fn code_and_message(&self) -> (ErrorCode, String, Option<u64>) {
        match self {
            Refusal::Full(after) => (
                ErrorCode::Overloaded,
                "every replica of the model is busy; retry later".into(),
                Some(*after),
            ),
            Refusal::Unreachable(why) => (
                ErrorCode::NotReady,
                format!("no replica of the model answered: {why}"),
                Some(1),
            ),
            Refusal::Failed(why) => (ErrorCode::Internal, why.clone(), None),
        }
    }

    fn into_response(self) -> Response {
        let (code, message, after) = self.code_and_message();
        error(code, message, after)
    }
}

/// Sends the job to the model's replicas in balancing order until one
/// takes it: a replica that cannot be reached or answers 429 or 503 (before
/// any byte went to the client) is followed by the next, up to
/// `max_attempts`.
pub(crate) async fn dispatch(gw: &Gateway, model: &Model, job: &Job) -> Result<Sent, Refusal> {
    let order = balance::order(
        &model.endpoints,
        job.key.as_ref(),
        &gw.replicas,
        gw.cfg.balance,
        Instant::now(),
    );
    let m = gw.metrics.model(&model.id());
    let mut refusal = Refusal::Unreachable("no replica is ready".into());
    for (attempt, addr) in order.into_iter().take(gw.cfg.max_attempts).enumerate() {
        if attempt > 0 {
            m.retried();
        }
        let outstanding = gw.replicas.get(addr).start();
        let sent = gw
            .upstream
            .post(
                addr,
                job.path,
                &job.headers,
                job.body.clone(),
                job.worker_key.as_deref(),
            )
            .await;
        match sent {
            Ok(resp) if matches!(resp.status().as_u16(), 429 | 503) => {
                let after = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(1);
                refusal = match refusal {
                    Refusal::Full(before) => Refusal::Full(before.min(after)),
                    _ => Refusal::Full(after),
                };
            }
            Ok(resp) => return Ok(Sent { resp, outstanding }),
            Err(e @ UpstreamError::Connect { .. }) => {
                tracing::debug!(error = %e, "replica unreachable; trying the next");
                if !matches!(refusal, Refusal::Full(_)) {
                    refusal = Refusal::Unreachable(e.to_string());
                }
            }
            Err(e) => return Err(Refusal::Failed(e.to_string())),
        }
    }
    Err(refusal)
}

/// The replica's answer as the client's: its status and headers (less the
/// hop-by-hop ones), its body streamed and tracked.
pub(crate) fn respond(gw: &Gateway, model: &Model, sent: Sent, job: &Job, cold: bool) -> Response {
    let (parts, body) = sent.resp.into_parts();
    let tracked = Tracked::new(
        body,
        job.started,
        cold,
        gw.metrics.model(&model.id()),
        sent.outstanding,
    );
    let mut resp = Response::new(Body::from_stream(tracked));
    *resp.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if forwarded(name) {
            resp.headers_mut().append(name.clone(), value.clone());
        }
    }
    resp
}
