//! Shared helpers of the GPU tests: the device, random data, NMSE.

#![allow(dead_code)]

use std::sync::Arc;
use worker_compute::{Backend, TokenPos, WeightSource};
use worker_cuda::CudaBackend;
use worker_gguf::{GgmlType, GgufFile, GgufWriter};

/// Every weight type the kernels decode.
pub const TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::MXFP4,
];

/// The device under test: `LLORCH_CUDA_DEVICE` (default 0).
pub fn gpu() -> CudaBackend {
    let ordinal = std::env::var("LLORCH_CUDA_DEVICE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    CudaBackend::new(ordinal).unwrap_or_else(|e| panic!("cannot open cuda:{ordinal}: {e}"))
}

/// Normalized mean squared error of `got` against `want`.
pub fn nmse(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| f64::from(a - b).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|&b| f64::from(b).powi(2)).sum();
    if norm == 0.0 { err } else { err / norm }
}

/// Asserts `nmse(got, want) <= bound`, naming the case.
pub fn assert_close(case: &str, got: &[f32], want: &[f32], bound: f64) {
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{case}: non-finite values from the GPU"
    );
    let e = nmse(got, want);
    eprintln!("{case}: nmse {e:.3e} (bound {bound:.0e})");
    assert!(e <= bound, "{case}: nmse {e:.3e} > {bound:.0e}");
}

/// Deterministic values in [-scale, scale).
pub fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * scale
        })
        .collect()
}

/// A file holding the tensors `(name, type, dims, bytes)`.
pub fn file_with(tensors: Vec<(&str, GgmlType, Vec<u64>, Vec<u8>)>) -> Arc<GgufFile> {
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama").expect("metadata");
    for (name, ty, dims, bytes) in tensors {
        w.add_tensor(name, &dims, ty, bytes).expect("tensor");
    }
    Arc::new(GgufFile::from_bytes(w.to_bytes()).expect("file parses"))
}

/// The weight `name` of `file` on backend `b`.
pub fn weight<B: Backend>(b: &B, file: &Arc<GgufFile>, name: &str) -> B::Weight {
    let info = file.header().tensor(name).expect("tensor exists").clone();
    b.weight(WeightSource {
        file: file.clone(),
        name: name.into(),
        ty: info.ty,
        dims: info.dims,
        expert: None,
    })
    .expect("weight loads")
}

/// A buffer holding `data` on backend `b`.
pub fn buf_with<B: Backend>(b: &B, data: &[f32]) -> B::Buf {
    let mut buf = b.buf(data.len()).expect("buffer");
    b.write(&mut buf, data).expect("write");
    buf
}

/// The first `n` values of `buf`.
pub fn read<B: Backend>(b: &B, buf: &B::Buf, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    b.read(buf, &mut out).expect("read");
    out
}

/// The batches the attention tests run: a prefill of 12 tokens in sequence
/// 1, then six decode steps of both sequences together (sequence 0 starts
/// fresh).
pub fn attention_batches() -> Vec<Vec<TokenPos>> {
    let mut batches = vec![(0..12).map(|pos| TokenPos { seq: 1, pos }).collect()];
    for step in 0..6u32 {
        batches.push(vec![
            TokenPos { seq: 0, pos: step },
            TokenPos {
                seq: 1,
                pos: 12 + step,
            },
        ]);
    }
    batches
}

/// RoPE settings every backend must agree on: both pairing styles, partial
/// rotation, frequency factors, linear scaling, and YaRN with its blend
/// range and attention factor (n_rot 64).
pub fn rope_cases() -> Vec<worker_compute::RopeParams> {
    use worker_compute::{RopeParams, RopeStyle};
    let factors: Vec<f32> = (0..32).map(|i| 1.0 + i as f32 * 0.25).collect();
    let with = |f: &dyn Fn(&mut RopeParams), style| {
        let mut p = RopeParams::plain(style, 64, 10000.0);
        f(&mut p);
        p
    };
    vec![
        RopeParams::plain(RopeStyle::Normal, 64, 10000.0),
        RopeParams::plain(RopeStyle::Neox, 64, 10000.0),
        RopeParams::plain(RopeStyle::Neox, 32, 10000.0),
        with(
            &|p| p.freq_factors = Some(factors.clone()),
            RopeStyle::Normal,
        ),
        with(
            &|p| {
                p.freq_scale = 0.125;
                p.freq_factors = Some(factors.clone());
                p.attn_factor = 1.19;
            },
            RopeStyle::Neox,
        ),
        with(
            &|p| {
                p.freq_scale = 0.25;
                p.ext_factor = 1.0;
                p.corr_dims = [0.0, 9.0];
                p.attn_factor = 0.88;
            },
            RopeStyle::Neox,
        ),
    ]
}
