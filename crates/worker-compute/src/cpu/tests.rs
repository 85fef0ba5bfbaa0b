//! Kernel tests: every weight type's dot product against the f64 product
//! of the dequantized weights and dequantized activations, and the AVX2
//! build against the baseline build.

use super::dot::{ActKind, act_kind};
use super::qact::{quantize_q8_0, quantize_q8_1, quantize_q8_k};
use super::{Kernels, MatRef, PreparedActs, matmul, matmul_shared};
use half::f16;
use worker_gguf::{GgmlType, dequantize};

/// Deterministic pseudo-random numbers (no RNG crate needed).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Byte offsets of the f16 scales in each block type.
fn scale_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::IQ4_NL | GgmlType::IQ4_XS => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// Random weights of `ty`, `rows` x `cols`, with finite scales (MXFP4's
/// exponent byte chosen so values stay below about 0.05, as the f16 scales
/// keep the other types').
fn weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let n = rows * cols;
    match ty {
        GgmlType::F32 => (0..n).flat_map(|_| rng.f32().to_le_bytes()).collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| f16::from_f32(rng.f32()).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| half::bf16::from_f32(rng.f32()).to_le_bytes())
            .collect(),
        _ => {
            let bytes = ty.bytes_for(n as u64).expect("whole blocks") as usize;
            let mut data: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
            for block in data.chunks_exact_mut(ty.type_size()) {
                for &off in scale_fields(ty) {
                    let s = f16::from_f32(rng.f32() * 0.05).to_le_bytes();
                    block[off..off + 2].copy_from_slice(&s);
                }
                if ty == GgmlType::MXFP4 {
                    // Half scales 2^-12..2^-8, times codes up to 12.
                    block[0] = 116 + (rng.next() % 5) as u8;
                }
            }
            data
        }
    }
}

/// The activations as the kernel sees them (quantized, then dequantized).
fn effective_acts(ty: GgmlType, x: &[f32]) -> Vec<f64> {
    match act_kind(ty).expect("supported") {
        ActKind::F32 => x.iter().map(|&v| f64::from(v)).collect(),
        ActKind::F16 => x
            .iter()
            .map(|&v| f64::from(f16::from_f32(v).to_f32()))
            .collect(),
        ActKind::Bf16 => x
            .iter()
            .map(|&v| f64::from(half::bf16::from_f32(v).to_f32()))
            .collect(),
        ActKind::Q8_0 => {
            let mut b = Vec::new();
            quantize_q8_0(x, &mut b);
            b.iter()
                .flat_map(|b| b.qs.iter().map(move |&q| f64::from(b.d) * f64::from(q)))
                .collect()
        }
        ActKind::Q8_1 => {
            let mut b = Vec::new();
            quantize_q8_1(x, &mut b);
            b.iter()
                .flat_map(|b| b.qs.iter().map(move |&q| f64::from(b.d) * f64::from(q)))
                .collect()
        }
        ActKind::Q8K => {
            let mut b = Vec::new();
            quantize_q8_k(x, &mut b);
            b.iter()
                .flat_map(|b| b.qs.iter().map(move |&q| f64::from(b.d) * f64::from(q)))
                .collect()
        }
    }
}

const TYPES: [GgmlType; 16] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::MXFP4,
];

#[test]
fn every_kernel_matches_the_dequantized_reference() {
    // 19 rows: a full chunk of 16, then 3 (pairs and a single row). Token
    // counts: 31 is four groups of eight for the tile kernels (two per
    // pass, the last padded), 27 three groups and three tokens one by one,
    // 5 one padded group, 2 the one-token kernels only.
    for n_tok in [31, 27, 5, 2] {
        check_every_kernel(19, 512, n_tok);
    }
    // 17 blocks of 32 (types whose blocks fit): the one-token kernels'
    // groups of four blocks and their remainder.
    check_every_kernel(19, 544, 2);
}

fn check_every_kernel(rows: usize, cols: usize, n_tok: usize) {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    for ty in TYPES {
        if !cols.is_multiple_of(ty.block_size()) {
            continue;
        }
        let w = weights(ty, rows, cols, &mut rng);
        let mut wf = vec![0f32; rows * cols];
        dequantize(ty, &w, &mut wf).expect("dequantize");
        let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.f32()).collect();
        let m = MatRef {
            ty,
            rows,
            cols,
            data: &w,
        };
        // Q8_1 activations carry `d·Σq` rounded to f16 (as ggml's do),
        // which the dequantized reference does not see.
        let tolerance = if act_kind(ty) == Some(ActKind::Q8_1) {
            1e-4
        } else {
            1e-5
        };
        let mut acts = PreparedActs::default();
        let mut base = vec![0f32; n_tok * rows];
        matmul(m, &x, n_tok, &mut acts, &mut base, Kernels::Baseline);
        for t in 0..n_tok {
            let xa = effective_acts(ty, &x[t * cols..(t + 1) * cols]);
            for r in 0..rows {
                let want: f64 = (0..cols).map(|c| f64::from(wf[r * cols + c]) * xa[c]).sum();
                let scale: f64 = (0..cols)
                    .map(|c| (f64::from(wf[r * cols + c]) * xa[c]).abs())
                    .sum();
                let got = base[t * rows + r];
                let err = (f64::from(got) - want).abs();
                assert!(
                    err <= tolerance * scale + 1e-6,
                    "{ty} t={t} r={r}: got {got}, want {want}"
                );
            }
        }
        // One token at a time gives the same numbers as the batch.
        let mut single = vec![0f32; rows];
        matmul(
            m,
            &x[cols..2 * cols],
            1,
            &mut acts,
            &mut single,
            Kernels::Baseline,
        );
        assert_eq!(
            single,
            base[rows..2 * rows],
            "{ty}: batch and single token agree"
        );
        // Every SIMD level keeps the reference float order: same bits, for
        // batches and single tokens (models that re-quantize activations
        // at every layer amplify any last-bit difference).
        for kernels in Kernels::available() {
            let mut simd = vec![0f32; n_tok * rows];
            matmul(m, &x, n_tok, &mut acts, &mut simd, kernels);
            assert_eq!(
                simd, base,
                "{ty}: {kernels:?} and reference kernels agree bit for bit"
            );
            let mut single_simd = vec![0f32; rows];
            matmul(
                m,
                &x[cols..2 * cols],
                1,
                &mut acts,
                &mut single_simd,
                kernels,
            );
            assert_eq!(
                single_simd, single,
                "{ty}: single-token {kernels:?} agrees bit for bit"
            );
        }
    }
}

#[test]
fn activation_quantization_round_trips_within_a_step() {
    let mut rng = Rng(42);
    let x: Vec<f32> = (0..512).map(|_| rng.f32() * 3.0).collect();
    for ty in [GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::Q6_K] {
        let xa = effective_acts(ty, &x);
        for (block_x, block_a) in x.chunks(32).zip(xa.chunks(32)) {
            let amax = block_x.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (&a, &b) in block_x.iter().zip(block_a) {
                assert!(
                    (f64::from(a) - b).abs() <= f64::from(amax) / 127.0 * 0.51 + 1e-3,
                    "{ty}"
                );
            }
        }
    }
}

#[test]
fn shared_products_equal_separate_ones_bit_for_bit() {
    let mut rng = Rng(7);
    let (cols, n_tok) = (512, 13);
    let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.f32()).collect();
    // One activation form (Q5_0, Q8_0, IQ4_NL and MXFP4 take Q8_0; Q2_K,
    // Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS take Q8_K), and two forms (Q4_K
    // with Q8_0), which falls back to one conversion per weight.
    for types in [
        [GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::Q5_0],
        [GgmlType::IQ4_NL, GgmlType::Q8_0, GgmlType::Q4_0],
        [GgmlType::MXFP4, GgmlType::IQ4_NL, GgmlType::Q8_0],
        [GgmlType::IQ4_XS, GgmlType::Q2_K, GgmlType::Q3_K],
        [GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::Q6_K],
        [GgmlType::Q5_K, GgmlType::Q4_K, GgmlType::Q6_K],
    ] {
        let rows = [24, 8, 17];
        let data: Vec<Vec<u8>> = types
            .iter()
            .zip(rows)
            .map(|(&ty, r)| weights(ty, r, cols, &mut rng))
            .collect();
        let mats: Vec<MatRef<'_>> = types
            .iter()
            .zip(rows)
            .zip(&data)
            .map(|((&ty, rows), d)| MatRef {
                ty,
                rows,
                cols,
                data: d,
            })
            .collect();
        for kernels in Kernels::available() {
            let mut acts = PreparedActs::default();
            let mut shared: Vec<Vec<f32>> = rows.iter().map(|r| vec![0f32; r * n_tok]).collect();
            let mut outs: Vec<&mut [f32]> = shared.iter_mut().map(|v| v.as_mut_slice()).collect();
            matmul_shared(&mats, &x, n_tok, &mut acts, &mut outs, kernels);
            for (m, got) in mats.iter().zip(&shared) {
                let mut want = vec![0f32; m.rows * n_tok];
                matmul(*m, &x, n_tok, &mut acts, &mut want, kernels);
                assert_eq!(got, &want, "{types:?} {kernels:?} {}", m.ty);
            }
        }
    }
}
