//! The operator's Prometheus metrics and its operations routes:
//! `/metrics`, `/healthz`, `/readyz` (on `--metrics-addr`).
//!
//! Reconcile counts and durations are recorded as they happen. The number
//! of ModelWorkers per phase is read at scrape time from the controller's
//! own cache (its reflector store), so it can never drift from what the
//! controller sees, deletions included.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use kube::runtime::reflector::Store;
use llorch_api::{ModelWorker, Phase};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use worker_common::prom::Histogram;

/// How a reconcile ended, the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Children and status are as the spec asks.
    Ok,
    /// The spec is invalid; the ModelWorker waits for a change.
    Invalid,
    /// An API call failed; retried with backoff.
    Error,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Invalid, Outcome::Error];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }
}

const PHASES: [(Phase, &str); 6] = [
    (Phase::Pending, "Pending"),
    (Phase::Downloading, "Downloading"),
    (Phase::Loading, "Loading"),
    (Phase::Ready, "Ready"),
    (Phase::Degraded, "Degraded"),
    (Phase::Failed, "Failed"),
];

const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every operator metric.
pub struct Metrics {
    reconciles: [AtomicU64; 3],
    writes: AtomicU64,
    duration: Histogram,
    stores: Mutex<Vec<Store<ModelWorker>>>,
    /// Autoscaler changes: up, down.
    scaled: [AtomicU64; 2],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("reconciles", &self.reconciles)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Default::default(),
            writes: AtomicU64::new(0),
            duration: Histogram::new(&DURATION_BUCKETS),
            stores: Mutex::new(Vec::new()),
            scaled: Default::default(),
        }
    }
}

impl Metrics {
    /// Counts one reconcile and its duration.
    pub fn reconciled(&self, outcome: Outcome, took: Duration) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.reconciles[i].fetch_add(1, Ordering::Relaxed);
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts one write request to the API server (apply, create, delete,
    /// status, event) by the reconciler; an idle reconcile makes none.
    pub fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// A controller's cache, read for the per-phase gauge (one per
    /// watched namespace).
    pub fn watch(&self, store: Store<ModelWorker>) {
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(store);
    }

    /// Every ModelWorker in the controllers' caches.
    pub fn workers(&self) -> Vec<std::sync::Arc<ModelWorker>> {
        let stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores.iter().flat_map(Store::state).collect()
    }

    /// Counts an autoscaler change.
    pub fn scaled(&self, up: bool) {
        self.scaled[usize::from(!up)].fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let name = "llorch_operator_reconciles_total";
        let _ = writeln!(
            out,
            "# HELP {name} Reconciles by result.\n# TYPE {name} counter"
        );
        for (o, c) in Outcome::ALL.iter().zip(&self.reconciles) {
            let _ = writeln!(
                out,
                "{name}{{result=\"{}\"}} {}",
                o.label(),
                c.load(Ordering::Relaxed)
            );
        }
        let name = "llorch_operator_api_writes_total";
        let _ = writeln!(
            out,
            "# HELP {name} Write requests the reconciler sent to the API server.\n# TYPE {name} counter\n{name} {}",
            self.writes.load(Ordering::Relaxed)
        );
        self.duration.render(
            &mut out,
            "llorch_operator_reconcile_duration_seconds",
            "Time one reconcile took.",
        );
        let mut counts = [0u64; PHASES.len()];
        let mut unset = 0u64;
        let stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        for store in stores.iter() {
            for mw in store.state() {
                match mw.status.as_ref().and_then(|s| s.phase) {
                    Some(p) => {
                        if let Some(i) = PHASES.iter().position(|(q, _)| *q == p) {
                            counts[i] += 1;
                        }
                    }
                    None => unset += 1,
                }
            }
        }
        let name = "llorch_operator_modelworkers";
        let _ = writeln!(
            out,
            "# HELP {name} ModelWorkers by status phase (\"\" before the first status).\n# TYPE {name} gauge"
        );
        for ((_, label), n) in PHASES.iter().zip(counts) {
            let _ = writeln!(out, "{name}{{phase=\"{label}\"}} {n}");
        }
        let _ = writeln!(out, "{name}{{phase=\"\"}} {unset}");
        let name = "llorch_operator_autoscale_changes_total";
        let _ = writeln!(
            out,
            "# HELP {name} Replica changes the autoscaler made, by direction.\n# TYPE {name} counter"
        );
        for (direction, n) in ["up", "down"].iter().zip(&self.scaled) {
            let _ = writeln!(
                out,
                "{name}{{direction=\"{direction}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// The operations router: `/metrics`, `/healthz`, and `/readyz` (200
/// while `ready` is set).
pub fn router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                if ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histogram() {
        let m = Metrics::default();
        m.reconciled(Outcome::Ok, Duration::from_millis(20));
        m.reconciled(Outcome::Ok, Duration::from_millis(3));
        m.reconciled(Outcome::Error, Duration::from_secs(20));
        m.wrote();
        let text = m.render();
        assert!(text.contains("llorch_operator_reconciles_total{result=\"ok\"} 2"));
        assert!(text.contains("llorch_operator_reconciles_total{result=\"invalid\"} 0"));
        assert!(text.contains("llorch_operator_reconciles_total{result=\"error\"} 1"));
        assert!(text.contains("llorch_operator_reconcile_duration_seconds_bucket{le=\"0.025\"} 2"));
        assert!(text.contains("llorch_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("llorch_operator_modelworkers{phase=\"Ready\"} 0"));
        assert!(text.contains("llorch_operator_api_writes_total 1\n"));
    }
}
