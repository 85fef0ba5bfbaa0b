//! One-token dot products with AVX-512 VNNI for the 32-weight block types
//! (Q4_0, Q5_0, Q8_0) against Q8_0 activations: generation's matrix rows.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes and sums each four into
//! a 32-bit lane in one instruction, where AVX2 needs `vpsignb` twice,
//! `vpmaddubsw` and `vpmaddwd`. The weights are taken unsigned with an
//! offset (Q4_0: the nibble, 8; Q5_0: five bits, 16; Q8_0: `q + 128`, 128),
//! and the offset comes back through the activations' block sums:
//! `Σ (u − o)·a = Σ u·a − o·Σ a`, exact in 32 bits. The float steps are
//! [`super::dot_avx2`]'s, in the same order, so both give the same bits as
//! the scalar reference.

use super::dot_avx2::{bytes_from_bits, hsum_i32, isums4_v, load32, nibbles, products4, scale};
use super::qact::Q8_0;
use std::arch::x86_64::*;
use worker_gguf::blocks::{BlockQ4_0, BlockQ5_0, BlockQ8_0, as_blocks};

/// `Σ u·a` over 32 bytes, as eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
fn udot(u: __m256i, a: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, a)
}

/// Q4_0's values as unsigned bytes (0..16, offset 8).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn u4_0(b: &BlockQ4_0) -> __m256i {
    nibbles(&b.qs)
}

/// Q5_0's values as unsigned bytes (0..32, offset 16).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn u5_0(b: &BlockQ5_0) -> __m256i {
    let fifth = _mm256_and_si256(
        bytes_from_bits(u32::from_le_bytes(b.qh)),
        _mm256_set1_epi8(0x10),
    );
    _mm256_or_si256(nibbles(&b.qs), fifth)
}

/// Q8_0's values plus 128, as unsigned bytes (offset 128).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn u8_0(b: &BlockQ8_0) -> __m256i {
    _mm256_xor_si256(load32(&b.qs), _mm256_set1_epi8(i8::MIN))
}

/// Two rows against one token, two blocks of each per step: the block sums
/// of (row 0, row 1) at block `i`, then at `i + 1` (the order
/// [`super::dot_avx2`]'s two-row kernels add them in), offsets removed.
macro_rules! dot2_vnni {
    ($(#[$doc:meta])* $name:ident, $block:ty, $values:ident, $shift:literal) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
        pub fn $name(w0: &[u8], w1: &[u8], x: &[Q8_0]) -> [f32; 2] {
            let b0 = as_blocks::<$block>(w0).unwrap_or_default();
            let b1 = as_blocks::<$block>(w1).unwrap_or_default();
            let n = b0.len().min(b1.len()).min(x.len());
            let (b0, b1, x) = (&b0[..n], &b1[..n], &x[..n]);
            let mut sum = [0f32; 2];
            let full = n / 4 * 4;
            for g in (0..full).step_by(4) {
                let a: [__m256i; 4] = std::array::from_fn(|k| load32(&x[g + k].qs));
                let da = _mm_setr_ps(x[g].d, x[g + 1].d, x[g + 2].d, x[g + 3].d);
                let off = _mm_slli_epi32::<$shift>(_mm_setr_epi32(
                    x[g].sum,
                    x[g + 1].sum,
                    x[g + 2].sum,
                    x[g + 3].sum,
                ));
                let is0 = _mm_sub_epi32(
                    isums4_v(
                        udot($values(&b0[g]), a[0]),
                        udot($values(&b0[g + 1]), a[1]),
                        udot($values(&b0[g + 2]), a[2]),
                        udot($values(&b0[g + 3]), a[3]),
                    ),
                    off,
                );
                let is1 = _mm_sub_epi32(
                    isums4_v(
                        udot($values(&b1[g]), a[0]),
                        udot($values(&b1[g + 1]), a[1]),
                        udot($values(&b1[g + 2]), a[2]),
                        udot($values(&b1[g + 3]), a[3]),
                    ),
                    off,
                );
                let p0 = products4([b0[g].d, b0[g + 1].d, b0[g + 2].d, b0[g + 3].d], da, is0);
                let p1 = products4([b1[g].d, b1[g + 1].d, b1[g + 2].d, b1[g + 3].d], da, is1);
                for k in 0..4 {
                    sum[0] += p0[k];
                    sum[1] += p1[k];
                }
            }
            for i in full..n {
                let a = load32(&x[i].qs);
                let off = x[i].sum << $shift;
                let d = |b: &$block| scale(b.d) * x[i].d;
                sum[0] += d(&b0[i]) * (hsum_i32(udot($values(&b0[i]), a)) - off) as f32;
                sum[1] += d(&b1[i]) * (hsum_i32(udot($values(&b1[i]), a)) - off) as f32;
            }
            sum
        }
    };
}

dot2_vnni!(
    /// Two rows of Q4_0 weights against Q8_0 activations.
    dot2_q4_0, BlockQ4_0, u4_0, 3
);
dot2_vnni!(
    /// Two rows of Q5_0 weights against Q8_0 activations.
    dot2_q5_0, BlockQ5_0, u5_0, 4
);
dot2_vnni!(
    /// Two rows of Q8_0 weights against Q8_0 activations.
    dot2_q8_0, BlockQ8_0, u8_0, 7
);
