//! `llorch-worker inspect` on the real default model and on bad input.

mod common;

use common::{gemma, worker};
use serde_json::Value as Json;

#[test]
fn inspect_gemma_json() {
    let model = gemma();
    let out = worker(&["inspect", "--json", model.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Json = serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON");
    assert_eq!(j["architecture"], "gemma3");
    assert_eq!(j["quantization"], "Q4_K_M");
    assert_eq!(j["context_length"], 32768);
    assert_eq!(j["tokenizer"]["model"], "llama");
    assert_eq!(j["tokenizer"]["vocab_size"], 262144);
    let tensors = j["tensors"].as_array().expect("tensors");
    assert_eq!(tensors.len(), 236);
    let embd = tensors
        .iter()
        .find(|t| t["name"] == "token_embd.weight")
        .expect("token_embd.weight");
    assert_eq!(embd["shape"], serde_json::json!([640, 262144]));
    assert_eq!(embd["type"], "Q8_0");
    // Parameters are the sum of all tensor elements.
    let params: u64 = tensors
        .iter()
        .map(|t| {
            t["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim"))
                .product::<u64>()
        })
        .sum();
    assert_eq!(j["parameters"], params);
    // Long arrays are summarized, short values shown.
    let md = j["metadata"].as_array().expect("metadata");
    let tokens = md
        .iter()
        .find(|m| m["key"] == "tokenizer.ggml.tokens")
        .expect("tokens key");
    assert_eq!(tokens["element_type"], "string");
    assert_eq!(tokens["length"], 262144);
    assert!(tokens.get("value").is_none());
    let eps = md
        .iter()
        .find(|m| m["key"] == "gemma3.attention.layer_norm_rms_epsilon")
        .expect("eps key");
    assert_eq!(eps["value"], 1e-6);
}

#[test]
fn inspect_gemma_text() {
    let model = gemma();
    let out = worker(&["inspect", model.to_str().expect("utf-8 path")]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains("architecture  gemma3"), "{text}");
    assert!(text.contains("tensors (236)"));
    assert!(text.contains("tokenizer.ggml.tokens"));
    assert!(text.contains("[string; 262144]"));
    assert!(text.contains("blk.17.post_ffw_norm.weight"));
}

#[test]
fn inspect_rejects_bad_files_with_a_message() {
    let dir = std::env::temp_dir().join(format!("llorch-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGML\x03\0\0\0").expect("write");
    let out = worker(&["inspect", bad.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a GGUF file"), "{err}");

    let out = worker(&["inspect", dir.join("nope.gguf").to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn inspect_a_file_without_model_facts_warns() {
    let dir = std::env::temp_dir().join(format!("llorch-inspect-w-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("vectors.gguf");
    let mut w = worker_gguf::GgufWriter::new();
    w.add("some.key", 7u32).expect("add");
    w.add_f32("t", &[2, 2], &[1.0, 2.0, 3.0, 4.0]).expect("add");
    w.write_file(&path).expect("write");

    let out = worker(&["inspect", "--json", path.to_str().expect("utf-8")]);
    assert!(out.status.success());
    let j: Json = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(j["tensors"].as_array().map(Vec::len), Some(1));
    assert_eq!(j["parameters"], 4);
    assert_eq!(j["architecture"], Json::Null);
    let warning = j["warnings"][0].as_str().expect("a warning");
    assert!(warning.contains("general.architecture"), "{warning}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn inspect_says_whether_the_worker_can_run_the_file() {
    let dir = std::env::temp_dir().join(format!("llorch-inspect-s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let good = dir.join("good.gguf");
    common::synth_model(&good);
    let bad = dir.join("ternary.gguf");
    common::unsupported_model(&bad, common::Breakage::Ternary);

    let out = worker(&["inspect", "--json", good.to_str().expect("utf-8")]);
    let j: Json = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(j["supported"], true);
    assert_eq!(j["unsupported_reason"], Json::Null);
    let out = worker(&["inspect", good.to_str().expect("utf-8")]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains("\nsupported     yes\n"), "{text}");

    let out = worker(&["inspect", "--json", bad.to_str().expect("utf-8")]);
    assert!(out.status.success(), "inspect still describes the file");
    let j: Json = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(j["supported"], false);
    let reason = j["unsupported_reason"].as_str().expect("a reason");
    assert!(reason.contains("\"blk.0.attn_q.weight\""), "{reason}");
    assert!(reason.contains("TQ1_0"), "{reason}");
    assert!(
        reason.contains(&worker_compute::matrix_type_list()),
        "{reason}"
    );
    let out = worker(&["inspect", bad.to_str().expect("utf-8")]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        text.contains(&format!("\nsupported     no: {reason}\n")),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
