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
//! lookup. At most [`CONCURRENT_READS`] Secret reads run at once, so a
//! flood of made-up names queues instead of fanning out.
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
/// Most ModelWorkers remembered; when full, expired entries go, and then
/// everything.
pub const MAX_ENTRIES: usize = 4096;
/// Most Secret reads in flight at once.
pub const CONCURRENT_READS: usize = 4;

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

/// `(namespace, name)` of a ModelWorker.
type Key = (String, String);

/// Recent Secret reads and the limit on new ones.
#[derive(Debug)]
pub struct TokenCache {
    entries: Mutex<HashMap<Key, Entry>>,
    reads: tokio::sync::Semaphore,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            entries: Mutex::new(HashMap::new()),
            reads: tokio::sync::Semaphore::new(CONCURRENT_READS),
        }
    }
}

impl TokenCache {
    /// The verdict from a read younger than [`FRESH`] at `now`, if any.
    pub fn cached(&self, ns: &str, name: &str, token: &[u8], now: Instant) -> Option<Verdict> {
        let entries = self.lock();
        let e = entries.get(&(ns.to_owned(), name.to_owned()))?;
        (now.saturating_duration_since(e.read_at) < FRESH).then(|| e.found.judge(token))
    }

    /// Records what a read at `now` found.
    pub fn store(&self, ns: &str, name: &str, found: Found, now: Instant) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now.saturating_duration_since(e.read_at) < FRESH);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
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

    /// The verdict for `token`, reading the Secret with `read` only when
    /// no fresh read is held. Reads beyond [`CONCURRENT_READS`] wait their
    /// turn, and a read that another report made meanwhile is reused.
    pub async fn verify<F, Fut, E>(
        &self,
        ns: &str,
        name: &str,
        token: &[u8],
        read: F,
    ) -> Result<Verdict, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Found, E>>,
    {
        if let Some(v) = self.cached(ns, name, token, Instant::now()) {
            return Ok(v);
        }
        // The semaphore is never closed, so acquiring fails only if it were.
        let _permit = self.reads.acquire().await.ok();
        if let Some(v) = self.cached(ns, name, token, Instant::now()) {
            return Ok(v);
        }
        let found = read().await?;
        let verdict = found.judge(token);
        self.store(ns, name, found, Instant::now());
        Ok(verdict)
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
        assert_eq!(c.cached("ns", "a", b"forged", soon), Some(Verdict::Refused));
        assert_eq!(c.cached("ns", "gone", b"x", soon), Some(Verdict::Refused));
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
    async fn forged_tokens_in_a_flood_cost_one_read() {
        let c = TokenCache::default();
        let reads = AtomicUsize::new(0);
        for i in 0..100 {
            let v = c
                .verify("ns", "mw", format!("forged-{i}").as_bytes(), || async {
                    reads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>(token("real", "u"))
                })
                .await;
            assert_eq!(v, Ok(Verdict::Refused));
        }
        let v = c
            .verify("ns", "mw", b"real", || async {
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
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_remembered() {
        let c = TokenCache::default();
        let v = c.verify("ns", "mw", b"t", || async { Err("down") }).await;
        assert_eq!(v, Err("down"));
        assert!(c.is_empty());
        let v = c
            .verify("ns", "mw", b"t", || async { Ok::<_, ()>(token("t", "u")) })
            .await;
        assert!(matches!(v, Ok(Verdict::Authorized { .. })));
    }
}
