//! A container's environment, built as kubelet builds it: the services of
//! the pod's namespace (`NAME_SERVICE_HOST`/`_PORT`, as there is no cluster
//! DNS) and the API server's `KUBERNETES_SERVICE_*`, then `envFrom`, then
//! `env` with `valueFrom` (fieldRef, secretKeyRef, configMapKeyRef), with
//! `$(VAR)` references expanded.

use crate::volumes;
use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::{Container, Pod, Service};
use kube::Api;
use kube::api::ListParams;

/// The environment of `c` in `pod`, in order (later entries win).
pub async fn build(
    client: &kube::Client,
    pod: &Pod,
    c: &Container,
    gpu_resource: &str,
) -> Result<Vec<(String, String)>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        (
            "HOSTNAME".into(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        ("HOME".into(), "/root".into()),
    ];
    env.extend(service_env(client, &ns).await?);
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(s) = &from.secret_ref {
            volumes::secret_data(client, &ns, &s.name, s.optional.unwrap_or(false)).await?
        } else if let Some(m) = &from.config_map_ref {
            volumes::config_map_data(client, &ns, &m.name, m.optional.unwrap_or(false)).await?
        } else {
            continue;
        };
        for (k, v) in data {
            env.push((
                format!("{prefix}{k}"),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => expand(v, &env),
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    volumes::field(pod, &f.field_path)?
                } else if let Some(s) = &from.secret_key_ref {
                    let data =
                        volumes::secret_data(client, &ns, &s.name, s.optional.unwrap_or(false))
                            .await?;
                    match data.get(&s.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if s.optional.unwrap_or(false) => continue,
                        None => bail!("key {:?} not in secret {}", s.key, s.name),
                    }
                } else if let Some(m) = &from.config_map_key_ref {
                    let data =
                        volumes::config_map_data(client, &ns, &m.name, m.optional.unwrap_or(false))
                            .await?;
                    match data.get(&m.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if m.optional.unwrap_or(false) => continue,
                        None => bail!("key {:?} not in configmap {}", m.key, m.name),
                    }
                } else {
                    bail!(
                        "env {:?}: resourceFieldRef is not supported by the test node",
                        e.name
                    );
                }
            }
            (None, None) => String::new(),
        };
        env.push((e.name.clone(), value));
    }
    if requests(c, gpu_resource) {
        // The test node has no GPU; it says so (last, so it wins over the
        // pod's own LLORCH_DEVICE) instead of letting the worker fail to
        // find one.
        env.push(("LLORCH_DEVICE".into(), "cpu".into()));
    }
    Ok(env)
}

/// Whether `c` asks for the GPU resource.
pub fn requests(c: &Container, gpu_resource: &str) -> bool {
    c.resources.as_ref().is_some_and(|r| {
        [r.limits.as_ref(), r.requests.as_ref()]
            .into_iter()
            .flatten()
            .any(|m| m.get(gpu_resource).is_some_and(|q| q.0 != "0"))
    })
}

async fn service_env(client: &kube::Client, ns: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut add = |svc: &Service| {
        let Some(spec) = &svc.spec else { return };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| *ip != "None" && !ip.is_empty())
        else {
            return;
        };
        let name = svc
            .metadata
            .name
            .clone()
            .unwrap_or_default()
            .to_uppercase()
            .replace('-', "_");
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { return };
        out.push((format!("{name}_SERVICE_HOST"), ip.to_owned()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = &p.name {
                out.push((
                    format!(
                        "{name}_SERVICE_PORT_{}",
                        pn.to_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
    };
    let lp = ListParams::default();
    for svc in Api::<Service>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
        .items
        .iter()
    {
        add(svc);
    }
    if ns != "default"
        && let Some(k) = Api::<Service>::namespaced(client.clone(), "default")
            .get_opt("kubernetes")
            .await?
    {
        add(&k);
    }
    Ok(out)
}

/// `$(VAR)` expanded from `env`; `$$(VAR)` stays literal `$(VAR)`; unknown
/// references stay as written (kubelet's rules).
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$(")
            && let Some(end) = t.find(')')
        {
            let name = &t[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubelet() {
        let env = vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "x".to_owned()),
        ];
        assert_eq!(
            expand("--a=$(A) $(B)$(C) $$(A) $ $(", &env),
            "--a=1 x$(C) $(A) $ $("
        );
    }
}
