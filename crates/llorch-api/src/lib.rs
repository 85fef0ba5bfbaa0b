//! The `ModelWorker` custom resource (`llorch.dev/v1alpha1`, short name
//! `mw`, namespaced): what a platform engineer applies to get GPU-scheduled
//! worker pods serving a GGUF model, and the status the operator reports.
//!
//! The types derive kube's `CustomResource` and `schemars`; the CRD is
//! generated from them ([`crd_yaml`]) and the copies under `manifests/` and
//! the chart are checked against it. Validation the API server can do lives
//! in the schema (enums, ranges, patterns, required fields; no CEL, so 1.20
//! servers accept it); the rest is in the operator.

mod spec;
mod status;

pub use spec::{
    AutoscalingSpec, CacheSpec, EmptyDirCache, GpuSpec, ModelSource, ModelWorker, ModelWorkerSpec,
    NetworkPolicySpec, PvcCache, SecretKeySelector, ServerSpec,
};
pub use status::{ModelStatus, ModelWorkerStatus, Phase, WorkerStatus};

use kube::CustomResourceExt;

/// The CRD as YAML, exactly as `llorch-operator crd` prints it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&ModelWorker::crd())
}
