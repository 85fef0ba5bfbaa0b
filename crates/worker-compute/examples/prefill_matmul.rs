//! Prefill speed of the CPU matrix product per weight type: 512 tokens
//! against a 2048x2048 and an 8192x2048 matrix of random weights (finite
//! scales), at the best kernel level this CPU runs (`LLORCH_CPU_SIMD=avx2`
//! or `off` pick a lower one), on a pool of the given number of threads.
//! Prints the best of several runs in GFLOP/s (two per weight per token).
//!
//!     cargo run --release -p worker-compute --example prefill_matmul -- [THREADS] [TYPES...]

use std::time::Instant;
use worker_compute::cpu::{Kernels, MatRef, PreparedActs, matmul};
use worker_gguf::GgmlType;

const TOKENS: usize = 512;
const ROUNDS: usize = 5;
const SHAPES: [(usize, usize); 2] = [(2048, 2048), (8192, 2048)];
const DEFAULT_TYPES: [GgmlType; 8] = [
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_XS,
    GgmlType::IQ4_NL,
    GgmlType::MXFP4,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
];

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(2);
    let named: Vec<GgmlType> = args
        .filter_map(|a| DEFAULT_TYPES.into_iter().find(|t| t.to_string() == a))
        .collect();
    let types = if named.is_empty() {
        DEFAULT_TYPES.to_vec()
    } else {
        named
    };
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("thread pool: {e}");
            std::process::exit(1);
        }
    };
    let kernels = Kernels::detect();
    println!("kernels {kernels:?}, {threads} threads, {TOKENS} tokens; GFLOP/s");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (rows, cols) in SHAPES {
        let x: Vec<f32> = (0..TOKENS * cols).map(|_| rng.f32()).collect();
        let data: Vec<Vec<u8>> = types
            .iter()
            .map(|&ty| weights(ty, rows, cols, &mut rng))
            .collect();
        let mut acts = PreparedActs::default();
        let mut out = vec![0f32; TOKENS * rows];
        // Rounds over every type, best time per type: a load that comes
        // and goes on the machine touches all types alike.
        let mut best = vec![f64::MAX; types.len()];
        pool.install(|| {
            for _ in 0..ROUNDS {
                for (k, (&ty, w)) in types.iter().zip(&data).enumerate() {
                    let m = MatRef {
                        ty,
                        rows,
                        cols,
                        data: w,
                    };
                    let start = Instant::now();
                    matmul(m, &x, TOKENS, &mut acts, &mut out, kernels);
                    best[k] = best[k].min(start.elapsed().as_secs_f64());
                    std::hint::black_box(&out);
                }
            }
        });
        println!("{rows}x{cols}:");
        for (ty, t) in types.iter().zip(best) {
            let gflops = 2.0 * (TOKENS * rows * cols) as f64 / t / 1e9;
            println!("  {:>7} {gflops:7.1}", ty.to_string());
        }
    }
}

/// Deterministic pseudo-random numbers.
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

/// Random blocks of `ty` with small finite scales.
fn weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let bytes = ty.bytes_for((rows * cols) as u64).unwrap_or(0) as usize;
    let mut data: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
    let scales: &[usize] = match ty {
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[0],
    };
    for block in data.chunks_exact_mut(ty.type_size()) {
        if ty == GgmlType::MXFP4 {
            block[0] = 118;
            continue;
        }
        for &off in scales {
            let s = half::f16::from_f32(rng.f32() * 0.05).to_le_bytes();
            block[off..off + 2].copy_from_slice(&s);
        }
    }
    data
}
