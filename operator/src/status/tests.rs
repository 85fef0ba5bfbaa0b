use super::*;
use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

/// The reason written for a model the worker cannot run.
const UNSUPPORTED_MODEL: &str = "UnsupportedModel";

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
        reason: Reason::InsufficientGpuMemory,
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
        reason: Reason::UnsupportedModel,
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
