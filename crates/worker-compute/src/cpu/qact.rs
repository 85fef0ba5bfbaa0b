//! Activations quantized the way ggml quantizes them before a quantized
//! matrix product: Q8_0 (for Q4_0, Q5_0, Q8_0, IQ4_NL and MXFP4 weights), Q8_1
//! (Q4_1, Q5_1) and Q8_K (the K-quants and IQ4_XS). Matching ggml here keeps
//! llorch's numbers close to llama.cpp's, and makes the products integer
//! dot products.
//!
//! Scales are kept as f32 holding exactly the value ggml would read back
//! (Q8_0/Q8_1 scales are stored as f16 in ggml, so they are rounded to f16).

use half::f16;

/// 32 activations: `x ≈ d * q`, with `Σ q` for kernels that take the
/// weights unsigned (see `act_tiles`).
#[derive(Debug, Clone, Copy)]
pub struct Q8_0 {
    pub d: f32,
    pub sum: i32,
    pub qs: [i8; 32],
}

/// 32 activations with their scaled sum `s = d * Σq`, for weights with a min.
#[derive(Debug, Clone, Copy)]
pub struct Q8_1 {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; 32],
}

/// 256 activations with per-16 sums, for K-quant weights.
#[derive(Debug, Clone, Copy)]
pub struct Q8K {
    pub d: f32,
    pub qs: [i8; 256],
    pub bsums: [i16; 16],
}

fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// A public quantizer (into a slice of blocks, and a `Vec` wrapper) that
/// runs its body compiled for AVX2 when the CPU has it: the same
/// operations, but `round_ties_even` becomes one `vroundps` instead of a
/// libm call per value (the results are the same bits).
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $into:ident => $body:ident, $block:ty, $n:literal) => {
        $(#[$doc])*
        ///
        /// `out` holds one block per `
        #[doc = stringify!($n)]
        /// ` values of `x`.
        pub fn $into(x: &[f32], out: &mut [$block]) {
            #[cfg(target_arch = "x86_64")]
            if super::quantizers_may_use_avx2() {
                #[target_feature(enable = "avx2")]
                unsafe fn simd(x: &[f32], out: &mut [$block]) {
                    $body(x, out)
                }
                // SAFETY: the CPU reports AVX2 (quantizers_may_use_avx2
                // checks it).
                unsafe { simd(x, out) };
                return;
            }
            $body(x, out)
        }

        $(#[$doc])*
        #[cfg(test)]
        pub fn $name(x: &[f32], out: &mut Vec<$block>) {
            out.clear();
            out.resize(x.len() / $n, <$block>::ZERO);
            $into(x, out);
        }
    };
}

dispatch!(
    /// Quantizes `x` (a multiple of 32 long) to Q8_0 blocks.
    quantize_q8_0, quantize_q8_0_into => q8_0_body, Q8_0, 32
);
dispatch!(
    /// Quantizes `x` (a multiple of 32 long) to Q8_1 blocks.
    quantize_q8_1, quantize_q8_1_into => q8_1_body, Q8_1, 32
);
dispatch!(
    /// Quantizes `x` (a multiple of 256 long) to Q8_K blocks.
    quantize_q8_k, quantize_q8_k_into => q8_k_body, Q8K, 256
);

impl Q8_0 {
    /// All zeros.
    pub const ZERO: Self = Self {
        d: 0.0,
        sum: 0,
        qs: [0; 32],
    };
}

impl Q8_1 {
    /// All zeros.
    pub const ZERO: Self = Self {
        d: 0.0,
        s: 0.0,
        qs: [0; 32],
    };
}

impl Q8K {
    /// All zeros.
    pub const ZERO: Self = Self {
        d: 0.0,
        qs: [0; 256],
        bsums: [0; 16],
    };
}

#[inline(always)]
fn q8_0_body(x: &[f32], out: &mut [Q8_0]) {
    for (chunk, o) in x.chunks_exact(32).zip(out) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(chunk) {
            *q = (v * id).round_ties_even() as i8;
        }
        *o = Q8_0 {
            d: round_f16(d),
            sum: qs.iter().map(|&q| i32::from(q)).sum(),
            qs,
        };
    }
}

#[inline(always)]
fn q8_1_body(x: &[f32], out: &mut [Q8_1]) {
    for (chunk, o) in x.chunks_exact(32).zip(out) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut qs = [0i8; 32];
        let mut sum = 0i32;
        for (q, &v) in qs.iter_mut().zip(chunk) {
            *q = (v * id).round_ties_even() as i8;
            sum += i32::from(*q);
        }
        *o = Q8_1 {
            d: round_f16(d),
            s: round_f16(d * sum as f32),
            qs,
        };
    }
}

#[inline(always)]
fn q8_k_body(x: &[f32], out: &mut [Q8K]) {
    for (chunk, o) in x.chunks_exact(256).zip(out) {
        // ggml keeps the first value of the largest magnitude. Found in two
        // passes, the first of which vectorizes (a maximum does not depend
        // on the order), rather than one branch per value.
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let max = chunk
            .iter()
            .copied()
            .find(|v| v.abs() == amax && amax > 0.0)
            .unwrap_or(0.0);
        let mut block = Q8K::ZERO;
        if amax != 0.0 {
            let iscale = -127.0 / max;
            for (q, &v) in block.qs.iter_mut().zip(chunk) {
                *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
            }
            for (j, s) in block.bsums.iter_mut().enumerate() {
                *s = block.qs[j * 16..j * 16 + 16]
                    .iter()
                    .map(|&q| i16::from(q))
                    .sum();
            }
            block.d = 1.0 / iscale;
        }
        *o = block;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's Q8_K quantization spelled out: one pass keeping the first
    /// value of the largest magnitude.
    fn q8_k_reference(x: &[f32]) -> Q8K {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let mut b = Q8K::ZERO;
        if amax != 0.0 {
            let iscale = -127.0 / max;
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
            }
            for (j, s) in b.bsums.iter_mut().enumerate() {
                *s = b.qs[j * 16..j * 16 + 16]
                    .iter()
                    .map(|&q| i16::from(q))
                    .sum();
            }
            b.d = 1.0 / iscale;
        }
        b
    }

    #[test]
    fn q8_k_keeps_the_first_value_of_the_largest_magnitude() {
        let mut cases: Vec<Vec<f32>> = Vec::new();
        // Ties of opposite sign, in both orders, and all zeros.
        for (a, b) in [(1.5f32, -1.5f32), (-2.0, 2.0)] {
            let mut v: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
            v[10] = a;
            v[200] = b;
            cases.push(v);
        }
        cases.push(vec![0.0; 256]);
        cases.push((0..256).map(|i| (i as f32 * 1.7).cos() * 3.0).collect());
        for x in cases {
            let mut got = Vec::new();
            quantize_q8_k(&x, &mut got);
            let want = q8_k_reference(&x);
            assert_eq!(got[0].d.to_bits(), want.d.to_bits());
            assert_eq!(got[0].qs, want.qs);
            assert_eq!(got[0].bsums, want.bsums);
        }
    }
}
