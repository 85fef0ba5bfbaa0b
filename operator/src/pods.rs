//! What the operator reads from a ModelWorker's pods: their names (to drop
//! reports of pods that are gone) and whether a container is stuck in a
//! restart or pull loop, which makes the ModelWorker `Degraded` with the
//! kubelet's reason and the container's last words (a failing `fetch`
//! init container writes its error there).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

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
}

/// A container that will not start by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The kubelet's waiting reason, e.g. `CrashLoopBackOff`.
    pub reason: String,
    /// Pod, container, restarts and the last termination message.
    pub message: String,
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
    PodSummary { name, stuck }
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
            let words = t
                .message
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .or(t.reason.as_deref())
                .unwrap_or("no message");
            format!("; last exit {}: {}", t.exit_code, clip(words))
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
}
