//! Prefill kernels with eight tokens in lanes (see [`super::tile_avx2`])
//! for the types whose 4-bit indices select one of 16 signed values in a
//! table: IQ4_NL and MXFP4 (32-value blocks against Q8_0 activations) and
//! IQ4_XS (256-value blocks of eight 32-value groups with 6-bit scales,
//! against Q8_K activations).
//!
//! `vpshufb` looks the indices up in the table (held in both 128-bit
//! lanes). MXFP4's values (|v| ≤ 12) are taken unsigned with an offset of
//! 16, as Q5_0's are: `Σ (u − 16)·a = Σ u·a − 16·Σ a`. The IQ4 values
//! (−127..113) have no such room under AVX2: their sign moves onto the
//! activations (`vpsignb`) and `vpmaddubsw` multiplies `|v|` by `±a` (each
//! pair sum below 2^15, 2·127·128), which `vpmaddwd` widens, by one for a
//! block's plain sum or by the group's scale for IQ4_XS. With VNNI they
//! are taken unsigned with an offset of 128 (`vpdpbusd` sums in 32 bits)
//! and the offset comes back through the activations' sums. The integer
//! sums are exact, so they are the scalar kernels' integers; the float
//! steps are the scalar kernels' own, lane by lane (`sum += (d_w · d_a) ·
//! isum`, block after block). So every output has the bits of
//! [`super::dot`]'s reference.

// Kernels index fixed-size blocks and lanes explicitly: that is the shape
// the vectorizer turns into SIMD, and it mirrors the block layouts.
#![allow(clippy::needless_range_loop)]

use super::tile_avx2::pieces;
use std::arch::x86_64::*;
use worker_gguf::blocks::{IQ4_VALUES, MXFP4_VALUES};

/// The IQ4 values plus 128, as unsigned bytes.
const IQ4_UNSIGNED: [i8; 16] = {
    let mut t = [0i8; 16];
    let mut k = 0;
    while k < 16 {
        t[k] = IQ4_VALUES[k] ^ i8::MIN;
        k += 1;
    }
    t
};

/// The doubled MXFP4 codes plus 16, as unsigned bytes (4..28).
const MXFP4_UNSIGNED: [i8; 16] = {
    let mut t = [0i8; 16];
    let mut k = 0;
    while k < 16 {
        t[k] = MXFP4_VALUES[k] + 16;
        k += 1;
    }
    t
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

/// The kernels written once and compiled twice (AVX2 and VNNI). Each
/// module supplies the integer steps:
/// - `sum4(p, a)`: `Σ p[c]·a[c]` over four pieces of unsigned bytes below
///   32, as i32 lanes that each hold part of one token's sum;
/// - `iq4_block(idx, x)`: each group's `Σ v·a` over one 32-value block of
///   IQ4 values, in token order, from its 16 index bytes;
/// - `iq4_xs_sums(b, x, i)`: each group's `Σ_j (ls_j − 32)·Σ v·a` over an
///   IQ4_XS block, in token order.
macro_rules! lut_kernels {
    ($features:literal) => {
        use super::super::act_tiles::{Q8_0x8, Q8Kx8};
        use super::super::tile_avx2::{
            accumulate, halves, load_i32, load_ps, pieces, qs_at, store_all, token_order,
        };
        use super::{MXFP4_UNSIGNED, lookup, table};
        use worker_gguf::blocks::{BlockIq4Nl, BlockIq4Xs, BlockMxfp4, as_blocks, e8m0_half};

        /// IQ4_NL weights against `N` groups of eight tokens.
        #[target_feature(enable = $features)]
        pub fn iq4_nl_x8<const N: usize>(w: &[u8], x: [&[Q8_0x8]; N]) -> [[f32; 8]; N] {
            let blocks = as_blocks::<BlockIq4Nl>(w).unwrap_or_default();
            let mut sum = [_mm256_setzero_ps(); N];
            for (i, b) in blocks.iter().enumerate() {
                let mut a = [&x[0][i]; N];
                for n in 1..N {
                    a[n] = &x[n][i];
                }
                let isum = iq4_block(&b.qs, a);
                for n in 0..N {
                    sum[n] = accumulate(sum[n], b.d, &a[n].d, isum[n]);
                }
            }
            store_all(sum)
        }

        /// MXFP4 weights (doubled E2M1 codes, with the block's half scale)
        /// against `N` groups of eight tokens: `Σ (u − 16)·a`.
        #[target_feature(enable = $features)]
        pub fn mxfp4_x8<const N: usize>(w: &[u8], x: [&[Q8_0x8]; N]) -> [[f32; 8]; N] {
            let blocks = as_blocks::<BlockMxfp4>(w).unwrap_or_default();
            let t = table(&MXFP4_UNSIGNED);
            let mut sum = [_mm256_setzero_ps(); N];
            for (i, b) in blocks.iter().enumerate() {
                let p = pieces(lookup(t, &b.qs, 0));
                let qs = qs_at(&x, i);
                let dw = _mm256_set1_ps(e8m0_half(b.e[0]));
                for n in 0..N {
                    let a = &x[n][i];
                    let [lo, hi] = halves(qs[n]);
                    let ua = token_order(_mm256_hadd_epi32(sum4(&p, lo), sum4(&p, hi)));
                    let isum = _mm256_sub_epi32(ua, _mm256_slli_epi32::<4>(load_i32(&a.sum)));
                    let d = _mm256_mul_ps(dw, load_ps(&a.d));
                    sum[n] = _mm256_add_ps(sum[n], _mm256_mul_ps(d, _mm256_cvtepi32_ps(isum)));
                }
            }
            store_all(sum)
        }

        /// IQ4_XS weights against `N` groups of eight tokens: each group's
        /// sum times its scale, summed over the block as integers, then one
        /// float product per block.
        #[target_feature(enable = $features)]
        pub fn iq4_xs_x8<const N: usize>(w: &[u8], x: [&[Q8Kx8]; N]) -> [[f32; 8]; N] {
            let blocks = as_blocks::<BlockIq4Xs>(w).unwrap_or_default();
            let mut sum = [_mm256_setzero_ps(); N];
            for (i, b) in blocks.iter().enumerate() {
                let sumi = iq4_xs_sums(b, &x, i);
                for n in 0..N {
                    sum[n] = accumulate(sum[n], b.d, &x[n][i].d, sumi[n]);
                }
            }
            store_all(sum)
        }
    };
}

/// IQ4 values signed (magnitudes times signed activations, in 16 bits).
pub mod avx2 {
    use super::super::tile_avx2::avx2::sum4;
    use super::{IQ4_VALUES, signed, widened};
    use std::arch::x86_64::*;
    use worker_gguf::blocks::iq4xs_scale;

    #[inline]
    #[target_feature(enable = "avx2")]
    fn iq4_block<const N: usize>(idx: &[u8; 16], x: [&Q8_0x8; N]) -> [__m256i; N] {
        let w = signed(lookup(table(&IQ4_VALUES), idx, 0));
        let ones = _mm256_set1_epi16(1);
        let mut out = [_mm256_setzero_si256(); N];
        for n in 0..N {
            let [lo, hi] = halves(&x[n].qs);
            let (lo, hi) = (widened(&w, lo, ones), widened(&w, hi, ones));
            out[n] = token_order(_mm256_hadd_epi32(lo, hi));
        }
        out
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn iq4_xs_sums<const N: usize>(b: &BlockIq4Xs, x: &[&[Q8Kx8]; N], i: usize) -> [__m256i; N] {
        let t = table(&IQ4_VALUES);
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
        let mut out = [_mm256_setzero_si256(); N];
        for n in 0..N {
            out[n] = token_order(_mm256_hadd_epi32(lo[n], hi[n]));
        }
        out
    }

    lut_kernels!("avx2,fma,f16c");
}

/// IQ4 values plus 128 (`vpdpbusd` sums 16 products of up to 241·128 in
/// each 32-bit lane); the offset comes back as `128·Σ a`.
pub mod vnni {
    use super::super::tile_avx2::group_sums_x8;
    use super::super::tile_avx2::vnni::sum4;
    use super::IQ4_UNSIGNED;
    use std::arch::x86_64::*;
    use worker_gguf::blocks::iq4xs_scale;

    /// `Σ u·a` over four pieces of any unsigned bytes.
    #[inline]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn udot4(p: &[__m256i; 4], a: [__m256i; 4]) -> __m256i {
        sum4(p, a)
    }

    #[inline]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn iq4_block<const N: usize>(idx: &[u8; 16], x: [&Q8_0x8; N]) -> [__m256i; N] {
        let p = pieces(lookup(table(&IQ4_UNSIGNED), idx, 0));
        let mut out = [_mm256_setzero_si256(); N];
        for n in 0..N {
            let [lo, hi] = halves(&x[n].qs);
            let ua = token_order(_mm256_hadd_epi32(udot4(&p, lo), udot4(&p, hi)));
            out[n] = _mm256_sub_epi32(ua, _mm256_slli_epi32::<7>(load_i32(&x[n].sum)));
        }
        out
    }

    /// Group sums scaled with a 32-bit multiply (a lane's sum needs 19
    /// bits), and `128·Σ_j (ls_j − 32)·Σ a` taken off once per block.
    #[inline]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn iq4_xs_sums<const N: usize>(b: &BlockIq4Xs, x: &[&[Q8Kx8]; N], i: usize) -> [__m256i; N] {
        let t = table(&IQ4_UNSIGNED);
        let mut ls = [0i16; 8];
        let mut lo = [_mm256_setzero_si256(); N];
        let mut hi = [_mm256_setzero_si256(); N];
        for ib in 0..8 {
            let p = pieces(lookup(t, &b.qs, ib * 16));
            ls[ib] = i16::from(iq4xs_scale(b, ib)) - 32;
            let s = _mm256_set1_epi32(i32::from(ls[ib]));
            for n in 0..N {
                let [l, h] = halves(&x[n][i].qs[ib]);
                lo[n] = _mm256_add_epi32(lo[n], _mm256_mullo_epi32(udot4(&p, l), s));
                hi[n] = _mm256_add_epi32(hi[n], _mm256_mullo_epi32(udot4(&p, h), s));
            }
        }
        let mut out = [_mm256_setzero_si256(); N];
        for n in 0..N {
            let su = token_order(_mm256_hadd_epi32(lo[n], hi[n]));
            let off = group_sums_x8(ls, &x[n][i].sums);
            out[n] = _mm256_sub_epi32(su, _mm256_slli_epi32::<7>(off));
        }
        out
    }

    lut_kernels!("avx2,fma,f16c,avx512vnni,avx512vl,avx512bw");
}
