//! Sending the readiness or failure report to the operator.

use std::time::Duration;
use worker_common::WorkerReport;

/// Posts `report` to `url` with the bearer `token`, retrying connection
/// errors, 5xx answers, 408 and 429 with exponential backoff (at most 15 s
/// apart) for up to `budget` (`None`: until accepted or refused). Returns
/// whether the operator accepted it.
pub async fn send(
    url: &str,
    token: Option<&str>,
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
    let deadline = budget.map(|b| tokio::time::Instant::now() + b);
    let mut delay = Duration::from_millis(250);
    loop {
        let mut req = client.post(url).json(report);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                tracing::info!(url, status = ?report.status, "report accepted");
                return true;
            }
            Ok(resp)
                if !resp.status().is_server_error()
                    && !matches!(resp.status().as_u16(), 408 | 429) =>
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
