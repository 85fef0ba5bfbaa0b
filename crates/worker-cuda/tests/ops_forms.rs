//! The CUDA backend's prompt and cache forms against the CPU backend on a
//! real device: the delta rule's chunked form over long prompts, and
//! Gemma 4's layered cache (rows of several widths, layers that read an
//! earlier layer's). Needs a GPU: ignored by default, run by
//! `scripts/gpu-check.sh` with `--ignored`.

mod common;

use common::layered::{batches, layered_step, spec};
use common::*;
use worker_compute::cpu::CpuBackend;
use worker_compute::{Backend, DeltaNetParams, KvType};

fn cpu() -> CpuBackend {
    CpuBackend::new(2).expect("cpu backend")
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn long_prompts_of_recurrent_layers_match_the_cpu() {
    // The delta rule's chunked form (tests/common: prompts of 150 tokens,
    // a state continued mid-prompt and one restored) on both backends, in
    // Qwen 3.5's shape (16 key and 32 value heads of 128).
    let (c, g) = (cpu(), gpu());
    let p = DeltaNetParams {
        n_k_heads: 16,
        n_v_heads: 32,
        head_dim: 128,
        eps: 1e-6,
    };
    let (file, shape) = recurrent_file(&p, 4);
    let (wc, ac) = (weight(&c, &file, "conv"), weight(&c, &file, "a"));
    let (wg, ag) = (weight(&g, &file, "conv"), weight(&g, &file, "a"));
    let spec = long_recurrent_spec(shape);
    let (mut kc, mut kg) = (c.kv(&spec).expect("kv"), g.kv(&spec).expect("kv"));
    for (bi, step) in long_recurrent_script().iter().enumerate() {
        let case = format!("step {bi}");
        let want = recurrent_step(&c, &mut kc, [&wc, &ac], &p, (bi, step)).expect("cpu");
        let got = recurrent_step(&g, &mut kg, [&wg, &ag], &p, (bi, step)).expect("gpu");
        if let (Some([gc, gd]), Some([wc, wd])) = (got, want) {
            assert_close(&format!("ssm_conv {case}"), &gc, &wc, 1e-6);
            assert_close(&format!("delta_net {case}"), &gd, &wd, 1e-6);
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn layered_caches_match_the_cpu() {
    // Gemma 4's cache (tests/common/layered.rs): rows of several widths,
    // layers that read an earlier layer's rows, sequences interleaved,
    // the windowed rings wrapping; the cache costs exactly what its spec
    // counts.
    let (c, g) = (cpu(), gpu());
    for ty in [KvType::F16, KvType::F32] {
        let spec = spec(ty);
        drop(g.kv(&spec).expect("kv"));
        let before = g.allocated_bytes();
        let (mut kc, mut kg) = (c.kv(&spec).expect("kv"), g.kv(&spec).expect("kv"));
        assert_eq!(g.allocated_bytes() - before, spec.bytes(), "{ty:?}");
        for (bi, tokens) in batches().iter().enumerate() {
            let want = layered_step(&c, &mut kc, bi, tokens).expect("cpu");
            let got = layered_step(&g, &mut kg, bi, tokens).expect("gpu");
            for (il, (gl, wl)) in got.iter().zip(&want).enumerate() {
                assert_close(&format!("{ty:?} batch {bi} layer {il}"), gl, wl, 1e-6);
            }
        }
    }
}
