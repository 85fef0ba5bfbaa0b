//! Hand-written AVX2 dot products for the 32-weight block types against
//! Q8_0 activations: Q8_0, Q5_0 and Q4_0 (Gemma 3 and most Q4_K_M files
//! hold their embeddings and many layers in these). The compiler does not
//! find the `vpmaddubsw` form on its own: the scalar loops of `dot` widen
//! every product to 32 bits, about 4x the instructions.
//!
//! Each block: weights and activations as 32 signed bytes; `vpsignb` moves
//! the weight's sign onto the activation so `vpmaddubsw` (unsigned × signed)
//! can multiply, `vpmaddwd` with ones sums pairs into eight i32 lanes,
//! which are summed to the block's exact integer dot product (|q| ≤ 128 and
//! 2·128·127 < 2¹⁵). The float side is then the scalar kernels' own:
//! `sum += (d_w · d_a) · isum` block after block, so these kernels give the
//! same bits as the reference ones. That is deliberate: Gemma 3 is
//! sensitive enough (activations are re-quantized to 8 bits at every layer,
//! so a last-bit difference can flip a rounding) that a different float
//! order moved its logits by NMSE ~1e-3 against llama.cpp's.

use super::qact::{Q8_0, Q8K};
use std::arch::x86_64::*;
use worker_gguf::blocks::{
    BlockIq4Nl, BlockIq4Xs, BlockMxfp4, BlockQ4_0, BlockQ4K, BlockQ5_0, BlockQ5K, BlockQ6K,
    BlockQ8_0, IQ4_VALUES, MXFP4_VALUES, as_blocks, e8m0_half, iq4xs_scale, kquant_scale_min,
};

/// Σ w·a over 32 signed bytes, as 8 i32 partial sums.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn block_madd(w: __m256i, a: __m256i) -> __m256i {
    let abs_w = _mm256_sign_epi8(w, w);
    let signed_a = _mm256_sign_epi8(a, w);
    let pairs = _mm256_maddubs_epi16(abs_w, signed_a);
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// The four totals of four [`block_madd`] results, in one reduction.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn isums4_v(v0: __m256i, v1: __m256i, v2: __m256i, v3: __m256i) -> __m128i {
    let c = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256::<1>(c))
}

/// `(d_w[k] · d_a[k]) · isum[k]` for four blocks, each rounded as the
/// scalar expression is (two f32 products; the integer sums are exact in
/// f32), ready to be added in block order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn products4(dw: [[u8; 2]; 4], da: __m128, isums: __m128i) -> [f32; 4] {
    let h = |d: [u8; 2]| u16::from_le_bytes(d) as i16;
    let dw = _mm_cvtph_ps(_mm_setr_epi16(
        h(dw[0]),
        h(dw[1]),
        h(dw[2]),
        h(dw[3]),
        0,
        0,
        0,
        0,
    ));
    let p = _mm_mul_ps(_mm_mul_ps(dw, da), _mm_cvtepi32_ps(isums));
    let mut out = [0f32; 4];
    // SAFETY: `out` is 16 writable bytes; unaligned store.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), p) };
    out
}

/// 32 bytes from a 32-byte array.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn load32(p: &[i8; 32]) -> __m256i {
    // SAFETY: `p` is 32 readable bytes; unaligned load.
    unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
}

/// The 16 bytes of packed nibbles as 32 bytes: low nibbles first, then
/// high nibbles (the order of the 32-weight block types).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: `qs` is 16 readable bytes; unaligned load.
    let v = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
    let lo = _mm_and_si128(v, _mm_set1_epi8(0x0F));
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), _mm_set1_epi8(0x0F));
    _mm256_set_m128i(hi, lo)
}

/// Byte `i` is 0xFF where bit `i` of `bits` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn bytes_from_bits(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    let spread = _mm256_setr_epi64x(
        0x0000_0000_0000_0000,
        0x0101_0101_0101_0101,
        0x0202_0202_0202_0202,
        0x0303_0303_0303_0303,
    );
    let v = _mm256_shuffle_epi8(v, spread);
    // All bits but bit (i mod 8) in byte i: the OR is all ones iff it is set.
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(v, others), _mm256_set1_epi64x(-1))
}

/// The 32 values of a Q8_0 block, as signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q8_0(b: &BlockQ8_0) -> __m256i {
    load32(&b.qs)
}

/// The 32 values of a Q4_0 block, minus 8, as signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q4_0(b: &BlockQ4_0) -> __m256i {
    _mm256_sub_epi8(nibbles(&b.qs), _mm256_set1_epi8(8))
}

/// The 32 values of a Q5_0 block, minus 16, as signed bytes: the nibble
/// when the fifth bit is set, the nibble with 0xF0 (minus 16) when not.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q5_0(b: &BlockQ5_0) -> __m256i {
    let high_clear = _mm256_andnot_si256(
        bytes_from_bits(u32::from_le_bytes(b.qh)),
        _mm256_set1_epi8(0xF0_u8 as i8),
    );
    _mm256_or_si256(nibbles(&b.qs), high_clear)
}

/// The 16 non-linear IQ4 values in both 128-bit lanes, for `vpshufb`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn iq4_table() -> __m256i {
    // SAFETY: the table is 16 readable bytes; unaligned load.
    let t = unsafe { _mm_loadu_si128(IQ4_VALUES.as_ptr().cast()) };
    _mm256_set_m128i(t, t)
}

/// The 32 values of 16 bytes of IQ4 indices (low nibbles first), looked up
/// in the table as signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn iq4_values(qs: &[u8; 16]) -> __m256i {
    _mm256_shuffle_epi8(iq4_table(), nibbles(qs))
}

/// The 32 values of an IQ4_NL block, as signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn iq4_nl(b: &BlockIq4Nl) -> __m256i {
    iq4_values(&b.qs)
}

/// One token against one row of a 32-weight block type whose values
/// `$values` decodes: integer block sums reduced four at a time, then added
/// in block order. (A macro, not a closure: closures passed to these
/// kernels were not inlined.)
macro_rules! dot_32 {
    ($(#[$doc:meta])* $name:ident, $block:ty, $values:ident) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c")]
        pub fn $name(w: &[u8], x: &[Q8_0]) -> f32 {
            let blocks = as_blocks::<$block>(w).unwrap_or_default();
            let mut sum = 0f32;
            let (bc, xc) = (blocks.chunks_exact(4), x.chunks_exact(4));
            let (br, xr) = (bc.remainder(), xc.remainder());
            for (b, a) in bc.zip(xc) {
                let is = isums4_v(
                    block_madd($values(&b[0]), load32(&a[0].qs)),
                    block_madd($values(&b[1]), load32(&a[1].qs)),
                    block_madd($values(&b[2]), load32(&a[2].qs)),
                    block_madd($values(&b[3]), load32(&a[3].qs)),
                );
                let da = _mm_setr_ps(a[0].d, a[1].d, a[2].d, a[3].d);
                for p in products4([b[0].d, b[1].d, b[2].d, b[3].d], da, is) {
                    sum += p;
                }
            }
            for (b, a) in br.iter().zip(xr) {
                sum += (scale(b.d) * a.d) * hsum_i32(block_madd($values(b), load32(&a.qs))) as f32;
            }
            sum
        }
    };
}

dot_32!(
    /// Q8_0 weights against Q8_0 activations.
    dot_q8_0, BlockQ8_0, q8_0
);
dot_32!(
    /// Q4_0 weights against Q8_0 activations.
    dot_q4_0, BlockQ4_0, q4_0
);
dot_32!(
    /// Q5_0 weights against Q8_0 activations.
    dot_q5_0, BlockQ5_0, q5_0
);
dot_32!(
    /// IQ4_NL weights against Q8_0 activations.
    dot_iq4_nl, BlockIq4Nl, iq4_nl
);

/// MXFP4 weights against Q8_0 activations: the doubled E2M1 values looked
/// up like IQ4_NL's, each block's integer sum times its half scale
/// `2^(e - 128)` and the activations' scale, added in block order (the
/// scalar reference's float order).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_mxfp4(w: &[u8], x: &[Q8_0]) -> f32 {
    // SAFETY: the table is 16 readable bytes; unaligned load.
    let t = unsafe { _mm_loadu_si128(MXFP4_VALUES.as_ptr().cast()) };
    let table = _mm256_set_m128i(t, t);
    let blocks = as_blocks::<BlockMxfp4>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        let values = _mm256_shuffle_epi8(table, nibbles(&b.qs));
        let isum = hsum_i32(block_madd(values, load32(&a.qs)));
        sum += (e8m0_half(b.e[0]) * a.d) * isum as f32;
    }
    sum
}

/// IQ4_XS weights (8 groups of 32 table values with 6-bit scales) against
/// Q8_K activations: each group's integer sum times its scale, summed over
/// the block as integers, then one float product per block.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_iq4_xs(w: &[u8], x: &[Q8K]) -> f32 {
    let blocks = as_blocks::<BlockIq4Xs>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        let mut sumi = 0i32;
        for ib in 0..8 {
            let mut qs = [0u8; 16];
            qs.copy_from_slice(&b.qs[ib * 16..ib * 16 + 16]);
            let lanes = block_madd(iq4_values(&qs), load_at(&a.qs, ib * 32));
            sumi += (i32::from(iq4xs_scale(b, ib)) - 32) * hsum_i32(lanes);
        }
        sum += (scale(b.d) * a.d) * sumi as f32;
    }
    sum
}

/// Two rows of a 32-value block type against one token: two independent
/// float chains instead of one; each row's sum is formed exactly as the
/// one-row kernel forms it (groups of four blocks, products added in
/// block order, then the remainder). `$values` decodes a block's 32
/// weights as bytes, `$lanes(w, a)` gives `Σ w·a` as eight i32 lanes, and
/// `Σ a` shifted left by `$offset` is subtracted per block (weights taken
/// unsigned with an offset of `2^$offset`; 32, shifting every bit out,
/// when `$values` gives them signed). Also instantiated, with VNNI, by
/// [`super::dot_vnni`].
macro_rules! dot2_32 {
    ($(#[$doc:meta])* $name:ident, $block:ty, $features:literal, $values:ident, $lanes:ident, $offset:literal) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
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
                let off = _mm_slli_epi32::<$offset>(_mm_setr_epi32(
                    x[g].sum,
                    x[g + 1].sum,
                    x[g + 2].sum,
                    x[g + 3].sum,
                ));
                let is0 = _mm_sub_epi32(
                    isums4_v(
                        $lanes($values(&b0[g]), a[0]),
                        $lanes($values(&b0[g + 1]), a[1]),
                        $lanes($values(&b0[g + 2]), a[2]),
                        $lanes($values(&b0[g + 3]), a[3]),
                    ),
                    off,
                );
                let is1 = _mm_sub_epi32(
                    isums4_v(
                        $lanes($values(&b1[g]), a[0]),
                        $lanes($values(&b1[g + 1]), a[1]),
                        $lanes($values(&b1[g + 2]), a[2]),
                        $lanes($values(&b1[g + 3]), a[3]),
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
                let off = x[i].sum.checked_shl($offset).unwrap_or(0);
                sum[0] += (scale(b0[i].d) * x[i].d)
                    * (hsum_i32($lanes($values(&b0[i]), a)) - off) as f32;
                sum[1] += (scale(b1[i].d) * x[i].d)
                    * (hsum_i32($lanes($values(&b1[i]), a)) - off) as f32;
            }
            sum
        }
    };
}
pub(super) use dot2_32;

dot2_32!(
    /// Two rows of Q4_0 weights against Q8_0 activations.
    dot2_q4_0, BlockQ4_0, "avx2,fma,f16c", q4_0, block_madd, 32
);
dot2_32!(
    /// Two rows of Q5_0 weights against Q8_0 activations.
    dot2_q5_0, BlockQ5_0, "avx2,fma,f16c", q5_0, block_madd, 32
);

/// Sum of the 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// 32 bytes at `p[at..at + 32]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load_at<T: Copy>(p: &[T], at: usize) -> __m256i {
    let s = &p[at..at + 32 / std::mem::size_of::<T>()];
    // SAFETY: `s` is 32 readable bytes (the slice above checks the range).
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// A Q4_K block unpacked: 8 groups of 32 unsigned 4-bit values with their
/// scales (as i16 lanes), the group mins (each twice, as i16 lanes, to
/// meet the activations' 16-value sums), and the two f16 factors.
struct Q4K {
    q: [__m256i; 8],
    s: [__m256i; 8],
    mins: __m256i,
    d: [u8; 2],
    dmin: [u8; 2],
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn unpack_q4_k(b: &BlockQ4K) -> Q4K {
    unpack_k4(&b.scales, &b.qs, None, b.d, b.dmin)
}

/// A Q5_K block unpacked into the Q4_K form: the fifth bit of each value
/// (bit `j` of the 32 `qh` bytes, for group `j`) joins its four low bits,
/// so the values are unsigned 0..31 and the Q4_K arithmetic applies as is.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn unpack_q5_k(b: &BlockQ5K) -> Q4K {
    unpack_k4(&b.scales, &b.qs, Some(&b.qh), b.d, b.dmin)
}

/// The shared unpacking of Q4_K and Q5_K blocks: 8 groups of 32 values
/// from the 4-bit `qs` (and, for Q5_K, a fifth bit from `qh`), with their
/// 6-bit scales and mins.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn unpack_k4(
    scales: &[u8; 12],
    qs: &[u8; 128],
    qh: Option<&[u8; 32]>,
    d: [u8; 2],
    dmin: [u8; 2],
) -> Q4K {
    let (sc, mn) = kquant_scale_min(scales);
    let low = _mm256_set1_epi8(0x0F);
    let mut q = [_mm256_setzero_si256(); 8];
    let mut s = [_mm256_setzero_si256(); 8];
    for p in 0..4 {
        let bits = load_at(qs, p * 32);
        q[2 * p] = _mm256_and_si256(bits, low);
        q[2 * p + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low);
        s[2 * p] = _mm256_set1_epi16(i16::from(sc[2 * p]));
        s[2 * p + 1] = _mm256_set1_epi16(i16::from(sc[2 * p + 1]));
    }
    if let Some(qh) = qh {
        let qh = load_at(qh, 0);
        for (j, v) in q.iter_mut().enumerate() {
            // Shifting 16-bit lanes keeps each byte's bit `j` at its bit 0.
            let bit = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32));
            let fifth = _mm256_slli_epi16::<4>(_mm256_and_si256(bit, _mm256_set1_epi8(1)));
            *v = _mm256_or_si256(*v, fifth);
        }
    }
    let m = _mm_cvtsi64_si128(i64::from_le_bytes(mn));
    let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
    Q4K {
        q,
        s,
        mins,
        d,
        dmin,
    }
}

/// 16 i16 lanes from the activations' 16-value sums.
#[inline]
#[target_feature(enable = "avx2")]
fn bsums(a: &Q8K) -> __m256i {
    // SAFETY: `bsums` is 16 i16 values, 32 readable bytes.
    unsafe { _mm256_loadu_si256(a.bsums.as_ptr().cast()) }
}

/// The totals of two vectors of eight i32 lanes, in one reduction.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum2_i32(a: __m256i, b: __m256i) -> (i32, i32) {
    let h = _mm256_hadd_epi32(a, b);
    let s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
    let s = _mm_hadd_epi32(s, s);
    (_mm_cvtsi128_si32(s), _mm_extract_epi32::<1>(s))
}

/// One token's share of a Q4_K block: `d·Σ scale·q·a − dmin·Σ min·Σa`. The
/// 4-bit values are unsigned, so `vpmaddubsw` takes them directly; the
/// mins go through the activations' 16-value sums (`vpmaddwd`), and both
/// totals come out of one reduction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k_token(b: &Q4K, a: &Q8K) -> f32 {
    let mut acc = _mm256_setzero_si256();
    for j in 0..8 {
        let p = _mm256_maddubs_epi16(b.q[j], load_at(&a.qs, j * 32));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, b.s[j]));
    }
    let (sumi, sumi_mins) = hsum2_i32(acc, _mm256_madd_epi16(bsums(a), b.mins));
    let d = a.d * scale(b.d);
    let dmin = a.d * scale(b.dmin);
    d * sumi as f32 - dmin * sumi_mins as f32
}

/// A Q6_K block unpacked: 8 runs of 32 values (unsigned, 0..63, from 4 low
/// and 2 high bits) with their two 16-value scales per run, and `d`.
pub(super) struct Q6K {
    pub(super) q: [__m256i; 8],
    s: [__m256i; 8],
    /// The 16 scales as i16 lanes.
    scales: __m256i,
    d: [u8; 2],
}

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn unpack_q6_k(b: &BlockQ6K) -> Q6K {
    let low = _mm256_set1_epi8(0x0F);
    let two = _mm256_set1_epi8(0x03);
    let mut q = [_mm256_setzero_si256(); 8];
    let mut s = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        let qh = load_at(&b.qh, h * 32);
        let ql0 = load_at(&b.ql, h * 64);
        let ql1 = load_at(&b.ql, h * 64 + 32);
        let parts = [
            (_mm256_and_si256(ql0, low), qh),
            (_mm256_and_si256(ql1, low), _mm256_srli_epi16::<2>(qh)),
            (
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low),
                _mm256_srli_epi16::<4>(qh),
            ),
            (
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low),
                _mm256_srli_epi16::<6>(qh),
            ),
        ];
        for (r, (l4, h2)) in parts.into_iter().enumerate() {
            q[h * 4 + r] = _mm256_or_si256(l4, _mm256_slli_epi16::<4>(_mm256_and_si256(h2, two)));
            let run = h * 8 + r * 2;
            s[h * 4 + r] = _mm256_set_m128i(
                _mm_set1_epi16(i16::from(b.scales[run + 1])),
                _mm_set1_epi16(i16::from(b.scales[run])),
            );
        }
    }
    // SAFETY: `scales` is 16 readable bytes; unaligned load.
    let sc = unsafe { _mm_loadu_si128(b.scales.as_ptr().cast()) };
    Q6K {
        q,
        s,
        scales: _mm256_cvtepi8_epi16(sc),
        d: b.d,
    }
}

/// One token's share of a Q6_K block: the values are taken unsigned and
/// `32·Σ scale·Σa` is subtracted, through the activations' 16-value sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k_token(b: &Q6K, a: &Q8K) -> f32 {
    let mut acc = _mm256_setzero_si256();
    for j in 0..8 {
        let p = _mm256_maddubs_epi16(b.q[j], load_at(&a.qs, j * 32));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, b.s[j]));
    }
    let (sumi, offset) = hsum2_i32(acc, _mm256_madd_epi16(bsums(a), b.scales));
    (scale(b.d) * a.d) * (sumi - 32 * offset) as f32
}

/// Q4_K weights (8 groups of 32 with 6-bit scales and mins) against Q8_K
/// activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q4_k(w: &[u8], x: &[Q8K]) -> f32 {
    let blocks = as_blocks::<BlockQ4K>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        sum += q4_k_token(&unpack_q4_k(b), a);
    }
    sum
}

/// Q5_K weights (Q4_K with a fifth bit per value) against Q8_K activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q5_k(w: &[u8], x: &[Q8K]) -> f32 {
    let blocks = as_blocks::<BlockQ5K>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        sum += q4_k_token(&unpack_q5_k(b), a);
    }
    sum
}

/// Q6_K weights (16 groups of 16 with 8-bit scales; 6-bit values offset by
/// 32) against Q8_K activations.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q6_k(w: &[u8], x: &[Q8K]) -> f32 {
    let blocks = as_blocks::<BlockQ6K>(w).unwrap_or_default();
    let mut sum = 0f32;
    for (b, a) in blocks.iter().zip(x) {
        sum += q6_k_token(&unpack_q6_k(b), a);
    }
    sum
}

/// The weight scale of a block, converted in-register (F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn scale(d: [u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
        u16::from_le_bytes(d),
    ))))
}

/// Two Q8_0 rows against one token: the two rows' float sums are
/// independent chains that overlap in the pipeline (each still in block
/// order, so the bits equal two [`dot_q8_0`] calls).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot2_q8_0(w0: &[u8], w1: &[u8], x: &[Q8_0]) -> [f32; 2] {
    let b0 = as_blocks::<BlockQ8_0>(w0).unwrap_or_default();
    let b1 = as_blocks::<BlockQ8_0>(w1).unwrap_or_default();
    let mut sum = [0f32; 2];
    let n = b0.len().min(b1.len()).min(x.len());
    let mut i = 0;
    while i + 2 <= n {
        let (a0, a1) = (load32(&x[i].qs), load32(&x[i + 1].qs));
        let is = isums4_v(
            block_madd(load32(&b0[i].qs), a0),
            block_madd(load32(&b1[i].qs), a0),
            block_madd(load32(&b0[i + 1].qs), a1),
            block_madd(load32(&b1[i + 1].qs), a1),
        );
        let da = _mm_setr_ps(x[i].d, x[i].d, x[i + 1].d, x[i + 1].d);
        let p = products4([b0[i].d, b1[i].d, b0[i + 1].d, b1[i + 1].d], da, is);
        sum[0] += p[0];
        sum[1] += p[1];
        sum[0] += p[2];
        sum[1] += p[3];
        i += 2;
    }
    if i < n {
        let a = load32(&x[i].qs);
        sum[0] += (scale(b0[i].d) * x[i].d) * hsum_i32(block_madd(load32(&b0[i].qs), a)) as f32;
        sum[1] += (scale(b1[i].d) * x[i].d) * hsum_i32(block_madd(load32(&b1[i].qs), a)) as f32;
    }
    sum
}
