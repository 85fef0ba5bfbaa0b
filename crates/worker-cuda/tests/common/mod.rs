//! Shared helpers of the GPU tests: the device, random data, NMSE.

#![allow(dead_code)]

pub mod layered;

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

/// One step of the recurrent layers' test script.
#[derive(Debug, Clone)]
pub enum StateStep {
    /// A batch through the convolution and the delta rule.
    Batch(Vec<TokenPos>),
    /// `state_save` of a sequence.
    Save(usize),
    /// `state_restore` of a sequence.
    Restore(usize),
    /// `kv_clear` of a sequence.
    Clear(usize),
}

/// The recurrent layers' test script over three sequences: prefill chunks
/// of two and three sequences interleaved (one of 20 tokens, which the CPU
/// backend computes in the delta rule's chunked form), single-token steps
/// of all of them in changing orders, a kept state restored, batches
/// refused for gaps (which must leave every state as it was), a cleared
/// sequence, and one started over at position 0 without being cleared.
pub fn recurrent_script() -> Vec<StateStep> {
    use StateStep::*;
    let t = |seq: usize, pos: u32| TokenPos { seq, pos };
    // Sequence 1's prompt: 20 tokens, then 4 more.
    let p1 = 20;
    let mut s = vec![Batch(
        (0..p1)
            .flat_map(|p| {
                let mut v = vec![t(1, p)];
                if p < 3 {
                    v.push(t(0, p));
                }
                v
            })
            .collect(),
    )];
    let mut chunk: Vec<TokenPos> = (p1..p1 + 4).map(|p| t(1, p)).collect();
    chunk.splice(1..1, (0..5).map(|p| t(2, p)));
    chunk.push(t(0, 3));
    s.push(Batch(chunk));
    let p1 = p1 + 4;
    s.push(Save(1));
    for step in 0..4u32 {
        let mut b = vec![t(0, 4 + step), t(1, p1 + step), t(2, 5 + step)];
        if step % 2 == 1 {
            b.reverse();
        }
        s.push(Batch(b));
    }
    s.push(Restore(1));
    s.push(Batch(vec![t(1, p1), t(0, 8)]));
    // Refused: a gap after the restored state, and a skip within a batch.
    s.push(Batch(vec![t(1, p1 + 2)]));
    s.push(Batch(vec![t(0, 9), t(0, 11)]));
    s.push(Batch(vec![t(1, p1 + 1), t(0, 9)]));
    s.push(Clear(2));
    s.push(Batch(vec![t(2, 3)]));
    s.push(Batch(vec![t(2, 0), t(2, 1), t(0, 0), t(0, 1)]));
    s.push(Batch(vec![t(0, 2), t(2, 2), t(1, p1 + 2)]));
    s
}

/// Long prompts over three sequences, for the delta rule's chunked form
/// (chunks of 64): a prompt of 150 tokens (two full chunks and a partial
/// one) interleaved with one of 70 and a single token of a third
/// sequence; its state kept, a decode step, 80 more tokens continuing a
/// state mid-prompt beside a run of two; the kept state restored and 150
/// tokens from it, and a last decode step. Positions within
/// [`long_recurrent_spec`]'s context.
pub fn long_recurrent_script() -> Vec<StateStep> {
    use StateStep::*;
    let t = |seq: usize, pos: u32| TokenPos { seq, pos };
    let mut first = vec![t(2, 0)];
    for p in 0..150 {
        first.push(t(0, p));
        if p < 70 {
            first.push(t(1, p));
        }
    }
    let mut third: Vec<TokenPos> = (151..231).map(|p| t(0, p)).collect();
    third.splice(40..40, [t(2, 2), t(2, 3)]);
    let mut fourth: Vec<TokenPos> = (150..300).map(|p| t(0, p)).collect();
    fourth.insert(75, t(1, 71));
    vec![
        Batch(first),
        Save(0),
        Batch(vec![t(1, 70), t(0, 150), t(2, 1)]),
        Batch(third),
        Restore(0),
        Batch(fourth),
        Batch(vec![t(2, 4), t(0, 300), t(1, 72)]),
    ]
}

/// [`recurrent_spec`] with room for [`long_recurrent_script`]: 320
/// positions, batches of up to 256 tokens.
pub fn long_recurrent_spec(shape: worker_compute::StateShape) -> worker_compute::KvSpec {
    worker_compute::KvSpec {
        n_ctx: 320,
        max_batch: 256,
        ..recurrent_spec(shape)
    }
}

/// A recurrent layer's weights for the tests (the convolution's `taps`
/// per channel and the heads' decay rates, in a file) and its state's
/// shape, for the heads of `p`.
pub fn recurrent_file(
    p: &worker_compute::DeltaNetParams,
    taps: usize,
) -> (Arc<GgufFile>, worker_compute::StateShape) {
    let c = p.channels();
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let conv = random(c * taps, 31, 0.8);
    // Decay rates below zero, some near it (slow decay), some far.
    let a: Vec<f32> = (0..p.n_v_heads)
        .map(|h| -0.05 - 1.5 * (h as f32) / p.n_v_heads as f32)
        .collect();
    let file = file_with(vec![
        (
            "conv",
            GgmlType::F32,
            vec![(c * taps) as u64],
            f32_bytes(&conv),
        ),
        ("a", GgmlType::F32, vec![p.n_v_heads as u64], f32_bytes(&a)),
    ]);
    let shape = worker_compute::StateShape {
        conv_taps: taps,
        conv_channels: c,
        n_heads: p.n_v_heads,
        head_dim: p.head_dim,
    };
    (file, shape)
}

/// A cache of one recurrent layer (and one attention layer) for three
/// sequences of 64 positions.
pub fn recurrent_spec(shape: worker_compute::StateShape) -> worker_compute::KvSpec {
    worker_compute::KvSpec {
        n_seq: 3,
        n_ctx: 64,
        layer_windows: vec![None, None],
        kv_dim: 64,
        max_batch: 32,
        ty: worker_compute::KvType::F32,
        layer_states: vec![Some(shape), None],
        layer_dims: Vec::new(),
        layer_sources: Vec::new(),
    }
}

/// The inputs of batch `bi` of `n` rows: the convolution's input rows,
/// the decay inputs and the update logits.
pub fn recurrent_inputs(p: &worker_compute::DeltaNetParams, n: usize, bi: usize) -> [Vec<f32>; 3] {
    let seed = 1000 + 10 * bi as u64;
    [
        random(n * p.channels(), seed, 1.5),
        random(n * p.n_v_heads, seed + 1, 3.0),
        random(n * p.n_v_heads, seed + 2, 3.0),
    ]
}

/// One script step on backend `b` (layer 0 of `kv` is the recurrent one):
/// a batch's convolution output and delta rule output, or nothing for the
/// other steps.
pub fn recurrent_step<B: Backend>(
    b: &B,
    kv: &mut B::Kv,
    [conv, a]: [&B::Weight; 2],
    p: &worker_compute::DeltaNetParams,
    (bi, step): (usize, &StateStep),
) -> worker_compute::Result<Option<[Vec<f32>; 2]>> {
    let tokens = match step {
        StateStep::Save(s) => return b.state_save(kv, *s).map(|()| None),
        StateStep::Restore(s) => return b.state_restore(kv, *s).map(|()| None),
        StateStep::Clear(s) => return b.kv_clear(kv, *s).map(|()| None),
        StateStep::Batch(tokens) => tokens,
    };
    let n = tokens.len();
    let [x, alpha, beta] = recurrent_inputs(p, n, bi);
    let (c, width) = (p.channels(), p.n_v_heads * p.head_dim);
    let xb = buf_with(b, &x);
    let mut conv_out = b.buf(n * c)?;
    b.ssm_conv(kv, 0, tokens, &xb, conv, &mut conv_out)?;
    let (ab, bb) = (buf_with(b, &alpha), buf_with(b, &beta));
    let mut out = b.buf(n * width)?;
    b.delta_net(kv, 0, tokens, &conv_out, &ab, &bb, a, p, &mut out)?;
    Ok(Some([read(b, &conv_out, n * c), read(b, &out, n * width)]))
}
