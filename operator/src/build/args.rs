//! The command lines of the worker's two containers: `fetch` in the init
//! container and `serve` in the worker, as the operator derives them from
//! the spec, and the flags `extraArgs` may not repeat.

use super::{API_KEY_DIR, BuildConfig, DRAIN_DELAY, MODEL_DIR, SHUTDOWN_GRACE, TOKEN_DIR, port};
use llorch_api::ModelWorker;

pub(super) fn worker_args(mw: &ModelWorker, cfg: &BuildConfig) -> Vec<String> {
    let mut args = operator_args(mw, cfg);
    args.extend(mw.spec.extra_args.iter().cloned());
    args
}

/// Every flag the operator may pass to the worker, for any spec:
/// `extraArgs` may not repeat one (the worker would refuse the second and
/// the pod would crash-loop), so they are refused up front.
pub fn managed_flags(mw: &ModelWorker) -> std::collections::BTreeSet<String> {
    // A spec that sets every optional setting the operator turns into a flag.
    let mut full = mw.clone();
    let server = &mut full.spec.server;
    server.context_size = Some(server.context_size.unwrap_or(1));
    server.parallel = Some(server.parallel.unwrap_or(1));
    server.queue_depth = Some(server.queue_depth.unwrap_or(1));
    if server.api_key_secret_ref.is_none() {
        server.api_key_secret_ref = Some(llorch_api::SecretKeySelector {
            name: "k".into(),
            key: "k".into(),
        });
    }
    let cfg = BuildConfig {
        worker_image: String::new(),
        worker_cpu_image: String::new(),
        report_url: String::new(),
    };
    operator_args(&full, &cfg)
        .into_iter()
        .filter(|a| a.starts_with("--"))
        .collect()
}

/// The worker's arguments the operator sets itself (without `extraArgs`).
fn operator_args(mw: &ModelWorker, cfg: &BuildConfig) -> Vec<String> {
    let s = &mw.spec;
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--model".into(),
        format!("{MODEL_DIR}/model.gguf"),
        "--port".into(),
        port(mw).to_string(),
        "--model-ref".into(),
        s.model.uri.clone(),
        "--callback-url".into(),
        cfg.report_url.clone(),
        "--callback-token-file".into(),
        format!("{TOKEN_DIR}/token"),
        "--shutdown-grace".into(),
        SHUTDOWN_GRACE.to_string(),
        "--drain-delay".into(),
        DRAIN_DELAY.to_string(),
        "--log-format".into(),
        "json".into(),
    ];
    if let Some(v) = s.server.context_size {
        args.extend(["--ctx-size".into(), v.to_string()]);
    }
    if let Some(v) = s.server.parallel {
        args.extend(["--parallel".into(), v.to_string()]);
    }
    if let Some(v) = s.server.queue_depth {
        args.extend(["--queue-depth".into(), v.to_string()]);
    }
    if s.server.api_key_secret_ref.is_some() {
        args.extend(["--api-key-file".into(), format!("{API_KEY_DIR}/key")]);
    }
    args
}

pub(super) fn fetch_args(mw: &ModelWorker) -> Vec<String> {
    let s = &mw.spec;
    let mut args: Vec<String> = vec![
        "fetch".into(),
        "--uri".into(),
        s.model.uri.clone(),
        "--dest".into(),
        MODEL_DIR.into(),
    ];
    if let Some(sha) = &s.model.sha256 {
        args.extend(["--sha256".into(), sha.clone()]);
    }
    if let Some(mem) = &s.gpu.memory {
        args.extend(["--gpu-memory".into(), mem.0.clone()]);
    }
    if let Some(ctx) = s.server.context_size {
        args.extend(["--ctx-size".into(), ctx.to_string()]);
    }
    if let Some(n) = s.server.parallel {
        args.extend(["--parallel".into(), n.to_string()]);
    }
    args
}
