//! Where a worker's model comes from and where it is kept: the read-only
//! source volume the fetch init container reads `pvc://` and `file://`
//! models from, and the cache claim the operator creates when
//! `cache.persistentVolumeClaim.size` is set.
//!
//! The mount layout is the contract with `llorch-worker fetch`:
//! `pvc://CLAIM/PATH` is read at `PVC_ROOT/CLAIM/PATH`, and
//! `file:///PATH` at `/PATH` itself (a hostPath mount of the one file).

use crate::build::{BuildError, ids};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use llorch_api::ModelWorker;
use serde_json::{Value, json};

/// Where `pvc://` source claims are mounted in the fetch container.
pub const PVC_ROOT: &str = "/mnt/pvc";

/// The name of the cache claim the operator creates.
pub fn cache_claim_name(name: &str) -> String {
    format!("{name}-cache")
}

/// The source volume and its mount in the fetch container, for `pvc://`
/// and `file://` models; `None` for models downloaded over the network.
pub fn source_volume(mw: &ModelWorker) -> Option<(Value, Value)> {
    let uri = &mw.spec.model.uri;
    if let Some(rest) = uri.strip_prefix("pvc://") {
        let claim = rest.split('/').next().filter(|c| !c.is_empty())?;
        return Some((
            json!({ "name": "model-source", "persistentVolumeClaim": { "claimName": claim, "readOnly": true } }),
            json!({ "name": "model-source", "mountPath": format!("{PVC_ROOT}/{claim}"), "readOnly": true }),
        ));
    }
    if let Some(path) = uri.strip_prefix("file://") {
        return Some((
            json!({ "name": "model-source", "hostPath": { "path": path, "type": "File" } }),
            json!({ "name": "model-source", "mountPath": path, "readOnly": true }),
        ));
    }
    None
}

/// The cache claim to create, when the spec asks for one by size. It is
/// ReadWriteOnce, which every storage class offers; replicas spread over
/// several nodes need a ReadWriteMany claim of the user's, by `claimName`.
pub fn cache_claim(mw: &ModelWorker) -> Result<Option<PersistentVolumeClaim>, BuildError> {
    let (name, ns) = ids(mw)?;
    let Some(p) = mw
        .spec
        .cache
        .as_ref()
        .and_then(|c| c.persistent_volume_claim.as_ref())
        .filter(|p| p.claim_name.is_none())
    else {
        return Ok(None);
    };
    let Some(size) = &p.size else {
        return Ok(None);
    };
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": { "requests": { "storage": size } },
    });
    if let Some(class) = &p.storage_class_name {
        spec["storageClassName"] = json!(class);
    }
    let claim = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": crate::build::child_meta(mw, &name, &ns, &cache_claim_name(&name)),
        "spec": spec,
    });
    serde_json::from_value(claim)
        .map(Some)
        .map_err(|source| BuildError::Shape {
            kind: "PersistentVolumeClaim",
            source,
        })
}
