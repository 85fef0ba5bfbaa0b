//! Shared server state: configuration, the engine once loaded, the phase,
//! admission, running jobs and metrics.

use crate::engine::Engine;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, watch};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Requests decoded at once.
    pub parallel: usize,
    /// Requests that may wait beyond those (more get 429).
    pub queue_depth: usize,
    /// Required bearer key for inference routes.
    pub api_key: Option<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// This worker's id (for `/health`).
    pub worker_id: String,
    /// How long a stream may wait for its client to read before its job
    /// is cancelled and its place freed.
    pub stall_timeout: Duration,
}

/// Where the worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The model is loading.
    Loading,
    /// Serving.
    Ready,
    /// Shutting down, first part: `/ready` is 503 so the Service stops
    /// routing here, but requests that still arrive (sent before the
    /// endpoints caught up) are taken.
    Leaving,
    /// Shutting down: no new requests.
    Draining,
}

impl Phase {
    /// `loading`, `ready` or `draining` (both shutdown phases).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Loading => "loading",
            Phase::Ready => "ready",
            Phase::Leaving => "draining",
            Phase::Draining => "draining",
        }
    }
}

/// A running job, as `/cancel` sees it.
#[derive(Debug, Clone)]
pub struct RunningJob {
    /// Tells the engine to stop.
    pub cancel: Arc<AtomicBool>,
    /// Wakes the job's stream to end it at once.
    pub notify: Arc<Notify>,
}

/// `/tokenize` and `/detokenize` requests worked on at once; more get 429.
pub const SIDE_WORK_AT_ONCE: usize = 2;

/// Everything the handlers share.
pub struct AppState {
    pub(crate) config: ServerConfig,
    engine: OnceLock<Arc<dyn Engine>>,
    phase: AtomicU8,
    pub(crate) admission: Arc<Semaphore>,
    /// Places for `/tokenize` and `/detokenize`, which are not admitted as
    /// jobs: their work runs on the blocking pool, at most this many at
    /// once, so a flood of them cannot hold every thread.
    pub(crate) side_work: Arc<Semaphore>,
    pub(crate) jobs: Mutex<HashMap<String, RunningJob>>,
    pub(crate) metrics: Metrics,
    started: Instant,
    /// Flips to true when the shutdown grace period ends.
    pub(crate) abort: watch::Receiver<bool>,
    abort_tx: watch::Sender<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .field("phase", &self.phase())
            .finish()
    }
}

impl AppState {
    /// State for a server that has not loaded its model yet.
    pub fn new(config: ServerConfig) -> Arc<Self> {
        let (abort_tx, abort) = watch::channel(false);
        Arc::new(AppState {
            admission: Arc::new(Semaphore::new(config.parallel.max(1) + config.queue_depth)),
            side_work: Arc::new(Semaphore::new(SIDE_WORK_AT_ONCE)),
            config,
            engine: OnceLock::new(),
            phase: AtomicU8::new(0),
            jobs: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            started: Instant::now(),
            abort,
            abort_tx,
        })
    }

    /// Installs the loaded engine and turns ready.
    pub fn set_ready(&self, engine: Arc<dyn Engine>) {
        let facts = engine.facts();
        self.metrics.set_memory(facts.memory_bytes);
        self.metrics.set_capacity(
            self.config.parallel,
            self.config.queue_depth,
            self.config.parallel * facts.context_length,
        );
        let _ = self.engine.set(engine);
        let _ = self
            .phase
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Turns unready but still takes requests (SIGTERM, during the drain
    /// delay).
    pub fn start_leaving(&self) {
        let _ = self
            .phase
            .compare_exchange(1, 2, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Stops taking requests.
    pub fn start_draining(&self) {
        self.phase.store(3, Ordering::SeqCst);
    }

    /// Ends every stream still open (the grace period is over).
    pub fn abort_streams(&self) {
        let _ = self.abort_tx.send(true);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Loading,
            1 => Phase::Ready,
            2 => Phase::Leaving,
            _ => Phase::Draining,
        }
    }

    /// The engine, once loaded.
    pub fn engine(&self) -> Option<&Arc<dyn Engine>> {
        self.engine.get()
    }

    /// Seconds since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> usize {
        self.jobs.lock().map(|j| j.len()).unwrap_or(0)
    }
}
