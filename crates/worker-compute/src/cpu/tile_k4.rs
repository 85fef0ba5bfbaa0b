//! Prefill kernels with eight tokens in lanes (see [`super::tile_avx2`])
//! for the 256-value types with 6-bit scales and mins: Q4_K, and Q5_K,
//! which is Q4_K with a fifth bit per value (bit `j` of the 32 `qh` bytes
//! for group `j`), so its values are unsigned 0..31.
//!
//! Per block and token: `d·Σ_j scale_j·Σ q·a − dmin·Σ_j min_j·Σ a`. The
//! integer sums are exact, so each is the scalar kernel's integer; the
//! float steps are the scalar kernel's, lane by lane: `d = d_a·d_w`,
//! `dmin = d_a·dmin_w`, `sum += d·sumi − dmin·sumi_mins`, block after
//! block. So every output has the bits of [`super::dot`]'s reference.

// Kernels index fixed-size blocks and lanes explicitly: that is the shape
// the vectorizer turns into SIMD, and it mirrors the block layouts.
#![allow(clippy::needless_range_loop)]

/// The Q4_K and Q5_K kernels, written once and compiled twice (AVX2 and
/// VNNI). Each module supplies `scale(sc)` and the integer steps
/// `scaled4(p, a, s)` (`sc · Σ p[c]·a[c]` over four pieces for values
/// below 16) and `scaled4_5(p, a, s)` (the same for values below 32).
macro_rules! k4_kernels {
    ($features:literal) => {
        use super::super::act_tiles::Q8Kx8;
        use super::super::tile_avx2::{
            group_sums_x8, halves, load_ps, pieces, scale8, store_all, token_order,
        };
        use worker_gguf::blocks::{BlockQ4K, BlockQ5K, as_blocks, kquant_scale_min};

        /// One block's bytes: scales and mins, 4-bit values, Q5_K's fifth
        /// bits, and the f16 factors `d` and `dmin`.
        struct Block<'a> {
            scales: &'a [u8; 12],
            qs: &'a [u8; 128],
            qh: Option<&'a [u8; 32]>,
            d: [u8; 2],
            dmin: [u8; 2],
        }

        /// Group `j`'s values (32 bytes): nibble `j % 2` of bytes
        /// `32·(j / 2)..`, and with `qh` bit `j` of each of its bytes as 0x10.
        #[inline]
        #[target_feature(enable = $features)]
        fn values(b: &Block<'_>, qh: __m256i, j: usize) -> __m256i {
            let low = _mm256_set1_epi8(0x0F);
            let at = (j / 2) * 32;
            // SAFETY: `at + 32 <= 128 = b.qs.len()`; unaligned load.
            let bits = unsafe { _mm256_loadu_si256(b.qs[at..at + 32].as_ptr().cast()) };
            let v = if j % 2 == 0 {
                _mm256_and_si256(bits, low)
            } else {
                _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low)
            };
            if b.qh.is_none() {
                return v;
            }
            // Shifting 16-bit lanes right by `j` puts each byte's bit `j`
            // at its bit 0, and left by 4 at its bit 4: no bit of the
            // other byte reaches bit 4.
            let bit = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32));
            let fifth = _mm256_and_si256(_mm256_slli_epi16::<4>(bit), _mm256_set1_epi8(0x10));
            _mm256_or_si256(v, fifth)
        }

        /// One block against block `i` of `N` groups: each group's
        /// `d·sumi − dmin·sumi_mins`, lane by lane.
        #[inline]
        #[target_feature(enable = $features)]
        fn block_x8<const N: usize>(b: Block<'_>, x: &[&[Q8Kx8]; N], i: usize) -> [__m256; N] {
            let (sc, mn) = kquant_scale_min(b.scales);
            let qh = match b.qh {
                // SAFETY: `qh` is 32 readable bytes; unaligned load.
                Some(h) => unsafe { _mm256_loadu_si256(h.as_ptr().cast()) },
                None => _mm256_setzero_si256(),
            };
            let mut lo = [_mm256_setzero_si256(); N];
            let mut hi = [_mm256_setzero_si256(); N];
            for j in 0..8 {
                let p = pieces(values(&b, qh, j));
                let s = scale(sc[j]);
                for n in 0..N {
                    let [l, h] = halves(&x[n][i].qs[j]);
                    let (l, h) = if b.qh.is_some() {
                        (scaled4_5(&p, l, s), scaled4_5(&p, h, s))
                    } else {
                        (scaled4(&p, l, s), scaled4(&p, h, s))
                    };
                    lo[n] = _mm256_add_epi32(lo[n], l);
                    hi[n] = _mm256_add_epi32(hi[n], h);
                }
            }
            let dw = scale8(b.d);
            let dminw = scale8(b.dmin);
            let mut out = [_mm256_setzero_ps(); N];
            for n in 0..N {
                let a = &x[n][i];
                let sumi = token_order(_mm256_hadd_epi32(lo[n], hi[n]));
                let sumi_mins = group_sums_x8(mn.map(i16::from), &a.sums);
                let da = load_ps(&a.d);
                let d = _mm256_mul_ps(da, dw);
                let dmin = _mm256_mul_ps(da, dminw);
                out[n] = _mm256_sub_ps(
                    _mm256_mul_ps(d, _mm256_cvtepi32_ps(sumi)),
                    _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(sumi_mins)),
                );
            }
            out
        }

        /// Q4_K weights against `N` groups of eight tokens.
        #[target_feature(enable = $features)]
        pub fn q4_k_x8<const N: usize>(w: &[u8], x: [&[Q8Kx8]; N]) -> [[f32; 8]; N] {
            let blocks = as_blocks::<BlockQ4K>(w).unwrap_or_default();
            let mut sum = [_mm256_setzero_ps(); N];
            for (i, b) in blocks.iter().enumerate() {
                let (scales, qs, qh) = (&b.scales, &b.qs, None);
                let (d, dmin) = (b.d, b.dmin);
                let part = block_x8(
                    Block {
                        scales,
                        qs,
                        qh,
                        d,
                        dmin,
                    },
                    &x,
                    i,
                );
                for n in 0..N {
                    sum[n] = _mm256_add_ps(sum[n], part[n]);
                }
            }
            store_all(sum)
        }

        /// Q5_K weights against `N` groups of eight tokens.
        #[target_feature(enable = $features)]
        pub fn q5_k_x8<const N: usize>(w: &[u8], x: [&[Q8Kx8]; N]) -> [[f32; 8]; N] {
            let blocks = as_blocks::<BlockQ5K>(w).unwrap_or_default();
            let mut sum = [_mm256_setzero_ps(); N];
            for (i, b) in blocks.iter().enumerate() {
                let (scales, qs, qh) = (&b.scales, &b.qs, Some(&b.qh));
                let (d, dmin) = (b.d, b.dmin);
                let part = block_x8(
                    Block {
                        scales,
                        qs,
                        qh,
                        d,
                        dmin,
                    },
                    &x,
                    i,
                );
                for n in 0..N {
                    sum[n] = _mm256_add_ps(sum[n], part[n]);
                }
            }
            store_all(sum)
        }
    };
}

/// With `vpmaddubsw`: four pieces' 16-bit pair sums stay below 2^15 for
/// values below 32 (4·2·31·128), so one `vpmaddwd` by the scale widens
/// and scales them, for 4- and 5-bit values alike.
pub mod avx2 {
    use super::super::tile_avx2::avx2::sum16;
    use std::arch::x86_64::*;

    /// A scale as the 16-bit lanes `vpmaddwd` multiplies by.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn scale(sc: u8) -> __m256i {
        _mm256_set1_epi16(i16::from(sc))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn scaled4(p: &[__m256i; 4], a: [__m256i; 4], s: __m256i) -> __m256i {
        _mm256_madd_epi16(sum16(p, a), s)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn scaled4_5(p: &[__m256i; 4], a: [__m256i; 4], s: __m256i) -> __m256i {
        scaled4(p, a, s)
    }

    k4_kernels!("avx2,fma,f16c");
}

/// With `vpdpbusd`: each 32-bit lane sums 16 products.
pub mod vnni {
    use super::super::tile_avx2::vnni::sum4;
    use std::arch::x86_64::*;

    /// A scale in the low half of each 32-bit lane (the high half zero).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn scale(sc: u8) -> __m256i {
        _mm256_set1_epi32(i32::from(sc))
    }

    /// For 4-bit values a lane's sum is below 2^15 in magnitude
    /// (16·15·128), so `vpmaddwd` multiplies it by the scale and adds zero.
    #[inline]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn scaled4(p: &[__m256i; 4], a: [__m256i; 4], s: __m256i) -> __m256i {
        _mm256_madd_epi16(sum4(p, a), s)
    }

    /// For 5-bit values a lane's sum needs 17 bits (16·31·128): a 32-bit
    /// multiply.
    #[inline]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn scaled4_5(p: &[__m256i; 4], a: [__m256i; 4], s: __m256i) -> __m256i {
        _mm256_mullo_epi32(sum4(p, a), s)
    }

    k4_kernels!("avx2,fma,f16c,avx512vnni,avx512vl,avx512bw");
}
