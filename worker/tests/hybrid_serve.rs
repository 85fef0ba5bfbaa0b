//! Hybrid models (Qwen 3.5's layout, dense and with experts; random
//! weights written by `llorch-worker synth`) served over HTTP as the
//! transformer families are: the OpenAI routes and `/execute`, streaming,
//! log-probabilities, two requests batched at once with the answers each
//! gets alone, and the prompt cache (a next turn starts from the recurrent
//! state the last one left; the same prompt again is computed afresh, as a
//! recurrent state cannot be taken back one token).

mod common;

use serde_json::{Value, json};

async fn serve(model: &std::path::Path) -> common::Running {
    common::ready_worker_on(model, &["--parallel", "2", "--ctx-size", "256"]).await
}

async fn post(w: &common::Running, path: &str, body: Value) -> reqwest::Response {
    common::http()
        .post(format!("{}{path}", w.base))
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn post_json(w: &common::Running, path: &str, body: Value) -> Value {
    let resp = post(w, path, body).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

fn cached(v: &Value) -> u64 {
    v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached tokens")
}

async fn check(arch: &str) {
    let dir = std::env::temp_dir().join(format!("llorch-hybrid-{}-{arch}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let model = dir.join("m.gguf");
    let path = model.to_str().expect("utf-8 path");
    let out = common::worker(&["synth", "--arch", arch, "--type", "Q8_0", "--out", path]);
    assert!(
        out.status.success(),
        "synth: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = serve(&model).await;

    let health: Value = common::http()
        .get(format!("{}/health", w.base))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["architecture"], arch);

    // Two requests at once get what each gets alone.
    let a = json!({"prompt": "tok1 tok2 tok3 tok4 tok5 tok6", "max_tokens": 8, "temperature": 0, "logprobs": 2});
    let b = json!({"prompt": "tok9 tok8 tok7", "max_tokens": 8, "temperature": 0, "logprobs": 2});
    let (ra, rb) = tokio::join!(
        post_json(&w, "/v1/completions", a.clone()),
        post_json(&w, "/v1/completions", b.clone())
    );
    let alone_b = post_json(&w, "/v1/completions", b).await;
    assert_eq!(rb["choices"][0]["text"], alone_b["choices"][0]["text"]);
    let tokens = |v: &Value| v["choices"][0]["logprobs"]["tokens"].clone();
    assert_eq!(tokens(&rb), tokens(&alone_b));
    assert_eq!(ra["usage"]["completion_tokens"], 8);

    // The next turn of a conversation extends the last prompt: cached.
    let first = json!({"prompt": "tok20 tok21 tok22 tok23 tok24 tok25 tok26 tok27", "max_tokens": 4, "temperature": 0});
    let r1 = post_json(&w, "/v1/completions", first).await;
    let r2 = post_json(
        &w,
        "/v1/completions",
        json!({"prompt": "tok20 tok21 tok22 tok23 tok24 tok25 tok26 tok27 tok30 tok31", "max_tokens": 4, "temperature": 0}),
    )
    .await;
    let first_len = r1["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert_eq!(cached(&r2), first_len, "{r2}");

    // Chat, streamed.
    let resp = post(
        &w,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "tok40 tok41"}], "max_tokens": 5, "stream": true}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("chat.completion.chunk"), "{text}");

    // /execute streams its events.
    let resp = post(
        &w,
        "/execute",
        json!({"job_id": "h1", "prompt": "tok50 tok51", "max_tokens": 3, "temperature": 0}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    assert!(
        text.contains("event: started") && text.contains("event: end"),
        "{text}"
    );
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn qwen35_is_served_like_the_transformers() {
    check("qwen35").await;
}

#[tokio::test]
async fn qwen35moe_is_served_like_the_transformers() {
    check("qwen35moe").await;
}
