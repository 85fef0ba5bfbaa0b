//! `llorch-worker serve` over real HTTP on a real port, with the real
//! default model: the /execute contract, validation, limits, cancellation,
//! reports, drain and the OpenAI routes.

mod common;

use serde_json::{Value, json};

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Worker {
    child: Child,
    base: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a worker on port 0 and waits until it is ready.
async fn worker(extra: &[&str]) -> Worker {
    let (child, base) = common::spawn_worker(extra);
    let w = Worker { child, base };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = common::http().get(format!("{}/ready", w.base)).send().await
            && r.status() == 200
        {
            return w;
        }
        assert!(Instant::now() < deadline, "worker did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a whole SSE response into (event name, data) pairs.
async fn sse(resp: reqwest::Response) -> Vec<(String, Value)> {
    let mut resp = resp;
    let mut buf = String::new();
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    parse_sse(&buf)
}

fn parse_sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = String::from("message");
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_string());
                }
            }
            data.map(|d| (name, serde_json::from_str(&d).unwrap_or(Value::String(d))))
        })
        .collect()
}

async fn post(w: &Worker, path: &str, body: Value) -> reqwest::Response {
    common::http()
        .post(format!("{}{path}", w.base))
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn get(w: &Worker, path: &str) -> reqwest::Response {
    common::http()
        .get(format!("{}{path}", w.base))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn execute_streams_events_in_order() {
    let w = worker(&[]).await;
    let health: Value = get(&w, "/health").await.json().await.expect("json");
    assert_eq!(health["status"], "ready");
    assert_eq!(health["architecture"], "gemma3");
    assert_eq!(health["quant_kind"], "Q4_K_M");
    assert_eq!(health["vocab_size"], 262144);
    assert_eq!(health["context_length"], 512);
    assert!(health["memory_bytes"].as_u64().expect("memory") > 100 << 20);
    assert_eq!(health["backend"], "cpu");
    assert_eq!(health["memory_architecture"], "host");
    assert!(health.get("gpu").is_none(), "a CPU worker reports no GPU");

    let resp = post(&w, "/execute", json!({"job_id": "j1", "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse(resp).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"started"), "{names:?}");
    assert_eq!(names.last(), Some(&"end"), "{names:?}");
    assert!(names.iter().filter(|n| **n == "token").count() >= 1);
    for (name, data) in &events {
        assert_eq!(
            data["type"],
            name.as_str(),
            "type field mirrors the event name"
        );
    }
    let started = &events[0].1;
    assert_eq!(started["job_id"], "j1");
    assert_eq!(started["model"], "Gemma 3 270m");
    assert!(started["started_at"].as_str().expect("time").ends_with('Z'));
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "token")
        .map(|(_, d)| d["t"].as_str().expect("t"))
        .collect();
    assert!(text.starts_with(" the capital"), "{text:?}");
    let end = &events.last().expect("end").1;
    assert_eq!(end["stop_reason"], "MAX_TOKENS");
    assert_eq!(end["tokens_out"], 6);
    assert_eq!(end["tokens_in"], 6);
    assert!(end["seed"].is_u64());

    let metrics = get(&w, "/metrics").await.text().await.expect("text");
    for name in [
        "llorch_worker_requests_total{outcome=\"ok\"} 1",
        "llorch_worker_tokens_in_total 6",
        "llorch_worker_tokens_out_total 6",
        "llorch_worker_time_to_first_token_seconds_count 1",
        "llorch_worker_inter_token_seconds_count",
        "llorch_worker_queue_depth 0",
        "llorch_worker_requests_in_flight 0",
        "llorch_worker_memory_bytes",
        "llorch_worker_uptime_seconds",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }

    // Tokenize and detokenize round trip.
    let t: Value = post(&w, "/tokenize", json!({"content": "Hello world"}))
        .await
        .json()
        .await
        .expect("json");
    let ids = t["tokens"].clone();
    assert!(ids.as_array().is_some_and(|a| !a.is_empty()));
    let d: Value = post(&w, "/detokenize", json!({"tokens": ids}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(d["content"], "Hello world");
}

#[tokio::test]
async fn bad_requests_get_typed_errors() {
    let w = worker(&["--max-body-bytes", "2000", "--ctx-size", "64"]).await;
    let resp = post(&w, "/execute", json!({"job_id": "has space", "prompt": "", "temperature": 9, "top_p": 0, "stop": ["", "x"], "max_tokens": 0})).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "INVALID_REQUEST");
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().expect("field"))
        .collect();
    for f in [
        "job_id",
        "prompt",
        "temperature",
        "top_p",
        "stop",
        "max_tokens",
    ] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }

    let resp = common::http()
        .post(format!("{}/execute", w.base))
        .body("{\"job_id\": ")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("line 1, column")
    );

    let big = "x".repeat(5000);
    let resp = post(&w, "/execute", json!({"job_id": "big", "prompt": big})).await;
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");

    let long = "word ".repeat(200);
    let resp = post(&w, "/execute", json!({"job_id": "long", "prompt": long})).await;
    assert_eq!(resp.status(), 400);
    let msg = resp.json::<Value>().await.expect("json")["error"]["message"]
        .as_str()
        .expect("msg")
        .to_string();
    assert!(msg.contains("context holds 64"), "{msg}");
    assert!(!msg.contains("word word"), "the prompt is never echoed");

    let resp = get(&w, "/no/such/route").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.expect("json")["error"]["code"],
        "NOT_FOUND"
    );
    let resp = get(&w, "/execute").await;
    assert_eq!(resp.status(), 405);
    assert_eq!(
        resp.json::<Value>().await.expect("json")["error"]["code"],
        "METHOD_NOT_ALLOWED"
    );
}

#[tokio::test]
async fn api_key_guards_inference_routes() {
    let dir = std::env::temp_dir().join(format!("llorch-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let key = dir.join("key");
    std::fs::write(&key, "s3cret\n").expect("write");
    let w = worker(&["--api-key-file", key.to_str().expect("utf-8")]).await;
    let resp = post(
        &w,
        "/execute",
        json!({"job_id": "a", "prompt": "Hi", "max_tokens": 1}),
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.expect("json")["error"]["code"],
        "UNAUTHORIZED"
    );
    let resp = common::http()
        .post(format!("{}/v1/completions", w.base))
        .bearer_auth("wrong")
        .json(&json!({"prompt": "Hi"}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    let resp = common::http()
        .post(format!("{}/execute", w.base))
        .bearer_auth("s3cret")
        .json(&json!({"job_id": "a", "prompt": "Hi", "max_tokens": 1}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    for open in ["/health", "/ready", "/metrics"] {
        assert_eq!(get(&w, open).await.status(), 200, "{open}");
    }
    // The two refused requests are counted.
    let metrics = get(&w, "/metrics").await.text().await.expect("text");
    assert!(
        metrics.contains("llorch_worker_requests_total{outcome=\"rejected\"} 2"),
        "{metrics}"
    );
    // An empty key file would let every request in: the worker refuses to
    // start instead (before it reads the model).
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let out = common::worker(&[
        "serve",
        "--model",
        "/nonexistent/model.gguf",
        "--port",
        "0",
        "--api-key-file",
        empty.to_str().expect("utf-8"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an empty key file is refused");
    assert!(stderr.contains("is empty"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn overload_cancel_and_disconnect() {
    let w = worker(&["--parallel", "1", "--queue-depth", "0"]).await;
    let client = common::http();
    let long = client
        .post(format!("{}/execute", w.base))
        .json(&json!({"job_id": "long", "prompt": "Count to one hundred:", "max_tokens": 400, "temperature": 0}))
        .send()
        .await
        .expect("send");
    assert_eq!(long.status(), 200);

    let resp = post(
        &w,
        "/execute",
        json!({"job_id": "second", "prompt": "Hi", "max_tokens": 1}),
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        resp.json::<Value>().await.expect("json")["error"]["code"],
        "OVERLOADED"
    );

    let resp = post(&w, "/cancel", json!({"job_id": "long"})).await;
    assert_eq!(resp.status(), 202);
    let resp = post(&w, "/cancel", json!({"job_id": "long"})).await;
    assert_eq!(resp.status(), 202, "cancel is idempotent");
    let events = sse(long).await;
    let last = events.last().expect("an event");
    assert_eq!(last.0, "error");
    assert_eq!(last.1["code"], "CANCELLED");
    assert_eq!(last.1["retriable"], false);
    assert!(
        !events.iter().any(|(n, _)| n == "end"),
        "exactly one terminal event"
    );

    // A client that disconnects cancels its job and frees the slot.
    let mut dropped = client
        .post(format!("{}/execute", w.base))
        .json(&json!({"job_id": "gone", "prompt": "Count to one hundred:", "max_tokens": 400}))
        .send()
        .await
        .expect("send");
    let _ = dropped.chunk().await;
    drop(dropped);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = get(&w, "/metrics").await.text().await.expect("text");
        if m.contains("llorch_worker_requests_in_flight 0")
            && m.contains("llorch_worker_requests_total{outcome=\"cancelled\"} 2")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the disconnected job was not cancelled:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = post(
        &w,
        "/execute",
        json!({"job_id": "after", "prompt": "Hi", "max_tokens": 1}),
    )
    .await;
    assert_eq!(resp.status(), 200, "the slot is free again");
}

#[tokio::test]
async fn openai_routes() {
    let w = worker(&[]).await;
    let models: Value = get(&w, "/v1/models").await.json().await.expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "Gemma 3 270m");

    let c: Value = post(&w, "/v1/completions", json!({"model": "x", "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0})).await.json().await.expect("json");
    assert_eq!(c["object"], "text_completion");
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    assert!(
        c["choices"][0]["text"]
            .as_str()
            .expect("text")
            .starts_with(" the capital")
    );
    assert_eq!(c["usage"]["completion_tokens"], 5);
    assert_eq!(
        c["usage"]["total_tokens"],
        c["usage"]["prompt_tokens"].as_u64().expect("n") + 5
    );

    let resp = post(&w, "/v1/completions", json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0, "stream": true})).await;
    let events = sse(resp).await;
    assert_eq!(
        events.last().map(|(_, d)| d.clone()),
        Some(Value::String("[DONE]".into()))
    );
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["choices"][0]["text"].as_str())
        .collect();
    assert!(text.starts_with(" the capital"), "{text:?}");
    assert!(
        events
            .iter()
            .any(|(_, d)| d["choices"][0]["finish_reason"] == "length")
    );

    let chat: Value = post(
        &w,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["choices"][0]["message"]["role"], "assistant");
    assert_eq!(chat["usage"]["completion_tokens"], 3);
    let resp = post(
        &w,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": true}),
    )
    .await;
    let events = sse(resp).await;
    assert_eq!(events[0].1["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(events[0].1["object"], "chat.completion.chunk");
    assert_eq!(
        events.last().map(|(_, d)| d.clone()),
        Some(Value::String("[DONE]".into()))
    );
    let resp = post(&w, "/v1/chat/completions", json!({"messages": []})).await;
    assert_eq!(resp.status(), 400);

    // Content as an array of text parts, as OpenAI clients send it, is the
    // same prompt as the plain string.
    let text_of = |v: &Value| v["choices"][0]["message"]["content"].clone();
    let parts: Value = post(
        &w,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
               "max_tokens": 3, "temperature": 0}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(text_of(&parts), text_of(&chat));
    for (messages, says) in [
        (
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
            "messages[0]: content parts of type \"image_url\"",
        ),
        (
            json!([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]),
            "messages[1]: role \"robot\"",
        ),
        (
            json!([{"role": "user", "content": 7}]),
            "messages[0]: content must be",
        ),
    ] {
        let resp = post(&w, "/v1/chat/completions", json!({"messages": messages})).await;
        assert_eq!(resp.status(), 400, "{messages}");
        let body: Value = resp.json().await.expect("json");
        let detail = body["error"]["details"][0]["message"]
            .as_str()
            .unwrap_or("");
        assert!(detail.contains(says), "{body}");
    }
}

/// A one-shot HTTP server that records the first POST it receives.
async fn report_sink() -> (String, tokio::task::JoinHandle<(String, Value)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/v1/workers/report",
        listener.local_addr().expect("addr")
    );
    let task = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut sock, _) = listener.accept().await.expect("accept");
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        loop {
            let n = sock.read(&mut tmp).await.expect("read");
            buf.extend_from_slice(&tmp[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(split) = text.find("\r\n\r\n") {
                let len: usize = text[..split]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= split + 4 + len {
                    let head = text[..split].to_string();
                    let body: Value = serde_json::from_slice(&buf[split + 4..split + 4 + len])
                        .expect("json body");
                    sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .expect("write");
                    return (head, body);
                }
            }
            if n == 0 {
                panic!("connection closed early");
            }
        }
    });
    (url, task)
}

#[tokio::test]
async fn ready_and_failure_reports() {
    let dir = std::env::temp_dir().join(format!("llorch-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let token = dir.join("token");
    std::fs::write(&token, "tok-123").expect("write");

    let (url, got) = report_sink().await;
    let _w = worker(&[
        "--callback-url",
        &url,
        "--callback-token-file",
        token.to_str().expect("utf-8"),
        "--model-ref",
        "hf://google/gemma/x.gguf",
        "--worker-id",
        "w-1",
    ])
    .await;
    let (head, report) = tokio::time::timeout(Duration::from_secs(60), got)
        .await
        .expect("report in time")
        .expect("task");
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer tok-123"),
        "{head}"
    );
    assert_eq!(report["status"], "ready");
    assert_eq!(report["worker_id"], "w-1");
    assert_eq!(report["model_ref"], "hf://google/gemma/x.gguf");
    assert_eq!(report["model"]["architecture"], "gemma3");
    assert_eq!(report["model"]["quantization"], "Q4_K_M");
    assert_eq!(report["backend"], "cpu");
    assert_eq!(report["memory_architecture"], "host");
    assert_eq!(report["capabilities"], json!(["text-gen", "sse", "openai"]));
    assert!(report["load_seconds"].as_f64().expect("secs") > 0.0);

    // A model that cannot load: a failure report, then exit code 1.
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\0\0\0garbage").expect("write");
    let (url, got) = report_sink().await;
    let status = tokio::task::spawn_blocking({
        let bad: PathBuf = bad.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_llorch-worker"))
                .args([
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--callback-url",
                    &url,
                ])
                .arg("--model")
                .arg(&bad)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("runs")
        }
    })
    .await
    .expect("join");
    assert_eq!(status.code(), Some(1));
    let (_, report) = got.await.expect("failure report");
    assert_eq!(report["status"], "failed");
    assert_eq!(report["error"]["code"], "MODEL_LOAD_FAILED");
    assert!(
        report["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("bad.gguf")
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The log-softmax of the last position's logits, from `llorch-worker
/// logits` (the reference the conformance tests check against llama.cpp).
fn reference_logprobs(prompt: &str) -> Vec<f64> {
    let out = Command::new(env!("CARGO_BIN_EXE_llorch-worker"))
        .args([
            "logits",
            "--threads",
            "2",
            "--ctx-size",
            "512",
            "--prompt",
            prompt,
        ])
        .arg("--model")
        .arg(common::gemma())
        .output()
        .expect("logits runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let logits: Vec<f64> = v["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let norm = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
    logits.iter().map(|l| l - norm).collect()
}

#[tokio::test]
async fn logprobs_on_every_generation_route() {
    let w = worker(&[]).await;
    let prompt = "The capital of France is";

    // Completions: the legacy form, checked against the model's own
    // distribution at the first position.
    let resp = post(
        &w,
        "/v1/completions",
        json!({"prompt": prompt, "max_tokens": 5, "temperature": 0, "logprobs": 2}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    let choice = &v["choices"][0];
    let lp = &choice["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_str().expect("str"))
        .collect();
    assert_eq!(
        tokens.len() as u64,
        v["usage"]["completion_tokens"].as_u64().expect("usage")
    );
    assert_eq!(tokens.concat(), choice["text"].as_str().expect("text"));
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| o.as_u64().expect("n"))
        .collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    for (i, t) in tokens.iter().enumerate() {
        let top = lp["top_logprobs"][i].as_object().expect("top");
        assert!(!top.is_empty() && top.len() <= 2, "{top:?}");
        // Greedy: the chosen token is the likeliest.
        assert_eq!(top.get(*t), Some(&lp["token_logprobs"][i]), "{lp}");
    }
    let mut reference = reference_logprobs(prompt);
    reference.sort_by(|a, b| b.total_cmp(a));
    let mut first: Vec<f64> = lp["top_logprobs"][0]
        .as_object()
        .expect("top")
        .values()
        .map(|x| x.as_f64().expect("n"))
        .collect();
    first.sort_by(|a, b| b.total_cmp(a));
    for (got, want) in first.iter().zip(&reference) {
        assert!((got - want).abs() < 1e-2, "{got} vs the reference {want}");
    }

    // Chat, streaming: one entry per generated token, across the chunks.
    let resp = post(
        &w,
        "/v1/chat/completions",
        json!({
        "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 6,
        "temperature": 0, "logprobs": true, "top_logprobs": 3, "stream": true}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let events = sse(resp).await;
    let mut entries = Vec::new();
    let mut text = String::new();
    let mut usage = None;
    for (_, d) in &events {
        if let Some(c) = d["choices"][0]["logprobs"]["content"].as_array() {
            entries.extend(c.iter().cloned());
        }
        if let Some(t) = d["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if d.get("usage").is_some() {
            usage = d["usage"]["completion_tokens"].as_u64();
        }
    }
    assert_eq!(Some(entries.len() as u64), usage);
    let joined: String = entries
        .iter()
        .map(|e| e["token"].as_str().expect("token"))
        .collect();
    assert!(joined.starts_with(&text), "{joined:?} vs {text:?}");
    for e in &entries {
        let top = e["top_logprobs"].as_array().expect("top");
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["token"], e["token"]);
        assert_eq!(top[0]["logprob"], e["logprob"]);
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .expect("bytes")
            .iter()
            .map(|b| b.as_u64().expect("byte") as u8)
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            e["token"].as_str().expect("token")
        );
    }

    // /execute: each token event lists what it completes.
    let resp = post(
        &w,
        "/execute",
        json!({"job_id": "lp", "prompt": prompt, "max_tokens": 4, "temperature": 0, "logprobs": 1}),
    )
    .await;
    let events = sse(resp).await;
    let n: usize = events
        .iter()
        .filter(|(n, _)| n == "token")
        .map(|(_, d)| d["logprobs"].as_array().expect("logprobs").len())
        .sum();
    let end = events.iter().find(|(n, _)| n == "end").expect("end");
    assert_eq!(n as u64, end.1["tokens_out"].as_u64().expect("tokens_out"));

    // Bad options are refused, naming the field.
    for (path, body, field) in [
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
            "top_logprobs",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "logprobs": 6}),
            "logprobs",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "echo": true}),
            "echo",
        ),
        (
            "/execute",
            json!({"job_id": "bad-lp", "prompt": "x", "logprobs": 21}),
            "logprobs",
        ),
        // What is not implemented is refused, not ignored.
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}}}),
            "response_format",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]}),
            "tools",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "suffix": "y"}),
            "suffix",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "best_of": 2}),
            "best_of",
        ),
    ] {
        let resp = post(&w, path, body).await;
        assert_eq!(resp.status(), 400, "{path} {field}");
        let v: Value = resp.json().await.expect("json");
        assert!(v.to_string().contains(field), "{v}");
    }
    // The harmless forms of those pass.
    let resp = post(
        &w,
        "/v1/chat/completions",
        json!({
        "messages": [{"role": "user", "content": "x"}], "max_tokens": 1,
        "response_format": {"type": "text"}, "tools": [], "user": "u-1",
        "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn logit_bias_bans_and_favours_tokens_and_penalties_are_taken() {
    let w = worker(&[]).await;
    let complete = |extra: Value| {
        let mut body =
            json!({"prompt": "The capital of France is", "max_tokens": 1, "temperature": 0});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        post(&w, "/v1/completions", body)
    };
    let text = |v: Value| v["choices"][0]["text"].as_str().expect("text").to_owned();
    let first = text(complete(json!({})).await.json().await.expect("json"));
    let ids: Value = post(
        &w,
        "/tokenize",
        json!({"content": first, "add_special": false}),
    )
    .await
    .json()
    .await
    .expect("json");
    let id = ids["tokens"][0].as_u64().expect("an id");
    let banned = text(
        complete(json!({"logit_bias": {id.to_string(): -100}}))
            .await
            .json()
            .await
            .expect("json"),
    );
    assert_ne!(banned, first, "a bias of -100 bans the greedy token");
    // " banana" is unlikely here; +100 makes it the choice.
    let ids: Value = post(
        &w,
        "/tokenize",
        json!({"content": " banana", "add_special": false}),
    )
    .await
    .json()
    .await
    .expect("json");
    let banana = ids["tokens"][0].as_u64().expect("an id");
    let v: Value = complete(json!({"logit_bias": {banana.to_string(): 100}}))
        .await
        .json()
        .await
        .expect("json");
    let favoured: Value = post(&w, "/detokenize", json!({"tokens": [banana]}))
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(favoured["content"], json!(first));
    assert_eq!(text(v), favoured["content"].as_str().expect("content"));

    let resp = complete(json!({"frequency_penalty": 1.5, "presence_penalty": -0.5, "max_tokens": 8, "temperature": 0.7})).await;
    assert_eq!(resp.status(), 200);
    for bad in [
        json!({"frequency_penalty": 2.5}),
        json!({"presence_penalty": "x"}),
        json!({"logit_bias": {"999999999": 1}}),
    ] {
        assert_eq!(complete(bad.clone()).await.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn a_repeated_prompt_is_served_from_the_cache() {
    let w = worker(&[]).await;
    let body = json!({"prompt": "Write a haiku about the sea.", "max_tokens": 12, "temperature": 0, "logprobs": 2});
    let first: Value = post(&w, "/v1/completions", body.clone())
        .await
        .json()
        .await
        .expect("json");
    let again: Value = post(&w, "/v1/completions", body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let prompt_tokens = again["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert_eq!(
        again["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(prompt_tokens - 1)
    );
    assert_eq!(again["choices"][0]["text"], first["choices"][0]["text"]);
    // The same bits: the CPU kernels do not depend on the batch.
    assert_eq!(
        again["choices"][0]["logprobs"],
        first["choices"][0]["logprobs"]
    );
    let metrics = get(&w, "/metrics").await.text().await.expect("text");
    assert!(
        metrics.contains(&format!(
            "llorch_worker_tokens_cached_total {}",
            prompt_tokens - 1
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn several_choices_per_request() {
    // Room for 6 jobs: 4 decoding, 2 waiting.
    let w = worker(&["--queue-depth", "2"]).await;
    let body = json!({"prompt": "Once upon a time", "max_tokens": 6, "temperature": 1.0, "seed": 5, "n": 3});
    let a: Value = post(&w, "/v1/completions", body.clone())
        .await
        .json()
        .await
        .expect("json");
    let b: Value = post(&w, "/v1/completions", body)
        .await
        .json()
        .await
        .expect("json");
    let choices = a["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
    }
    // Seeded: the same choices again, and not all alike.
    assert_eq!(a["choices"], b["choices"]);
    let texts: std::collections::BTreeSet<&str> = choices
        .iter()
        .map(|c| c["text"].as_str().expect("text"))
        .collect();
    assert!(texts.len() > 1, "{texts:?}");
    let completion: u64 = choices.len() as u64 * 6;
    assert!(a["usage"]["completion_tokens"].as_u64().expect("usage") <= completion);

    // Streaming chat: chunks of both choices, each finished, then the
    // total usage in a chunk of its own, then [DONE].
    let resp = post(
        &w,
        "/v1/chat/completions",
        json!({
        "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 5,
        "temperature": 0.8, "n": 2, "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    let events = sse(resp).await;
    assert_eq!(
        events.last().map(|e| &e.1),
        Some(&Value::String("[DONE]".into()))
    );
    let chunks: Vec<&Value> = events
        .iter()
        .map(|e| &e.1)
        .filter(|v| v.is_object())
        .collect();
    let mut finished = std::collections::BTreeSet::new();
    let mut tokens = 0;
    for c in &chunks[..chunks.len() - 1] {
        let choice = &c["choices"][0];
        if let Some(r) = choice["finish_reason"].as_str() {
            assert!(r == "stop" || r == "length");
            finished.insert(choice["index"].as_u64().expect("index"));
        }
        assert!(c.get("usage").is_none());
        tokens += 1;
    }
    assert!(tokens > 2);
    assert_eq!(finished.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    let last = chunks.last().expect("usage chunk");
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["completion_tokens"].as_u64().expect("usage") >= 2);

    // Without include_usage, no chunk without choices.
    let resp = post(
        &w,
        "/v1/completions",
        json!({"prompt": "x", "max_tokens": 2, "n": 2, "stream": true}),
    )
    .await;
    let events = sse(resp).await;
    assert!(
        events
            .iter()
            .all(|(_, d)| !d.is_object() || d["choices"] != json!([]))
    );
    // More choices than the worker can ever hold, or than allowed: 400.
    for n in [7, 17] {
        let resp = post(&w, "/v1/completions", json!({"prompt": "x", "n": n})).await;
        assert_eq!(resp.status(), 400, "n {n}");
    }
}

#[tokio::test]
async fn json_mode_answers_with_a_json_object() {
    let w = worker(&[]).await;
    let v: Value = post(&w, "/v1/chat/completions", json!({
        "messages": [{"role": "user", "content": "Give the name and age of a cat named Tom, aged 3, as JSON."}],
        "response_format": {"type": "json_object"}, "temperature": 0, "max_tokens": 60}))
    .await
    .json()
    .await
    .expect("json");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    let mut state = worker_models::JsonState::default();
    assert!(
        state.push_str(content),
        "not the start of a JSON object: {content:?}"
    );
    if v["choices"][0]["finish_reason"] == "stop" {
        let obj: Value = serde_json::from_str(content).expect("a whole JSON object");
        assert!(obj.is_object());
    } else {
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }
}

/// A 409 (the operator's status kept changing under the report) is retried
/// like a 503, not taken as final.
#[tokio::test]
async fn a_conflicting_report_is_retried() {
    use axum::http::StatusCode;
    let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/v1/workers/report",
        axum::routing::post({
            let tries = tries.clone();
            move |body: axum::Json<Value>| async move {
                if tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                    StatusCode::CONFLICT
                } else {
                    let _ = tx.send(body.0);
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/v1/workers/report",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let _w = worker(&["--callback-url", &url]).await;
    let report = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the report is retried after 409")
        .expect("a report");
    assert_eq!(report["status"], "ready");
    assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A 401 is retried for a while, and each attempt reads the token file
/// again: the operator replaces the callback Secret of a ModelWorker
/// recreated under the same name, and the kubelet then updates the file.
#[tokio::test]
async fn a_refused_report_is_retried_with_the_token_file_read_again() {
    use axum::http::{HeaderMap, StatusCode};
    let dir = std::env::temp_dir().join(format!("llorch-report-401-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let token = dir.join("token");
    std::fs::write(&token, "old-token").expect("write");

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/v1/workers/report",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: HeaderMap, body: axum::Json<Value>| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().expect("lock").push(auth.clone());
                if auth == "Bearer new-token" {
                    let _ = tx.send(body.0);
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/v1/workers/report",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

    let _w = worker(&[
        "--callback-url",
        &url,
        "--callback-token-file",
        token.to_str().expect("utf-8"),
    ])
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().expect("lock").is_empty() {
        assert!(Instant::now() < deadline, "no report arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&token, "new-token\n").expect("write");
    let mut rx = rx;
    let report = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the report is retried")
        .expect("a report");
    assert_eq!(report["status"], "ready");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.first().map(String::as_str), Some("Bearer old-token"));
    assert_eq!(seen.last().map(String::as_str), Some("Bearer new-token"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_drains_then_cancels() {
    let w = worker(&["--shutdown-grace", "2"]).await;
    let resp = post(&w, "/execute", json!({"job_id": "drain", "prompt": "Count to one hundred:", "max_tokens": 400, "temperature": 0})).await;
    assert_eq!(resp.status(), 200);
    sigterm(&w);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&w, "/ready").await.status(), 503);
    let refused = post(&w, "/execute", json!({"job_id": "late", "prompt": "Hi"})).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.json::<Value>().await.expect("json")["error"]["code"],
        "NOT_READY"
    );

    let events = sse(resp).await;
    assert!(
        events.iter().any(|(n, _)| n == "token"),
        "the stream ran during the grace period"
    );
    let last = events.last().expect("event");
    assert_eq!(last.0, "error");
    assert_eq!(last.1["code"], "CANCELLED");
    assert_eq!(last.1["retriable"], true);

    assert_eq!(exit_code(w, Duration::from_secs(20)).await, Some(0));
}

fn sigterm(w: &Worker) {
    let kill = Command::new("kill")
        .args(["-TERM", &w.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
}

/// The worker's exit code, waiting at most `within`.
async fn exit_code(mut w: Worker, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = w.child.try_wait().expect("wait") {
            return status.code();
        }
        assert!(Instant::now() < deadline, "the worker did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_drain_delay_takes_late_requests_and_a_second_signal_cuts_the_grace() {
    let w = worker(&["--shutdown-grace", "120", "--drain-delay", "2"]).await;
    let body = |id: &str| json!({"job_id": id, "prompt": "Count to one hundred:", "max_tokens": 400, "temperature": 0});
    let first = post(&w, "/execute", body("first")).await;
    assert_eq!(first.status(), 200);
    sigterm(&w);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&w, "/ready").await.status(), 503);
    let health: Value = get(&w, "/health").await.json().await.expect("json");
    assert_eq!(health["status"], "draining");
    let late = post(&w, "/execute", body("late")).await;
    assert_eq!(late.status(), 200, "taken during the drain delay");

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let refused = post(&w, "/execute", body("too-late")).await;
    assert_eq!(refused.status(), 503, "refused after the drain delay");

    // Both streams would run for up to two minutes; a second signal ends
    // them now.
    sigterm(&w);
    for resp in [first, late] {
        let events = sse(resp).await;
        assert!(events.iter().any(|(n, _)| n == "token"));
        let last = events.last().expect("event");
        assert_eq!(
            (last.0.as_str(), &last.1["code"]),
            ("error", &json!("CANCELLED"))
        );
        assert_eq!(last.1["retriable"], true);
    }
    assert_eq!(exit_code(w, Duration::from_secs(20)).await, Some(0));
}

#[tokio::test]
async fn too_little_memory_is_reported() {
    let (url, got) = report_sink().await;
    let status = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_llorch-worker"))
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--callback-url",
                &url,
            ])
            .args(["--ctx-size", "1000000", "--parallel", "64"])
            .arg("--model")
            .arg(common::gemma())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("runs")
    })
    .await
    .expect("join");
    assert_eq!(status.code(), Some(1));
    let (_, report) = got.await.expect("failure report");
    assert_eq!(report["status"], "failed");
    assert_eq!(report["error"]["code"], "INSUFFICIENT_MEMORY");
    let msg = report["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("MiB but only") && msg.contains("available"),
        "{msg}"
    );
}
