//! Pod volumes as host directories: emptyDir, secret, configMap,
//! downwardAPI, projected (of those), hostPath, and persistentVolumeClaim
//! (a directory per claim under the state dir; no storage is provisioned).
//! Each container sees them at their mount paths through bind mounts in its
//! own mount namespace (see `container`).

use anyhow::{Context, Result, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};
use kube::Api;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One bind mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Prepares every volume of `pod` under `dir`; returns the host path of each
/// by volume name. A missing Secret or ConfigMap is an error the caller
/// retries (the pod waits in `ContainerCreating`, as with a kubelet).
pub async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    dir: &Path,
    state_dir: &Path,
) -> Result<BTreeMap<String, PathBuf>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in volumes {
        let path = dir.join("volumes").join(&v.name);
        let host = prepare_one(client, pod, &ns, &v, &path, state_dir)
            .await
            .with_context(|| format!("volume {:?}", v.name))?;
        out.insert(v.name.clone(), host);
    }
    Ok(out)
}

async fn prepare_one(
    client: &kube::Client,
    pod: &Pod,
    ns: &str,
    v: &Volume,
    path: &Path,
    state_dir: &Path,
) -> Result<PathBuf> {
    if let Some(h) = &v.host_path {
        let p = PathBuf::from(&h.path);
        if matches!(h.type_.as_deref(), Some("DirectoryOrCreate")) {
            std::fs::create_dir_all(&p)?;
        }
        if !p.exists() {
            bail!("hostPath {} does not exist on this node", p.display());
        }
        return Ok(p);
    }
    if let Some(c) = &v.persistent_volume_claim {
        let p = state_dir.join("claims").join(ns).join(&c.claim_name);
        std::fs::create_dir_all(&p)?;
        return Ok(p);
    }
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    if v.empty_dir.is_some() {
        return Ok(path.to_path_buf());
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = secret_data(client, ns, &name, s.optional.unwrap_or(false)).await?;
        write_items(path, &data, s.items.as_deref(), s.default_mode)?;
        return Ok(path.to_path_buf());
    }
    if let Some(c) = &v.config_map {
        let data = config_map_data(client, ns, &c.name, c.optional.unwrap_or(false)).await?;
        write_items(path, &data, c.items.as_deref(), c.default_mode)?;
        return Ok(path.to_path_buf());
    }
    if let Some(d) = &v.downward_api {
        write_downward(pod, path, d.items.as_deref(), d.default_mode)?;
        return Ok(path.to_path_buf());
    }
    if let Some(p) = &v.projected {
        for src in p.sources.iter().flatten() {
            if let Some(s) = &src.secret {
                let data = secret_data(client, ns, &s.name, s.optional.unwrap_or(false)).await?;
                write_items(path, &data, s.items.as_deref(), p.default_mode)?;
            } else if let Some(c) = &src.config_map {
                let data =
                    config_map_data(client, ns, &c.name, c.optional.unwrap_or(false)).await?;
                write_items(path, &data, c.items.as_deref(), p.default_mode)?;
            } else if let Some(d) = &src.downward_api {
                write_downward(pod, path, d.items.as_deref(), p.default_mode)?;
            } else {
                bail!(
                    "projected source not supported by the test node (only secret, configMap, downwardAPI)"
                );
            }
        }
        return Ok(path.to_path_buf());
    }
    bail!(
        "volume type not supported by the test node (emptyDir, secret, configMap, downwardAPI, projected, hostPath, persistentVolumeClaim are)"
    )
}

pub async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await? {
        Some(s) => Ok(s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, ByteString(v))| (k, v))
            .chain(
                s.string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            )
            .collect()),
        None if optional => Ok(BTreeMap::new()),
        None => bail!("secret {ns}/{name} not found"),
    }
}

pub async fn config_map_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await? {
        Some(c) => Ok(c
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .chain(
                c.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, ByteString(v))| (k, v)),
            )
            .collect()),
        None if optional => Ok(BTreeMap::new()),
        None => bail!("configmap {ns}/{name} not found"),
    }
}

/// The fieldRef items of a downwardAPI volume or projection.
fn write_downward(
    pod: &Pod,
    dir: &Path,
    items: Option<&[DownwardAPIVolumeFile]>,
    mode: Option<i32>,
) -> Result<()> {
    for item in items.into_iter().flatten() {
        if let Some(f) = &item.field_ref {
            write_file(dir, &item.path, field(pod, &f.field_path)?.as_bytes(), mode)?;
        }
    }
    Ok(())
}

fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: Option<i32>,
) -> Result<()> {
    match items {
        Some(items) => {
            for it in items {
                let Some(v) = data.get(&it.key) else {
                    bail!("key {:?} not found", it.key);
                };
                write_file(dir, &it.path, v, it.mode.or(mode))?;
            }
        }
        None => {
            for (k, v) in data {
                write_file(dir, k, v, mode)?;
            }
        }
    }
    Ok(())
}

fn write_file(dir: &Path, rel: &str, bytes: &[u8], mode: Option<i32>) -> Result<()> {
    if rel.split('/').any(|p| p == ".." || p.is_empty()) {
        bail!("path {rel:?} is not allowed");
    }
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&p, bytes)?;
    let mode = mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(0o644);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A downward-API field of the pod.
pub fn field(pod: &Pod, path: &str) -> Result<String> {
    let m = &pod.metadata;
    let st = pod.status.as_ref();
    let sp = pod.spec.as_ref();
    let v = match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => sp.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => sp.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => st.and_then(|s| s.pod_ip.clone()),
        "status.hostIP" => st.and_then(|s| s.host_ip.clone()),
        p => {
            let label = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
                p.strip_prefix(prefix)
                    .and_then(|k| k.strip_suffix("']"))
                    .map(|k| map.and_then(|m| m.get(k)).cloned().unwrap_or_default())
            };
            match label("metadata.labels['", m.labels.as_ref())
                .or_else(|| label("metadata.annotations['", m.annotations.as_ref()))
            {
                Some(v) => Some(v),
                None => bail!("fieldRef {p:?} is not supported by the test node"),
            }
        }
    };
    Ok(v.unwrap_or_default())
}
