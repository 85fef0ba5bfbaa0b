//! Route handlers and what they share: authentication, admission, body
//! parsing, and the task that turns a job's engine events into stream items.

pub mod answer;
pub mod execute;
pub mod logprobs;
pub mod misc;
pub mod openai;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::state::{AppState, Phase, RunningJob};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use worker_common::ErrorCode;
use worker_common::job::{JobEvent, JobRequest, Outcome, StopReason, TokenLogprob};

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

/// The prompt's tokens and the room left for new ones in a context of
/// `ctx`; a prompt that fills the context is an invalid request.
pub fn tokenize_prompt(
    engine: &dyn Engine,
    text: &str,
    add_special: bool,
    parse_special: bool,
    ctx: usize,
) -> Result<(Vec<u32>, usize), ApiError> {
    let tokens = engine
        .tokenize(text, add_special, parse_special)
        .map_err(|e| ApiError::new(e.code, e.message))?;
    if tokens.len() >= ctx {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "the prompt has {} tokens but the context holds {ctx}",
                tokens.len()
            ),
        ));
    }
    let room = ctx - tokens.len();
    Ok((tokens, room))
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

/// Submits `req` and spawns the task that feeds its items to the returned
/// receiver. Dropping the receiver (a client that went away) cancels the job.
pub fn start_job(
    state: Arc<AppState>,
    engine: &Arc<dyn Engine>,
    job_id: String,
    req: JobRequest,
    permit: OwnedSemaphorePermit,
) -> Result<mpsc::Receiver<Item>, ApiError> {
    let notify = Arc::new(Notify::new());
    {
        let mut jobs = state.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.contains_key(&job_id) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("job {job_id:?} is already running"),
            ));
        }
        jobs.insert(
            job_id.clone(),
            RunningJob {
                cancel: Arc::new(AtomicBool::new(false)),
                notify: notify.clone(),
            },
        );
    }
    let tokens_in = req.prompt.len();
    let submitted = Instant::now();
    let mut handle = match engine.submit(req) {
        Ok(h) => h,
        Err(e) => {
            state
                .jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&job_id);
            return Err(ApiError::new(e.code, e.message));
        }
    };
    if let Some(j) = state
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&job_id)
    {
        j.cancel = handle.cancel.clone();
    }
    state.metrics.in_flight(1);
    state.metrics.queued(1);
    let (tx, rx) = mpsc::channel(64);
    let mut abort = state.abort.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let mut queued = true;
        let mut last_text: Option<Instant> = None;
        let mut first_token: Option<Instant> = None;
        let mut tokens_out = 0usize;
        let mut reported = 0usize;
        let mut pending: Vec<TokenLogprob> = Vec::new();
        let mut tokens_cached = 0usize;
        let mut end_reason: Option<StopReason> = None;
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        ticker.tick().await;
        let outcome = loop {
            tokio::select! {
                ev = handle.events.recv() => match ev {
                    Some(JobEvent::Started { .. }) => {
                        if std::mem::take(&mut queued) {
                            state.metrics.queued(-1);
                        }
                    }
                    Some(JobEvent::Logprob(lp)) => pending.push(lp),
                    Some(JobEvent::Text { text, tokens_out: n }) => {
                        let now = Instant::now();
                        match last_text {
                            None => state.metrics.ttft(now - submitted),
                            Some(t) => state.metrics.inter_token(now - t),
                        }
                        last_text = Some(now);
                        first_token.get_or_insert(now);
                        tokens_out = n;
                        let logprobs = std::mem::take(&mut pending);
                        if tx.send(Item::Text { text, index: n.saturating_sub(1), logprobs }).await.is_err() {
                            break "cancelled";
                        }
                    }
                    Some(JobEvent::Done(outcome)) => {
                        (tokens_cached, tokens_out) = (outcome.tokens_cached, outcome.tokens_out);
                        state.metrics.tokens(outcome.tokens_in, tokens_cached, tokens_out);
                        let Some(reason) = outcome.stop_reason else {
                            let _ = tx.send(Item::Error(ApiError::new(ErrorCode::Cancelled, "the job was cancelled"))).await;
                            break "cancelled";
                        };
                        end_reason = Some(reason);
                        // Tokens whose text never came: those of a matched
                        // stop sequence (left out, like the text), or text
                        // held back until the end.
                        if !pending.is_empty() && reason != StopReason::StopSequence {
                            let logprobs = std::mem::take(&mut pending);
                            let index = tokens_out.saturating_sub(1);
                            let _ = tx.send(Item::Text { text: String::new(), index, logprobs }).await;
                        }
                        let _ = tx.send(Item::End(reason, outcome)).await;
                        break "ok";
                    }
                    Some(JobEvent::Failed { code, message }) => {
                        let _ = tx.send(Item::Error(ApiError::new(code, message))).await;
                        break "error";
                    }
                    None => {
                        let _ = tx.send(Item::Error(ApiError::new(ErrorCode::Internal, "the engine stopped"))).await;
                        break "error";
                    }
                },
                _ = notify.notified() => {
                    handle.cancel.store(true, Ordering::Relaxed);
                    let _ = tx.send(Item::Error(ApiError::new(ErrorCode::Cancelled, "the job was cancelled"))).await;
                    break "cancelled";
                }
                _ = aborted(&mut abort) => {
                    handle.cancel.store(true, Ordering::Relaxed);
                    let err = ApiError {
                        retriable: Some(true),
                        ..ApiError::new(ErrorCode::Cancelled, "the worker shut down before the job finished; retry elsewhere")
                    };
                    let _ = tx.send(Item::Error(err)).await;
                    break "cancelled";
                }
                _ = ticker.tick() => {
                    if let Some(first) = first_token.filter(|_| tokens_out > reported) {
                        reported = tokens_out;
                        let decode_ms = first.elapsed().as_millis() as u64;
                        if tx.send(Item::Progress { tokens_out, decode_ms }).await.is_err() {
                            break "cancelled";
                        }
                    }
                }
                _ = tx.closed() => break "cancelled",
            }
        };
        handle.cancel.store(true, Ordering::Relaxed);
        if queued {
            state.metrics.queued(-1);
        }
        state.metrics.in_flight(-1);
        state.metrics.request(outcome);
        state
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job_id);
        // One line per request, for operators: never the prompt or text.
        let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        let total = submitted.elapsed();
        let decode = first_token.map(|f| f.elapsed());
        tracing::info!(
            job = %job_id,
            outcome,
            finish = end_reason.map(StopReason::as_str),
            tokens_in,
            tokens_cached,
            tokens_out,
            ttft_ms = first_token.map(|f| ms(f - submitted)),
            total_ms = ms(total),
            tokens_per_sec = decode
                .filter(|d| tokens_out > 1 && !d.is_zero())
                .map(|d| ((tokens_out - 1) as f64 / d.as_secs_f64() * 10.0).round() / 10.0),
            "request finished"
        );
    });
    Ok(rx)
}

/// Resolves once the shutdown grace period has ended.
async fn aborted(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|a| *a).await.map(|_| ());
}
