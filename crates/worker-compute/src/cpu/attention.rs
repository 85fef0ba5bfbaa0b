//! Attention over the KV cache on the CPU.
//!
//! Tokens of a batch are grouped by sequence; a group's K and V rows are
//! converted to f32 once and shared by all its queries, which run in
//! parallel per (token, head).
//!
//! The arithmetic follows the order of llama.cpp's CPU path where that was
//! measured to matter, because some models (Gemma 3 among them) amplify
//! last-bit differences in attention into visibly different logits:
//! - dot products accumulate in 16 lanes (element `i` into lane `i % 16`)
//!   with fused multiply-adds, then reduce pairwise (8+8, 4+4, 2+2, 1+1);
//! - the softmax sums exponentials per 16 positions into an f64 total and
//!   multiplies by its reciprocal;
//! - with an f16 cache, the query and the softmax weights are rounded to
//!   f16 before their products, as the f16 matrix products there do;
//! - a head's attention sink (a logit with a zero value) raises the max
//!   when larger, and its exponential joins the f64 total last.

// Kernels index fixed-size blocks and lanes explicitly: that is the shape
// the vectorizer turns into SIMD, and it mirrors the block layouts.
#![allow(clippy::needless_range_loop)]

use super::kv::CpuKv;
use crate::error::Result;
use crate::types::{AttnParams, KvType, TokenPos};
use half::f16;
use rayon::prelude::*;

/// Stores `k`/`v` of every token, then writes each token's attention output
/// (`n_head * head_dim` values) to `out`; `sinks` holds a logit per query
/// head (at least `n_head`) that joins each softmax. The buffers may be
/// longer than the batch needs, not shorter.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    kv: &mut CpuKv,
    layer: usize,
    tokens: &[TokenPos],
    [q, k, v]: [&[f32]; 3],
    p: &AttnParams,
    sinks: Option<&[f32]>,
    out: &mut [f32],
    avx2: bool,
) -> Result<()> {
    if kv.has_source(layer) {
        return Err(crate::ComputeError::Shape(format!(
            "layer {layer} reads another layer's rows and stores none"
        )));
    }
    check(kv, layer, tokens, p, sinks)?;
    let (n, kv_dim) = (tokens.len(), kv.layer_dim(layer));
    let k = fitted(k, n * kv_dim, "attention keys")?;
    let v = fitted(v, n * kv_dim, "attention values")?;
    for (i, t) in tokens.iter().enumerate() {
        kv.store(
            layer,
            t.seq,
            t.pos,
            &k[i * kv_dim..(i + 1) * kv_dim],
            &v[i * kv_dim..(i + 1) * kv_dim],
        )?;
    }
    attend(kv, layer, tokens, q, p, sinks, out, avx2)
}

/// Attention of each token's query over the rows of the layer that
/// `layer` reads (stored by that layer earlier in the pass, this batch's
/// included), storing nothing.
#[allow(clippy::too_many_arguments)]
pub fn attention_shared(
    kv: &CpuKv,
    layer: usize,
    tokens: &[TokenPos],
    q: &[f32],
    p: &AttnParams,
    sinks: Option<&[f32]>,
    out: &mut [f32],
    avx2: bool,
) -> Result<()> {
    if !kv.has_source(layer) {
        return Err(crate::ComputeError::Shape(format!(
            "layer {layer} reads no other layer's rows"
        )));
    }
    check(kv, layer, tokens, p, sinks)?;
    attend(kv, kv.rows_of(layer), tokens, q, p, sinks, out, avx2)
}

/// The first `need` values of `buf`, which must hold that many.
fn fitted<'a>(buf: &'a [f32], need: usize, what: &str) -> Result<&'a [f32]> {
    buf.get(..need).ok_or_else(|| {
        crate::ComputeError::Shape(format!(
            "{what}: a buffer of {} values for {need}",
            buf.len()
        ))
    })
}

/// Checks the parameters against the cache layer `layer` reads.
fn check(
    kv: &CpuKv,
    layer: usize,
    tokens: &[TokenPos],
    p: &AttnParams,
    sinks: Option<&[f32]>,
) -> Result<()> {
    let kv_dim = kv.layer_dim(kv.rows_of(layer));
    if p.n_head_kv * p.head_dim != kv_dim
        || p.n_head_kv == 0
        || !p.n_head.is_multiple_of(p.n_head_kv)
    {
        return Err(crate::ComputeError::Shape(format!(
            "{} query heads and {} KV heads of {} for cache rows {kv_dim} wide",
            p.n_head, p.n_head_kv, p.head_dim
        )));
    }
    if let Some(s) = sinks.filter(|s| s.len() < p.n_head) {
        return Err(crate::ComputeError::Shape(format!(
            "{} attention sinks for {} heads",
            s.len(),
            p.n_head
        )));
    }
    if p.window.is_some() && tokens.len() > kv.max_batch() {
        // A windowed layer's ring holds the window plus one batch: a larger
        // batch would overwrite keys its own earlier tokens still need.
        return Err(crate::ComputeError::Shape(format!(
            "a batch of {} tokens exceeds the {} the sliding-window cache was sized for",
            tokens.len(),
            kv.max_batch()
        )));
    }
    Ok(())
}

/// Each token's attention over its sequence's rows of cache layer
/// `rows` (already stored) into `out`.
#[allow(clippy::too_many_arguments)]
fn attend(
    kv: &CpuKv,
    rows: usize,
    tokens: &[TokenPos],
    q: &[f32],
    p: &AttnParams,
    sinks: Option<&[f32]>,
    out: &mut [f32],
    avx2: bool,
) -> Result<()> {
    let kv_dim = kv.layer_dim(rows);
    let q_dim = p.n_head * p.head_dim;
    let q = fitted(q, tokens.len() * q_dim, "attention queries")?;
    let have = out.len();
    let out = out
        .get_mut(..tokens.len() * q_dim)
        .ok_or_else(|| crate::ComputeError::Shape(format!("attention output: {have} values")))?;
    let round_q = kv.kv_type() == KvType::F16;
    let group_size = p.n_head / p.n_head_kv.max(1);

    let mut start = 0;
    while start < tokens.len() {
        let seq = tokens[start].seq;
        let end = start + tokens[start..].iter().take_while(|t| t.seq == seq).count();
        let group = &tokens[start..end];
        let lo = group.iter().map(|t| lo_of(p, t.pos)).min().unwrap_or(0);
        let hi = group.iter().map(|t| t.pos).max().unwrap_or(0);
        let n_pos = (hi - lo + 1) as usize;
        let mut keys = vec![0f32; n_pos * kv_dim];
        let mut vals = vec![0f32; n_pos * kv_dim];
        for (j, pos) in (lo..=hi).enumerate() {
            kv.load(
                rows,
                seq,
                pos,
                &mut keys[j * kv_dim..(j + 1) * kv_dim],
                &mut vals[j * kv_dim..(j + 1) * kv_dim],
            )?;
        }

        let out_group = &mut out[start * q_dim..end * q_dim];
        let q_group = &q[start * q_dim..end * q_dim];
        let job = HeadJob {
            group,
            q_group,
            keys: &keys,
            vals: &vals,
            lo,
            kv_dim,
            q_dim,
            group_size,
            round_f16: round_q,
            p,
            sinks,
        };
        // One task per (token, KV head): the query heads that share a KV
        // head read each key once between them.
        out_group
            .par_chunks_mut(group_size * p.head_dim)
            .enumerate()
            .for_each(|(i, o)| job.run(i, o, avx2));
        start = end;
    }
    Ok(())
}

/// The first position a query at `pos` sees.
fn lo_of(p: &AttnParams, pos: u32) -> u32 {
    match p.window {
        Some(w) => pos.saturating_sub(w.saturating_sub(1)),
        None => 0,
    }
}

/// One group's shared inputs; `run` computes one (token, head) output.
struct HeadJob<'a> {
    group: &'a [TokenPos],
    q_group: &'a [f32],
    keys: &'a [f32],
    vals: &'a [f32],
    lo: u32,
    kv_dim: usize,
    q_dim: usize,
    group_size: usize,
    round_f16: bool,
    p: &'a AttnParams,
    sinks: Option<&'a [f32]>,
}

impl HeadJob<'_> {
    fn run(&self, i: usize, o: &mut [f32], avx2: bool) {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: `avx2` is set only when the CPU reports AVX2 and FMA.
            unsafe { self.run_avx2(i, o) };
            return;
        }
        self.body(i, o, false);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run_avx2(&self, i: usize, o: &mut [f32]) {
        self.body(i, o, true);
    }

    /// The outputs of the query heads of KV head `g` for token `t`, where
    /// `i = t * n_head_kv + g`; `o` holds their `group_size` outputs.
    #[inline(always)]
    fn body(&self, i: usize, o: &mut [f32], avx2: bool) {
        let p = self.p;
        let hd = p.head_dim;
        let gs = self.group_size;
        let n_kv = p.n_head_kv.max(1);
        let (t, g) = (i / n_kv, i % n_kv);
        let tok = self.group[t];
        let mut qs: Vec<f32> = self.q_group[t * self.q_dim + g * gs * hd..][..gs * hd].to_vec();
        if self.round_f16 {
            qs.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
        }
        let first = lo_of(p, tok.pos);
        let n = (tok.pos - first + 1) as usize;
        let base = (first - self.lo) as usize;
        let key = |j: usize| &self.keys[(base + j) * self.kv_dim + g * hd..][..hd];
        let q = |h: usize| &qs[h * hd..(h + 1) * hd];

        // scores[h * n + j]: every dot product in `dot_lanes`' order.
        let mut scores = vec![0f32; gs * n];
        let mut h0 = 0;
        #[cfg(target_arch = "x86_64")]
        if avx2 && hd.is_multiple_of(16) {
            // Four heads against one key: the key is read once for the four
            // (the same products as `dot_lanes`: a · b is b · a, bit for
            // bit).
            while h0 + 4 <= gs {
                for j in 0..n {
                    // SAFETY: `avx2` is set only when the CPU has AVX2 and FMA.
                    let d = unsafe {
                        dot_lanes4_avx2(key(j), [q(h0), q(h0 + 1), q(h0 + 2), q(h0 + 3)])
                    };
                    for (k, dk) in d.into_iter().enumerate() {
                        scores[(h0 + k) * n + j] = dk;
                    }
                }
                h0 += 4;
            }
        }
        for h in h0..gs {
            let row = &mut scores[h * n..(h + 1) * n];
            let mut j = 0;
            #[cfg(target_arch = "x86_64")]
            if avx2 && hd.is_multiple_of(16) {
                // Four keys at a time: eight independent FMA chains.
                while j + 4 <= n {
                    // SAFETY: `avx2` is set only when the CPU has AVX2 and FMA.
                    let d = unsafe {
                        dot_lanes4_avx2(q(h), [key(j), key(j + 1), key(j + 2), key(j + 3)])
                    };
                    row[j..j + 4].copy_from_slice(&d);
                    j += 4;
                }
            }
            for (jj, s) in row.iter_mut().enumerate().skip(j) {
                *s = dot_lanes(q(h), key(jj));
            }
        }

        let weights: Vec<Vec<f32>> = scores
            .chunks_exact_mut(n)
            .enumerate()
            .map(|(h, row)| {
                let sink = self.sinks.map(|s| s[g * gs + h]);
                self.softmax(row, first, sink)
            })
            .collect();
        let vals = &self.vals[base * self.kv_dim + g * hd..];
        let mut h0 = 0;
        if hd.is_multiple_of(16) {
            // Four heads at a time: each value row is read once for the four.
            while h0 + 4 <= gs {
                let w = [
                    &weights[h0][..],
                    &weights[h0 + 1][..],
                    &weights[h0 + 2][..],
                    &weights[h0 + 3][..],
                ];
                let o4 = &mut o[h0 * hd..(h0 + 4) * hd];
                weighted_values_by_lane4(first as usize, w, vals, self.kv_dim, o4);
                h0 += 4;
            }
        }
        for (h, oh) in o.chunks_exact_mut(hd).enumerate().skip(h0) {
            if hd.is_multiple_of(32) {
                weighted_values_by_lane(first as usize, &weights[h], vals, self.kv_dim, oh);
            } else {
                let vrow = |j: usize| &self.vals[(base + j) * self.kv_dim + g * hd..][..hd];
                weighted_values_by_key(first as usize, &weights[h], vrow, oh);
            }
        }
    }

    /// The attention weights from one head's dot products with keys from
    /// position `first` on: scaled (and soft-capped), exponentials summed
    /// per block of 16 cache cells into an f64 total (the sink's, if the
    /// head has one, added last), normalized by its reciprocal, and rounded
    /// as the f16 products round them.
    #[inline(always)]
    fn softmax(&self, scores: &mut [f32], first: u32, sink: Option<f32>) -> Vec<f32> {
        let p = self.p;
        for s in scores.iter_mut() {
            let dot = *s * p.scale;
            *s = match p.softcap {
                Some(cap) => cap * (dot / cap).tanh(),
                None => dot,
            };
        }
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let max = sink.map_or(max, |s| max.max(s));
        let mut sum = 0f64;
        let mut block = [0f32; 16];
        let mut block_id = first / 16;
        for (j, s) in scores.iter_mut().enumerate() {
            let pos = first + j as u32;
            if pos / 16 != block_id {
                sum += f64::from(reduce16(block));
                block = [0f32; 16];
                block_id = pos / 16;
            }
            *s = (*s - max).exp();
            block[(pos % 16) as usize] = *s;
        }
        sum += f64::from(reduce16(block));
        if let Some(s) = sink {
            sum += f64::from((s - max).exp());
        }
        let inv = (1.0 / sum) as f32;
        scores
            .iter()
            .map(|&e| {
                let w = e * inv;
                if self.round_f16 {
                    f16::from_f32(w).to_f32()
                } else {
                    w
                }
            })
            .collect()
    }
}

/// `o[d] = Σ_j w_j·v_j[d]`, accumulated in 16 lanes (key at position
/// `pos` in lane `pos % 16`, fused multiply-adds in key order) and
/// reduced as [`reduce16`]. Lane by lane, 32 dimensions at a time: the
/// lane's keys (every 16th) stream past four accumulators that stay in
/// registers, instead of a 16-lane accumulator table being loaded and
/// stored for every key. `vals` holds the value rows `stride` apart, the
/// first at offset 0; `o.len()` is a multiple of 32.
#[inline(always)]
fn weighted_values_by_lane(
    first: usize,
    weights: &[f32],
    vals: &[f32],
    stride: usize,
    o: &mut [f32],
) {
    let hd = o.len();
    let n = weights.len();
    let mut lanes = vec![0f32; 16 * hd];
    for (l, acc) in lanes.chunks_exact_mut(hd).enumerate() {
        // The lane's first key: (first + j0) % 16 == l.
        let j0 = (l + 16 - first % 16) % 16;
        if j0 >= n {
            continue;
        }
        for (c, out) in acc.chunks_exact_mut(32).enumerate() {
            let mut a = [[0f32; 8]; 4];
            let rows = vals[j0 * stride + 32 * c..].chunks(16 * stride);
            for (row, &w) in rows.zip(weights[j0..].iter().step_by(16)) {
                // Every key's row holds `hd` values (a multiple of 32).
                let v = &row[..32];
                for q in 0..4 {
                    for e in 0..8 {
                        a[q][e] = w.mul_add(v[8 * q + e], a[q][e]);
                    }
                }
            }
            out.copy_from_slice(a.as_flattened());
        }
    }
    reduce16_rows(&lanes, o);
}

/// [`weighted_values_by_lane`] for four heads that share the value rows
/// (weights `w[h]`, output `o[h * hd..(h + 1) * hd]`): 16 dimensions at a
/// time, two accumulators per head, each value row read once for the four.
/// The same sums in the same order per head. `hd` is a multiple of 16.
#[inline(always)]
fn weighted_values_by_lane4(
    first: usize,
    w: [&[f32]; 4],
    vals: &[f32],
    stride: usize,
    o: &mut [f32],
) {
    let hd = o.len() / 4;
    let n = w[0].len();
    // The four heads' weights of each key side by side.
    let wj: Vec<[f32; 4]> = (0..n)
        .map(|j| [w[0][j], w[1][j], w[2][j], w[3][j]])
        .collect();
    let mut lanes = vec![0f32; 4 * 16 * hd];
    for l in 0..16 {
        let j0 = (l + 16 - first % 16) % 16;
        if j0 >= n {
            continue;
        }
        for c in 0..hd / 16 {
            let mut a = [[0f32; 16]; 4];
            let rows = vals[j0 * stride + 16 * c..].chunks(16 * stride);
            for (row, wk) in rows.zip(wj[j0..].iter().step_by(16)) {
                // Every key's row holds `hd` values (a multiple of 16).
                let v = &row[..16];
                for h in 0..4 {
                    for e in 0..16 {
                        a[h][e] = wk[h].mul_add(v[e], a[h][e]);
                    }
                }
            }
            for (h, ah) in a.iter().enumerate() {
                let at = (h * 16 + l) * hd + 16 * c;
                lanes[at..at + 16].copy_from_slice(ah);
            }
        }
    }
    for (h, oh) in o.chunks_exact_mut(hd).enumerate() {
        reduce16_rows(&lanes[h * 16 * hd..(h + 1) * 16 * hd], oh);
    }
}

/// [`weighted_values_by_lane`] for any head size: one
/// accumulator row per lane, updated key by key (the same sums in the same
/// order).
fn weighted_values_by_key<'v>(
    first: usize,
    weights: &[f32],
    vrow: impl Fn(usize) -> &'v [f32],
    o: &mut [f32],
) {
    let hd = o.len();
    let mut acc = vec![0f32; 16 * hd];
    for (j, &w) in weights.iter().enumerate() {
        let lane = (first + j) % 16;
        for (a, &v) in acc[lane * hd..(lane + 1) * hd].iter_mut().zip(vrow(j)) {
            *a = w.mul_add(v, *a);
        }
    }
    reduce16_rows(&acc, o);
}

/// `o[d] = reduce16(lanes[0][d], …, lanes[15][d])` for 16 rows of
/// `o.len()` values: the same pairwise tree, eight dimensions at a time
/// (plain array arithmetic the compiler turns into vector adds).
#[inline(always)]
fn reduce16_rows(lanes: &[f32], o: &mut [f32]) {
    let hd = o.len();
    let full = hd / 8 * 8;
    for c in (0..full).step_by(8) {
        let mut a = [[0f32; 8]; 16];
        for (l, row) in a.iter_mut().enumerate() {
            row.copy_from_slice(&lanes[l * hd + c..l * hd + c + 8]);
        }
        let mut h = [[0f32; 8]; 8];
        for i in 0..8 {
            for e in 0..8 {
                h[i][e] = a[i][e] + a[i + 8][e];
            }
        }
        for e in 0..8 {
            let q = [
                h[0][e] + h[4][e],
                h[1][e] + h[5][e],
                h[2][e] + h[6][e],
                h[3][e] + h[7][e],
            ];
            o[c + e] = (q[0] + q[2]) + (q[1] + q[3]);
        }
    }
    for d in full..hd {
        o[d] = reduce16(std::array::from_fn(|l| lanes[l * hd + d]));
    }
}

/// A dot product accumulated in 16 lanes with fused multiply-adds.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let full = a.len() / 16 * 16;
    for (ca, cb) in a[..full].chunks_exact(16).zip(b[..full].chunks_exact(16)) {
        for l in 0..16 {
            acc[l] = ca[l].mul_add(cb[l], acc[l]);
        }
    }
    let mut sum = reduce16(acc);
    for (x, y) in a[full..].iter().zip(&b[full..]) {
        sum += x * y;
    }
    sum
}

/// [`dot_lanes`] of `a` with four vectors of the same length (a multiple
/// of 16): lanes 0..8 and 8..16 of each in two registers, fused
/// multiply-adds in the same order, then the same reduction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_lanes4_avx2(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n = a.len();
    assert!(n.is_multiple_of(16) && b.iter().all(|v| v.len() == n));
    let mut lo = [_mm256_setzero_ps(); 4];
    let mut hi = [_mm256_setzero_ps(); 4];
    for c in (0..n).step_by(16) {
        // SAFETY: c + 16 <= n for `a` and every `b[k]` (asserted above).
        unsafe {
            let a0 = _mm256_loadu_ps(a.as_ptr().add(c));
            let a1 = _mm256_loadu_ps(a.as_ptr().add(c + 8));
            for k in 0..4 {
                let p = b[k].as_ptr().add(c);
                lo[k] = _mm256_fmadd_ps(a0, _mm256_loadu_ps(p), lo[k]);
                hi[k] = _mm256_fmadd_ps(a1, _mm256_loadu_ps(p.add(8)), hi[k]);
            }
        }
    }
    let mut out = [0f32; 4];
    for k in 0..4 {
        let mut lanes = [0f32; 16];
        // SAFETY: `lanes` holds 16 floats.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), lo[k]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi[k]);
        }
        out[k] = reduce16(lanes);
    }
    out
}

/// Pairwise reduction of 16 lanes: halves, quarters, then the last pair.
#[inline(always)]
fn reduce16(a: [f32; 16]) -> f32 {
    let mut h = [0f32; 8];
    for i in 0..8 {
        h[i] = a[i] + a[i + 8];
    }
    let q = [h[0] + h[4], h[1] + h[5], h[2] + h[6], h[3] + h[7]];
    (q[0] + q[2]) + (q[1] + q[3])
}

#[cfg(test)]
mod tests;
