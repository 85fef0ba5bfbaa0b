//! The status of a ModelWorker, computed as a pure function of what the
//! reconciler observed: the spec problems, the Deployment and the previous
//! status. Keeping it pure lets the reconciler write the status only when
//! the computed value differs from the stored one, and keeps condition
//! transition times stable across idle reconciles.

use crate::build;
use crate::conditions::{self, Cond, ConditionStatus::*, ConditionType::*, Reason};
use crate::pods::PodSummary;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use llorch_api::{ModelWorker, ModelWorkerStatus, Phase};

/// `s` cut to `max` characters (with an ellipsis), so that no input can
/// grow a status message or field without bound.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The current time at the precision the API server stores (seconds), so a
/// time read back compares equal to the one written.
pub fn now() -> Time {
    let t = k8s_openapi::jiff::Timestamp::now();
    Time(t.round(k8s_openapi::jiff::Unit::Second).unwrap_or(t))
}

/// How long pods may wait for a node before the ModelWorker is Degraded
/// (until then it is Progressing with the scheduler's message).
pub const UNSCHEDULABLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What the reconciler saw of a ModelWorker's world.
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    /// The spec failed validation; each entry is one problem.
    Invalid(&'a [String]),
    /// The API server refused a child built from the spec (e.g. a cache
    /// claim that cannot shrink); the message says which and why.
    Refused(&'a str),
    /// The children were applied: the Deployment as the API server has it,
    /// and the ModelWorker's pods (reports of pods that are gone leave
    /// `status.workers`; a stuck pod degrades the ModelWorker).
    Applied(Option<&'a Deployment>, &'a [PodSummary]),
}

/// The status the ModelWorker should have. `now` is used only for
/// conditions whose status changed; the rest keep their previous
/// `lastTransitionTime`.
pub fn compute(mw: &ModelWorker, seen: Observed<'_>, now: &Time) -> ModelWorkerStatus {
    let prev = mw.status.clone().unwrap_or_default();
    let generation = mw.metadata.generation;
    let name = mw.metadata.name.clone().unwrap_or_default();
    let ns = mw.metadata.namespace.clone().unwrap_or_default();
    let desired = mw.spec.replicas;
    let mut st = ModelWorkerStatus {
        observed_generation: generation,
        selector: Some(build::selector_string(&name)),
        endpoint: Some(build::endpoint(&name, &ns, build::port(mw))),
        model: prev.model.clone(),
        workers: prev.workers.clone(),
        ..Default::default()
    };
    let conds = match seen {
        Observed::Invalid(problems) => {
            st.phase = Some(Phase::Failed);
            let msg = problems.join("; ");
            vec![
                Cond::new(Ready, False, Reason::InvalidSpec, msg.clone()),
                Cond::new(Progressing, False, Reason::InvalidSpec, msg.clone()),
                Cond::new(Degraded, True, Reason::InvalidSpec, msg),
                model_available(&prev, None, &st.workers),
            ]
        }
        Observed::Refused(msg) => {
            st.phase = Some(Phase::Failed);
            let msg = msg.to_string();
            vec![
                Cond::new(Ready, False, Reason::ApplyFailed, msg.clone()),
                Cond::new(Progressing, False, Reason::ApplyFailed, msg.clone()),
                Cond::new(Degraded, True, Reason::ApplyFailed, msg),
                model_available(&prev, None, &st.workers),
            ]
        }
        Observed::Applied(deploy, pods) => {
            st.workers.retain(|w| pods.iter().any(|p| p.name == w.pod));
            let ds = deploy.and_then(|d| d.status.as_ref());
            st.replicas = ds.and_then(|s| s.replicas).unwrap_or(0);
            st.ready_replicas = ds.and_then(|s| s.ready_replicas).unwrap_or(0);
            let updated = ds.and_then(|s| s.updated_replicas).unwrap_or(0);
            let rolled = deploy.is_some_and(|d| {
                d.metadata.generation.is_some()
                    && ds.and_then(|s| s.observed_generation) == d.metadata.generation
            }) && updated >= desired
                && st.replicas == desired;
            let ready = st.ready_replicas;
            let (phase, ready_c, degraded_c) = if desired == 0 {
                (
                    Phase::Pending,
                    Cond::new(Ready, False, Reason::ScaledToZero, "spec.replicas is 0"),
                    Cond::new(
                        Degraded,
                        False,
                        Reason::ScaledToZero,
                        "no replicas asked for",
                    ),
                )
            } else if ready == 0 {
                (
                    Phase::Pending,
                    Cond::new(
                        Ready,
                        False,
                        Reason::NoReadyReplicas,
                        format!("0 of {desired} replicas ready"),
                    ),
                    Cond::new(Degraded, False, Reason::Starting, "replicas are starting"),
                )
            } else if ready < desired {
                (
                    Phase::Degraded,
                    Cond::new(
                        Ready,
                        True,
                        Reason::SomeReplicasReady,
                        format!("{ready} of {desired} replicas ready"),
                    ),
                    Cond::new(
                        Degraded,
                        True,
                        Reason::ReplicasUnavailable,
                        format!("{} of {desired} replicas not ready", desired - ready),
                    ),
                )
            } else {
                (
                    Phase::Ready,
                    Cond::new(
                        Ready,
                        True,
                        Reason::AllReplicasReady,
                        format!("{ready} of {desired} replicas ready"),
                    ),
                    Cond::new(
                        Degraded,
                        False,
                        Reason::AllReplicasReady,
                        "every replica is ready",
                    ),
                )
            };
            let stuck = pods.iter().find_map(|p| p.stuck.as_ref());
            let unavailable = pods.iter().find_map(|p| p.model_unavailable.as_ref());
            let available = model_available(&prev, unavailable, &st.workers);
            // The Deployment cannot create pods at all (a quota, an
            // admission policy): nothing else will say so.
            let replica_failure = ds
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                })
                .map(|c| {
                    (
                        Reason::Other(c.reason.clone().unwrap_or_else(|| "ReplicaFailure".into())),
                        clip(
                            &format!(
                                "the Deployment cannot create pods: {}",
                                c.message.as_deref().unwrap_or("no message")
                            ),
                            1024,
                        ),
                    )
                });
            let failure = (available.status == False)
                .then(|| (available.reason.clone(), available.message.clone()))
                .or_else(|| stuck.map(|s| (Reason::Other(s.reason.clone()), s.message.clone())))
                .or(replica_failure);
            let unschedulable = pods
                .iter()
                .filter_map(|p| p.unschedulable.as_ref())
                .min_by_key(|(_, since)| since.0);
            let waited_too_long = unschedulable.is_some_and(|(_, since)| {
                now.0.duration_since(since.0).as_secs() >= UNSCHEDULABLE_TIMEOUT.as_secs() as i64
            });
            // A model the worker cannot run fails the ModelWorker, as an
            // invalid spec does: no replica will start until the spec
            // names another model, whatever replicas still serve.
            let unsupported = (available.status == False
                && available.reason == Reason::UnsupportedModel)
                .then(|| available.message.clone());
            let (phase, degraded_c) = match (failure, unschedulable) {
                (Some((reason, message)), _) if unsupported.is_some() => {
                    (Phase::Failed, Cond::new(Degraded, True, reason, message))
                }
                (Some((reason, message)), _) if desired > 0 && ready < desired => {
                    (Phase::Degraded, Cond::new(Degraded, True, reason, message))
                }
                (_, Some((message, _))) if waited_too_long && ready < desired => (
                    Phase::Degraded,
                    Cond::new(Degraded, True, Reason::Unschedulable, message.clone()),
                ),
                (_, _) => (phase, degraded_c),
            };
            st.phase = Some(phase);
            let progressing = if let Some(message) = unsupported {
                Cond::new(Progressing, False, Reason::UnsupportedModel, message)
            } else if let Some((message, _)) = unschedulable
                && ready < desired
            {
                Cond::new(Progressing, True, Reason::Unschedulable, message.clone())
            } else if rolled {
                Cond::new(
                    Progressing,
                    False,
                    Reason::RolloutComplete,
                    "the Deployment matches the spec",
                )
            } else {
                Cond::new(
                    Progressing,
                    True,
                    Reason::RollingOut,
                    format!("{updated} of {desired} replicas updated"),
                )
            };
            vec![ready_c, progressing, degraded_c, available]
        }
    };
    st.conditions = conds
        .into_iter()
        .map(|c| conditions::settle(c, &prev.conditions, generation, now))
        .collect();
    st
}

/// `ModelAvailable`: False while a pod's `fetch` fails with its JSON line
/// (the model does not fit, the worker cannot run it, or it cannot be
/// fetched); otherwise what worker
/// reports set (see `report`), and Unknown until one arrives. A fetch
/// failure that no pod shows any more is forgotten.
fn model_available(
    prev: &ModelWorkerStatus,
    unavailable: Option<&crate::pods::ModelUnavailable>,
    workers: &[llorch_api::WorkerStatus],
) -> Cond {
    if let Some(m) = unavailable {
        return Cond::new(ModelAvailable, False, m.reason.clone(), m.message.clone());
    }
    match conditions::find(&prev.conditions, ModelAvailable) {
        // A failure a worker reported lasts as long as a failed worker is
        // listed: once its pod is gone, a ready worker makes the model
        // available again, and otherwise nobody knows yet.
        Some(c)
            if c.status == False
                && !c.reason.is_fetch_failure()
                && !workers.iter().any(|w| w.error.is_some()) =>
        {
            if workers.iter().any(|w| w.ready) {
                Cond::new(
                    ModelAvailable,
                    True,
                    Reason::ModelLoaded,
                    "the worker that reported a failure is gone; the others have the model loaded",
                )
            } else {
                Cond::new(
                    ModelAvailable,
                    Unknown,
                    Reason::NoReport,
                    "the worker that reported a failure is gone; waiting for a new report",
                )
            }
        }
        Some(c) if !c.reason.is_fetch_failure() => c,
        _ => Cond::new(
            ModelAvailable,
            Unknown,
            Reason::NoReport,
            "no worker has reported the model yet",
        ),
    }
}

#[cfg(test)]
mod tests;
