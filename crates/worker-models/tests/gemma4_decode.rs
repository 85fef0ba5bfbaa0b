//! Gemma 4's layers that read an earlier layer's K/V, run as a server runs
//! them: a prompt in chunks, then one token at a time past the window, and
//! two sequences in one batch. Each way must give the logits of the whole
//! prompt in one batch, which the conformance tests check against
//! llama.cpp.

use std::sync::Arc;
use worker_compute::cpu::CpuBackend;
use worker_compute::{KvType, TokenPos};
use worker_gguf::{GgmlType, GgufFile};
use worker_models::synthetic::{SyntheticSpec, write_model};
use worker_models::{Arch, Model};

/// The F32 conformance model, written for the test `name`.
fn model(name: &str) -> Model<CpuBackend> {
    let spec = SyntheticSpec::conformance(Arch::Gemma4, GgmlType::F32);
    let dir = std::env::temp_dir().join(format!("llorch-gemma4-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("m.gguf");
    write_model(&spec, &path).expect("write model");
    let file = Arc::new(GgufFile::open(&path).expect("open"));
    std::fs::remove_dir_all(&dir).ok();
    Model::load(Arc::new(CpuBackend::new(2).expect("backend")), file).expect("load")
}

fn ids(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 5 + salt) % 500).collect()
}

/// Runs `chunks` of (sequence, ids, first position) through one cache,
/// returning the logits of every token.
fn run(model: &Model<CpuBackend>, batches: &[Vec<(usize, u32, u32)>]) -> Vec<Vec<f32>> {
    let max = batches.iter().map(Vec::len).max().unwrap_or(1);
    let mut ws = model.workspace(max, max).expect("workspace");
    let mut kv = model.kv_cache(2, 64, KvType::F32, max).expect("kv");
    let v = model.vocab_size();
    let mut rows = Vec::new();
    for batch in batches {
        let tokens: Vec<TokenPos> = batch
            .iter()
            .map(|&(seq, _, pos)| TokenPos { seq, pos })
            .collect();
        let ids: Vec<u32> = batch.iter().map(|&(_, id, _)| id).collect();
        let all: Vec<usize> = (0..batch.len()).collect();
        let mut out = Vec::new();
        model
            .forward(&mut ws, &mut kv, &ids, &tokens, &all, &mut out)
            .expect("forward");
        rows.extend(out.chunks(v).map(<[f32]>::to_vec));
    }
    rows
}

fn worst(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn chunks_and_single_tokens_give_the_one_batch_logits() {
    let m = model("chunks");
    let prompt = ids(20, 0);
    let token = |i: usize| (0, prompt[i], i as u32);
    let whole = run(&m, &[(0..20).map(token).collect()]);
    // Chunks of 7 and 5, then one token at a time (the window is 4).
    let mut batches: Vec<Vec<_>> = vec![(0..7).map(token).collect(), (7..12).map(token).collect()];
    batches.extend((12..20).map(|i| vec![token(i)]));
    let split = run(&m, &batches);
    let w = worst(&whole, &split);
    assert!(w <= 1e-4, "chunked logits differ by {w}");
}

#[test]
fn two_sequences_in_one_batch_give_their_own_logits() {
    let m = model("sequences");
    let (a, b) = (ids(9, 0), ids(9, 11));
    let seq = |s: usize, p: &[u32]| -> Vec<(usize, u32, u32)> {
        p.iter()
            .enumerate()
            .map(|(i, &id)| (s, id, i as u32))
            .collect()
    };
    let alone_a = run(&m, &[seq(0, &a)]);
    let alone_b = run(&m, &[seq(1, &b)]);
    // Both prompts in one batch, each sequence's tokens together.
    let both = run(&m, &[[seq(0, &a), seq(1, &b)].concat()]);
    let w = worst(&[alone_a, alone_b].concat(), &both);
    assert!(w <= 1e-4, "batched sequences differ by {w}");
}
