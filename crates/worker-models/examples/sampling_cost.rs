//! What choosing one token costs over a Gemma 3-sized vocabulary, per
//! sampling setting, and what JSON mode's mask costs over Gemma 3's own
//! vocabulary (when the default model is there): `cargo run --profile ci
//! -p worker-models --example sampling_cost` (the figures in
//! BENCHMARKS.md, "Sampled streams").

use std::time::Instant;
use worker_models::{Sampler, SamplingParams};

const VOCAB: usize = 262_144;

/// Uniform numbers in `[0, 1)` from a fixed seed.
fn uniforms() -> impl FnMut() -> f32 {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// The shapes of logit rows measured.
#[derive(Clone, Copy)]
enum Shape {
    /// Normal with standard deviation 5, as Gemma 3 270M's rows are (their
    /// maximum lies 22-27 above the mean; top-p 0.9 keeps 2-136 tokens).
    ModelLike,
    /// Uniform over 6 with a peak every 9,973 ids: top-p 0.9 keeps most
    /// of the vocabulary.
    Broad,
    /// All equal.
    Flat,
}

fn row(shape: Shape) -> Vec<f32> {
    let mut u = uniforms();
    (0..VOCAB)
        .map(|i| match shape {
            // The sum of 12 uniforms less 6 is close to a standard normal.
            Shape::ModelLike => 5.0 * ((0..12).map(|_| u()).sum::<f32>() - 6.0),
            Shape::Broad => (u() - 0.5) * 6.0 + if i % 9973 == 0 { 8.0 } else { 0.0 },
            Shape::Flat => 0.0,
        })
        .collect()
}

fn main() {
    let top_p_alone = SamplingParams {
        top_k: 0,
        top_p: 0.9,
        min_p: 0.0,
        ..Default::default()
    };
    let cases = [
        (
            "temperature only (HTTP default)",
            SamplingParams {
                temperature: 0.8,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                ..Default::default()
            },
            Shape::ModelLike,
        ),
        (
            "top-k 40, top-p 0.95, min-p 0.05 (CLI default)",
            SamplingParams::default(),
            Shape::ModelLike,
        ),
        (
            "top-p 0.9 alone, model-like logits",
            top_p_alone.clone(),
            Shape::ModelLike,
        ),
        (
            "top-p 0.9 alone, broad logits",
            top_p_alone.clone(),
            Shape::Broad,
        ),
        ("top-p 0.9 alone, flat logits", top_p_alone, Shape::Flat),
    ];
    for (name, params, shape) in cases {
        let logits = row(shape);
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
                // The copy of the row (about 0.02 ms) is part of each token.
                work.copy_from_slice(&logits);
                picked += u64::from(s.sample(&mut work));
            }
            best = best.min(t.elapsed().as_secs_f64() / f64::from(reps));
        }
        // The sum of the chosen ids keeps the work from being optimized
        // away, and shows whether a change kept the choices.
        println!(
            "{name}: {:.3} ms per token (ids summed {picked})",
            best * 1e3
        );
    }
    json_mask();
}

/// JSON mode's mask over Gemma 3's vocabulary, inside a string and between
/// values.
fn json_mask() {
    let path = worker_common::paths::default_model_path();
    let Ok(file) = worker_gguf::GgufFile::open(&path) else {
        println!("JSON mask: no model at {} (skipped)", path.display());
        return;
    };
    let Ok(tok) = worker_tokenizer::Tokenizer::from_gguf(file.metadata()) else {
        println!("JSON mask: no tokenizer in {} (skipped)", path.display());
        return;
    };
    let t = Instant::now();
    let vocab = worker_models::JsonVocab::new(&tok);
    println!(
        "JSON mask: vocabulary of {} tokens prepared in {:.1} ms",
        tok.vocab_size(),
        t.elapsed().as_secs_f64() * 1e3
    );
    for (name, prefix) in [
        ("inside a string", "{\"name\": \"Tom"),
        ("between values", "{\"name\": \"Tom\", "),
    ] {
        let mut state = worker_models::JsonState::default();
        if !state.push_str(prefix) {
            println!("JSON mask: {prefix:?} is not a JSON prefix");
            return;
        }
        let row = vec![0.5f32; tok.vocab_size()];
        let mut best = f64::INFINITY;
        let mut scratch = Vec::new();
        for _ in 0..5 {
            let mut work = row.clone();
            let t = Instant::now();
            for _ in 0..10 {
                work.copy_from_slice(&row);
                vocab.mask(&state, &mut work, &mut scratch);
            }
            best = best.min(t.elapsed().as_secs_f64() / 10.0);
        }
        println!("JSON mask, {name}: {:.3} ms per token", best * 1e3);
    }
}
