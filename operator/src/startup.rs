//! Start-up calls that must be answered, not guessed: what the operator
//! learns from the API server before it reconciles (the
//! PodDisruptionBudget version it serves, the address of its own Service)
//! shapes every child it writes, so a transient error is retried until the
//! API server answers, never taken as an answer.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// First wait between attempts; it doubles up to the caller's limit.
const FIRST_WAIT: Duration = Duration::from_secs(1);

/// Calls `call` until it returns `Ok`, waiting [`FIRST_WAIT`] after the
/// first failure and twice as long after each next one, at most `max`;
/// each failure is logged with `what`.
pub async fn until_answered<T, E, F, Fut>(what: &str, max: Duration, mut call: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut wait = FIRST_WAIT.min(max);
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "{what} failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn failures_are_retried_until_an_answer() {
        let calls = AtomicUsize::new(0);
        let start = std::time::Instant::now();
        let v = until_answered("a call", Duration::from_millis(10), || async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0..=4 => Err("down"),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(v, 7);
        assert_eq!(calls.load(Ordering::Relaxed), 6);
        // Five waits of the limit (below the first wait of a second).
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
