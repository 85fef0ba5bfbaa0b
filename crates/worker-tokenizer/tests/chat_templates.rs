//! The chat templates of the families llorch runs, as their GGUFs carry
//! them, render exactly as the Python tooling they are written for renders
//! them (the golden files, written by `scripts/reference/gen-chat-templates.py`
//! with Jinja2): whitespace control, string methods, `raise_exception`,
//! `strftime_now`. One conversation's earlier assistant turn holds reasoning
//! markup (`<think>…</think>`, `<|channel>…<channel|>`), which the
//! reasoning families' templates (Qwen3, Qwen3.5, Gemma 4) strip.
//!
//! The templates come from the llama-cpp-python 0.3.36 sdist
//! (`models/templates`), fetched and cached by `scripts/llama-cpp-src.sh`
//! (`make test` runs it first); `LLORCH_LLAMA_CPP_SRC` overrides where the
//! tree is.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use worker_tokenizer::{ChatMessage, ChatTemplate};

#[derive(Deserialize)]
struct Cases {
    now_secs: i64,
    conversations: Vec<Vec<ChatMessage>>,
    templates: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    file: String,
    bos: String,
    eos: String,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates")
}

fn templates_dir() -> PathBuf {
    let src = std::env::var_os("LLORCH_LLAMA_CPP_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("LLORCH_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/llorch")
                })
                .join("llama.cpp/src-0.3.36")
        });
    let dir = src.join("models/templates");
    assert!(
        dir.is_dir(),
        "llama.cpp's templates are missing at {}: run scripts/llama-cpp-src.sh (make test does)",
        dir.display()
    );
    dir
}

fn cases() -> Cases {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("cases.json")).expect("cases.json"),
    )
    .expect("cases.json parses")
}

fn golden(stem: &str, conversation: usize) -> String {
    std::fs::read_to_string(fixtures().join(format!("{stem}.{conversation}.txt")))
        .expect("golden file")
}

#[test]
fn family_templates_render_as_their_own_tooling_renders_them() {
    let cases = cases();
    let dir = templates_dir();
    let mut checked = 0;
    for case in &cases.templates {
        let source = std::fs::read_to_string(dir.join(&case.file)).expect("template");
        let template = ChatTemplate::new(Some(&source), &case.bos, &case.eos, |_| false)
            .unwrap_or_else(|e| panic!("{}: {e}", case.file));
        for (i, messages) in cases.conversations.iter().enumerate() {
            let stem = case.file.trim_end_matches(".jinja");
            let want = golden(stem, i);
            let got = template.render_at(messages, true, cases.now_secs);
            match (want.strip_prefix("raise_exception: "), got) {
                (Some(message), Err(e)) => assert!(
                    e.to_string().contains(message),
                    "{stem} conversation {i}: want the refusal {message:?}, got {e}"
                ),
                (None, Ok(text)) => assert_eq!(text, want, "{stem} conversation {i}"),
                (_, got) => panic!("{stem} conversation {i}: want {want:?}, got {got:?}"),
            }
            checked += 1;
        }
    }
    println!("{checked} renders equal their golden files");
    assert_eq!(checked, cases.templates.len() * cases.conversations.len());
}

/// The built-in Gemma 4 default (for a file without a template) renders a
/// chat without reasoning markup exactly as the family's own template does.
#[test]
fn gemma4_default_renders_plain_chats_as_the_family_template() {
    let cases = cases();
    let template =
        ChatTemplate::new(None, "<bos>", "<eos>", |t| t == "<|turn>").expect("default compiles");
    assert!(template.is_default());
    let mut checked = 0;
    for (i, messages) in cases.conversations.iter().enumerate() {
        let plain = messages
            .iter()
            .all(|m| !m.content.contains("<think>") && !m.content.contains("<|channel>"));
        if !plain {
            continue;
        }
        let got = template
            .render_at(messages, true, cases.now_secs)
            .expect("renders");
        assert_eq!(got, golden("google-gemma-4-31B-it", i), "conversation {i}");
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} plain conversations");
}
