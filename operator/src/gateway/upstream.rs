//! Requests to the workers: one pooled HTTP/1 client, the headers that
//! pass, and the answer's body streamed back with its metrics counted as
//! it goes.
//!
//! The client's `Authorization` never reaches a worker (it is the
//! gateway's key); a worker that requires a key gets its ModelWorker's.
//! Dropping an answer's body (the client went away) closes that
//! connection, which cancels the worker's job.

use super::balance::Outstanding;
use super::metrics::ModelMetrics;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use bytes::Bytes;
use futures::Stream;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Headers that describe one hop, never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Why a worker could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (retried on another replica).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The replica.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The connection failed after the request went out.
    #[error("{addr} failed to answer: {source}")]
    Failed {
        /// The replica.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The request could not be built (a header the client sent).
    #[error("cannot forward the request: {0}")]
    Request(#[from] axum::http::Error),
}

/// The pooled client.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    /// A client whose connections time out after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Upstream { client }
    }

    /// Sends `POST path` with `body` to `addr`, with the client's headers
    /// less the hop-by-hop ones and its `Authorization`, and with
    /// `worker_key` as the worker's bearer key when given.
    pub async fn post(
        &self,
        addr: SocketAddr,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        worker_key: Option<&str>,
    ) -> Result<hyper::Response<Incoming>, UpstreamError> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}{path}"))
            .body(Full::new(body))?;
        let out = req.headers_mut();
        let named_by_connection = connection_tokens(headers);
        for (name, value) in headers {
            if forwarded(name)
                && name != header::AUTHORIZATION
                && !named_by_connection.iter().any(|t| t == name.as_str())
            {
                out.append(name.clone(), value.clone());
            }
        }
        if let Some(key) = worker_key
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {key}"))
        {
            out.insert(header::AUTHORIZATION, v);
        }
        self.client.request(req).await.map_err(|source| {
            if source.is_connect() {
                UpstreamError::Connect { addr, source }
            } else {
                UpstreamError::Failed { addr, source }
            }
        })
    }

    /// `GET http://addr/metrics`'s body, within `timeout`.
    pub async fn metrics(&self, addr: SocketAddr, timeout: Duration) -> Option<String> {
        let req = Request::builder()
            .uri(format!("http://{addr}/metrics"))
            .body(Full::new(Bytes::new()))
            .ok()?;
        let read = async {
            let resp = self.client.request(req).await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 1 << 20)
                .await
                .ok()?;
            String::from_utf8(body.to_vec()).ok()
        };
        tokio::time::timeout(timeout, read).await.ok().flatten()
    }
}

/// The header names a `Connection` header lists: they belong to this hop.
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether a header passes from one hop to the next.
pub fn forwarded(name: &HeaderName) -> bool {
    !HOP_BY_HOP.contains(&name.as_str())
}

/// An answer's body on its way to the client: counts the request on its
/// replica until it ends or is dropped, and records time to first byte
/// and the whole duration.
pub struct Tracked {
    inner: axum::body::BodyDataStream,
    started: Instant,
    first: bool,
    cold: bool,
    metrics: Arc<ModelMetrics>,
    _outstanding: Outstanding,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("first", &self.first)
            .finish()
    }
}

impl Tracked {
    /// Tracks `body`, counted on a replica by `outstanding`, of a request
    /// that arrived at `started` (`cold`: it waited for a replica).
    pub fn new(
        body: Incoming,
        started: Instant,
        cold: bool,
        metrics: Arc<ModelMetrics>,
        outstanding: Outstanding,
    ) -> Tracked {
        metrics.in_flight(1);
        Tracked {
            inner: axum::body::Body::new(body).into_data_stream(),
            started,
            first: true,
            cold,
            metrics,
            _outstanding: outstanding,
        }
    }
}

impl Stream for Tracked {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(_))) = &next
            && self.first
        {
            self.first = false;
            let waited = self.started.elapsed();
            self.metrics.ttft(waited);
            if self.cold {
                self.metrics.cold_start(waited);
            }
        }
        next
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.metrics.in_flight(-1);
        self.metrics.duration(self.started.elapsed());
    }
}
