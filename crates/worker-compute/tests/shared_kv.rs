//! A KV cache whose layers differ in width, and layers that read an
//! earlier layer's rows instead of keeping their own: attention over the
//! shared rows is the source layer's attention, bit for bit, and a layout
//! that cannot work is refused.

use worker_compute::cpu::CpuBackend;
use worker_compute::{AttnParams, Backend, ComputeError, KvSpec, KvType, TokenPos};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Four layers: a windowed one two heads of 32 wide, a full one of one
/// head of 64, and two that read them (layer 2 the windowed, layer 3 the
/// full one).
fn spec(ty: KvType) -> KvSpec {
    KvSpec {
        n_seq: 2,
        n_ctx: 32,
        layer_windows: vec![Some(4), None, Some(4), None],
        kv_dim: 64,
        max_batch: 8,
        ty,
        layer_states: Vec::new(),
        layer_dims: vec![64, 64, 64, 64],
        layer_sources: vec![None, None, Some(0), Some(1)],
    }
}

fn params(n_head_kv: usize, head_dim: usize, window: Option<u32>) -> AttnParams {
    AttnParams {
        n_head: 4,
        n_head_kv,
        head_dim,
        scale: 0.125,
        window,
        softcap: None,
    }
}

#[test]
fn a_layer_that_reads_another_attends_over_its_rows() {
    let c = CpuBackend::new(2).expect("backend");
    for ty in [KvType::F32, KvType::F16] {
        let spec = spec(ty);
        assert!(!spec.is_uniform() && c.layered_kv());
        let mut kv = c.kv(&spec).expect("kv");
        let n = 8;
        let tokens: Vec<TokenPos> = (0..n as u32).map(|pos| TokenPos { seq: 1, pos }).collect();
        for (layer, source, p) in [(0, 2, params(2, 32, Some(4))), (1, 3, params(1, 64, None))] {
            let q_dim = p.n_head * p.head_dim;
            let q = values(n * q_dim, 10 + layer as u64);
            let k = values(n * 64, 20 + layer as u64);
            let v = values(n * 64, 30 + layer as u64);
            let mut own = c.buf(n * q_dim).expect("buf");
            c.attention(&mut kv, layer, &tokens, &q, &k, &v, &p, None, &mut own)
                .expect("attention");
            let mut shared = c.buf(n * q_dim).expect("buf");
            c.attention_shared(&mut kv, source, &tokens, &q, &p, None, &mut shared)
                .expect("shared attention");
            assert_eq!(
                own.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                shared.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{ty:?}: layer {source} reading layer {layer}"
            );
            // A layer that reads another's rows stores none of its own.
            let r = c.attention(&mut kv, source, &tokens, &q, &k, &v, &p, None, &mut own);
            assert!(matches!(r, Err(ComputeError::Shape(_))), "{r:?}");
        }
        // A layer with rows of its own has nothing to share from.
        let p = params(2, 32, Some(4));
        let mut out = c.buf(n * 128).expect("buf");
        let r = c.attention_shared(&mut kv, 0, &tokens, &values(n * 128, 1), &p, None, &mut out);
        assert!(matches!(r, Err(ComputeError::Shape(_))), "{r:?}");
    }
}

#[test]
fn widths_per_layer_size_the_cache_and_shared_layers_hold_nothing() {
    let mut s = spec(KvType::F32);
    s.layer_dims = vec![64, 32, 64, 32];
    s.layer_windows = vec![None, None, None, None];
    s.check_layout().expect("a valid layout");
    // Two sequences of 32 positions, K and V, f32: 64- and 32-wide layers.
    assert_eq!(s.bytes(), 2 * 32 * 2 * 4 * (64 + 32));
    assert_eq!(s.layer_len_of(1).expect("len"), 2 * 32 * 32);
    assert_eq!(s.layer_len_of(3).expect("len"), 0);
    let c = CpuBackend::new(1).expect("backend");
    let mut kv = c.kv(&s).expect("kv");
    // Layer 1's rows are 32 wide: one head of 32.
    let tokens = [TokenPos { seq: 0, pos: 0 }];
    let p = params(1, 32, None);
    let (q, kv_row) = (values(128, 3), values(32, 4));
    let mut out = c.buf(128).expect("buf");
    c.attention(
        &mut kv, 1, &tokens, &q, &kv_row, &kv_row, &p, None, &mut out,
    )
    .expect("a 32-wide layer");
    // Heads that do not fill the layer's width are refused.
    let wide = params(2, 32, None);
    let r = c.attention(
        &mut kv, 1, &tokens, &q, &kv_row, &kv_row, &wide, None, &mut out,
    );
    assert!(matches!(r, Err(ComputeError::Shape(_))), "{r:?}");
}

#[test]
fn layouts_that_cannot_share_are_refused() {
    let bad = |edit: &dyn Fn(&mut KvSpec)| {
        let mut s = spec(KvType::F32);
        edit(&mut s);
        s.check_layout()
    };
    let refused = [
        // A later layer.
        bad(&|s| s.layer_sources = vec![Some(2), None, None, None]),
        // A layer that itself reads another's.
        bad(&|s| s.layer_sources = vec![None, None, Some(0), Some(2)]),
        // Another window.
        bad(&|s| s.layer_sources = vec![None, None, Some(1), None]),
        // Another width.
        bad(&|s| s.layer_dims = vec![64, 64, 32, 64]),
        // Wider than the widest.
        bad(&|s| s.layer_dims = vec![128, 64, 64, 64]),
        // A list per layer of the wrong length.
        bad(&|s| s.layer_sources = vec![None]),
    ];
    for (i, r) in refused.iter().enumerate() {
        assert!(matches!(r, Err(ComputeError::Shape(_))), "case {i}: {r:?}");
    }
    let c = CpuBackend::new(1).expect("backend");
    let mut s = spec(KvType::F32);
    s.layer_sources = vec![Some(1), None, None, None];
    assert!(c.kv(&s).is_err(), "the cache refuses it too");
}
