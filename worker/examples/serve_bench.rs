//! Load generator for the serving benchmark: `clients` concurrent streams of
//! OpenAI `/v1/completions` requests against any compatible server
//! (llorch-worker serve, llama-server), reporting aggregate tokens/s and
//! time to first token.
//!
//! ```text
//! cargo run --release -p llorch-worker --example serve-bench -- URL CLIENTS [REQUESTS_PER_CLIENT] [MAX_TOKENS] [SAMPLING]
//! ```
//! `SAMPLING` is a JSON object of sampling fields added to each request,
//! `{"temperature": 0}` (greedy) by default. Prints one JSON line. Each
//! streamed chunk with text counts as a token.
//! `scripts/bench-serve.sh` runs it against both servers.

use serde_json::json;
use std::time::{Duration, Instant};

const PROMPTS: [&str; 4] = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are",
    "Water boils at a temperature of",
];

async fn one(
    client: &reqwest::Client,
    url: &str,
    prompt: &str,
    max_tokens: usize,
    sampling: &serde_json::Map<String, serde_json::Value>,
) -> Result<(Duration, usize), String> {
    let start = Instant::now();
    let mut body = json!({ "prompt": prompt, "max_tokens": max_tokens, "stream": true });
    if let Some(b) = body.as_object_mut() {
        b.extend(sampling.clone());
    }
    let mut resp = client
        .post(format!("{url}/v1/completions"))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut ttft = None;
    let mut tokens = 0;
    let mut buf = String::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            if v["choices"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
            {
                tokens += 1;
                ttft.get_or_insert_with(|| start.elapsed());
            }
        }
    }
    Ok((ttft.unwrap_or_else(|| start.elapsed()), tokens))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .ok_or("usage: serve-bench URL CLIENTS [REQUESTS] [MAX_TOKENS] [SAMPLING]")?
        .clone();
    let clients: usize = args.get(2).ok_or("CLIENTS missing")?.parse()?;
    let requests: usize = args.get(3).map_or(Ok(2), |s| s.parse())?;
    let max_tokens: usize = args.get(4).map_or(Ok(32), |s| s.parse())?;
    let sampling: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(args.get(5).map_or(r#"{"temperature": 0}"#, |s| s.as_str()))?;
    // reqwest has no TLS provider of its own here: install rustls' ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let url = url.clone();
        let sampling = sampling.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for r in 0..requests {
                let prompt = PROMPTS[(c + r) % PROMPTS.len()];
                out.push(one(&client, &url, prompt, max_tokens, &sampling).await);
            }
            out
        }));
    }
    let mut ttfts = Vec::new();
    let mut tokens = 0;
    let mut errors = 0;
    for t in tasks {
        for r in t.await? {
            match r {
                Ok((ttft, n)) => {
                    ttfts.push(ttft.as_secs_f64());
                    tokens += n;
                }
                Err(e) => {
                    eprintln!("request failed: {e}");
                    errors += 1;
                }
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    ttfts.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "clients": clients,
            "requests": clients * requests,
            "errors": errors,
            "tokens": tokens,
            "wall_seconds": wall,
            "tokens_per_sec": tokens as f64 / wall,
            "ttft_p50_seconds": percentile(&ttfts, 0.5),
            "ttft_p99_seconds": percentile(&ttfts, 0.99),
        })
    );
    Ok(())
}
