//! Prefill kernels with eight tokens in lanes (see [`super::tile_avx2`])
//! for the types whose 4-bit indices select one of 16 signed values in a
//! table: IQ4_NL and MXFP4 (32-value blocks against Q8_0 activations) and
//! IQ4_XS (256-value blocks of eight 32-value groups with 6-bit scales,
//! against Q8_K activations).
//!
//! `vpshufb` looks the indices up in the table (held in both 128-bit
//! lanes). The values are signed, so the sign moves onto the activations
//! (`vpsignb`) and `vpmaddubsw` multiplies `|v|` by `±a`: each pair sum is
//! below 2^15 (2·127·128), and `vpmaddwd` widens it, by one for a block's
//! plain sum or by the group's scale for IQ4_XS. The integer sums are
//! exact, so they are the scalar kernels' integers; the float steps are
//! the scalar kernels' own, lane by lane (`sum += (d_w · d_a) · isum`, block
//! after block). So every output has the bits of [`super::dot`]'s
//! reference.

// Kernels index fixed-size blocks and lanes explicitly: that is the shape
// the vectorizer turns into SIMD, and it mirrors the block layouts.
#![allow(clippy::needless_range_loop)]

use super::act_tiles::{GROUP, Q8_0x8, Q8Kx8};
use super::tile_avx2::{accumulate, halves, load_ps, pieces, qs_at, store_all, token_order};
use std::arch::x86_64::*;
use worker_gguf::blocks::{
    BlockIq4Nl, BlockIq4Xs, BlockMxfp4, IQ4_VALUES, MXFP4_VALUES, as_blocks, e8m0_half, iq4xs_scale,
};

/// A table of 16 values in both 128-bit lanes, for `vpshufb`.
#[inline]
#[target_feature(enable = "avx2")]
fn table(t: &[i8; 16]) -> __m256i {
    // SAFETY: `t` is 16 readable bytes; unaligned load.
    let v = unsafe { _mm_loadu_si128(t.as_ptr().cast()) };
    _mm256_set_m128i(v, v)
}

/// The 32 values of the 16 index bytes `qs[at..at + 16]` (low nibbles
/// first, then high nibbles), looked up in `table`.
#[inline]
#[target_feature(enable = "avx2")]
fn lookup(table: __m256i, qs: &[u8], at: usize) -> __m256i {
    let s = &qs[at..at + 16];
    // SAFETY: `s` is 16 readable bytes (the slice above checks the range).
    let v = unsafe { _mm_loadu_si128(s.as_ptr().cast()) };
    let low = _mm_set1_epi8(0x0F);
    let idx = _mm256_set_m128i(
        _mm_and_si128(_mm_srli_epi16::<4>(v), low),
        _mm_and_si128(v, low),
    );
    _mm256_shuffle_epi8(table, idx)
}

/// A block's four pieces of signed values, each in all four 64-bit lanes:
/// their magnitudes, and the values whose signs go onto the activations.
struct Signed {
    abs: [__m256i; 4],
    sign: [__m256i; 4],
}

#[inline]
#[target_feature(enable = "avx2")]
fn signed(v: __m256i) -> Signed {
    let sign = pieces(v);
    let mut abs = sign;
    for c in 0..4 {
        abs[c] = _mm256_sign_epi8(sign[c], sign[c]);
    }
    Signed { abs, sign }
}

/// `m · Σ v·a` over the four pieces (`m` in every 16-bit lane), as i32
/// lanes that each hold part of one token's sum.
#[inline]
#[target_feature(enable = "avx2")]
fn widened(w: &Signed, a: [__m256i; 4], m: __m256i) -> __m256i {
    let mut acc = _mm256_setzero_si256();
    for c in 0..4 {
        let pairs = _mm256_maddubs_epi16(w.abs[c], _mm256_sign_epi8(a[c], w.sign[c]));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, m));
    }
    acc
}

/// Per group of eight tokens, `Σ v·a` over one 32-value block of signed
/// values `v`, in token order. The weights are decoded and broadcast once
/// for all `N` groups.
#[inline]
#[target_feature(enable = "avx2")]
fn block32<const N: usize>(v: __m256i, qs: [&[[[i8; 8]; GROUP]; 4]; N]) -> [__m256i; N] {
    let w = signed(v);
    let ones = _mm256_set1_epi16(1);
    let mut out = [_mm256_setzero_si256(); N];
    for n in 0..N {
        let [lo, hi] = halves(qs[n]);
        out[n] = token_order(_mm256_hadd_epi32(
            widened(&w, lo, ones),
            widened(&w, hi, ones),
        ));
    }
    out
}

/// IQ4_NL weights against `N` groups of eight tokens.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn iq4_nl_x8<const N: usize>(w: &[u8], x: [&[Q8_0x8]; N]) -> [[f32; 8]; N] {
    let blocks = as_blocks::<BlockIq4Nl>(w).unwrap_or_default();
    let t = table(&IQ4_VALUES);
    let mut sum = [_mm256_setzero_ps(); N];
    for (i, b) in blocks.iter().enumerate() {
        let isum = block32(lookup(t, &b.qs, 0), qs_at(&x, i));
        for n in 0..N {
            sum[n] = accumulate(sum[n], b.d, &x[n][i].d, isum[n]);
        }
    }
    store_all(sum)
}

/// MXFP4 weights (doubled E2M1 codes, with the block's half scale) against
/// `N` groups of eight tokens.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn mxfp4_x8<const N: usize>(w: &[u8], x: [&[Q8_0x8]; N]) -> [[f32; 8]; N] {
    let blocks = as_blocks::<BlockMxfp4>(w).unwrap_or_default();
    let t = table(&MXFP4_VALUES);
    let mut sum = [_mm256_setzero_ps(); N];
    for (i, b) in blocks.iter().enumerate() {
        let isum = block32(lookup(t, &b.qs, 0), qs_at(&x, i));
        let dw = _mm256_set1_ps(e8m0_half(b.e[0]));
        for n in 0..N {
            let d = _mm256_mul_ps(dw, load_ps(&x[n][i].d));
            sum[n] = _mm256_add_ps(sum[n], _mm256_mul_ps(d, _mm256_cvtepi32_ps(isum[n])));
        }
    }
    store_all(sum)
}

/// IQ4_XS weights against `N` groups of eight tokens: each group's sum
/// times its scale (`ls − 32`), summed over the block as integers, then
/// one float product per block.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn iq4_xs_x8<const N: usize>(w: &[u8], x: [&[Q8Kx8]; N]) -> [[f32; 8]; N] {
    let blocks = as_blocks::<BlockIq4Xs>(w).unwrap_or_default();
    let t = table(&IQ4_VALUES);
    let mut sum = [_mm256_setzero_ps(); N];
    for (i, b) in blocks.iter().enumerate() {
        let mut lo = [_mm256_setzero_si256(); N];
        let mut hi = [_mm256_setzero_si256(); N];
        for ib in 0..8 {
            let w = signed(lookup(t, &b.qs, ib * 16));
            let ls = _mm256_set1_epi16(i16::from(iq4xs_scale(b, ib)) - 32);
            for n in 0..N {
                let [l, h] = halves(&x[n][i].qs[ib]);
                lo[n] = _mm256_add_epi32(lo[n], widened(&w, l, ls));
                hi[n] = _mm256_add_epi32(hi[n], widened(&w, h, ls));
            }
        }
        for n in 0..N {
            let sumi = token_order(_mm256_hadd_epi32(lo[n], hi[n]));
            sum[n] = accumulate(sum[n], b.d, &x[n][i].d, sumi);
        }
    }
    store_all(sum)
}
