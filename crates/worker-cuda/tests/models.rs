//! Whole models on the GPU against the CPU backend: the logits of every
//! position of random-weight models of each architecture (NMSE <= 1e-3),
//! and Gemma 3 270M's greedy continuations. Needs a GPU: ignored by
//! default, run by `scripts/gpu-check.sh` with `--ignored`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use worker_compute::cpu::CpuBackend;
use worker_compute::{Backend, KvType, TokenPos};
use worker_gguf::{GgmlType, GgufFile};
use worker_models::synthetic::{SyntheticSpec, write_model};
use worker_models::{Arch, Generator, Model};
use worker_tokenizer::Tokenizer;

/// A top-two logit gap of the CPU below which greedy choices may part.
const NEAR_TIE: f32 = 0.1;

/// All-position logits of `tokens`: a prefill of the first `split` tokens
/// in one batch, then the rest one token at a time (both kernel paths).
fn logits<B: Backend>(backend: B, path: &Path, tokens: &[u32], split: usize) -> (Vec<f32>, usize) {
    let file = Arc::new(GgufFile::open(path).expect("model opens"));
    let mut model = Model::load(Arc::new(backend), file).expect("model loads");
    model.set_context_length(256);
    let n = tokens.len();
    let mut ws = model.workspace(n, n).expect("workspace");
    let mut kv = model.kv_cache(1, 256, KvType::F16, n).expect("kv");
    let mut all = Vec::new();
    let mut out = Vec::new();
    let pos = |r: std::ops::Range<usize>| -> Vec<TokenPos> {
        r.map(|i| TokenPos {
            seq: 0,
            pos: i as u32,
        })
        .collect()
    };
    let want: Vec<usize> = (0..split).collect();
    model
        .forward(
            &mut ws,
            &mut kv,
            &tokens[..split],
            &pos(0..split),
            &want,
            &mut out,
        )
        .expect("prefill");
    all.extend_from_slice(&out);
    for i in split..n {
        model
            .forward(
                &mut ws,
                &mut kv,
                &tokens[i..=i],
                &pos(i..i + 1),
                &[0],
                &mut out,
            )
            .expect("decode");
        all.extend_from_slice(&out);
    }
    (all, model.vocab_size())
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn synthetic_models_match_the_cpu_backend() {
    let tokens: Vec<u32> = (0..40u32).map(|i| (i * 131 + 7) % 500).collect();
    let dir = std::env::temp_dir().join(format!("llorch-cuda-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let mut failures = Vec::new();
    for arch in [
        Arch::Llama,
        Arch::Qwen2,
        Arch::Phi3,
        Arch::Gpt2,
        Arch::Gemma3,
    ] {
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let path = dir.join(format!("{}-{ty}.gguf", arch.name()));
            write_model(&SyntheticSpec::conformance(arch, ty), &path).expect("write model");
            let (want, vocab) = logits(CpuBackend::new(4).expect("cpu"), &path, &tokens, 32);
            let (got, _) = logits(gpu(), &path, &tokens, 32);
            let e = nmse(&got, &want);
            let argmax_same = got
                .chunks_exact(vocab)
                .zip(want.chunks_exact(vocab))
                .filter(|(g, w)| worker_models::argmax(g) == worker_models::argmax(w))
                .count();
            eprintln!(
                "{} {ty}: nmse {e:.3e}, argmax equal at {argmax_same}/{} positions",
                arch.name(),
                tokens.len()
            );
            if e.is_nan() || e > 1e-3 {
                failures.push(format!("{} {ty}: nmse {e:.3e} > 1e-3", arch.name()));
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn gemma_path() -> PathBuf {
    let path = worker_common::paths::default_model_path();
    assert!(
        path.is_file(),
        "Gemma 3 270M is missing at {}: set LLORCH_TEST_MODEL",
        path.display()
    );
    path
}

fn generator<B: Backend>(backend: B, path: &Path) -> Generator<B> {
    let file = Arc::new(GgufFile::open(path).expect("model opens"));
    let tok = Tokenizer::from_gguf(file.metadata()).expect("tokenizer");
    let model = Model::load(Arc::new(backend), file).expect("model loads");
    Generator::new(model, tok, 512, KvType::F16, 512).expect("generator")
}

fn top_two_gap(v: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in v {
        if x > a {
            b = a;
            a = x;
        } else if x > b {
            b = x;
        }
    }
    a - b
}

#[test]
#[ignore = "needs an NVIDIA GPU and Gemma 3 270M: scripts/gpu-check.sh runs it"]
fn gemma3_greedy_matches_the_cpu_backend() {
    let path = gemma_path();
    let mut cpu = generator(CpuBackend::new(8).expect("cpu"), &path);
    let mut gpu = generator(gpu(), &path);
    let prompts = [
        "The capital of France is",
        "Once upon a time, in a small village,",
        "def fibonacci(n):",
        "The three primary colors are",
        "Water boils at a temperature of",
    ];
    let mut failures = Vec::new();
    for (i, text) in prompts.iter().enumerate() {
        let prompt = cpu.tokenizer().encode(text, true, false).expect("encode");
        let want = cpu.greedy_ids(&prompt, 32).expect("cpu greedy");
        let got = gpu.greedy_ids(&prompt, 32).expect("gpu greedy");
        let l_cpu = cpu.prompt_logits(&prompt).expect("cpu logits");
        let l_gpu = gpu.prompt_logits(&prompt).expect("gpu logits");
        let e = nmse(&l_gpu, &l_cpu);
        match got.iter().zip(&want).position(|(a, b)| a != b) {
            None => eprintln!("prompt {i}: 32 greedy tokens equal; last-position nmse {e:.2e}"),
            Some(k) => {
                let mut ctx = prompt.clone();
                ctx.extend_from_slice(&want[..k]);
                let gap = top_two_gap(&cpu.prompt_logits(&ctx).expect("logits"));
                eprintln!(
                    "prompt {i}: differs at step {k}, CPU top-two gap {gap:.4}; nmse {e:.2e}"
                );
                if gap >= NEAR_TIE {
                    failures.push(format!("prompt {i} differs at step {k} (gap {gap:.4})"));
                }
            }
        }
        if e > 1e-3 {
            failures.push(format!("prompt {i}: last-position nmse {e:.3e} > 1e-3"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
