//! `llorch-worker serve`: the HTTP/SSE server.
//!
//! Server first: the listener is bound and answering (`/health` says
//! `loading`, `/ready` 503) before the model loads; then the model loads on
//! a blocking thread, the scheduler thread starts, the worker turns ready
//! and reports to the operator. A model that fails to load is reported and
//! the process exits 1. SIGTERM (or Ctrl-C): `/ready` turns 503 at once;
//! requests are still taken for `--drain-delay` seconds, then new ones get
//! 503; streams in flight finish until the grace period ends, then get a
//! retriable `CANCELLED`; a second signal cuts the waits short; the
//! process exits 0.

use crate::local_engine::LocalEngine;
use crate::runtime::{self, WithModel};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use worker_common::{ModelFacts, ReportError, ReportStatus, WorkerReport};
use worker_compute::Backend;
use worker_http::{AppState, EngineFacts, GpuFacts, ServerConfig};
use worker_models::Scheduler;

/// `serve`'s flags, shared with the operator that writes them into pods.
pub type Args = worker_args::ServeFlags;

fn read_secret(path: &Path) -> Result<String> {
    let s =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(s.trim().to_string())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "llorch-worker".to_string())
}

/// Resident memory of this process.
fn rss_bytes() -> u64 {
    // VmRSS is in kB whatever the page size (arm64 kernels may use 64 KiB).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Model facts from the file, with the sha256 from a `model.json` beside it.
fn model_facts(path: &Path) -> Option<ModelFacts> {
    let file = worker_gguf::GgufFile::open(path).ok()?;
    let mut facts = worker_gguf::model_facts(&file, path).ok()?;
    let json = path.with_file_name("model.json");
    if let Ok(text) = std::fs::read_to_string(json)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
    {
        facts.sha256 = v.get("sha256").and_then(|s| s.as_str()).map(str::to_string);
    }
    Some(facts)
}

pub fn run(args: &Args) -> Result<()> {
    crate::logging::init(args.log_format());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve(args.clone()))
}

async fn serve(args: Args) -> Result<()> {
    let worker_id = args
        .worker_id
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(hostname);
    let api_key = read_api_key(&args)?;
    let report_token = read_callback_token(&args)?;
    let listener = tokio::net::TcpListener::bind((args.host(), args.port()))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host(), args.port()))?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, worker_id, "listening");
    println!("listening on {local}");
    let me = Reporter {
        args: &args,
        worker_id: worker_id.clone(),
        uri: advertise_url(&args, local),
    };

    let state = AppState::new(ServerConfig {
        parallel: args.parallel().max(1),
        queue_depth: args.queue_depth(),
        api_key,
        body_limit: args.max_body_bytes(),
        worker_id,
        stall_timeout: args.stall_timeout(),
    });
    let (stop_tx, server) = start_server(listener, &state, args.header_timeout());

    let start = Instant::now();
    let load_args = args.clone();
    // A panic while loading is a failed load like any other: it is
    // reported, and the process exits 1.
    let loaded = tokio::task::spawn_blocking(move || load(&load_args))
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("loading the model panicked: {e}")));
    let load_seconds = start.elapsed().as_secs_f64();
    let engine = match loaded {
        Ok(engine) => engine,
        Err(e) => {
            me.report_load_failure(&e, load_seconds, &report_token)
                .await;
            std::process::exit(1);
        }
    };
    go_ready(&state, engine, &me, load_seconds, &report_token);

    let mut signals = Signals::new();
    signals.next().await;
    shut_down(
        &state,
        &mut signals,
        Duration::from_secs(args.drain_delay()),
        Duration::from_secs(args.shutdown_grace()),
    )
    .await;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    tracing::info!("stopped");
    Ok(())
}

/// The API key from `--api-key-file`, if given; an empty one is refused.
fn read_api_key(args: &Args) -> Result<Option<String>> {
    let api_key = args.api_key_file.as_deref().map(read_secret).transpose()?;
    if let (Some(key), Some(path)) = (&api_key, &args.api_key_file)
        && key.is_empty()
    {
        // An empty key would let every request in: refuse to serve open
        // when a key was asked for.
        anyhow::bail!(
            "the API key file {} is empty: put the key in it, or leave out --api-key-file to serve without one",
            path.display()
        );
    }
    Ok(api_key)
}

/// The token of the reports to the operator, from
/// `--callback-token-file` if given; an empty one is refused.
fn read_callback_token(args: &Args) -> Result<crate::report::Token> {
    let callback_token = args
        .callback_token_file
        .as_deref()
        .map(read_secret)
        .transpose()?;
    if let (Some(token), Some(path)) = (&callback_token, &args.callback_token_file)
        && token.is_empty()
    {
        // The operator would refuse every report.
        anyhow::bail!(
            "the callback token file {} is empty: it must hold the ModelWorker's report token",
            path.display()
        );
    }
    Ok(crate::report::Token {
        file: args.callback_token_file.clone(),
        value: callback_token,
    })
}

/// The URL the worker reports for itself: `--advertise-url`, else the
/// pod's address, else the listener's.
fn advertise_url(args: &Args, local: std::net::SocketAddr) -> String {
    args.advertise_url.clone().unwrap_or_else(|| {
        // Through SocketAddr, so an IPv6 pod address gets its brackets.
        let pod = std::env::var("POD_IP")
            .ok()
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
        match pod {
            Some(ip) => format!("http://{}", std::net::SocketAddr::new(ip, local.port())),
            None => format!("http://{local}"),
        }
    })
}

/// Serves `state`'s routes on `listener` until the returned sender fires.
fn start_server(
    listener: tokio::net::TcpListener,
    state: &Arc<AppState>,
    header_timeout: Duration,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = worker_http::app(state.clone());
    let server = tokio::spawn(crate::listen::serve(listener, app, header_timeout, stop_rx));
    (stop_tx, server)
}

/// Turns the worker ready with the loaded engine and reports so to the
/// operator, in the background.
fn go_ready(
    state: &AppState,
    engine: Loaded,
    me: &Reporter<'_>,
    load_seconds: f64,
    token: &crate::report::Token,
) {
    let facts = engine.facts_snapshot();
    let ready_report = {
        let mut r = me.report(ReportStatus::Ready, facts.memory_bytes, load_seconds, None);
        r.backend = facts.backend.clone();
        r.device = facts.device.clone();
        r.memory_architecture = facts.memory_architecture.clone();
        r
    };
    state.set_ready(Arc::new(engine.into_engine(facts)));
    tracing::info!(load_seconds, "ready");
    if let Some(url) = me.args.callback_url.clone() {
        let report = ready_report;
        let token = token.clone();
        // Until the operator takes it (it may be rolling out): without it
        // the ModelWorker never shows the model as available.
        tokio::spawn(async move {
            crate::report::send(&url, &token, &report, None).await;
        });
    }
}

/// What this worker's reports to the operator say about it.
struct Reporter<'a> {
    args: &'a Args,
    worker_id: String,
    /// Where it serves.
    uri: String,
}

impl Reporter<'_> {
    /// A report of `status`, with the model's facts as its file gives
    /// them now and the backend the flags ask for.
    fn report(
        &self,
        status: ReportStatus,
        memory_bytes: u64,
        load_seconds: f64,
        error: Option<ReportError>,
    ) -> WorkerReport {
        let args = self.args;
        WorkerReport {
            worker_id: self.worker_id.clone(),
            status,
            uri: self.uri.clone(),
            model_ref: args.model_ref.clone(),
            model: model_facts(&args.model),
            backend: args.device().backend_name().into(),
            device: args.device().to_string(),
            memory_bytes,
            memory_architecture: args.device().memory_architecture().into(),
            load_seconds,
            capabilities: vec!["text-gen".into(), "sse".into(), "openai".into()],
            error,
            namespace: std::env::var("POD_NAMESPACE").ok(),
            model_worker: std::env::var("LLORCH_MODEL_WORKER").ok(),
            pod: std::env::var("POD_NAME").ok(),
        }
    }

    /// Logs a failed load and, with a callback URL, reports it (trying for
    /// up to two minutes).
    async fn report_load_failure(
        &self,
        e: &anyhow::Error,
        load_seconds: f64,
        token: &crate::report::Token,
    ) {
        let args = self.args;
        tracing::error!(model = %args.model.display(), error = format!("{e:#}"), "model failed to load");
        if let Some(url) = &args.callback_url {
            let code = runtime::load_error_code(e);
            let err = ReportError {
                code,
                message: format!("{e:#}"),
            };
            let report = self.report(ReportStatus::Failed, rss_bytes(), load_seconds, Some(err));
            crate::report::send(url, token, &report, Some(Duration::from_secs(120))).await;
        }
    }
}

/// After the first SIGTERM: unready at once; requests still taken for
/// `drain_delay` (the Service's endpoints take a moment to drop the pod, and
/// a request routed here meanwhile should be served, not refused); then
/// new requests are refused and open streams run until `grace` after the
/// signal, when they end with a retriable `CANCELLED`. A second signal
/// skips the waits.
async fn shut_down(
    state: &worker_http::AppState,
    signals: &mut Signals,
    drain_delay: Duration,
    grace: Duration,
) {
    let start = Instant::now();
    let deadline = start + grace;
    state.start_leaving();
    tracing::info!(
        drain_delay_s = drain_delay.as_secs(),
        grace_s = grace.as_secs(),
        "shutting down: unready"
    );
    let mut hurry = tokio::select! {
        _ = tokio::time::sleep_until((start + drain_delay.min(grace)).into()) => false,
        _ = signals.next() => true,
    };
    state.start_draining();
    if !hurry {
        tracing::info!(streams = state.in_flight(), "draining");
        let idle = async {
            while state.in_flight() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        hurry = tokio::select! {
            _ = idle => false,
            _ = signals.next() => true,
        };
    }
    if state.in_flight() > 0 {
        tracing::warn!(
            streams = state.in_flight(),
            cause = if hurry {
                "second signal"
            } else {
                "grace period over"
            },
            "cancelling open streams"
        );
    }
    // Also when none is open: a request that passed the ready check just
    // before draining began may register its stream after this, and must
    // then end at once with a retriable `CANCELLED`.
    state.abort_streams();
    let flush = Instant::now() + Duration::from_secs(2);
    while state.in_flight() > 0 && Instant::now() < flush {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from creation on, so a
/// second signal is never lost between two waits.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let (Some(term), Some(int)) = (self.term.as_mut(), self.int.as_mut()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A loaded model with its scheduler running on its own thread.
struct Loaded {
    jobs: std::sync::mpsc::Sender<worker_models::Job>,
    tokenizer: Arc<worker_tokenizer::Tokenizer>,
    facts: EngineFacts,
    /// What a device backend holds; `None` on the CPU.
    device_bytes: Option<u64>,
}

impl Loaded {
    /// The facts, with the memory held: device memory on a GPU, else the
    /// process's resident memory.
    fn facts_snapshot(&self) -> EngineFacts {
        EngineFacts {
            memory_bytes: self.device_bytes.unwrap_or_else(rss_bytes),
            ..self.facts.clone()
        }
    }

    fn into_engine(self, facts: EngineFacts) -> LocalEngine {
        LocalEngine::new(self.jobs, self.tokenizer, facts)
    }
}

fn load(args: &Args) -> Result<Loaded> {
    let opts = runtime::LoadOptions {
        path: &args.model,
        device: args.device(),
        threads: args.threads(),
        ctx_size: args.ctx_size,
        n_seq: args.parallel().max(1),
        kv_type: runtime::kv_type(args.kv_type()),
        rope: runtime::rope_overrides(&args.rope),
    };
    runtime::load_with(&opts, Start(args))
}

/// Starts the scheduler on the loaded model.
struct Start<'a>(&'a Args);

impl WithModel for Start<'_> {
    type Output = Loaded;
    fn run<B: Backend + 'static>(self, rt: runtime::Loaded<B>) -> Result<Loaded> {
        start(self.0, rt)
    }
}

fn start<B: Backend + 'static>(args: &Args, rt: runtime::Loaded<B>) -> Result<Loaded> {
    let file = rt.model.file().clone();
    let info = rt.model.backend_info();
    let facts = EngineFacts {
        model: model_facts(&args.model)
            .map_or_else(|| worker_gguf::file_stem(&args.model), |f| f.name),
        architecture: rt.model.config().arch.name().to_string(),
        quantization: worker_gguf::quantization(&file)?,
        tokenizer_kind: rt.tokenizer.kind().to_string(),
        vocab_size: rt.tokenizer.vocab_size(),
        context_length: rt.n_ctx,
        backend: info.kind.as_str().to_string(),
        device: info.device,
        memory_bytes: 0,
        memory_architecture: info.memory_architecture.to_string(),
        gpu: info.gpu.map(|g| GpuFacts {
            name: g.name,
            compute_capability: g.compute_capability,
            vram_total_bytes: g.vram_total_bytes,
        }),
    };
    let backend = rt.model.backend().clone();
    let tokenizer = Arc::new(rt.tokenizer);
    let scheduler = Scheduler::new(
        rt.model,
        tokenizer.clone(),
        args.parallel(),
        rt.n_ctx,
        runtime::kv_type(args.kv_type()),
        512,
    )?;
    // Weights, KV cache and buffers are all allocated by now.
    let device_bytes = backend.allocated_bytes();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("llorch-engine".into())
        .spawn(move || {
            // Without its engine the worker would look healthy and fail
            // every request: a panic there ends the process, so Kubernetes
            // restarts the container.
            let run = std::panic::AssertUnwindSafe(|| scheduler.run(rx));
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!("the engine thread panicked; exiting");
                std::process::exit(1);
            }
        })?;
    Ok(Loaded {
        jobs: tx,
        tokenizer,
        facts,
        device_bytes,
    })
}
