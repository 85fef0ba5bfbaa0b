//! `llorch-operator run`: the HTTP side (reports, health, metrics) on every
//! replica, and the controller on the one that holds the Lease.

use crate::ChildArgs;
use anyhow::Context as _;
use llorch_operator::{controller, leader, metrics::Metrics, report};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Watch only this namespace (namespaced RBAC is enough); all when unset.
    #[arg(long, env = "LLORCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the report endpoint, `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "LLORCH_LISTEN", default_value = "0.0.0.0:8081")]
    listen: std::net::SocketAddr,
    /// Run the controller without taking the Lease (one replica only).
    #[arg(long, env = "LLORCH_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LLORCH_LEASE_NAME", default_value = "llorch-operator")]
    lease_name: String,
    /// Log format: text or json.
    #[arg(long, env = "LLORCH_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(flatten)]
    children: ChildArgs,
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// This process's name in the Lease: the pod name, else host and pid.
fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "llorch-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn terminated() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logs(&args.log_format);
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot configure a Kubernetes client (KUBECONFIG or in-cluster)")?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));

    // One signal fans out to the HTTP server, the election and the loop.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        terminated().await;
        tracing::info!("termination requested");
        stop_tx.send(true).ok();
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        rx.wait_for(|s| *s).await.ok();
    };

    let app = report::router(report::ReportState::new(
        client.clone(),
        ready.clone(),
        metrics.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %args.listen, "report endpoint listening");
    // The server outlives the controller (standbys serve reports), and
    // stops after it, whether on a signal or on a lost lease.
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                server_stopped.await.ok();
            })
            .into_future(),
    );
    // Standby replicas take reports too.
    ready.store(true, Ordering::Relaxed);

    let cfg = controller::Config {
        build: args.children.config(),
        namespace: args.namespace,
    };
    let ctx = controller::Context::new(client.clone(), cfg, metrics)
        .await
        .context("cannot start the controller")?;

    let mut lost = None;
    if args.no_leader_election {
        tracing::info!("controller started (no leader election)");
        controller::run(ctx, stopped(stop_rx.clone())).await;
    } else {
        let me = identity();
        let elector = Arc::new(leader::Elector::new(
            client,
            &args.lease_namespace,
            &args.lease_name,
            &me,
        ));
        tracing::info!(identity = %me, lease = %args.lease_name, "waiting for the lease");
        let acquired = tokio::select! {
            r = elector.acquire() => Some(r),
            () = stopped(stop_rx.clone()) => None,
        };
        if let Some(r) = acquired {
            r.context("leader election failed")?;
            tracing::info!(identity = %me, "leading: controller started");
            let (lost_tx, lost_rx) = watch::channel(false);
            let keeper = {
                let elector = elector.clone();
                tokio::spawn(async move {
                    let e = elector.keep().await;
                    lost_tx.send(true).ok();
                    e
                })
            };
            let mut stop = stop_rx.clone();
            let mut lost_watch = lost_rx.clone();
            let shutdown = async move {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {},
                    _ = lost_watch.wait_for(|l| *l) => {},
                }
            };
            controller::run(ctx, shutdown).await;
            if *lost_rx.borrow() {
                lost = Some(keeper.await.context("the lease keeper panicked")?);
            } else {
                keeper.abort();
                elector.release().await;
            }
        }
    }
    ready.store(false, Ordering::Relaxed);
    server_stop.send(()).ok();
    server
        .await
        .context("the report server panicked")?
        .context("the report server failed")?;
    match lost {
        Some(e) => Err(anyhow::Error::new(e).context("stopped leading")),
        None => {
            tracing::info!("controller stopped");
            Ok(())
        }
    }
}
