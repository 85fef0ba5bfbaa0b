//! What gpt-oss adds to the CPU backend, against references computed here:
//! attention sinks (a logit per head that joins the softmax with a zero
//! value) and per-expert biases, rows of a stacked 2-D tensor.

use std::sync::Arc;
use worker_compute::cpu::{CpuBackend, CpuWeight};
use worker_compute::{AttnParams, Backend, KvSpec, KvType, TokenPos, WeightSource};
use worker_gguf::{GgufFile, GgufWriter};

/// A file holding the f32 tensors `(name, dims, values)`.
fn file(tensors: &[(&str, &[u64], &[f32])]) -> Arc<GgufFile> {
    let mut w = GgufWriter::new();
    w.add("general.architecture", "gpt-oss").expect("metadata");
    for &(name, dims, values) in tensors {
        w.add_f32(name, dims, values).expect("tensor");
    }
    Arc::new(GgufFile::from_bytes(w.to_bytes()).expect("file parses"))
}

fn source(file: &Arc<GgufFile>, name: &str) -> WeightSource {
    let info = file.header().tensor(name).expect("tensor").clone();
    WeightSource {
        file: file.clone(),
        name: name.into(),
        ty: info.ty,
        dims: info.dims,
        expert: None,
    }
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

const N_HEAD: usize = 4;
const N_HEAD_KV: usize = 2;
const HD: usize = 32;

/// Attention of every token of one sequence (positions `0..n`, one batch)
/// in f64: softmax over the visible keys and the head's sink, if any.
fn reference(
    [q, k, v]: [&[f32]; 3],
    n: usize,
    window: Option<u32>,
    sinks: Option<&[f32]>,
) -> Vec<f32> {
    let scale = 1.0 / (HD as f64).sqrt();
    let (q_dim, kv_dim) = (N_HEAD * HD, N_HEAD_KV * HD);
    let mut out = vec![0f32; n * q_dim];
    for t in 0..n {
        let first = window.map_or(0, |w| (t + 1).saturating_sub(w as usize));
        for h in 0..N_HEAD {
            let g = h / (N_HEAD / N_HEAD_KV);
            let qh = &q[t * q_dim + h * HD..][..HD];
            let scores: Vec<f64> = (first..=t)
                .map(|j| {
                    let kj = &k[j * kv_dim + g * HD..][..HD];
                    let dot: f64 = qh.iter().zip(kj).map(|(&a, &b)| f64::from(a * b)).sum();
                    dot * scale
                })
                .collect();
            let sink = sinks.map(|s| f64::from(s[h]));
            let max = scores
                .iter()
                .copied()
                .chain(sink)
                .fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = scores.iter().chain(&sink).map(|s| (s - max).exp()).sum();
            for (i, s) in scores.iter().enumerate() {
                let w = (s - max).exp() / sum;
                let vj = &v[(first + i) * kv_dim + g * HD..][..HD];
                for (o, &x) in out[t * q_dim + h * HD..][..HD].iter_mut().zip(vj) {
                    *o += (w * f64::from(x)) as f32;
                }
            }
        }
    }
    out
}

#[test]
fn a_sink_takes_its_share_of_the_softmax_and_adds_nothing() {
    let c = CpuBackend::new(2).expect("cpu backend");
    let n = 9;
    let (q_dim, kv_dim) = (N_HEAD * HD, N_HEAD_KV * HD);
    // One sink among the scores, one above them, one below, one that can
    // take no weight at all.
    let sinks = [0.5f32, 3.0, -2.0, -1e30];
    let f = file(&[("sinks", &[N_HEAD as u64], &sinks)]);
    let sink_w = c.weight(source(&f, "sinks")).expect("sinks load");
    let (q, k, v) = (
        values(n * q_dim, 1),
        values(n * kv_dim, 2),
        values(n * kv_dim, 3),
    );
    let tokens: Vec<TokenPos> = (0..n as u32).map(|pos| TokenPos { seq: 0, pos }).collect();
    for window in [None, Some(4u32)] {
        let spec = KvSpec {
            n_seq: 1,
            n_ctx: 16,
            layer_windows: vec![window],
            kv_dim,
            max_batch: n,
            ty: KvType::F32,
            layer_states: Vec::new(),
            layer_dims: Vec::new(),
            layer_sources: Vec::new(),
        };
        let p = AttnParams {
            n_head: N_HEAD,
            n_head_kv: N_HEAD_KV,
            head_dim: HD,
            scale: 1.0 / (HD as f32).sqrt(),
            window,
            softcap: None,
        };
        let run = |sinks: Option<&CpuWeight>| {
            let mut kv = c.kv(&spec).expect("kv");
            let mut out = vec![0f32; n * q_dim];
            c.attention(&mut kv, 0, &tokens, &q, &k, &v, &p, sinks, &mut out)
                .expect("attention");
            out
        };
        let (with, without) = (run(Some(&sink_w)), run(None));
        let want = reference([&q, &k, &v], n, window, Some(&sinks));
        let worst = with
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "window {window:?}: off by {worst}");
        // Head 3's sink takes nothing: its outputs are those without sinks,
        // bit for bit; head 1's takes most of the weight.
        for t in 0..n {
            let head = |o: &[f32], h: usize| o[t * q_dim + h * HD..][..HD].to_vec();
            assert_eq!(head(&with, 3), head(&without, 3), "token {t}");
            let norm = |x: Vec<f32>| x.iter().map(|v| v * v).sum::<f32>();
            assert!(norm(head(&with, 1)) < norm(head(&without, 1)), "token {t}");
        }
    }
    // Fewer sinks than heads is a shape error, not a read past the end.
    let short = file(&[("short", &[2], &[0.0, 1.0])]);
    let short_w = c.weight(source(&short, "short")).expect("loads");
    let spec = KvSpec {
        n_seq: 1,
        n_ctx: 16,
        layer_windows: vec![None],
        kv_dim,
        max_batch: n,
        ty: KvType::F32,
        layer_states: Vec::new(),
        layer_dims: Vec::new(),
        layer_sources: Vec::new(),
    };
    let p = AttnParams {
        n_head: N_HEAD,
        n_head_kv: N_HEAD_KV,
        head_dim: HD,
        scale: 1.0,
        window: None,
        softcap: None,
    };
    let mut kv = c.kv(&spec).expect("kv");
    let mut out = vec![0f32; n * q_dim];
    let r = c.attention(
        &mut kv,
        0,
        &tokens,
        &q,
        &k,
        &v,
        &p,
        Some(&short_w),
        &mut out,
    );
    assert!(r.is_err(), "two sinks for four heads");
}

#[test]
fn an_experts_bias_is_its_row_of_the_stacked_tensor() {
    let c = CpuBackend::new(1).expect("cpu backend");
    // Three experts' biases of six values, stacked as [6, 3].
    let stacked: Vec<f32> = (0..18).map(|i| i as f32 * 0.5).collect();
    let f = file(&[("b", &[6, 3], &stacked)]);
    for e in 0..3 {
        match c.weight(source(&f, "b").expert_of(e)).expect("row loads") {
            CpuWeight::Vector(v) => assert_eq!(v, &stacked[e * 6..(e + 1) * 6]),
            CpuWeight::Matrix { .. } => panic!("expert {e}'s bias loaded as a matrix"),
        }
    }
    assert!(c.weight(source(&f, "b").expert_of(3)).is_err(), "no fourth");
    // The whole stack is a matrix (of f32 rows).
    assert!(matches!(
        c.weight(source(&f, "b")).expect("loads"),
        CpuWeight::Matrix { .. }
    ));
}
