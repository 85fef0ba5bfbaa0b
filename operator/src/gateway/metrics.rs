//! The gateway's Prometheus metrics, per model (`NAMESPACE/NAME`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use worker_common::prom::Histogram;

const DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const TTFT_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const COLD_BUCKETS: [f64; 10] = [1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0];

/// One model's figures.
#[derive(Debug)]
pub struct ModelMetrics {
    codes: Mutex<BTreeMap<u16, u64>>,
    duration: Histogram,
    ttft: Histogram,
    cold_start: Histogram,
    in_flight: AtomicI64,
    waiting: AtomicI64,
    retries: AtomicU64,
}

impl Default for ModelMetrics {
    fn default() -> Self {
        ModelMetrics {
            codes: Mutex::default(),
            duration: Histogram::new(&DURATION_BUCKETS),
            ttft: Histogram::new(&TTFT_BUCKETS),
            cold_start: Histogram::new(&COLD_BUCKETS),
            in_flight: AtomicI64::new(0),
            waiting: AtomicI64::new(0),
            retries: AtomicU64::new(0),
        }
    }
}

impl ModelMetrics {
    /// Counts an answered request by its status code.
    pub fn answered(&self, code: u16) {
        *self
            .codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(code)
            .or_default() += 1;
    }

    /// A request to count once answered (499 if never).
    pub fn pending(self: &Arc<Self>) -> PendingAnswer {
        PendingAnswer(Some(self.clone()))
    }

    /// A request's whole duration.
    pub fn duration(&self, d: Duration) {
        self.duration.observe(d.as_secs_f64());
    }

    /// Request to the first byte of the answer's body.
    pub fn ttft(&self, d: Duration) {
        self.ttft.observe(d.as_secs_f64());
    }

    /// Request to first byte for a request that found no replica.
    pub fn cold_start(&self, d: Duration) {
        self.cold_start.observe(d.as_secs_f64());
    }

    /// Requests sent upstream (+1 / -1).
    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Requests held for a replica (+1 / -1).
    pub fn waiting(&self, delta: i64) {
        self.waiting.fetch_add(delta, Ordering::Relaxed);
    }

    /// Requests held for a replica now.
    pub fn waiting_now(&self) -> i64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Takes a waiting place if fewer than `limit` are taken (+1); false
    /// when full. Give it back with `waiting(-1)`.
    pub fn try_wait(&self, limit: i64) -> bool {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// A request tried again on another replica.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request whose answer is not counted yet: dropped unsettled (its
/// client left and the handler was dropped), it counts as 499.
#[derive(Debug)]
pub struct PendingAnswer(Option<Arc<ModelMetrics>>);

impl PendingAnswer {
    /// Counts the answer's status.
    pub fn settle(mut self, code: u16) {
        if let Some(m) = self.0.take() {
            m.answered(code);
        }
    }
}

impl Drop for PendingAnswer {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            m.answered(499);
        }
    }
}

/// Every model's figures.
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    models: Mutex<BTreeMap<String, Arc<ModelMetrics>>>,
}

impl GatewayMetrics {
    /// The figures of model `id`, created on first use.
    pub fn model(&self, id: &str) -> Arc<ModelMetrics> {
        self.models
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let models: Vec<(String, Arc<ModelMetrics>)> = self
            .models
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = String::new();
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        header(
            &mut out,
            "llorch_gateway_requests_total",
            "counter",
            "Requests by model and status code.",
        );
        for (id, m) in &models {
            let codes = m
                .codes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            for (code, n) in codes {
                let _ = writeln!(
                    out,
                    "llorch_gateway_requests_total{{model=\"{}\",code=\"{code}\"}} {n}",
                    escape(id)
                );
            }
        }
        for (name, kind, help, read) in [
            (
                "llorch_gateway_requests_in_flight",
                "gauge",
                "Requests sent to a replica and not yet answered in full.",
                (|m: &ModelMetrics| m.in_flight.load(Ordering::Relaxed).max(0) as u64)
                    as fn(&ModelMetrics) -> u64,
            ),
            (
                "llorch_gateway_requests_waiting",
                "gauge",
                "Requests held until the model has a ready replica.",
                |m: &ModelMetrics| m.waiting.load(Ordering::Relaxed).max(0) as u64,
            ),
            (
                "llorch_gateway_upstream_retries_total",
                "counter",
                "Requests tried again on another replica.",
                |m: &ModelMetrics| m.retries.load(Ordering::Relaxed),
            ),
        ] {
            header(&mut out, name, kind, help);
            for (id, m) in &models {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(id), read(m));
            }
        }
        for (name, help, pick) in [
            (
                "llorch_gateway_request_duration_seconds",
                "Request to the end of its answer.",
                (|m: &ModelMetrics| &m.duration) as fn(&ModelMetrics) -> &Histogram,
            ),
            (
                "llorch_gateway_time_to_first_token_seconds",
                "Request to the first byte of its answer's body.",
                |m: &ModelMetrics| &m.ttft,
            ),
            (
                "llorch_gateway_cold_start_seconds",
                "Request to first byte for requests that waited for a replica (from zero).",
                |m: &ModelMetrics| &m.cold_start,
            ),
        ] {
            header(&mut out, name, "histogram", help);
            for (id, m) in &models {
                pick(m).render_series(&mut out, name, &format!("model=\"{}\"", escape(id)));
            }
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_render_per_model() {
        let g = GatewayMetrics::default();
        let m = g.model("a/gemma");
        m.answered(200);
        m.answered(200);
        m.answered(404);
        m.ttft(Duration::from_millis(30));
        m.retried();
        m.waiting(1);
        let text = g.render();
        assert!(text.contains("llorch_gateway_requests_total{model=\"a/gemma\",code=\"200\"} 2"));
        assert!(text.contains("llorch_gateway_requests_total{model=\"a/gemma\",code=\"404\"} 1"));
        assert!(text.contains("llorch_gateway_upstream_retries_total{model=\"a/gemma\"} 1"));
        assert!(text.contains("llorch_gateway_requests_waiting{model=\"a/gemma\"} 1"));
        assert!(text.contains(
            "llorch_gateway_time_to_first_token_seconds_bucket{model=\"a/gemma\",le=\"0.05\"} 1"
        ));
        assert!(
            text.contains("llorch_gateway_time_to_first_token_seconds_count{model=\"a/gemma\"} 1")
        );
    }
}
