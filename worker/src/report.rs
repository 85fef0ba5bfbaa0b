//! Sending the readiness or failure report to the operator.

use std::path::PathBuf;
use std::time::Duration;
use worker_common::WorkerReport;

/// How long a 401 is retried: the token file is a mounted Secret, and when
/// the operator replaces that Secret (a ModelWorker recreated under the
/// same name) the kubelet takes up to a couple of minutes to update it.
const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(300);

/// The report's bearer token: read from its file at each attempt, so a
/// replaced Secret is picked up, else the value read at start.
#[derive(Debug, Clone, Default)]
pub struct Token {
    pub file: Option<PathBuf>,
    pub value: Option<String>,
}

impl Token {
    fn current(&self) -> Option<String> {
        self.file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .or_else(|| self.value.clone())
    }
}

/// Posts `report` to `url` with the bearer `token`, retrying connection
/// errors, 5xx answers, 408, 409 (the operator's status kept changing under
/// the report) and 429 with exponential backoff (at most 15 s
/// apart) for up to `budget` (`None`: until accepted or refused), and a
/// 401 for up to five minutes. Returns whether the operator accepted it.
pub async fn send(
    url: &str,
    token: &Token,
    report: &WorkerReport,
    budget: Option<Duration>,
) -> bool {
    let client = match crate::http_client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build the report client");
            return false;
        }
    };
    let start = tokio::time::Instant::now();
    let deadline = budget.map(|b| start + b);
    let mut delay = Duration::from_millis(250);
    loop {
        let mut req = client.post(url).json(report);
        if let Some(t) = token.current() {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                tracing::info!(url, status = ?report.status, "report accepted");
                return true;
            }
            Ok(resp) if resp.status().as_u16() == 401 && start.elapsed() < UNAUTHORIZED_RETRY => {
                tracing::warn!(
                    url,
                    "report refused (401); retrying with the token file read again"
                );
            }
            Ok(resp)
                if !resp.status().is_server_error()
                    && !matches!(resp.status().as_u16(), 408 | 409 | 429) =>
            {
                tracing::warn!(url, status = %resp.status(), "report rejected; not retrying");
                return false;
            }
            Ok(resp) => tracing::warn!(url, status = %resp.status(), "report failed; retrying"),
            Err(e) => tracing::warn!(url, error = %e, "report failed; retrying"),
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() + delay > d) {
            tracing::warn!(url, "giving up on the report; the worker keeps serving");
            return false;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(15));
    }
}
