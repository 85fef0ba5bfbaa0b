//! The gateway's view of the cluster: watches of ModelWorkers and of their
//! Services' Endpoints feed the catalog (never a call per request); the
//! key Secret is read on a period; each replica's `/metrics` is scraped on
//! a period; scale-ups from zero go through the scale subresource.

use super::balance::Figures;
use super::catalog::Catalog;
use super::keys::{KEYS_FILE, Keys};
use super::{Cluster, Gateway, KeyState};
use crate::controller::scoped;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Secret};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use llorch_api::{ModelWorker, SecretKeySelector};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The cluster through the API server.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeCluster")
    }
}

impl KubeCluster {
    /// The cluster `client` reaches.
    pub fn new(client: Client) -> KubeCluster {
        KubeCluster { client }
    }
}

impl Cluster for KubeCluster {
    fn wake(&self, namespace: &str, name: &str) -> BoxFuture<'static, Result<(), String>> {
        let api: Api<ModelWorker> = Api::namespaced(self.client.clone(), namespace);
        let name = name.to_owned();
        async move {
            // Read, then replace at the same resourceVersion: only a
            // ModelWorker still at zero goes to one. A conflict (a status
            // write moved the resourceVersion) reads again.
            for _ in 0..3 {
                let mut scale = api.get_scale(&name).await.map_err(|e| e.to_string())?;
                let spec = scale.spec.get_or_insert_with(Default::default);
                if spec.replicas.unwrap_or(0) != 0 {
                    return Ok(());
                }
                spec.replicas = Some(1);
                match api
                    .replace_scale(&name, &PostParams::default(), &scale)
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err("the scale kept changing under the update (3 conflicts)".to_owned())
        }
        .boxed()
    }

    fn secret(
        &self,
        namespace: &str,
        key: &SecretKeySelector,
    ) -> BoxFuture<'static, Result<String, String>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let key = key.clone();
        let namespace = namespace.to_owned();
        async move {
            let secret = api
                .get_opt(&key.name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("Secret {namespace}/{} does not exist", key.name))?;
            secret_value(&secret, &key.key)
                .ok_or_else(|| format!("Secret {namespace}/{} has no key {:?}", key.name, key.key))
        }
        .boxed()
    }
}

/// The text of a Secret's key.
fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Watches ModelWorkers and their Endpoints in `namespaces` (all when
/// empty) and publishes a new catalog on every change; marks `gw` synced
/// once every watch has listed. Runs until the watches end.
pub async fn watch_catalog(
    client: Client,
    namespaces: Vec<String>,
    tx: watch::Sender<Arc<Catalog>>,
    gw: Arc<Gateway>,
) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let mut workers: Vec<Store<ModelWorker>> = Vec::new();
    let mut endpoints: Vec<Store<Endpoints>> = Vec::new();
    let mut streams = Vec::new();
    for ns in &scopes {
        let (store, writer) = reflector::store();
        workers.push(store);
        let s = watcher(
            scoped::<ModelWorker>(&client, ns.as_deref()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer)
        .map(|e| e.map(|_| ()));
        streams.push(s.boxed());
        let (store, writer) = reflector::store();
        endpoints.push(store);
        let s = watcher(
            scoped::<Endpoints>(&client, ns.as_deref()),
            watcher::Config::default().labels(crate::build::MANAGED_SELECTOR),
        )
        .default_backoff()
        .reflect(writer)
        .map(|e| e.map(|_| ()));
        streams.push(s.boxed());
    }
    let mut events = futures::stream::select_all(streams);
    while let Some(event) = events.next().await {
        if let Err(e) = event {
            tracing::warn!(error = %e, "a watch failed; it is retried");
            continue;
        }
        let all_listed = workers
            .iter()
            .map(|s| s.wait_until_ready().now_or_never().is_some())
            .chain(
                endpoints
                    .iter()
                    .map(|s| s.wait_until_ready().now_or_never().is_some()),
            )
            .all(|ready| ready);
        if !all_listed {
            continue;
        }
        let mws: Vec<Arc<ModelWorker>> = workers.iter().flat_map(Store::state).collect();
        let eps: Vec<Arc<Endpoints>> = endpoints.iter().flat_map(Store::state).collect();
        let catalog = Catalog::build(&mws, &eps);
        for (name, claimants) in catalog.conflicts() {
            tracing::debug!(%name, ?claimants, "a model name is claimed twice");
        }
        tx.send_replace(Arc::new(catalog));
        gw.set_synced();
    }
}

/// Reads the key list from Secret `namespace/name` every `every`.
pub async fn watch_keys(
    client: Client,
    namespace: String,
    name: String,
    gw: Arc<Gateway>,
    every: Duration,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let mut tick = tokio::time::interval(every);
    let mut last_error = None;
    loop {
        tick.tick().await;
        let state = match api.get_opt(&name).await {
            Ok(Some(secret)) => match secret_value(&secret, KEYS_FILE).map(|t| Keys::parse(&t)) {
                Some(Ok(keys)) => KeyState::Loaded(Arc::new(keys)),
                Some(Err(e)) => KeyState::Unreadable(e.to_string()),
                None => KeyState::Unreadable(format!(
                    "Secret {namespace}/{name} has no key {KEYS_FILE}"
                )),
            },
            Ok(None) => KeyState::Unreadable(format!("Secret {namespace}/{name} does not exist")),
            // Keep the list last read while the API server does not answer.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the key Secret; keeping the last list");
                continue;
            }
        };
        let error = match &state {
            KeyState::Unreadable(why) => Some(why.clone()),
            _ => None,
        };
        if error != last_error {
            match &error {
                Some(why) => tracing::error!(%why, "API keys unreadable: every request is refused"),
                None => tracing::info!(secret = %format!("{namespace}/{name}"), "API keys loaded"),
            }
            last_error = error;
        }
        gw.set_keys(state);
    }
}

/// Scrapes every known replica's `/metrics` every `every`.
pub async fn scrape_replicas(gw: Arc<Gateway>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let catalog = gw.catalog();
        let live: HashSet<std::net::SocketAddr> = catalog
            .models()
            .flat_map(|m| m.endpoints.iter().copied())
            .collect();
        gw.replicas.retain(&live);
        let scrapes = live.iter().map(|&addr| {
            let gw = gw.clone();
            async move {
                if let Some(text) = gw.upstream.metrics(addr, every).await
                    && let Some(figures) = parse_figures(&text)
                {
                    gw.replicas.get(addr).scraped(figures, Instant::now());
                }
            }
        });
        futures::future::join_all(scrapes).await;
    }
}

/// The balancing figures of a worker's `/metrics` text; `None` when it
/// lacks the two the gateway needs (in flight, queued) or holds a value no
/// worker reports (negative, not finite, beyond 10^12).
pub fn parse_figures(text: &str) -> Option<Figures> {
    let mut in_flight = None;
    let mut queued = None;
    let mut f = Figures::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        let wanted = matches!(
            name,
            "llorch_worker_requests_in_flight"
                | "llorch_worker_queue_depth"
                | "llorch_worker_slots"
                | "llorch_worker_queue_limit"
                | "llorch_worker_kv_cache_usage_ratio"
        );
        if !wanted {
            continue;
        }
        let v = value.trim().parse::<f64>().ok()?;
        if !v.is_finite() || !(0.0..=1e12).contains(&v) {
            return None;
        }
        let count = v as u64;
        match name {
            "llorch_worker_requests_in_flight" => in_flight = Some(count),
            "llorch_worker_queue_depth" => queued = Some(count),
            "llorch_worker_slots" => f.slots = Some(count),
            "llorch_worker_queue_limit" => f.queue_limit = Some(count),
            _ => f.kv_usage = v.min(1.0),
        }
    }
    f.in_flight = in_flight?;
    f.queued = queued?;
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_the_worker_gauges() {
        let text = "# HELP x y\nllorch_worker_requests_in_flight 3\nllorch_worker_queue_depth 2\nllorch_worker_slots 4\nllorch_worker_queue_limit 8\nllorch_worker_kv_cache_usage_ratio 0.5\nllorch_worker_requests_total{outcome=\"ok\"} 9\n";
        assert_eq!(
            parse_figures(text),
            Some(Figures {
                in_flight: 3,
                queued: 2,
                slots: Some(4),
                queue_limit: Some(8),
                kv_usage: 0.5
            })
        );
        assert_eq!(parse_figures("llorch_worker_queue_depth 1\n"), None);
        for hostile in ["+Inf", "NaN", "-1", "1e30"] {
            let text = format!(
                "llorch_worker_requests_in_flight {hostile}\nllorch_worker_queue_depth 0\n"
            );
            assert_eq!(parse_figures(&text), None, "{hostile}");
        }
    }
}
