//! The gateway's benchmark pieces (`scripts/bench-gateway.sh`):
//!
//! ```text
//! gateway-bench serve LISTEN MODEL=ADDR[,ADDR...] [--no-affinity]
//! gateway-bench chat URL MODEL CONVERSATIONS TURNS CONCURRENCY [--random-session]
//! ```
//!
//! `serve` runs the gateway's router with a fixed catalog (one ModelWorker
//! whose ready replicas are the given addresses) and no cluster: the same
//! routing, balancing, forwarding and streaming code as `llorch-operator
//! gateway`, minus the watches. Replica figures are scraped every second as
//! there. `--no-affinity` turns prefix affinity off (least load alone).
//!
//! `chat` is a multi-turn chat load: CONVERSATIONS conversations of TURNS
//! turns, CONCURRENCY at a time, each turn streaming and extending the
//! conversation with the answer; `--random-session` sends a random
//! `x-llorch-session` per request, which spreads turns as a random pick
//! (kube-proxy) would. Prints one JSON line: turns, errors, time to first
//! token p50 and mean.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use llorch_operator::gateway::catalog::Catalog;
use llorch_operator::gateway::{self, Cluster, Gateway, KeyState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// No cluster: nothing to wake, no Secrets.
struct NoCluster;

impl Cluster for NoCluster {
    fn wake(&self, _: &str, _: &str) -> futures::future::BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("no cluster in the benchmark".to_owned()) })
    }
    fn secret(
        &self,
        _: &str,
        _: &llorch_api::SecretKeySelector,
    ) -> futures::future::BoxFuture<'static, Result<String, String>> {
        Box::pin(async { Err("no cluster in the benchmark".to_owned()) })
    }
}

fn catalog(model: &str, addrs: &[SocketAddr]) -> anyhow::Result<Catalog> {
    let mw: llorch_api::ModelWorker = serde_json::from_value(serde_json::json!({
        "apiVersion": "llorch.dev/v1alpha1", "kind": "ModelWorker",
        "metadata": {"name": model, "namespace": "bench"},
        "spec": {"model": {"uri": "file:///bench.gguf"}, "replicas": addrs.len()},
    }))?;
    let subsets = addrs
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
        .collect();
    let ep = Endpoints {
        metadata: kube::api::ObjectMeta {
            name: Some(model.into()),
            namespace: Some("bench".into()),
            ..Default::default()
        },
        subsets: Some(subsets),
    };
    Ok(Catalog::build(&[Arc::new(mw)], &[Arc::new(ep)]))
}

async fn serve(args: &[String]) -> anyhow::Result<()> {
    let [listen, spec, rest @ ..] = args else {
        anyhow::bail!("usage: serve LISTEN MODEL=ADDR[,ADDR...] [--no-affinity]");
    };
    let (model, addrs) = spec
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("MODEL=ADDR[,ADDR...]"))?;
    let addrs: Vec<SocketAddr> = addrs.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let cfg = gateway::Config {
        prefix_affinity: !rest.iter().any(|a| a == "--no-affinity"),
        ..gateway::Config::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(catalog(model, &addrs)?));
    let gw = Arc::new(Gateway::new(
        cfg,
        rx,
        Arc::new(NoCluster),
        KeyState::Open,
        Duration::from_secs(2),
    ));
    gw.set_synced();
    tokio::spawn(gateway::kube::scrape_replicas(
        gw.clone(),
        Duration::from_secs(1),
    ));
    let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
    axum::serve(listener, gateway::server::router(gw)).await?;
    Ok(())
}

/// One streamed chat turn: time to the first content, and the content.
async fn turn(
    client: &HttpClient,
    url: &str,
    body: &serde_json::Value,
    session: Option<String>,
) -> anyhow::Result<(Duration, String)> {
    let start = Instant::now();
    let mut req = hyper::Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json");
    if let Some(s) = session {
        req = req.header("x-llorch-session", s);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body.to_string())))?)
        .await?;
    anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
    let mut body = resp.into_body();
    let (mut ttft, mut text, mut buf) = (None, String::new(), String::new());
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            buf.push_str(&String::from_utf8_lossy(data));
        }
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.strip_prefix("data: ") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                continue;
            };
            if let Some(t) = v["choices"][0]["delta"]["content"]
                .as_str()
                .filter(|t| !t.is_empty())
            {
                ttft.get_or_insert_with(|| start.elapsed());
                text.push_str(t);
            }
        }
    }
    Ok((ttft.unwrap_or_else(|| start.elapsed()), text))
}

/// One conversation's turns, in order.
async fn conversation(
    client: HttpClient,
    url: String,
    model: String,
    id: usize,
    turns: usize,
    random_session: bool,
) -> Vec<anyhow::Result<Duration>> {
    let topic = format!(
        "Conversation {id}. You are a patient tutor. The student studies the history of \
         the town numbered {id}: its bridges, its markets, its harbour, its guilds, its \
         festivals and its weather across four centuries. Answer briefly and stay on topic."
    );
    let mut messages = vec![
        serde_json::json!({"role": "system", "content": topic}),
        serde_json::json!({"role": "user", "content": format!("Tell me about town {id}.")}),
    ];
    let mut out = Vec::new();
    for t in 0..turns {
        let body = serde_json::json!({
            "model": model, "messages": messages, "max_tokens": 8,
            "temperature": 0, "stream": true,
        });
        let session = random_session.then(|| format!("{id}-{t}-{}", rand::random::<u64>()));
        match turn(&client, &url, &body, session).await {
            Ok((ttft, text)) => {
                out.push(Ok(ttft));
                messages.push(serde_json::json!({"role": "assistant", "content": text}));
                messages.push(serde_json::json!({"role": "user", "content": format!("And then, in turn {t}?")}));
            }
            Err(e) => {
                out.push(Err(e));
                break;
            }
        }
    }
    out
}

async fn chat(args: &[String]) -> anyhow::Result<()> {
    let [url, model, conversations, turns, concurrency, rest @ ..] = args else {
        anyhow::bail!("usage: chat URL MODEL CONVERSATIONS TURNS CONCURRENCY [--random-session]");
    };
    let (conversations, turns, concurrency): (usize, usize, usize) =
        (conversations.parse()?, turns.parse()?, concurrency.parse()?);
    let random = rest.iter().any(|a| a == "--random-session");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let tasks: Vec<_> = (0..conversations)
        .map(|id| {
            let (client, url, model, sem) =
                (client.clone(), url.clone(), model.clone(), sem.clone());
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                conversation(client, url, model, id, turns, random).await
            })
        })
        .collect();
    let mut ttfts = Vec::new();
    let mut errors = 0;
    for t in tasks {
        for r in t.await? {
            match r {
                Ok(d) => ttfts.push(d.as_secs_f64()),
                Err(_) => errors += 1,
            }
        }
    }
    ttfts.sort_by(f64::total_cmp);
    let p50 = ttfts.get(ttfts.len() / 2).copied().unwrap_or(0.0);
    let mean = ttfts.iter().sum::<f64>() / ttfts.len().max(1) as f64;
    println!(
        "{}",
        serde_json::json!({"turns": ttfts.len(), "errors": errors, "ttft_p50_seconds": p50, "ttft_mean_seconds": mean})
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]).await,
        Some("chat") => chat(&args[1..]).await,
        _ => anyhow::bail!("usage: gateway-bench serve ... | chat ... (see the file's docs)"),
    }
}
