//! Which ModelWorker a request's `model` names, and where its ready
//! replicas listen: a snapshot built from the watched ModelWorkers and
//! their Services' Endpoints, replaced whole on every change.
//!
//! Names: `NAMESPACE/NAME` always resolves to that ModelWorker. A bare
//! `NAME` and each of `spec.servedModelNames` resolve when exactly one
//! ModelWorker claims them; a name two claim resolves to neither
//! ([`ResolveError::Conflict`]), never to a random pick.

use k8s_openapi::api::core::v1::Endpoints;
use llorch_api::{ModelWorker, Phase, SecretKeySelector};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// One ModelWorker as the gateway routes to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `spec.servedModelNames`.
    pub served_names: Vec<String>,
    /// `status.phase`.
    pub phase: Option<Phase>,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `spec.autoscaling` lets it go to zero: a request wakes it.
    pub wakes_from_zero: bool,
    /// `status.readyReplicas`.
    pub ready_replicas: i32,
    /// The key its workers require (`server.apiKeySecretRef`).
    pub api_key: Option<SecretKeySelector>,
    /// Creation time, in Unix seconds.
    pub created: i64,
    /// Addresses of its ready replicas, from its Service's Endpoints.
    pub endpoints: Vec<SocketAddr>,
}

impl Model {
    /// `NAMESPACE/NAME`: the name that always resolves, and the label
    /// of its metrics.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn from_worker(mw: &ModelWorker) -> Option<Model> {
        let status = mw.status.clone().unwrap_or_default();
        Some(Model {
            namespace: mw.metadata.namespace.clone()?,
            name: mw.metadata.name.clone()?,
            served_names: mw.spec.served_model_names.clone(),
            phase: status.phase,
            replicas: mw.spec.replicas,
            wakes_from_zero: mw
                .spec
                .autoscaling
                .as_ref()
                .is_some_and(|a| a.min_replicas == 0),
            ready_replicas: status.ready_replicas,
            api_key: mw.spec.server.api_key_secret_ref.clone(),
            created: mw
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
            endpoints: Vec::new(),
        })
    }
}

/// Why a `model` resolves to no ModelWorker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No ModelWorker has that name or alias.
    #[error("no model named {0:?} (GET /v1/models lists them)")]
    NotFound(String),
    /// Several claim it.
    #[error("the name {name:?} is claimed by {}: send NAMESPACE/NAME", claimants.join(" and "))]
    Conflict {
        /// The name.
        name: String,
        /// `NAMESPACE/NAME` of each claimant.
        claimants: Vec<String>,
    },
}

/// The snapshot.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    models: BTreeMap<String, Arc<Model>>,
    /// Bare names and aliases → the ids claiming them.
    claims: BTreeMap<String, BTreeSet<String>>,
}

impl Catalog {
    /// The catalog of `workers`, with each one's ready addresses from the
    /// Endpoints object of the same name and namespace.
    pub fn build(workers: &[Arc<ModelWorker>], endpoints: &[Arc<Endpoints>]) -> Catalog {
        let mut addrs: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
        for ep in endpoints {
            if let (Some(ns), Some(name)) = (&ep.metadata.namespace, &ep.metadata.name) {
                addrs.insert(format!("{ns}/{name}"), ready_addresses(ep));
            }
        }
        let mut catalog = Catalog::default();
        for mw in workers {
            let Some(mut model) = Model::from_worker(mw) else {
                continue;
            };
            let id = model.id();
            model.endpoints = addrs.remove(&id).unwrap_or_default();
            let names = std::iter::once(model.name.clone()).chain(model.served_names.clone());
            for name in names {
                catalog.claims.entry(name).or_default().insert(id.clone());
            }
            catalog.models.insert(id, Arc::new(model));
        }
        catalog
    }

    /// The ModelWorker `model` names.
    pub fn resolve(&self, model: &str) -> Result<Arc<Model>, ResolveError> {
        if let Some(m) = self.models.get(model) {
            return Ok(m.clone());
        }
        match self.claims.get(model) {
            Some(ids) if ids.len() == 1 => ids
                .iter()
                .next()
                .and_then(|id| self.models.get(id))
                .cloned()
                .ok_or_else(|| ResolveError::NotFound(model.to_owned())),
            Some(ids) => Err(ResolveError::Conflict {
                name: model.to_owned(),
                claimants: ids.iter().cloned().collect(),
            }),
            None => Err(ResolveError::NotFound(model.to_owned())),
        }
    }

    /// Every ModelWorker, by id.
    pub fn models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }

    /// The name a client should send for `m`: its first served name, or
    /// its bare name, when that resolves to it alone; else its id.
    pub fn public_name(&self, m: &Model) -> String {
        let id = m.id();
        std::iter::once(&m.name)
            .chain(m.served_names.first())
            .rev()
            .find(|n| self.claims.get(*n).is_some_and(|ids| ids.len() == 1))
            .cloned()
            .unwrap_or(id)
    }

    /// Names claimed by more than one ModelWorker, with their claimants.
    pub fn conflicts(&self) -> BTreeMap<&str, Vec<&str>> {
        self.claims
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(name, ids)| (name.as_str(), ids.iter().map(String::as_str).collect()))
            .collect()
    }
}

/// The ready addresses of an Endpoints object, each with the port named
/// `http` of its subset (the worker Service's only port), else the first.
pub fn ready_addresses(ep: &Endpoints) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for subset in ep.subsets.iter().flatten() {
        let ports = subset.ports.as_deref().unwrap_or_default();
        let Some(port) = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("http"))
            .or_else(|| ports.first())
            .and_then(|p| u16::try_from(p.port).ok())
        else {
            continue;
        };
        for addr in subset.addresses.iter().flatten() {
            if let Ok(ip) = addr.ip.parse::<IpAddr>() {
                out.push(SocketAddr::new(ip, port));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset};

    fn worker(ns: &str, name: &str, aliases: &[&str]) -> Arc<ModelWorker> {
        let mut mw: ModelWorker = serde_json::from_value(serde_json::json!({
            "apiVersion": "llorch.dev/v1alpha1", "kind": "ModelWorker",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"model": {"uri": "hf://o/r/m.gguf"}, "servedModelNames": aliases},
        }))
        .expect("a valid ModelWorker");
        mw.status = None;
        Arc::new(mw)
    }

    fn endpoints(ns: &str, name: &str, ips: &[&str], not_ready: &[&str]) -> Arc<Endpoints> {
        let addr = |ip: &&str| EndpointAddress {
            ip: (*ip).to_owned(),
            ..EndpointAddress::default()
        };
        Arc::new(Endpoints {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(ips.iter().map(addr).collect()),
                not_ready_addresses: Some(not_ready.iter().map(addr).collect()),
                ports: Some(vec![EndpointPort {
                    name: Some("http".into()),
                    port: 8080,
                    ..EndpointPort::default()
                }]),
            }]),
        })
    }

    #[test]
    fn names_aliases_and_ids_resolve() {
        let c = Catalog::build(
            &[
                worker("a", "gemma", &["google/gemma-3-270m"]),
                worker("b", "llama", &[]),
            ],
            &[endpoints(
                "a",
                "gemma",
                &["10.0.0.2", "10.0.0.1"],
                &["10.0.0.3"],
            )],
        );
        let g = c.resolve("gemma").expect("bare name");
        assert_eq!(g.id(), "a/gemma");
        assert_eq!(
            g.endpoints,
            vec![
                "10.0.0.1:8080".parse().expect("addr"),
                "10.0.0.2:8080".parse().expect("addr")
            ],
            "ready addresses only, sorted"
        );
        assert_eq!(
            c.resolve("google/gemma-3-270m").expect("alias").id(),
            "a/gemma"
        );
        assert_eq!(c.resolve("b/llama").expect("id").id(), "b/llama");
        assert!(c.resolve("b/llama").expect("id").endpoints.is_empty());
        assert_eq!(
            c.resolve("mistral"),
            Err(ResolveError::NotFound("mistral".into()))
        );
        assert_eq!(c.public_name(&g), "google/gemma-3-270m");
    }

    #[test]
    fn a_name_claimed_twice_resolves_to_neither_but_ids_still_do() {
        let c = Catalog::build(
            &[
                worker("a", "gemma", &["chat"]),
                worker("b", "gemma", &[]),
                worker("b", "llama", &["chat"]),
            ],
            &[],
        );
        for name in ["gemma", "chat"] {
            match c.resolve(name) {
                Err(ResolveError::Conflict { claimants, .. }) => assert_eq!(claimants.len(), 2),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(c.resolve("a/gemma").expect("id").id(), "a/gemma");
        assert_eq!(c.resolve("b/gemma").expect("id").id(), "b/gemma");
        let llama = c.resolve("llama").expect("unique");
        assert_eq!(c.public_name(&llama), "llama");
        let a = c.resolve("a/gemma").expect("id");
        assert_eq!(c.public_name(&a), "a/gemma");
        assert_eq!(c.conflicts().get("chat"), Some(&vec!["a/gemma", "b/llama"]));
    }
}
