//! Helpers shared by the worker's integration tests.
#![allow(dead_code)]

pub mod fetch;

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
    spawn_worker_on(&gemma(), extra)
}

/// [`spawn_worker`] on the model at `model`.
pub fn spawn_worker_on(model: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
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
        .arg(model)
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

/// How [`unsupported_model`] breaks a supported model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakage {
    /// The architecture, and its keys, renamed to `mamba`.
    Mamba,
    /// `blk.0.attn_q.weight` stored as TQ1_0 (ternary weights, which
    /// llorch does not compute), its bytes zero.
    Ternary,
}

/// Writes a small random-weight Llama model (see [`synth_model`]) made
/// unsupported as `how` says to `path`; the work file beside it is removed.
pub fn unsupported_model(path: &std::path::Path, how: Breakage) {
    use worker_gguf::{GgmlType, GgufFile, GgufWriter, Value};
    let src = path.with_extension("src.gguf");
    synth_model(&src);
    let file = GgufFile::open(&src).expect("the synthetic model");
    let mut w = GgufWriter::new();
    for (key, value) in file.metadata().iter() {
        let (key, value) = match (how, key) {
            (Breakage::Mamba, "general.architecture") => (key.to_owned(), Value::from("mamba")),
            (Breakage::Mamba, k) if k.starts_with("llama.") => {
                (k.replacen("llama.", "mamba.", 1), value.clone())
            }
            _ => (key.to_owned(), value.clone()),
        };
        w.add(key, value).expect("metadata");
    }
    for t in file.tensors() {
        let (ty, data) = if how == Breakage::Ternary && t.info.name == "blk.0.attn_q.weight" {
            let n = t.info.dims.iter().product();
            let bytes = GgmlType::TQ1_0.bytes_for(n).expect("whole TQ1_0 blocks");
            (GgmlType::TQ1_0, vec![0; bytes as usize])
        } else {
            (t.info.ty, t.data.to_vec())
        };
        w.add_tensor(t.info.name.clone(), &t.info.dims, ty, data)
            .expect("tensor");
    }
    drop(file);
    w.write_file(path).expect("write");
    std::fs::remove_file(&src).expect("remove the work file");
}

/// A worker process started by [`ready_worker_on`], killed when dropped.
pub struct Running {
    child: std::process::Child,
    /// Its base URL.
    pub base: String,
}

impl Running {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`spawn_worker_on`], then waits (at most two minutes) until `/ready`
/// answers 200.
pub async fn ready_worker_on(model: &std::path::Path, extra: &[&str]) -> Running {
    let (child, base) = spawn_worker_on(model, extra);
    let w = Running { child, base };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !http()
        .get(format!("{}/ready", w.base))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "worker did not become ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    w
}

/// [`ready_worker_on`] the default model.
pub async fn ready_worker(extra: &[&str]) -> Running {
    ready_worker_on(&gemma(), extra).await
}
