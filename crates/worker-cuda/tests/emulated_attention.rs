//! The KV store and attention kernels run on the CPU under the kernel
//! emulation (tests/host/cuda_host.h), against the CPU backend: both cache
//! types, sliding windows, soft caps and attention sinks, each with one
//! split and with the keys split and the partials merged. The launch
//! shapes are the backend's (src/attention.rs).

mod common;
mod host;

use common::{assert_close, attention_batches, buf_with, file_with, random, read, weight};
use host::attention::{Rows, attend};
use worker_compute::cpu::{CpuBackend, CpuWeight};
use worker_compute::{AttnParams, Backend, KvSpec, KvType};
use worker_gguf::GgmlType;

const N_HEAD: usize = 4;
const N_HEAD_KV: usize = 2;
const HEAD_DIM: usize = 32;

/// One configuration: the cache type, a window, a soft cap, the keys per
/// split (large: one split), whether the heads have sinks, and the NMSE
/// bound against the CPU.
struct Case {
    ty: KvType,
    window: Option<u32>,
    softcap: Option<f32>,
    split_len: usize,
    sinks: bool,
    bound: f64,
}

#[test]
fn kv_store_and_attention_match_the_cpu() {
    let one = 1 << 20;
    // The CPU rounds the final softmax weights to f16 with an f16 cache;
    // split sums cannot, hence the looser f16 bound. Split lengths: one
    // split, then splits of a few keys with the partials merged.
    let case = |ty, window, softcap, split_len, sinks| Case {
        ty,
        window,
        softcap,
        split_len,
        sinks,
        bound: if ty == KvType::F16 { 1e-6 } else { 1e-10 },
    };
    let cases = [
        case(KvType::F32, None, None, one, false),
        case(KvType::F32, None, None, 4, false),
        case(KvType::F16, None, None, one, false),
        case(KvType::F16, None, None, 7, false),
        case(KvType::F16, Some(5), None, one, false),
        case(KvType::F16, Some(5), None, 2, false),
        case(KvType::F32, None, Some(30.0), one, false),
        case(KvType::F32, None, Some(30.0), 3, false),
        // Attention sinks (gpt-oss), with and without a window.
        case(KvType::F32, None, None, one, true),
        case(KvType::F32, None, None, 4, true),
        case(KvType::F16, Some(5), None, one, true),
        case(KvType::F16, Some(5), None, 2, true),
    ];
    for c in &cases {
        check_case(c);
    }
}

/// Sinks of the four heads: one far above the scores, so it takes most of
/// its head's weight, one far below, so it takes none.
fn sink_values() -> Vec<f32> {
    vec![0.7, 6.0, -1.5, -40.0]
}

fn check_case(case: &Case) {
    let c = CpuBackend::new(2).expect("cpu backend");
    let (q_dim, kv_dim) = (N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM);
    let spec = KvSpec {
        n_seq: 2,
        n_ctx: 64,
        layer_windows: vec![case.window],
        kv_dim,
        max_batch: 16,
        ty: case.ty,
        layer_states: Vec::new(),
        layer_dims: Vec::new(),
        layer_sources: Vec::new(),
    };
    let p = AttnParams {
        n_head: N_HEAD,
        n_head_kv: N_HEAD_KV,
        head_dim: HEAD_DIM,
        scale: 1.0 / (HEAD_DIM as f32).sqrt(),
        window: case.window,
        softcap: case.softcap,
    };
    let sinks = sink_values();
    let bytes: Vec<u8> = sinks.iter().flat_map(|v| v.to_le_bytes()).collect();
    let file = file_with(vec![("sinks", GgmlType::F32, vec![N_HEAD as u64], bytes)]);
    let sinks_cpu: CpuWeight = weight(&c, &file, "sinks");
    let cap = spec.layer_capacity(case.window);
    let mut rows = Rows::new(case.ty, spec.n_seq, cap, kv_dim);
    let mut kvc = c.kv(&spec).expect("kv");
    for (bi, tokens) in attention_batches().iter().enumerate() {
        let n = tokens.len();
        let q = random(n * q_dim, 100 + bi as u64, 1.0);
        let k = random(n * kv_dim, 200 + bi as u64, 1.0);
        let v = random(n * kv_dim, 300 + bi as u64, 1.0);
        let sinks_dev = case.sinks.then_some(&sinks[..]);
        let out = attend(
            &p,
            &mut rows,
            tokens,
            &q,
            Some((&k, &v)),
            case.split_len,
            sinks_dev,
        );
        let (qc, kc, vc) = (buf_with(&c, &q), buf_with(&c, &k), buf_with(&c, &v));
        let mut oc = c.buf(n * q_dim).expect("buf");
        let sinks_host = case.sinks.then_some(&sinks_cpu);
        c.attention(&mut kvc, 0, tokens, &qc, &kc, &vc, &p, sinks_host, &mut oc)
            .expect("cpu attention");
        assert_close(
            &format!(
                "attention {:?} window={:?} softcap={:?} sinks={} split {} batch {bi}",
                case.ty, case.window, case.softcap, case.sinks, case.split_len
            ),
            &out,
            &read(&c, &oc, n * q_dim),
            case.bound,
        );
    }
}
