//! A flood of `/tokenize` requests with bodies near the size limit, on a
//! real server over real sockets: the probes keep answering within the
//! timeout the operator gives them (3 s), the flood beyond the places for
//! such work gets 429, and what is taken is answered.

mod common;

use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn probes_answer_during_a_tokenize_flood() {
    let w = common::ready_worker(&[]).await;
    let base = w.base.clone();
    let http = common::http();
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

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn memory_stays_level_while_queued_clients_come_and_go() {
    let w = common::ready_worker(&[
        "--parallel",
        "1",
        "--queue-depth",
        "8",
        "--ctx-size",
        "4096",
    ])
    .await;
    let (base, pid) = (w.base.clone(), w.pid());
    let http = common::http();
    // The one slot stays busy: a long answer whose end-of-turn tokens are
    // banned.
    let busy = http
        .post(format!("{base}/execute"))
        .json(
            &json!({"job_id": "busy", "prompt": "Count to one thousand:", "max_tokens": 3000,
            "temperature": 0, "logit_bias": {"1": -100, "106": -100}}),
        )
        .send()
        .await
        .expect("busy request");
    assert_eq!(busy.status(), 200);
    let long_prompt = "Every figure in the quarterly report was checked twice. ".repeat(110);
    let mut samples = Vec::new();
    for i in 0..120 {
        let mut resp = http
            .post(format!("{base}/execute"))
            .json(&json!({"job_id": format!("gone-{i}"), "prompt": long_prompt, "max_tokens": 1}))
            .send()
            .await
            .expect("queued request");
        assert_eq!(resp.status(), 200, "request {i}");
        let _ = resp.chunk().await;
        drop(resp);
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            samples.push(rss_kib(pid));
        }
    }
    // Every queued job was dropped; only the busy one runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if m.contains("llorch_worker_requests_in_flight 1")
            && m.contains("llorch_worker_queue_depth 0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queued jobs were not dropped:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(busy);
    let grown = samples
        .last()
        .copied()
        .unwrap_or(0)
        .saturating_sub(samples[0]);
    println!(
        "resident KiB after each 20 of 120 abandoned queued prompts: {samples:?} (grew {grown} KiB)"
    );
    assert!(
        grown < 16 * 1024,
        "resident memory grew {grown} KiB: {samples:?}"
    );
}

/// Reads from `stream` until the server closes it; how long that took, or
/// `None` if it was still open after `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(start + limit),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let w = common::ready_worker(&["--header-timeout", "1"]).await;
    let base = w.base.clone();
    let addr = base.trim_start_matches("http://").to_string();
    // Headers that never end.
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
        .await
        .expect("write");
    let took = closed_within(&mut slow, Duration::from_secs(5)).await;
    assert!(
        took.is_some(),
        "a connection whose headers never end stayed open"
    );
    // A connection that sends nothing at all.
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let took_silent = closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(took_silent.is_some(), "a silent connection stayed open");
    // An idle connection after a whole request and its answer.
    let mut idle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let took_idle = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(
        took_idle.is_some(),
        "an idle keep-alive connection stayed open"
    );
    println!(
        "closed after {took:?} (unfinished headers), {took_silent:?} (silent), {took_idle:?} (idle after a request)"
    );
    // The server still answers.
    let r = common::http()
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), 200);
}
