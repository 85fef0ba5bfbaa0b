//! Route handlers and what they share: authentication, readiness, body
//! reading, admission and the items a running job yields to its stream.

pub mod answer;
pub mod execute;
pub mod job;
pub mod logprobs;
pub mod misc;
pub mod openai;
mod running;

pub use running::start_job;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::state::{AppState, Phase};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::OwnedSemaphorePermit;
use worker_common::ErrorCode;
use worker_common::job::{Outcome, StopReason, TokenLogprob};

/// A request body within the configured limit; too large is 413 JSON.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than the server accepts (--max-body-bytes)",
            )),
            Err(e) => Err(ApiError::new(ErrorCode::InvalidRequest, e.body_text())),
        }
    }
}

/// Checks `Authorization: Bearer <key>` when an API key is configured,
/// comparing in constant time.
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &state.config.api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // An empty key is refused at start; an empty token never matches.
    if !given.is_empty() && !key.is_empty() && bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing or wrong API key: send Authorization: Bearer <key>",
        ))
    }
}

/// Runs `f` on the blocking pool: parsing, chat templating and tokenizing a
/// body of up to the size limit take milliseconds, and the async threads
/// must stay free to answer probes and stream tokens meanwhile.
pub async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ApiError::new(
            ErrorCode::Internal,
            format!("preparing the request failed: {e}"),
        ))
    })
}

/// The engine, if the worker is ready for requests.
pub fn ready_engine(state: &AppState) -> Result<Arc<dyn Engine>, ApiError> {
    match (state.phase(), state.engine()) {
        (Phase::Ready | Phase::Leaving, Some(e)) => Ok(e.clone()),
        (Phase::Draining | Phase::Leaving, _) => Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                ErrorCode::NotReady,
                "the worker is shutting down; send the request elsewhere",
            )
        }),
        _ => Err(ApiError {
            retry_after: Some(5),
            ..ApiError::new(ErrorCode::NotReady, "the worker is still loading its model")
        }),
    }
}

/// Answers a request that ends before it runs, counted in
/// `requests_total`: bad input as `invalid`, a worker that cannot take it
/// (not ready, no key) as `rejected`, anything else as `error`. (A full
/// queue is counted by [`admit`].)
pub fn refuse(state: &AppState, e: ApiError) -> axum::response::Response {
    let outcome = match e.code {
        ErrorCode::InvalidRequest | ErrorCode::PayloadTooLarge => "invalid",
        ErrorCode::NotReady | ErrorCode::Unauthorized | ErrorCode::Overloaded => "rejected",
        _ => "error",
    };
    state.metrics.request(outcome);
    axum::response::IntoResponse::into_response(e)
}

/// A place in the decoding slots or the queue, or 429 (counted as a
/// rejected request).
pub fn admit(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    let mut permits = admit_many(state, 1)?;
    permits
        .pop()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "no admission permit"))
}

/// The places of a request for `n` jobs that already holds `first`: `n - 1`
/// more, all or none (one permit per job).
pub fn admit_more(
    state: &AppState,
    first: OwnedSemaphorePermit,
    n: usize,
) -> Result<Vec<OwnedSemaphorePermit>, ApiError> {
    let capacity = state.config.parallel.max(1) + state.config.queue_depth;
    if n > capacity {
        return admit_many(state, n);
    }
    let mut permits = match n {
        0 | 1 => Vec::new(),
        _ => admit_many(state, n - 1)?,
    };
    permits.push(first);
    Ok(permits)
}

/// `n` admissions at once (all or none): one permit per job.
pub fn admit_many(state: &AppState, n: usize) -> Result<Vec<OwnedSemaphorePermit>, ApiError> {
    let capacity = state.config.parallel.max(1) + state.config.queue_depth;
    if n > capacity {
        // Waiting would never help.
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "{n} choices need {n} places; this worker has {capacity} (--parallel plus --queue-depth)"
            ),
        ));
    }
    let count = u32::try_from(n).unwrap_or(u32::MAX);
    let mut all = state
        .admission
        .clone()
        .try_acquire_many_owned(count)
        .map_err(|_| {
            state.metrics.request("rejected");
            ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    ErrorCode::Overloaded,
                    format!(
                        "all {} slots and {} queue places are taken; retry later",
                        state.config.parallel, state.config.queue_depth
                    ),
                )
            }
        })?;
    let mut permits = Vec::with_capacity(n);
    for _ in 1..n {
        match all.split(1) {
            Some(p) => permits.push(p),
            None => break,
        }
    }
    permits.push(all);
    Ok(permits)
}

pub use worker_common::job::MAX_TOP_LOGPROBS;

/// What a running job yields to its stream.
#[derive(Debug)]
pub enum Item {
    /// Text; `index` is the index of the token that completed it;
    /// `logprobs` are those of the tokens since the last text (when the
    /// request asked; the text may be empty when only they are left).
    Text {
        text: String,
        index: usize,
        logprobs: Vec<TokenLogprob>,
    },
    /// Progress for the periodic metrics event.
    Progress { tokens_out: usize, decode_ms: u64 },
    /// Success: why it stopped, and the outcome.
    End(StopReason, Outcome),
    /// Failure or cancellation (always last).
    Error(ApiError),
}
