//! Writing a ModelWorker's children: server-side apply with a hash of
//! what was applied, the callback Secret (created once, read by name), and
//! the children that come and go with the spec (PDB, NetworkPolicy).

use super::{APPLIED_HASH, Context, Error, FIELD_MANAGER, kube_err};
use crate::build::{self, BuildError};
use crate::subset;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use llorch_api::ModelWorker;
use serde::Serialize;

/// Server-side apply of `obj` under the operator's field manager, with a
/// hash of it in the annotation [`APPLIED_HASH`]; skipped when the live
/// object carries the same hash (so no field was dropped from `obj` since)
/// and still holds every field of `obj` (so nobody changed one since).
pub(super) async fn apply<K, T>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
    obj: &T,
) -> Result<K, Error>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    T: Serialize + std::fmt::Debug,
{
    let mut desired = serde_json::to_value(obj).map_err(|source| {
        Error::Build(BuildError::Shape {
            kind: "a child object",
            source,
        })
    })?;
    let hash = subset::digest(&desired);
    if let Some(meta) = desired
        .as_object_mut()
        .and_then(|o| o.get_mut("metadata"))
        .and_then(|m| m.as_object_mut())
    {
        let notes = meta
            .entry("annotations")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(notes) = notes.as_object_mut() {
            notes.insert(APPLIED_HASH.into(), hash.clone().into());
        }
    }
    let live = api
        .get_opt(name)
        .await
        .map_err(kube_err(format!("read {name}")))?;
    if let Some(live) = live {
        let same_hash = live
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED_HASH))
            == Some(&hash);
        let same =
            same_hash && serde_json::to_value(&live).is_ok_and(|l| subset::contains(&l, &desired));
        if same {
            return Ok(live);
        }
    }
    ctx.metrics.wrote();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &pp, &Patch::Apply(&desired))
        .await
        .map_err(kube_err(format!("apply {name}")))
}

/// The callback-token Secret is created once with a random token and then
/// left alone: re-applying it would rotate the token under running pods.
/// One left by an earlier ModelWorker of the same name (deleted, and its
/// Secret not yet collected, or orphaned by a delete that kept the
/// children) is replaced, since reports are checked against the owner's
/// uid; one the operator did not create is not touched, and the
/// ModelWorker fails with the reason. Secrets are read by name only: the
/// operator may get, create and delete them, never list or watch.
pub(super) async fn ensure_secret(
    ctx: &Context,
    mw: &ModelWorker,
    ns: &str,
    name: &str,
) -> Result<(), Error> {
    let api: Api<Secret> = ctx.api(ns);
    let secret_name = build::callback_secret_name(name);
    if let Some(existing) = api
        .get_opt(&secret_name)
        .await
        .map_err(kube_err(format!("read secret {secret_name}")))?
    {
        let owner = existing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "ModelWorker" && o.controller == Some(true))
            .map(|o| o.uid.as_str());
        if owner.is_some() && owner == mw.metadata.uid.as_deref() {
            return Ok(());
        }
        let label = |key: &str| {
            existing
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(key))
                .cloned()
        };
        let ours = label("llorch.dev/model-worker").as_deref() == Some(name)
            && label("app.kubernetes.io/managed-by").as_deref() == Some(build::MANAGED_BY);
        if !ours {
            return Err(Error::Taken(format!(
                "the Secret {secret_name} exists and was not created by the operator for this \
                 ModelWorker; delete or rename it so the callback token can be created"
            )));
        }
        // Ours, owned by an earlier ModelWorker of this name, or by none
        // (that one was deleted with its children orphaned): replaced.
        tracing::info!(secret = %secret_name, "replacing the callback Secret of an earlier ModelWorker of this name");
        ctx.metrics.wrote();
        let dp = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: existing.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&secret_name, &dp).await {
            Ok(_) => {}
            // Collected meanwhile, or replaced by another pass.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(kube_err(format!("delete secret {secret_name}"))(e)),
        }
    }
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret = build::callback_secret(mw, &token)?;
    ctx.metrics.wrote();
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        // Another pass created it, or the old one is still being deleted:
        // the next pass checks its owner again.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(kube_err(format!("create secret {secret_name}"))(e)),
    }
}

pub(super) async fn sync_pdb(
    ctx: &Context,
    mw: &ModelWorker,
    ns: &str,
    name: &str,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ctx.pdb);
    match build::pod_disruption_budget(mw, &ctx.pdb.api_version)? {
        Some(pdb) => apply(ctx, &api, name, &pdb).await.map(drop),
        None => delete_if_present(ctx, &api, name).await,
    }
}

pub(super) async fn sync_network_policy(
    ctx: &Context,
    mw: &ModelWorker,
    ns: &str,
    name: &str,
) -> Result<(), Error> {
    let api: Api<NetworkPolicy> = ctx.api(ns);
    match build::network_policy(mw, &ctx.cfg.build)? {
        Some(np) => apply(ctx, &api, name, &np).await.map(drop),
        None => delete_if_present(ctx, &api, name).await,
    }
}

/// Deletes a child the spec no longer asks for; only one the operator
/// manages (by label), never a stranger's object of the same name.
/// Scales the operator's Deployment `name` to zero replicas, if it exists
/// and runs any.
pub(super) async fn stop_deployment(ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    let api: Api<Deployment> = ctx.api(ns);
    let Some(d) = api
        .get_opt(name)
        .await
        .map_err(kube_err(format!("read {name}")))?
    else {
        return Ok(());
    };
    let ours = d
        .labels()
        .get("app.kubernetes.io/managed-by")
        .map(String::as_str)
        == Some(FIELD_MANAGER);
    if !ours || d.spec.as_ref().and_then(|s| s.replicas) == Some(0) {
        return Ok(());
    }
    ctx.metrics.wrote();
    let patch = serde_json::json!({ "spec": { "replicas": 0 } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(kube_err(format!("scale {name} to zero")))
}

pub(super) async fn delete_if_present<K>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(obj) = api
        .get_opt(name)
        .await
        .map_err(kube_err(format!("read {name}")))?
    else {
        return Ok(());
    };
    if obj
        .labels()
        .get("app.kubernetes.io/managed-by")
        .map(String::as_str)
        != Some(FIELD_MANAGER)
    {
        return Ok(());
    }
    ctx.metrics.wrote();
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube_err(format!("delete {name}"))(e)),
    }
}
