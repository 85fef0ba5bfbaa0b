//! `POST /v1/workers/report` on `--report-addr`: the workers'
//! `--callback-url`.
//!
//! A report names its ModelWorker (`namespace`, `model_worker`) and carries
//! the bearer token the operator put in that ModelWorker's Secret; a
//! missing or wrong token, or the token of another ModelWorker, gets 401
//! and writes nothing. An accepted report lands in the status: the model
//! facts in `status.model`, the pod in `status.workers`, and the
//! `ModelAvailable` condition (True on `ready`; False with the worker's
//! error code as reason on `failed`, which the reconciler turns into
//! `Degraded`). Status writes carry the resourceVersion they were computed
//! from, so a concurrent write by the reconciler is never overwritten.

use crate::build;
use crate::conditions::{self, Cond, ConditionStatus, ConditionType, Reason};
use crate::tokens::{Found, TokenCache, Unverified, Verdict};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use llorch_api::{ModelStatus, ModelWorker, WorkerStatus};
use serde_json::json;
use std::sync::Arc;
use worker_common::{ReportStatus, WorkerReport};

/// Largest report body accepted.
const MAX_BODY: usize = 64 * 1024;
/// At most this many entries in `status.workers`; the oldest go first.
const MAX_WORKERS: usize = 64;
/// Longest error message kept in the status.
const MAX_MESSAGE: usize = 1024;
/// Attempts at a status write that meets a concurrent one.
const CONFLICT_RETRIES: usize = 5;

/// State of the HTTP side.
#[derive(Clone)]
pub struct ReportState {
    client: Client,
    tokens: Arc<TokenCache>,
}

impl std::fmt::Debug for ReportState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportState").finish_non_exhaustive()
    }
}

impl ReportState {
    /// State over `client`.
    pub fn new(client: Client) -> Self {
        ReportState {
            client,
            tokens: Arc::new(TokenCache::default()),
        }
    }
}

/// The router of `--report-addr`: the report route.
pub fn router(state: ReportState) -> Router {
    Router::new()
        .route("/v1/workers/report", post(report))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A refused report: status code, error code and message.
#[derive(Debug)]
struct Refusal(StatusCode, &'static str, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.1, "message": self.2 } });
        (self.0, Json(body)).into_response()
    }
}

fn bad(msg: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, "INVALID_REQUEST", msg.into())
}

fn unauthorized() -> Refusal {
    Refusal(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "missing or wrong bearer token for this ModelWorker".into(),
    )
}

fn upstream(e: kube::Error) -> Refusal {
    tracing::warn!(error = %e, "report: API server call failed");
    Refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "NOT_READY",
        "the operator cannot reach the API server; retry".into(),
    )
}

async fn report(
    State(st): State<ReportState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, Refusal> {
    let source = peer.map(|axum::Extension(c)| c.0.ip());
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?
        .to_owned();
    let rep: WorkerReport =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not a worker report: {e}")))?;
    let ns = rep
        .namespace
        .clone()
        .filter(|s| is_dns_label(s))
        .ok_or_else(|| bad("the report needs `namespace`, a DNS label"))?;
    let name = rep
        .model_worker
        .clone()
        .filter(|s| is_dns_label(s))
        .ok_or_else(|| bad("the report needs `model_worker`, a DNS label"))?;
    let owner_uid = match st
        .tokens
        .verify(&ns, &name, token.as_bytes(), source, || {
            read_token(&st.client, &ns, &name)
        })
        .await
        .map_err(|e| match e {
            Unverified::Read(e) => upstream(e),
            Unverified::Busy => Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "OVERLOADED",
                "too many reports are being checked; retry".into(),
            ),
            Unverified::Throttled => Refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "OVERLOADED",
                "too many reports for unknown ModelWorkers from this address; retry".into(),
            ),
        })? {
        Verdict::Authorized { owner_uid } => owner_uid,
        Verdict::Refused => return Err(unauthorized()),
    };

    let api: Api<ModelWorker> = Api::namespaced(st.client.clone(), &ns);
    for _ in 0..CONFLICT_RETRIES {
        let mw = match api.get_status(&name).await {
            Ok(mw) => mw,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                st.tokens.forget(&ns, &name);
                return Err(unauthorized());
            }
            Err(e) => return Err(upstream(e)),
        };
        // The token was read from the Secret of this ModelWorker, not of
        // an earlier one with the same name.
        if mw.metadata.uid.as_deref() != Some(owner_uid.as_str()) {
            st.tokens.forget(&ns, &name);
            return Err(unauthorized());
        }
        let status = apply_report(&mw, &rep, &crate::status::now());
        let patch = json!({
            "metadata": { "resourceVersion": mw.metadata.resource_version },
            "status": status,
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(modelworker = %format!("{ns}/{name}"), pod = %worker_key(&rep),
                    status = ?rep.status, "worker report recorded");
                return Ok(StatusCode::NO_CONTENT);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(upstream(e)),
        }
    }
    Err(Refusal(
        StatusCode::CONFLICT,
        "OVERLOADED",
        "the status kept changing under the report; retry".into(),
    ))
}

/// What the ModelWorker's callback Secret holds: its token and the uid of
/// the ModelWorker that owns it. A ModelWorker or Secret that does not
/// exist reads as no token, so the route does not tell strangers which
/// ModelWorkers exist.
async fn read_token(client: &Client, ns: &str, name: &str) -> Result<Found, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = match secrets.get_opt(&build::callback_secret_name(name)).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Ok(Found::Nothing),
        // A namespace the operator may not read (namespaced RBAC) holds
        // no ModelWorker of its own.
        Err(kube::Error::Api(s)) if s.code == 403 => return Ok(Found::Nothing),
        Err(e) => return Err(e),
    };
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("llorch.dev/model-worker"))
        .is_some_and(|v| v == name);
    let owner_uid = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "ModelWorker" && o.name == name && o.controller == Some(true))
        .map(|o| o.uid.clone());
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    Ok(match owner_uid {
        Some(owner_uid) if labelled && !token.is_empty() => Found::Token { token, owner_uid },
        _ => Found::Nothing,
    })
}

/// A Kubernetes object name: lowercase alphanumerics, `-` and `.`,
/// starting and ending alphanumeric, at most 253 bytes.
fn is_dns_label(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum)
        && s.bytes().all(|b| alnum(b) || b == b'-' || b == b'.')
}

fn worker_key(rep: &WorkerReport) -> String {
    rep.pod.clone().unwrap_or_else(|| rep.worker_id.clone())
}

fn clip(s: &str) -> String {
    crate::status::clip(s, MAX_MESSAGE)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The status after `rep`, as a pure function of the stored status.
pub fn apply_report(
    mw: &ModelWorker,
    rep: &WorkerReport,
    now: &Time,
) -> llorch_api::ModelWorkerStatus {
    let mut st = mw.status.clone().unwrap_or_default();
    if let Some(m) = &rep.model {
        st.model = Some(ModelStatus {
            architecture: Some(clip(&m.architecture)),
            name: Some(clip(&m.name)),
            quantization: Some(clip(&m.quantization)),
            parameters: Some(to_i64(m.parameters)),
            context_length: m.context_length.map(to_i64),
            size_bytes: Some(to_i64(m.size_bytes)),
            sha256: m.sha256.as_deref().map(clip),
        });
    }
    let key = worker_key(rep);
    let ready = rep.status == ReportStatus::Ready;
    let error = rep
        .error
        .as_ref()
        .map(|e| clip(&format!("{}: {}", e.code.as_str(), e.message)));
    let entry = WorkerStatus {
        pod: clip(&key),
        ready,
        backend: Some(clip(&rep.backend)),
        memory_bytes: Some(to_i64(rep.memory_bytes)),
        load_seconds: rep.load_seconds.is_finite().then_some(rep.load_seconds),
        reported_at: Some(now.clone()),
        error: error.clone(),
    };
    st.workers.retain(|w| w.pod != entry.pod);
    st.workers.push(entry);
    if st.workers.len() > MAX_WORKERS {
        let extra = st.workers.len() - MAX_WORKERS;
        st.workers.drain(..extra);
    }
    let (status, reason, message) = if ready {
        let what = rep
            .model
            .as_ref()
            .map(|m| format!("{} ({}, {})", m.name, m.architecture, m.quantization))
            .unwrap_or_else(|| "the model".into());
        (
            ConditionStatus::True,
            Reason::ModelLoaded,
            clip(&format!("{key} loaded {what} in {:.1} s", rep.load_seconds)),
        )
    } else {
        let reason = rep.error.as_ref().map_or(Reason::LoadFailed, |e| {
            Reason::parse(&format!("{:?}", e.code))
        });
        (
            ConditionStatus::False,
            reason,
            format!(
                "{key}: {}",
                error.unwrap_or_else(|| "the worker failed".into())
            ),
        )
    };
    let available = Cond::new(ConditionType::ModelAvailable, status, reason, message);
    conditions::set(&mut st.conditions, available, mw.metadata.generation, now);
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn mw() -> ModelWorker {
        serde_json::from_value(json!({
            "apiVersion": "llorch.dev/v1alpha1",
            "kind": "ModelWorker",
            "metadata": {"name": "m", "namespace": "ns", "generation": 2},
            "spec": {"model": {"uri": "file:///m.gguf"}},
        }))
        .expect("a valid ModelWorker")
    }

    fn report(extra: serde_json::Value) -> WorkerReport {
        let mut v = json!({
            "worker_id": "m-1", "status": "ready", "uri": "http://10.0.0.1:8080",
            "backend": "cpu", "device": "cpu", "memory_bytes": 1000,
            "memory_architecture": "host", "load_seconds": 1.25,
            "capabilities": ["sse"], "namespace": "ns", "model_worker": "m", "pod": "m-1",
            "model": {"architecture": "gemma3", "name": "Gemma", "quantization": "Q4_K_M",
                      "parameters": 268_000_000u64, "context_length": 32768,
                      "size_bytes": 253_000_000u64},
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).expect("a valid report")
    }

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("a valid time"))
    }

    #[test]
    fn a_ready_report_fills_model_workers_and_condition() {
        let st = apply_report(&mw(), &report(json!({})), &at(7));
        let m = st.model.expect("model facts");
        assert_eq!(m.architecture.as_deref(), Some("gemma3"));
        assert_eq!(m.quantization.as_deref(), Some("Q4_K_M"));
        assert_eq!(m.context_length, Some(32768));
        assert_eq!(st.workers.len(), 1);
        assert_eq!(st.workers[0].pod, "m-1");
        assert!(st.workers[0].ready);
        assert_eq!(st.workers[0].load_seconds, Some(1.25));
        let c = &st.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("ModelAvailable", "True", "ModelLoaded")
        );
        assert_eq!(c.observed_generation, Some(2));
    }

    #[test]
    fn a_failure_report_names_the_code_and_replaces_the_pod_entry() {
        let mut m = mw();
        m.status = Some(apply_report(&m, &report(json!({})), &at(1)));
        let failed = report(json!({
            "status": "failed", "model": null,
            "error": {"code": "INSUFFICIENT_MEMORY", "message": "needs 2 GiB"},
        }));
        let st = apply_report(&m, &failed, &at(2));
        assert_eq!(st.workers.len(), 1, "one entry per pod");
        assert_eq!(
            st.workers[0].error.as_deref(),
            Some("INSUFFICIENT_MEMORY: needs 2 GiB")
        );
        assert!(st.model.is_some(), "facts of an earlier report stay");
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == "ModelAvailable")
            .expect("condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InsufficientMemory")
        );
        assert_eq!(c.last_transition_time, at(2));
    }

    #[test]
    fn hostile_sizes_are_bounded() {
        let mut m = mw();
        let long = "x".repeat(100_000);
        for i in 0..(MAX_WORKERS + 10) {
            let r = report(
                json!({"pod": format!("p{i}"), "error": {"code": "INTERNAL", "message": long}}),
            );
            m.status = Some(apply_report(&m, &r, &at(1)));
        }
        let st = m.status.expect("status");
        assert_eq!(st.workers.len(), MAX_WORKERS);
        assert_eq!(st.workers[0].pod, "p10", "the oldest entries go first");
        assert!(st.workers.iter().all(|w| {
            w.error
                .as_ref()
                .is_some_and(|e| e.chars().count() <= MAX_MESSAGE + 1)
        }));
        let huge = report(
            json!({"model": {"architecture": "a", "name": "n", "quantization": "q",
            "parameters": u64::MAX, "size_bytes": u64::MAX}}),
        );
        let st = apply_report(&mw(), &huge, &at(1));
        assert_eq!(st.model.and_then(|m| m.parameters), Some(i64::MAX));
    }

    #[test]
    fn only_dns_names_are_accepted() {
        assert!(is_dns_label("gemma-cpu"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label("../etc"));
        assert!(!is_dns_label("Gemma"));
        assert!(!is_dns_label(&"a".repeat(300)));
    }
}
