//! `llorch-operator run`: the HTTP side (reports, health, metrics) on every
//! replica, and the controller on the one that holds the Lease.

use crate::{ChildArgs, PolicyArgs};
use anyhow::Context as _;
use k8s_openapi::api::core::v1::Service;
use llorch_operator::{controller, leader, metrics::Metrics, report};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Watch this namespace (repeatable or comma-separated; namespaced RBAC
    /// is enough); all namespaces when none is given.
    #[arg(long = "namespace", env = "LLORCH_NAMESPACE", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "LLORCH_METRICS_ADDR", default_value = ":8080", value_parser = parse_addr)]
    metrics_addr: SocketAddr,
    /// Address of `POST /v1/workers/report`.
    #[arg(long, env = "LLORCH_REPORT_ADDR", default_value = ":8081", value_parser = parse_addr)]
    report_addr: SocketAddr,
    /// Elect one active replica on a Lease (`--leader-elect=false` for a
    /// single replica without one).
    #[arg(long, env = "LLORCH_LEADER_ELECT", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// Namespace of the operator: the Lease and its Service live there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "llorch-system")]
    operator_namespace: String,
    /// Name of the operator's Service, whose ClusterIP becomes the report
    /// URL when `--report-url` is unset.
    #[arg(long, env = "LLORCH_SERVICE_NAME", default_value = "llorch-operator")]
    service_name: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LLORCH_LEASE_NAME", default_value = "llorch-operator")]
    lease_name: String,
    /// Log format: text or json.
    #[arg(long, env = "LLORCH_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Longest wait, in seconds, between start-up calls the API server did
    /// not answer (discovery, the operator's Service): they are retried
    /// until it answers, never guessed.
    #[arg(long, env = "LLORCH_API_RETRY_MAX", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=300))]
    api_retry_max: u64,
    /// How often ModelWorkers with spec.autoscaling are looked at.
    #[arg(long, env = "LLORCH_AUTOSCALE_INTERVAL", default_value = "5s", value_parser = crate::gateway_cmd::positive_duration)]
    autoscale_interval: Duration,
    /// The span the autoscaler averages load over.
    #[arg(long, env = "LLORCH_AUTOSCALE_WINDOW", default_value = "60s", value_parser = crate::gateway_cmd::positive_duration)]
    autoscale_window: Duration,
    #[command(flatten)]
    children: ChildArgs,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// `HOST:PORT`, or `:PORT` for every interface.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let full = match s.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => s.to_owned(),
    };
    full.parse()
        .map_err(|e| format!("{s:?} is not HOST:PORT or :PORT: {e}"))
}

/// The URL workers report to: the ClusterIP of the operator's Service and
/// its `report` port (or 8081), so it works without cluster DNS; the DNS
/// name when there is no such Service. The URL is in every worker's pod
/// template, so a different answer rolls every worker: the Service is read
/// until the API server answers, never guessed from a failure.
async fn report_url(client: &kube::Client, ns: &str, name: &str, retry_max: Duration) -> String {
    let api: kube::Api<Service> = kube::Api::namespaced(client.clone(), ns);
    let read = llorch_operator::startup::until_answered(
        "reading the operator's Service",
        retry_max,
        || api.get_opt(name),
    )
    .await;
    let found = read.and_then(|svc| {
        let spec = svc.spec?;
        let ip = spec
            .cluster_ip
            .filter(|ip| !ip.is_empty() && ip != "None")?;
        let port = spec
            .ports
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.as_deref() == Some("report"))
            .map(|p| p.port)
            .unwrap_or(8081);
        Some(format!("http://{ip}:{port}/v1/workers/report"))
    });
    match found {
        Some(url) => url,
        None => {
            let url = format!("http://{name}.{ns}.svc:8081/v1/workers/report");
            tracing::warn!(service = %format!("{ns}/{name}"), %url,
                "the operator's Service has no ClusterIP; workers report to its DNS name");
            url
        }
    }
}

pub(crate) fn init_logs(format: &str) {
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
pub(crate) async fn terminated() {
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
    let policy = args.policy.policy()?;
    if !policy.allowed_host_paths.is_empty() {
        tracing::info!(dirs = ?policy.allowed_host_paths, "file:// models allowed under these node directories");
    }
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

    let reports = report::router(report::ReportState::new(client.clone()));
    let ops = llorch_operator::metrics::router(metrics.clone(), ready.clone());
    // The servers outlive the controller (standbys serve reports), and
    // stop after it, whether on a signal or on a lost lease.
    let (server_stop, server_stopped) = watch::channel(false);
    let mut servers = Vec::new();
    for (addr, app, what) in [
        (args.report_addr, reports, "reports"),
        (args.metrics_addr, ops, "metrics and health"),
    ] {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ({what})"))?;
        tracing::info!(%addr, "serving {what}");
        servers.push(tokio::spawn(
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(stopped(server_stopped.clone()))
            .into_future(),
        ));
    }
    // Standby replicas take reports too.
    ready.store(true, Ordering::Relaxed);

    let retry_max = Duration::from_secs(args.api_retry_max);
    let startup = async {
        let url = match &args.children.report_url {
            Some(u) => u.clone(),
            None => {
                report_url(
                    &client,
                    &args.operator_namespace,
                    &args.service_name,
                    retry_max,
                )
                .await
            }
        };
        tracing::info!(report_url = %url, "workers report here");
        let cfg = controller::Config {
            build: args.children.config(&url),
            namespaces: args.namespaces.clone(),
            policy,
            api_retry_max: retry_max,
            autoscale_interval: args.autoscale_interval.max(Duration::from_millis(100)),
            autoscale_window: args.autoscale_window,
        };
        controller::Context::new(client.clone(), cfg, metrics)
            .await
            .context("cannot start the controller")
    };
    // A signal while the API server does not answer ends the wait.
    let ctx = tokio::select! {
        ctx = startup => Some(ctx?),
        () = stopped(stop_rx.clone()) => None,
    };
    let Some(ctx) = ctx else {
        tracing::info!("stopped before the controller started");
        ready.store(false, Ordering::Relaxed);
        server_stop.send(true).ok();
        return Ok(());
    };

    let mut lost = None;
    if !args.leader_elect {
        tracing::info!("controller started (no leader election)");
        controller::run(ctx, stopped(stop_rx.clone())).await;
    } else {
        let me = identity();
        let elector = Arc::new(leader::Elector::new(
            client,
            &args.operator_namespace,
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
                    tracing::error!(error = %e, "leadership lost: reconciling stops");
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
    server_stop.send(true).ok();
    for server in servers {
        server
            .await
            .context("an HTTP server panicked")?
            .context("an HTTP server failed")?;
    }
    match lost {
        Some(e) => Err(anyhow::Error::new(e).context("stopped leading")),
        None => {
            tracing::info!("controller stopped");
            Ok(())
        }
    }
}
