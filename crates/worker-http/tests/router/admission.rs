//! Who gets in: the API key, admission and its 429, and cancellation by
//! `/cancel` or by a client that leaves.

use crate::fake::held;
use crate::harness::{
    Server, SseReader, config, fields_of, json_of, metrics_reach, names, post, sse,
};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;
use worker_http::ServerConfig;

#[tokio::test]
async fn an_api_key_guards_every_route_but_the_probes() {
    let s = Server::ready(
        ServerConfig {
            api_key: Some("s3cret".into()),
            ..config()
        },
        vec![],
    );
    let execute = json!({"job_id": "a", "prompt": "Hi"}).to_string();
    let refused = [
        ("/execute", None),
        ("/v1/completions", Some("wrong")),
        ("/v1/chat/completions", Some("")),
    ];
    for (path, key) in refused {
        let (status, _, err) = json_of(s.send(post(path, execute.clone(), key)).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(err["error"]["code"], "UNAUTHORIZED");
        assert_eq!(
            err["error"]["message"],
            "missing or wrong API key: send Authorization: Bearer <key>"
        );
    }
    metrics_reach(
        &s,
        &["llorch_worker_requests_total{outcome=\"rejected\"} 3"],
    )
    .await;
    for path in ["/tokenize", "/detokenize", "/cancel"] {
        let resp = s.send(post(path, "{}", None)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let req = Request::get("/v1/models")
        .body(Body::empty())
        .expect("request");
    assert_eq!(s.send(req).await.status(), StatusCode::UNAUTHORIZED);
    // A bad body with no key: the key is checked first.
    let resp = s.send(post("/execute", "{", None)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = s.send(post("/execute", execute, Some("s3cret"))).await;
    assert_eq!(sse(resp).await.last().expect("end").0, "end");
    let req = Request::get("/v1/models")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .expect("request");
    assert_eq!(s.send(req).await.status(), StatusCode::OK);
    for open in ["/health", "/ready", "/metrics"] {
        assert_eq!(s.get(open).await.status(), StatusCode::OK, "{open}");
    }
}

#[tokio::test]
async fn a_full_worker_answers_429_until_a_place_frees() {
    let s = Server::ready(
        ServerConfig {
            parallel: 1,
            queue_depth: 0,
            ..config()
        },
        vec![held()],
    );
    let held = SseReader::new(
        s.post("/execute", json!({"job_id": "long", "prompt": "a"}))
            .await,
    );
    // Wait for the held job's prompt, then count what is tokenized.
    metrics_reach(&s, &["llorch_worker_requests_in_flight 1"]).await;
    let tokenized = s.engine.tokenized().len();
    for (path, body) in [
        ("/execute", json!({"job_id": "second", "prompt": "b"})),
        ("/v1/completions", json!({"prompt": "b"})),
    ] {
        let (status, headers, err) = json_of(s.post(path, body).await).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(err["error"]["code"], "OVERLOADED");
        assert_eq!(err["error"]["retriable"], true);
        assert_eq!(
            err["error"]["message"],
            "all 1 slots and 0 queue places are taken; retry later"
        );
    }
    // A full worker refuses before it parses or tokenizes anything.
    assert_eq!(s.engine.tokenized().len(), tokenized);
    metrics_reach(
        &s,
        &[
            "llorch_worker_requests_total{outcome=\"rejected\"} 2",
            "llorch_worker_requests_in_flight 1",
        ],
    )
    .await;
    for _ in 0..2 {
        let (status, _, body) = json_of(s.post("/cancel", json!({"job_id": "long"})).await).await;
        assert_eq!(status, StatusCode::ACCEPTED, "cancel is idempotent");
        assert_eq!(body, json!({"job_id": "long", "status": "cancelling"}));
    }
    let events = held.rest().await;
    assert_eq!(
        names(&events),
        ["started", "error"],
        "exactly one terminal event"
    );
    assert_eq!(events[1].1["code"], "CANCELLED");
    assert_eq!(events[1].1["message"], "the job was cancelled");
    assert_eq!(events[1].1["retriable"], false);
    let resp = s
        .post("/execute", json!({"job_id": "after", "prompt": "c"}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "the place is free again");
    sse(resp).await;
    metrics_reach(
        &s,
        &[
            "llorch_worker_requests_total{outcome=\"cancelled\"} 1",
            "llorch_worker_requests_total{outcome=\"ok\"} 1",
            "llorch_worker_requests_in_flight 0",
        ],
    )
    .await;
}

#[tokio::test]
async fn more_choices_than_places_is_400() {
    let s = Server::ready(config(), vec![]);
    let (status, _, err) = json_of(
        s.post("/v1/completions", json!({"prompt": "x", "n": 4}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        err["error"]["message"],
        "4 choices need 4 places; this worker has 3 (--parallel plus --queue-depth)"
    );
    let (status, _, err) = json_of(
        s.post("/v1/completions", json!({"prompt": "x", "n": 17}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(fields_of(&err), ["n"]);
    assert!(s.engine.submitted().is_empty());
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_job() {
    let s = Server::ready(config(), vec![held()]);
    let resp = s
        .post("/execute", json!({"job_id": "gone", "prompt": "a"}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);
    metrics_reach(
        &s,
        &[
            "llorch_worker_requests_total{outcome=\"cancelled\"} 1",
            "llorch_worker_requests_in_flight 0",
        ],
    )
    .await;
}

#[tokio::test]
async fn cancelling_an_openai_id_ends_every_choice() {
    let s = Server::ready(config(), vec![held(), held()]);
    let body = json!({"messages": [{"role": "user", "content": "x"}], "n": 2, "stream": true});
    let mut reader = SseReader::new(s.post("/v1/chat/completions", body).await);
    let (_, first) = reader.next().await.expect("role chunk");
    let id = first["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("chatcmpl-"), "{id}");
    let resp = s.post("/cancel", json!({"job_id": id})).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let rest = reader.rest().await;
    let (_, last) = rest.last().expect("done");
    assert_eq!(last, &json!("[DONE]"));
    let error = &rest[rest.len() - 2].1;
    assert_eq!(error["error"]["code"], "CANCELLED");
    metrics_reach(
        &s,
        &[
            "llorch_worker_requests_total{outcome=\"cancelled\"} 2",
            "llorch_worker_requests_in_flight 0",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_frees_its_place() {
    use crate::fake::Script;
    use worker_common::job::JobEvent;

    let s = Server::ready(
        ServerConfig {
            parallel: 1,
            queue_depth: 0,
            stall_timeout: std::time::Duration::from_millis(200),
            ..config()
        },
        vec![Script::Hold(
            (1..=200)
                .map(|n| JobEvent::Text {
                    text: "word ".into(),
                    tokens_out: n,
                })
                .collect(),
        )],
    );
    // The stream is never read: its items back up, and after the stall
    // limit the job is cancelled and its place freed.
    let stalled = s
        .post("/execute", json!({"job_id": "stalled", "prompt": "a"}))
        .await;
    assert_eq!(stalled.status(), StatusCode::OK);
    metrics_reach(
        &s,
        &[
            "llorch_worker_requests_total{outcome=\"cancelled\"} 1",
            "llorch_worker_requests_in_flight 0",
        ],
    )
    .await;
    let resp = s
        .post("/execute", json!({"job_id": "next", "prompt": "b"}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "the place is free again");
    let events = sse(resp).await;
    assert_eq!(names(&events).last().copied(), Some("end"));
    drop(stalled);
}
