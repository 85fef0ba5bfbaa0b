//! The callback tokens the report route checks, cached.
//!
//! Every report names its ModelWorker and carries a bearer token that must
//! equal the one in that ModelWorker's callback Secret. Reading the Secret
//! for every report would let anyone who can reach the route make the
//! operator call the API server at will, before it knows whether the
//! caller holds a token at all. So what a Secret read found (the token and
//! the uid of the ModelWorker that owns it, or that there is none) is kept
//! for [`FRESH`], and a report within that time is decided without a call:
//! a forged token, a missing Secret and a wrong owner all cost a map
//! lookup, except that a refusal older than [`REREAD`] is checked against
//! a new read (a replaced Secret's token is taken within a second, and a
//! flood of forgeries costs at most one read per second and name). At most
//! [`CONCURRENT_READS`] Secret reads run at once, so a flood of made-up
//! names queues instead of fanning out; a report that waits longer than
//! [`READ_TIMEOUT`] gets a retriable answer instead of hanging. And each
//! source address may start at most [`SOURCE_BURST`] reads at once and
//! [`SOURCE_READS_PER_SEC`] a second after that, so one client's flood of
//! made-up names cannot take the turns of other pods' first reports (a
//! worker reports a handful of times in its life).
//!
//! Staleness is bounded by [`FRESH`] and closed where it matters: the
//! report route compares the owner uid found here with the uid of the
//! ModelWorker it writes, so the token of a deleted ModelWorker never
//! writes the status of a new one that has the same name.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// How long a Secret read decides reports without a new one.
pub const FRESH: Duration = Duration::from_secs(10);
/// A refusal older than this reads the Secret again.
pub const REREAD: Duration = Duration::from_secs(1);
/// Longest wait for a turn to read plus the read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most ModelWorkers remembered; when full, expired entries go, then
/// those without a token, and then everything.
pub const MAX_ENTRIES: usize = 4096;
/// Most Secret reads in flight at once.
pub const CONCURRENT_READS: usize = 4;
/// Secret reads one source address may start at once...
pub const SOURCE_BURST: f64 = 8.0;
/// ... and per second after that.
pub const SOURCE_READS_PER_SEC: f64 = 2.0;
/// Most source addresses remembered; when full, the idle ones go.
pub const MAX_SOURCES: usize = 4096;

/// What a Secret read found for one ModelWorker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// A callback Secret owned by the ModelWorker with this uid.
    Token { token: Vec<u8>, owner_uid: String },
    /// No Secret, an empty token or one that the ModelWorker does not own.
    Nothing,
}

/// The answer for one report's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The token is right; the report may write the ModelWorker with this
    /// uid and no other.
    Authorized { owner_uid: String },
    /// A wrong token, or no Secret to check it against.
    Refused,
}

impl Found {
    /// The verdict for `token`, compared in constant time.
    pub fn judge(&self, token: &[u8]) -> Verdict {
        match self {
            Found::Token {
                token: expected,
                owner_uid,
            } if !expected.is_empty() && bool::from(expected.as_slice().ct_eq(token)) => {
                Verdict::Authorized {
                    owner_uid: owner_uid.clone(),
                }
            }
            _ => Verdict::Refused,
        }
    }
}

#[derive(Debug)]
struct Entry {
    found: Found,
    read_at: Instant,
}

/// Why a token could not be checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Unverified<E> {
    /// The Secret read failed.
    Read(E),
    /// No turn to read within [`READ_TIMEOUT`].
    Busy,
    /// The source has used its reads for now.
    Throttled,
}

/// One source's reads left, refilled with time.
#[derive(Debug, Clone, Copy)]
struct Budget {
    left: f64,
    at: Instant,
}

/// `(namespace, name)` of a ModelWorker.
type Key = (String, String);

/// Recent Secret reads and the limit on new ones.
#[derive(Debug)]
pub struct TokenCache {
    entries: Mutex<HashMap<Key, Entry>>,
    reads: tokio::sync::Semaphore,
    sources: Mutex<HashMap<std::net::IpAddr, Budget>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            entries: Mutex::new(HashMap::new()),
            reads: tokio::sync::Semaphore::new(CONCURRENT_READS),
            sources: Mutex::new(HashMap::new()),
        }
    }
}

impl TokenCache {
    /// The verdict from a read younger than [`FRESH`] at `now`, if any.
    /// A refusal older than [`REREAD`] is not decided here.
    pub fn cached(&self, ns: &str, name: &str, token: &[u8], now: Instant) -> Option<Verdict> {
        let entries = self.lock();
        let e = entries.get(&(ns.to_owned(), name.to_owned()))?;
        let age = now.saturating_duration_since(e.read_at);
        match e.found.judge(token) {
            v @ Verdict::Authorized { .. } if age < FRESH => Some(v),
            Verdict::Refused if age < REREAD.min(FRESH) => Some(Verdict::Refused),
            _ => None,
        }
    }

    /// Records what a read at `now` found.
    pub fn store(&self, ns: &str, name: &str, found: Found, now: Instant) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now.saturating_duration_since(e.read_at) < FRESH);
        }
        if entries.len() >= MAX_ENTRIES {
            // Made-up names fill the map, not the ModelWorkers that report.
            entries.retain(|_, e| e.found != Found::Nothing);
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            (ns.to_owned(), name.to_owned()),
            Entry {
                found,
                read_at: now,
            },
        );
    }

    /// Drops what is known of one ModelWorker (it is gone or was replaced).
    pub fn forget(&self, ns: &str, name: &str) {
        self.lock().remove(&(ns.to_owned(), name.to_owned()));
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes one Secret read from `source`'s budget at `now`; false when
    /// it has none left.
    pub fn take_read(&self, source: std::net::IpAddr, now: Instant) -> bool {
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refill = |b: &Budget| {
            let secs = now.saturating_duration_since(b.at).as_secs_f64();
            (b.left + secs * SOURCE_READS_PER_SEC).min(SOURCE_BURST)
        };
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            // Sources whose budget is whole again are as good as new.
            sources.retain(|_, b| refill(b) < SOURCE_BURST);
            if sources.len() >= MAX_SOURCES {
                sources.clear();
            }
        }
        let b = sources.entry(source).or_insert(Budget {
            left: SOURCE_BURST,
            at: now,
        });
        let left = refill(b);
        let ok = left >= 1.0;
        *b = Budget {
            left: if ok { left - 1.0 } else { left },
            at: now,
        };
        ok
    }

    /// The verdict for `token`, reading the Secret with `read` only when
    /// no fresh read is held, and then only within the budget of `source`
    /// (the report's address, when known). Reads beyond
    /// [`CONCURRENT_READS`] wait their turn, and a read that another report
    /// made meanwhile is reused.
    pub async fn verify<F, Fut, E>(
        &self,
        ns: &str,
        name: &str,
        token: &[u8],
        source: Option<std::net::IpAddr>,
        read: F,
    ) -> Result<Verdict, Unverified<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Found, E>>,
    {
        self.verify_within(READ_TIMEOUT, ns, name, token, source, read)
            .await
    }

    async fn verify_within<F, Fut, E>(
        &self,
        limit: Duration,
        ns: &str,
        name: &str,
        token: &[u8],
        source: Option<std::net::IpAddr>,
        read: F,
    ) -> Result<Verdict, Unverified<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Found, E>>,
    {
        if let Some(v) = self.cached(ns, name, token, Instant::now()) {
            return Ok(v);
        }
        if let Some(ip) = source
            && !self.take_read(ip, Instant::now())
        {
            return Err(Unverified::Throttled);
        }
        let turn = async {
            // The semaphore is never closed, so acquiring fails only if it
            // were.
            let _permit = self.reads.acquire().await.ok();
            if let Some(v) = self.cached(ns, name, token, Instant::now()) {
                return Ok(v);
            }
            let found = read().await.map_err(Unverified::Read)?;
            let verdict = found.judge(token);
            self.store(ns, name, found, Instant::now());
            Ok(verdict)
        };
        tokio::time::timeout(limit, turn)
            .await
            .unwrap_or(Err(Unverified::Busy))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic while holding the map leaves it consistent (every
        // operation is one insert, remove or retain), so keep using it.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn token(t: &str, uid: &str) -> Found {
        Found::Token {
            token: t.as_bytes().to_vec(),
            owner_uid: uid.into(),
        }
    }

    #[test]
    fn only_the_exact_nonempty_token_is_authorized() {
        let f = token("s3cret", "uid-1");
        assert_eq!(
            f.judge(b"s3cret"),
            Verdict::Authorized {
                owner_uid: "uid-1".into()
            }
        );
        for wrong in [&b"s3cre"[..], b"s3cret!", b"", b"S3CRET"] {
            assert_eq!(f.judge(wrong), Verdict::Refused);
        }
        assert_eq!(token("", "uid-1").judge(b""), Verdict::Refused);
        assert_eq!(Found::Nothing.judge(b"anything"), Verdict::Refused);
    }

    #[test]
    fn a_read_decides_until_it_is_stale() {
        let c = TokenCache::default();
        let t0 = Instant::now();
        assert_eq!(c.cached("ns", "a", b"x", t0), None);
        c.store("ns", "a", token("x", "u"), t0);
        c.store("ns", "gone", Found::Nothing, t0);
        let soon = t0 + FRESH - Duration::from_millis(1);
        assert!(matches!(
            c.cached("ns", "a", b"x", soon),
            Some(Verdict::Authorized { .. })
        ));
        // A refusal stands for a second, then the Secret is read again.
        let early = t0 + REREAD - Duration::from_millis(1);
        assert_eq!(
            c.cached("ns", "a", b"forged", early),
            Some(Verdict::Refused)
        );
        assert_eq!(c.cached("ns", "gone", b"x", early), Some(Verdict::Refused));
        assert_eq!(c.cached("ns", "a", b"forged", t0 + REREAD), None);
        assert_eq!(c.cached("ns", "gone", b"x", soon), None);
        assert_eq!(c.cached("other", "a", b"x", soon), None);
        assert_eq!(c.cached("ns", "a", b"x", t0 + FRESH), None);
        c.forget("ns", "a");
        assert_eq!(c.cached("ns", "a", b"x", soon), None);
    }

    #[test]
    fn the_map_stays_bounded() {
        let c = TokenCache::default();
        let t0 = Instant::now();
        for i in 0..MAX_ENTRIES {
            c.store("ns", &format!("mw-{i}"), Found::Nothing, t0);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        // Full of fresh entries: everything goes, then the new one lands.
        c.store("ns", "one-more", Found::Nothing, t0);
        assert_eq!(c.len(), 1);
        // Full of fresh made-up names and one real entry: the names go.
        for i in 0..MAX_ENTRIES - 2 {
            c.store("ns", &format!("made-up-{i}"), Found::Nothing, t0);
        }
        c.store("ns", "real", token("t", "u"), t0);
        assert_eq!(c.len(), MAX_ENTRIES);
        c.store("ns", "another", Found::Nothing, t0);
        assert_eq!(c.len(), 2);
        assert!(c.cached("ns", "real", b"t", t0).is_some());
        c.forget("ns", "real");
        c.forget("ns", "another");
        c.store("ns", "one-more", Found::Nothing, t0);
        // Full with some expired: only those go.
        let later = t0 + FRESH;
        for i in 0..MAX_ENTRIES - 1 {
            c.store("ns", &format!("new-{i}"), Found::Nothing, later);
        }
        c.store("ns", "last", Found::Nothing, later);
        assert_eq!(c.len(), MAX_ENTRIES);
        assert_eq!(c.cached("ns", "one-more", b"", later), None);
    }

    #[tokio::test]
    async fn forged_tokens_in_a_flood_cost_one_read_per_second() {
        let c = TokenCache::default();
        let reads = AtomicUsize::new(0);
        for i in 0..100 {
            let v = c
                .verify(
                    "ns",
                    "mw",
                    format!("forged-{i}").as_bytes(),
                    None,
                    || async {
                        reads.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, ()>(token("real", "u"))
                    },
                )
                .await;
            assert_eq!(v, Ok(Verdict::Refused));
        }
        // The same forgeries a second later: one more read.
        tokio::time::sleep(REREAD).await;
        for i in 0..10 {
            let v = c
                .verify(
                    "ns",
                    "mw",
                    format!("forged-{i}").as_bytes(),
                    None,
                    || async {
                        reads.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, ()>(token("real", "u"))
                    },
                )
                .await;
            assert_eq!(v, Ok(Verdict::Refused));
        }
        let v = c
            .verify("ns", "mw", b"real", None, || async {
                reads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(Found::Nothing)
            })
            .await;
        assert_eq!(
            v,
            Ok(Verdict::Authorized {
                owner_uid: "u".into()
            })
        );
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_read_that_never_comes_is_busy_not_a_hang() {
        let c = TokenCache::default();
        let v = c
            .verify_within(Duration::from_millis(50), "ns", "mw", b"t", None, || {
                std::future::pending::<Result<Found, ()>>()
            })
            .await;
        assert_eq!(v, Err(Unverified::Busy));
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn a_failed_read_is_not_remembered() {
        let c = TokenCache::default();
        let v = c
            .verify("ns", "mw", b"t", None, || async { Err("down") })
            .await;
        assert_eq!(v, Err(Unverified::Read("down")));
        assert!(c.is_empty());
        let v = c
            .verify("ns", "mw", b"t", None, || async {
                Ok::<_, ()>(token("t", "u"))
            })
            .await;
        assert!(matches!(v, Ok(Verdict::Authorized { .. })));
    }

    #[tokio::test]
    async fn one_sources_flood_of_made_up_names_leaves_other_sources_their_reads() {
        let c = TokenCache::default();
        let reads = AtomicUsize::new(0);
        let (flooder, worker) = (
            "10.0.0.66".parse().expect("ip"),
            "10.0.0.7".parse().expect("ip"),
        );
        let mut throttled = 0;
        for i in 0..100 {
            let v = c
                .verify(
                    "ns",
                    &format!("made-up-{i}"),
                    b"x",
                    Some(flooder),
                    || async {
                        reads.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, ()>(Found::Nothing)
                    },
                )
                .await;
            match v {
                Ok(Verdict::Refused) => {}
                Err(Unverified::Throttled) => throttled += 1,
                other => panic!("{other:?}"),
            }
        }
        // The burst, and at most a read or two refilled meanwhile.
        let done = reads.load(Ordering::Relaxed);
        assert!((8..=10).contains(&done), "{done} reads");
        assert_eq!(throttled, 100 - done);
        // Another pod's first report is read and authorized at once.
        let v = c
            .verify("ns", "real", b"t", Some(worker), || async {
                Ok::<_, ()>(token("t", "uid"))
            })
            .await;
        assert_eq!(
            v,
            Ok(Verdict::Authorized {
                owner_uid: "uid".into()
            })
        );
        // A cached verdict needs no read, so costs no budget.
        let t0 = Instant::now();
        for _ in 0..20 {
            assert!(c.cached("ns", "real", b"t", t0).is_some());
        }
    }

    #[test]
    fn a_sources_budget_refills_with_time() {
        let c = TokenCache::default();
        let ip = "10.1.2.3".parse().expect("ip");
        let t0 = Instant::now();
        let taken = (0..20).filter(|_| c.take_read(ip, t0)).count();
        assert_eq!(taken, SOURCE_BURST as usize);
        assert!(!c.take_read(ip, t0));
        assert!(c.take_read(ip, t0 + Duration::from_millis(600)));
        assert!(!c.take_read(ip, t0 + Duration::from_millis(600)));
    }
}
