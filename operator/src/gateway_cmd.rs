//! `llorch-operator gateway`: the OpenAI endpoint in front of every
//! ModelWorker (see `llorch_operator::gateway`).

use crate::run::{init_logs, parse_addr, terminated};
use anyhow::Context as _;
use llorch_operator::gateway::{self, Gateway, KeyState, catalog::Catalog, kube::KubeCluster};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub(crate) struct GatewayArgs {
    /// Route to ModelWorkers of this namespace (repeatable or
    /// comma-separated); all namespaces when none is given.
    #[arg(long = "namespace", env = "LLORCH_NAMESPACE", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Address of the OpenAI routes, `/v1/models`, probes and `/metrics`.
    #[arg(long, env = "LLORCH_GATEWAY_ADDR", default_value = ":8080", value_parser = parse_addr)]
    listen: SocketAddr,
    /// Secret (in the gateway's namespace) whose `keys.yaml` lists the API
    /// keys; unset: no key is required.
    #[arg(long, env = "LLORCH_API_KEYS_SECRET")]
    api_keys_secret: Option<String>,
    /// How often the key Secret is read again.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    api_keys_refresh: Duration,
    /// The gateway's namespace (the key Secret lives there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "llorch-system")]
    gateway_namespace: String,
    /// Route by prompt prefix (chat: the system and first user message;
    /// completions: the prompt's first --affinity-prefix-bytes), so a
    /// conversation finds its prompt cache; `=false`: the session header
    /// alone makes an affinity key.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    prefix_affinity: bool,
    /// Bytes of a completion prompt that make its affinity key.
    #[arg(long, default_value_t = 1024)]
    affinity_prefix_bytes: usize,
    /// A replica whose load would pass (1 + ε) × the mean is skipped for
    /// an affinity key.
    #[arg(long, default_value_t = 0.25)]
    balance_epsilon: f64,
    /// How often each replica's /metrics is read.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    scrape_interval: Duration,
    /// Replicas tried for one request (connect failures, 429, 503).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    max_attempts: u16,
    /// Longest a request waits for a model with no ready replica.
    #[arg(long, default_value = "15m", value_parser = positive_duration)]
    cold_start_timeout: Duration,
    /// Requests that may wait per model.
    #[arg(long, default_value_t = 256)]
    cold_queue: usize,
    /// Time between the SSE comments of a waiting stream.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    wait_comment_interval: Duration,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Connect timeout toward a worker.
    #[arg(long, default_value = "2s", value_parser = positive_duration)]
    connect_timeout: Duration,
    /// Log format: text or json.
    #[arg(long, env = "LLORCH_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// A duration with a unit (`500ms`, `10s`, `15m`), more than zero.
pub(crate) fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn run(args: GatewayArgs) -> anyhow::Result<()> {
    init_logs(&args.log_format);
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: GatewayArgs) -> anyhow::Result<()> {
    if !(0.0..=10.0).contains(&args.balance_epsilon) {
        anyhow::bail!("--balance-epsilon must be in 0..=10");
    }
    let client = kube::Client::try_default()
        .await
        .context("cannot configure a Kubernetes client (KUBECONFIG or in-cluster)")?;
    let cfg = gateway::Config {
        prefix_affinity: args.prefix_affinity,
        affinity_prefix_bytes: args.affinity_prefix_bytes,
        balance: gateway::balance::Policy {
            epsilon: args.balance_epsilon,
            stale_after: args.scrape_interval * 3,
        },
        max_attempts: usize::from(args.max_attempts),
        cold_start_timeout: args.cold_start_timeout,
        cold_queue: args.cold_queue,
        wait_comment_interval: args.wait_comment_interval,
        max_body_bytes: args.max_body_bytes,
        ..gateway::Config::default()
    };
    let keys = match &args.api_keys_secret {
        Some(name) => KeyState::Unreadable(format!("Secret {name} not read yet")),
        None => KeyState::Open,
    };
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(Catalog::default()));
    let gw = Arc::new(Gateway::new(
        cfg,
        rx,
        Arc::new(KubeCluster::new(client.clone())),
        keys,
        args.connect_timeout,
    ));
    tokio::spawn(gateway::kube::watch_catalog(
        client.clone(),
        args.namespaces.clone(),
        tx,
        gw.clone(),
    ));
    if let Some(name) = args.api_keys_secret.clone() {
        tokio::spawn(gateway::kube::watch_keys(
            client.clone(),
            args.gateway_namespace.clone(),
            name,
            gw.clone(),
            args.api_keys_refresh,
        ));
    }
    tokio::spawn(gateway::kube::scrape_replicas(
        gw.clone(),
        args.scrape_interval,
    ));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %args.listen, "gateway serving");
    axum::serve(listener, gateway::server::router(gw))
        .with_graceful_shutdown(terminated())
        .await
        .context("the gateway's server failed")
}
