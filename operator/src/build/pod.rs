//! The worker Deployment: its pod template (security context, the fetch
//! init container handing the model to the worker, probes, volumes).

use super::args::{fetch_args, worker_args};
use super::{
    API_KEY_DIR, BuildConfig, BuildError, MODEL_DIR, SHUTDOWN_GRACE, TOKEN_DIR,
    callback_secret_name, child_meta, ids, labels, pod_selector, port,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use llorch_api::ModelWorker;

/// The worker's unprivileged user and group.
const WORKER_UID: i64 = 10001;

/// The worker Deployment.
pub fn deployment(mw: &ModelWorker, cfg: &BuildConfig) -> Result<Deployment, BuildError> {
    let (name, ns) = ids(mw)?;
    let s = &mw.spec;
    // The operator's labels win: the Deployment selects pods by them
    // (validation refuses a spec that sets them).
    let mut pod_labels = s.pod_labels.clone();
    pod_labels.extend(labels(&name));
    Ok(Deployment {
        metadata: child_meta(mw, &name, &ns, &name),
        spec: Some(DeploymentSpec {
            replicas: Some(s.replicas),
            selector: pod_selector(&name),
            // A model change never drops capacity: new pods come up first.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(s.pod_annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(mw, &name, cfg)),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

fn pod_spec(mw: &ModelWorker, name: &str, cfg: &BuildConfig) -> PodSpec {
    let s = &mw.spec;
    let image = s.image.clone().unwrap_or_else(|| {
        if s.gpu.count == 0 {
            cfg.worker_cpu_image.clone()
        } else {
            cfg.worker_image.clone()
        }
    });
    let mut node_selector = s.node_selector.clone();
    if let Some(product) = &s.gpu.product {
        node_selector.insert("nvidia.com/gpu.product".into(), product.clone());
    }
    let (mut volumes, worker_mounts) = worker_volumes(mw, name);
    let mut fetch_mounts = vec![
        mount("model-cache", MODEL_DIR, false),
        mount("tmp", "/tmp", false),
    ];
    if let Some((volume, source_mount)) = crate::storage::source_volume(mw) {
        volumes.push(volume);
        fetch_mounts.push(source_mount);
    }
    let fetch = Container {
        name: "fetch".into(),
        image: Some(image.clone()),
        args: Some(fetch_args(mw)),
        env: Some(fetch_env(mw)),
        volume_mounts: Some(fetch_mounts),
        security_context: Some(container_security()),
        // fetch ends its output with a JSON line on failure; the operator
        // reads it back as the termination message.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let worker = Container {
        name: "worker".into(),
        image: Some(image),
        args: Some(worker_args(mw, cfg)),
        env: Some(worker_env(mw, name)),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: port(mw),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources(mw)),
        volume_mounts: Some(worker_mounts),
        // Model load can take minutes: up to 15 of them before liveness.
        // Ready only once the model is loaded: a load that hangs is
        // restarted after 15 minutes (/health answers while loading).
        startup_probe: Some(http_probe("/ready", 5, 180)),
        readiness_probe: Some(http_probe("/ready", 5, 2)),
        liveness_probe: Some(http_probe("/health", 10, 3)),
        // A crash (a panic too) shows its last log lines in the status.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(container_security()),
        ..Container::default()
    };
    PodSpec {
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(WORKER_UID),
            run_as_group: Some(WORKER_UID),
            fs_group: Some(WORKER_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        termination_grace_period_seconds: Some(SHUTDOWN_GRACE + 15),
        // The worker never calls the API server: no token in its pods.
        automount_service_account_token: Some(false),
        init_containers: Some(vec![fetch]),
        containers: vec![worker],
        volumes: Some(volumes),
        node_selector: (!node_selector.is_empty()).then_some(node_selector),
        tolerations: (!s.tolerations.is_empty()).then(|| s.tolerations.clone()),
        affinity: s.affinity.clone(),
        runtime_class_name: s.runtime_class_name.clone(),
        priority_class_name: s.priority_class_name.clone(),
        service_account_name: s.service_account_name.clone(),
        image_pull_secrets: (!s.image_pull_secrets.is_empty())
            .then(|| s.image_pull_secrets.clone()),
        ..PodSpec::default()
    }
}

/// The pod's volumes (without the model source) and the worker's mounts.
fn worker_volumes(mw: &ModelWorker, name: &str) -> (Vec<Volume>, Vec<VolumeMount>) {
    let s = &mw.spec;
    let mut volumes = vec![
        cache_volume(mw, name),
        empty_dir("tmp", None),
        empty_dir("kernel-cache", None),
        Volume {
            name: "callback-token".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(callback_secret_name(name)),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        mount("model-cache", MODEL_DIR, false),
        mount("tmp", "/tmp", false),
        mount("kernel-cache", "/var/cache/llorch", false),
        mount("callback-token", TOKEN_DIR, true),
    ];
    if let Some(k) = &s.server.api_key_secret_ref {
        volumes.push(Volume {
            name: "api-key".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(k.name.clone()),
                items: Some(vec![KeyToPath {
                    key: k.key.clone(),
                    path: "key".into(),
                    ..KeyToPath::default()
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("api-key", API_KEY_DIR, true));
    }
    (volumes, mounts)
}

/// Where the model is kept: the user's or the operator's claim, else an
/// emptyDir (with the spec's size limit).
fn cache_volume(mw: &ModelWorker, name: &str) -> Volume {
    let cache = mw.spec.cache.as_ref();
    if let Some(p) = cache.and_then(|c| c.persistent_volume_claim.as_ref()) {
        let claim = p
            .claim_name
            .clone()
            .unwrap_or_else(|| crate::storage::cache_claim_name(name));
        return Volume {
            name: "model-cache".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                ..PersistentVolumeClaimVolumeSource::default()
            }),
            ..Volume::default()
        };
    }
    let limit = cache
        .and_then(|c| c.empty_dir.as_ref())
        .and_then(|e| e.size_limit.clone());
    empty_dir("model-cache", limit)
}

fn empty_dir(name: &str, size_limit: Option<Quantity>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit,
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The worker's environment: downward-API facts it puts in its report,
/// the ModelWorker's name, the device, then the spec's own variables.
fn worker_env(mw: &ModelWorker, name: &str) -> Vec<EnvVar> {
    let field = |var: &str, path: &str| EnvVar {
        name: var.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let value = |var: &str, v: &str| EnvVar {
        name: var.into(),
        value: Some(v.into()),
        ..EnvVar::default()
    };
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("POD_IP", "status.podIP"),
        value("LLORCH_MODEL_WORKER", name),
    ];
    // The device goes in the environment, not the arguments, so a node
    // without the GPU (the project's test node) can say so by overriding it.
    if mw.spec.gpu.count > 0 {
        env.push(value("LLORCH_DEVICE", "cuda"));
    }
    env.extend(mw.spec.env.iter().cloned());
    env
}

/// The fetch container's environment: the Hugging Face token, if any.
fn fetch_env(mw: &ModelWorker) -> Vec<EnvVar> {
    let Some(t) = &mw.spec.model.hf_token_secret_ref else {
        return Vec::new();
    };
    vec![EnvVar {
        name: "HF_TOKEN".into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: t.name.clone(),
                key: t.key.clone(),
                ..SecretKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }]
}

/// The spec's resources plus the GPUs, as both limit and request.
fn resources(mw: &ModelWorker) -> ResourceRequirements {
    let s = &mw.spec;
    let mut r = s.resources.clone().unwrap_or_default();
    if s.gpu.count > 0 {
        let gpus = Quantity(s.gpu.count.to_string());
        for list in [&mut r.limits, &mut r.requests] {
            list.get_or_insert_with(Default::default)
                .insert(s.gpu.resource_name.clone(), gpus.clone());
        }
    }
    r
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}
