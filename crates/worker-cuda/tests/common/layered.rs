//! A Gemma 4 cache for the tests: layers of several K/V widths, layers
//! that read an earlier layer's rows, and batches of several sequences.

use super::{buf_with, random, read};
use worker_compute::{AttnParams, Backend, KvSpec, KvType, TokenPos};

/// The windowed layers' window.
pub const WINDOW: u32 = 4;

/// Per layer: its attention and the earlier layer whose rows it reads.
/// Two windowed layers of heads of 16 (rows 32 wide), a global one of
/// heads of 48 (rows 96 wide), then three that read the last windowed
/// and the global layer's rows.
pub fn layers() -> Vec<(AttnParams, Option<usize>)> {
    let attn = |n_head_kv, head_dim, window| AttnParams {
        n_head: 4,
        n_head_kv,
        head_dim,
        scale: 1.0,
        window,
        softcap: None,
    };
    let windowed = attn(2, 16, Some(WINDOW));
    let global = attn(2, 48, None);
    vec![
        (windowed, None),
        (windowed, None),
        (global, None),
        (windowed, Some(1)),
        (global, Some(2)),
        (windowed, Some(1)),
    ]
}

/// The cache of [`layers`], of type `ty`, for three sequences of 64
/// positions and batches of up to 12 tokens.
pub fn spec(ty: KvType) -> KvSpec {
    let layers = layers();
    let dims: Vec<usize> = layers
        .iter()
        .map(|(p, _)| p.n_head_kv * p.head_dim)
        .collect();
    KvSpec {
        n_seq: 3,
        n_ctx: 64,
        layer_windows: layers.iter().map(|(p, _)| p.window).collect(),
        kv_dim: dims.iter().copied().max().unwrap_or(0),
        max_batch: 12,
        ty,
        layer_states: Vec::new(),
        layer_dims: dims,
        layer_sources: layers.iter().map(|(_, s)| *s).collect(),
    }
}

/// Prefill batches of sequences interleaved (12 and 10 tokens), then ten
/// single-token steps of all three, in changing orders, past the windowed
/// rings' 16 slots.
pub fn batches() -> Vec<Vec<TokenPos>> {
    let t = |seq: usize, pos: u32| TokenPos { seq, pos };
    let mut first = Vec::new();
    for p in 0..8 {
        first.push(t(1, p));
        if p < 4 {
            first.push(t(2, p));
        }
    }
    let mut second = Vec::new();
    for p in 0..6 {
        second.push(t(0, p));
        if p < 3 {
            second.push(t(2, 4 + p));
        }
    }
    second.push(t(1, 8));
    let mut out = vec![first, second];
    for s in 0..10u32 {
        let mut b = vec![t(0, 6 + s), t(1, 9 + s), t(2, 7 + s)];
        if s % 2 == 1 {
            b.reverse();
        }
        out.push(b);
    }
    out
}

/// Layer `il`'s inputs in batch `bi` of `n` tokens: queries, keys and
/// values (the keys and values unused by a layer that reads another's).
pub fn inputs(p: &AttnParams, bi: usize, il: usize, n: usize) -> [Vec<f32>; 3] {
    let (q_dim, kv_dim) = (p.n_head * p.head_dim, p.n_head_kv * p.head_dim);
    let seed = (100 * bi + 10 * il) as u64;
    [
        random(n * q_dim, seed, 1.0),
        random(n * kv_dim, seed + 1, 1.0),
        random(n * kv_dim, seed + 2, 1.0),
    ]
}

/// Batch `bi` through every layer of [`layers`] in order on backend `b`:
/// each layer's attention output (stored and attended, or attended over
/// the rows of the layer it reads).
pub fn layered_step<B: Backend>(
    b: &B,
    kv: &mut B::Kv,
    bi: usize,
    tokens: &[TokenPos],
) -> worker_compute::Result<Vec<Vec<f32>>> {
    let n = tokens.len();
    let mut outs = Vec::new();
    for (il, (p, source)) in layers().iter().enumerate() {
        let [q, k, v] = inputs(p, bi, il, n);
        let q_dim = p.n_head * p.head_dim;
        let qb = buf_with(b, &q);
        let mut o = b.buf(n * q_dim)?;
        if source.is_some() {
            b.attention_shared(kv, il, tokens, &qb, p, None, &mut o)?;
        } else {
            let (kb, vb) = (buf_with(b, &k), buf_with(b, &v));
            b.attention(kv, il, tokens, &qb, &kb, &vb, p, None, &mut o)?;
        }
        outs.push(read(b, &o, n * q_dim));
    }
    Ok(outs)
}
