//! The children of a ModelWorker, built as pure functions of the spec and
//! the operator's configuration: a Deployment, a Service, a Secret with the
//! callback token, a PodDisruptionBudget when replicas > 1 (untyped, so it
//! can be `policy/v1` or `policy/v1beta1` as discovery finds), and a
//! NetworkPolicy when enabled.
//!
//! Objects are written as JSON and then read into the typed Kubernetes
//! structs, which rejects a misspelled field at test time.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use llorch_api::ModelWorker;
use serde_json::{Value, json};
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

fn typed<T: serde::de::DeserializeOwned>(kind: &'static str, v: Value) -> Result<T, BuildError> {
    serde_json::from_value(v).map_err(|source| BuildError::Shape { kind, source })
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

fn labels(name: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(name);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "llorch-operator".into(),
    );
    l.insert("llorch.dev/model-worker".into(), name.into());
    l
}

fn owner(mw: &ModelWorker, name: &str) -> Value {
    json!([{
        "apiVersion": "llorch.dev/v1alpha1",
        "kind": "ModelWorker",
        "name": name,
        "uid": mw.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

/// Metadata of a child; owned by the ModelWorker once it has a uid (a
/// ModelWorker read from a file, for `render`, has none).
pub(crate) fn child_meta(mw: &ModelWorker, name: &str, ns: &str, object_name: &str) -> Value {
    meta(mw, name, ns, object_name)
}

fn meta(mw: &ModelWorker, name: &str, ns: &str, object_name: &str) -> Value {
    let mut m = json!({
        "name": object_name,
        "namespace": ns,
        "labels": labels(name),
    });
    if mw.metadata.uid.is_some() {
        m["ownerReferences"] = owner(mw, name);
    }
    m
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
    typed(
        "Secret",
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(mw, &name, &ns, &callback_secret_name(&name)),
            "type": "Opaque",
            "stringData": { "token": token },
        }),
    )
}

/// The Service in front of the workers.
pub fn service(mw: &ModelWorker) -> Result<Service, BuildError> {
    let (name, ns) = ids(mw)?;
    let port = port(mw);
    typed(
        "Service",
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(mw, &name, &ns, &name),
            "spec": {
                "type": "ClusterIP",
                "selector": selector_labels(&name),
                "ports": [{ "name": "http", "port": port, "targetPort": "http", "protocol": "TCP" }],
            },
        }),
    )
}

fn worker_args(mw: &ModelWorker, cfg: &BuildConfig) -> Vec<String> {
    let mut args = operator_args(mw, cfg);
    args.extend(mw.spec.extra_args.iter().cloned());
    args
}

/// Every flag the operator may pass to the worker, for any spec:
/// `extraArgs` may not repeat one (the worker would refuse the second and
/// the pod would crash-loop), so they are refused up front.
pub fn managed_flags(mw: &ModelWorker) -> std::collections::BTreeSet<String> {
    // A spec that sets every optional setting the operator turns into a flag.
    let mut full = mw.clone();
    let server = &mut full.spec.server;
    server.context_size = Some(server.context_size.unwrap_or(1));
    server.parallel = Some(server.parallel.unwrap_or(1));
    server.queue_depth = Some(server.queue_depth.unwrap_or(1));
    if server.api_key_secret_ref.is_none() {
        server.api_key_secret_ref = Some(llorch_api::SecretKeySelector {
            name: "k".into(),
            key: "k".into(),
        });
    }
    let cfg = BuildConfig {
        worker_image: String::new(),
        worker_cpu_image: String::new(),
        report_url: String::new(),
    };
    operator_args(&full, &cfg)
        .into_iter()
        .filter(|a| a.starts_with("--"))
        .collect()
}

/// The worker's arguments the operator sets itself (without `extraArgs`).
fn operator_args(mw: &ModelWorker, cfg: &BuildConfig) -> Vec<String> {
    let s = &mw.spec;
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--model".into(),
        format!("{MODEL_DIR}/model.gguf"),
        "--port".into(),
        port(mw).to_string(),
        "--model-ref".into(),
        s.model.uri.clone(),
        "--callback-url".into(),
        cfg.report_url.clone(),
        "--callback-token-file".into(),
        format!("{TOKEN_DIR}/token"),
        "--shutdown-grace".into(),
        SHUTDOWN_GRACE.to_string(),
        "--drain-delay".into(),
        DRAIN_DELAY.to_string(),
        "--log-format".into(),
        "json".into(),
    ];
    if let Some(v) = s.server.context_size {
        args.extend(["--ctx-size".into(), v.to_string()]);
    }
    if let Some(v) = s.server.parallel {
        args.extend(["--parallel".into(), v.to_string()]);
    }
    if let Some(v) = s.server.queue_depth {
        args.extend(["--queue-depth".into(), v.to_string()]);
    }
    if s.server.api_key_secret_ref.is_some() {
        args.extend(["--api-key-file".into(), format!("{API_KEY_DIR}/key")]);
    }
    args
}

fn fetch_args(mw: &ModelWorker) -> Vec<String> {
    let s = &mw.spec;
    let mut args: Vec<String> = vec![
        "fetch".into(),
        "--uri".into(),
        s.model.uri.clone(),
        "--dest".into(),
        MODEL_DIR.into(),
    ];
    if let Some(sha) = &s.model.sha256 {
        args.extend(["--sha256".into(), sha.clone()]);
    }
    if let Some(mem) = &s.gpu.memory {
        args.extend(["--gpu-memory".into(), mem.0.clone()]);
    }
    if let Some(ctx) = s.server.context_size {
        args.extend(["--ctx-size".into(), ctx.to_string()]);
    }
    if let Some(n) = s.server.parallel {
        args.extend(["--parallel".into(), n.to_string()]);
    }
    args
}

/// The worker Deployment.
pub fn deployment(mw: &ModelWorker, cfg: &BuildConfig) -> Result<Deployment, BuildError> {
    let (name, ns) = ids(mw)?;
    let s = &mw.spec;
    let image = s.image.clone().unwrap_or_else(|| {
        if s.gpu.count == 0 {
            cfg.worker_cpu_image.clone()
        } else {
            cfg.worker_image.clone()
        }
    });
    // The operator's labels win: the Deployment selects pods by them
    // (validation refuses a spec that sets them).
    let mut pod_labels = s.pod_labels.clone();
    pod_labels.extend(labels(&name));
    let mut node_selector = s.node_selector.clone();
    if let Some(product) = &s.gpu.product {
        node_selector.insert("nvidia.com/gpu.product".into(), product.clone());
    }

    let mut resources =
        serde_json::to_value(s.resources.clone().unwrap_or_default()).unwrap_or_else(|_| json!({}));
    if s.gpu.count > 0 {
        for kind in ["limits", "requests"] {
            if !resources[kind].is_object() {
                resources[kind] = json!({});
            }
            resources[kind][&s.gpu.resource_name] = json!(s.gpu.count.to_string());
        }
    }

    let cache_volume = match s.cache.as_ref() {
        Some(c) if c.persistent_volume_claim.is_some() => {
            let p = c.persistent_volume_claim.as_ref().map(|p| {
                p.claim_name
                    .clone()
                    .unwrap_or_else(|| crate::storage::cache_claim_name(&name))
            });
            json!({ "name": "model-cache", "persistentVolumeClaim": { "claimName": p } })
        }
        Some(c) => match c.empty_dir.as_ref().and_then(|e| e.size_limit.clone()) {
            Some(limit) => json!({ "name": "model-cache", "emptyDir": { "sizeLimit": limit } }),
            None => json!({ "name": "model-cache", "emptyDir": {} }),
        },
        None => json!({ "name": "model-cache", "emptyDir": {} }),
    };
    let mut volumes = vec![
        cache_volume,
        json!({ "name": "tmp", "emptyDir": {} }),
        json!({ "name": "kernel-cache", "emptyDir": {} }),
        json!({ "name": "callback-token", "secret": { "secretName": callback_secret_name(&name) } }),
    ];
    let mut mounts = vec![
        json!({ "name": "model-cache", "mountPath": MODEL_DIR }),
        json!({ "name": "tmp", "mountPath": "/tmp" }),
        json!({ "name": "kernel-cache", "mountPath": "/var/cache/llorch" }),
        json!({ "name": "callback-token", "mountPath": TOKEN_DIR, "readOnly": true }),
    ];
    if let Some(k) = &s.server.api_key_secret_ref {
        volumes.push(json!({ "name": "api-key", "secret": { "secretName": k.name, "items": [{ "key": k.key, "path": "key" }] } }));
        mounts.push(json!({ "name": "api-key", "mountPath": API_KEY_DIR, "readOnly": true }));
    }

    // Downward-API facts the worker puts in its report.
    let mut env: Vec<Value> = [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_IP", "status.podIP"),
    ]
    .iter()
    .map(|(n, path)| json!({ "name": n, "valueFrom": { "fieldRef": { "fieldPath": path } } }))
    .collect();
    env.push(json!({ "name": "LLORCH_MODEL_WORKER", "value": name }));
    // The device goes in the environment, not the arguments, so a node
    // without the GPU (the project's test node) can say so by overriding it.
    if s.gpu.count > 0 {
        env.push(json!({ "name": "LLORCH_DEVICE", "value": "cuda" }));
    }
    env.extend(s.env.iter().filter_map(|e| serde_json::to_value(e).ok()));

    let mut fetch_env = Vec::new();
    if let Some(t) = &s.model.hf_token_secret_ref {
        fetch_env.push(json!({ "name": "HF_TOKEN", "valueFrom": { "secretKeyRef": { "name": t.name, "key": t.key } } }));
    }
    let container_security = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
    });
    let http_probe = |path: &str, period: i32, failures: i32| json!({ "httpGet": { "path": path, "port": "http" }, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": 3 });

    let mut fetch_mounts = vec![
        json!({ "name": "model-cache", "mountPath": MODEL_DIR }),
        json!({ "name": "tmp", "mountPath": "/tmp" }),
    ];
    if let Some((volume, mount)) = crate::storage::source_volume(mw) {
        volumes.push(volume);
        fetch_mounts.push(mount);
    }

    let mut pod_spec = json!({
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "terminationGracePeriodSeconds": SHUTDOWN_GRACE + 15,
        // The worker never calls the API server: no token in its pods.
        "automountServiceAccountToken": false,
        "initContainers": [{
            "name": "fetch",
            "image": image,
            "args": fetch_args(mw),
            "env": fetch_env,
            "volumeMounts": fetch_mounts,
            "securityContext": container_security,
            // fetch ends its output with a JSON line on failure; the
            // operator reads it back as the termination message.
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }],
        "containers": [{
            "name": "worker",
            "image": image,
            "args": worker_args(mw, cfg),
            "env": env,
            "ports": [{ "name": "http", "containerPort": port(mw), "protocol": "TCP" }],
            "resources": resources,
            "volumeMounts": mounts,
            // Model load can take minutes: up to 15 of them before liveness.
            // Ready only once the model is loaded: a load that hangs is
            // restarted after 15 minutes (/health answers while loading).
            "startupProbe": http_probe("/ready", 5, 180),
            "readinessProbe": http_probe("/ready", 5, 2),
            "livenessProbe": http_probe("/health", 10, 3),
            // A crash (a panic too) shows its last log lines in the status.
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": container_security,
        }],
        "volumes": volumes,
    });
    let optional = [
        (
            "nodeSelector",
            (!node_selector.is_empty()).then(|| json!(node_selector)),
        ),
        (
            "tolerations",
            (!s.tolerations.is_empty()).then(|| json!(s.tolerations)),
        ),
        ("affinity", s.affinity.as_ref().map(|a| json!(a))),
        (
            "runtimeClassName",
            s.runtime_class_name.as_ref().map(|v| json!(v)),
        ),
        (
            "priorityClassName",
            s.priority_class_name.as_ref().map(|v| json!(v)),
        ),
        (
            "serviceAccountName",
            s.service_account_name.as_ref().map(|v| json!(v)),
        ),
        (
            "imagePullSecrets",
            (!s.image_pull_secrets.is_empty()).then(|| json!(s.image_pull_secrets)),
        ),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            pod_spec[k] = v;
        }
    }

    typed(
        "Deployment",
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(mw, &name, &ns, &name),
            "spec": {
                "replicas": s.replicas,
                "selector": { "matchLabels": selector_labels(&name) },
                // A model change never drops capacity: new pods come up first.
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
                "template": {
                    "metadata": { "labels": pod_labels, "annotations": s.pod_annotations },
                    "spec": pod_spec,
                },
            },
        }),
    )
}

/// A PodDisruptionBudget (one pod at a time) when replicas > 1, as JSON of
/// `api_version` (`policy/v1` or `policy/v1beta1`).
pub fn pod_disruption_budget(
    mw: &ModelWorker,
    api_version: &str,
) -> Result<Option<Value>, BuildError> {
    let (name, ns) = ids(mw)?;
    if mw.spec.replicas <= 1 {
        return Ok(None);
    }
    Ok(Some(json!({
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": meta(mw, &name, &ns, &name),
        "spec": { "maxUnavailable": 1, "selector": { "matchLabels": selector_labels(&name) } },
    })))
}

/// The NetworkPolicy, when enabled: only the listed clients reach the port.
/// The NetworkPolicy of an enabled `networkPolicy`: ingress to the worker
/// port only from the user's selectors; egress only to what a worker needs:
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
    let mut peer = json!({});
    if let Some(sel) = &np.allowed_namespace_selector {
        peer["namespaceSelector"] = json!(sel);
    }
    if let Some(sel) = &np.allowed_pod_selector {
        peer["podSelector"] = json!(sel);
    }
    typed(
        "NetworkPolicy",
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta(mw, &name, &ns, &name),
            "spec": {
                "podSelector": { "matchLabels": selector_labels(&name) },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{ "from": [peer], "ports": [{ "port": port(mw), "protocol": "TCP" }] }],
                "egress": [
                    { "ports": [{ "port": 53, "protocol": "UDP" }, { "port": 53, "protocol": "TCP" }] },
                    {
                        "to": [{
                            "namespaceSelector": {},
                            "podSelector": { "matchLabels": { "app.kubernetes.io/name": "llorch-operator" } },
                        }],
                        "ports": [{ "port": report_port(&cfg.report_url), "protocol": "TCP" }],
                    },
                    { "ports": [{ "port": 80, "protocol": "TCP" }, { "port": 443, "protocol": "TCP" }] },
                ],
            },
        }),
    )
    .map(Some)
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
