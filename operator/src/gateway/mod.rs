//! `llorch-operator gateway`: one OpenAI-compatible endpoint in front of
//! every ModelWorker.
//!
//! A request's `model` names a ModelWorker ([`catalog`]); the gateway
//! picks one of its ready replicas by load and prompt-cache affinity
//! ([`balance`], keyed by [`peek`]), forwards the body unchanged and
//! streams the answer back ([`upstream`]), trying another replica when
//! one cannot connect or is full. A model with no ready replica holds the
//! request while it starts, waking it from zero ([`cold`]). API keys
//! ([`keys`]) say who may use which model, at what rate.
//!
//! The routing logic needs no cluster: [`Gateway`] takes its catalog from
//! a watch channel and reaches the cluster through [`Cluster`]. [`kube`]
//! feeds both from the API server's watches.

pub mod balance;
pub mod catalog;
pub mod cold;
pub mod keys;
pub mod kube;
pub mod metrics;
pub mod peek;
pub mod server;
pub mod upstream;

use catalog::{Catalog, Model};
use futures::future::BoxFuture;
use llorch_api::SecretKeySelector;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How the gateway behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Whether a request's prompt prefix makes its affinity key (else only
    /// the session header does).
    pub prefix_affinity: bool,
    /// Bytes of a completion prompt that make its affinity key.
    pub affinity_prefix_bytes: usize,
    /// Replica ordering.
    pub balance: balance::Policy,
    /// Replicas tried for one request.
    pub max_attempts: usize,
    /// Longest a request waits for a model's first ready replica.
    pub cold_start_timeout: Duration,
    /// Requests that may wait per model.
    pub cold_queue: usize,
    /// Time between the SSE comments of a waiting stream.
    pub wait_comment_interval: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How long a worker's key is used before it is read again.
    pub worker_key_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prefix_affinity: true,
            affinity_prefix_bytes: 1024,
            balance: balance::Policy {
                epsilon: 0.25,
                stale_after: Duration::from_secs(3),
            },
            max_attempts: 3,
            cold_start_timeout: Duration::from_secs(900),
            cold_queue: 256,
            wait_comment_interval: Duration::from_secs(5),
            max_body_bytes: 4 << 20,
            worker_key_ttl: Duration::from_secs(30),
        }
    }
}

/// What the gateway asks of the cluster.
pub trait Cluster: Send + Sync + 'static {
    /// Asks for one replica of a ModelWorker at zero (scale 0 → 1; a
    /// ModelWorker no longer at zero is left alone).
    fn wake(&self, namespace: &str, name: &str) -> BoxFuture<'static, Result<(), String>>;
    /// The value of a Secret's key in `namespace`.
    fn secret(
        &self,
        namespace: &str,
        key: &SecretKeySelector,
    ) -> BoxFuture<'static, Result<String, String>>;
}

/// Whether API keys are required, and the list when they are.
#[derive(Debug, Clone)]
pub enum KeyState {
    /// Anyone may call.
    Open,
    /// Keys are required but the list could not be read: every request is
    /// refused until it can (fail closed).
    Unreadable(String),
    /// The list.
    Loaded(Arc<keys::Keys>),
}

/// The gateway's shared state.
pub struct Gateway {
    /// Settings.
    pub cfg: Config,
    catalog: watch::Receiver<Arc<Catalog>>,
    /// Per-replica counters.
    pub replicas: balance::Replicas,
    keys: RwLock<KeyState>,
    /// Per-model metrics.
    pub metrics: metrics::GatewayMetrics,
    cluster: Arc<dyn Cluster>,
    upstream: upstream::Upstream,
    wakes: Mutex<HashMap<String, Instant>>,
    worker_keys: Mutex<HashMap<String, CachedKey>>,
    synced: AtomicBool,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("cfg", &self.cfg).finish()
    }
}

impl Gateway {
    /// A gateway routing by `catalog`, reaching the cluster through
    /// `cluster`, with keys as `keys` says.
    pub fn new(
        cfg: Config,
        catalog: watch::Receiver<Arc<Catalog>>,
        cluster: Arc<dyn Cluster>,
        keys: KeyState,
        connect_timeout: Duration,
    ) -> Gateway {
        Gateway {
            cfg,
            catalog,
            replicas: balance::Replicas::default(),
            keys: RwLock::new(keys),
            metrics: metrics::GatewayMetrics::default(),
            cluster,
            upstream: upstream::Upstream::new(connect_timeout),
            wakes: Mutex::default(),
            worker_keys: Mutex::default(),
            synced: AtomicBool::new(false),
        }
    }

    /// The catalog now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// A receiver of catalog changes.
    pub fn catalog_changes(&self) -> watch::Receiver<Arc<Catalog>> {
        self.catalog.clone()
    }

    /// Marks the catalog as complete (every watch listed once): `/readyz`
    /// answers 200 from then on.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// Whether the catalog is complete.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Replaces the key list (a reload keeps spent rate buckets).
    pub fn set_keys(&self, next: KeyState) {
        let mut state = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = next;
        if let (KeyState::Loaded(new), KeyState::Loaded(old)) = (&mut next, &*state)
            && let Some(new) = Arc::get_mut(new)
        {
            new.keep_buckets(old);
        }
        *state = next;
    }

    /// The key state now.
    pub fn keys(&self) -> KeyState {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks the cluster for a replica of `m` when its autoscaler has it at
    /// zero, at most once every 10 s per model: many waiting requests make
    /// one request. A ModelWorker at zero without `spec.autoscaling` is left
    /// alone (its owner turned it off).
    pub fn wake(&self, m: &Model) {
        if m.replicas != 0 || !m.wakes_from_zero {
            return;
        }
        let id = m.id();
        let now = Instant::now();
        {
            let mut wakes = self.wakes.lock().unwrap_or_else(PoisonError::into_inner);
            if wakes
                .get(&id)
                .is_some_and(|t| now.saturating_duration_since(*t) < Duration::from_secs(10))
            {
                return;
            }
            wakes.insert(id.clone(), now);
        }
        let call = self.cluster.wake(&m.namespace, &m.name);
        tokio::spawn(async move {
            match call.await {
                Ok(()) => tracing::info!(model = %id, "asked for a replica (from zero)"),
                Err(e) => {
                    tracing::warn!(model = %id, error = %e, "cannot scale the model up from zero")
                }
            }
        });
    }

    /// The key `m`'s workers require, read from its Secret (kept for
    /// `worker_key_ttl`; a failed read is kept for 5 s, so a missing Secret
    /// costs one API call per 5 s, not one per request).
    pub async fn worker_key(&self, m: &Model) -> Result<Option<String>, String> {
        let Some(sel) = &m.api_key else {
            return Ok(None);
        };
        let cache_key = format!("{}/{}/{}", m.namespace, sel.name, sel.key);
        let now = Instant::now();
        if let Some((value, at)) = self
            .worker_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&cache_key)
        {
            let ttl = if value.is_ok() {
                self.cfg.worker_key_ttl
            } else {
                FAILED_KEY_TTL
            };
            if now.saturating_duration_since(*at) < ttl {
                return value.clone().map(Some);
            }
        }
        let value = self.cluster.secret(&m.namespace, sel).await;
        self.worker_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cache_key, (value.clone(), now));
        value.map(Some)
    }
}

/// A worker key as last read (or why it could not be), and when.
type CachedKey = (Result<String, String>, Instant);

/// How long a failed read of a worker's key is kept.
const FAILED_KEY_TTL: Duration = Duration::from_secs(5);
