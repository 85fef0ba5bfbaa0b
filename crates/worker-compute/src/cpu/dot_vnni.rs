//! One-token dot products with AVX-512 VNNI (and BW, VL) for the 32-weight block types
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

use super::dot_avx2::{dot2_32, hsum_i32, isums4_v, load32, nibbles, products4, scale};
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

/// Q5_0's values as unsigned bytes (0..32, offset 16): the fifth bits are
/// the byte mask of one masked move.
#[inline]
#[target_feature(enable = "avx2,fma,avx512bw,avx512vl")]
fn u5_0(b: &BlockQ5_0) -> __m256i {
    let fifth = _mm256_maskz_mov_epi8(u32::from_le_bytes(b.qh), _mm256_set1_epi8(0x10));
    _mm256_or_si256(nibbles(&b.qs), fifth)
}

/// Q8_0's values plus 128, as unsigned bytes (offset 128).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn u8_0(b: &BlockQ8_0) -> __m256i {
    _mm256_xor_si256(load32(&b.qs), _mm256_set1_epi8(i8::MIN))
}

dot2_32!(
    /// Two rows of Q4_0 weights against Q8_0 activations.
    dot2_q4_0, BlockQ4_0, "avx2,fma,f16c,avx512vnni,avx512vl,avx512bw", u4_0, udot, 3
);
dot2_32!(
    /// Two rows of Q5_0 weights against Q8_0 activations.
    dot2_q5_0, BlockQ5_0, "avx2,fma,f16c,avx512vnni,avx512vl,avx512bw", u5_0, udot, 4
);
dot2_32!(
    /// Two rows of Q8_0 weights against Q8_0 activations.
    dot2_q8_0, BlockQ8_0, "avx2,fma,f16c,avx512vnni,avx512vl,avx512bw", u8_0, udot, 7
);
