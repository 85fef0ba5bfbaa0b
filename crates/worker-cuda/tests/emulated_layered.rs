//! A Gemma 4 cache under the kernel emulation (tests/host/cuda_host.h),
//! against the CPU backend: layers of different K/V widths (windowed
//! layers of narrow heads, a global layer of wide ones), and layers that
//! store nothing and read an earlier layer's rows
//! (`Backend::attention_shared`), this batch's included. Three sequences
//! interleaved in prefill batches, then single-token steps in changing
//! orders until the windowed rings wrap; both cache types, one split and
//! split keys merged. The host side is the backend's own: each layer's
//! rows (`rows_layout`) and the rows a layer reads (`rows_read`); the
//! launch shapes are those of src/attention.rs (tests/host/attention.rs).
//! Bounds as in tests/emulated_attention.rs: NMSE 1e-10 with an f32
//! cache, 1e-6 with an f16 one (the CPU rounds the final softmax weights
//! to f16, which split sums cannot).

mod common;
mod host;

use common::layered::{batches, inputs, layered_step, layers, spec};
use common::{assert_close, buf_with, random};
use host::attention::{Rows, attend};
use worker_compute::cpu::CpuBackend;
use worker_compute::{Backend, ComputeError, KvType, TokenPos};
use worker_cuda::{rows_layout, rows_read};

#[test]
fn layers_of_several_widths_and_shared_rows_match_the_cpu() {
    // An f32 cache with one split; an f16 one with the keys split every
    // 5 (the global layer's in up to four, merged).
    check(KvType::F32, 1 << 20, 1e-10);
    check(KvType::F16, 5, 1e-6);
}

/// Every batch through every layer in order, on the CPU backend and
/// under the emulation with the keys split every `split_len`.
fn check(ty: KvType, split_len: usize, bound: f64) {
    let c = CpuBackend::new(2).expect("cpu backend");
    let spec = spec(ty);
    let mut kvc = c.kv(&spec).expect("kv");
    let mut rows: Vec<Option<Rows>> = rows_layout(&spec)
        .expect("layout")
        .into_iter()
        .map(|r| r.map(|r| Rows::new(ty, spec.n_seq, r.capacity, r.dim)))
        .collect();
    assert_eq!(rows.iter().flatten().count(), 3, "three layers keep rows");
    for (bi, tokens) in batches().iter().enumerate() {
        let want = layered_step(&c, &mut kvc, bi, tokens).expect("cpu");
        for (il, (p, source)) in layers().iter().enumerate() {
            let case = format!("{ty:?} split {split_len}, batch {bi}, layer {il}");
            let [q, k, v] = inputs(p, bi, il, tokens.len());
            let shared = source.is_some();
            let read_from = rows_read(&spec, il, shared).expect("rows");
            assert_eq!(read_from, source.unwrap_or(il), "{case}");
            let layer_rows = rows[read_from].as_mut().expect("the rows read are kept");
            assert_eq!(layer_rows.dim, p.n_head_kv * p.head_dim, "{case}");
            let store = (!shared).then_some((&k[..], &v[..]));
            let got = attend(p, layer_rows, tokens, &q, store, split_len, None);
            assert_close(&case, &got, &want[il], bound);
        }
    }
}

#[test]
fn a_layer_called_the_wrong_way_is_refused_as_on_the_cpu() {
    // Storing into a layer that reads another's rows, reading another's
    // from one that keeps its own: the backend's refusal (`rows_read`)
    // says what the CPU's says.
    let c = CpuBackend::new(2).expect("cpu backend");
    let spec = spec(KvType::F32);
    let mut kvc = c.kv(&spec).expect("kv");
    let one = [TokenPos { seq: 0, pos: 0 }];
    for (il, (p, source)) in layers().iter().enumerate() {
        let q = buf_with(&c, &random(p.n_head * p.head_dim, 7, 1.0));
        let kv = buf_with(&c, &random(p.n_head_kv * p.head_dim, 8, 1.0));
        let mut o = c.buf(p.n_head * p.head_dim).expect("buf");
        let want = if source.is_some() {
            c.attention(&mut kvc, il, &one, &q, &kv, &kv, p, None, &mut o)
        } else {
            c.attention_shared(&mut kvc, il, &one, &q, p, None, &mut o)
        };
        let got = rows_read(&spec, il, source.is_none());
        match (got, want) {
            (Err(g @ ComputeError::Shape(_)), Err(w @ ComputeError::Shape(_))) => {
                assert_eq!(g.to_string(), w.to_string(), "layer {il}");
            }
            (g, w) => panic!("layer {il}: backend {g:?}, cpu {w:?}"),
        }
    }
}
