//! OpenAI-compatible routes: `POST /v1/completions` (raw prompt) and
//! `POST /v1/chat/completions` (the model's chat template), streaming or not,
//! with token log-probabilities when asked (`logprobs`, and `top_logprobs`
//! for chat).

mod body;
mod messages;

use super::answer::{self, Kind};
use super::{Body, admit, admit_more, authorize, off_runtime, ready_engine, refuse, start_job};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::state::AppState;
use crate::validate::parse_body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use body::{ChatBody, CompletionBody, Prepared};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use worker_common::ErrorCode;

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

/// Parses and checks the route's body, and tokenizes its prompt.
fn prepare(engine: &dyn Engine, body: &[u8], kind: Kind) -> Result<Prepared, ApiError> {
    match kind {
        Kind::Completion => parse_body::<CompletionBody>(body)?.prepare(engine),
        Kind::Chat => parse_body::<ChatBody>(body)?.prepare(engine),
    }
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
    // A place first: parsing, templating and tokenizing a body is work a
    // full worker must not take on.
    let first = match admit(&state) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let prepared = {
        let engine = engine.clone();
        off_runtime(move || prepare(engine.as_ref(), &body, kind)).await
    };
    let p = match prepared {
        Ok(x) => x,
        Err(e) => return refuse(&state, e),
    };
    // One admission per choice, all or none.
    let permits = match admit_more(&state, first, p.n) {
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
