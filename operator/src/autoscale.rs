//! How many replicas a ModelWorker with `spec.autoscaling` should have.
//!
//! Load is the requests its replicas hold (in flight plus queued), summed
//! over the ready replicas, as their `/metrics` say. The wanted size is
//! `ceil(average load over the window ÷ target per replica)`, within
//! `minReplicas..=maxReplicas`:
//! - more than now: scale up at once;
//! - fewer: only once the load has stayed below the current size for
//!   `scaleDownDelaySeconds` with every replica ready, and then to the
//!   largest size wanted during that time;
//! - no decision while replicas are starting (fewer ready than asked for)
//!   for up to [`STARTUP_GRACE`]: a model the gateway woke from zero is not
//!   sent back before it serves, and one that never starts (unschedulable,
//!   crash-looping) is still sized, so its GPUs go back;
//! - no decision without figures: a failed read of a replica's `/metrics`
//!   adds no sample, and an empty window decides nothing (missing data is
//!   not an idle model).
//!
//! The target per replica defaults to the worker's slots (`server.parallel`,
//! else the worker's default).
//!
//! A model at zero is woken by the gateway (scale 0 → 1); this sizes it
//! from there.

use llorch_api::AutoscalingSpec;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long replicas may take to start before the scaler decides anyway.
pub const STARTUP_GRACE: Duration = Duration::from_secs(600);

/// What one look at a ModelWorker found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// `spec.replicas`.
    pub current: i32,
    /// Replicas ready (in the Service's endpoints).
    pub ready: usize,
    /// Requests held by the ready replicas; `None` when a replica's figures
    /// could not be read.
    pub load: Option<f64>,
}

/// A change of size, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The new `spec.replicas`.
    pub desired: i32,
    /// Average load over the window.
    pub average: f64,
    /// Requests per replica aimed at.
    pub target: i32,
}

/// One ModelWorker's load history and scale-down timer.
#[derive(Debug, Default, Clone)]
pub struct Scaler {
    samples: VecDeque<(Instant, f64)>,
    /// Since when the wanted size has been below the current one, and the
    /// largest size wanted since.
    below: Option<(Instant, i32)>,
    /// Since when fewer replicas are ready than asked for.
    starting: Option<Instant>,
}

impl Scaler {
    /// Records `obs` and says whether to change the size.
    pub fn observe(
        &mut self,
        spec: &AutoscalingSpec,
        parallel: Option<i32>,
        obs: Observation,
        now: Instant,
        window: Duration,
    ) -> Option<Decision> {
        let default_target = i32::try_from(worker_args::DEFAULT_PARALLEL).unwrap_or(1);
        let target = spec
            .target_requests
            .or(parallel)
            .unwrap_or(default_target)
            .max(1);
        if let Some(load) = obs.load {
            self.samples.push_back((now, load));
        }
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > window)
        {
            self.samples.pop_front();
        }
        let average = if self.samples.is_empty() {
            0.0
        } else {
            self.samples.iter().map(|(_, l)| l).sum::<f64>() / self.samples.len() as f64
        };
        let clamp = |n: i32| n.clamp(spec.min_replicas, spec.max_replicas.max(spec.min_replicas));
        let decision = |desired| {
            Some(Decision {
                desired,
                average,
                target,
            })
        };
        if clamp(obs.current) != obs.current {
            self.below = None;
            return decision(clamp(obs.current));
        }
        if obs.ready < obs.current.max(0) as usize {
            let since = *self.starting.get_or_insert(now);
            if now.saturating_duration_since(since) < STARTUP_GRACE {
                self.below = None;
                return None;
            }
        } else {
            self.starting = None;
        }
        if obs.load.is_none() || self.samples.is_empty() {
            self.below = None;
            return None;
        }
        let wanted = clamp((average / f64::from(target)).ceil() as i32);
        if wanted >= obs.current {
            self.below = None;
            return (wanted > obs.current).then_some(()).and(decision(wanted));
        }
        let delay = Duration::from_secs(spec.scale_down_delay_seconds.max(0) as u64);
        let (since, peak) = self.below.get_or_insert((now, wanted));
        *peak = (*peak).max(wanted);
        if now.saturating_duration_since(*since) >= delay {
            let peak = *peak;
            self.below = None;
            return decision(peak);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min: i32, max: i32, delay: i32) -> AutoscalingSpec {
        AutoscalingSpec {
            min_replicas: min,
            max_replicas: max,
            target_requests: None,
            scale_down_delay_seconds: delay,
        }
    }

    const WINDOW: Duration = Duration::from_secs(30);

    fn obs(current: i32, ready: usize, load: f64) -> Observation {
        Observation {
            current,
            ready,
            load: Some(load),
        }
    }

    #[test]
    fn load_above_the_target_scales_up_at_once_within_the_maximum() {
        let s = spec(1, 4, 300);
        let mut sc = Scaler::default();
        let t = Instant::now();
        // Target = parallel 2: 5 requests want 3 replicas.
        let d = sc.observe(&s, Some(2), obs(1, 1, 5.0), t, WINDOW);
        assert_eq!(d.map(|d| d.desired), Some(3));
        assert_eq!(d.map(|d| d.target), Some(2));
        let d = sc.observe(&s, Some(2), obs(3, 3, 40.0), t, WINDOW);
        assert_eq!(d.map(|d| d.desired), Some(4), "clamped to the maximum");
    }

    #[test]
    fn scale_down_waits_for_the_delay_and_keeps_the_peak() {
        let s = spec(0, 4, 60);
        let mut sc = Scaler::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(sc.observe(&s, Some(1), obs(3, 3, 0.0), at(0), WINDOW), None);
        assert_eq!(
            sc.observe(&s, Some(1), obs(3, 3, 2.0), at(40), WINDOW),
            None
        );
        // At 60 s the window holds 2.0 and 0.0 (0 s aged out at 31 s):
        // average 1, but 2 was wanted at 40 s.
        let d = sc.observe(&s, Some(1), obs(3, 3, 0.0), at(60), WINDOW);
        assert_eq!(d.map(|d| d.desired), Some(2));
        // Idle for the delay again: down to zero.
        assert_eq!(
            sc.observe(&s, Some(1), obs(2, 2, 0.0), at(100), WINDOW),
            None
        );
        let d = sc.observe(&s, Some(1), obs(2, 2, 0.0), at(160), WINDOW);
        assert_eq!(d.map(|d| d.desired), Some(0));
        assert_eq!(
            sc.observe(&s, Some(1), obs(0, 0, 0.0), at(200), WINDOW),
            None
        );
    }

    #[test]
    fn nothing_is_decided_while_replicas_start_and_load_resets_the_timer() {
        let s = spec(0, 2, 10);
        let mut sc = Scaler::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Woken from zero: one replica asked for, none ready yet.
        for i in 0..30 {
            let o = Observation {
                current: 1,
                ready: 0,
                load: None,
            };
            assert_eq!(sc.observe(&s, None, o, at(i), WINDOW), None);
        }
        assert_eq!(sc.observe(&s, None, obs(1, 1, 0.0), at(31), WINDOW), None);
        assert_eq!(sc.observe(&s, None, obs(1, 1, 1.0), at(35), WINDOW), None);
        // The average over the window is now 0.5: one replica still wanted.
        assert_eq!(sc.observe(&s, None, obs(1, 1, 0.0), at(45), WINDOW), None);
        let d = sc.observe(&s, None, obs(1, 1, 0.0), at(80), WINDOW);
        assert_eq!(d, None, "the timer starts when the average falls to zero");
        let d = sc.observe(&s, None, obs(1, 1, 0.0), at(90), WINDOW);
        assert_eq!(d.map(|d| d.desired), Some(0));
    }

    #[test]
    fn missing_figures_decide_nothing_and_a_replica_that_never_starts_is_sized_at_last() {
        let s = spec(0, 2, 10);
        let mut sc = Scaler::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let unread = Observation {
            current: 2,
            ready: 2,
            load: None,
        };
        for i in 0..100 {
            assert_eq!(sc.observe(&s, None, unread, at(i), WINDOW), None, "{i}");
        }
        // One of two never turns ready: after the grace, idle, it goes.
        let stuck = |load| Observation {
            current: 2,
            ready: 1,
            load: Some(load),
        };
        let grace = STARTUP_GRACE.as_secs();
        assert_eq!(sc.observe(&s, None, stuck(0.0), at(200), WINDOW), None);
        assert_eq!(
            sc.observe(&s, None, stuck(0.0), at(200 + grace - 1), WINDOW),
            None
        );
        assert_eq!(
            sc.observe(&s, None, stuck(0.0), at(200 + grace), WINDOW),
            None
        );
        let d = sc.observe(&s, None, stuck(0.0), at(210 + grace), WINDOW);
        assert_eq!(d.map(|d| d.desired), Some(0));
    }

    #[test]
    fn the_target_defaults_to_the_worker_slots() {
        let mut sc = Scaler::default();
        let d = sc.observe(&spec(1, 8, 0), None, obs(1, 1, 9.0), Instant::now(), WINDOW);
        assert_eq!(d.map(|d| (d.desired, d.target)), Some((3, 4)));
    }

    #[test]
    fn a_size_outside_the_bounds_is_corrected_first() {
        let mut sc = Scaler::default();
        let t = Instant::now();
        let d = sc.observe(&spec(2, 4, 0), None, obs(0, 0, 0.0), t, WINDOW);
        assert_eq!(d.map(|d| d.desired), Some(2));
        let d = sc.observe(&spec(0, 4, 0), None, obs(9, 9, 0.0), t, WINDOW);
        assert_eq!(d.map(|d| d.desired), Some(4));
    }
}
