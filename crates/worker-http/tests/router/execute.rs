//! `/execute`: its stream of events, the job it builds from a body, and
//! what it refuses.

use crate::fake::{BOS, BYTE_BASE, CONTEXT, MODEL, Script, held, logprob, outcome, reply};
use crate::harness::{Server, SseReader, config, fields_of, json_of, metrics_reach, names, sse};
use axum::http::StatusCode;
use serde_json::json;
use worker_common::job::{JobEvent, Outcome, StopReason};

#[tokio::test]
async fn execute_streams_started_tokens_then_end() {
    let s = Server::ready(
        config(),
        vec![reply(&["Hel", "lo", "!"], StopReason::MaxTokens)],
    );
    let resp = s
        .post(
            "/execute",
            json!({"job_id": "j1", "prompt": "Hi", "max_tokens": 3}),
        )
        .await;
    let events = sse(resp).await;
    assert_eq!(
        names(&events),
        ["started", "token", "token", "token", "end"]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "type mirrors the event name");
    }
    let started = &events[0].1;
    assert_eq!(started["job_id"], "j1");
    assert_eq!(started["model"], MODEL);
    assert!(started["started_at"].as_str().expect("time").ends_with('Z'));
    let tokens: Vec<(&str, u64)> = events[1..4]
        .iter()
        .map(|(_, d)| (d["t"].as_str().expect("t"), d["i"].as_u64().expect("i")))
        .collect();
    assert_eq!(tokens, [("Hel", 0), ("lo", 1), ("!", 2)]);
    assert!(events[1].1.get("logprobs").is_none(), "not asked for");
    let end = &events[4].1;
    assert_eq!(end["stop_reason"], "MAX_TOKENS");
    assert_eq!(end["tokens_in"], 3, "BOS and two bytes");
    assert_eq!(end["tokens_out"], 3);
    assert_eq!(end["tokens_cached"], 0);
    assert_eq!(end["decode_time_ms"], 3);
    assert_eq!(end["seed"], 42);
    assert!(end.get("stop_sequence_matched").is_none());
    metrics_reach(
        &s,
        &[
            "llorch_worker_requests_total{outcome=\"ok\"} 1",
            "llorch_worker_tokens_in_total 3",
            "llorch_worker_tokens_out_total 3",
            "llorch_worker_requests_in_flight 0",
            "llorch_worker_queue_depth 0",
        ],
    )
    .await;
}

#[tokio::test]
async fn execute_builds_its_job_with_its_defaults() {
    let s = Server::ready(config(), vec![]);
    sse(s
        .post("/execute", json!({"job_id": "a", "prompt": "Hi"}))
        .await)
    .await;
    let body = json!({
        "job_id": "b", "prompt": "Hi", "max_tokens": 500, "temperature": 0.5, "top_p": 0.9,
        "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.3, "frequency_penalty": -1,
        "presence_penalty": 1.5, "logit_bias": {"9": 1, "3": -100}, "seed": 11,
        "stop": "\n", "logprobs": 2, "unknown": "ignored"
    });
    let resp = s.post("/execute", body).await;
    let status = resp.status();
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "max_tokens is within the context"
    );
    let (_, _, err) = json_of(resp).await;
    assert_eq!(fields_of(&err), ["max_tokens"]);
    assert_eq!(
        err["error"]["details"][0]["constraint"],
        "an integer in 1..=64"
    );
    let body = json!({
        "job_id": "b", "prompt": "Hi", "max_tokens": 60, "temperature": 0.5, "top_p": 0.9,
        "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.3, "frequency_penalty": -1,
        "presence_penalty": 1.5, "logit_bias": {"9": 1, "3": -100}, "seed": 11,
        "stop": "\n", "logprobs": 2, "unknown": "ignored"
    });
    sse(s.post("/execute", body).await).await;
    let jobs = s.engine.submitted();
    let (plain, full) = (&jobs[0], &jobs[1]);
    assert_eq!(
        plain.prompt,
        [BOS, b'H' as u32 + BYTE_BASE, b'i' as u32 + BYTE_BASE]
    );
    assert_eq!(
        plain.max_tokens,
        CONTEXT - 3,
        "at most 256, within the room left"
    );
    let d = &plain.sampling;
    assert_eq!(
        (d.temperature, d.top_p, d.top_k, d.min_p, d.repeat_penalty),
        (1.0, 1.0, 0, 0.0, 1.0),
        "every cut off unless asked for"
    );
    assert_eq!((d.frequency_penalty, d.presence_penalty), (0.0, 0.0));
    assert_eq!((d.repeat_last_n, d.seed), (64, None));
    assert!(plain.stop.is_empty() && plain.logprobs.is_none() && !plain.json_object);
    assert_eq!(full.max_tokens, 60);
    let f = &full.sampling;
    assert_eq!(
        (f.temperature, f.top_p, f.top_k, f.min_p, f.repeat_penalty),
        (0.5, 0.9, 5, 0.1, 1.3)
    );
    assert_eq!((f.frequency_penalty, f.presence_penalty), (-1.0, 1.5));
    assert_eq!(f.logit_bias, [(3, -100.0), (9, 1.0)]);
    assert_eq!(f.seed, Some(11));
    assert_eq!(full.stop, ["\n"]);
    assert_eq!(full.logprobs, Some(2));
    assert!(
        s.engine
            .tokenized()
            .iter()
            .all(|(_, add, parse)| *add && !*parse),
        "a raw prompt: BOS added, special text not parsed"
    );
}

#[tokio::test]
async fn execute_lists_every_bad_field_at_once() {
    let s = Server::ready(config(), vec![]);
    let body = json!({
        "job_id": "has space", "prompt": "", "max_tokens": 0, "temperature": 9, "top_p": 0,
        "top_k": -1, "min_p": "x", "repetition_penalty": 1e-50, "frequency_penalty": 2.5,
        "presence_penalty": -3, "logit_bias": {"300": 1}, "seed": "x",
        "stop": ["", "x"], "logprobs": 21
    });
    let (status, _, err) = json_of(s.post("/execute", body).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "INVALID_REQUEST");
    assert_eq!(err["error"]["retriable"], false);
    let fields = [
        "job_id",
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repetition_penalty",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "seed",
        "stop",
        "logprobs",
    ];
    assert_eq!(fields_of(&err), fields);
    assert_eq!(
        err["error"]["message"],
        format!("invalid request: {}", fields.join(", "))
    );
    let details = &err["error"]["details"];
    assert_eq!(
        details[0],
        json!({"field": "job_id", "constraint": "1-64 of [A-Za-z0-9._-]", "message": "job_id must be 1-64 of [A-Za-z0-9._-]"})
    );
    assert_eq!(
        details[3],
        json!({"field": "temperature", "constraint": "[0, 2]", "message": "temperature must be in [0, 2], got 9"})
    );
    assert_eq!(details[4]["constraint"], "(0, 1]");
    assert_eq!(details[6]["message"], "min_p must be a number");
    assert_eq!(details[7]["message"], "repetition_penalty is too small");
    assert_eq!(
        details[10]["message"],
        "logit_bias: \"300\" is not a token id below 300"
    );
    assert_eq!(
        details[12]["message"],
        "stop must hold only non-empty strings of at most 256 bytes"
    );
    assert_eq!(details[13]["constraint"], "an integer in 0..=20");

    // Absent and wrongly typed required fields; null is absent.
    let (_, _, err) = json_of(
        s.post("/execute", json!({"job_id": 5, "prompt": null}))
            .await,
    )
    .await;
    assert_eq!(fields_of(&err), ["job_id", "job_id", "prompt"]);
    assert_eq!(
        err["error"]["details"][0]["message"],
        "job_id must be a string"
    );
    assert_eq!(err["error"]["details"][1]["message"], "job_id is required");
    assert_eq!(err["error"]["details"][2]["message"], "prompt is required");
    assert!(s.engine.submitted().is_empty(), "nothing ran");
    metrics_reach(&s, &["llorch_worker_requests_total{outcome=\"invalid\"} 2"]).await;
}

#[tokio::test]
async fn a_prompt_that_fills_the_context_is_refused_without_echo() {
    let s = Server::ready(config(), vec![]);
    let long = "word ".repeat(20);
    let (status, _, err) = json_of(
        s.post("/execute", json!({"job_id": "long", "prompt": long}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        err["error"]["message"],
        "the prompt has 101 tokens but the context holds 64"
    );
    let (status, _, err) = json_of(s.post("/v1/completions", json!({"prompt": long})).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        !err.to_string().contains("word word"),
        "the prompt is never echoed"
    );
}

#[tokio::test]
async fn a_running_job_id_cannot_be_reused() {
    let s = Server::ready(config(), vec![held()]);
    let held = SseReader::new(
        s.post("/execute", json!({"job_id": "dup", "prompt": "a"}))
            .await,
    );
    let (status, _, err) = json_of(
        s.post("/execute", json!({"job_id": "dup", "prompt": "b"}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["message"], "job \"dup\" is already running");
    assert_eq!(
        s.post("/cancel", json!({"job_id": "dup"})).await.status(),
        202
    );
    let last = held.rest().await.pop().expect("an event");
    assert_eq!(last.1["code"], "CANCELLED");
}

#[tokio::test]
async fn execute_reports_progress_while_tokens_come() {
    let first = JobEvent::Text {
        text: "a".into(),
        tokens_out: 1,
    };
    let s = Server::ready(config(), vec![Script::Hold(vec![first])]);
    let mut reader = SseReader::new(
        s.post("/execute", json!({"job_id": "p", "prompt": "x"}))
            .await,
    );
    let mut seen = Vec::new();
    while let Some((name, data)) = reader.next().await {
        if name == "metrics" {
            assert_eq!(data["type"], "metrics");
            assert_eq!(data["tokens_out"], 1);
            assert!(data["decode_time_ms"].is_u64());
            assert!(data["tokens_per_sec"].as_f64().expect("rate") > 0.0);
            break;
        }
        seen.push(name);
    }
    assert_eq!(seen, ["started", "token"], "progress follows the tokens");
    assert_eq!(
        s.post("/cancel", json!({"job_id": "p"})).await.status(),
        202
    );
    let rest = reader.rest().await;
    assert_eq!(rest.last().map(|(n, _)| n.as_str()), Some("error"));
}

#[tokio::test]
async fn a_matched_stop_sequence_is_named_and_its_tokens_left_out() {
    let done = Outcome {
        stop_sequence: Some("\n".into()),
        ..outcome(Some(StopReason::StopSequence), 2)
    };
    let s = Server::ready(
        config(),
        vec![Script::Replay(vec![
            JobEvent::Started { seed: 42 },
            logprob("a", 0),
            JobEvent::Text {
                text: "a".into(),
                tokens_out: 1,
            },
            logprob("\n", 1),
            JobEvent::Done(done),
        ])],
    );
    let body = json!({"job_id": "s", "prompt": "x", "stop": ["\n"], "logprobs": 0});
    let events = sse(s.post("/execute", body).await).await;
    assert_eq!(names(&events), ["started", "token", "end"]);
    let end = &events[2].1;
    assert_eq!(end["stop_reason"], "STOP_SEQUENCE");
    assert_eq!(end["stop_sequence_matched"], "\n");
    assert_eq!(events[1].1["logprobs"].as_array().map(Vec::len), Some(1));
    assert_eq!(s.engine.submitted()[0].stop, ["\n"]);
}
