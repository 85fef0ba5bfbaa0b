//! The command lines of the worker's two containers: `fetch` in the init
//! container and `serve` in the worker, as the operator derives them from
//! the spec, and the flags `extraArgs` may not repeat.

use super::{API_KEY_DIR, BuildConfig, DRAIN_DELAY, MODEL_DIR, SHUTDOWN_GRACE, TOKEN_DIR, port};
use llorch_api::ModelWorker;
use worker_args::{FetchFlags, ServeFlags};

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

/// A spec number as the worker's flag takes it (validation keeps it in
/// range).
fn unsigned<T: TryFrom<i32>>(v: Option<i32>) -> Option<T> {
    v.and_then(|v| T::try_from(v).ok())
}

/// The worker's arguments the operator sets itself (without `extraArgs`).
fn operator_args(mw: &ModelWorker, cfg: &BuildConfig) -> Vec<String> {
    let s = &mw.spec;
    ServeFlags {
        model: format!("{MODEL_DIR}/model.gguf").into(),
        port: unsigned(Some(port(mw))),
        model_ref: Some(s.model.uri.clone()),
        callback_url: Some(cfg.report_url.clone()),
        callback_token_file: Some(format!("{TOKEN_DIR}/token").into()),
        shutdown_grace: u64::try_from(SHUTDOWN_GRACE).ok(),
        drain_delay: u64::try_from(DRAIN_DELAY).ok(),
        log_format: Some("json".into()),
        ctx_size: unsigned(s.server.context_size),
        parallel: unsigned(s.server.parallel),
        queue_depth: unsigned(s.server.queue_depth),
        api_key_file: s
            .server
            .api_key_secret_ref
            .as_ref()
            .map(|_| format!("{API_KEY_DIR}/key").into()),
        ..ServeFlags::default()
    }
    .to_args()
}

pub(super) fn fetch_args(mw: &ModelWorker) -> Vec<String> {
    let s = &mw.spec;
    FetchFlags {
        uri: s.model.uri.clone(),
        dest: Some(MODEL_DIR.into()),
        sha256: s.model.sha256.clone(),
        gpu_memory: s.gpu.memory.as_ref().map(|m| m.0.clone()),
        ctx_size: unsigned(s.server.context_size),
        parallel: unsigned(s.server.parallel),
        ..FetchFlags::default()
    }
    .to_args()
}
