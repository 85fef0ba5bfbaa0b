//! The status of a ModelWorker, computed as a pure function of what the
//! reconciler observed: the spec problems, the Deployment and the previous
//! status. Keeping it pure lets the reconciler write the status only when
//! the computed value differs from the stored one, and keeps condition
//! transition times stable across idle reconciles.

use crate::build;
use crate::pods::{PodSummary, UNSUPPORTED_MODEL};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
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

/// One condition as computed, before transition times are settled.
struct Cond {
    type_: &'static str,
    status: String,
    reason: String,
    message: String,
}

impl Cond {
    fn new(type_: &'static str, status: &str, reason: &str, msg: String) -> Self {
        Cond {
            type_,
            status: status.into(),
            reason: reason.into(),
            message: msg,
        }
    }
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
                Cond::new("Ready", "False", "InvalidSpec", msg.clone()),
                Cond::new("Progressing", "False", "InvalidSpec", msg.clone()),
                Cond::new("Degraded", "True", "InvalidSpec", msg),
                model_available(&prev, None, &st.workers),
            ]
        }
        Observed::Refused(msg) => {
            st.phase = Some(Phase::Failed);
            let msg = msg.to_string();
            vec![
                Cond::new("Ready", "False", "ApplyFailed", msg.clone()),
                Cond::new("Progressing", "False", "ApplyFailed", msg.clone()),
                Cond::new("Degraded", "True", "ApplyFailed", msg),
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
                    Cond::new(
                        "Ready",
                        "False",
                        "ScaledToZero",
                        "spec.replicas is 0".into(),
                    ),
                    Cond::new(
                        "Degraded",
                        "False",
                        "ScaledToZero",
                        "no replicas asked for".into(),
                    ),
                )
            } else if ready == 0 {
                (
                    Phase::Pending,
                    Cond::new(
                        "Ready",
                        "False",
                        "NoReadyReplicas",
                        format!("0 of {desired} replicas ready"),
                    ),
                    Cond::new(
                        "Degraded",
                        "False",
                        "Starting",
                        "replicas are starting".into(),
                    ),
                )
            } else if ready < desired {
                (
                    Phase::Degraded,
                    Cond::new(
                        "Ready",
                        "True",
                        "SomeReplicasReady",
                        format!("{ready} of {desired} replicas ready"),
                    ),
                    Cond::new(
                        "Degraded",
                        "True",
                        "ReplicasUnavailable",
                        format!("{} of {desired} replicas not ready", desired - ready),
                    ),
                )
            } else {
                (
                    Phase::Ready,
                    Cond::new(
                        "Ready",
                        "True",
                        "AllReplicasReady",
                        format!("{ready} of {desired} replicas ready"),
                    ),
                    Cond::new(
                        "Degraded",
                        "False",
                        "AllReplicasReady",
                        "every replica is ready".into(),
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
                        c.reason.clone().unwrap_or_else(|| "ReplicaFailure".into()),
                        clip(
                            &format!(
                                "the Deployment cannot create pods: {}",
                                c.message.as_deref().unwrap_or("no message")
                            ),
                            1024,
                        ),
                    )
                });
            let failure = (available.status == "False")
                .then(|| (available.reason.clone(), available.message.clone()))
                .or_else(|| stuck.map(|s| (s.reason.clone(), s.message.clone())))
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
            let unsupported = (available.status == "False"
                && available.reason == UNSUPPORTED_MODEL)
                .then(|| available.message.clone());
            let (phase, degraded_c) = match (failure, unschedulable) {
                (Some((reason, message)), _) if unsupported.is_some() => (
                    Phase::Failed,
                    Cond::new("Degraded", "True", &reason, message),
                ),
                (Some((reason, message)), _) if desired > 0 && ready < desired => (
                    Phase::Degraded,
                    Cond::new("Degraded", "True", &reason, message),
                ),
                (_, Some((message, _))) if waited_too_long && ready < desired => (
                    Phase::Degraded,
                    Cond::new("Degraded", "True", "Unschedulable", message.clone()),
                ),
                (_, _) => (phase, degraded_c),
            };
            st.phase = Some(phase);
            let progressing = if let Some(message) = unsupported {
                Cond::new("Progressing", "False", UNSUPPORTED_MODEL, message)
            } else if let Some((message, _)) = unschedulable
                && ready < desired
            {
                Cond::new("Progressing", "True", "Unschedulable", message.clone())
            } else if rolled {
                Cond::new(
                    "Progressing",
                    "False",
                    "RolloutComplete",
                    "the Deployment matches the spec".into(),
                )
            } else {
                Cond::new(
                    "Progressing",
                    "True",
                    "RollingOut",
                    format!("{updated} of {desired} replicas updated"),
                )
            };
            vec![ready_c, progressing, degraded_c, available]
        }
    };
    st.conditions = conds
        .into_iter()
        .map(|c| settle(c, &prev.conditions, generation, now))
        .collect();
    st
}

/// Reasons of `ModelAvailable=False` that come from a failed `fetch`
/// rather than from a worker's report. `UnsupportedModel` comes from
/// either (a worker's load runs fetch's check), so it is kept as a report
/// is: until no listed worker has an error.
const FETCH_REASONS: [&str; 2] = ["InsufficientGPUMemory", "FetchFailed"];

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
        return Cond::new("ModelAvailable", "False", m.reason, m.message.clone());
    }
    match prev.conditions.iter().find(|c| c.type_ == "ModelAvailable") {
        // A failure a worker reported lasts as long as a failed worker is
        // listed: once its pod is gone, a ready worker makes the model
        // available again, and otherwise nobody knows yet.
        Some(c)
            if c.status == "False"
                && !FETCH_REASONS.contains(&c.reason.as_str())
                && !workers.iter().any(|w| w.error.is_some()) =>
        {
            if workers.iter().any(|w| w.ready) {
                Cond::new(
                    "ModelAvailable",
                    "True",
                    "ModelLoaded",
                    "the worker that reported a failure is gone; the others have the model loaded"
                        .into(),
                )
            } else {
                Cond::new(
                    "ModelAvailable",
                    "Unknown",
                    "NoReport",
                    "the worker that reported a failure is gone; waiting for a new report".into(),
                )
            }
        }
        Some(c) if !FETCH_REASONS.contains(&c.reason.as_str()) => {
            Cond::new("ModelAvailable", &c.status, &c.reason, c.message.clone())
        }
        _ => Cond::new(
            "ModelAvailable",
            "Unknown",
            "NoReport",
            "no worker has reported the model yet".into(),
        ),
    }
}

fn settle(c: Cond, prev: &[Condition], generation: Option<i64>, now: &Time) -> Condition {
    let since = prev
        .iter()
        .find(|p| p.type_ == c.type_ && p.status == c.status)
        .map(|p| p.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: c.type_.into(),
        status: c.status,
        reason: c.reason,
        message: c.message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::jiff::Timestamp;

    fn mw(replicas: i32) -> ModelWorker {
        let mut mw: ModelWorker = serde_json::from_value(serde_json::json!({
            "apiVersion": "llorch.dev/v1alpha1",
            "kind": "ModelWorker",
            "metadata": {"name": "m", "namespace": "ns", "generation": 3},
            "spec": {"model": {"uri": "file:///m.gguf"}, "replicas": replicas},
        }))
        .expect("a valid ModelWorker");
        mw.spec.replicas = replicas;
        mw
    }

    fn deploy(replicas: i32, ready: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(2);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(replicas),
            ready_replicas: Some(ready),
            updated_replicas: Some(replicas),
            ..Default::default()
        });
        d
    }

    fn summary(name: &str, stuck: Option<&str>) -> PodSummary {
        PodSummary {
            name: name.into(),
            stuck: stuck.map(|r| crate::pods::Stuck {
                reason: r.into(),
                message: format!("pod {name} is {r}"),
            }),
            unschedulable: None,
            model_unavailable: None,
        }
    }

    #[test]
    fn unschedulable_pods_progress_then_degrade_after_the_timeout() {
        let m = mw(1);
        let mut pod = summary("p1", None);
        pod.unschedulable = Some(("pod p1: 0/1 nodes are available".into(), at(100)));
        let pods = [pod];
        let st = compute(&m, Observed::Applied(Some(&deploy(1, 0)), &pods), &at(110));
        assert_eq!(st.phase, Some(Phase::Pending));
        let p = cond(&st, "Progressing");
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("True", "Unschedulable")
        );
        assert_eq!(p.message, "pod p1: 0/1 nodes are available");
        assert_eq!(cond(&st, "Degraded").status, "False");
        let late = 100 + UNSCHEDULABLE_TIMEOUT.as_secs() as i64;
        let st = compute(&m, Observed::Applied(Some(&deploy(1, 0)), &pods), &at(late));
        assert_eq!(st.phase, Some(Phase::Degraded));
        let d = cond(&st, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "Unschedulable")
        );
    }

    #[test]
    fn a_fetch_that_does_not_fit_makes_the_model_unavailable_until_it_is_gone() {
        let m = mw(1);
        let mut pod = summary("p1", Some("CrashLoopBackOff"));
        pod.model_unavailable = Some(crate::pods::ModelUnavailable {
            reason: "InsufficientGPUMemory",
            message: "needs 9 GiB, has 8".into(),
        });
        let st = compute(&m, Observed::Applied(Some(&deploy(1, 0)), &[pod]), &at(1));
        assert_eq!(st.phase, Some(Phase::Degraded));
        for t in ["ModelAvailable", "Degraded"] {
            let c = cond(&st, t);
            assert_eq!(c.reason, "InsufficientGPUMemory", "{t}");
            assert_eq!(c.message, "needs 9 GiB, has 8", "{t}");
        }
        assert_eq!(cond(&st, "ModelAvailable").status, "False");
        // The spec is fixed and the new pod starts: the old verdict goes.
        let mut fixed = m.clone();
        fixed.status = Some(st);
        let st = compute(
            &fixed,
            Observed::Applied(Some(&deploy(1, 0)), &[summary("p2", None)]),
            &at(2),
        );
        assert_eq!(st.phase, Some(Phase::Pending));
        assert_eq!(cond(&st, "ModelAvailable").status, "Unknown");
        assert_eq!(cond(&st, "Degraded").status, "False");
    }

    #[test]
    fn an_unsupported_model_fails_until_the_spec_names_another() {
        let m = mw(1);
        let mut pod = summary("p1", Some("CrashLoopBackOff"));
        pod.model_unavailable = Some(crate::pods::ModelUnavailable {
            reason: UNSUPPORTED_MODEL,
            message: "architecture \"mamba\" is not supported".into(),
        });
        let st = compute(
            &m,
            Observed::Applied(Some(&deploy(1, 0)), &[pod.clone()]),
            &at(1),
        );
        assert_eq!(st.phase, Some(Phase::Failed));
        for (t, status) in [
            ("ModelAvailable", "False"),
            ("Degraded", "True"),
            ("Progressing", "False"),
        ] {
            let c = cond(&st, t);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                (status, UNSUPPORTED_MODEL),
                "{t}"
            );
            assert_eq!(c.message, "architecture \"mamba\" is not supported", "{t}");
        }
        assert_eq!(cond(&st, "Ready").status, "False");
        // Old replicas still serving (a rollout to the unsupported model)
        // do not hide it: the rollout will never finish.
        let st = compute(&m, Observed::Applied(Some(&deploy(1, 1)), &[pod]), &at(2));
        assert_eq!(st.phase, Some(Phase::Failed));
        assert_eq!(cond(&st, "Ready").status, "True");
        // The spec names another model and its pod starts: the verdict goes.
        let mut fixed = m.clone();
        fixed.status = Some(st);
        let st = compute(
            &fixed,
            Observed::Applied(Some(&deploy(1, 0)), &[summary("p2", None)]),
            &at(3),
        );
        assert_eq!(st.phase, Some(Phase::Pending));
        assert_eq!(cond(&st, "ModelAvailable").status, "Unknown");
        assert_eq!(cond(&st, "Progressing").reason, "RolloutComplete");
        // A worker's failure report says the same (its load runs the same
        // check): Failed while that worker is listed.
        let mut reported = m.clone();
        let mut prev = compute(&m, Observed::Applied(None, &[]), &at(1));
        prev.conditions.retain(|c| c.type_ != "ModelAvailable");
        prev.conditions.push(Condition {
            type_: "ModelAvailable".into(),
            status: "False".into(),
            reason: UNSUPPORTED_MODEL.into(),
            message: "p1: UNSUPPORTED_MODEL: architecture \"mamba\" is not supported".into(),
            observed_generation: Some(3),
            last_transition_time: at(1),
        });
        prev.workers.push(llorch_api::WorkerStatus {
            pod: "p1".into(),
            error: Some("UNSUPPORTED_MODEL: architecture \"mamba\" is not supported".into()),
            ..Default::default()
        });
        reported.status = Some(prev);
        let st = compute(
            &reported,
            Observed::Applied(Some(&deploy(1, 0)), &[summary("p1", None)]),
            &at(4),
        );
        assert_eq!(st.phase, Some(Phase::Failed));
        assert_eq!(cond(&st, "Degraded").reason, UNSUPPORTED_MODEL);
    }

    #[test]
    fn a_stuck_pod_degrades_until_replicas_are_ready() {
        let m = mw(1);
        let pods = [summary("p1", Some("CrashLoopBackOff"))];
        let st = compute(&m, Observed::Applied(Some(&deploy(1, 0)), &pods), &at(1));
        assert_eq!(st.phase, Some(Phase::Degraded));
        let d = cond(&st, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "CrashLoopBackOff")
        );
        assert_eq!(d.message, "pod p1 is CrashLoopBackOff");
        let st = compute(&m, Observed::Applied(Some(&deploy(1, 1)), &pods), &at(1));
        assert_eq!(st.phase, Some(Phase::Ready));
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("a valid time"))
    }

    fn cond<'a>(st: &'a ModelWorkerStatus, t: &str) -> &'a Condition {
        st.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition present")
    }

    #[test]
    fn invalid_spec_fails_with_reason() {
        let m = mw(1);
        let problems = vec!["gpu.count is 2".to_string()];
        let st = compute(&m, Observed::Invalid(&problems), &at(10));
        assert_eq!(st.phase, Some(Phase::Failed));
        let r = cond(&st, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "InvalidSpec")
        );
        assert!(r.message.contains("gpu.count is 2"));
        assert_eq!(r.observed_generation, Some(3));
        assert_eq!(st.observed_generation, Some(3));
    }

    #[test]
    fn a_refused_child_fails_with_the_servers_words() {
        let m = mw(1);
        let st = compute(
            &m,
            Observed::Refused("apply m-cache: field is immutable"),
            &at(10),
        );
        assert_eq!(st.phase, Some(Phase::Failed));
        for c in ["Ready", "Progressing"] {
            let r = cond(&st, c);
            assert_eq!(
                (r.status.as_str(), r.reason.as_str()),
                ("False", "ApplyFailed")
            );
        }
        let d = cond(&st, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "ApplyFailed")
        );
        assert!(d.message.contains("immutable"));
    }

    #[test]
    fn a_reported_failure_ends_with_its_pod() {
        let mut m = mw(1);
        m.status = Some(ModelWorkerStatus {
            conditions: vec![Condition {
                type_: "ModelAvailable".into(),
                status: "False".into(),
                reason: "InsufficientMemory".into(),
                message: "w-1: INSUFFICIENT_MEMORY".into(),
                observed_generation: Some(3),
                last_transition_time: at(1),
            }],
            workers: vec![llorch_api::WorkerStatus {
                pod: "w-1".into(),
                error: Some("INSUFFICIENT_MEMORY".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        // The failed pod is still there: still unavailable.
        let st = compute(
            &m,
            Observed::Applied(Some(&deploy(1, 0)), &[summary("w-1", None)]),
            &at(2),
        );
        assert_eq!(cond(&st, "ModelAvailable").status, "False");
        // It was replaced by a pod that has not reported yet: unknown.
        let st = compute(
            &m,
            Observed::Applied(Some(&deploy(1, 0)), &[summary("w-2", None)]),
            &at(2),
        );
        let c = cond(&st, "ModelAvailable");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "NoReport")
        );
        assert!(st.workers.is_empty());
    }

    #[test]
    fn a_deployment_that_cannot_create_pods_degrades() {
        use k8s_openapi::api::apps::v1::DeploymentCondition;
        let m = mw(2);
        let mut d = deploy(0, 0);
        if let Some(s) = d.status.as_mut() {
            s.conditions = Some(vec![DeploymentCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some("FailedCreate".into()),
                message: Some("pods \"w-1\" is forbidden: exceeded quota: gpus".into()),
                ..Default::default()
            }]);
        }
        let st = compute(&m, Observed::Applied(Some(&d), &[]), &at(1));
        assert_eq!(st.phase, Some(Phase::Degraded));
        let c = cond(&st, "Degraded");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "FailedCreate")
        );
        assert!(c.message.contains("exceeded quota"), "{}", c.message);
    }

    #[test]
    fn phases_follow_ready_replicas() {
        let m = mw(2);
        let st = compute(&m, Observed::Applied(None, &[]), &at(1));
        assert_eq!(st.phase, Some(Phase::Pending));
        assert_eq!(cond(&st, "Progressing").status, "True");
        let st = compute(&m, Observed::Applied(Some(&deploy(2, 1)), &[]), &at(1));
        assert_eq!(st.phase, Some(Phase::Degraded));
        assert_eq!(cond(&st, "Degraded").status, "True");
        let st = compute(&m, Observed::Applied(Some(&deploy(2, 2)), &[]), &at(1));
        assert_eq!(st.phase, Some(Phase::Ready));
        assert_eq!(cond(&st, "Ready").status, "True");
        assert_eq!(cond(&st, "Progressing").reason, "RolloutComplete");
        assert_eq!((st.replicas, st.ready_replicas), (2, 2));
        assert_eq!(
            st.selector.as_deref(),
            Some("app.kubernetes.io/instance=m,app.kubernetes.io/name=llorch-worker")
        );
        assert_eq!(st.endpoint.as_deref(), Some("http://m.ns.svc:8080"));
        assert_eq!(cond(&st, "ModelAvailable").status, "Unknown");
    }

    #[test]
    fn a_failure_report_degrades_and_gone_pods_leave_workers() {
        let mut m = mw(1);
        let mut prev = compute(&m, Observed::Applied(None, &[]), &at(1));
        prev.conditions.retain(|c| c.type_ != "ModelAvailable");
        prev.conditions.push(Condition {
            type_: "ModelAvailable".into(),
            status: "False".into(),
            reason: "InsufficientMemory".into(),
            message: "p1: INSUFFICIENT_MEMORY: needs 2 GiB".into(),
            observed_generation: Some(3),
            last_transition_time: at(2),
        });
        for pod in ["p1", "p0"] {
            prev.workers.push(llorch_api::WorkerStatus {
                pod: pod.into(),
                // As the failure report left it.
                error: (pod == "p1").then(|| "INSUFFICIENT_MEMORY: needs 2 GiB".into()),
                ..Default::default()
            });
        }
        m.status = Some(prev);
        let st = compute(
            &m,
            Observed::Applied(Some(&deploy(1, 0)), &[summary("p1", None)]),
            &at(5),
        );
        assert_eq!(st.phase, Some(Phase::Degraded));
        let d = cond(&st, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "InsufficientMemory")
        );
        assert!(d.message.contains("INSUFFICIENT_MEMORY"));
        assert_eq!(cond(&st, "ModelAvailable").last_transition_time, at(2));
        let pods: Vec<_> = st.workers.iter().map(|w| w.pod.as_str()).collect();
        assert_eq!(pods, ["p1"]);
        // Once the replicas are ready the failure no longer degrades.
        let st = compute(
            &m,
            Observed::Applied(Some(&deploy(1, 1)), &[summary("p1", None)]),
            &at(6),
        );
        assert_eq!(st.phase, Some(Phase::Ready));
    }

    #[test]
    fn transition_times_change_only_on_transitions() {
        let mut m = mw(1);
        let first = compute(&m, Observed::Applied(Some(&deploy(1, 0)), &[]), &at(100));
        m.status = Some(first.clone());
        let same = compute(&m, Observed::Applied(Some(&deploy(1, 0)), &[]), &at(200));
        assert_eq!(same, first, "an idle reconcile computes the same status");
        let ready = compute(&m, Observed::Applied(Some(&deploy(1, 1)), &[]), &at(300));
        assert_eq!(cond(&ready, "Ready").last_transition_time, at(300));
        assert_eq!(
            cond(&ready, "ModelAvailable").last_transition_time,
            at(100),
            "an unchanged condition keeps its time"
        );
    }
}
