//! Checks the API server's schema cannot express, and the installer's
//! [`Policy`]. A ModelWorker that fails them gets `Ready=False`, reason
//! `InvalidSpec`, and waits for a change.

use crate::policy::Policy;
use llorch_api::ModelWorker;

/// Flags `extraArgs` may not set although the operator does not pass
/// them: the listen address (probes and the Service reach the pod's) and
/// the worker id (reports are keyed by the pod's name). The flags the
/// operator passes come from [`crate::build::managed_flags`].
const RESERVED_FLAGS: &[&str] = &["--host", "--worker-id"];

/// Pod labels the operator sets (its selector among them).
const MANAGED_LABELS: &[&str] = &[
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "llorch.dev/model-worker",
];

/// Environment variables the operator sets in the worker container.
const MANAGED_ENV: &[&str] = &[
    "POD_NAME",
    "POD_NAMESPACE",
    "POD_IP",
    "LLORCH_MODEL_WORKER",
    "LLORCH_DEVICE",
];

/// Whether `name` can name the ModelWorker's Service (an RFC 1035 label)
/// and fit a label value: lowercase letters, digits and '-', starting with
/// a letter, ending with a letter or digit, at most 63 characters.
fn service_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// Every problem with the spec, each a sentence a user can act on.
pub fn validate(mw: &ModelWorker, policy: &Policy) -> Vec<String> {
    let s = &mw.spec;
    let mut errors = policy.check(mw);
    if let Some(name) = &mw.metadata.name
        && !service_name_ok(name)
    {
        errors.push(format!(
            "metadata.name {name:?} cannot name the worker Service: use at most 63 lowercase letters, digits and '-', starting with a letter (e.g. {:?})",
            name.to_ascii_lowercase().replace(['.', '_'], "-")
        ));
    }
    for key in s.pod_labels.keys() {
        if MANAGED_LABELS.contains(&key.as_str()) {
            errors.push(format!(
                "podLabels may not set {key}: the operator sets it (the Deployment selects pods by it)"
            ));
        }
    }
    let mut seen_env = std::collections::BTreeSet::new();
    for e in &s.env {
        if MANAGED_ENV.contains(&e.name.as_str()) {
            errors.push(format!("env may not set {}: the operator sets it", e.name));
        } else if !seen_env.insert(e.name.as_str()) {
            errors.push(format!("env sets {} twice", e.name));
        }
    }
    // The schema's ranges, for specs that never met the API server
    // (`render`): the worker's flags take these as unsigned numbers.
    let server = &s.server;
    for (field, value, range) in [
        ("server.port", server.port, 1..=65535),
        ("server.contextSize", server.context_size, 1..=i32::MAX),
        ("server.parallel", server.parallel, 1..=1024),
        ("server.queueDepth", server.queue_depth, 0..=100_000),
    ] {
        if let Some(v) = value
            && !range.contains(&v)
        {
            errors.push(format!(
                "{field} is {v}: it must be in {}..={}",
                range.start(),
                range.end()
            ));
        }
    }
    if s.gpu.count > 1 {
        errors.push(format!(
            "gpu.count is {}: only 0 (CPU) or 1 GPU per pod is supported for now",
            s.gpu.count
        ));
    }
    if let Some(mem) = &s.gpu.memory
        && let Err(e) = worker_common::quantity::parse_bytes(&mem.0)
    {
        errors.push(format!("gpu.memory: {e}"));
    }
    if s.gpu.count == 0 && s.gpu.product.is_some() {
        errors
            .push("gpu.product is set but gpu.count is 0: a CPU worker has no GPU product".into());
    }
    if let Some(cache) = &s.cache {
        match (&cache.empty_dir, &cache.persistent_volume_claim) {
            (Some(_), Some(_)) => errors.push("cache: set emptyDir or persistentVolumeClaim, not both".into()),
            (None, Some(p)) if p.claim_name.is_none() && p.size.is_none() => errors.push(
                "cache.persistentVolumeClaim needs claimName (an existing claim) or size (a claim to create)".into(),
            ),
            (None, Some(p)) if p.claim_name.is_some() && p.size.is_some() => errors.push(
                "cache.persistentVolumeClaim: set claimName or size, not both".into(),
            ),
            _ => {}
        }
    }
    if let Some(rest) = s.model.uri.strip_prefix("pvc://")
        && !rest.contains('/')
    {
        errors.push(format!(
            "model.uri {:?}: a pvc:// URI needs a claim and a path in it",
            s.model.uri
        ));
    }
    if s.model.hf_token_secret_ref.is_some() && !s.model.uri.starts_with("hf://") {
        errors.push("model.hfTokenSecretRef is set but model.uri is not an hf:// URI".into());
    }
    let managed = crate::build::managed_flags(mw);
    for arg in &s.extra_args {
        let flag = arg.split('=').next().unwrap_or(arg);
        if managed.contains(flag) || RESERVED_FLAGS.contains(&flag) {
            errors.push(format!(
                "extraArgs may not set {flag}: the operator manages it"
            ));
        }
    }
    if let Some(np) = &s.network_policy
        && np.enabled
        && np.allowed_namespace_selector.is_none()
        && np.allowed_pod_selector.is_none()
    {
        errors.push(
            "networkPolicy.enabled needs allowedNamespaceSelector or allowedPodSelector: otherwise nothing could reach the workers"
                .into(),
        );
    }
    errors.extend(served_name_problems(&s.served_model_names));
    if let Some(a) = &s.autoscaling {
        errors.extend(autoscaling_problems(a));
    }
    errors
}

/// `servedModelNames`: the schema's bounds, and no name twice.
fn served_name_problems(names: &[String]) -> Vec<String> {
    let mut errors = Vec::new();
    if names.len() > 32 {
        errors.push(format!(
            "servedModelNames has {} names: at most 32",
            names.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if name.is_empty() || name.len() > 253 || name.chars().any(char::is_whitespace) {
            errors.push(format!(
                "servedModelNames: {name:?} must be 1 to 253 characters without spaces"
            ));
        } else if !seen.insert(name.as_str()) {
            errors.push(format!("servedModelNames lists {name:?} twice"));
        }
    }
    errors
}

/// `autoscaling`: the schema's ranges, and a minimum not above the maximum.
fn autoscaling_problems(a: &llorch_api::AutoscalingSpec) -> Vec<String> {
    let mut errors = Vec::new();
    for (field, value, range) in [
        ("autoscaling.minReplicas", a.min_replicas, 0..=1000),
        ("autoscaling.maxReplicas", a.max_replicas, 1..=1000),
        (
            "autoscaling.targetRequests",
            a.target_requests.unwrap_or(1),
            1..=100_000,
        ),
        (
            "autoscaling.scaleDownDelaySeconds",
            a.scale_down_delay_seconds,
            0..=86_400,
        ),
    ] {
        if !range.contains(&value) {
            errors.push(format!(
                "{field} is {value}: it must be in {}..={}",
                range.start(),
                range.end()
            ));
        }
    }
    if a.min_replicas > a.max_replicas {
        errors.push(format!(
            "autoscaling.minReplicas ({}) is above autoscaling.maxReplicas ({})",
            a.min_replicas, a.max_replicas
        ));
    }
    errors
}
