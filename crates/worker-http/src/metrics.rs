//! The worker's Prometheus metrics, rendered in the text format.
//!
//! A handful of counters, gauges and two histograms do not justify a
//! registry: they are atomics here, rendered by hand in `render`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use worker_common::prom::Histogram;

/// Request outcomes counted by `llorch_worker_requests_total{outcome}`.
pub const OUTCOMES: [&str; 5] = ["ok", "error", "cancelled", "rejected", "invalid"];

const TTFT_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const ITL_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// All worker metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: [AtomicU64; 5],
    tokens_in: AtomicU64,
    tokens_cached: AtomicU64,
    tokens_out: AtomicU64,
    ttft: Histogram,
    inter_token: Histogram,
    queue_depth: AtomicI64,
    in_flight: AtomicI64,
    memory_bytes: AtomicU64,
    kv_tokens: AtomicI64,
    slots: AtomicU64,
    queue_limit: AtomicU64,
    kv_capacity: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            tokens_in: AtomicU64::new(0),
            tokens_cached: AtomicU64::new(0),
            tokens_out: AtomicU64::new(0),
            ttft: Histogram::new(&TTFT_BUCKETS),
            inter_token: Histogram::new(&ITL_BUCKETS),
            queue_depth: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            memory_bytes: AtomicU64::new(0),
            kv_tokens: AtomicI64::new(0),
            slots: AtomicU64::new(0),
            queue_limit: AtomicU64::new(0),
            kv_capacity: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, outcome: &str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.requests[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts tokens of a finished request.
    pub fn tokens(&self, tokens_in: usize, tokens_cached: usize, tokens_out: usize) {
        self.tokens_in
            .fetch_add(tokens_in as u64, Ordering::Relaxed);
        self.tokens_cached
            .fetch_add(tokens_cached as u64, Ordering::Relaxed);
        self.tokens_out
            .fetch_add(tokens_out as u64, Ordering::Relaxed);
    }

    /// Time to first token.
    pub fn ttft(&self, d: Duration) {
        self.ttft.observe(d.as_secs_f64());
    }

    /// Time between two tokens.
    pub fn inter_token(&self, d: Duration) {
        self.inter_token.observe(d.as_secs_f64());
    }

    /// Jobs waiting for a slot (+1 / -1).
    pub fn queued(&self, delta: i64) {
        self.queue_depth.fetch_add(delta, Ordering::Relaxed);
    }

    /// Requests being served (+1 / -1).
    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Memory held by the model and caches.
    pub fn set_memory(&self, bytes: u64) {
        self.memory_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Decoding slots, queue places, and the tokens all slots can hold
    /// (slots × context).
    pub fn set_capacity(&self, slots: usize, queue_limit: usize, kv_tokens: usize) {
        self.slots.store(slots as u64, Ordering::Relaxed);
        self.queue_limit
            .store(queue_limit as u64, Ordering::Relaxed);
        self.kv_capacity.store(kv_tokens as u64, Ordering::Relaxed);
    }

    /// Tokens held in busy slots (+n / -n).
    pub fn kv_tokens(&self, delta: i64) {
        self.kv_tokens.fetch_add(delta, Ordering::Relaxed);
    }

    /// Tokens held by busy slots ÷ (slots × context); 0 before the model
    /// is loaded.
    fn kv_usage(&self) -> f64 {
        let capacity = self.kv_capacity.load(Ordering::Relaxed);
        if capacity == 0 {
            return 0.0;
        }
        let held = self.kv_tokens.load(Ordering::Relaxed).max(0) as f64;
        (held / capacity as f64).min(1.0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, uptime: Duration) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP llorch_worker_requests_total Requests by outcome.\n# TYPE llorch_worker_requests_total counter"
        );
        for (i, o) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "llorch_worker_requests_total{{outcome=\"{o}\"}} {}",
                self.requests[i].load(Ordering::Relaxed)
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        counter(
            &mut out,
            "llorch_worker_tokens_in_total",
            "Prompt tokens processed.",
            self.tokens_in.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "llorch_worker_tokens_cached_total",
            "Prompt tokens taken from an earlier request's cache (not computed again).",
            self.tokens_cached.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "llorch_worker_tokens_out_total",
            "Tokens generated.",
            self.tokens_out.load(Ordering::Relaxed),
        );
        self.ttft.render(
            &mut out,
            "llorch_worker_time_to_first_token_seconds",
            "Time from request to first token.",
        );
        self.inter_token.render(
            &mut out,
            "llorch_worker_inter_token_seconds",
            "Time between streamed tokens.",
        );
        gauge(
            &mut out,
            "llorch_worker_queue_depth",
            "Requests waiting for a decoding slot.",
            self.queue_depth.load(Ordering::Relaxed).max(0).to_string(),
        );
        gauge(
            &mut out,
            "llorch_worker_requests_in_flight",
            "Requests being served.",
            self.in_flight.load(Ordering::Relaxed).max(0).to_string(),
        );
        gauge(
            &mut out,
            "llorch_worker_slots",
            "Requests decoded at once (--parallel).",
            self.slots.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "llorch_worker_queue_limit",
            "Requests that may wait for a slot (--queue-depth).",
            self.queue_limit.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "llorch_worker_kv_cache_usage_ratio",
            "Tokens held by busy slots divided by slots times context.",
            format!("{:.6}", self.kv_usage()),
        );
        self.render_inference_extension(&mut out, &gauge);
        gauge(
            &mut out,
            "llorch_worker_memory_bytes",
            "Memory held by the model and caches.",
            self.memory_bytes.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "llorch_worker_uptime_seconds",
            "Seconds since the worker started.",
            format!("{:.3}", uptime.as_secs_f64()),
        );
        out
    }

    /// The same figures under the names an Inference Extension endpoint
    /// picker reads from a model server (waiting and running requests, KV
    /// cache use as a fraction), so it can route to llorch workers
    /// unchanged.
    fn render_inference_extension(
        &self,
        out: &mut String,
        gauge: &dyn Fn(&mut String, &str, &str, String),
    ) {
        gauge(
            out,
            "vllm:num_requests_waiting",
            "Requests waiting for a slot (same as llorch_worker_queue_depth).",
            self.queue_depth.load(Ordering::Relaxed).max(0).to_string(),
        );
        gauge(
            out,
            "vllm:num_requests_running",
            "Requests holding a slot.",
            (self.in_flight.load(Ordering::Relaxed) - self.queue_depth.load(Ordering::Relaxed))
                .max(0)
                .to_string(),
        );
        gauge(
            out,
            "vllm:kv_cache_usage_perc",
            "KV cache use, 0 to 1 (same as llorch_worker_kv_cache_usage_ratio).",
            format!("{:.6}", self.kv_usage()),
        );
    }
}
