//! `llorch-node`: a test node for the local cluster. **Not a kubelet.**
//!
//! It registers a Node (with `nvidia.com/gpu` capacity, though it has no
//! GPU), keeps its Lease and Ready heartbeat fresh, and runs every pod the
//! real scheduler binds to it as local processes: one network namespace and
//! address per pod on the cluster bridge, volumes as host directories bind
//! mounted in a private mount namespace per container, images mapped to
//! binaries built from the checkout, init containers in order, restarts with
//! back-off, httpGet/tcpSocket/exec probes, pod status, and graceful
//! deletion. What it does not do: pull images, isolate processes beyond
//! namespaces (containers run as root on the host's file system, and
//! `runAsUser`, `readOnlyRootFilesystem` and resource limits are not
//! enforced), serve the kubelet API (`kubectl logs`/`exec` do not work:
//! container logs are files under `STATE_DIR/pods/NS_POD_UID/logs/`), or
//! provision storage (a `persistentVolumeClaim` is a plain directory).
//!
//! Modules: `config` (flags, image map), `node` (registration, heartbeat),
//! `net` (namespaces, veths, addresses), `volumes`, `env`, `container`
//! (processes), `probe`, `pod` (one pod's life).

mod config;
mod container;
mod env;
mod net;
mod node;
mod pod;
mod probe;
mod volumes;

use anyhow::{Context, Result};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What every pod task shares.
pub struct Ctx {
    pub client: Client,
    pub args: config::Args,
    pub pool: net::IpPool,
    /// Mount points this node added to the host, removed at shutdown.
    created: Mutex<BTreeSet<PathBuf>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("node", &self.args.name)
            .finish()
    }
}

impl Ctx {
    pub fn remember_created(&self, paths: Vec<PathBuf>) {
        if let Ok(mut c) = self.created.lock() {
            c.extend(paths);
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = config::Args::parse();
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("cannot read {}", args.kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    net::delete_stale(&args.state_dir);
    std::fs::create_dir_all(args.state_dir.join("pods"))
        .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
    node::register(&client, &args).await?;
    tracing::info!(node = %args.name, gpus = args.gpus, "node registered");
    tokio::spawn(node::heartbeat(client.clone(), args.name.clone()));

    let ctx = Arc::new(Ctx {
        pool: net::IpPool::new(args.host_ip, args.first_pod_ip, args.last_pod_ip),
        client: client.clone(),
        created: Mutex::new(BTreeSet::new()),
        args,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut pods: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.args.name));
    let mut events = watcher(api, cfg).default_backoff().boxed();
    // UIDs listed since the last (re)list began: a pod that is not among
    // them when the list ends was deleted while the watch was down.
    let mut listed: Option<BTreeSet<String>> = None;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            ev = events.next() => match ev {
                None => break,
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch error; retrying"),
                Some(Ok(watcher::Event::Init)) => listed = Some(BTreeSet::new()),
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(seen) = listed.take() {
                        pods.retain(|uid, tx| {
                            let keep = seen.contains(uid);
                            if !keep {
                                let _ = tx.send(None);
                            }
                            keep
                        });
                    }
                }
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    if let Some(seen) = listed.as_mut() {
                        seen.insert(uid.clone());
                    }
                    match pods.get(&uid) {
                        Some(tx) => { let _ = tx.send(Some(p)); }
                        None => {
                            let (tx, rx) = watch::channel(Some(p));
                            pods.insert(uid, tx);
                            tasks.spawn(pod::run(ctx.clone(), rx, stop_rx.clone()));
                        }
                    }
                }
                Some(Ok(watcher::Event::Delete(p))) => {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    if let Some(tx) = pods.remove(&uid) {
                        let _ = tx.send(None);
                    }
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
        pods.retain(|_, tx| !tx.is_closed());
    }
    tracing::info!("stopping: killing pods' processes, removing their namespaces");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    net::delete_stale(&ctx.args.state_dir);
    let created = ctx.created.lock().map(|c| c.clone()).unwrap_or_default();
    for p in created.iter().rev() {
        let _ = std::fs::remove_dir(p).or_else(|_| std::fs::remove_file(p));
    }
    Ok(())
}
