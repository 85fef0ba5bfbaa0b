//! The KV store and attention kernels run on the CPU under the kernel
//! emulation (tests/host/cuda_host.h), against the CPU backend: both cache
//! types, sliding windows, soft caps and attention sinks, each with one
//! split and with the keys split and the partials merged. The launch
//! shapes are the backend's (src/attention.rs).

mod common;
mod host;

use common::{assert_close, attention_batches, buf_with, file_with, random, read, weight};
use host::{P, kernel, launch, per_element};
use std::ffi::c_void;
use worker_compute::cpu::{CpuBackend, CpuWeight};
use worker_compute::{AttnParams, Backend, KvSpec, KvType, TokenPos};
use worker_gguf::GgmlType;

type KvStore = unsafe extern "C" fn(
    *const f32,
    *const f32,
    *mut c_void,
    *mut c_void,
    i32,
    *const i32,
    *const i32,
    i32,
    i32,
    i32,
);
type Attention = unsafe extern "C" fn(
    *const f32,
    *const c_void,
    *const c_void,
    i32,
    *mut f32,
    *mut f32,
    *const i32,
    *const i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    f32,
    i32,
    *const f32,
);
type Merge = unsafe extern "C" fn(*const f32, *mut f32, i32, i32, i32, *const f32);

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

/// The emulated caches of one layer, as the kernels address them.
struct Caches {
    k: Vec<u8>,
    v: Vec<u8>,
    cap: usize,
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
    let elem = case.ty.elem_bytes();
    let mut caches = Caches {
        k: vec![0u8; spec.n_seq * cap * kv_dim * elem],
        v: vec![0u8; spec.n_seq * cap * kv_dim * elem],
        cap,
    };
    let mut kvc = c.kv(&spec).expect("kv");
    for (bi, tokens) in attention_batches().iter().enumerate() {
        let n = tokens.len();
        let q = random(n * q_dim, 100 + bi as u64, 1.0);
        let k = random(n * kv_dim, 200 + bi as u64, 1.0);
        let v = random(n * kv_dim, 300 + bi as u64, 1.0);
        let sinks_dev = case.sinks.then_some(&sinks[..]);
        let out = emulated(case, &p, &mut caches, tokens, [&q, &k, &v], sinks_dev);
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

/// The kernels' output for one batch: the KV store, attention, and the
/// merge when the keys are split.
fn emulated(
    case: &Case,
    p: &AttnParams,
    caches: &mut Caches,
    tokens: &[TokenPos],
    [q, k, v]: [&[f32]; 3],
    sinks: Option<&[f32]>,
) -> Vec<f32> {
    let (store, attn, merge): (KvStore, Attention, Merge) = (
        kernel("kv_store"),
        kernel("attention"),
        kernel("attention_merge"),
    );
    let n = tokens.len();
    let (q_dim, kv_dim) = (N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM);
    let seq: Vec<i32> = tokens.iter().map(|t| t.seq as i32).collect();
    let pos: Vec<i32> = tokens.iter().map(|t| t.pos as i32).collect();
    let max_keys = tokens
        .iter()
        .map(|t| match case.window {
            Some(w) => t.pos.min(w - 1) as usize + 1,
            None => t.pos as usize + 1,
        })
        .max()
        .unwrap_or(1);
    let n_split = max_keys.div_ceil(case.split_len);
    let mut part = vec![0f32; n * N_HEAD * n_split * (HEAD_DIM + 2)];
    let mut out = vec![0f32; n * q_dim];
    let is_f16 = i32::from(case.ty == KvType::F16);
    let cap = caches.cap as i32;
    let (kp, vp, sp, pp) = (P::of(k), P::of(v), P::of(&seq), P::of(&pos));
    let (kc, vc) = (P::mut_of(&mut caches.k), P::mut_of(&mut caches.v));
    let sinks_p = sinks.map_or(0, |s| s.as_ptr() as usize);
    let (grid, block) = per_element(n * kv_dim);
    // SAFETY (every launch below): the caches hold n_seq x cap slots, the
    // batch fits, and the outputs and partials are sized as the kernels
    // write them.
    launch(grid, block, 0, &|| unsafe {
        store(
            kp.f(),
            vp.f(),
            kc.u8().cast(),
            vc.u8().cast(),
            is_f16,
            sp.i(),
            pp.i(),
            n as i32,
            kv_dim as i32,
            cap,
        )
    });
    let (qp, op, pa) = (P::of(q), P::mut_of(&mut out), P::mut_of(&mut part));
    launch(
        (N_HEAD as u32, n as u32, n_split as u32),
        (128, 1, 1),
        (2 * HEAD_DIM + 64) * 4,
        &|| unsafe {
            attn(
                qp.f(),
                kc.u8().cast(),
                vc.u8().cast(),
                is_f16,
                op.f(),
                pa.f(),
                sp.i(),
                pp.i(),
                N_HEAD as i32,
                N_HEAD_KV as i32,
                HEAD_DIM as i32,
                kv_dim as i32,
                cap,
                case.window.map_or(0, |w| w as i32),
                p.scale,
                case.softcap.unwrap_or(0.0),
                case.split_len as i32,
                sinks_p as *const f32,
            )
        },
    );
    if n_split > 1 {
        launch((N_HEAD as u32, n as u32, 1), (128, 1, 1), 0, &|| unsafe {
            merge(
                pa.f(),
                op.f(),
                N_HEAD as i32,
                HEAD_DIM as i32,
                n_split as i32,
                sinks_p as *const f32,
            )
        });
    }
    out
}
