//! Helpers shared by the worker's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The default model, fetched by `scripts/fetch-model.sh` (`make test` does
/// this first). `LLORCH_TEST_MODEL` overrides the path.
pub fn gemma() -> PathBuf {
    let path = std::env::var_os("LLORCH_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            let cache = std::env::var_os("LLORCH_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache/llorch"));
            cache.join("models/gemma-3-270m-q4_k_m.gguf")
        });
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
