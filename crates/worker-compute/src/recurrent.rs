//! The math of recurrent layers (gated delta nets), on host slices: the
//! CPU backend runs it on its buffers, and it is the reference a device
//! backend's kernels are checked against.
//!
//! A recurrent layer keeps, per sequence, a fixed-size state instead of
//! K/V rows (see [`StateShape`]):
//! - a causal depthwise convolution over the last `taps` inputs of each
//!   channel, whose state is the last `taps - 1` inputs (oldest first, one
//!   row of channels per step);
//! - per value head, a `d × d` matrix `S` updated by the gated delta rule
//!   for each token: `S ← S·exp(g)`, then `S ← S + k ⊗ β(v − Sᵀk)`, and the
//!   output is `Sᵀq / √d`, with `q` and `k` L2-normed, `g = softplus(α +
//!   dt_bias)·a` (`a < 0`, so the state decays) and `β = sigmoid(b)`.
//!
//! Matrices are stored transposed, row `j` holding column `j` of `S`, so
//! every product reads contiguous memory. A sequence's tokens must come in
//! order, each at the position after the last one its state has seen; a
//! token at position 0 starts from the zero state.

use crate::error::{ComputeError, Result};
use crate::types::{DeltaNetParams, StateShape, TokenPos};

/// Runs `body(args)` compiled for AVX2 and FMA where the CPU has them
/// (found at run time), else for the baseline: the loops over a head's
/// width then run eight lanes wide.
macro_rules! simd_dispatch {
    ($body:ident($($arg:ident),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            fn wide(
                p: &DeltaNetParams,
                h: usize,
                m: &mut [f32],
                x: &DeltaInputs<'_>,
                rows: &[usize],
                out: &mut [f32],
            ) {
                $body(p, h, m, x, rows, out)
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has both features, checked just above.
                return unsafe { wide($($arg),*) };
            }
        }
        $body($($arg),*)
    }};
}

/// The batch rows of each sequence in `tokens`, in batch order, with the
/// position of each sequence's first token.
pub fn rows_by_sequence(tokens: &[TokenPos]) -> Vec<(usize, u32, Vec<usize>)> {
    let mut out: Vec<(usize, u32, Vec<usize>)> = Vec::new();
    for (row, t) in tokens.iter().enumerate() {
        match out.iter_mut().find(|(seq, _, _)| *seq == t.seq) {
            Some((_, _, rows)) => rows.push(row),
            None => out.push((t.seq, t.pos, vec![row])),
        }
    }
    out
}

/// Checks that the rows of one sequence continue its state: consecutive
/// positions from `first`, which is either 0 (a fresh start) or `held`,
/// the next position the state expects.
pub fn check_continues(
    seq: usize,
    first: u32,
    rows: &[usize],
    tokens: &[TokenPos],
    held: u32,
) -> Result<()> {
    if first != 0 && first != held {
        return Err(ComputeError::StateGap {
            seq,
            pos: first,
            held,
        });
    }
    for (i, &r) in rows.iter().enumerate() {
        let want = first + i as u32;
        if tokens[r].pos != want {
            return Err(ComputeError::StateGap {
                seq,
                pos: tokens[r].pos,
                held: want,
            });
        }
    }
    Ok(())
}

/// The causal convolution of one sequence's `rows` of `x` (rows of
/// `shape.conv_channels`) into the same rows of `out`, continuing from
/// `state` (the last `taps - 1` inputs), which then holds the newest
/// inputs. `w` holds each channel's taps, oldest first.
pub fn conv_rows(
    shape: &StateShape,
    state: &mut [f32],
    w: &[f32],
    x: &[f32],
    rows: &[usize],
    out: &mut [f32],
) {
    let (c, taps) = (shape.conv_channels, shape.conv_taps);
    let keep = taps.saturating_sub(1);
    // The window of inputs: the state's rows, then the new ones.
    let mut window: Vec<f32> = Vec::with_capacity((keep + rows.len()) * c);
    window.extend_from_slice(&state[..keep * c]);
    for &r in rows {
        window.extend_from_slice(&x[r * c..(r + 1) * c]);
    }
    for (i, &r) in rows.iter().enumerate() {
        let o = &mut out[r * c..(r + 1) * c];
        for (ch, v) in o.iter_mut().enumerate() {
            let taps_w = &w[ch * taps..(ch + 1) * taps];
            let mut sum = 0f32;
            for (k, &wk) in taps_w.iter().enumerate() {
                sum += window[(i + k) * c + ch] * wk;
            }
            *v = sum;
        }
    }
    let last = window.len() / c - keep;
    state[..keep * c].copy_from_slice(&window[last * c..]);
}

/// `x / sqrt(sum(x²) + eps)`.
fn l2_normed(x: &[f32], eps: f32, out: &mut [f32]) {
    let sum: f32 = x.iter().map(|v| v * v).sum();
    let inv = 1.0 / (sum + eps).sqrt();
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v * inv;
    }
}

/// `ln(1 + e^x)`, linear above 20.
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 { x } else { (1.0 + x.exp()).ln() }
}

/// The inputs of one head's delta rule for one token.
struct HeadStep<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    decay: f32,
    beta: f32,
}

/// One token through one head's matrix `m` (`d × d`, transposed); writes
/// the head's output to `o`.
#[inline(always)]
fn head_step(m: &mut [f32], s: &HeadStep<'_>, o: &mut [f32]) {
    let d = s.k.len();
    let scale = 1.0 / (d as f32).sqrt();
    m.iter_mut().for_each(|x| *x *= s.decay);
    for (j, row) in m.chunks_exact_mut(d).enumerate() {
        let sk = dot(row, s.k);
        let delta = (s.v[j] - sk) * s.beta;
        for (x, &ki) in row.iter_mut().zip(s.k) {
            *x += delta * ki;
        }
    }
    for (j, row) in m.chunks_exact(d).enumerate() {
        let sq = dot(row, s.q);
        o[j] = sq * scale;
    }
}

/// The per-row inputs of a delta net layer, as the model computed them.
#[derive(Debug)]
pub struct DeltaInputs<'a> {
    /// Convolved rows: queries, keys, values ([`DeltaNetParams::channels`]
    /// wide).
    pub qkv: &'a [f32],
    /// The decay's input per row and head, its bias already added.
    pub alpha: &'a [f32],
    /// The update strength's logit per row and head.
    pub beta: &'a [f32],
    /// The decay rate per head (negative).
    pub a: &'a [f32],
}

/// Head `h` of one sequence's `rows` through the delta rule, continuing
/// from its matrix `m`; writes the head's output for the `i`-th of `rows`
/// to `out[i * head_dim..]`.
pub fn delta_head(
    p: &DeltaNetParams,
    h: usize,
    m: &mut [f32],
    x: &DeltaInputs<'_>,
    rows: &[usize],
    out: &mut [f32],
) {
    simd_dispatch!(delta_head_body(p, h, m, x, rows, out))
}

#[inline(always)]
fn delta_head_body(
    p: &DeltaNetParams,
    h: usize,
    m: &mut [f32],
    x: &DeltaInputs<'_>,
    rows: &[usize],
    out: &mut [f32],
) {
    let d = p.head_dim;
    let hi = HeadInputs::gather(p, h, x, rows);
    for t in 0..rows.len() {
        let at = t * d..(t + 1) * d;
        let step = HeadStep {
            q: &hi.q[at.clone()],
            k: &hi.k[at.clone()],
            v: &hi.v[at.clone()],
            decay: hi.g[t].exp(),
            beta: hi.beta[t],
        };
        head_step(m, &step, &mut out[at]);
    }
}

/// Tokens per chunk of [`delta_head_chunked`].
pub const CHUNK: usize = 64;

/// One head's inputs for some rows: normed queries and keys, values,
/// update strengths and log-decays, row by row.
struct HeadInputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    beta: Vec<f32>,
    /// Each row's log-decay `g`.
    g: Vec<f32>,
}

impl HeadInputs {
    fn gather(p: &DeltaNetParams, h: usize, x: &DeltaInputs<'_>, rows: &[usize]) -> Self {
        let (d, c, hv) = (p.head_dim, p.channels(), p.n_v_heads);
        let kh = h % p.n_k_heads.max(1);
        let n = rows.len();
        let mut ch = HeadInputs {
            q: vec![0f32; n * d],
            k: vec![0f32; n * d],
            v: Vec::with_capacity(n * d),
            beta: Vec::with_capacity(n),
            g: Vec::with_capacity(n),
        };
        for (t, &r) in rows.iter().enumerate() {
            let row = &x.qkv[r * c..(r + 1) * c];
            l2_normed(
                &row[kh * d..(kh + 1) * d],
                p.eps,
                &mut ch.q[t * d..(t + 1) * d],
            );
            let k_at = (p.n_k_heads + kh) * d;
            l2_normed(&row[k_at..k_at + d], p.eps, &mut ch.k[t * d..(t + 1) * d]);
            let v_at = (2 * p.n_k_heads + h) * d;
            ch.v.extend_from_slice(&row[v_at..v_at + d]);
            ch.beta.push(1.0 / (1.0 + (-x.beta[r * hv + h]).exp()));
            ch.g.push(softplus(x.alpha[r * hv + h]) * x.a[h]);
        }
        ch
    }

    /// `G[t]`: the log-decays of the rows up to `t`, summed.
    fn cumulative(&self) -> Vec<f32> {
        let mut sum = 0f32;
        self.g
            .iter()
            .map(|&g| {
                sum += g;
                sum
            })
            .collect()
    }
}

/// `a · b` in eight running sums (the lanes of one vector register), so
/// the compiler vectorizes it; the sums are added at the end.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// [`delta_head`] in its chunked form, for prefill: within a chunk of
/// [`CHUNK`] tokens the state's contributions are products with the
/// state at the chunk's start, and the tokens' updates to each other a
/// triangular system over the chunk, so the work is matrix products
/// rather than a pass over the whole state per token. With `G` the summed
/// log-decays and `S₀` the state at the chunk's start, token `t`'s update
/// is `δₜ = βₜ(vₜ − e^{Gₜ}S₀ᵀkₜ − Σ_{s<t} e^{Gₜ−Gₛ}(kₜ·kₛ)δₛ)`, its output
/// `(e^{Gₜ}S₀ᵀqₜ + Σ_{s≤t} e^{Gₜ−Gₛ}(qₜ·kₛ)δₛ)/√d`, and the state after
/// the chunk `e^{G_C}S₀ + Σₛ e^{G_C−Gₛ} kₛδₛᵀ`: the recurrence's values,
/// summed in another order.
pub fn delta_head_chunked(
    p: &DeltaNetParams,
    h: usize,
    m: &mut [f32],
    x: &DeltaInputs<'_>,
    rows: &[usize],
    out: &mut [f32],
) {
    simd_dispatch!(delta_head_chunked_body(p, h, m, x, rows, out))
}

#[inline(always)]
fn delta_head_chunked_body(
    p: &DeltaNetParams,
    h: usize,
    m: &mut [f32],
    x: &DeltaInputs<'_>,
    rows: &[usize],
    out: &mut [f32],
) {
    let d = p.head_dim;
    let scale = 1.0 / (d as f32).sqrt();
    for (ci, chunk_rows) in rows.chunks(CHUNK).enumerate() {
        let ch = HeadInputs::gather(p, h, x, chunk_rows);
        let cum = ch.cumulative();
        let n = chunk_rows.len();
        let out = &mut out[ci * CHUNK * d..(ci * CHUNK + n) * d];
        // Sᵀk and Sᵀq at the chunk's start (row j of `m` is column j).
        let (mut sk, mut sq) = (vec![0f32; n * d], vec![0f32; n * d]);
        for (j, col) in m.chunks_exact(d).enumerate() {
            for t in 0..n {
                sk[t * d + j] = dot(col, &ch.k[t * d..(t + 1) * d]);
                sq[t * d + j] = dot(col, &ch.q[t * d..(t + 1) * d]);
            }
        }
        let mut delta = vec![0f32; n * d];
        // e^{Gₜ−Gₛ} for s ≤ t, the row of the token being solved.
        let mut decays = vec![0f32; n];
        for t in 0..n {
            for (s, e) in decays[..=t].iter_mut().enumerate() {
                *e = (cum[t] - cum[s]).exp();
            }
            let kt = &ch.k[t * d..(t + 1) * d];
            let decay_t = cum[t].exp();
            let mut acc: Vec<f32> = (0..d)
                .map(|j| ch.v[t * d + j] - decay_t * sk[t * d + j])
                .collect();
            for s in 0..t {
                let w = decays[s] * dot(kt, &ch.k[s * d..(s + 1) * d]);
                for (a, &ds) in acc.iter_mut().zip(&delta[s * d..(s + 1) * d]) {
                    *a -= w * ds;
                }
            }
            for (dv, a) in delta[t * d..(t + 1) * d].iter_mut().zip(acc) {
                *dv = ch.beta[t] * a;
            }
            let qt = &ch.q[t * d..(t + 1) * d];
            let o = &mut out[t * d..(t + 1) * d];
            for (oj, &w0) in o.iter_mut().zip(&sq[t * d..(t + 1) * d]) {
                *oj = decay_t * w0;
            }
            for s in 0..=t {
                let w = decays[s] * dot(qt, &ch.k[s * d..(s + 1) * d]);
                for (oj, &ds) in o.iter_mut().zip(&delta[s * d..(s + 1) * d]) {
                    *oj += w * ds;
                }
            }
            o.iter_mut().for_each(|v| *v *= scale);
        }
        let last = cum[n - 1];
        let decay = last.exp();
        let weights: Vec<f32> = cum.iter().map(|&g| (last - g).exp()).collect();
        for (j, col) in m.chunks_exact_mut(d).enumerate() {
            col.iter_mut().for_each(|v| *v *= decay);
            for (s, &w) in weights.iter().enumerate() {
                let coef = w * delta[s * d + j];
                for (v, &ki) in col.iter_mut().zip(&ch.k[s * d..(s + 1) * d]) {
                    *v += coef * ki;
                }
            }
        }
    }
}

/// Checks the shapes of a delta net call: the layer's state against the
/// parameters, and every buffer against the batch.
pub fn check_delta_shapes(
    shape: &StateShape,
    p: &DeltaNetParams,
    n: usize,
    x: &DeltaInputs<'_>,
    out_len: usize,
) -> Result<()> {
    let hv = p.n_v_heads;
    let ok = shape.n_heads == hv
        && shape.head_dim == p.head_dim
        && shape.conv_channels == p.channels()
        && p.n_k_heads > 0
        && hv.is_multiple_of(p.n_k_heads)
        && x.qkv.len() >= n * p.channels()
        && x.alpha.len() >= n * hv
        && x.beta.len() >= n * hv
        && x.a.len() >= hv
        && out_len >= n * hv * p.head_dim;
    if ok {
        Ok(())
    } else {
        Err(ComputeError::Shape(format!(
            "a delta net of {} key and {hv} value heads of {} over a state of {} heads of {} and {} channels, for {n} rows",
            p.n_k_heads, p.head_dim, shape.n_heads, shape.head_dim, shape.conv_channels
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> StateShape {
        StateShape {
            conv_taps: 3,
            conv_channels: 2,
            n_heads: 1,
            head_dim: 2,
        }
    }

    #[test]
    fn the_convolution_continues_across_calls_as_in_one() {
        let s = shape();
        let w = [0.5, -1.0, 2.0, 1.0, 1.0, 1.0];
        let x: Vec<f32> = (0..10).map(|i| i as f32 * 0.25 - 1.0).collect();
        let (mut whole, mut split) = (vec![0f32; 10], vec![0f32; 10]);
        let mut st = vec![0f32; s.conv_len()];
        conv_rows(&s, &mut st, &w, &x, &[0, 1, 2, 3, 4], &mut whole);
        let mut st2 = vec![0f32; s.conv_len()];
        conv_rows(&s, &mut st2, &w, &x, &[0, 1], &mut split);
        conv_rows(&s, &mut st2, &w, &x, &[2, 3, 4], &mut split);
        assert_eq!(whole, split);
        assert_eq!(st, st2);
        // Row 2, channel 0: taps over inputs of rows 0, 1, 2.
        let want = 0.5 * x[0] - 1.0 * x[2] + 2.0 * x[4];
        assert!((whole[4] - want).abs() < 1e-6, "{} vs {want}", whole[4]);
        // The state keeps the last two inputs.
        assert_eq!(st, x[6..10].to_vec());
    }

    #[test]
    fn one_step_of_the_delta_rule_from_zero_writes_beta_v_k() {
        // From a zero state: S = β v kᵀ... so Sᵀq = β (k·q) v, over √d.
        let p = DeltaNetParams {
            n_k_heads: 1,
            n_v_heads: 1,
            head_dim: 2,
            eps: 0.0,
        };
        let qkv = [1.0, 0.0, 1.0, 0.0, 3.0, 4.0];
        let x = DeltaInputs {
            qkv: &qkv,
            alpha: &[0.0],
            beta: &[0.0],
            a: &[-1.0],
        };
        let mut m = vec![0f32; 4];
        let mut out = vec![0f32; 2];
        delta_head(&p, 0, &mut m, &x, &[0], &mut out);
        let s = 0.5 / 2f32.sqrt();
        assert!((out[0] - 3.0 * s).abs() < 1e-6 && (out[1] - 4.0 * s).abs() < 1e-6);
    }

    #[test]
    fn gaps_in_a_sequence_are_refused() {
        let t = |pos| TokenPos { seq: 0, pos };
        let tokens = [t(5), t(6)];
        assert!(check_continues(0, 5, &[0, 1], &tokens, 5).is_ok());
        assert!(check_continues(0, 5, &[0, 1], &tokens, 3).is_err());
        let skip = [t(5), t(7)];
        assert!(check_continues(0, 5, &[0, 1], &skip, 5).is_err());
    }

    #[test]
    fn the_chunked_form_gives_the_recurrences_outputs_and_state() {
        let p = DeltaNetParams {
            n_k_heads: 1,
            n_v_heads: 2,
            head_dim: 8,
            eps: 1e-6,
        };
        let n = 150;
        let mut seed = 7u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let qkv: Vec<f32> = (0..n * p.channels()).map(|_| rand()).collect();
        let alpha: Vec<f32> = (0..n * 2).map(|_| 2.0 * rand()).collect();
        let beta: Vec<f32> = (0..n * 2).map(|_| 3.0 * rand()).collect();
        let x = DeltaInputs {
            qkv: &qkv,
            alpha: &alpha,
            beta: &beta,
            a: &[-0.5, -2.0],
        };
        let rows: Vec<usize> = (0..n).collect();
        for h in 0..2 {
            let start: Vec<f32> = (0..64).map(|_| 0.3 * rand()).collect();
            let (mut m1, mut m2) = (start.clone(), start);
            let (mut o1, mut o2) = (vec![0f32; n * 8], vec![0f32; n * 8]);
            delta_head(&p, h, &mut m1, &x, &rows, &mut o1);
            delta_head_chunked(&p, h, &mut m2, &x, &rows, &mut o2);
            for (i, (a, b)) in o1.iter().zip(&o2).chain(m1.iter().zip(&m2)).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                    "head {h}, value {i}: {a} vs {b}"
                );
            }
        }
    }
}
