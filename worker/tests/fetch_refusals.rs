//! `llorch-worker fetch` refusing, against a real HTTP server on a real
//! port: hash mismatches, HTTP errors, unknown schemes, missing files,
//! files that are not GGUF, models the worker cannot run and the GPU fit
//! check. Every failure must end stderr with the JSON line the operator
//! reads.

mod common;

use common::fetch::{failure, fetch, model_bytes, ok, root, start, tempdir};
use std::collections::HashMap;

/// Typed failures: a wrong hash, HTTP errors, files that are not models,
/// unknown schemes and missing files, and too little GPU memory.
#[test]
fn failures_are_typed() {
    let work = tempdir("refusals/work");
    let model = model_bytes(&work);
    let bodies = HashMap::from([
        ("m.gguf".to_owned(), model.clone()),
        (
            "junk.gguf".to_owned(),
            b"definitely not a model".repeat(100),
        ),
    ]);
    let (base, _files) = start(bodies);
    let uri = format!("{base}/m.gguf");

    // A wrong hash: typed failure, nothing left behind.
    let dest = tempdir("refusals/mismatch");
    let f = failure(&fetch(&uri, &dest, &["--sha256", &"0".repeat(64)], &[]));
    assert_eq!(f["code"], "MODEL_LOAD_FAILED");
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("sha256 mismatch"),
        "{f}"
    );
    assert!(!dest.join("model.gguf").exists() && !dest.join("model.gguf.part").exists());

    // HTTP errors and files that are not models.
    let f = failure(&fetch(
        &format!("{base}/missing.gguf"),
        &tempdir("refusals/404"),
        &[],
        &[],
    ));
    assert!(
        f["message"].as_str().unwrap_or("").contains("HTTP 404"),
        "{f}"
    );
    let f = failure(&fetch(
        &format!("{base}/junk.gguf"),
        &tempdir("refusals/junk"),
        &[],
        &[],
    ));
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("not a usable GGUF"),
        "{f}"
    );
    let f = failure(&fetch(
        "ftp://x/m.gguf",
        &tempdir("refusals/scheme"),
        &[],
        &[],
    ));
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown scheme"),
        "{f}"
    );
    let f = failure(&fetch(
        "file:///no/such/model.gguf",
        &tempdir("refusals/nofile"),
        &[],
        &[],
    ));
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("cannot open /no/such/model.gguf"),
        "{f}"
    );

    // The fit check: too little GPU memory is INSUFFICIENT_VRAM with the
    // numbers; the file stays cached for the next try.
    let dest = tempdir("refusals/fit");
    let f = failure(&fetch(
        &uri,
        &dest,
        &["--gpu-memory", "1Mi", "--ctx-size", "256"],
        &[],
    ));
    assert_eq!(f["code"], "INSUFFICIENT_VRAM");
    assert_eq!(f["available_bytes"], 1 << 20);
    assert!(
        f["need_bytes"].as_u64().unwrap_or(0) > model.len() as u64,
        "{f}"
    );
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("gpu.memory declares 1 MiB"),
        "{f}"
    );
    assert!(dest.join("model.json").exists());
    ok(&fetch(
        &uri,
        &dest,
        &["--gpu-memory", "24Gi", "--ctx-size", "256"],
        &[],
    ));
    let f = failure(&fetch(&uri, &dest, &["--gpu-memory", "lots"], &[]));
    assert!(
        f["message"]
            .as_str()
            .unwrap_or("")
            .contains("is not a memory size"),
        "{f}"
    );
    let _ = std::fs::remove_dir_all(root("refusals"));
}

/// A model the worker cannot run fails with `UNSUPPORTED_MODEL`, naming
/// the architecture, or the type and its tensor, with the supported list:
/// when fetched and when found in the cache. Loading it (`generate` shares
/// `serve`'s load path) names the same reason.
#[test]
fn unsupported_models_fail_with_their_reason() {
    use common::Breakage;
    let work = tempdir("unsupported/work");
    let arch_list = worker_models::architecture_list();
    let type_list = worker_compute::matrix_type_list();
    for (how, words) in [
        (
            Breakage::Mamba,
            [
                "architecture \"mamba\" is not supported",
                arch_list.as_str(),
            ],
        ),
        (
            Breakage::Ternary,
            [
                "tensor \"blk.0.attn_q.weight\" is a matrix of weight type TQ1_0",
                type_list.as_str(),
            ],
        ),
    ] {
        let src = work.join(format!("{how:?}.gguf"));
        common::unsupported_model(&src, how);
        let uri = format!("file://{}", src.display());
        let dest = tempdir(&format!("unsupported/{how:?}"));
        for attempt in ["fetched", "cached"] {
            let f = failure(&fetch(&uri, &dest, &[], &[]));
            assert_eq!(f["code"], "UNSUPPORTED_MODEL", "{attempt}: {f}");
            let msg = f["message"].as_str().unwrap_or_default();
            assert!(
                msg.starts_with(&format!("{uri} cannot be served: ")),
                "{msg}"
            );
            for w in words {
                assert!(msg.contains(w), "{attempt}: {msg}");
            }
            // The file stays in the cache; with its source gone, the next
            // attempt can only have found it there.
            let _ = std::fs::remove_file(&src);
        }
        let cached = dest.join("model.gguf");
        let out = common::worker(&[
            "generate",
            "--model",
            cached.to_str().expect("utf-8"),
            "--prompt",
            "hi",
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(words[0]), "{err}");
    }
    let _ = std::fs::remove_dir_all(root("unsupported"));
}
