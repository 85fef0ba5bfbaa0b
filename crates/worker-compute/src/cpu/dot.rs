//! Dot products of one weight row (in its GGUF encoding) with one row of
//! activations (in the matching quantized form, see [`super::qact`]).
//!
//! These are the scalar reference kernels, written as plain loops over
//! fixed-size blocks with integer accumulation. They are `inline(always)` so
//! that the matrix product can instantiate them twice: once for the baseline
//! CPU and once inside a function compiled for AVX2/FMA, where the compiler
//! vectorizes the same loops (`vpmaddwd` and friends). The choice is made at
//! run time from what the CPU reports; tests check both against the f64
//! product of the dequantized weights.

// Kernels index fixed-size blocks and lanes explicitly: that is the shape
// the vectorizer turns into SIMD, and it mirrors the block layouts.
#![allow(clippy::needless_range_loop)]

use super::qact::{Q8_0, Q8_1, Q8K};
use half::f16;
use worker_gguf::GgmlType;
use worker_gguf::blocks::{
    BlockIq4Nl, BlockIq4Xs, BlockMxfp4, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K,
    BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, IQ4_VALUES, MXFP4_VALUES, as_blocks,
    e8m0_half, f16_le, iq4xs_scale, kquant_scale_min, q3k_scales,
};

/// The form activations take for a weight type's dot product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q8_1,
    Q8K,
}

/// The activation form ggml uses for weights of type `ty` (`vec_dot_type`):
/// 32-weight blocks take Q8_0 (Q8_1 where they have a min), 256-weight
/// super-blocks take Q8_K.
pub fn act_kind(ty: GgmlType) -> Option<ActKind> {
    Some(match ty {
        GgmlType::F32 => ActKind::F32,
        GgmlType::F16 => ActKind::F16,
        GgmlType::BF16 => ActKind::Bf16,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::MXFP4 => {
            ActKind::Q8_0
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => ActKind::Q8_1,
        GgmlType::Q2_K
        | GgmlType::Q3_K
        | GgmlType::Q4_K
        | GgmlType::Q5_K
        | GgmlType::Q6_K
        | GgmlType::IQ4_XS => ActKind::Q8K,
        _ => return None,
    })
}

/// One token's activations in a dot-product form.
#[derive(Debug, Clone, Copy)]
pub enum ActRow<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [half::bf16]),
    Q8_0(&'a [Q8_0]),
    Q8_1(&'a [Q8_1]),
    Q8K(&'a [Q8K]),
}

/// `w · a` for one row. Panics only on a type/form mismatch, which the
/// matrix product rules out.
#[inline(always)]
pub fn dot(ty: GgmlType, w: &[u8], a: ActRow<'_>) -> f32 {
    match (ty, a) {
        (GgmlType::F32, ActRow::F32(x)) => dot_f32(w, x),
        (GgmlType::F16, ActRow::F16(x)) => dot_f16(w, x),
        (GgmlType::BF16, ActRow::Bf16(x)) => dot_bf16(w, x),
        (GgmlType::Q4_0, ActRow::Q8_0(x)) => dot_q4_0(w, x),
        (GgmlType::Q5_0, ActRow::Q8_0(x)) => dot_q5_0(w, x),
        (GgmlType::Q8_0, ActRow::Q8_0(x)) => dot_q8_0(w, x),
        (GgmlType::IQ4_NL, ActRow::Q8_0(x)) => dot_iq4_nl(w, x),
        (GgmlType::MXFP4, ActRow::Q8_0(x)) => dot_mxfp4(w, x),
        (GgmlType::Q4_1, ActRow::Q8_1(x)) => dot_q4_1(w, x),
        (GgmlType::Q5_1, ActRow::Q8_1(x)) => dot_q5_1(w, x),
        (GgmlType::Q4_K, ActRow::Q8K(x)) => dot_q4_k(w, x),
        (GgmlType::Q5_K, ActRow::Q8K(x)) => dot_q5_k(w, x),
        (GgmlType::Q6_K, ActRow::Q8K(x)) => dot_q6_k(w, x),
        (GgmlType::Q2_K, ActRow::Q8K(x)) => dot_q2_k(w, x),
        (GgmlType::Q3_K, ActRow::Q8K(x)) => dot_q3_k(w, x),
        (GgmlType::IQ4_XS, ActRow::Q8K(x)) => dot_iq4_xs(w, x),
        _ => unreachable!("activation form does not match the weight type"),
    }
}

#[inline(always)]
fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    // Eight partial sums, so the loop vectorizes without reassociation.
    let mut acc = [0f32; 8];
    for (wc, xc) in w.chunks_exact(32).zip(x.chunks_exact(8)) {
        for k in 0..8 {
            let v = f32::from_le_bytes([wc[4 * k], wc[4 * k + 1], wc[4 * k + 2], wc[4 * k + 3]]);
            acc[k] += v * xc[k];
        }
    }
    let tail = x.len() / 8 * 8;
    let mut sum: f32 = acc.iter().sum();
    for (i, &xv) in x.iter().enumerate().skip(tail) {
        let b = &w[4 * i..4 * i + 4];
        sum += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * xv;
    }
    sum
}

#[inline(always)]
fn dot_f16(w: &[u8], x: &[f16]) -> f32 {
    let mut acc = [0f32; 8];
    for (wc, xc) in w.chunks_exact(16).zip(x.chunks_exact(8)) {
        for k in 0..8 {
            let v = f16::from_le_bytes([wc[2 * k], wc[2 * k + 1]]).to_f32();
            acc[k] += v * xc[k].to_f32();
        }
    }
    let tail = x.len() / 8 * 8;
    let mut sum: f32 = acc.iter().sum();
    for (i, xv) in x.iter().enumerate().skip(tail) {
        sum += f16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32() * xv.to_f32();
    }
    sum
}

#[inline(always)]
fn dot_bf16(w: &[u8], x: &[half::bf16]) -> f32 {
    let mut acc = [0f32; 8];
    for (wc, xc) in w.chunks_exact(16).zip(x.chunks_exact(8)) {
        for k in 0..8 {
            let v = f32::from_bits(u32::from(u16::from_le_bytes([wc[2 * k], wc[2 * k + 1]])) << 16);
            acc[k] += v * xc[k].to_f32();
        }
    }
    let tail = x.len() / 8 * 8;
    let mut sum: f32 = acc.iter().sum();
    for (i, xv) in x.iter().enumerate().skip(tail) {
        let v = f32::from_bits(u32::from(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])) << 16);
        sum += v * xv.to_f32();
    }
    sum
}

#[inline(always)]
fn isum(a: &[i8; 32], b: &[i8; 32]) -> i32 {
    let mut s = 0i32;
    for k in 0..32 {
        s += i32::from(a[k]) * i32::from(b[k]);
    }
    s
}

#[inline(always)]
fn dot_q4_0(w: &[u8], x: &[Q8_0]) -> f32 {
    let blocks = as_blocks::<BlockQ4_0>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        let mut q = [0i8; 32];
        for j in 0..16 {
            q[j] = (b.qs[j] & 0x0F) as i8 - 8;
            q[j + 16] = (b.qs[j] >> 4) as i8 - 8;
        }
        sum += (f16_le(b.d) * a.d) * isum(&q, &a.qs) as f32;
    }
    sum
}

#[inline(always)]
fn dot_q5_0(w: &[u8], x: &[Q8_0]) -> f32 {
    let blocks = as_blocks::<BlockQ5_0>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        let qh = u32::from_le_bytes(b.qh);
        let mut q = [0i8; 32];
        for j in 0..16 {
            let lo = (b.qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
            let hi = (b.qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
            q[j] = lo as i8 - 16;
            q[j + 16] = hi as i8 - 16;
        }
        sum += (f16_le(b.d) * a.d) * isum(&q, &a.qs) as f32;
    }
    sum
}

#[inline(always)]
fn dot_q8_0(w: &[u8], x: &[Q8_0]) -> f32 {
    let blocks = as_blocks::<BlockQ8_0>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        sum += (f16_le(b.d) * a.d) * isum(&b.qs, &a.qs) as f32;
    }
    sum
}

#[inline(always)]
fn dot_q4_1(w: &[u8], x: &[Q8_1]) -> f32 {
    let blocks = as_blocks::<BlockQ4_1>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        let mut q = [0i8; 32];
        for j in 0..16 {
            q[j] = (b.qs[j] & 0x0F) as i8;
            q[j + 16] = (b.qs[j] >> 4) as i8;
        }
        sum += (f16_le(b.d) * a.d) * isum(&q, &a.qs) as f32 + f16_le(b.m) * a.s;
    }
    sum
}

#[inline(always)]
fn dot_q5_1(w: &[u8], x: &[Q8_1]) -> f32 {
    let blocks = as_blocks::<BlockQ5_1>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        let qh = u32::from_le_bytes(b.qh);
        let mut q = [0i8; 32];
        for j in 0..16 {
            q[j] = ((b.qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4)) as i8;
            q[j + 16] = ((b.qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4)) as i8;
        }
        sum += (f16_le(b.d) * a.d) * isum(&q, &a.qs) as f32 + f16_le(b.m) * a.s;
    }
    sum
}

#[inline(always)]
fn dot_q4_k(w: &[u8], x: &[Q8K]) -> f32 {
    let blocks = as_blocks::<BlockQ4K>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        let (sc, mn) = kquant_scale_min(&b.scales);
        let mut sumi_mins = 0i32;
        for j in 0..8 {
            sumi_mins +=
                i32::from(mn[j]) * (i32::from(a.bsums[2 * j]) + i32::from(a.bsums[2 * j + 1]));
        }
        let mut sumi = 0i32;
        for j in 0..8 {
            let qs = &b.qs[(j / 2) * 32..(j / 2) * 32 + 32];
            let shift = 4 * (j % 2);
            let mut s = 0i32;
            for l in 0..32 {
                s += i32::from((qs[l] >> shift) & 0x0F) * i32::from(a.qs[j * 32 + l]);
            }
            sumi += i32::from(sc[j]) * s;
        }
        let d = a.d * f16_le(b.d);
        let dmin = a.d * f16_le(b.dmin);
        sum += d * sumi as f32 - dmin * sumi_mins as f32;
    }
    sum
}

#[inline(always)]
fn dot_q5_k(w: &[u8], x: &[Q8K]) -> f32 {
    let blocks = as_blocks::<BlockQ5K>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        let (sc, mn) = kquant_scale_min(&b.scales);
        let mut sumi_mins = 0i32;
        for j in 0..8 {
            sumi_mins +=
                i32::from(mn[j]) * (i32::from(a.bsums[2 * j]) + i32::from(a.bsums[2 * j + 1]));
        }
        let mut sumi = 0i32;
        for j in 0..8 {
            let qs = &b.qs[(j / 2) * 32..(j / 2) * 32 + 32];
            let shift = 4 * (j % 2);
            let mut s = 0i32;
            for l in 0..32 {
                let q = ((qs[l] >> shift) & 0x0F) | (((b.qh[l] >> j) & 1) << 4);
                s += i32::from(q) * i32::from(a.qs[j * 32 + l]);
            }
            sumi += i32::from(sc[j]) * s;
        }
        let d = a.d * f16_le(b.d);
        let dmin = a.d * f16_le(b.dmin);
        sum += d * sumi as f32 - dmin * sumi_mins as f32;
    }
    sum
}

#[inline(always)]
fn dot_q6_k(w: &[u8], x: &[Q8K]) -> f32 {
    let blocks = as_blocks::<BlockQ6K>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        let mut sumi = 0i32;
        for run in 0..16 {
            let (half, s, l0) = (run / 8, (run % 8) / 2, (run % 2) * 16);
            let ql = &b.ql[half * 64 + (s % 2) * 32 + l0..][..16];
            let qh = &b.qh[half * 32 + l0..][..16];
            let mut acc = 0i32;
            for l in 0..16 {
                let low = (ql[l] >> (4 * (s / 2))) & 0x0F;
                let high = (qh[l] >> (2 * s)) & 3;
                let q = (low | (high << 4)) as i32 - 32;
                acc += q * i32::from(a.qs[run * 16 + l]);
            }
            sumi += i32::from(b.scales[run]) * acc;
        }
        sum += (f16_le(b.d) * a.d) * sumi as f32;
    }
    sum
}

#[inline(always)]
fn dot_q2_k(w: &[u8], x: &[Q8K]) -> f32 {
    let blocks = as_blocks::<BlockQ2K>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        // Runs of 16 share a 4-bit scale (low nibble) and a 4-bit min
        // (high nibble): Σ (d·sc·q − dmin·m)·a = d·Σ sc·Σ q·a − dmin·Σ m·Σ a.
        let mut sumi_mins = 0i32;
        for run in 0..16 {
            sumi_mins += i32::from(b.scales[run] >> 4) * i32::from(a.bsums[run]);
        }
        // The block's values first (group j of 32 is bit pair j % 4 of the
        // 32 bytes of half j / 4), then the per-16 products.
        let mut q = [0u8; 256];
        for j in 0..8 {
            let qs = &b.qs[(j / 4) * 32..(j / 4) * 32 + 32];
            for l in 0..32 {
                q[j * 32 + l] = (qs[l] >> (2 * (j % 4))) & 3;
            }
        }
        let mut sumi = 0i32;
        for run in 0..16 {
            let mut acc = 0i32;
            for l in 0..16 {
                acc += i32::from(q[run * 16 + l]) * i32::from(a.qs[run * 16 + l]);
            }
            sumi += i32::from(b.scales[run] & 0x0F) * acc;
        }
        let d = a.d * f16_le(b.d);
        let dmin = a.d * f16_le(b.dmin);
        sum += d * sumi as f32 - dmin * sumi_mins as f32;
    }
    sum
}

#[inline(always)]
fn dot_q3_k(w: &[u8], x: &[Q8K]) -> f32 {
    let blocks = as_blocks::<BlockQ3K>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        // The block's values first (groups of 32 with one shift each, which
        // vectorizes), then the per-16 products.
        let mut q = [0i8; 256];
        for j in 0..8 {
            // Group j: bit pair j % 4 of the 32 bytes of half j / 4, and bit
            // j of `hmask`; a clear high bit takes 4 off.
            let qs = &b.qs[(j / 4) * 32..(j / 4) * 32 + 32];
            for l in 0..32 {
                let low = (qs[l] >> (2 * (j % 4))) & 3;
                let high = (b.hmask[l] >> j) & 1;
                q[j * 32 + l] = (low | (high << 2)) as i8 - 4;
            }
        }
        let scales = q3k_scales(&b.scales);
        let mut sumi = 0i32;
        for run in 0..16 {
            let mut acc = 0i32;
            for l in 0..16 {
                acc += i32::from(q[run * 16 + l]) * i32::from(a.qs[run * 16 + l]);
            }
            sumi += i32::from(scales[run]) * acc;
        }
        sum += (f16_le(b.d) * a.d) * sumi as f32;
    }
    sum
}

/// The 32 values of one IQ4 group (16 bytes of indices, low nibbles
/// first) as signed bytes.
#[inline(always)]
fn iq4_values(qs: &[u8]) -> [i8; 32] {
    let mut q = [0i8; 32];
    for j in 0..16 {
        q[j] = IQ4_VALUES[usize::from(qs[j] & 0x0F)];
        q[j + 16] = IQ4_VALUES[usize::from(qs[j] >> 4)];
    }
    q
}

#[inline(always)]
fn dot_iq4_nl(w: &[u8], x: &[Q8_0]) -> f32 {
    let blocks = as_blocks::<BlockIq4Nl>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        sum += (f16_le(b.d) * a.d) * isum(&iq4_values(&b.qs), &a.qs) as f32;
    }
    sum
}

#[inline(always)]
fn dot_mxfp4(w: &[u8], x: &[Q8_0]) -> f32 {
    let blocks = as_blocks::<BlockMxfp4>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        // The doubled E2M1 codes as signed bytes, low nibbles first; the
        // block's half scale `2^(e - 128)` makes up for the doubling.
        let mut q = [0i8; 32];
        for j in 0..16 {
            q[j] = MXFP4_VALUES[usize::from(b.qs[j] & 0x0F)];
            q[j + 16] = MXFP4_VALUES[usize::from(b.qs[j] >> 4)];
        }
        sum += (e8m0_half(b.e[0]) * a.d) * isum(&q, &a.qs) as f32;
    }
    sum
}

#[inline(always)]
fn dot_iq4_xs(w: &[u8], x: &[Q8K]) -> f32 {
    let blocks = as_blocks::<BlockIq4Xs>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        // Integer throughout the block: |Σ| ≤ 8 · 32 · (32 · 127 · 127) < 2³¹.
        let mut sumi = 0i32;
        for ib in 0..8 {
            let q = iq4_values(&b.qs[ib * 16..ib * 16 + 16]);
            let mut acts = [0i8; 32];
            acts.copy_from_slice(&a.qs[ib * 32..ib * 32 + 32]);
            let ls = i32::from(iq4xs_scale(b, ib)) - 32;
            sumi += ls * isum(&q, &acts);
        }
        sum += (f16_le(b.d) * a.d) * sumi as f32;
    }
    sum
}
