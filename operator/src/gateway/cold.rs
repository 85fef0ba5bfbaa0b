//! Requests for a model with no ready replica: held until one is ready.
//!
//! The first held request of a model at zero asks the cluster for a
//! replica ([`Gateway::wake`]: one request for many waiting ones). A
//! request waits at most `cold_start_timeout`, and at most `cold_queue`
//! wait per model; beyond either it gets 503 with `Retry-After`. A
//! streaming request gets its 200 and SSE comment lines at once, one per
//! `wait_comment_interval`, naming the model's phase, so clients and
//! proxies see progress instead of a silent connection; its answer then
//! follows on the same stream, and a failure ends the stream with an error
//! event (the status code is already sent).

use super::Gateway;
use super::catalog::{Model, ResolveError};
use super::metrics::ModelMetrics;
use super::server::{Job, dispatch, error, error_body, respond};
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use llorch_api::Phase;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;
use worker_common::ErrorCode;

/// A waiting place, held until dropped (also when its client leaves and
/// the handler is dropped mid-wait).
struct Waiting(Arc<ModelMetrics>);

impl Waiting {
    /// Takes one of the model's `limit` places, atomically (a burst cannot
    /// pass the limit); `None` when all are taken.
    fn reserve(m: &Arc<ModelMetrics>, limit: usize) -> Option<Waiting> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        m.try_wait(limit).then(|| Waiting(m.clone()))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting(-1);
    }
}

/// How often a held request looks again (and wakes its model again) with
/// no catalog change.
const WAKE_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// How a wait ended.
enum Waited {
    Ready(Arc<Model>),
    TimedOut(Option<Phase>),
    Gone(ResolveError),
    ClientLeft,
}

/// Holds `job` for `model` until a replica is ready, then sends it.
pub(crate) async fn hold(gw: Arc<Gateway>, model: Arc<Model>, job: Job) -> Response {
    let m = gw.metrics.model(&model.id());
    if model.phase == Some(Phase::Failed) {
        m.answered(503);
        return error(
            ErrorCode::NotReady,
            format!(
                "model {} has failed and has no ready replica (kubectl -n {} describe mw {})",
                model.id(),
                model.namespace,
                model.name
            ),
            None,
        );
    }
    if model.replicas == 0 && !model.wakes_from_zero {
        m.answered(503);
        return error(
            ErrorCode::NotReady,
            format!(
                "model {} is scaled to zero by its spec (no spec.autoscaling with minReplicas 0 to wake it): kubectl -n {} scale mw {} --replicas 1",
                model.id(),
                model.namespace,
                model.name
            ),
            None,
        );
    }
    let Some(waiting) = Waiting::reserve(&m, gw.cfg.cold_queue) else {
        m.answered(503);
        return error(
            ErrorCode::NotReady,
            format!(
                "{} requests already wait for model {} to start; retry later",
                gw.cfg.cold_queue,
                model.id()
            ),
            Some(5),
        );
    };
    gw.wake(&model);
    let deadline = Instant::now() + gw.cfg.cold_start_timeout;
    if job.streams {
        return stream_while_waiting(gw, model, job, deadline, waiting);
    }
    let pending = m.pending();
    let waited = wait_ready(&gw, &model, deadline, None).await;
    drop(waiting);
    let resp = match waited {
        Waited::Ready(ready) => match dispatch(&gw, &ready, &job).await {
            Ok(sent) => respond(&gw, &ready, sent, &job, true),
            Err(refusal) => {
                let (code, message, after) = refusal.code_and_message();
                error(code, message, after)
            }
        },
        Waited::TimedOut(phase) => timed_out(&gw, &model, phase),
        Waited::Gone(e) => error(ErrorCode::ModelNotFound, e.to_string(), None),
        Waited::ClientLeft => StatusCode::from_u16(499)
            .unwrap_or(StatusCode::BAD_REQUEST)
            .into_response(),
    };
    pending.settle(resp.status().as_u16());
    resp
}

fn timed_out(gw: &Gateway, model: &Model, phase: Option<Phase>) -> Response {
    error(
        ErrorCode::NotReady,
        timeout_message(gw, model, phase),
        Some(5),
    )
}

fn timeout_message(gw: &Gateway, model: &Model, phase: Option<Phase>) -> String {
    format!(
        "model {} has no ready replica after {} s (phase {}); retry later",
        model.id(),
        gw.cfg.cold_start_timeout.as_secs(),
        phase_name(phase)
    )
}

fn phase_name(phase: Option<Phase>) -> String {
    phase.map_or_else(|| "unknown".into(), |p| format!("{p:?}"))
}

/// Waits until the model has a ready replica, the deadline passes, the
/// model goes away, or (with `comments`) the client leaves. A model back at
/// zero while requests wait is woken again.
async fn wait_ready(
    gw: &Gateway,
    model: &Model,
    deadline: Instant,
    comments: Option<&mpsc::Sender<Bytes>>,
) -> Waited {
    let mut changes = gw.catalog_changes();
    let id = model.id();
    let mut tick = tokio::time::interval(gw.cfg.wait_comment_interval);
    // A wake that was lost (a failed call, a model sent back to zero) is
    // sent again even when nothing in the catalog changes.
    let mut recheck = tokio::time::interval(WAKE_RECHECK);
    loop {
        let now = match changes.borrow_and_update().resolve(&id) {
            Ok(m) => m,
            Err(e) => return Waited::Gone(e),
        };
        if !now.endpoints.is_empty() {
            return Waited::Ready(now);
        }
        gw.wake(&now);
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Waited::TimedOut(now.phase);
                }
            }
            _ = tick.tick(), if comments.is_some() => {
                let line = format!(
                    ": waiting for model {}: phase {}, {}/{} replicas ready\n\n",
                    id,
                    phase_name(now.phase),
                    now.endpoints.len(),
                    now.replicas
                );
                if let Some(tx) = comments
                    && tx.send(Bytes::from(line)).await.is_err()
                {
                    return Waited::ClientLeft;
                }
            }
            _ = recheck.tick() => {}
            () = tokio::time::sleep_until(deadline) => return Waited::TimedOut(now.phase),
        }
    }
}

/// The SSE lines that end a stream with an error.
fn error_event(body: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {body}\n\ndata: [DONE]\n\n"))
}

/// A 200 SSE answer at once: waiting comments, then the replica's stream.
fn stream_while_waiting(
    gw: Arc<Gateway>,
    model: Arc<Model>,
    job: Job,
    deadline: Instant,
    waiting: Waiting,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let m = gw.metrics.model(&model.id());
    tokio::spawn(async move {
        let waited = wait_ready(&gw, &model, deadline, Some(&tx)).await;
        drop(waiting);
        let ready = match waited {
            Waited::Ready(ready) => ready,
            Waited::TimedOut(phase) => {
                m.answered(503);
                let body = error_body(ErrorCode::NotReady, &timeout_message(&gw, &model, phase));
                tx.send(error_event(&body)).await.ok();
                return;
            }
            Waited::Gone(e) => {
                m.answered(404);
                let body = error_body(ErrorCode::ModelNotFound, &e.to_string());
                tx.send(error_event(&body)).await.ok();
                return;
            }
            Waited::ClientLeft => {
                m.answered(499);
                return;
            }
        };
        // The client may leave while the replica answers: stop then.
        let sent = tokio::select! {
            sent = dispatch(&gw, &ready, &job) => sent,
            () = tx.closed() => {
                m.answered(499);
                return;
            }
        };
        let sent = match sent {
            Ok(sent) => sent,
            Err(refusal) => {
                let (code, message, _) = refusal.code_and_message();
                m.answered(code.http_status());
                tx.send(error_event(&error_body(code, &message))).await.ok();
                return;
            }
        };
        let status = sent.resp.status();
        m.answered(status.as_u16());
        let mut body = respond(&gw, &ready, sent, &job, true)
            .into_body()
            .into_data_stream();
        if !status.is_success() {
            // The replica's error body, as the stream's error event.
            let mut text = Vec::new();
            let read = async {
                while let Some(Ok(chunk)) = body.next().await {
                    text.extend_from_slice(&chunk);
                    if text.len() > 64 << 10 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
            let parsed = serde_json::from_slice(&text).unwrap_or_else(|_| {
                error_body(
                    ErrorCode::Internal,
                    &format!("the replica answered {status}"),
                )
            });
            tx.send(error_event(&parsed)).await.ok();
            return;
        }
        loop {
            let next = tokio::select! {
                next = body.next() => next,
                () = tx.closed() => return,
            };
            let Some(chunk) = next else { return };
            let Ok(chunk) = chunk else {
                let e = error_body(ErrorCode::Internal, "the replica's stream broke off");
                tx.send(error_event(&e)).await.ok();
                return;
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
