//! The gateway's routing over real HTTP on real ports, with stand-in
//! workers behind it: each answers the OpenAI routes with its own id (so a
//! test sees which replica served), streams slowly when asked, can be made
//! to refuse with 429, and notices a client that went away. The end-to-end
//! test with real workers in a cluster is tests/cluster/gateway-checks.sh.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use llorch_api::{ModelWorker, SecretKeySelector};
use llorch_operator::gateway::catalog::Catalog;
use llorch_operator::gateway::{self, Cluster, Gateway, KeyState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A stand-in worker.
#[derive(Debug, Default)]
pub struct Worker {
    pub id: usize,
    /// Answer 429 to completions.
    pub busy: AtomicBool,
    /// Completions received.
    pub served: AtomicUsize,
    /// Streams whose client left before their end.
    pub cut: AtomicUsize,
    /// The `Authorization` of the last request.
    pub last_auth: Mutex<Option<String>>,
    /// The last body received.
    pub last_body: Mutex<Vec<u8>>,
}

/// Sends a drop notice unless the stream ran to its end.
struct CutGuard(Arc<Worker>, bool);

impl Drop for CutGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cut.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn completion(State(w): State<Arc<Worker>>, headers: HeaderMap, body: Bytes) -> Response {
    *w.last_auth.lock().expect("lock") = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    *w.last_body.lock().expect("lock") = body.to_vec();
    if w.busy.load(Ordering::SeqCst) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "7")],
            r#"{"error":{"code":"OVERLOADED","message":"full"}}"#,
        )
            .into_response();
    }
    w.served.fetch_add(1, Ordering::SeqCst);
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let chunks = req["x_chunks"].as_u64().unwrap_or(3);
    if req["stream"] != serde_json::json!(true) {
        return axum::Json(serde_json::json!({"worker": w.id, "object": "chat.completion"}))
            .into_response();
    }
    let id = w.id;
    let guard = CutGuard(w.clone(), false);
    let stream = futures::stream::unfold((0u64, guard), move |(i, mut guard)| async move {
        if i > chunks {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let line = if i == chunks {
            guard.1 = true;
            "data: [DONE]\n\n".to_owned()
        } else {
            format!("data: {{\"worker\":{id},\"i\":{i}}}\n\n")
        };
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(line)),
            (i + 1, guard),
        ))
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn metrics(State(w): State<Arc<Worker>>) -> String {
    // Busy: both slots and every queue place taken.
    let (in_flight, queued) = if w.busy.load(Ordering::SeqCst) {
        (6, 4)
    } else {
        (0, 0)
    };
    format!(
        "llorch_worker_requests_in_flight {in_flight}\nllorch_worker_queue_depth {queued}\nllorch_worker_slots 2\nllorch_worker_queue_limit 4\n"
    )
}

/// Starts a stand-in worker on a free port.
pub async fn worker(id: usize) -> (Arc<Worker>, SocketAddr) {
    let w = Arc::new(Worker {
        id,
        ..Worker::default()
    });
    let app = Router::new()
        .route("/v1/chat/completions", axum::routing::post(completion))
        .route("/v1/completions", axum::routing::post(completion))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(w.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (w, addr)
}

/// A free port nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr")
}

/// A ModelWorker.
pub fn model_worker(
    ns: &str,
    name: &str,
    aliases: &[&str],
    replicas: i32,
    key: bool,
) -> Arc<ModelWorker> {
    let mut spec = serde_json::json!({
        "model": {"uri": "hf://o/r/m.gguf"},
        "servedModelNames": aliases,
        "replicas": replicas,
    });
    if key {
        spec["server"] =
            serde_json::json!({"apiKeySecretRef": {"name": "worker-key", "key": "key"}});
    }
    if replicas == 0 {
        // At zero by its autoscaler: a request wakes it.
        spec["autoscaling"] = serde_json::json!({"minReplicas": 0, "maxReplicas": 2});
    }
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "llorch.dev/v1alpha1", "kind": "ModelWorker",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .expect("a valid ModelWorker"),
    )
}

/// The Endpoints of a ModelWorker's Service with these ready addresses.
pub fn endpoints(ns: &str, name: &str, addrs: &[SocketAddr]) -> Arc<Endpoints> {
    Arc::new(Endpoints {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        subsets: Some(
            addrs
                .iter()
                .map(|a| EndpointSubset {
                    addresses: Some(vec![EndpointAddress {
                        ip: a.ip().to_string(),
                        ..EndpointAddress::default()
                    }]),
                    ports: Some(vec![EndpointPort {
                        name: Some("http".into()),
                        port: i32::from(a.port()),
                        ..EndpointPort::default()
                    }]),
                    ..EndpointSubset::default()
                })
                .collect(),
        ),
    })
}

/// The cluster as the gateway sees it: wake calls counted, one Secret.
#[derive(Debug, Default)]
pub struct FakeCluster {
    pub wakes: AtomicUsize,
}

impl Cluster for FakeCluster {
    fn wake(&self, _namespace: &str, _name: &str) -> BoxFuture<'static, Result<(), String>> {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }.boxed()
    }

    fn secret(
        &self,
        namespace: &str,
        key: &SecretKeySelector,
    ) -> BoxFuture<'static, Result<String, String>> {
        let found = (namespace, key.name.as_str(), key.key.as_str()) == ("a", "worker-key", "key");
        async move {
            if found {
                Ok("worker-secret-key".to_owned())
            } else {
                Err("no such Secret".to_owned())
            }
        }
        .boxed()
    }
}

/// A gateway on a free port, routing by the catalog `tx` publishes.
pub struct Running {
    pub addr: SocketAddr,
    pub gw: Arc<Gateway>,
    pub tx: watch::Sender<Arc<Catalog>>,
    pub cluster: Arc<FakeCluster>,
}

/// Starts a gateway with `cfg` and `keys`.
pub async fn gateway(cfg: gateway::Config, keys: KeyState) -> Running {
    let (tx, rx) = watch::channel(Arc::new(Catalog::default()));
    let cluster = Arc::new(FakeCluster::default());
    let gw = Arc::new(Gateway::new(
        cfg,
        rx,
        cluster.clone(),
        keys,
        Duration::from_millis(500),
    ));
    gw.set_synced();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = gateway::server::router(gw.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Running {
        addr,
        gw,
        tx,
        cluster,
    }
}

impl Running {
    /// Publishes a catalog of these ModelWorkers and Endpoints.
    pub fn publish(&self, workers: &[Arc<ModelWorker>], eps: &[Arc<Endpoints>]) {
        self.tx.send_replace(Arc::new(Catalog::build(workers, eps)));
    }
}

/// An answer read in full.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// Reads `resp` in full.
    async fn read(resp: hyper::Response<hyper::body::Incoming>) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .expect("the body")
            .to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// `POST path` with a JSON body and extra headers, read in full.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> Answer {
    Answer::read(send(addr, path, body, headers).await).await
}

/// `POST path`, the answer's head only (its body streams).
pub async fn send(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> hyper::Response<hyper::body::Incoming> {
    let mut req = hyper::Request::post(format!("http://{addr}{path}"))
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    client().request(req).await.expect("the gateway answers")
}

/// `GET path`, read in full.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    get_with(addr, path, None).await
}

/// `GET path` with an `Authorization` header, read in full.
pub async fn get_with(addr: SocketAddr, path: &str, auth: Option<&str>) -> Answer {
    let mut req = hyper::Request::get(format!("http://{addr}{path}"));
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    Answer::read(client().request(req).await.expect("the gateway answers")).await
}

/// The first `n` data frames of a streaming answer, as text.
pub async fn first_frames(
    resp: hyper::Response<hyper::body::Incoming>,
    n: usize,
) -> (String, hyper::body::Incoming) {
    let mut body = resp.into_body();
    let mut text = String::new();
    for _ in 0..n {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    text.push_str(&String::from_utf8_lossy(data));
                }
            }
            _ => break,
        }
    }
    (text, body)
}

/// Waits until `cond` holds, up to `secs` seconds.
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < until {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Collects a stream body in full.
pub async fn rest(body: hyper::body::Incoming) -> String {
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
