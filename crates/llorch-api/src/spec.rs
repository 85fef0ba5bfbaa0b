//! `spec` of a ModelWorker.

// Each `printcolumn(...)` repeats `type_ = ...`, which this lint mistakes
// for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A model served by GPU-scheduled llorch workers.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "llorch.dev",
    version = "v1alpha1",
    kind = "ModelWorker",
    namespaced,
    shortname = "mw",
    status = "crate::ModelWorkerStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Model", type_ = "string", json_path = ".status.model.name"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ModelWorkerSpec {
    /// The model to serve.
    pub model: ModelSource,
    /// Worker pods (scale subresource: `kubectl scale` and HPAs work).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// GPUs per pod.
    #[serde(default)]
    pub gpu: GpuSpec,
    /// Worker image (default: the operator's `--worker-image`, or
    /// `--worker-cpu-image` when `gpu.count` is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Worker server settings.
    #[serde(default)]
    pub server: ServerSpec,
    /// Container resources (GPU limits are added from `gpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Pod tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Pod affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Pod runtime class (e.g. `nvidia`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// Pod priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Extra pod labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Where the model file is cached in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// A NetworkPolicy that admits only the listed clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
    /// Pull secrets for the worker image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// The pods' service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra environment for the worker container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Extra `llorch-worker serve` arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// More names the gateway routes to this ModelWorker (its `model`
    /// field), besides `NAME` and `NAMESPACE/NAME`. A name two ModelWorkers
    /// claim routes to neither (`MODEL_NAME_CONFLICT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 253), regex(pattern = r"^\S+$"))
    )]
    pub served_model_names: Vec<String>,
    /// Replicas from load, down to zero: the operator then owns
    /// `spec.replicas`. Unset: `spec.replicas` is left to users and HPAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

/// How the operator sizes a ModelWorker from its load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Fewest replicas; 0 lets an idle model give its GPUs back (the
    /// gateway wakes it on the next request).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Requests per replica (in flight plus queued) the scaler aims at
    /// (default `server.parallel`, else 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_requests: Option<i32>,
    /// Seconds the load must stay below the current size before scaling
    /// down.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: i32,
}

fn default_scale_down_delay() -> i32 {
    300
}

fn one() -> i32 {
    1
}

/// Where the model comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    /// `hf://org/repo/path/file.gguf[@revision]`, `https://…`, `http://…`,
    /// `pvc://claim/path/file.gguf` or `file:///path/on/node.gguf`.
    #[schemars(regex(
        pattern = r"^(hf://[^/@\s]+/[^/@\s]+/[^@\s]+\.gguf(@[A-Za-z0-9._/-]+)?|https?://\S+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/\S+|file:///\S+)$"
    ))]
    pub uri: String,
    /// Expected SHA-256 of the file (lowercase hex); fetch verifies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: Option<String>,
    /// Secret key holding a Hugging Face token for `hf://` models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_token_secret_ref: Option<SecretKeySelector>,
}

/// A key in a Secret of the ModelWorker's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeySelector {
    /// The Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key in it.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// GPUs of each pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpec {
    /// GPUs per pod; 0 runs on the CPU. Only 0 and 1 are supported for now.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 8))]
    pub count: i32,
    /// The extended resource to request.
    #[serde(default = "default_gpu_resource")]
    pub resource_name: String,
    /// Required `nvidia.com/gpu.product` node label, e.g. `NVIDIA-H100-80GB-HBM3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Memory of each GPU, for the fit check (e.g. `80Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

impl Default for GpuSpec {
    fn default() -> Self {
        GpuSpec {
            count: 1,
            resource_name: default_gpu_resource(),
            product: None,
            memory: None,
        }
    }
}

fn default_gpu_resource() -> String {
    "nvidia.com/gpu".to_string()
}

/// `llorch-worker serve` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Container port (default 8080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Context size per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub context_size: Option<i32>,
    /// Requests decoded at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub parallel: Option<i32>,
    /// Requests waiting beyond those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub queue_depth: Option<i32>,
    /// A Secret key holding the API key clients must send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeySelector>,
}

/// Model cache volume: an emptyDir, or a PersistentVolumeClaim.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// An emptyDir (the default, with no size limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirCache>,
    /// A PersistentVolumeClaim, existing or created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcCache>,
}

/// emptyDir cache.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirCache {
    /// Size limit of the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
}

/// PersistentVolumeClaim cache: `claimName` of an existing claim, or `size`
/// (and optionally `storageClassName`) for one the operator creates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcCache {
    /// An existing claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// Size of a claim to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// Storage class of a claim to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Who may reach the workers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy.
    #[serde(default)]
    pub enabled: bool,
    /// Namespaces whose pods may connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespace_selector: Option<LabelSelector>,
    /// Pods (in those namespaces) that may connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_pod_selector: Option<LabelSelector>,
}
