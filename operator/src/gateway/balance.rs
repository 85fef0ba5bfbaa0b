//! Which replica a request tries first, and which next.
//!
//! A replica's load is the larger of the requests this gateway has
//! outstanding on it and what the replica itself last reported (in flight
//! plus queued, which counts the other gateways' requests too).
//!
//! - Without an affinity key: least load first.
//! - With one (a conversation's prefix or a session header): rendezvous
//!   hashing with bounded loads. Each replica's weight is a hash of the key
//!   and its address, so a key keeps its replica while the set of replicas
//!   holds, and a replica's leaving moves only its own keys. A replica whose
//!   load would pass `(1 + ε)` times the mean is skipped for the next in
//!   the key's order, so one hot conversation prefix cannot pile onto one
//!   replica.
//!
//! Replicas whose figures are stale (the last scrapes failed) or that
//! report every queue place taken come last, after every healthy one.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What a replica's `/metrics` said last.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Requests the replica holds: decoding and queued.
    pub in_flight: u64,
    /// Of those, requests waiting for a slot.
    pub queued: u64,
    /// Decoding slots (`--parallel`), when reported.
    pub slots: Option<u64>,
    /// Requests that may wait (`--queue-depth`), when reported.
    pub queue_limit: Option<u64>,
    /// Share of the replica's KV cache held by its requests.
    pub kv_usage: f64,
}

impl Figures {
    /// Every slot and queue place taken: a request would be refused with
    /// 429.
    pub fn saturated(&self) -> bool {
        match (self.slots, self.queue_limit) {
            (Some(slots), Some(limit)) => self.in_flight >= slots.saturating_add(limit),
            _ => false,
        }
    }
}

/// One replica's counters.
#[derive(Debug)]
pub struct Replica {
    outstanding: AtomicUsize,
    scrape: Mutex<Scrape>,
}

#[derive(Debug, Clone, Copy)]
struct Scrape {
    first_seen: Instant,
    last_ok: Option<Instant>,
    figures: Option<Figures>,
}

impl Replica {
    fn new(now: Instant) -> Replica {
        Replica {
            outstanding: AtomicUsize::new(0),
            scrape: Mutex::new(Scrape {
                first_seen: now,
                last_ok: None,
                figures: None,
            }),
        }
    }

    /// Requests this gateway has outstanding on the replica.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts a request until the guard drops (its response's end).
    pub fn start(self: &Arc<Self>) -> Outstanding {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(self.clone())
    }

    /// Records a scrape's figures.
    pub fn scraped(&self, figures: Figures, now: Instant) {
        let mut s = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        s.last_ok = Some(now);
        s.figures = Some(figures);
    }

    /// The figures when fresh (scraped within `stale_after`).
    pub fn figures(&self, now: Instant, stale_after: Duration) -> Option<Figures> {
        let s = *self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        s.last_ok
            .filter(|t| now.saturating_duration_since(*t) <= stale_after)
            .and(s.figures)
    }

    /// Whether the replica's figures are stale: no scrape succeeded within
    /// `stale_after` although it has been known that long. A replica just
    /// added is not stale: it has had no chance to answer.
    pub fn stale(&self, now: Instant, stale_after: Duration) -> bool {
        let s = *self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        let since = s.last_ok.unwrap_or(s.first_seen);
        now.saturating_duration_since(since) > stale_after
    }

    /// The load used for balancing: the requests it holds, by our count
    /// or its own, whichever is higher.
    fn load(&self, now: Instant, stale_after: Duration) -> u64 {
        let own = self.outstanding() as u64;
        let reported = self.figures(now, stale_after).map_or(0, |f| f.in_flight);
        own.max(reported)
    }
}

/// A request counted on a replica; dropping it ends the count.
#[derive(Debug)]
pub struct Outstanding(Arc<Replica>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every replica's counters, by address.
#[derive(Debug, Default)]
pub struct Replicas {
    by_addr: Mutex<HashMap<SocketAddr, Arc<Replica>>>,
}

impl Replicas {
    /// The counters of `addr`, created on first use.
    pub fn get(&self, addr: SocketAddr) -> Arc<Replica> {
        let mut map = self.by_addr.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(addr)
            .or_insert_with(|| Arc::new(Replica::new(Instant::now())))
            .clone()
    }

    /// Forgets replicas not in `live` that have nothing outstanding.
    pub fn retain(&self, live: &std::collections::HashSet<SocketAddr>) {
        let mut map = self.by_addr.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|addr, r| live.contains(addr) || r.outstanding() > 0);
    }
}

/// How to order the replicas.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// A replica whose load would pass `(1 + epsilon) × mean` is skipped
    /// for an affinity key.
    pub epsilon: f64,
    /// Figures older than this are stale.
    pub stale_after: Duration,
}

/// The order in which to try `addrs` for a request with `key`.
pub fn order(
    addrs: &[SocketAddr],
    key: Option<&[u8; 32]>,
    replicas: &Replicas,
    policy: Policy,
    now: Instant,
) -> Vec<SocketAddr> {
    struct Candidate {
        addr: SocketAddr,
        load: u64,
        healthy: bool,
        weight: u64,
    }
    let mut all: Vec<Candidate> = addrs
        .iter()
        .map(|&addr| {
            let r = replicas.get(addr);
            let figures = r.figures(now, policy.stale_after);
            Candidate {
                addr,
                load: r.load(now, policy.stale_after),
                healthy: !r.stale(now, policy.stale_after)
                    && !figures.is_some_and(|f| f.saturated()),
                weight: key.map_or(0, |k| rendezvous_weight(k, addr)),
            }
        })
        .collect();
    // Healthy first; within each group by key weight, else by load.
    all.sort_by(|a, b| {
        b.healthy
            .cmp(&a.healthy)
            .then_with(|| match key {
                Some(_) => b.weight.cmp(&a.weight),
                None => a.load.cmp(&b.load),
            })
            .then_with(|| a.addr.cmp(&b.addr))
    });
    if key.is_some() {
        // Bounded loads: among the healthy, those the key may still use
        // keep their key order; the ones over the bound follow by load.
        let healthy = all.iter().filter(|c| c.healthy).count();
        let total = all[..healthy]
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.load));
        let bound = bound(total, healthy, policy.epsilon);
        let (mut under, mut over): (Vec<Candidate>, Vec<Candidate>) = all
            .drain(..healthy)
            .partition(|c| c.load.saturating_add(1) as f64 <= bound);
        over.sort_by_key(|c| c.load);
        under.append(&mut over);
        under.append(&mut all);
        all = under;
    }
    all.into_iter().map(|c| c.addr).collect()
}

/// The most load a replica may have after taking one more request:
/// `(1 + ε)` times the mean once that request is counted, at least 1.
fn bound(total: u64, replicas: usize, epsilon: f64) -> f64 {
    if replicas == 0 {
        return f64::INFINITY;
    }
    let mean = total.saturating_add(1) as f64 / replicas as f64;
    ((1.0 + epsilon) * mean).ceil().max(1.0)
}

/// The rendezvous weight of `addr` for `key`.
fn rendezvous_weight(key: &[u8; 32], addr: SocketAddr) -> u64 {
    let mut h = Sha256::new();
    h.update(key);
    h.update(addr.to_string().as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
            .collect()
    }

    const POLICY: Policy = Policy {
        epsilon: 0.25,
        stale_after: Duration::from_secs(3),
    };

    fn key(s: &str) -> [u8; 32] {
        Sha256::digest(s.as_bytes()).into()
    }

    #[test]
    fn without_a_key_the_least_loaded_goes_first() {
        let r = Replicas::default();
        let a = addrs(3);
        let now = Instant::now();
        let _held = [
            r.get(a[0]).start(),
            r.get(a[0]).start(),
            r.get(a[2]).start(),
        ];
        assert_eq!(order(&a, None, &r, POLICY, now), vec![a[1], a[2], a[0]]);
        // A replica's own report counts when it is higher than ours.
        r.get(a[1]).scraped(
            Figures {
                in_flight: 5,
                queued: 1,
                ..Figures::default()
            },
            now,
        );
        assert_eq!(order(&a, None, &r, POLICY, now)[2], a[1]);
    }

    #[test]
    fn a_key_keeps_its_replica_and_moves_only_when_its_replica_leaves() {
        let r = Replicas::default();
        let a = addrs(4);
        let now = Instant::now();
        let keys: Vec<[u8; 32]> = (0..200)
            .map(|i| key(&format!("conversation {i}")))
            .collect();
        let first = |set: &[SocketAddr], k: &[u8; 32]| order(set, Some(k), &r, POLICY, now)[0];
        let before: Vec<SocketAddr> = keys.iter().map(|k| first(&a, k)).collect();
        for (k, b) in keys.iter().zip(&before) {
            assert_eq!(first(&a, k), *b, "stable for the same replicas");
        }
        // Every replica gets some keys.
        for addr in &a {
            assert!(before.contains(addr), "{addr} has no keys");
        }
        let without: Vec<SocketAddr> = a[..3].to_vec();
        for (k, b) in keys.iter().zip(&before) {
            let after = first(&without, k);
            if *b != a[3] {
                assert_eq!(after, *b, "a key whose replica stayed did not move");
            }
        }
    }

    #[test]
    fn a_replica_above_the_bound_is_skipped_for_its_keys() {
        let r = Replicas::default();
        let a = addrs(2);
        let now = Instant::now();
        let k = key("hot prefix");
        let home = order(&a, Some(&k), &r, POLICY, now)[0];
        let other = if home == a[0] { a[1] } else { a[0] };
        let mut held = Vec::new();
        // Mean after one more = (n + 1) / 2; bound = ceil(1.25 × mean).
        for _ in 0..3 {
            held.push(r.get(home).start());
        }
        assert_eq!(order(&a, Some(&k), &r, POLICY, now)[0], other);
        held.push(r.get(other).start());
        held.push(r.get(other).start());
        assert_eq!(
            order(&a, Some(&k), &r, POLICY, now)[0],
            home,
            "3 against 2: home is within the bound again"
        );
    }

    #[test]
    fn stale_and_saturated_replicas_come_last() {
        let r = Replicas::default();
        let a = addrs(3);
        let t0 = Instant::now();
        for addr in &a {
            r.get(*addr);
        }
        let later = t0 + Duration::from_secs(10);
        r.get(a[1]).scraped(Figures::default(), later);
        r.get(a[2]).scraped(
            Figures {
                in_flight: 8,
                queued: 4,
                slots: Some(4),
                queue_limit: Some(4),
                ..Figures::default()
            },
            later,
        );
        // a[0] never answered in 10 s: stale; a[2] is full.
        let o = order(&a, None, &r, POLICY, later);
        assert_eq!(o[0], a[1]);
        let o = order(&a, Some(&key("k")), &r, POLICY, later);
        assert_eq!(o[0], a[1]);
        assert_eq!(o.len(), 3, "the others stay as a last resort");
    }

    #[test]
    fn a_replica_is_full_when_its_slots_and_queue_are() {
        let f = |in_flight, queue_limit| Figures {
            in_flight,
            slots: Some(2),
            queue_limit: Some(queue_limit),
            ..Figures::default()
        };
        assert!(!f(1, 0).saturated());
        assert!(f(2, 0).saturated(), "no queue: full with every slot busy");
        assert!(!f(3, 2).saturated());
        assert!(f(4, 2).saturated());
        assert!(
            !Figures::default().saturated(),
            "unknown capacity: not full"
        );
    }

    #[test]
    fn a_guard_counts_until_dropped() {
        let r = Replicas::default();
        let a = addrs(1)[0];
        let g = r.get(a).start();
        assert_eq!(r.get(a).outstanding(), 1);
        r.retain(&std::collections::HashSet::new());
        assert_eq!(r.get(a).outstanding(), 1, "kept while outstanding");
        drop(g);
        assert_eq!(r.get(a).outstanding(), 0);
    }
}
