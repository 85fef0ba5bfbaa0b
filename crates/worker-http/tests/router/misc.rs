//! What every route shares (malformed and oversized bodies), tokens,
//! models, and unknown routes.

use crate::fake::{BOS, BYTE_BASE, MODEL, Script};
use crate::harness::{Server, config, fields_of, json_of, metrics_reach, post};
use axum::http::StatusCode;
use serde_json::json;
use worker_common::job::JobEvent;

#[tokio::test]
async fn malformed_and_non_object_bodies_are_refused_on_every_route() {
    let s = Server::ready(config(), vec![]);
    for path in [
        "/execute",
        "/v1/completions",
        "/v1/chat/completions",
        "/tokenize",
        "/detokenize",
        "/cancel",
    ] {
        let (status, _, err) = json_of(s.send(post(path, "{\"job_id\": ", None)).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        let msg = err["error"]["message"].as_str().expect("message");
        assert!(
            msg.starts_with("malformed JSON at line 1, column 11:"),
            "{path}: {msg}"
        );
        let (status, _, err) = json_of(s.send(post(path, "[1, 2]", None)).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(
            err["error"]["details"],
            json!([{"field": "(body)", "constraint": "a JSON object", "message": "the body must be a JSON object"}]),
            "{path}"
        );
        assert_eq!(err["error"]["message"], "invalid request: (body)");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let s = Server::ready(config(), vec![]);
    let big = "x".repeat(5000);
    for path in ["/execute", "/v1/completions", "/tokenize"] {
        let (status, _, err) = json_of(
            s.post(
                path,
                json!({"job_id": "big", "prompt": big, "content": big}),
            )
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(err["error"]["code"], "PAYLOAD_TOO_LARGE");
    }
}

#[tokio::test]
async fn tokenize_and_detokenize_round_trip() {
    let s = Server::ready(config(), vec![]);
    let (status, _, t) = json_of(s.post("/tokenize", json!({"content": "Hi"})).await).await;
    assert_eq!(status, StatusCode::OK);
    let ids = json!([b'H' as u32 + BYTE_BASE, b'i' as u32 + BYTE_BASE]);
    assert_eq!(t, json!({"tokens": ids}));
    let (_, _, t) = json_of(
        s.post("/tokenize", json!({"content": "Hi", "add_special": true}))
            .await,
    )
    .await;
    assert_eq!(t["tokens"][0], BOS);
    assert_eq!(s.engine.tokenized()[1], ("Hi".to_string(), true, true));
    let (_, _, d) = json_of(s.post("/detokenize", json!({"tokens": ids})).await).await;
    assert_eq!(d, json!({"content": "Hi"}));

    let (status, _, err) = json_of(
        s.post("/tokenize", json!({"content": 5, "add_special": "no"}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(fields_of(&err), ["content", "content", "add_special"]);
    for bad in [
        json!({}),
        json!({"tokens": [1, -1]}),
        json!({"tokens": [4294967296u64]}),
        json!({"tokens": "1"}),
    ] {
        let (status, _, err) = json_of(s.post("/detokenize", bad.clone()).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            err["error"]["details"],
            json!([{"field": "tokens", "constraint": "an array of token ids", "message": "tokens must be an array of token ids"}])
        );
    }
    let (status, _, err) = json_of(s.post("/cancel", json!({"job_id": null})).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["details"][0]["message"], "job_id is required");
}

#[tokio::test]
async fn models_unknown_routes_and_wrong_methods() {
    let s = Server::ready(config(), vec![]);
    let (status, _, models) = json_of(s.get("/v1/models").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["data"][0]["owned_by"], "llorch");
    let (status, _, err) = json_of(s.get("/no/such/route").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "NOT_FOUND");
    let (status, _, err) = json_of(s.get("/execute").await).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(err["error"]["code"], "METHOD_NOT_ALLOWED");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("llorch_worker_memory_bytes 1048576"),
        "{metrics}"
    );
}

/// xorshift64*, fixed seed: the same bodies on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One hostile change to a JSON body: a byte flipped or cut, a value
/// replaced by another type, an extreme number, deep nesting, control
/// characters or invalid UTF-8 spliced in.
fn mutate(body: &mut Vec<u8>, rng: &mut Rng) {
    const SPLICES: &[&[u8]] = &[
        b"null",
        b"-1",
        b"1e400",
        b"18446744073709551616",
        b"\"\\u0000\"",
        b"\xff\xfe",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        b"{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{}}}}}}}",
        b"\"\\ud800\"",
        b"true",
        b"{}",
        b"[]",
        b"0.0000000000000000000000001",
        b"\"\\n\\t\\u001b[31m\"",
    ];
    let at = rng.below(body.len() + 1);
    match rng.below(4) {
        0 if !body.is_empty() => {
            let i = at.min(body.len() - 1);
            body[i] ^= 1 << rng.below(8);
        }
        1 => body.truncate(at),
        _ => {
            let end = (at + rng.below(12)).min(body.len());
            let splice = SPLICES[rng.below(SPLICES.len())];
            body.splice(at..end, splice.iter().copied());
        }
    }
}

#[tokio::test]
async fn hostile_bodies_get_4xx_or_are_served_never_5xx() {
    const PER_ROUTE: usize = 400;
    let s = Server::ready(config(), vec![]);
    let valid: [(&str, serde_json::Value); 6] = [
        (
            "/execute",
            json!({"job_id": "j", "prompt": "Hi", "max_tokens": 2, "temperature": 0.5, "stop": ["x"], "logit_bias": {"65": -1}}),
        ),
        (
            "/v1/completions",
            json!({"prompt": "Hi", "max_tokens": 2, "n": 1, "logprobs": 1, "stop": "x", "stream": false}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Hi"}], "max_tokens": 2, "response_format": {"type": "json_object"}}),
        ),
        ("/tokenize", json!({"content": "Hi", "add_special": true})),
        ("/detokenize", json!({"tokens": [72, 105]})),
        ("/cancel", json!({"job_id": "none"})),
    ];
    let mut rng = Rng(0x00B0_D1E5);
    let mut report = Vec::new();
    for (path, body) in &valid {
        let (mut refused, mut served) = (0, 0);
        for i in 0..PER_ROUTE {
            let mut bytes = body.to_string().into_bytes();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut bytes, &mut rng);
            }
            let resp = s.send(post(path, bytes.clone(), None)).await;
            let status = resp.status();
            assert!(
                !status.is_server_error(),
                "{path} body {i}: {status} for {:?}",
                String::from_utf8_lossy(&bytes)
            );
            if status.is_client_error() {
                refused += 1;
            } else {
                served += 1;
            }
            // Read the whole answer, streams included.
            let _ = crate::harness::text(resp).await;
        }
        report.push(format!("{path}: {refused} refused, {served} served"));
    }
    println!(
        "{PER_ROUTE} hostile bodies per route, none 5xx: {}",
        report.join("; ")
    );
}

#[tokio::test]
async fn metrics_give_capacity_and_kv_use_also_under_the_inference_extension_names() {
    let held = Script::Hold(vec![
        JobEvent::Started { seed: 1 },
        JobEvent::Text {
            text: "Hi".into(),
            tokens_out: 2,
        },
    ]);
    let s = Server::ready(config(), vec![held]);
    let resp = s
        .post("/execute", json!({"job_id": "kv", "prompt": "abc"}))
        .await;
    // BOS and three bytes, two generated: 6 of 2 slots × 64 tokens.
    metrics_reach(
        &s,
        &[
            "llorch_worker_slots 2",
            "llorch_worker_queue_limit 1",
            "llorch_worker_kv_cache_usage_ratio 0.046875",
            "vllm:kv_cache_usage_perc 0.046875",
            "vllm:num_requests_running 1",
            "vllm:num_requests_waiting 0",
        ],
    )
    .await;
    drop(resp);
    metrics_reach(
        &s,
        &[
            "llorch_worker_kv_cache_usage_ratio 0.000000",
            "vllm:num_requests_running 0",
        ],
    )
    .await;
}
