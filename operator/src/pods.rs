//! What the operator reads from a ModelWorker's pods: their names (to drop
//! reports of pods that are gone) and whether a container is stuck in a
//! restart or pull loop, which makes the ModelWorker `Degraded` with the
//! kubelet's reason and the container's last words (a failing `fetch`
//! init container writes its error there, as one JSON line whose code
//! picks the `ModelAvailable` reason).

use crate::conditions::Reason;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use worker_common::{ErrorCode, FetchFailure};

/// Waiting reasons that mean a pod will not become ready by itself.
const STUCK: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Longest termination message kept.
const MAX_MESSAGE: usize = 512;

/// One pod, as the status needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    /// The pod's name.
    pub name: String,
    /// Why it is stuck, when it is.
    pub stuck: Option<Stuck>,
    /// The scheduler cannot place it: its message, and since when.
    pub unschedulable: Option<(String, Time)>,
    /// Its `fetch` failed with its JSON line and has not succeeded since
    /// (while restarting, running again or backing off alike, so the
    /// verdict does not flap with the crash loop).
    pub model_unavailable: Option<ModelUnavailable>,
}

/// A container that will not start by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The kubelet's waiting reason, e.g. `CrashLoopBackOff`.
    pub reason: String,
    /// Pod, container, restarts and the last termination message.
    pub message: String,
}

/// Why the model cannot be served, from a failed `fetch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUnavailable {
    /// The condition reason: `InsufficientGPUMemory`, `UnsupportedModel`
    /// (the ModelWorker fails until its spec names another model) or
    /// `FetchFailed`.
    pub reason: Reason,
    /// fetch's own sentence.
    pub message: String,
}

impl ModelUnavailable {
    fn from_termination_message(text: &str) -> Option<ModelUnavailable> {
        let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
        let f: FetchFailure = serde_json::from_str(line).ok()?;
        let reason = match f.code {
            ErrorCode::InsufficientVram | ErrorCode::InsufficientMemory => {
                Reason::InsufficientGpuMemory
            }
            ErrorCode::UnsupportedModel => Reason::UnsupportedModel,
            _ => Reason::FetchFailed,
        };
        Some(ModelUnavailable {
            reason,
            message: clip(&f.message),
        })
    }
}

/// The summary of `pod`; init containers are looked at first, as they run
/// first.
pub fn summarize(pod: &Pod) -> PodSummary {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let stuck = pod.status.as_ref().and_then(|st| {
        let init = st.init_container_statuses.iter().flatten();
        let main = st.container_statuses.iter().flatten();
        init.chain(main).find_map(|c| stuck(&name, c))
    });
    let unschedulable = pod
        .status
        .as_ref()
        .and_then(|st| st.conditions.as_ref())
        .and_then(|cs| {
            cs.iter().find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        })
        .and_then(|c| {
            let since = c.last_transition_time.clone()?;
            let msg = c.message.as_deref().unwrap_or("no node fits");
            Some((clip(&format!("pod {name}: {msg}")), since))
        });
    let model_unavailable = pod
        .status
        .as_ref()
        .and_then(|st| st.init_container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "fetch"))
        .filter(|c| {
            let done = c.state.as_ref().and_then(|s| s.terminated.as_ref());
            done.is_none_or(|t| t.exit_code != 0)
        })
        .and_then(|c| {
            // The failure just now (before the kubelet restarts it), else
            // the one before the current attempt.
            let failed_now = c
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .filter(|t| t.exit_code != 0);
            failed_now
                .or_else(|| c.last_state.as_ref()?.terminated.as_ref())?
                .message
                .as_deref()
        })
        .and_then(ModelUnavailable::from_termination_message);
    PodSummary {
        name,
        stuck,
        unschedulable,
        model_unavailable,
    }
}

fn stuck(pod: &str, c: &ContainerStatus) -> Option<Stuck> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if !STUCK.contains(&reason) {
        return None;
    }
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| {
            let message = t
                .message
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty());
            // fetch's JSON line reads better as its sentence.
            let words = match message.and_then(ModelUnavailable::from_termination_message) {
                Some(m) => m.message,
                None => message
                    .or(t.reason.as_deref())
                    .unwrap_or("no message")
                    .to_owned(),
            };
            format!("; last exit {}: {}", t.exit_code, clip(&words))
        })
        .or_else(|| waiting.message.as_deref().map(|m| format!(": {}", clip(m))))
        .unwrap_or_default();
    Some(Stuck {
        reason: reason.to_owned(),
        message: format!(
            "pod {pod} container {} is {reason} after {} restarts{last}",
            c.name, c.restart_count
        ),
    })
}

fn clip(s: &str) -> String {
    crate::status::clip(s, MAX_MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w-1"},
            "status": status,
        }))
        .expect("a pod")
    }

    #[test]
    fn a_crash_looping_fetch_names_its_last_words() {
        let p = pod(serde_json::json!({
            "initContainerStatuses": [{
                "name": "fetch", "image": "i", "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": "sha256 mismatch: want ab, got cd\n"}},
            }],
        }));
        let s = summarize(&p).stuck.expect("stuck");
        assert_eq!(s.reason, "CrashLoopBackOff");
        assert_eq!(
            s.message,
            "pod w-1 container fetch is CrashLoopBackOff after 4 restarts; last exit 1: sha256 mismatch: want ab, got cd"
        );
        assert_eq!(
            summarize(&p).model_unavailable,
            None,
            "a plain message is not a fetch failure line"
        );
    }

    #[test]
    fn a_fetch_that_does_not_fit_names_the_model_unavailable() {
        let words = "INFO downloading\n{\"code\":\"INSUFFICIENT_VRAM\",\"message\":\"the model needs 9000 MiB of GPU memory but gpu.memory declares 8192 MiB\",\"need_bytes\":1,\"available_bytes\":1}\n";
        let p = pod(serde_json::json!({
            "initContainerStatuses": [{
                "name": "fetch", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": words}},
            }],
        }));
        let s = summarize(&p).stuck.expect("stuck");
        let m = summarize(&p).model_unavailable.expect("model unavailable");
        assert_eq!(m.reason.as_str(), "InsufficientGPUMemory");
        assert_eq!(
            m.message,
            "the model needs 9000 MiB of GPU memory but gpu.memory declares 8192 MiB"
        );
        assert!(s.message.ends_with("last exit 1: the model needs 9000 MiB of GPU memory but gpu.memory declares 8192 MiB"), "{}", s.message);
        let other = words.replace("INSUFFICIENT_VRAM", "MODEL_LOAD_FAILED");
        let p = pod(serde_json::json!({
            "initContainerStatuses": [{
                "name": "fetch", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": other}},
            }],
        }));
        assert_eq!(
            summarize(&p).model_unavailable.map(|m| m.reason),
            Some(Reason::FetchFailed)
        );
        // Running again after the back-off: still unavailable, no flapping.
        let again = pod(serde_json::json!({
            "initContainerStatuses": [{
                "name": "fetch", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 1, "message": words}},
            }],
        }));
        assert_eq!(
            summarize(&again).model_unavailable.map(|m| m.reason),
            Some(Reason::InsufficientGpuMemory)
        );
        // Until fetch succeeds.
        let fixed = pod(serde_json::json!({
            "initContainerStatuses": [{
                "name": "fetch", "image": "i", "imageID": "", "ready": true, "restartCount": 3,
                "state": {"terminated": {"exitCode": 0}},
                "lastState": {"terminated": {"exitCode": 1, "message": words}},
            }],
        }));
        assert_eq!(summarize(&fixed).model_unavailable, None);
        // The first failure, before any restart, already counts.
        let first = pod(serde_json::json!({
            "initContainerStatuses": [{
                "name": "fetch", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "message": words}},
            }],
        }));
        assert_eq!(
            summarize(&first).model_unavailable.map(|m| m.reason),
            Some(Reason::InsufficientGpuMemory)
        );
    }

    #[test]
    fn a_fetch_of_an_unsupported_model_says_so() {
        let words = "INFO copying\n{\"code\":\"UNSUPPORTED_MODEL\",\"message\":\"file:///models/m.gguf cannot be served: architecture \\\"mamba\\\" is not supported (supported architectures: llama, qwen2)\"}\n";
        let p = pod(serde_json::json!({
            "initContainerStatuses": [{
                "name": "fetch", "image": "i", "imageID": "", "ready": false, "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": words}},
            }],
        }));
        let m = summarize(&p).model_unavailable.expect("model unavailable");
        assert_eq!(m.reason, Reason::UnsupportedModel);
        assert_eq!(
            m.message,
            "file:///models/m.gguf cannot be served: architecture \"mamba\" is not supported (supported architectures: llama, qwen2)"
        );
        let s = summarize(&p).stuck.expect("stuck");
        assert!(s.message.ends_with("last exit 1: file:///models/m.gguf cannot be served: architecture \"mamba\" is not supported (supported architectures: llama, qwen2)"), "{}", s.message);
    }

    #[test]
    fn pulling_or_running_pods_are_not_stuck() {
        let running = pod(serde_json::json!({
            "containerStatuses": [{
                "name": "worker", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }],
        }));
        assert_eq!(summarize(&running).stuck, None);
        let pull = pod(serde_json::json!({
            "containerStatuses": [{
                "name": "worker", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
            }],
        }));
        let s = summarize(&pull).stuck.expect("stuck");
        assert_eq!(
            s.message,
            "pod w-1 container worker is ImagePullBackOff after 0 restarts: not found"
        );
        assert_eq!(summarize(&pod(serde_json::json!({}))).name, "w-1");
    }

    #[test]
    fn the_scheduler_s_verdict_is_kept_with_its_time() {
        let p = pod(serde_json::json!({
            "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }],
        }));
        let (msg, since) = summarize(&p).unschedulable.expect("unschedulable");
        assert_eq!(
            msg,
            "pod w-1: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
        );
        assert_eq!(since.0.to_string(), "2026-01-01T00:00:00Z");
    }
}
