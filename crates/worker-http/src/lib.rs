//! The worker's HTTP API on axum.
//!
//! - `POST /execute`: the SSE contract (`started`, `token`, `metrics`, then
//!   `end` or `error`); `POST /cancel`.
//! - `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions`:
//!   OpenAI-compatible, streaming or not.
//! - `POST /tokenize`, `POST /detokenize`.
//! - `GET /health`, `GET /ready`, `GET /metrics`.
//!
//! The server drives an [`Engine`], a small trait: it depends on no model or
//! backend crate. Errors are one type ([`ApiError`]) answered as a status
//! and JSON before a stream starts, or as an SSE `error` event after.
//! Validation reports every violated field at once and never echoes the
//! prompt. Admission is a semaphore of `parallel + queue_depth` places;
//! beyond it, 429 with `Retry-After`. The phase (loading, ready, draining)
//! decides `/ready` and whether requests are taken; when the shutdown grace
//! period ends, open streams end with a retriable `CANCELLED`.

mod engine;
mod error;
mod metrics;
mod routes;
mod state;
mod validate;

pub use engine::{Engine, EngineError, EngineFacts, GpuFacts, JobHandle};
pub use error::{ApiError, FieldError};
pub use state::{AppState, Phase, ServerConfig};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use std::sync::Arc;

/// The router, on shared state (tests serve it on port 0).
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.config.body_limit;
    Router::new()
        .route("/execute", post(routes::execute::execute))
        .route("/cancel", post(routes::misc::cancel))
        .route("/tokenize", post(routes::misc::tokenize))
        .route("/detokenize", post(routes::misc::detokenize))
        .route("/health", get(routes::misc::health))
        .route("/ready", get(routes::misc::ready))
        .route("/metrics", get(routes::misc::metrics))
        .route("/v1/models", get(routes::misc::models))
        .route("/v1/completions", post(routes::openai::completions))
        .route(
            "/v1/chat/completions",
            post(routes::openai::chat_completions),
        )
        .fallback(routes::misc::not_found)
        .method_not_allowed_fallback(routes::misc::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
