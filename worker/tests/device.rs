//! `--device cuda`: a clear error where there is no GPU (or no CUDA in the
//! build), real generation where there is one.

mod common;

use std::path::PathBuf;

/// A small random-weight model written by the worker itself.
fn small_model() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("llorch-device-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("llama-q8.gguf");
    common::synth_model(&path);
    path
}

#[cfg(feature = "cuda")]
fn gpu_present() -> bool {
    worker_cuda::driver_present()
}

#[cfg(not(feature = "cuda"))]
fn gpu_present() -> bool {
    false
}

#[test]
fn device_cuda_fails_clearly_without_a_gpu_and_generates_with_one() {
    let model = small_model();
    for sub in [
        vec![
            "generate",
            "--prompt",
            "hi",
            "--max-tokens",
            "4",
            "--temperature",
            "0",
        ],
        vec!["logits", "--tokens", "1,2,3", "--json"],
        vec!["bench", "-p", "8", "-n", "4", "--reps", "1"],
    ] {
        let mut args = sub.clone();
        args.extend([
            "--model",
            model.to_str().expect("utf-8"),
            "--device",
            "cuda",
        ]);
        let out = common::worker(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if gpu_present() {
            assert!(out.status.success(), "{}: {stderr}", sub[0]);
            assert!(!out.stdout.is_empty(), "{}: no output", sub[0]);
        } else {
            assert_eq!(out.status.code(), Some(1), "{}: {stderr}", sub[0]);
            let why = if cfg!(feature = "cuda") {
                "libcuda.so"
            } else {
                "built without the CUDA backend"
            };
            assert!(stderr.contains(why), "{}: {stderr}", sub[0]);
            assert!(stderr.contains("--device cpu"), "{}: {stderr}", sub[0]);
            assert!(!stderr.contains("panicked"), "{}: {stderr}", sub[0]);
        }
    }
    // A device the flag cannot name is refused before anything loads.
    let out = common::worker(&[
        "generate",
        "--model",
        model.to_str().expect("utf-8"),
        "--prompt",
        "hi",
        "--device",
        "gpu",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use cpu, cuda or cuda:N"));
    std::fs::remove_dir_all(model.parent().expect("dir")).ok();
}
