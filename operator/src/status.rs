//! The status of a ModelWorker, computed as a pure function of what the
//! reconciler observed: the spec problems, the Deployment and the previous
//! status. Keeping it pure lets the reconciler write the status only when
//! the computed value differs from the stored one, and keeps condition
//! transition times stable across idle reconciles.

use crate::build;
use crate::conditions::{self, Cond, ConditionStatus::*, ConditionType::*, Reason};
use crate::pods::PodSummary;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
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
            failed(&mut st, &prev, Reason::InvalidSpec, problems.join("; "))
        }
        Observed::Refused(msg) => failed(&mut st, &prev, Reason::ApplyFailed, msg.to_string()),
        Observed::Applied(deploy, pods) => {
            applied(&mut st, &prev, mw.spec.replicas, deploy, pods, now)
        }
    };
    st.conditions = conds
        .into_iter()
        .map(|c| conditions::settle(c, &prev.conditions, generation, now))
        .collect();
    st
}

/// The conditions of a ModelWorker whose children were not applied (an
/// invalid spec, a refused child): Failed, with `msg` saying why.
fn failed(
    st: &mut ModelWorkerStatus,
    prev: &ModelWorkerStatus,
    reason: Reason,
    msg: String,
) -> Vec<Cond> {
    st.phase = Some(Phase::Failed);
    vec![
        Cond::new(Ready, False, reason.clone(), msg.clone()),
        Cond::new(Progressing, False, reason.clone(), msg.clone()),
        Cond::new(Degraded, True, reason, msg),
        model_available(prev, None, &st.workers),
    ]
}

/// The replica counts of the Deployment against the spec's.
#[derive(Debug, Clone, Copy)]
struct Replicas {
    /// What the spec asks for.
    desired: i32,
    /// Ready pods.
    ready: i32,
    /// Pods of the current pod template.
    updated: i32,
    /// The Deployment controller has seen the current Deployment and every
    /// replica runs its template.
    rolled: bool,
}

impl Replicas {
    /// Fewer replicas are ready than the spec asks for.
    fn short(&self) -> bool {
        self.ready < self.desired
    }
}

/// The conditions of a ModelWorker whose children were applied, from its
/// Deployment and pods; sets the phase, replica counts and the workers
/// whose pods still exist.
fn applied(
    st: &mut ModelWorkerStatus,
    prev: &ModelWorkerStatus,
    desired: i32,
    deploy: Option<&Deployment>,
    pods: &[PodSummary],
    now: &Time,
) -> Vec<Cond> {
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
    let r = Replicas {
        desired,
        ready: st.ready_replicas,
        updated,
        rolled,
    };
    let unavailable = pods.iter().find_map(|p| p.model_unavailable.as_ref());
    let available = model_available(prev, unavailable, &st.workers);
    let failure = failure(&available, pods, ds);
    let unschedulable = pods
        .iter()
        .filter_map(|p| p.unschedulable.as_ref())
        .min_by_key(|(_, since)| since.0);
    let overdue = unschedulable
        .filter(|(_, since)| {
            now.0.duration_since(since.0).as_secs() >= UNSCHEDULABLE_TIMEOUT.as_secs() as i64
        })
        .map(|(message, _)| message);
    // A model the worker cannot run fails the ModelWorker, as an invalid
    // spec does: no replica will start until the spec names another model,
    // whatever replicas still serve.
    let unsupported = (available.status == False && available.reason == Reason::UnsupportedModel)
        .then(|| available.message.clone());
    let (ready_c, counted) = replica_conditions(r);
    let (phase, degraded_c) = with_failures(r, counted, failure, unsupported.is_some(), overdue);
    st.phase = Some(phase);
    let progressing = progressing(r, unsupported, unschedulable.map(|(message, _)| message));
    vec![ready_c, progressing, degraded_c, available]
}

/// `Ready`, and the phase and `Degraded` that the replica counts alone
/// give.
fn replica_conditions(r: Replicas) -> (Cond, (Phase, Cond)) {
    let Replicas { desired, ready, .. } = r;
    if desired == 0 {
        (
            Cond::new(Ready, False, Reason::ScaledToZero, "spec.replicas is 0"),
            (
                Phase::Pending,
                Cond::new(
                    Degraded,
                    False,
                    Reason::ScaledToZero,
                    "no replicas asked for",
                ),
            ),
        )
    } else if ready == 0 {
        (
            Cond::new(
                Ready,
                False,
                Reason::NoReadyReplicas,
                format!("0 of {desired} replicas ready"),
            ),
            (
                Phase::Pending,
                Cond::new(Degraded, False, Reason::Starting, "replicas are starting"),
            ),
        )
    } else if ready < desired {
        (
            Cond::new(
                Ready,
                True,
                Reason::SomeReplicasReady,
                format!("{ready} of {desired} replicas ready"),
            ),
            (
                Phase::Degraded,
                Cond::new(
                    Degraded,
                    True,
                    Reason::ReplicasUnavailable,
                    format!("{} of {desired} replicas not ready", desired - ready),
                ),
            ),
        )
    } else {
        (
            Cond::new(
                Ready,
                True,
                Reason::AllReplicasReady,
                format!("{ready} of {desired} replicas ready"),
            ),
            (
                Phase::Ready,
                Cond::new(
                    Degraded,
                    False,
                    Reason::AllReplicasReady,
                    "every replica is ready",
                ),
            ),
        )
    }
}

/// The failure that degrades the ModelWorker, first found of: the model
/// unavailable, a stuck pod, a Deployment that cannot create pods.
fn failure(
    available: &Cond,
    pods: &[PodSummary],
    ds: Option<&DeploymentStatus>,
) -> Option<(Reason, String)> {
    let stuck = pods.iter().find_map(|p| p.stuck.as_ref());
    (available.status == False)
        .then(|| (available.reason.clone(), available.message.clone()))
        .or_else(|| stuck.map(|s| (Reason::Other(s.reason.clone()), s.message.clone())))
        .or(replica_failure(ds))
}

/// The Deployment cannot create pods at all (a quota, an admission
/// policy): nothing else will say so.
fn replica_failure(ds: Option<&DeploymentStatus>) -> Option<(Reason, String)> {
    ds.and_then(|s| s.conditions.as_ref())
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
        })
}

/// The phase and `Degraded` once failures count: a failure with an
/// unsupported model fails the ModelWorker; a failure, or pods that waited
/// past [`UNSCHEDULABLE_TIMEOUT`] for a node (`overdue`), degrade it while
/// replicas are missing; otherwise the replica counts' verdict stands.
fn with_failures(
    r: Replicas,
    counted: (Phase, Cond),
    failure: Option<(Reason, String)>,
    unsupported: bool,
    overdue: Option<&String>,
) -> (Phase, Cond) {
    match (failure, overdue) {
        (Some((reason, message)), _) if unsupported => {
            (Phase::Failed, Cond::new(Degraded, True, reason, message))
        }
        (Some((reason, message)), _) if r.desired > 0 && r.short() => {
            (Phase::Degraded, Cond::new(Degraded, True, reason, message))
        }
        (_, Some(message)) if r.short() => (
            Phase::Degraded,
            Cond::new(Degraded, True, Reason::Unschedulable, message.clone()),
        ),
        (_, _) => counted,
    }
}

/// `Progressing`: False for a model the worker cannot run (`unsupported`,
/// its message); True with the scheduler's message while pods wait for a
/// node and replicas are missing; otherwise whether the rollout is done.
fn progressing(r: Replicas, unsupported: Option<String>, unschedulable: Option<&String>) -> Cond {
    if let Some(message) = unsupported {
        Cond::new(Progressing, False, Reason::UnsupportedModel, message)
    } else if let Some(message) = unschedulable
        && r.short()
    {
        Cond::new(Progressing, True, Reason::Unschedulable, message.clone())
    } else if r.rolled {
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
            format!("{} of {} replicas updated", r.updated, r.desired),
        )
    }
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
