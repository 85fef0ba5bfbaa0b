//! A flood of `/tokenize` requests with bodies near the size limit, on a
//! real server over real sockets: the probes keep answering within the
//! timeout the operator gives them (3 s), the flood beyond the places for
//! such work gets 429, and what is taken is answered.

mod common;

use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn probes_answer_during_a_tokenize_flood() {
    let (child, base) = common::spawn_worker(&[]);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let http = common::http();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !http
        .get(format!("{base}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "worker did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Just under the 1 MiB body limit, in words the tokenizer must split.
    let content = "the quick brown fox jumps over a lazy dog ".repeat(24_000);
    let body = json!({ "content": content }).to_string();
    let flood: Vec<_> = (0..24)
        .map(|_| {
            let (http, url, body) = (http.clone(), format!("{base}/tokenize"), body.clone());
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("tokenize request");
                r.status().as_u16()
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while flood.iter().any(|h| !h.is_finished()) {
        for path in ["/health", "/ready"] {
            let t = Instant::now();
            let r = http
                .get(format!("{base}{path}"))
                .timeout(Duration::from_secs(3))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path} did not answer within 3 s: {e}"));
            assert_eq!(r.status(), 200, "{path}");
            slowest = slowest.max(t.elapsed());
            probes += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut statuses = Vec::new();
    for h in flood {
        statuses.push(h.await.expect("flood task"));
    }
    println!("{probes} probes during the flood, slowest {slowest:?}; statuses {statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&200) && statuses.contains(&429),
        "{statuses:?}"
    );
}
