//! Activations quantized the way ggml quantizes them before a quantized
//! matrix product: Q8_0 (for Q4_0, Q5_0, Q8_0 weights), Q8_1 (Q4_1, Q5_1)
//! and Q8_K (the K-quants). Matching ggml here keeps llorch's numbers close
//! to llama.cpp's, and makes the products integer dot products.
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
            if std::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                unsafe fn simd(x: &[f32], out: &mut [$block]) {
                    $body(x, out)
                }
                // SAFETY: the CPU reports AVX2.
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
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in chunk {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
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
