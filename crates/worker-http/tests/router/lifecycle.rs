//! Engine failures, and the worker's phases from loading to shutdown.

use crate::fake::{CONTEXT, MODEL, Script, failing, held, outcome};
use crate::harness::{Server, SseReader, config, json_of, metrics_reach, names, post, sse};
use axum::http::{StatusCode, header};
use serde_json::json;
use tower::ServiceExt;
use worker_common::ErrorCode;
use worker_common::job::JobEvent;
use worker_http::{EngineError, Phase};

#[tokio::test]
async fn engine_failures_keep_their_code() {
    let s = Server::ready(
        config(),
        vec![
            failing(ErrorCode::VramOom, "out of VRAM"),
            failing(ErrorCode::CudaError, "kernel failed"),
            failing(ErrorCode::Internal, "broken"),
            Script::Refuse(EngineError {
                code: ErrorCode::InsufficientVram,
                message: "no room".into(),
            }),
        ],
    );
    let events = sse(s
        .post("/execute", json!({"job_id": "oom", "prompt": "x"}))
        .await)
    .await;
    assert_eq!(names(&events), ["started", "token", "error"]);
    assert_eq!(
        events[2].1,
        json!({"type": "error", "code": "VRAM_OOM", "message": "out of VRAM", "retriable": true})
    );
    let (status, _, err) = json_of(s.post("/v1/completions", json!({"prompt": "x"})).await).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(err["error"]["code"], "CUDA_ERROR");
    assert_eq!(err["error"]["message"], "kernel failed");
    let body = json!({"prompt": "x", "stream": true});
    let events = sse(s.post("/v1/completions", body).await).await;
    assert_eq!(events[0].1["choices"][0]["text"], "Hi");
    assert_eq!(
        events[1].1,
        json!({"error": {"code": "INTERNAL", "message": "broken", "retriable": false}})
    );
    assert_eq!(events[2].1, json!("[DONE]"));
    assert_eq!(events.len(), 3);
    let (status, _, err) = json_of(
        s.post("/execute", json!({"job_id": "r", "prompt": "x"}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err["error"]["code"], "INSUFFICIENT_VRAM");
    metrics_reach(
        &s,
        &[
            "llorch_worker_requests_total{outcome=\"error\"} 4",
            "llorch_worker_requests_in_flight 0",
        ],
    )
    .await;
    let resp = s
        .post("/execute", json!({"job_id": "r", "prompt": "x"}))
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a refused job leaves no trace"
    );
}

#[tokio::test]
async fn a_loading_worker_is_not_ready() {
    let s = Server::loading(config(), vec![]);
    let (status, _, health) = json_of(s.get("/health").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "loading");
    assert_eq!(health["worker_id"], "w-test");
    assert!(health.get("model").is_none());
    let (status, _, ready) = json_of(s.get("/ready").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready, json!({"ready": false, "status": "loading"}));
    for (path, body) in [
        ("/execute", json!({"job_id": "a", "prompt": "x"})),
        ("/v1/chat/completions", json!({"messages": []})),
        ("/tokenize", json!({"content": "x"})),
    ] {
        let (status, headers, err) = json_of(s.post(path, body).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(headers[header::RETRY_AFTER], "5");
        assert_eq!(err["error"]["code"], "NOT_READY");
        assert_eq!(
            err["error"]["message"],
            "the worker is still loading its model"
        );
    }
    assert_eq!(s.state.phase(), Phase::Loading);
}

#[tokio::test]
async fn leaving_still_serves_and_draining_refuses() {
    let s = Server::ready(config(), vec![]);
    let (status, _, ready) = json_of(s.get("/ready").await).await;
    assert_eq!((status, ready), (StatusCode::OK, json!({"ready": true})));
    let (_, _, health) = json_of(s.get("/health").await).await;
    assert_eq!(health["status"], "ready");
    assert_eq!(health["model"], MODEL);
    assert_eq!(health["context_length"], CONTEXT);

    s.state.start_leaving();
    assert_eq!(s.state.phase(), Phase::Leaving);
    let (status, _, ready) = json_of(s.get("/ready").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["status"], "draining");
    let resp = s
        .post("/execute", json!({"job_id": "late", "prompt": "x"}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "taken while leaving");
    sse(resp).await;

    s.state.start_draining();
    for (path, body) in [
        ("/execute", json!({"job_id": "a", "prompt": "x"})),
        ("/v1/completions", json!({"prompt": "x"})),
    ] {
        let (status, headers, err) = json_of(s.post(path, body).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(err["error"]["code"], "NOT_READY");
        assert_eq!(
            err["error"]["message"],
            "the worker is shutting down; send the request elsewhere"
        );
    }
    let (_, _, health) = json_of(s.get("/health").await).await;
    assert_eq!(health["status"], "draining");
}

#[tokio::test]
async fn the_end_of_the_grace_period_cuts_open_streams_retriably() {
    let s = Server::ready(config(), vec![held(), held()]);
    let stream = SseReader::new(
        s.post("/execute", json!({"job_id": "a", "prompt": "x"}))
            .await,
    );
    let whole = {
        let router = s.router.clone();
        tokio::spawn(async move {
            let req = post("/v1/completions", json!({"prompt": "x"}).to_string(), None);
            router.oneshot(req).await.expect("infallible")
        })
    };
    metrics_reach(&s, &["llorch_worker_requests_in_flight 2"]).await;
    s.state.abort_streams();
    let events = stream.rest().await;
    let (name, error) = events.last().expect("an event");
    assert_eq!(name, "error");
    assert_eq!(error["code"], "CANCELLED");
    assert_eq!(error["retriable"], true);
    let (status, headers, err) = json_of(whole.await.expect("task")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(err["error"]["code"], "CANCELLED");
    assert_eq!(err["error"]["retriable"], true);
}

#[tokio::test]
async fn an_engine_that_drops_or_cancels_a_job_ends_the_stream() {
    let started = JobEvent::Started { seed: 42 };
    let s = Server::ready(
        config(),
        vec![
            Script::Replay(vec![started.clone()]),
            Script::Replay(vec![started, JobEvent::Done(outcome(None, 0))]),
        ],
    );
    let events = sse(s
        .post("/execute", json!({"job_id": "a", "prompt": "x"}))
        .await)
    .await;
    assert_eq!(
        events.last().map(|(_, d)| d.clone()),
        Some(
            json!({"type": "error", "code": "INTERNAL", "message": "the engine stopped", "retriable": false})
        )
    );
    let events = sse(s
        .post("/execute", json!({"job_id": "b", "prompt": "x"}))
        .await)
    .await;
    assert_eq!(names(&events), ["started", "error"]);
    assert_eq!(events[1].1["code"], "CANCELLED");
    assert_eq!(events[1].1["message"], "the job was cancelled");
    metrics_reach(
        &s,
        &[
            "llorch_worker_requests_total{outcome=\"error\"} 1",
            "llorch_worker_requests_total{outcome=\"cancelled\"} 1",
        ],
    )
    .await;
}
