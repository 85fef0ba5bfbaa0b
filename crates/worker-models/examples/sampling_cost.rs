//! What choosing one token costs over a Gemma 3-sized vocabulary, per
//! sampling setting: `cargo run --profile ci -p worker-models --example
//! sampling_cost` (the figures in BENCHMARKS.md, "Sampled streams").

use std::time::Instant;
use worker_models::{Sampler, SamplingParams};

const VOCAB: usize = 262_144;

/// Logits like a model's: a normal-ish spread (`spread` wide) with a few
/// strong candidates, or flat when `spread` is 0.
fn row(spread: f32) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..VOCAB)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32;
            let peak = if i % 9973 == 0 { 8.0 } else { 0.0 };
            (u - 0.5) * spread + peak * spread.min(1.0)
        })
        .collect()
}

fn main() {
    let cases: [(&str, SamplingParams, f32); 4] = [
        (
            "temperature only (HTTP default)",
            SamplingParams {
                temperature: 0.8,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                ..Default::default()
            },
            6.0,
        ),
        (
            "top-k 40, top-p 0.95, min-p 0.05 (CLI default)",
            SamplingParams::default(),
            6.0,
        ),
        (
            "top-p 0.9 alone, model-like logits",
            SamplingParams {
                top_k: 0,
                top_p: 0.9,
                min_p: 0.0,
                ..Default::default()
            },
            6.0,
        ),
        (
            "top-p 0.9 alone, flat logits",
            SamplingParams {
                top_k: 0,
                top_p: 0.9,
                min_p: 0.0,
                ..Default::default()
            },
            0.0,
        ),
    ];
    for (name, params, spread) in cases {
        let logits = row(spread);
        let mut s = Sampler::new(
            SamplingParams {
                seed: Some(1),
                ..params
            },
            &[],
        );
        let mut work = logits.clone();
        let mut best = f64::INFINITY;
        let mut picked = 0u64;
        for _ in 0..5 {
            let reps = 20;
            let t = Instant::now();
            for _ in 0..reps {
                work.copy_from_slice(&logits);
                picked += u64::from(s.sample(&mut work));
            }
            best = best.min(t.elapsed().as_secs_f64() / f64::from(reps));
        }
        // The copy of the row is part of each repetition (about 0.02 ms).
        println!(
            "{name}: {:.3} ms per token (ids summed {picked})",
            best * 1e3
        );
        assert!(picked > 0 || spread == 0.0);
    }
}
