//! The children of a ModelWorker, built as pure functions of the spec and
//! the operator's configuration: a Deployment, a Service, a Secret with the
//! callback token, a PodDisruptionBudget when replicas > 1 (untyped, so it
//! can be `policy/v1` or `policy/v1beta1` as discovery finds), and a
//! NetworkPolicy when enabled.
//!
//! Objects are built as k8s-openapi's typed structs, so a shape error is a
//! compile error. The pod template is in [`pod`], the containers' command
//! lines in [`args`].

mod args;
mod pod;

pub use args::managed_flags;
pub use pod::deployment;

use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use llorch_api::ModelWorker;
use serde_json::Value;
use std::collections::BTreeMap;

/// Settings of the operator that shape the children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildConfig {
    /// Default image of GPU workers, e.g. `llorch/worker:0.1.0`.
    pub worker_image: String,
    /// Default image of CPU workers, e.g. `llorch/worker:0.1.0-cpu`.
    pub worker_cpu_image: String,
    /// Where workers send their reports.
    pub report_url: String,
}

/// Default container port of the worker.
pub const DEFAULT_PORT: i32 = 8080;
/// Where the model cache is mounted; the worker serves `MODEL_DIR/model.gguf`.
pub const MODEL_DIR: &str = "/models";
const TOKEN_DIR: &str = "/var/run/llorch/callback";
const API_KEY_DIR: &str = "/var/run/llorch/api-key";
/// Grace for SIGTERM: the worker's drain period plus a margin.
const SHUTDOWN_GRACE: i64 = 30;
/// Seconds a terminating worker still takes requests while the Service's
/// endpoints drop it (within the grace).
const DRAIN_DELAY: i64 = 5;

/// Errors building children (a spec the builder cannot express).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The object has no name or namespace.
    #[error("the ModelWorker has no {0}")]
    Missing(&'static str),
    /// A built object does not match its Kubernetes type (a bug).
    #[error("built {kind} does not match its type: {source}")]
    Shape {
        /// Which object.
        kind: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Name and namespace of a ModelWorker.
pub fn ids(mw: &ModelWorker) -> Result<(String, String), BuildError> {
    let name = mw
        .metadata
        .name
        .clone()
        .ok_or(BuildError::Missing("name"))?;
    let ns = mw
        .metadata
        .namespace
        .clone()
        .ok_or(BuildError::Missing("namespace"))?;
    Ok((name, ns))
}

/// Labels that select a ModelWorker's pods.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "llorch-worker".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
    ])
}

/// The selector as a string, for `status.selector`.
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `app.kubernetes.io/managed-by` label of every child.
pub const MANAGED_BY: &str = "llorch-operator";
/// The label selector of every child the operator makes (Services, and so
/// their Endpoints, included).
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=llorch-operator";

fn labels(name: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(name);
    l.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    l.insert("llorch.dev/model-worker".into(), name.into());
    l
}

fn owner(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "llorch.dev/v1alpha1".into(),
        kind: "ModelWorker".into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata of a child; owned by the ModelWorker once it has a uid (a
/// ModelWorker read from a file, for `render`, has none).
pub(crate) fn child_meta(mw: &ModelWorker, name: &str, ns: &str, object_name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name.into()),
        namespace: Some(ns.into()),
        labels: Some(labels(name)),
        owner_references: mw.metadata.uid.as_deref().map(|uid| vec![owner(name, uid)]),
        ..ObjectMeta::default()
    }
}

/// A selector of the ModelWorker's pods.
fn pod_selector(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(name)),
        ..LabelSelector::default()
    }
}

/// A TCP port of a NetworkPolicy rule.
fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

/// The name of the Secret holding the callback token.
pub fn callback_secret_name(name: &str) -> String {
    format!("{name}-callback")
}

/// The worker port of a ModelWorker.
pub fn port(mw: &ModelWorker) -> i32 {
    mw.spec.server.port.unwrap_or(DEFAULT_PORT)
}

/// `status.endpoint`: `http://<name>.<namespace>.svc:<port>`.
pub fn endpoint(name: &str, ns: &str, port: i32) -> String {
    format!("http://{name}.{ns}.svc:{port}")
}

/// The Secret with the per-ModelWorker callback token.
pub fn callback_secret(mw: &ModelWorker, token: &str) -> Result<Secret, BuildError> {
    let (name, ns) = ids(mw)?;
    Ok(Secret {
        metadata: child_meta(mw, &name, &ns, &callback_secret_name(&name)),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([("token".into(), token.into())])),
        ..Secret::default()
    })
}

/// The Service in front of the workers.
pub fn service(mw: &ModelWorker) -> Result<Service, BuildError> {
    let (name, ns) = ids(mw)?;
    Ok(Service {
        metadata: child_meta(mw, &name, &ns, &name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: port(mw),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// A PodDisruptionBudget (one pod at a time) when replicas > 1, as JSON of
/// `api_version` (`policy/v1` or `policy/v1beta1`, whose fields used here
/// are the same).
pub fn pod_disruption_budget(
    mw: &ModelWorker,
    api_version: &str,
) -> Result<Option<Value>, BuildError> {
    let (name, ns) = ids(mw)?;
    if mw.spec.replicas <= 1 {
        return Ok(None);
    }
    let pdb = PodDisruptionBudget {
        metadata: child_meta(mw, &name, &ns, &name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(pod_selector(&name)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    let mut v = serde_json::to_value(pdb).map_err(|source| BuildError::Shape {
        kind: "PodDisruptionBudget",
        source,
    })?;
    v["apiVersion"] = api_version.into();
    Ok(Some(v))
}

/// The NetworkPolicy of an enabled `networkPolicy`: ingress to the worker
/// port only from the user's selectors and the gateway's and operator's
/// pods (wherever they run); egress only to what a worker needs:
/// DNS, the operator's report port (on the operator's pods, wherever they
/// run), and TCP 80 and 443 for the model download.
pub fn network_policy(
    mw: &ModelWorker,
    cfg: &BuildConfig,
) -> Result<Option<NetworkPolicy>, BuildError> {
    let (name, ns) = ids(mw)?;
    let Some(np) = mw.spec.network_policy.as_ref().filter(|n| n.enabled) else {
        return Ok(None);
    };
    let clients = NetworkPolicyPeer {
        namespace_selector: np.allowed_namespace_selector.clone(),
        pod_selector: np.allowed_pod_selector.clone(),
        ..NetworkPolicyPeer::default()
    };
    let pods_named = |app: &str| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".into(),
                app.into(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let operator_pods = pods_named("llorch-operator");
    let dns = |protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        protocol: Some(protocol.into()),
        ..NetworkPolicyPort::default()
    };
    let egress = |to: Option<Vec<NetworkPolicyPeer>>, ports: Vec<NetworkPolicyPort>| {
        NetworkPolicyEgressRule {
            to,
            ports: Some(ports),
        }
    };
    Ok(Some(NetworkPolicy {
        metadata: child_meta(mw, &name, &ns, &name),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pod_selector(&name)),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            // The gateway forwards requests; the operator's autoscaler
            // reads /metrics.
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![
                    clients,
                    pods_named("llorch-gateway"),
                    operator_pods.clone(),
                ]),
                ports: Some(vec![tcp(port(mw))]),
            }]),
            egress: Some(vec![
                egress(None, vec![dns("UDP"), dns("TCP")]),
                egress(
                    Some(vec![operator_pods]),
                    vec![tcp(report_port(&cfg.report_url))],
                ),
                egress(None, vec![tcp(80), tcp(443)]),
            ]),
        }),
    }))
}

/// The port of the report URL (its scheme's default when it names none).
fn report_port(url: &str) -> i32 {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or("");
    authority
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(if scheme == "https" { 443 } else { 80 })
}

#[cfg(test)]
mod tests {
    use super::report_port;

    #[test]
    fn the_report_port_comes_from_the_url() {
        assert_eq!(
            report_port("http://10.96.0.10:8081/v1/workers/report"),
            8081
        );
        assert_eq!(
            report_port("http://llorch-operator.llorch-system.svc/x"),
            80
        );
        assert_eq!(report_port("https://reports.example"), 443);
        assert_eq!(report_port("http://[fd00::1]:9000/r"), 9000);
        assert_eq!(report_port("http://[fd00::1]/r"), 80);
    }
}
