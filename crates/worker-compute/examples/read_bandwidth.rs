//! The machine's memory read bandwidth with a given number of threads: the
//! physical limit of single-token decode, which reads every weight a token
//! touches once. Each thread sums its share of a buffer far larger than the
//! caches, in eight independent lanes so the loop vectorizes; the best of
//! several passes is printed in GB/s.
//!
//!     cargo run --release -p worker-compute --example read_bandwidth -- [THREADS] [MIB]

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let len = mib * (1 << 20) / 4;
    // Written once, so every page is real memory, not the shared zero page.
    let data: Vec<f32> = (0..len).map(|i| (i % 251) as f32).collect();
    let chunk = len.div_ceil(threads);
    let mut best = f64::MAX;
    for _ in 0..7 {
        let start = Instant::now();
        let total: f32 = std::thread::scope(|s| {
            let handles: Vec<_> = data
                .chunks(chunk)
                .map(|part| s.spawn(move || lane_sum(part)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        std::hint::black_box(total);
        best = best.min(start.elapsed().as_secs_f64());
    }
    let gbps = (len * 4) as f64 / best / 1e9;
    println!("{gbps:.2}");
}

/// The sum of `xs` in eight lanes.
fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for c in xs.chunks_exact(8) {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    acc.iter().sum()
}
