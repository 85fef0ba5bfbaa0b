//! A Prometheus histogram rendered in the text exposition format, shared by
//! the worker's and the operator's `/metrics`. A handful of series do not
//! justify a metrics registry; this is the one piece both need.

use std::fmt::Write;
use std::sync::Mutex;

/// Cumulative buckets with fixed upper bounds, a sum and a count.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    /// An empty histogram with the given ascending upper bounds.
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            inner: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (i, b) in self.bounds.iter().enumerate() {
            if value <= *b {
                g.0[i] += 1;
            }
        }
        g.1 += value;
        g.2 += 1;
    }

    /// Appends `# HELP`, `# TYPE` and the series of `name` to `out`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, "");
    }

    /// Appends the series of `name` with extra `labels` (`k="v",...`,
    /// already escaped; empty for none) to `out`, without `# HELP` and
    /// `# TYPE` (one family may hold several label sets).
    pub fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (with, alone) = if labels.is_empty() {
            (String::new(), String::new())
        } else {
            (format!("{labels},"), format!("{{{labels}}}"))
        };
        for (i, b) in self.bounds.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{with}le=\"{b}\"}} {}", g.0[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{{with}le=\"+Inf\"}} {}", g.2);
        let _ = writeln!(out, "{name}_sum{alone} {}", g.1);
        let _ = writeln!(out, "{name}_count{alone} {}", g.2);
    }
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn buckets_are_cumulative() {
        let h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.5, 5.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.1\"} 1\n"));
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count 3\n"));
    }
}
