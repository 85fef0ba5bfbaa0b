//! Helpers shared by the worker's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The default model, fetched by `scripts/fetch-model.sh` (`make test` does
/// this first). `LLORCH_TEST_MODEL` overrides the path.
pub fn gemma() -> PathBuf {
    let path = worker_common::paths::default_model_path();
    assert!(
        path.is_file(),
        "the default model is missing at {}: run scripts/fetch-model.sh (make test does)",
        path.display()
    );
    path
}

/// Writes a small random-weight Llama model (Q8_0) to `path` with
/// `llorch-worker synth`.
pub fn synth_model(path: &std::path::Path) {
    let out = worker(&[
        "synth",
        "--arch",
        "llama",
        "--type",
        "Q8_0",
        "--out",
        path.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "synth: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn worker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_llorch-worker"))
        .args(args)
        .output()
        .expect("the worker binary runs")
}

/// An HTTP client for the tests. reqwest is built without a TLS provider
/// of its own (the worker installs rustls' ring provider), so the tests
/// install it too before building one.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("an HTTP client")
}

/// Starts `llorch-worker serve` on the default model, on a free loopback
/// port with 2 threads (and `--ctx-size 512` unless `extra` sets one);
/// returns the process and its base URL once it listens (it may still be
/// loading: wait for `/ready`).
pub fn spawn_worker(extra: &[&str]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let ctx: &[&str] = if extra.contains(&"--ctx-size") {
        &[]
    } else {
        &["--ctx-size", "512"]
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_llorch-worker"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--threads",
            "2",
        ])
        .args(ctx)
        .arg("--model")
        .arg(gemma())
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("worker starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening on ADDR")
        .to_string();
    (child, format!("http://{addr}"))
}
