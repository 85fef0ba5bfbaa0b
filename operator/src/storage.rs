//! Where a worker's model comes from and where it is kept: the read-only
//! source volume the fetch init container reads `pvc://` and `file://`
//! models from, and the cache claim the operator creates when
//! `cache.persistentVolumeClaim.size` is set.
//!
//! The mount layout is the contract with `llorch-worker fetch`:
//! `pvc://CLAIM/PATH` is read at `PVC_ROOT/CLAIM/PATH`, and
//! `file:///PATH` at `/PATH` itself (a hostPath mount of the one file).

use crate::build::{BuildError, ids};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Volume, VolumeMount, VolumeResourceRequirements,
};
use llorch_api::ModelWorker;
use std::collections::BTreeMap;

/// Where `pvc://` source claims are mounted in the fetch container.
pub const PVC_ROOT: &str = "/mnt/pvc";

/// The name of the cache claim the operator creates.
pub fn cache_claim_name(name: &str) -> String {
    format!("{name}-cache")
}

/// The source volume and its mount in the fetch container, for `pvc://`
/// and `file://` models; `None` for models downloaded over the network.
pub fn source_volume(mw: &ModelWorker) -> Option<(Volume, VolumeMount)> {
    let uri = &mw.spec.model.uri;
    let mount = |path: String| VolumeMount {
        name: "model-source".into(),
        mount_path: path,
        read_only: Some(true),
        ..VolumeMount::default()
    };
    if let Some(rest) = uri.strip_prefix("pvc://") {
        let claim = rest.split('/').next().filter(|c| !c.is_empty())?;
        let volume = Volume {
            name: "model-source".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: Some(true),
            }),
            ..Volume::default()
        };
        return Some((volume, mount(format!("{PVC_ROOT}/{claim}"))));
    }
    if let Some(path) = uri.strip_prefix("file://") {
        let volume = Volume {
            name: "model-source".into(),
            host_path: Some(HostPathVolumeSource {
                path: path.into(),
                type_: Some("File".into()),
            }),
            ..Volume::default()
        };
        return Some((volume, mount(path.into())));
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
    Ok(Some(PersistentVolumeClaim {
        metadata: crate::build::child_meta(mw, &name, &ns, &cache_claim_name(&name)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            storage_class_name: p.storage_class_name.clone(),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }))
}
