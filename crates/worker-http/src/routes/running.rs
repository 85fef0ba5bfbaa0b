//! A running job: registered under its id (so `/cancel` finds it), its
//! engine events turned into stream items by a task, and its end counted,
//! unregistered and logged.

use super::Item;
use crate::engine::{Engine, JobHandle};
use crate::error::ApiError;
use crate::state::{AppState, RunningJob};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, watch};
use worker_common::ErrorCode;
use worker_common::job::{JobEvent, JobRequest, Outcome, StopReason, TokenLogprob};

/// How often a running job reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Items buffered between the job's task and its stream.
const ITEM_BUFFER: usize = 64;

/// Submits `req` and spawns the task that feeds its items to the returned
/// receiver. Dropping the receiver (a client that went away) cancels the job.
pub fn start_job(
    state: Arc<AppState>,
    engine: &Arc<dyn Engine>,
    job_id: String,
    req: JobRequest,
    permit: OwnedSemaphorePermit,
) -> Result<mpsc::Receiver<Item>, ApiError> {
    let notify = register(&state, &job_id)?;
    let tokens_in = req.prompt.len();
    let submitted = Instant::now();
    let handle = match engine.submit(req) {
        Ok(h) => h,
        Err(e) => {
            unregister(&state, &job_id);
            return Err(ApiError::new(e.code, e.message));
        }
    };
    attach_cancel(&state, &job_id, &handle.cancel);
    state.metrics.in_flight(1);
    state.metrics.queued(1);
    let (tx, rx) = mpsc::channel(ITEM_BUFFER);
    let task = JobTask::new(state, job_id, tx, tokens_in, submitted);
    tokio::spawn(task.run(handle, notify, permit));
    Ok(rx)
}

/// Registers a job under `job_id`, refusing an id already running; the
/// returned notifier ends the job's stream.
fn register(state: &AppState, job_id: &str) -> Result<Arc<Notify>, ApiError> {
    let notify = Arc::new(Notify::new());
    let mut jobs = state.jobs.lock().unwrap_or_else(|e| e.into_inner());
    if jobs.contains_key(job_id) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("job {job_id:?} is already running"),
        ));
    }
    jobs.insert(
        job_id.to_string(),
        RunningJob {
            cancel: Arc::new(AtomicBool::new(false)),
            notify: notify.clone(),
        },
    );
    Ok(notify)
}

/// Points a registered job's cancel flag at the engine's.
fn attach_cancel(state: &AppState, job_id: &str, cancel: &Arc<AtomicBool>) {
    let mut jobs = state.jobs.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(job) = jobs.get_mut(job_id) {
        job.cancel = cancel.clone();
    }
}

fn unregister(state: &AppState, job_id: &str) {
    state
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(job_id);
}

/// How a request ended, as `llorch_worker_requests_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Ok,
    Error,
    Cancelled,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Ending::Ok => "ok",
            Ending::Error => "error",
            Ending::Cancelled => "cancelled",
        }
    }
}

fn cancelled() -> ApiError {
    ApiError::new(ErrorCode::Cancelled, "the job was cancelled")
}

/// What a job's task keeps while it forwards the engine's events.
struct JobTask {
    state: Arc<AppState>,
    job_id: String,
    tx: mpsc::Sender<Item>,
    tokens_in: usize,
    submitted: Instant,
    /// Still waiting for a slot (counted in the queue depth).
    queued: bool,
    last_text: Option<Instant>,
    first_token: Option<Instant>,
    tokens_out: usize,
    /// `tokens_out` at the last progress item.
    reported: usize,
    tokens_cached: usize,
    /// Tokens counted in the KV-cache use figure (prompt from its slot's
    /// start, then each generated token), taken back when the job ends.
    kv_held: usize,
    /// Log-probabilities of tokens whose text has not come yet.
    pending: Vec<TokenLogprob>,
    end_reason: Option<StopReason>,
}

impl JobTask {
    /// Hands `item` to the stream; false when its client has gone or has
    /// not read for the stall limit (the job then ends, and its place in
    /// the slots and the queue is freed for others).
    async fn send(&self, item: Item) -> bool {
        let limit = self.state.config.stall_timeout;
        match tokio::time::timeout(limit, self.tx.send(item)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                tracing::warn!(
                    job = %self.job_id,
                    stalled_for = ?limit,
                    "the client stopped reading; cancelling the job"
                );
                false
            }
        }
    }

    fn new(
        state: Arc<AppState>,
        job_id: String,
        tx: mpsc::Sender<Item>,
        tokens_in: usize,
        submitted: Instant,
    ) -> Self {
        JobTask {
            state,
            job_id,
            tx,
            tokens_in,
            submitted,
            queued: true,
            last_text: None,
            first_token: None,
            tokens_out: 0,
            reported: 0,
            tokens_cached: 0,
            kv_held: 0,
            pending: Vec::new(),
            end_reason: None,
        }
    }

    /// Forwards events until the job ends, is cancelled (by `/cancel`, by
    /// the end of the shutdown grace period, or by a client that left), then
    /// settles its accounts. The admission permit is released before the
    /// stream closes, so a client that saw the end finds the place free.
    async fn run(
        mut self,
        mut handle: JobHandle,
        notify: Arc<Notify>,
        permit: OwnedSemaphorePermit,
    ) {
        let mut abort = self.state.abort.clone();
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        ticker.tick().await;
        let ending = loop {
            let step = tokio::select! {
                ev = handle.events.recv() => self.on_event(ev).await,
                _ = notify.notified() => {
                    handle.cancel.store(true, Ordering::Relaxed);
                    self.end_with(cancelled()).await
                }
                _ = aborted(&mut abort) => {
                    handle.cancel.store(true, Ordering::Relaxed);
                    self.end_with(ApiError {
                        retriable: Some(true),
                        ..ApiError::new(
                            ErrorCode::Cancelled,
                            "the worker shut down before the job finished; retry elsewhere",
                        )
                    })
                    .await
                }
                _ = ticker.tick() => self.on_tick().await,
                _ = self.tx.closed() => Some(Ending::Cancelled),
            };
            if let Some(ending) = step {
                break ending;
            }
        };
        handle.cancel.store(true, Ordering::Relaxed);
        self.settle(ending);
        drop(permit);
    }

    /// Handles one engine event (`None`: the engine dropped the job); the
    /// ending, once there is one.
    async fn on_event(&mut self, event: Option<JobEvent>) -> Option<Ending> {
        match event {
            Some(JobEvent::Started { .. }) => {
                if std::mem::take(&mut self.queued) {
                    self.state.metrics.queued(-1);
                }
                self.hold_kv(self.tokens_in);
                None
            }
            Some(JobEvent::Logprob(lp)) => {
                self.pending.push(lp);
                None
            }
            Some(JobEvent::Text { text, tokens_out }) => self.on_text(text, tokens_out).await,
            Some(JobEvent::Done(outcome)) => Some(self.on_done(outcome).await),
            Some(JobEvent::Failed { code, message }) => {
                self.send(Item::Error(ApiError::new(code, message))).await;
                Some(Ending::Error)
            }
            None => {
                let err = ApiError::new(ErrorCode::Internal, "the engine stopped");
                self.send(Item::Error(err)).await;
                Some(Ending::Error)
            }
        }
    }

    async fn on_text(&mut self, text: String, tokens_out: usize) -> Option<Ending> {
        let now = Instant::now();
        match self.last_text {
            None => self.state.metrics.ttft(now - self.submitted),
            Some(t) => self.state.metrics.inter_token(now - t),
        }
        self.last_text = Some(now);
        self.first_token.get_or_insert(now);
        self.hold_kv(self.tokens_in + tokens_out);
        self.tokens_out = tokens_out;
        let item = Item::Text {
            text,
            index: tokens_out.saturating_sub(1),
            logprobs: std::mem::take(&mut self.pending),
        };
        if self.send(item).await {
            None
        } else {
            Some(Ending::Cancelled)
        }
    }

    async fn on_done(&mut self, outcome: Outcome) -> Ending {
        (self.tokens_cached, self.tokens_out) = (outcome.tokens_cached, outcome.tokens_out);
        self.state
            .metrics
            .tokens(outcome.tokens_in, self.tokens_cached, self.tokens_out);
        let Some(reason) = outcome.stop_reason else {
            self.send(Item::Error(cancelled())).await;
            return Ending::Cancelled;
        };
        self.end_reason = Some(reason);
        // Tokens whose text never came: those of a matched stop sequence
        // (left out, like the text), or text held back until the end.
        if !self.pending.is_empty() && reason != StopReason::StopSequence {
            let item = Item::Text {
                text: String::new(),
                index: self.tokens_out.saturating_sub(1),
                logprobs: std::mem::take(&mut self.pending),
            };
            self.send(item).await;
        }
        self.send(Item::End(reason, outcome)).await;
        Ending::Ok
    }

    /// Sends a progress item when tokens came since the last one.
    async fn on_tick(&mut self) -> Option<Ending> {
        let first = self
            .first_token
            .filter(|_| self.tokens_out > self.reported)?;
        self.reported = self.tokens_out;
        let item = Item::Progress {
            tokens_out: self.tokens_out,
            decode_ms: first.elapsed().as_millis() as u64,
        };
        if self.send(item).await {
            None
        } else {
            Some(Ending::Cancelled)
        }
    }

    /// Ends the stream with `err`: a cancellation.
    async fn end_with(&mut self, err: ApiError) -> Option<Ending> {
        self.send(Item::Error(err)).await;
        Some(Ending::Cancelled)
    }

    /// Counts `held` tokens in the KV-cache use figure (from the last
    /// count).
    fn hold_kv(&mut self, held: usize) {
        let delta = held as i64 - self.kv_held as i64;
        self.kv_held = held;
        self.state.metrics.kv_tokens(delta);
    }

    /// Counts the ending, unregisters the job and logs it.
    fn settle(&mut self, ending: Ending) {
        self.hold_kv(0);
        let metrics = &self.state.metrics;
        if self.queued {
            metrics.queued(-1);
        }
        metrics.in_flight(-1);
        metrics.request(ending.as_str());
        unregister(&self.state, &self.job_id);
        self.finish_log(ending);
    }

    /// One line per request, for operators: never the prompt or text.
    fn finish_log(&self, ending: Ending) {
        let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        let total = self.submitted.elapsed();
        let decode = self.first_token.map(|f| f.elapsed());
        let tokens_out = self.tokens_out;
        tracing::info!(
            job = %self.job_id,
            outcome = ending.as_str(),
            finish = self.end_reason.map(StopReason::as_str),
            tokens_in = self.tokens_in,
            tokens_cached = self.tokens_cached,
            tokens_out,
            ttft_ms = self.first_token.map(|f| ms(f - self.submitted)),
            total_ms = ms(total),
            tokens_per_sec = decode
                .filter(|d| tokens_out > 1 && !d.is_zero())
                .map(|d| ((tokens_out - 1) as f64 / d.as_secs_f64() * 10.0).round() / 10.0),
            "request finished"
        );
    }
}

/// Resolves once the shutdown grace period has ended.
async fn aborted(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|a| *a).await.map(|_| ());
}
