//! Benchmarks for worker-gguf: time to open and index a model, and
//! dequantization throughput per type.
//!
//! ```text
//! cargo run --release -p worker-gguf --example gguf-bench -- [MODEL.gguf]
//! ```
//! MODEL defaults to the default model in the cache (scripts/fetch-model.sh).
//! Figures are medians; results go to BENCHMARKS.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use worker_gguf::{DEQUANT_TYPES, GgufFile, dequantize};

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(worker_common::paths::default_model_path);

    // Open and index: mmap + header parse (metadata, vocabulary, tensor infos).
    let first = GgufFile::open(&model)?;
    let (n_tensors, n_keys) = (first.tensor_infos().len(), first.metadata().len());
    drop(first);
    let runs: Vec<Duration> = (0..21)
        .map(|_| {
            let t = Instant::now();
            let f = GgufFile::open(&model);
            let d = t.elapsed();
            drop(f);
            d
        })
        .collect();
    println!(
        "open+index {}: {:.2} ms median of 21 ({n_tensors} tensors, {n_keys} keys)",
        model.display(),
        median(runs).as_secs_f64() * 1e3
    );

    // Dequantization: 8 Mi elements per type, random blocks.
    const N: usize = 8 << 20;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut out = vec![0f32; N];
    println!("{:<6} {:>10} {:>12}", "type", "GB/s out", "Melem/s");
    for ty in DEQUANT_TYPES {
        let n_bytes = ty.bytes_for(N as u64).ok_or("size")? as usize;
        let mut data: Vec<u8> = (0..n_bytes)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        // Keep plain float inputs finite, so no type is timed on NaN paths.
        if matches!(ty.name(), "F16" | "BF16") {
            data.iter_mut().skip(1).step_by(2).for_each(|b| *b &= 0x3F);
        }
        let runs: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                dequantize(ty, &data, &mut out).map(|_| t.elapsed())
            })
            .collect::<Result<_, _>>()?;
        let secs = median(runs).as_secs_f64();
        println!(
            "{:<6} {:>10.2} {:>12.0}",
            ty.name(),
            (N * 4) as f64 / secs / 1e9,
            N as f64 / secs / 1e6
        );
    }
    Ok(())
}
