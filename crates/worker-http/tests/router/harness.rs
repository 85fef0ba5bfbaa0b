//! A router on a fake engine, requests to it, and readers of its answers.

use crate::fake::{FakeEngine, Script};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use worker_http::{AppState, ServerConfig, app};

pub fn config() -> ServerConfig {
    ServerConfig {
        parallel: 2,
        queue_depth: 1,
        api_key: None,
        body_limit: 4096,
        worker_id: "w-test".into(),
        stall_timeout: Duration::from_secs(30),
    }
}

/// A router on shared state with a fake engine.
pub struct Server {
    pub state: Arc<AppState>,
    pub engine: Arc<FakeEngine>,
    pub router: Router,
}

impl Server {
    /// A ready server.
    pub fn ready(config: ServerConfig, scripts: Vec<Script>) -> Self {
        let server = Server::loading(config, scripts);
        server.state.set_ready(server.engine.clone());
        server
    }

    /// A server still loading its model.
    pub fn loading(config: ServerConfig, scripts: Vec<Script>) -> Self {
        let state = AppState::new(config);
        Server {
            router: app(state.clone()),
            engine: FakeEngine::with(scripts),
            state,
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Response {
        self.router.clone().oneshot(req).await.expect("infallible")
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.send(post(path, body.to_string(), None)).await
    }

    pub async fn get(&self, path: &str) -> Response {
        let req = Request::get(path).body(Body::empty()).expect("request");
        self.send(req).await
    }

    pub async fn metrics(&self) -> String {
        text(self.get("/metrics").await).await
    }
}

pub fn post(path: &str, body: impl Into<Body>, key: Option<&str>) -> Request<Body> {
    let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    req.body(body.into()).expect("request")
}

pub async fn text(resp: Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf-8")
}

pub async fn json_of(resp: Response) -> (StatusCode, HeaderMap, Value) {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = text(resp).await;
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, headers, value)
}

/// The fields an `INVALID_REQUEST` answer names, in order.
pub fn fields_of(body: &Value) -> Vec<String> {
    body["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|e| e["field"].as_str().expect("field").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// SSE blocks as (event name, data), data parsed as JSON where it is.
pub fn parse_sse(text: &str) -> Vec<(String, Value)> {
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

pub async fn sse(resp: Response) -> Vec<(String, Value)> {
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    parse_sse(&text(resp).await)
}

/// Reads an SSE body event by event, for streams that stay open.
pub struct SseReader {
    body: axum::body::BodyDataStream,
    buf: String,
}

impl SseReader {
    pub fn new(resp: Response) -> Self {
        assert_eq!(resp.status(), StatusCode::OK);
        SseReader {
            body: resp.into_body().into_data_stream(),
            buf: String::new(),
        }
    }

    /// The next event with data.
    pub async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(ev) = parse_sse(&block).pop() {
                    return Some(ev);
                }
                continue;
            }
            let chunk = self.body.next().await?.expect("chunk");
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }

    /// Every event left.
    pub async fn rest(mut self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Some(ev) = self.next().await {
            out.push(ev);
        }
        out
    }
}

pub fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// Polls `/metrics` until it holds every line of `want`.
pub async fn metrics_reach(server: &Server, want: &[&str]) {
    for _ in 0..500 {
        let m = server.metrics().await;
        if want.iter().all(|w| m.contains(w)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("metrics never showed {want:?}:\n{}", server.metrics().await);
}
