//! Leader election on a `coordination.k8s.io/v1` Lease, so that two
//! operator replicas never reconcile at the same time.
//!
//! A candidate takes the Lease when nobody holds it, when the holder
//! released it on shutdown, or when the holder let it expire: no change to
//! the Lease was seen for `leaseDurationSeconds` on the candidate's own
//! monotonic clock. The holder's timestamps are never compared with the
//! candidate's clock, so clocks that disagree cannot end a live lease. Every
//! write names the resourceVersion it read, so two candidates racing for an
//! expired Lease cannot both win. The leader renews every `RENEW`
//! (`RETRY` after a failed attempt), each attempt bounded by its deadline;
//! a leader with no successful renewal for `RENEW_DEADLINE` (two thirds of
//! the lease, counted from when it sent its last successful renewal) stops
//! leading at that deadline, before a standby could take over (the binary
//! then exits, and Kubernetes restarts it as a candidate). The decisions are
//! pure functions ([`may_take`], [`Renewal`]), tested without a cluster.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long a Lease stays valid without renewal.
pub const LEASE_SECONDS: i32 = 15;
/// How often the leader renews.
const RENEW: Duration = Duration::from_secs(5);
/// How long the leader keeps leading without a successful renewal: two
/// thirds of the lease.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a candidate retries.
const RETRY: Duration = Duration::from_secs(2);

/// Errors of the election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("lease {name}: {source}")]
    Kube {
        /// The Lease.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The leader could not renew before its lease ran out.
    #[error("lost the lease {0}: not renewed in time")]
    Lost(String),
}

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    observed: Mutex<Option<Observed>>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Whether `me` may take `lease`, unchanged for `unchanged` as this
/// candidate observed it: it is free, mine, released (no holder), or its
/// holder has not renewed it for its duration.
pub fn may_take(lease: &LeaseSpec, me: &str, unchanged: Duration) -> bool {
    let holder = lease.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == me {
        return true;
    }
    let secs = lease.lease_duration_seconds.unwrap_or(LEASE_SECONDS).max(1);
    unchanged > Duration::from_secs(secs as u64)
}

/// What a candidate last saw of the Lease: its holder and renewal record,
/// and when (on this process's monotonic clock) that record last changed.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    record: (Option<String>, Option<MicroTime>),
    since: Instant,
}

/// The leader's renewal schedule: when to try next and when to give up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Renewal {
    /// When the last successful renewal was sent.
    pub last_ok: Instant,
    /// When the next attempt starts.
    pub next: Instant,
}

impl Renewal {
    /// A schedule for a leader whose last successful write was sent at
    /// `sent`.
    pub fn new(sent: Instant) -> Self {
        Renewal {
            last_ok: sent,
            next: sent + RENEW,
        }
    }

    /// When leadership ends without another successful renewal.
    pub fn deadline(&self) -> Instant {
        self.last_ok + RENEW_DEADLINE
    }

    /// After an attempt sent at `sent`: a success renews from then, a
    /// failure tries again after [`RETRY`]; never past the deadline.
    pub fn after(&mut self, sent: Instant, ok: bool, now: Instant) {
        if ok {
            self.last_ok = sent;
            self.next = sent + RENEW;
        } else {
            self.next = (now + RETRY).min(self.deadline());
        }
    }
}

impl Elector {
    /// A candidate named `identity` for the Lease `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            observed: Mutex::new(None),
        }
    }

    /// How long `lease` has been unchanged as this candidate saw it: the
    /// first sight and every change of holder or renewal restart the count.
    fn unchanged_for(&self, lease: &LeaseSpec) -> Duration {
        let record = (lease.holder_identity.clone(), lease.renew_time.clone());
        let now = Instant::now();
        let mut seen = self
            .observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.as_ref() {
            Some(o) if o.record == record => now.saturating_duration_since(o.since),
            _ => {
                *seen = Some(Observed { record, since: now });
                Duration::ZERO
            }
        }
    }

    fn err(&self) -> impl FnOnce(kube::Error) -> Error + '_ {
        move |source| Error::Kube {
            name: self.name.clone(),
            source,
        }
    }

    /// One attempt to take or renew the Lease; true when this candidate
    /// holds it afterwards.
    pub async fn try_acquire(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(self.err())? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(None, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.err()(e)),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        if !may_take(&current, &self.identity, self.unchanged_for(&current)) {
            return Ok(false);
        }
        lease.spec = Some(self.spec(Some(&current), now));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.err()(e)),
        }
    }

    fn spec(&self, prev: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let mine = prev.and_then(|p| p.holder_identity.as_deref()) == Some(&self.identity);
        let transitions = prev.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: if mine {
                prev.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if mine || prev.is_none() {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..Default::default()
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) -> Result<(), Error> {
        loop {
            match self.try_acquire().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election: cannot read the lease"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Renews the Lease until no renewal has succeeded for
    /// [`RENEW_DEADLINE`]; returns the reason leadership ended.
    ///
    /// A standby may take the Lease once it has seen no change for
    /// [`LEASE_SECONDS`], which starts no earlier than the leader's last
    /// successful write. The leader counts from the moment it *sent* that
    /// write, bounds each attempt by its deadline, and gives up a third of
    /// the lease earlier, so it has stopped before anyone else can lead.
    pub async fn keep(&self) -> Error {
        let mut plan = Renewal::new(Instant::now());
        loop {
            tokio::time::sleep_until(plan.next).await;
            let sent = Instant::now();
            if sent >= plan.deadline() {
                return Error::Lost(self.name.clone());
            }
            let ok = match tokio::time::timeout_at(plan.deadline(), self.try_acquire()).await {
                Ok(Ok(true)) => true,
                Ok(Ok(false)) => return Error::Lost(self.name.clone()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leader election: renewal failed");
                    false
                }
                Err(_) => {
                    tracing::warn!("leader election: renewal did not finish before the deadline");
                    false
                }
            };
            plan.after(sent, ok, Instant::now());
        }
    }

    /// Gives the Lease up (on shutdown), so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "leader election: cannot release the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                Timestamp::from_second(renewed).expect("a valid time"),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn a_live_lease_of_another_is_respected() {
        assert!(!may_take(
            &spec(Some("b"), 100),
            "a",
            Duration::from_secs(10)
        ));
        assert!(!may_take(
            &spec(Some("b"), 100),
            "a",
            Duration::from_secs(15)
        ));
    }

    #[test]
    fn an_expired_released_or_own_lease_may_be_taken() {
        // Unchanged for longer than its 15 s, on the candidate's clock,
        // whatever the holder's timestamps say.
        assert!(may_take(
            &spec(Some("b"), 100),
            "a",
            Duration::from_millis(15_001)
        ));
        assert!(may_take(&spec(None, 100), "a", Duration::ZERO));
        assert!(may_take(&spec(Some(""), 100), "a", Duration::ZERO));
        assert!(may_take(&spec(Some("a"), 100), "a", Duration::ZERO));
        assert!(!may_take(
            &LeaseSpec {
                holder_identity: Some("b".into()),
                ..Default::default()
            },
            "a",
            Duration::ZERO
        ));
    }

    #[test]
    fn a_leader_that_cannot_renew_stops_at_its_deadline() {
        let t0 = Instant::now();
        let mut plan = Renewal::new(t0);
        assert_eq!(plan.next, t0 + RENEW);
        // An attempt at 5 s fails at once: retried 2 s later, until the
        // deadline 10 s after the last success, never later.
        plan.after(t0 + RENEW, false, t0 + RENEW);
        assert_eq!(plan.next, t0 + RENEW + RETRY);
        plan.after(
            t0 + Duration::from_secs(9),
            false,
            t0 + Duration::from_secs(9),
        );
        assert_eq!(plan.next, t0 + RENEW_DEADLINE);
        assert_eq!(plan.deadline(), t0 + RENEW_DEADLINE);
        // A success renews from the moment it was sent.
        let sent = t0 + Duration::from_secs(8);
        plan.after(sent, true, sent + Duration::from_secs(1));
        assert_eq!((plan.last_ok, plan.next), (sent, sent + RENEW));
        assert_eq!(plan.deadline(), sent + RENEW_DEADLINE);
        assert!(RENEW_DEADLINE < Duration::from_secs(LEASE_SECONDS as u64));
    }
}
