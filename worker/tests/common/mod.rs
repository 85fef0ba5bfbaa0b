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
