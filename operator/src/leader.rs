//! Leader election on a `coordination.k8s.io/v1` Lease, so that two
//! operator replicas never reconcile at the same time.
//!
//! A candidate takes the Lease when nobody holds it, when the holder let it
//! expire (no renewal within `leaseDurationSeconds`), or when the holder
//! released it on shutdown. Every write names the resourceVersion it read,
//! so two candidates racing for an expired Lease cannot both win. The
//! leader renews every `RENEW`, each attempt bounded; a leader with no
//! successful renewal for `RENEW_DEADLINE` (two thirds of the lease) stops
//! leading before a standby could take over (the binary then exits, and
//! Kubernetes restarts it as a candidate). The decision of whether a Lease may be
//! taken is a pure function, [`may_take`], tested without a cluster.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use std::time::Duration;

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
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Whether `me` may take `lease` at `now`: it is free, mine, released
/// (no holder), or expired.
pub fn may_take(lease: &LeaseSpec, me: &str, now: Timestamp) -> bool {
    let holder = lease.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == me {
        return true;
    }
    let secs = i64::from(lease.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    match lease.renew_time.as_ref().or(lease.acquire_time.as_ref()) {
        Some(MicroTime(t)) => *t + SignedDuration::from_secs(secs) < now,
        None => true,
    }
}

impl Elector {
    /// A candidate named `identity` for the Lease `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
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
        if !may_take(&current, &self.identity, now) {
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
    /// A standby may take the Lease [`LEASE_SECONDS`] after the last
    /// renewal the API server recorded. The leader counts from the moment
    /// it *sent* its last successful renewal (never later than the server's
    /// record of it), bounds each attempt, and gives up a third of the
    /// lease earlier, so it has stopped before anyone else can lead.
    pub async fn keep(&self) -> Error {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW).await;
            let sent = tokio::time::Instant::now();
            match tokio::time::timeout(RENEW, self.try_acquire()).await {
                Ok(Ok(true)) => last_ok = sent,
                Ok(Ok(false)) => return Error::Lost(self.name.clone()),
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election: renewal failed"),
                Err(_) => tracing::warn!(timeout = ?RENEW, "leader election: renewal timed out"),
            }
            if last_ok.elapsed() >= RENEW_DEADLINE {
                return Error::Lost(self.name.clone());
            }
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

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("a valid time")
    }

    #[test]
    fn a_live_lease_of_another_is_respected() {
        assert!(!may_take(&spec(Some("b"), 100), "a", at(110)));
    }

    #[test]
    fn an_expired_released_or_own_lease_may_be_taken() {
        assert!(may_take(&spec(Some("b"), 100), "a", at(116)));
        assert!(may_take(&spec(None, 100), "a", at(101)));
        assert!(may_take(&spec(Some(""), 100), "a", at(101)));
        assert!(may_take(&spec(Some("a"), 100), "a", at(101)));
        assert!(may_take(&LeaseSpec::default(), "a", at(0)));
    }
}
