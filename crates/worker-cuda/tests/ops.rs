//! Every CUDA op against the CPU backend on random inputs, by normalized
//! MSE (the way llama.cpp's test-backend-ops checks a backend): 1e-6 for
//! f32 paths, 1e-4 where the CPU quantizes activations to 8 bits or the
//! cache holds f16. Needs a GPU: ignored by default, run by
//! `scripts/gpu-check.sh` with `--ignored`.

mod common;

use common::*;
use worker_compute::cpu::CpuBackend;
use worker_compute::{
    Activation, AttnParams, Backend, ComputeError, DeltaNetParams, KvSpec, KvType, TokenPos,
};
use worker_gguf::GgmlType;
use worker_models::synthetic::random_matrix;

fn cpu() -> CpuBackend {
    CpuBackend::new(2).expect("cpu backend")
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn matmul_and_get_rows_match_the_cpu_for_every_type() {
    let (c, g) = (cpu(), gpu());
    let (rows, cols) = (160, 512);
    for (i, &ty) in TYPES.iter().enumerate() {
        let bytes = random_matrix(ty, rows, cols, 11 + i as u64).expect("matrix");
        let file = file_with(vec![("w", ty, vec![cols as u64, rows as u64], bytes)]);
        let (wc, wg) = (weight(&c, &file, "w"), weight(&g, &file, "w"));
        // 1, 3 and 8 tokens take the small-batch kernel; 24 takes cuBLAS.
        for n in [1usize, 3, 8, 24] {
            let x = random(n * cols, 7 + n as u64, 1.0);
            let (xc, xg) = (buf_with(&c, &x), buf_with(&g, &x));
            let (mut oc, mut og) = (c.buf(n * rows).expect("buf"), g.buf(n * rows).expect("buf"));
            c.matmul(&wc, &xc, n, &mut oc).expect("cpu matmul");
            g.matmul(&wg, &xg, n, &mut og).expect("gpu matmul");
            let bound = if matches!(ty, GgmlType::F32) {
                1e-6
            } else {
                1e-4
            };
            assert_close(
                &format!("matmul {ty} n={n}"),
                &read(&g, &og, n * rows),
                &read(&c, &oc, n * rows),
                bound,
            );
        }
        let ids = [0u32, 5, 159, 5, 77];
        let (mut oc, mut og) = (
            c.buf(ids.len() * cols).expect("buf"),
            g.buf(ids.len() * cols).expect("buf"),
        );
        c.get_rows(&wc, &ids, &mut oc).expect("cpu get_rows");
        g.get_rows(&wg, &ids, &mut og).expect("gpu get_rows");
        assert_close(
            &format!("get_rows {ty}"),
            &read(&g, &og, ids.len() * cols),
            &read(&c, &oc, ids.len() * cols),
            1e-10,
        );
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn q8_decode_matches_the_cpu() {
    // LLORCH_CUDA_DECODE=q8: activations quantized to 8 bits per 32,
    // integer dot products; 12 tokens take two passes of the kernel.
    let (c, g) = (cpu(), gpu().with_q8_decode(true));
    let (rows, cols) = (96, 512);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
        GgmlType::MXFP4,
    ] {
        let bytes = worker_models::synthetic::random_matrix(ty, rows, cols, 5).expect("matrix");
        let file = file_with(vec![("w", ty, vec![cols as u64, rows as u64], bytes)]);
        let (wc, wg) = (weight(&c, &file, "w"), weight(&g, &file, "w"));
        for n in [1usize, 3, 8, 12] {
            let x = random(n * cols, 40 + n as u64, 2.0);
            let (xc, xg) = (buf_with(&c, &x), buf_with(&g, &x));
            let (mut oc, mut og) = (c.buf(n * rows).expect("buf"), g.buf(n * rows).expect("buf"));
            c.matmul(&wc, &xc, n, &mut oc).expect("cpu matmul");
            g.matmul(&wg, &xg, n, &mut og).expect("gpu matmul");
            assert_close(
                &format!("q8 decode {ty} n={n}"),
                &read(&g, &og, n * rows),
                &read(&c, &oc, n * rows),
                1e-4,
            );
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn row_and_element_ops_match_the_cpu() {
    let (c, g) = (cpu(), gpu());
    let (rows, dim) = (6, 320);
    let n = rows * dim;
    let x = random(n, 1, 3.0);
    let other = random(n, 2, 2.0);
    let wv = random(dim, 3, 1.5);
    let bv = random(dim, 4, 0.5);
    let file = file_with(vec![
        (
            "w",
            GgmlType::F32,
            vec![dim as u64],
            wv.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "b",
            GgmlType::F32,
            vec![dim as u64],
            bv.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    ]);
    let (wc, wg) = (weight(&c, &file, "w"), weight(&g, &file, "w"));
    let (bc, bg) = (weight(&c, &file, "b"), weight(&g, &file, "b"));

    type Op<'a, B> = Box<dyn Fn(&B, &mut <B as Backend>::Buf, &<B as Backend>::Buf) + 'a>;
    let check = |name: &str, fc: Op<'_, CpuBackend>, fg: Op<'_, worker_cuda::CudaBackend>| {
        let (mut xc, oc) = (buf_with(&c, &x), buf_with(&c, &other));
        let (mut xg, og) = (buf_with(&g, &x), buf_with(&g, &other));
        fc(&c, &mut xc, &oc);
        fg(&g, &mut xg, &og);
        assert_close(name, &read(&g, &xg, n), &read(&c, &xc, n), 1e-6);
    };
    check(
        "rms_norm",
        Box::new(|b, x, _| b.rms_norm(x, rows, dim, Some(&wc), 1e-6).expect("op")),
        Box::new(|b, x, _| b.rms_norm(x, rows, dim, Some(&wg), 1e-6).expect("op")),
    );
    check(
        "rms_norm without weight",
        Box::new(|b, x, _| b.rms_norm(x, rows, dim, None, 1e-5).expect("op")),
        Box::new(|b, x, _| b.rms_norm(x, rows, dim, None, 1e-5).expect("op")),
    );
    check(
        "layer_norm",
        Box::new(|b, x, _| {
            b.layer_norm(x, rows, dim, &wc, Some(&bc), 1e-5)
                .expect("op")
        }),
        Box::new(|b, x, _| {
            b.layer_norm(x, rows, dim, &wg, Some(&bg), 1e-5)
                .expect("op")
        }),
    );
    check(
        "add_bias",
        Box::new(|b, x, _| b.add_bias(x, rows, dim, &bc).expect("op")),
        Box::new(|b, x, _| b.add_bias(x, rows, dim, &bg).expect("op")),
    );
    check(
        "scale",
        Box::new(|b, x, _| b.scale(x, n, 0.37).expect("op")),
        Box::new(|b, x, _| b.scale(x, n, 0.37).expect("op")),
    );
    check(
        "add",
        Box::new(|b, x, o| b.add(x, o, n).expect("op")),
        Box::new(|b, x, o| b.add(x, o, n).expect("op")),
    );
    for act in [
        Activation::Silu,
        Activation::Gelu,
        Activation::SwigluOai,
        Activation::Sigmoid,
    ] {
        check(
            &format!("glu {act:?}"),
            Box::new(move |b, x, o| b.glu(x, o, n, act).expect("op")),
            Box::new(move |b, x, o| b.glu(x, o, n, act).expect("op")),
        );
        check(
            &format!("act {act:?}"),
            Box::new(move |b, x, _| b.act(x, n, act).expect("op")),
            Box::new(move |b, x, _| b.act(x, n, act).expect("op")),
        );
    }
    check(
        "softcap",
        Box::new(|b, x, _| b.softcap(x, n, 2.5).expect("op")),
        Box::new(|b, x, _| b.softcap(x, n, 2.5).expect("op")),
    );

    // Column copies and row gathers into a second buffer.
    let (xc, xg) = (buf_with(&c, &x), buf_with(&g, &x));
    let (mut dc, mut dg) = (c.buf(n).expect("buf"), g.buf(n).expect("buf"));
    c.copy_cols(&xc, rows, dim, 64, 100, &mut dc).expect("op");
    g.copy_cols(&xg, rows, dim, 64, 100, &mut dg).expect("op");
    assert_close(
        "copy_cols",
        &read(&g, &dg, rows * 100),
        &read(&c, &dc, rows * 100),
        0.0,
    );
    let (mut ic, mut ig) = (Vec::new(), Vec::new());
    c.argmax_rows(&xc, rows, dim, &mut ic).expect("op");
    g.argmax_rows(&xg, rows, dim, &mut ig).expect("op");
    assert_eq!(ig, ic, "argmax_rows");
    c.gather_rows(&xc, &[5, 0, 3], dim, &mut dc).expect("op");
    g.gather_rows(&xg, &[5, 0, 3], dim, &mut dg).expect("op");
    assert_close(
        "gather_rows",
        &read(&g, &dg, 3 * dim),
        &read(&c, &dc, 3 * dim),
        0.0,
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn top_k_matches_the_cpu_on_vocabulary_rows() {
    let (c, g) = (cpu(), gpu());
    // Gemma 3's vocabulary, with ties on a coarse grid.
    let (rows, dim) = (3, 262_144);
    let x: Vec<f32> = random(rows * dim, 21, 8.0)
        .iter()
        .map(|v| (v * 16.0).round() / 16.0)
        .collect();
    let (xc, xg) = (buf_with(&c, &x), buf_with(&g, &x));
    // One sorting pass is not enough for any of these; 300 is chosen on
    // the host.
    for k in [1, 40, 256, 300] {
        let (mut tc, mut tg) = (Vec::new(), Vec::new());
        c.top_k_rows(&xc, rows, dim, k, &mut tc).expect("cpu top-k");
        g.top_k_rows(&xg, rows, dim, k, &mut tg).expect("gpu top-k");
        assert_eq!(tg.len(), rows * k, "top-k {k}");
        let same = tg
            .iter()
            .zip(&tc)
            .all(|(a, b)| a.0 == b.0 && a.1.to_bits() == b.1.to_bits());
        assert!(
            same,
            "top-k {k}: the device's candidates differ from the host's"
        );
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn draws_match_the_cpu_on_vocabulary_rows() {
    let (c, g) = (cpu(), gpu());
    let (rows, dim) = (4, 262_144);
    let x = random(rows * dim, 31, 6.0);
    let (xc, xg) = (buf_with(&c, &x), buf_with(&g, &x));
    let temps = [0.7f32, 1.0, 1.8, 0.0];
    let mut differ = 0;
    for k in 0..25 {
        let us: Vec<f32> = (0..rows)
            .map(|r| ((k * 37 + r * 11) % 100) as f32 / 100.0)
            .collect();
        let (mut dc, mut dg) = (Vec::new(), Vec::new());
        c.draw_rows(&xc, rows, dim, &temps, &us, &mut dc)
            .expect("cpu draw");
        g.draw_rows(&xg, rows, dim, &temps, &us, &mut dg)
            .expect("gpu draw");
        assert_eq!(dg[3], dc[3], "temperature 0 is the argmax");
        // Sums in another order may move a draw at a boundary by one id.
        for r in 0..rows {
            if dg[r] != dc[r] {
                differ += 1;
                assert!(
                    dg[r].abs_diff(dc[r]) <= 1,
                    "row {r}: {} vs {}",
                    dg[r],
                    dc[r]
                );
            }
        }
    }
    assert!(differ <= 2, "{differ} of 100 draws differ from the CPU's");
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn rope_matches_the_cpu_in_both_styles() {
    let (c, g) = (cpu(), gpu());
    let (n_head, head_dim) = (4, 64);
    let tokens: Vec<TokenPos> = [0u32, 1, 17, 300, 4095]
        .iter()
        .map(|&pos| TokenPos { seq: 0, pos })
        .collect();
    let n = tokens.len() * n_head * head_dim;
    let x = random(n, 9, 1.0);
    for p in rope_cases() {
        let (mut xc, mut xg) = (buf_with(&c, &x), buf_with(&g, &x));
        c.rope(&mut xc, &tokens, n_head, head_dim, &p)
            .expect("cpu rope");
        g.rope(&mut xg, &tokens, n_head, head_dim, &p)
            .expect("gpu rope");
        assert_close(
            &format!("rope {p:?}"),
            &read(&g, &xg, n),
            &read(&c, &xc, n),
            1e-6,
        );
    }
}

/// A file holding `sinks`, one attention-sink logit per head: some far
/// above the scores, some far below, some among them.
fn sinks_file(n_head: usize) -> std::sync::Arc<worker_gguf::GgufFile> {
    let values: Vec<f32> = (0..n_head)
        .map(|h| [0.7, 6.0, -1.5, -40.0][h % 4])
        .collect();
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    file_with(vec![("sinks", GgmlType::F32, vec![n_head as u64], bytes)])
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn attention_matches_the_cpu() {
    let (c, g) = (cpu(), gpu());
    let (n_head, n_head_kv, head_dim) = (8, 2, 64);
    let (q_dim, kv_dim) = (n_head * head_dim, n_head_kv * head_dim);
    let file = sinks_file(n_head);
    let (sinks_c, sinks_g) = (weight(&c, &file, "sinks"), weight(&g, &file, "sinks"));
    for (ty, window, softcap, bound, sinks) in [
        (KvType::F32, None, None, 1e-6, false),
        (KvType::F16, None, None, 1e-4, false),
        (KvType::F16, Some(5u32), None, 1e-4, false),
        (KvType::F32, None, Some(30.0f32), 1e-6, false),
        (KvType::F32, None, None, 1e-6, true),
        (KvType::F16, Some(5u32), None, 1e-4, true),
    ] {
        let (sc, sg) = (sinks.then_some(&sinks_c), sinks.then_some(&sinks_g));
        let spec = KvSpec {
            n_seq: 2,
            n_ctx: 64,
            layer_windows: vec![window, None],
            kv_dim,
            max_batch: 16,
            ty,
            layer_states: Vec::new(),
            layer_dims: Vec::new(),
            layer_sources: Vec::new(),
        };
        let p = AttnParams {
            n_head,
            n_head_kv,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window,
            softcap,
        };
        let (mut kc, mut kg) = (c.kv(&spec).expect("kv"), g.kv(&spec).expect("kv"));
        let batches = attention_batches();
        for (bi, tokens) in batches.iter().enumerate() {
            let n = tokens.len();
            let q = random(n * q_dim, 100 + bi as u64, 1.0);
            let k = random(n * kv_dim, 200 + bi as u64, 1.0);
            let v = random(n * kv_dim, 300 + bi as u64, 1.0);
            let (qc, kc_, vc) = (buf_with(&c, &q), buf_with(&c, &k), buf_with(&c, &v));
            let (qg, kg_, vg) = (buf_with(&g, &q), buf_with(&g, &k), buf_with(&g, &v));
            let (mut oc, mut og) = (
                c.buf(n * q_dim).expect("buf"),
                g.buf(n * q_dim).expect("buf"),
            );
            c.attention(&mut kc, 0, tokens, &qc, &kc_, &vc, &p, sc, &mut oc)
                .expect("cpu attention");
            g.attention(&mut kg, 0, tokens, &qg, &kg_, &vg, &p, sg, &mut og)
                .expect("gpu attention");
            assert_close(
                &format!(
                    "attention {ty:?} window={window:?} softcap={softcap:?} sinks={sinks} batch {bi}"
                ),
                &read(&g, &og, n * q_dim),
                &read(&c, &oc, n * q_dim),
                bound,
            );
        }
        let late = [TokenPos { seq: 0, pos: 64 }];
        let (q, o) = (g.buf(q_dim).expect("buf"), g.buf(kv_dim).expect("buf"));
        let mut out = g.buf(q_dim).expect("buf");
        assert!(matches!(
            g.attention(&mut kg, 0, &late, &q, &o, &o, &p, None, &mut out),
            Err(ComputeError::ContextFull { .. })
        ));
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn long_context_decode_attention_matches_the_cpu() {
    // Two sequences of 1,000 and 1,500 positions, then decode steps of
    // both: the decode batches split their keys over several blocks (a
    // different number of keys per token, so some splits are empty for
    // the shorter one) and merge them; layer 1 has a window of 300 and
    // attention sinks.
    let (c, g) = (cpu(), gpu());
    let (n_head, n_head_kv, head_dim) = (8, 2, 128);
    let file = sinks_file(n_head);
    let (sinks_c, sinks_g) = (weight(&c, &file, "sinks"), weight(&g, &file, "sinks"));
    let (q_dim, kv_dim) = (n_head * head_dim, n_head_kv * head_dim);
    let lens = [1000u32, 1500];
    for (ty, bound) in [(KvType::F32, 1e-6), (KvType::F16, 1e-4)] {
        let spec = KvSpec {
            n_seq: 2,
            n_ctx: 2048,
            layer_windows: vec![None, Some(300)],
            kv_dim,
            max_batch: 500,
            ty,
            layer_states: Vec::new(),
            layer_dims: Vec::new(),
            layer_sources: Vec::new(),
        };
        let (mut kc, mut kg) = (c.kv(&spec).expect("kv"), g.kv(&spec).expect("kv"));
        let mut batches: Vec<Vec<TokenPos>> = Vec::new();
        for (seq, &len) in lens.iter().enumerate() {
            for start in (0..len).step_by(500) {
                batches.push(
                    (start..(start + 500).min(len))
                        .map(|pos| TokenPos { seq, pos })
                        .collect(),
                );
            }
        }
        for step in 0..3u32 {
            batches.push(
                lens.iter()
                    .enumerate()
                    .map(|(seq, &len)| TokenPos {
                        seq,
                        pos: len + step,
                    })
                    .collect(),
            );
        }
        for (layer, window) in [(0usize, None), (1, Some(300u32))] {
            let p = AttnParams {
                n_head,
                n_head_kv,
                head_dim,
                scale: 1.0 / (head_dim as f32).sqrt(),
                window,
                softcap: None,
            };
            for (bi, tokens) in batches.iter().enumerate() {
                let n = tokens.len();
                let seed = 1000 * layer as u64 + bi as u64;
                let q = random(n * q_dim, 400 + seed, 1.0);
                let k = random(n * kv_dim, 500 + seed, 1.0);
                let v = random(n * kv_dim, 600 + seed, 1.0);
                let (qc, kc_, vc) = (buf_with(&c, &q), buf_with(&c, &k), buf_with(&c, &v));
                let (qg, kg_, vg) = (buf_with(&g, &q), buf_with(&g, &k), buf_with(&g, &v));
                let (mut oc, mut og) = (
                    c.buf(n * q_dim).expect("buf"),
                    g.buf(n * q_dim).expect("buf"),
                );
                let (sc, sg) = match layer {
                    1 => (Some(&sinks_c), Some(&sinks_g)),
                    _ => (None, None),
                };
                c.attention(&mut kc, layer, tokens, &qc, &kc_, &vc, &p, sc, &mut oc)
                    .expect("cpu attention");
                g.attention(&mut kg, layer, tokens, &qg, &kg_, &vg, &p, sg, &mut og)
                    .expect("gpu attention");
                assert_close(
                    &format!(
                        "long-context attention {ty:?} window={window:?} batch {bi} ({n} tokens)"
                    ),
                    &read(&g, &og, n * q_dim),
                    &read(&c, &oc, n * q_dim),
                    bound,
                );
            }
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn recurrent_layers_match_the_cpu() {
    // The script of tests/common (sequences interleaved in a batch, prefill
    // chunks, single-token steps, a kept state restored, refused gaps, a
    // cleared sequence, a restart at 0) on both backends: grouped heads of
    // 64, then Qwen 3.5's shape (16 key and 32 value heads of 128).
    let (c, g) = (cpu(), gpu());
    for (n_k_heads, n_v_heads, head_dim) in [(2, 4, 64), (16, 32, 128)] {
        let p = DeltaNetParams {
            n_k_heads,
            n_v_heads,
            head_dim,
            eps: 1e-6,
        };
        let (file, shape) = recurrent_file(&p, 4);
        let (wc, ac) = (weight(&c, &file, "conv"), weight(&c, &file, "a"));
        let (wg, ag) = (weight(&g, &file, "conv"), weight(&g, &file, "a"));
        let spec = recurrent_spec(shape);
        // The first cache sizes the staging arrays; the second costs the
        // states (live and kept) and the attention layer's rows, exactly.
        drop(g.kv(&spec).expect("kv"));
        let before = g.allocated_bytes();
        let (mut kc, mut kg) = (c.kv(&spec).expect("kv"), g.kv(&spec).expect("kv"));
        assert_eq!(g.allocated_bytes() - before, spec.bytes(), "{p:?}");
        for (bi, step) in recurrent_script().iter().enumerate() {
            let case = format!("{p:?} step {bi} {step:?}");
            let want = recurrent_step(&c, &mut kc, [&wc, &ac], &p, (bi, step));
            let got = recurrent_step(&g, &mut kg, [&wg, &ag], &p, (bi, step));
            match (got, want) {
                (Ok(Some([gc, gd])), Ok(Some([wc, wd]))) => {
                    assert_close(&format!("ssm_conv {case}"), &gc, &wc, 1e-6);
                    assert_close(&format!("delta_net {case}"), &gd, &wd, 1e-6);
                }
                (Ok(None), Ok(None)) => {}
                (Err(e), Err(w)) => assert_eq!(e.to_string(), w.to_string(), "{case}"),
                (e, w) => panic!("{case}: gpu {e:?}, cpu {w:?}"),
            }
        }
        // The recurrent layer keeps no K/V rows to attend over.
        let attn = AttnParams {
            n_head: 1,
            n_head_kv: 1,
            head_dim: 64,
            scale: 0.125,
            window: None,
            softcap: None,
        };
        let one = [TokenPos { seq: 0, pos: 3 }];
        let (q, mut o) = (g.buf(64).expect("buf"), g.buf(64).expect("buf"));
        assert!(matches!(
            g.attention(&mut kg, 0, &one, &q, &q, &q, &attn, None, &mut o),
            Err(ComputeError::Shape(_))
        ));
        drop(kg);
        assert_eq!(g.allocated_bytes(), before + 2 * 64 * 4, "{p:?}");
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn memory_is_counted_and_returned_and_oom_is_an_error() {
    let g = gpu();
    let baseline = g.allocated_bytes();
    for i in 0..100 {
        let b = g.buf(1 << 20).expect("buffer");
        assert_eq!(g.allocated_bytes(), baseline + (4 << 20), "round {i}");
        drop(b);
    }
    assert_eq!(g.allocated_bytes(), baseline);
    let (free, _) = g.mem_info().expect("mem info");
    match g.buf((free as usize / 4).saturating_mul(4)) {
        Err(ComputeError::OutOfMemory { .. }) => {}
        other => panic!("an allocation beyond free VRAM gave {other:?}"),
    }
    assert_eq!(g.allocated_bytes(), baseline);
    // The device still works.
    let b = buf_with(&g, &[1.0, 2.0, 3.0]);
    assert_eq!(read(&g, &b, 3), vec![1.0, 2.0, 3.0]);
}
