//! `llorch-worker tokenize` / `detokenize` on the default model.

mod common;

use common::{gemma, worker};

fn model_arg() -> String {
    gemma().to_str().expect("utf-8 path").to_string()
}

fn stdout(args: &[&str]) -> String {
    let out = worker(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn tokenize_prints_ids_with_bos_by_default() {
    let m = model_arg();
    let text = "Hello world, 你好 🦙";
    let plain = stdout(&["tokenize", "--model", &m, text]);
    let ids: Vec<u32> = plain
        .split_whitespace()
        .map(|t| t.parse().expect("an id"))
        .collect();
    assert_eq!(ids[0], 2, "Gemma adds BOS");

    let json = stdout(&["tokenize", "--model", &m, "--json", "--no-bos", text]);
    let no_bos: Vec<u32> = serde_json::from_str(&json).expect("a JSON array");
    assert_eq!(no_bos, ids[1..]);

    // The ids decode back to the text (with BOS rendered).
    let args: Vec<String> = ids.iter().map(u32::to_string).collect();
    let mut cmd = vec!["detokenize", "--model", m.as_str()];
    cmd.extend(args.iter().map(String::as_str));
    assert_eq!(stdout(&cmd), format!("<bos>{text}\n"));
    let joined = args.join(",");
    assert_eq!(
        stdout(&["detokenize", "--model", &m, "--tokens", &joined]),
        format!("<bos>{text}\n")
    );
}

#[test]
fn parse_special_turns_control_text_into_ids() {
    let m = model_arg();
    let with = stdout(&[
        "tokenize",
        "--model",
        &m,
        "--no-bos",
        "--json",
        "--parse-special",
        "<start_of_turn>user",
    ]);
    let without = stdout(&[
        "tokenize",
        "--model",
        &m,
        "--no-bos",
        "--json",
        "<start_of_turn>user",
    ]);
    let with: Vec<u32> = serde_json::from_str(&with).expect("json");
    let without: Vec<u32> = serde_json::from_str(&without).expect("json");
    assert_eq!(with.len(), 2);
    assert!(without.len() > 2);
    assert!(!without.contains(&with[0]));
}

#[test]
fn detokenize_rejects_bad_ids() {
    let m = model_arg();
    let out = worker(&["detokenize", "--model", &m]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token ids"));
    let out = worker(&["detokenize", "--model", &m, "999999999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of range"));
    let out = worker(&["detokenize", "--model", &m, "--tokens", "1,x"]);
    assert!(!out.status.success());
}
