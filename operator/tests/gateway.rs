//! The gateway over real HTTP: routing by name, alias and id; OpenAI's
//! error envelope for unknown and conflicting names; streams passed through
//! as they stream; retries on another replica; prefix affinity; API keys;
//! a model at zero woken once and its held requests answered; a client
//! that leaves cancels its upstream request.

#[path = "gateway/common.rs"]
mod common;

use common::*;
use llorch_operator::gateway::keys::Keys;
use llorch_operator::gateway::{Config, KeyState};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn chat(model: &str, user: &str) -> serde_json::Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": user},
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_route_by_name_alias_and_id_with_openai_errors() {
    let (w1, a1) = worker(1).await;
    let (w2, a2) = worker(2).await;
    let g = gateway(Config::default(), KeyState::Open).await;
    g.publish(
        &[
            model_worker("a", "gemma", &["google/gemma-3-270m"], 1, false),
            model_worker("b", "llama", &["chat"], 1, false),
            model_worker("c", "mistral", &["chat"], 0, false),
        ],
        &[
            endpoints("a", "gemma", &[a1]),
            endpoints("b", "llama", &[a2]),
        ],
    );
    for (name, worker) in [
        ("gemma", 1),
        ("google/gemma-3-270m", 1),
        ("a/gemma", 1),
        ("b/llama", 2),
        ("llama", 2),
    ] {
        let r = post(g.addr, "/v1/chat/completions", &chat(name, "hi"), &[]).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert_eq!(r.json()["worker"], worker, "{name}");
    }
    // The body reached the worker unchanged.
    let sent = json!({"model": "gemma", "prompt": "x", "max_tokens": 3, "custom": [1, 2]});
    let r = post(g.addr, "/v1/completions", &sent, &[]).await;
    assert_eq!(r.status, 200);
    let got: serde_json::Value =
        serde_json::from_slice(&w1.last_body.lock().expect("lock")).expect("json");
    assert_eq!(got, sent);

    let r = post(g.addr, "/v1/chat/completions", &chat("nope", "hi"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "MODEL_NOT_FOUND");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = post(g.addr, "/v1/chat/completions", &chat("chat", "hi"), &[]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "MODEL_NAME_CONFLICT");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("b/llama")
    );
    let r = post(
        g.addr,
        "/v1/chat/completions",
        &json!({"messages": []}),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "INVALID_REQUEST");
    let r = post(g.addr, "/v1/chat/completions", &json!("not an object"), &[]).await;
    assert_eq!(r.status, 400);

    let models = get(g.addr, "/v1/models").await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["google/gemma-3-270m", "llama", "mistral"]);
    assert_eq!(
        models["data"][2]["llorch"]["replicas"], 0,
        "scaled to zero, still listed"
    );
    assert_eq!(w2.served.load(Ordering::SeqCst), 2);
    let metrics = get(g.addr, "/metrics").await.body;
    assert!(
        metrics.contains("llorch_gateway_requests_total{model=\"a/gemma\",code=\"200\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("llorch_gateway_requests_total{model=\"(unknown)\",code=\"404\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pass_through_and_a_client_that_leaves_cancels_upstream() {
    let (w, a) = worker(1).await;
    let g = gateway(Config::default(), KeyState::Open).await;
    g.publish(
        &[model_worker("a", "gemma", &[], 1, false)],
        &[endpoints("a", "gemma", &[a])],
    );
    let mut body = chat("gemma", "hi");
    body["stream"] = json!(true);
    let r = post(g.addr, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    assert_eq!(
        r.body,
        "data: {\"worker\":1,\"i\":0}\n\ndata: {\"worker\":1,\"i\":1}\n\ndata: {\"worker\":1,\"i\":2}\n\ndata: [DONE]\n\n"
    );
    assert_eq!(w.cut.load(Ordering::SeqCst), 0);

    body["x_chunks"] = json!(500);
    let resp = send(g.addr, "/v1/chat/completions", &body, &[]).await;
    let (first, rest) = first_frames(resp, 2).await;
    assert!(first.contains("\"i\":0"), "{first}");
    drop(rest);
    assert!(
        eventually(5, || w.cut.load(Ordering::SeqCst) == 1).await,
        "the worker's stream was not dropped"
    );
    assert!(
        eventually(5, || g.gw.replicas.get(a).outstanding() == 0).await,
        "the request still counts on its replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_full_replicas_are_retried_and_all_full_is_a_429() {
    let (w1, a1) = worker(1).await;
    let (w2, a2) = worker(2).await;
    let dead = dead_addr().await;
    let g = gateway(Config::default(), KeyState::Open).await;
    g.publish(
        &[model_worker("a", "gemma", &[], 3, false)],
        &[endpoints("a", "gemma", &[a1, a2, dead])],
    );
    w1.busy.store(true, Ordering::SeqCst);
    for i in 0..6 {
        let r = post(
            g.addr,
            "/v1/chat/completions",
            &chat("gemma", &format!("q{i}")),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["worker"], 2);
    }
    w2.busy.store(true, Ordering::SeqCst);
    let r = post(g.addr, "/v1/chat/completions", &chat("gemma", "q"), &[]).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.headers["retry-after"], "7");
    assert_eq!(r.json()["error"]["code"], "OVERLOADED");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let metrics = get(g.addr, "/metrics").await.body;
    assert!(!metrics.contains("llorch_gateway_upstream_retries_total{model=\"a/gemma\"} 0"));
    // Only a dead replica: 503, retriable.
    g.publish(
        &[model_worker("a", "gemma", &[], 1, false)],
        &[endpoints("a", "gemma", &[dead])],
    );
    let r = post(g.addr, "/v1/chat/completions", &chat("gemma", "q"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"]["retriable"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_stays_on_its_replica_and_conversations_spread() {
    let mut addrs = Vec::new();
    let mut workers = Vec::new();
    for id in 0..3 {
        let (w, a) = worker(id).await;
        workers.push(w);
        addrs.push(a);
    }
    let g = gateway(Config::default(), KeyState::Open).await;
    g.publish(
        &[model_worker("a", "gemma", &[], 3, false)],
        &[endpoints("a", "gemma", &addrs)],
    );
    let mut homes = std::collections::BTreeSet::new();
    for conv in 0..12 {
        let mut turns = chat("gemma", &format!("conversation {conv}"));
        let mut home = None;
        for turn in 0..3 {
            let r = post(g.addr, "/v1/chat/completions", &turns, &[]).await;
            let served = r.json()["worker"].as_u64();
            assert!(served.is_some(), "{}", r.body);
            assert!(
                home.is_none() || home == served,
                "conversation {conv} moved at turn {turn}"
            );
            home = served;
            let msgs = turns["messages"].as_array_mut().expect("messages");
            msgs.push(json!({"role": "assistant", "content": "ok"}));
            msgs.push(json!({"role": "user", "content": format!("turn {turn}")}));
        }
        homes.insert(home);
    }
    assert!(homes.len() >= 2, "12 conversations all went to one replica");
    // An explicit session pins unrelated prompts together (one at a
    // time: concurrent ones would spill over the load bound).
    let mut pinned = std::collections::BTreeSet::new();
    for i in 0..6 {
        let body = chat("gemma", &format!("unrelated {i}"));
        let r = post(
            g.addr,
            "/v1/chat/completions",
            &body,
            &[("x-llorch-session", "s-42")],
        )
        .await;
        pinned.insert(r.json()["worker"].as_u64());
    }
    assert_eq!(pinned.len(), 1, "{pinned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_answer_401_403_and_429_and_workers_get_their_own_key() {
    let (w, a) = worker(1).await;
    let (_w2, a2) = worker(2).await;
    let keys = Keys::parse(
        r#"
- {key: "team-a-0123456789abcdef", models: ["gemma"], requestsPerMinute: 2}
- {key: "admin-0123456789abcdef", models: ["*"]}
"#,
    )
    .expect("keys");
    let g = gateway(Config::default(), KeyState::Loaded(Arc::new(keys))).await;
    g.publish(
        &[
            model_worker("a", "gemma", &[], 1, true),
            model_worker("b", "llama", &[], 1, false),
        ],
        &[
            endpoints("a", "gemma", &[a]),
            endpoints("b", "llama", &[a2]),
        ],
    );
    let team = ("authorization", "Bearer team-a-0123456789abcdef");
    let r = post(g.addr, "/v1/chat/completions", &chat("gemma", "x"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "UNAUTHORIZED");
    let r = post(g.addr, "/v1/chat/completions", &chat("no-such", "x"), &[]).await;
    assert_eq!(r.status, 401, "without a key, nothing is said about names");
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = post(g.addr, "/v1/chat/completions", &chat("llama", "x"), &[team]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "FORBIDDEN");
    for _ in 0..2 {
        let r = post(g.addr, "/v1/chat/completions", &chat("gemma", "x"), &[team]).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(
        w.last_auth.lock().expect("lock").as_deref(),
        Some("Bearer worker-secret-key"),
        "the worker gets its ModelWorker's key, never the client's"
    );
    let r = post(g.addr, "/v1/chat/completions", &chat("gemma", "x"), &[team]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "RATE_LIMITED");
    assert_eq!(r.headers["retry-after"], "30");
    let listed = |auth: Option<&'static str>| {
        let addr = g.addr;
        async move { get_with(addr, "/v1/models", auth).await }
    };
    assert_eq!(listed(None).await.status, 401);
    let seen = listed(Some("Bearer team-a-0123456789abcdef")).await.json();
    assert_eq!(seen["data"].as_array().map(Vec::len), Some(1), "{seen}");
    assert_eq!(seen["data"][0]["id"], "gemma");
    let admin = ("authorization", "Bearer admin-0123456789abcdef");
    let r = post(
        g.addr,
        "/v1/chat/completions",
        &chat("llama", "x"),
        &[admin],
    )
    .await;
    assert_eq!(r.status, 200);
    // Keys required but unreadable: every request is refused.
    g.gw.set_keys(KeyState::Unreadable("Secret gone".into()));
    let r = post(
        g.addr,
        "/v1/chat/completions",
        &chat("llama", "x"),
        &[admin],
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_at_zero_is_woken_once_and_its_held_requests_answered() {
    let cfg = Config {
        wait_comment_interval: Duration::from_millis(100),
        ..Config::default()
    };
    let g = gateway(cfg, KeyState::Open).await;
    let at_zero = [model_worker("a", "gemma", &[], 0, false)];
    g.publish(&at_zero, &[]);
    let mut stream_body = chat("gemma", "hi");
    stream_body["stream"] = json!(true);
    let streaming = send(g.addr, "/v1/chat/completions", &stream_body, &[]).await;
    assert_eq!(streaming.status(), 200);
    assert_eq!(streaming.headers()["content-type"], "text/event-stream");
    let (waiting, streaming) = first_frames(streaming, 1).await;
    assert!(
        waiting.starts_with(": waiting for model a/gemma"),
        "{waiting}"
    );
    let held: Vec<_> = (0..5)
        .map(|i| {
            let addr = g.addr;
            tokio::spawn(async move {
                post(
                    addr,
                    "/v1/chat/completions",
                    &chat("gemma", &format!("{i}")),
                    &[],
                )
                .await
            })
        })
        .collect();
    assert!(eventually(5, || g.gw.metrics.model("a/gemma").waiting_now() == 6).await);
    assert_eq!(
        g.cluster.wakes.load(Ordering::SeqCst),
        1,
        "one scale-up for six requests"
    );
    // The replica comes up.
    let (w, a) = worker(7).await;
    g.publish(
        &[model_worker("a", "gemma", &[], 1, false)],
        &[endpoints("a", "gemma", &[a])],
    );
    for h in held {
        let r = h.await.expect("joined");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["worker"], 7);
    }
    let text = rest(streaming).await;
    assert!(text.contains("data: {\"worker\":7,\"i\":0}"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(w.served.load(Ordering::SeqCst), 6);
    let metrics = get(g.addr, "/metrics").await.body;
    assert!(
        metrics.contains("llorch_gateway_cold_start_seconds_count{model=\"a/gemma\"} 6"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_is_413_and_a_body_broken_off_is_counted_499() {
    use std::io::Write;
    let cfg = Config {
        max_body_bytes: 1024,
        ..Config::default()
    };
    let g = gateway(cfg, KeyState::Open).await;
    let big = json!({"model": "x", "prompt": "p".repeat(2000)});
    let r = post(g.addr, "/v1/completions", &big, &[]).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
    // A body that promises 500 bytes and stops after 10.
    let mut sock = std::net::TcpStream::connect(g.addr).expect("connect");
    sock.write_all(
        b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"model\": ",
    )
    .expect("write");
    drop(sock);
    let counted = "llorch_gateway_requests_total{model=\"(unknown)\",code=\"499\"} 1";
    let mut seen = String::new();
    for _ in 0..100 {
        seen = get(g.addr, "/metrics").await.body;
        if seen.contains(counted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.contains(counted), "{seen}");
    assert!(!seen.contains("code=\"413\"} 2"), "a broken body is no 413");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_turned_off_without_autoscaling_is_refused_not_woken() {
    let g = gateway(Config::default(), KeyState::Open).await;
    let mut off = (*model_worker("a", "gemma", &[], 0, false)).clone();
    off.spec.autoscaling = None;
    g.publish(&[Arc::new(off)], &[]);
    let r = post(g.addr, "/v1/chat/completions", &chat("gemma", "hi"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("scaled to zero by its spec"),
        "{}",
        r.body
    );
    assert_eq!(g.cluster.wakes.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_time_out_with_503_or_an_error_event() {
    let cfg = Config {
        cold_start_timeout: Duration::from_millis(300),
        wait_comment_interval: Duration::from_millis(100),
        cold_queue: 2,
        ..Config::default()
    };
    let g = gateway(cfg, KeyState::Open).await;
    g.publish(&[model_worker("a", "gemma", &[], 0, false)], &[]);
    let r = post(g.addr, "/v1/chat/completions", &chat("gemma", "hi"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["retry-after"], "5");
    let mut body = chat("gemma", "hi");
    body["stream"] = json!(true);
    let r = post(g.addr, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(": waiting"), "{}", r.body);
    assert!(r.body.contains("\"code\":\"NOT_READY\""), "{}", r.body);
    assert!(r.body.ends_with("data: [DONE]\n\n"), "{}", r.body);
    // A full waiting queue refuses at once.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let addr = g.addr;
            tokio::spawn(async move {
                post(addr, "/v1/chat/completions", &chat("gemma", "x"), &[]).await
            })
        })
        .collect();
    assert!(eventually(5, || g.gw.metrics.model("a/gemma").waiting_now() == 2).await);
    let r = post(g.addr, "/v1/chat/completions", &chat("gemma", "x"), &[]).await;
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("already wait")
    );
    for w in waiting {
        assert_eq!(w.await.expect("joined").status, 503);
    }
}
