//! Prefill kernels: one weight row against groups of eight tokens, with the
//! tokens in SIMD lanes (see [`super::act_tiles`] for the layout and why).
//!
//! Per 32-value block, each 8-byte piece of the weights is broadcast to the
//! four 64-bit lanes and multiplied with four tokens' matching pieces
//! (`vpmaddubsw`, unsigned weights × signed activations). The four pieces'
//! 16-bit sums are added in 16 bits where they cannot overflow, widened
//! once, and one `vphaddd` gives the eight tokens' block sums: exact
//! integers, the same as the one-token kernels' (weights with an offset,
//! Q4_0 and Q5_0, are taken unsigned and the offset is subtracted through
//! the activations' sums). The float steps are then the scalar kernels'
//! own, lane by lane: `sum += (d_w · d_a) · isum` in block order. So every
//! output has the bits of [`super::dot`]'s reference.
//!
//! This file holds the shared steps and the Q8_0, Q4_0, Q5_0 and Q6_K
//! kernels; Q4_K and Q5_K are in [`super::tile_k4`], the table types
//! (IQ4_NL, IQ4_XS, MXFP4) in [`super::tile_lut`].

// Kernels index fixed-size blocks and lanes explicitly: that is the shape
// the vectorizer turns into SIMD, and it mirrors the block layouts.
#![allow(clippy::needless_range_loop)]

use super::act_tiles::{GROUP, Q8_0x8, Q8Kx8};
use super::dot_avx2::{bytes_from_bits, unpack_q6_k};
use std::arch::x86_64::*;
use worker_gguf::blocks::{BlockQ6K, as_blocks};

/// 32 bytes from a 32-byte slice of i8 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn load(p: &[[i8; 8]]) -> __m256i {
    let s = &p[..4];
    // SAFETY: `s` is four 8-byte arrays, 32 contiguous readable bytes.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Piece `C` (bytes `8C .. 8C + 8`) of `v`, in all four 64-bit lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn piece<const IMM: i32>(v: __m256i) -> __m256i {
    _mm256_permute4x64_epi64::<IMM>(v)
}

/// Lane permutation that undoes `vphaddd`'s order: the tokens come out as
/// 0, 1, 4, 5, 2, 3, 6, 7.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn token_order(v: __m256i) -> __m256i {
    _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7))
}

/// The four pieces of a 32-byte vector, each in all four 64-bit lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn pieces(w: __m256i) -> [__m256i; 4] {
    [
        piece::<0x00>(w),
        piece::<0x55>(w),
        piece::<0xAA>(w),
        piece::<0xFF>(w),
    ]
}

/// 0x10 in byte `i` where bit `i` of `bits` is set, else 0: Q5_0's fifth
/// bits as values to add to the nibbles.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn fifth_bits(bits: u32) -> __m256i {
    _mm256_and_si256(bytes_from_bits(bits), _mm256_set1_epi8(0x10))
}

/// A group's block as the kernels take it: the four pieces of tokens 0–3,
/// then of tokens 4–7.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn halves(q: &[[[i8; 8]; GROUP]; 4]) -> [[__m256i; 4]; 2] {
    [
        [
            load(&q[0][..4]),
            load(&q[1][..4]),
            load(&q[2][..4]),
            load(&q[3][..4]),
        ],
        [
            load(&q[0][4..]),
            load(&q[1][4..]),
            load(&q[2][4..]),
            load(&q[3][4..]),
        ],
    ]
}

/// The f16 weight scale as f32 in all lanes.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn scale8(d: [u8; 2]) -> __m256 {
    let h = _mm_set1_epi16(u16::from_le_bytes(d) as i16);
    _mm256_cvtph_ps(h)
}

/// Eight f32 lanes from an array.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load_ps(p: &[f32; 8]) -> __m256 {
    // SAFETY: `p` is 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_ps(p.as_ptr()) }
}

/// Eight i32 lanes from an array.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load_i32(p: &[i32; 8]) -> __m256i {
    // SAFETY: `p` is 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn store(v: __m256) -> [f32; 8] {
    let mut out = [0f32; 8];
    // SAFETY: `out` is 32 writable bytes; unaligned store.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// `sum + (d_w · d_a) · isum`, rounded step by step as the scalar kernels.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn accumulate(sum: __m256, dw: [u8; 2], da: &[f32; 8], isum: __m256i) -> __m256 {
    let d = _mm256_mul_ps(scale8(dw), load_ps(da));
    _mm256_add_ps(sum, _mm256_mul_ps(d, _mm256_cvtepi32_ps(isum)))
}

/// Block `i`'s pieces of each group.
#[inline(always)]
pub(super) fn qs_at<'a, const N: usize>(
    x: &[&'a [Q8_0x8]; N],
    i: usize,
) -> [&'a [[[i8; 8]; GROUP]; 4]; N] {
    let mut out = [&x[0][i].qs; N];
    for n in 1..N {
        out[n] = &x[n][i].qs;
    }
    out
}

/// The outputs of `N` groups.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn store_all<const N: usize>(sum: [__m256; N]) -> [[f32; 8]; N] {
    let mut out = [[0f32; 8]; N];
    for n in 0..N {
        out[n] = store(sum[n]);
    }
    out
}

/// The kernels whose integer step has a VNNI form, written once and
/// compiled twice: with `vpmaddubsw` (AVX2) and with `vpdpbusd` (AVX-512
/// VNNI, where the CPU has it). Each module supplies the integer steps:
/// - `sum4(p, a)`: `Σ p[c]·a[c]` over four pieces (unsigned × signed
///   bytes), as i32 lanes that each hold part of one token's sum;
/// - `sum4_signed(p, a)`: the same for signed weight bytes;
/// - `fifth(bits)`: Q5_0's fifth bits as 0x10 in their bytes.
///
/// Both give the same exact integers, so the same bits.
macro_rules! mac_kernels {
    ($features:literal) => {
        use super::super::act_tiles::{GROUP, Q8_0x8};
        use super::super::dot_avx2::nibbles;
        use super::{accumulate, halves, load_i32, pieces, qs_at, store_all, token_order};
        use worker_gguf::blocks::{BlockQ4_0, BlockQ5_0, BlockQ8_0, as_blocks};

        /// Per group of eight tokens, `Σ w·a` over one 32-value block, for
        /// unsigned weight bytes `w` and the groups' pieces `qs[c][t]`. The
        /// weights are decoded and broadcast once for all `N` groups.
        #[inline]
        #[target_feature(enable = $features)]
        fn unsigned_block<const N: usize>(
            w: __m256i,
            qs: [&[[[i8; 8]; GROUP]; 4]; N],
        ) -> [__m256i; N] {
            let p = pieces(w);
            // Plain loops, not closures: a closure would not inherit the
            // target features, and its intrinsics would not be inlined.
            let mut out = [_mm256_setzero_si256(); N];
            for n in 0..N {
                let [lo, hi] = halves(qs[n]);
                out[n] = token_order(_mm256_hadd_epi32(sum4(&p, lo), sum4(&p, hi)));
            }
            out
        }

        /// [`unsigned_block`] for signed weight bytes (Q8_0).
        #[inline]
        #[target_feature(enable = $features)]
        fn signed_block<const N: usize>(
            w: __m256i,
            qs: [&[[[i8; 8]; GROUP]; 4]; N],
        ) -> [__m256i; N] {
            let p = pieces(w);
            let mut out = [_mm256_setzero_si256(); N];
            for n in 0..N {
                let [lo, hi] = halves(qs[n]);
                out[n] = token_order(_mm256_hadd_epi32(sum4_signed(&p, lo), sum4_signed(&p, hi)));
            }
            out
        }

        /// Q8_0 weights against `N` groups of eight tokens.
        #[target_feature(enable = $features)]
        pub fn q8_0_x8<const N: usize>(w: &[u8], x: [&[Q8_0x8]; N]) -> [[f32; 8]; N] {
            let blocks = as_blocks::<BlockQ8_0>(w).unwrap_or_default();
            let mut sum = [_mm256_setzero_ps(); N];
            for (i, b) in blocks.iter().enumerate() {
                // SAFETY: `b.qs` is 32 readable bytes; unaligned load.
                let v = unsafe { _mm256_loadu_si256(b.qs.as_ptr().cast()) };
                let isum = signed_block(v, qs_at(&x, i));
                for n in 0..N {
                    sum[n] = accumulate(sum[n], b.d, &x[n][i].d, isum[n]);
                }
            }
            store_all(sum)
        }

        /// Q4_0 weights against `N` groups of eight tokens:
        /// `Σ (u − 8)·a = Σ u·a − 8·Σ a`.
        #[target_feature(enable = $features)]
        pub fn q4_0_x8<const N: usize>(w: &[u8], x: [&[Q8_0x8]; N]) -> [[f32; 8]; N] {
            let blocks = as_blocks::<BlockQ4_0>(w).unwrap_or_default();
            let mut sum = [_mm256_setzero_ps(); N];
            for (i, b) in blocks.iter().enumerate() {
                let ua = unsigned_block(nibbles(&b.qs), qs_at(&x, i));
                for n in 0..N {
                    let a = &x[n][i];
                    let isum = _mm256_sub_epi32(ua[n], _mm256_slli_epi32::<3>(load_i32(&a.sum)));
                    sum[n] = accumulate(sum[n], b.d, &a.d, isum);
                }
            }
            store_all(sum)
        }

        /// Q5_0 weights against `N` groups of eight tokens:
        /// `Σ (u − 16)·a = Σ u·a − 16·Σ a`.
        #[target_feature(enable = $features)]
        pub fn q5_0_x8<const N: usize>(w: &[u8], x: [&[Q8_0x8]; N]) -> [[f32; 8]; N] {
            let blocks = as_blocks::<BlockQ5_0>(w).unwrap_or_default();
            let mut sum = [_mm256_setzero_ps(); N];
            for (i, b) in blocks.iter().enumerate() {
                let u = _mm256_or_si256(nibbles(&b.qs), fifth(u32::from_le_bytes(b.qh)));
                let ua = unsigned_block(u, qs_at(&x, i));
                for n in 0..N {
                    let a = &x[n][i];
                    let isum = _mm256_sub_epi32(ua[n], _mm256_slli_epi32::<4>(load_i32(&a.sum)));
                    sum[n] = accumulate(sum[n], b.d, &a.d, isum);
                }
            }
            store_all(sum)
        }
    };
}

/// The kernels with `vpmaddubsw`: pieces' 16-bit pair sums are added in 16
/// bits where they cannot overflow (unsigned weights below 32: four
/// pieces' pairs stay below 2^15), then widened once.
pub mod avx2 {
    use std::arch::x86_64::*;

    /// `Σ p[c]·a[c]` over four pieces as 16-bit pair sums (exact for
    /// unsigned weights below 32).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(in crate::cpu) fn sum16(p: &[__m256i; 4], a: [__m256i; 4]) -> __m256i {
        let s01 = _mm256_add_epi16(
            _mm256_maddubs_epi16(p[0], a[0]),
            _mm256_maddubs_epi16(p[1], a[1]),
        );
        let s23 = _mm256_add_epi16(
            _mm256_maddubs_epi16(p[2], a[2]),
            _mm256_maddubs_epi16(p[3], a[3]),
        );
        _mm256_add_epi16(s01, s23)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(in crate::cpu) fn sum4(p: &[__m256i; 4], a: [__m256i; 4]) -> __m256i {
        _mm256_madd_epi16(sum16(p, a), _mm256_set1_epi16(1))
    }

    /// Signed weights: the sign moves onto the activations, and pieces
    /// are widened one by one (|w| ≤ 128 leaves no room in 16 bits).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn sum4_signed(p: &[__m256i; 4], a: [__m256i; 4]) -> __m256i {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            let abs = _mm256_sign_epi8(p[c], p[c]);
            let prod = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(a[c], p[c]));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(prod, ones));
        }
        acc
    }

    /// Q5_0's fifth bits as 0x10 in their bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn fifth(bits: u32) -> __m256i {
        super::fifth_bits(bits)
    }

    mac_kernels!("avx2,fma,f16c");
}

/// The kernels with `vpdpbusd` (AVX-512 VNNI on 256-bit vectors): one
/// instruction multiplies, sums four bytes and accumulates in 32 bits.
pub mod vnni {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    pub(in crate::cpu) fn sum4(p: &[__m256i; 4], a: [__m256i; 4]) -> __m256i {
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            acc = _mm256_dpbusd_epi32(acc, p[c], a[c]);
        }
        acc
    }

    #[inline]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn sum4_signed(p: &[__m256i; 4], a: [__m256i; 4]) -> __m256i {
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            let abs = _mm256_sign_epi8(p[c], p[c]);
            acc = _mm256_dpbusd_epi32(acc, abs, _mm256_sign_epi8(a[c], p[c]));
        }
        acc
    }

    /// Q5_0's fifth bits as 0x10 in their bytes: the bits are the byte
    /// mask of one masked move.
    #[inline]
    #[target_feature(enable = "avx2,avx512bw,avx512vl")]
    fn fifth(bits: u32) -> __m256i {
        _mm256_maskz_mov_epi8(bits, _mm256_set1_epi8(0x10))
    }

    mac_kernels!("avx2,fma,f16c,avx512vnni,avx512vl,avx512bw");
}

/// Whether this CPU has the VNNI kernels' instructions (AVX-512 VNNI, VL
/// and BW).
pub fn has_vnni() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512vnni")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512bw")
}

/// Q6_K weights against `N` groups of eight tokens: the 6-bit values are
/// taken unsigned (0..63) and `32·Σ_k scale_k·Σ a` is subtracted, per
/// 256-value block.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn q6_k_x8<const N: usize>(w: &[u8], x: [&[Q8Kx8]; N]) -> [[f32; 8]; N] {
    let blocks = as_blocks::<BlockQ6K>(w).unwrap_or_default();
    let mut sum = [_mm256_setzero_ps(); N];
    for (i, b) in blocks.iter().enumerate() {
        let u = unpack_q6_k(b);
        let mut lo = [_mm256_setzero_si256(); N];
        let mut hi = [_mm256_setzero_si256(); N];
        for j in 0..8 {
            let p = pieces(u.q[j]);
            // Pieces 0, 1 are the 16 values of scale 2j; 2, 3 of 2j + 1.
            // Two pieces' pair sums fit 16 bits (2·2·63·127 < 2^15).
            let s0 = _mm256_set1_epi16(i16::from(b.scales[2 * j]));
            let s1 = _mm256_set1_epi16(i16::from(b.scales[2 * j + 1]));
            for n in 0..N {
                let [l, h] = halves(&x[n][i].qs[j]);
                for (a, acc) in [(l, &mut lo[n]), (h, &mut hi[n])] {
                    let a0 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(p[0], a[0]),
                        _mm256_maddubs_epi16(p[1], a[1]),
                    );
                    let a1 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(p[2], a[2]),
                        _mm256_maddubs_epi16(p[3], a[3]),
                    );
                    *acc = _mm256_add_epi32(
                        *acc,
                        _mm256_add_epi32(_mm256_madd_epi16(a0, s0), _mm256_madd_epi16(a1, s1)),
                    );
                }
            }
        }
        for n in 0..N {
            let a = &x[n][i];
            let su = token_order(_mm256_hadd_epi32(lo[n], hi[n]));
            let off = offsets_x8(&b.scales, &a.bsums);
            let sumi = _mm256_sub_epi32(su, _mm256_slli_epi32::<5>(off));
            sum[n] = accumulate(sum[n], b.d, &a.d, sumi);
        }
    }
    store_all(sum)
}

/// Each token's `Σ_k scale_k · bsums[t][k]` over the 16 groups of a Q6_K
/// block, in token order.
#[inline]
#[target_feature(enable = "avx2")]
fn offsets_x8(scales: &[i8; 16], bsums: &[[i16; 16]; GROUP]) -> __m256i {
    // SAFETY: `scales` is 16 readable bytes; unaligned load.
    let sc = unsafe { _mm_loadu_si128(scales.as_ptr().cast()) };
    let sc = _mm256_cvtepi8_epi16(sc);
    let one = |t: usize| {
        // SAFETY: `bsums[t]` is 32 readable bytes; unaligned load.
        let v = unsafe { _mm256_loadu_si256(bsums[t].as_ptr().cast()) };
        _mm256_madd_epi16(v, sc)
    };
    // Eight lanes per token, reduced to one: after two rounds of
    // `vphaddd` the low halves hold tokens 0-3 (then 4-7) summed over
    // groups 0-7, the high halves over groups 8-15.
    let a = _mm256_hadd_epi32(one(0), one(1));
    let b = _mm256_hadd_epi32(one(2), one(3));
    let c = _mm256_hadd_epi32(one(4), one(5));
    let d = _mm256_hadd_epi32(one(6), one(7));
    let ab = _mm256_hadd_epi32(a, b);
    let cd = _mm256_hadd_epi32(c, d);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(ab, cd),
        _mm256_permute2x128_si256::<0x31>(ab, cd),
    )
}

/// Each token's `Σ_j m_j · sums[t][j]` over the eight 32-value groups of a
/// 256-value block, in token order (`|m_j| < 2^15`).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn group_sums_x8(m: [i16; 8], sums: &[[i16; 8]; GROUP]) -> __m256i {
    let mv = _mm256_setr_epi16(
        m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[0], m[1], m[2], m[3], m[4], m[5], m[6],
        m[7],
    );
    let two = |t: usize| {
        // SAFETY: tokens t and t + 1 are 32 contiguous readable bytes.
        let v = unsafe { _mm256_loadu_si256(sums[t..t + 2].as_ptr().cast()) };
        _mm256_madd_epi16(v, mv)
    };
    let a = _mm256_hadd_epi32(two(0), two(2));
    let b = _mm256_hadd_epi32(two(4), two(6));
    // Tokens come out as 0, 2, 4, 6, 1, 3, 5, 7.
    _mm256_permutevar8x32_epi32(
        _mm256_hadd_epi32(a, b),
        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
    )
}
