//! The fetch tests' HTTP file server and how they run `llorch-worker
//! fetch` and read its answer.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// One request as the server saw it: path, Range, Authorization.
pub type Seen = (String, Option<String>, Option<String>);

/// What the file server serves, and every request it saw.
#[derive(Clone, Default)]
pub struct Files {
    bodies: Arc<HashMap<String, Vec<u8>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Files {
    /// The requests so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

/// Serves `bodies` by path with single-range support; a path under
/// `/flaky/` drops the connection halfway through its first full answer,
/// and one under `/stalled/` does too, then answers every range request
/// with a `206` that claims the rest and sends no bytes.
async fn serve(
    State(files): State<Files>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let text = |h: header::HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let range = text(header::RANGE);
    let first_flaky = {
        let mut seen = files.seen.lock().expect("lock");
        seen.push((path.clone(), range.clone(), text(header::AUTHORIZATION)));
        (path.starts_with("flaky/") || path.starts_with("stalled/"))
            && seen.iter().filter(|s| s.0 == path).count() == 1
    };
    let Some(body) = files.bodies.get(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let start: usize = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    if start >= body.len() && start > 0 {
        return StatusCode::RANGE_NOT_SATISFIABLE.into_response();
    }
    if path.starts_with("stalled/") && start > 0 {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        let v = format!("bytes {start}-{}/{}", body.len() - 1, body.len());
        resp.headers_mut()
            .insert(header::CONTENT_RANGE, v.parse().expect("header"));
        resp.headers_mut()
            .insert(header::ETAG, "\"v1\"".parse().expect("header"));
        return resp;
    }
    let mut rest = body[start..].to_vec();
    // A server that caps the size of range answers.
    if path.starts_with("capped/") && range.is_some() {
        rest.truncate(100_000);
    }
    let len = rest.len();
    let mut resp = if first_flaky {
        let half = rest[..len / 2].to_vec();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(half), Err(std::io::Error::other("dropped"))];
        Response::new(Body::from_stream(futures::stream::iter(chunks)))
    } else {
        Response::new(Body::from(rest))
    };
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, len.into());
    // A strong validator, so parts from an earlier run may be resumed.
    resp.headers_mut()
        .insert(header::ETAG, "\"v1\"".parse().expect("header"));
    if start > 0 {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        let v = format!("bytes {start}-{}/{}", start + len - 1, body.len());
        resp.headers_mut()
            .insert(header::CONTENT_RANGE, v.parse().expect("header"));
    }
    resp
}

/// Runs `serve` with a listener on a free loopback port, on a runtime in a
/// background thread; returns the address.
pub fn on_free_port<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            serve(listener).await;
        });
    });
    rx.recv().expect("the server started")
}

/// Starts the file server on a free port.
pub fn start(bodies: HashMap<String, Vec<u8>>) -> (String, Files) {
    let files = Files {
        bodies: Arc::new(bodies),
        ..Files::default()
    };
    let app = Router::new()
        .route("/{*path}", axum::routing::get(serve))
        .with_state(files.clone());
    let addr = on_free_port(|listener| async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (format!("http://{addr}"), files)
}

/// The bytes of a small synthetic model, written to `dir` first.
pub fn model_bytes(dir: &Path) -> Vec<u8> {
    let path = dir.join("synthetic.gguf");
    super::synth_model(&path);
    std::fs::read(&path).expect("the synthetic model")
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh directory `TMP/llorch-fetch-PID/TEST/NAME`; each test removes
/// its own `TEST` folder at the end (tests run in parallel).
pub fn tempdir(name: &str) -> PathBuf {
    let d = root(name.split('/').next().unwrap_or(name)).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The folder of test `test`: removing it cleans up after the test.
pub fn root(test: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("llorch-fetch-{}", std::process::id()))
        .join(test)
}

/// Runs `llorch-worker fetch --uri URI --dest DEST EXTRA` with `env` (and
/// without the caller's `HF_TOKEN`).
pub fn fetch(uri: &str, dest: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llorch-worker"))
        .args([
            "fetch",
            "--uri",
            uri,
            "--dest",
            dest.to_str().expect("utf-8"),
        ])
        .args(extra)
        .env_remove("HF_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("fetch runs")
}

/// The JSON line a failed fetch ends with.
pub fn failure(out: &Output) -> Value {
    assert!(!out.status.success(), "fetch should have failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("last line is not JSON: {stderr}"))
}

/// The `model.json` a successful fetch prints.
pub fn ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("fetch prints model.json")
}
