//! The CUDA kernels, run on the CPU under a small emulation of the CUDA
//! execution model (tests/host/cuda_host.h), against the CPU backend: the
//! decoders bit for bit, the matrix products, norms, RoPE, activations,
//! copies, and sampling (the KV store and attention are checked in
//! tests/emulated_attention.rs). This checks what every kernel computes on
//! machines without a GPU (CI); the same comparisons on a real device are
//! in tests/ops.rs.
//!
//! The launch shapes here are the ones the backend uses (src/backend.rs,
//! src/matmul.rs).

mod common;
mod host;

use common::{TYPES, assert_close, buf_with, file_with, random, read, weight};
use host::{P, kernel, launch, per_element};
use worker_compute::cpu::CpuBackend;
use worker_compute::{Activation, Backend, RopeStyle, TokenPos};
use worker_gguf::{GgmlType, dequantize};
use worker_models::synthetic::random_matrix;

fn cpu() -> CpuBackend {
    CpuBackend::new(2).expect("cpu backend")
}

#[test]
fn decoders_equal_the_reference_bit_for_bit() {
    type DqRows = unsafe extern "C" fn(i32, *const u8, i64, i32, i32, i32, *mut f32);
    let dq: DqRows = kernel("dq_rows");
    let (rows, cols) = (3, 512);
    for &ty in TYPES {
        // The code the backend passes for this type (src/weight.rs).
        let code = worker_cuda::type_code(ty).expect("a kernel type");
        let bytes = random_matrix(ty, rows, cols, 42 + code as u64).expect("matrix");
        let mut want = vec![0f32; rows * cols];
        dequantize(ty, &bytes, &mut want).expect("reference decode");
        let mut got = vec![0f32; rows * cols];
        let (w, o) = (P::of(&bytes), P::mut_of(&mut got));
        let row_bytes = (bytes.len() / rows) as i64;
        let (grid, block) = per_element(rows * cols / 32);
        // SAFETY: the arrays hold the rows the kernel decodes.
        launch(grid, block, 0, &|| unsafe {
            dq(code, w.u8(), row_bytes, 0, rows as i32, cols as i32, o.f())
        });
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{ty}: value {i}: {g} vs {w}");
        }
    }
}

#[test]
fn matrix_products_and_lookups_match_the_cpu() {
    type MmSmall = unsafe extern "C" fn(i32, *const u8, i64, i32, i32, *const f32, i32, *mut f32);
    type GetRows = unsafe extern "C" fn(i32, *const u8, i64, i32, *const i32, i32, *mut f32);
    let (mm, gr): (MmSmall, GetRows) = (kernel("mm_small"), kernel("get_rows"));
    let c = cpu();
    let (rows, cols) = (40, 256);
    for &ty in TYPES {
        // The code the backend passes for this type (src/weight.rs).
        let code = worker_cuda::type_code(ty).expect("a kernel type");
        let bytes = random_matrix(ty, rows, cols, 11 + code as u64).expect("matrix");
        let row_bytes = (bytes.len() / rows) as i64;
        let file = file_with(vec![(
            "w",
            ty,
            vec![cols as u64, rows as u64],
            bytes.clone(),
        )]);
        let wc = weight(&c, &file, "w");
        for n in [1usize, 3, 8] {
            let x = random(n * cols, 7 + n as u64, 1.0);
            let mut got = vec![0f32; n * rows];
            let (w, xp, o) = (P::of(&bytes), P::of(&x), P::mut_of(&mut got));
            // SAFETY: buffers sized as the kernel reads and writes them.
            launch(
                ((rows as u32).div_ceil(4), 1, 1),
                (128, 1, 1),
                0,
                &|| unsafe {
                    mm(
                        code,
                        w.u8(),
                        row_bytes,
                        rows as i32,
                        cols as i32,
                        xp.f(),
                        n as i32,
                        o.f(),
                    )
                },
            );
            let (xc, mut oc) = (buf_with(&c, &x), c.buf(n * rows).expect("buf"));
            c.matmul(&wc, &xc, n, &mut oc).expect("cpu matmul");
            let bound = if ty == GgmlType::F32 { 1e-6 } else { 1e-4 };
            assert_close(
                &format!("mm_small {ty} n={n}"),
                &got,
                &read(&c, &oc, n * rows),
                bound,
            );
        }
        let ids = [0i32, 5, 39, 5];
        let mut got = vec![0f32; ids.len() * cols];
        let (w, ip, o) = (P::of(&bytes), P::of(&ids), P::mut_of(&mut got));
        let (grid, block) = per_element(ids.len() * cols / 32);
        // SAFETY: as above.
        launch(grid, block, 0, &|| unsafe {
            gr(
                code,
                w.u8(),
                row_bytes,
                cols as i32,
                ip.i(),
                ids.len() as i32,
                o.f(),
            )
        });
        let mut oc = c.buf(ids.len() * cols).expect("buf");
        let uids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        c.get_rows(&wc, &uids, &mut oc).expect("cpu get_rows");
        assert_close(
            &format!("get_rows {ty}"),
            &got,
            &read(&c, &oc, ids.len() * cols),
            0.0,
        );
    }
}

#[test]
fn norms_activations_and_copies_match_the_cpu() {
    let c = cpu();
    let (rows, dim) = (5, 320);
    let n = rows * dim;
    let x = random(n, 1, 3.0);
    let other = random(n, 2, 2.0);
    let wv = random(dim, 3, 1.5);
    let bv = random(dim, 4, 0.5);
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let file = file_with(vec![
        ("w", GgmlType::F32, vec![dim as u64], f32_bytes(&wv)),
        ("b", GgmlType::F32, vec![dim as u64], f32_bytes(&bv)),
    ]);
    let (wc, bc) = (weight(&c, &file, "w"), weight(&c, &file, "b"));
    // The CPU result of `op` applied to x (and `other`).
    let on_cpu = |op: &dyn Fn(&mut Vec<f32>, &Vec<f32>)| {
        let (mut xc, oc) = (buf_with(&c, &x), buf_with(&c, &other));
        op(&mut xc, &oc);
        read(&c, &xc, n)
    };

    type RmsNorm = unsafe extern "C" fn(*mut f32, i32, *const f32, f32);
    type LayerNorm = unsafe extern "C" fn(*mut f32, i32, *const f32, *const f32, f32);
    type Unary = unsafe extern "C" fn(*mut f32, i64, f32);
    type Binary = unsafe extern "C" fn(*mut f32, *const f32, i64);
    type AddBias = unsafe extern "C" fn(*mut f32, *const f32, i64, i32);
    type Act = unsafe extern "C" fn(*mut f32, i64, i32);
    type Glu = unsafe extern "C" fn(*mut f32, *const f32, i64, i32);

    let mut g = x.clone();
    let (gp, wp, bp, op) = (P::mut_of(&mut g), P::of(&wv), P::of(&bv), P::of(&other));
    let rms: RmsNorm = kernel("rms_norm");
    // SAFETY (every launch below): buffers hold the rows the kernel touches.
    launch((rows as u32, 1, 1), (256, 1, 1), 0, &|| unsafe {
        rms(gp.f(), dim as i32, wp.f(), 1e-6)
    });
    let want = on_cpu(&|xc, _| c.rms_norm(xc, rows, dim, Some(&wc), 1e-6).expect("op"));
    assert_close("rms_norm", &g, &want, 1e-12);

    let mut g = x.clone();
    let gp = P::mut_of(&mut g);
    launch((rows as u32, 1, 1), (256, 1, 1), 0, &|| unsafe {
        rms(gp.f(), dim as i32, std::ptr::null(), 1e-5)
    });
    let want = on_cpu(&|xc, _| c.rms_norm(xc, rows, dim, None, 1e-5).expect("op"));
    assert_close("rms_norm without weight", &g, &want, 1e-12);

    let ln: LayerNorm = kernel("layer_norm");
    let mut g = x.clone();
    let gp = P::mut_of(&mut g);
    launch((rows as u32, 1, 1), (256, 1, 1), 0, &|| unsafe {
        ln(gp.f(), dim as i32, wp.f(), bp.f(), 1e-5)
    });
    let want = on_cpu(&|xc, _| {
        c.layer_norm(xc, rows, dim, &wc, Some(&bc), 1e-5)
            .expect("op")
    });
    assert_close("layer_norm", &g, &want, 1e-12);

    let (grid, block) = per_element(n);
    let ab: AddBias = kernel("add_bias");
    let mut g = x.clone();
    let gp = P::mut_of(&mut g);
    launch(grid, block, 0, &|| unsafe {
        ab(gp.f(), bp.f(), rows as i64, dim as i32)
    });
    let want = on_cpu(&|xc, _| c.add_bias(xc, rows, dim, &bc).expect("op"));
    assert_close("add_bias", &g, &want, 0.0);

    for (name, f) in [("scale_f32", 0.37f32), ("softcap_f32", 2.5)] {
        let k: Unary = kernel(name);
        let mut g = x.clone();
        let gp = P::mut_of(&mut g);
        launch(grid, block, 0, &|| unsafe { k(gp.f(), n as i64, f) });
        let want = if name == "scale_f32" {
            on_cpu(&|xc, _| c.scale(xc, n, f).expect("op"))
        } else {
            on_cpu(&|xc, _| c.softcap(xc, n, f).expect("op"))
        };
        assert_close(name, &g, &want, 1e-12);
    }

    let add: Binary = kernel("add_f32");
    let mut g = x.clone();
    let gp = P::mut_of(&mut g);
    launch(grid, block, 0, &|| unsafe { add(gp.f(), op.f(), n as i64) });
    assert_close(
        "add",
        &g,
        &on_cpu(&|xc, oc| c.add(xc, oc, n).expect("op")),
        0.0,
    );

    let (act, glu): (Act, Glu) = (kernel("act_f32"), kernel("glu_f32"));
    for a in [Activation::Silu, Activation::Gelu, Activation::Sigmoid] {
        // The code the backend passes for this activation (src/backend.rs).
        let code = worker_cuda::act_code(a);
        let mut g = x.clone();
        let gp = P::mut_of(&mut g);
        launch(grid, block, 0, &|| unsafe { act(gp.f(), n as i64, code) });
        assert_close(
            &format!("act {a:?}"),
            &g,
            &on_cpu(&|xc, _| c.act(xc, n, a).expect("op")),
            1e-12,
        );
        let mut g = x.clone();
        let gp = P::mut_of(&mut g);
        launch(grid, block, 0, &|| unsafe {
            glu(gp.f(), op.f(), n as i64, code)
        });
        assert_close(
            &format!("glu {a:?}"),
            &g,
            &on_cpu(&|xc, oc| c.glu(xc, oc, n, a).expect("op")),
            1e-12,
        );
    }

    // gpt-oss's SwiGLU on values past its clamps (gate above 7, up beyond
    // ±7) as well as within them.
    let code = worker_cuda::act_code(Activation::SwigluOai);
    let (wide, wide_up) = (random(n, 5, 12.0), random(n, 6, 10.0));
    let (mut g, mut g1) = (wide.clone(), wide.clone());
    let (gp, g1p, up) = (P::mut_of(&mut g), P::mut_of(&mut g1), P::of(&wide_up));
    launch(grid, block, 0, &|| unsafe {
        glu(gp.f(), up.f(), n as i64, code)
    });
    launch(grid, block, 0, &|| unsafe { act(g1p.f(), n as i64, code) });
    let (mut gc, uc) = (buf_with(&c, &wide), buf_with(&c, &wide_up));
    c.glu(&mut gc, &uc, n, Activation::SwigluOai).expect("op");
    assert_close("glu SwigluOai", &g, &read(&c, &gc, n), 1e-12);
    let mut ac = buf_with(&c, &wide);
    c.act(&mut ac, n, Activation::SwigluOai).expect("op");
    assert_close("act SwigluOai", &g1, &read(&c, &ac, n), 1e-12);

    type CopyCols = unsafe extern "C" fn(*const f32, i64, i32, i32, i32, *mut f32);
    type Gather = unsafe extern "C" fn(*const f32, *const i32, i32, i32, *mut f32);
    let (cc, ga): (CopyCols, Gather) = (kernel("copy_cols"), kernel("gather_rows"));
    let xp = P::of(&x);
    let mut g = vec![0f32; rows * 100];
    let gp = P::mut_of(&mut g);
    let (grid, block) = per_element(rows * 100);
    launch(grid, block, 0, &|| unsafe {
        cc(xp.f(), rows as i64, dim as i32, 64, 100, gp.f())
    });
    let (xc, mut dc) = (buf_with(&c, &x), c.buf(n).expect("buf"));
    c.copy_cols(&xc, rows, dim, 64, 100, &mut dc).expect("op");
    assert_close("copy_cols", &g, &read(&c, &dc, rows * 100), 0.0);
    let idx = [4i32, 0, 2];
    let ip = P::of(&idx);
    let mut g = vec![0f32; 3 * dim];
    let gp = P::mut_of(&mut g);
    let (grid, block) = per_element(3 * dim);
    launch(grid, block, 0, &|| unsafe {
        ga(xp.f(), ip.i(), 3, dim as i32, gp.f())
    });
    c.gather_rows(&xc, &[4, 0, 2], dim, &mut dc).expect("op");
    assert_close("gather_rows", &g, &read(&c, &dc, 3 * dim), 0.0);

    type ScaleRows = unsafe extern "C" fn(*mut f32, *const f32, i64, i32);
    let sr: ScaleRows = kernel("scale_rows_f32");
    let factors: Vec<f32> = (0..rows).map(|t| 1.0 + 0.25 * t as f32).collect();
    let fp = P::of(&factors);
    let mut g = x.clone();
    let gp = P::mut_of(&mut g);
    let (grid, block) = per_element(rows * dim);
    launch(grid, block, 0, &|| unsafe {
        sr(gp.f(), fp.f(), rows as i64, dim as i32)
    });
    let mut xc = buf_with(&c, &x);
    c.scale_rows(&mut xc, dim, &factors).expect("op");
    assert_close(
        "scale_rows",
        &g[..rows * dim],
        &read(&c, &xc, rows * dim),
        0.0,
    );

    type AddRows = unsafe extern "C" fn(*mut f32, *const f32, *const i32, i32, i32);
    let ar: AddRows = kernel("add_rows_f32");
    let src = random(2 * dim, 21, 1.0);
    let ridx = [3i32, 1];
    let (sp, rp) = (P::of(&src), P::of(&ridx));
    let mut g = x.clone();
    let gp = P::mut_of(&mut g);
    let (grid, block) = per_element(2 * dim);
    launch(grid, block, 0, &|| unsafe {
        ar(gp.f(), sp.f(), rp.i(), 2, dim as i32)
    });
    let (mut xc, sc) = (buf_with(&c, &x), buf_with(&c, &src));
    c.add_rows(&mut xc, &sc, &[3, 1], dim).expect("op");
    assert_close(
        "add_rows",
        &g[..rows * dim],
        &read(&c, &xc, rows * dim),
        0.0,
    );
}

#[test]
fn rope_matches_the_cpu_in_both_styles() {
    type Rope = unsafe extern "C" fn(
        *mut f32,
        *const i32,
        i32,
        i32,
        i32,
        i32,
        f32,
        f32,
        *const f32,
        f32,
        f32,
        f32,
        f32,
    );
    let rope: Rope = kernel("rope");
    let c = cpu();
    let (n_head, head_dim) = (3, 64);
    let positions = [0i32, 1, 17, 300, 4095];
    let tokens: Vec<TokenPos> = positions
        .iter()
        .map(|&p| TokenPos {
            seq: 0,
            pos: p as u32,
        })
        .collect();
    let n = tokens.len() * n_head * head_dim;
    let x = random(n, 9, 1.0);
    for p in common::rope_cases() {
        let n_rot = p.n_rot;
        let theta_scale = p.freq_base.powf(-2.0 / n_rot as f32);
        let mut g = x.clone();
        let (gp, pp) = (P::mut_of(&mut g), P::of(&positions));
        let ff = p.freq_factors.as_ref().map_or(0, |f| f.as_ptr() as usize);
        let neox = i32::from(p.style == RopeStyle::Neox);
        // SAFETY: x holds tokens x heads x head_dim values.
        launch(
            (tokens.len() as u32, n_head as u32, 1),
            ((n_rot / 2) as u32, 1, 1),
            0,
            &|| unsafe {
                rope(
                    gp.f(),
                    pp.i(),
                    n_head as i32,
                    head_dim as i32,
                    n_rot as i32,
                    neox,
                    theta_scale,
                    p.freq_scale,
                    ff as *const f32,
                    p.ext_factor,
                    p.corr_dims[0],
                    p.corr_dims[1],
                    p.attn_factor,
                )
            },
        );
        let mut xc = buf_with(&c, &x);
        c.rope(&mut xc, &tokens, n_head, head_dim, &p)
            .expect("cpu rope");
        assert_close(&format!("rope {p:?}"), &g, &read(&c, &xc, n), 1e-12);
    }
}

#[test]
fn argmax_picks_the_first_largest_value_of_each_row() {
    type Argmax = unsafe extern "C" fn(*const f32, i32, *mut i32);
    let am: Argmax = kernel("argmax_rows");
    let c = cpu();
    let (rows, dim) = (4, 3000);
    let mut x = random(rows * dim, 5, 4.0);
    // Ties: row 1's maximum appears twice; the first one wins.
    x[dim + 10] = 9.0;
    x[dim + 2500] = 9.0;
    // A row of equal values picks index 0.
    x[3 * dim..].iter_mut().for_each(|v| *v = -1.0);
    let mut got = vec![-1i32; rows];
    let (xp, gp) = (P::of(&x), P::mut_of(&mut got));
    // SAFETY: x holds rows x dim values, got one id per row.
    launch((rows as u32, 1, 1), (256, 1, 1), 0, &|| unsafe {
        am(xp.f(), dim as i32, gp.i())
    });
    let mut want = Vec::new();
    c.argmax_rows(&buf_with(&c, &x), rows, dim, &mut want)
        .expect("cpu argmax");
    let got: Vec<u32> = got.iter().map(|&i| i as u32).collect();
    assert_eq!(got, want);
    assert_eq!(got[1], 10);
    assert_eq!(got[3], 0);
}

#[test]
fn top_k_keeps_the_largest_values_in_the_hosts_order() {
    type First = unsafe extern "C" fn(*const f32, i32, i32, *mut u64);
    type Merge = unsafe extern "C" fn(*const u64, i32, i32, *mut u64);
    let (first, merge): (First, Merge) = (kernel("topk_first"), kernel("topk_merge"));
    let c = cpu();
    // One pass, two, and three (the last with the most candidates kept).
    for (rows, dim, k) in [
        (2, 3000, 40),
        (2, 10_000, 40),
        (1, 70_000, worker_cuda::TOPK_MAX),
    ] {
        let mut x = random(rows * dim, dim as u64, 4.0);
        // Ties across chunks (the lower index wins), both zeros, and the
        // same value filling a whole row's top.
        for v in x.iter_mut().step_by(7) {
            *v = (*v * 4.0).round() / 4.0;
        }
        x[5] = 0.0;
        x[6] = -0.0;
        x[dim - 1] = 9.0;
        x[dim / 2] = 9.0;
        let passes = worker_cuda::topk_passes(dim, k);
        let chunks = |n: usize| n.div_ceil(4096);
        let half = rows * chunks(dim) * k;
        let mut a = vec![0u64; half];
        let mut b = vec![0u64; half];
        let (xp, ap) = (P::of(&x), P::mut_of(&mut a));
        // SAFETY: x holds rows x dim values; `a` one chunk's k keys per
        // chunk and row.
        launch(
            (chunks(dim) as u32, rows as u32, 1),
            (256, 1, 1),
            0,
            &|| unsafe { first(xp.f(), dim as i32, k as i32, ap.u64()) },
        );
        for &n in &passes[1..] {
            let (ip, op) = (P::of(&a), P::mut_of(&mut b));
            // SAFETY: as above, with n keys per row in `a`.
            launch(
                (chunks(n) as u32, rows as u32, 1),
                (256, 1, 1),
                0,
                &|| unsafe { merge(ip.u64(), n as i32, k as i32, op.u64()) },
            );
            std::mem::swap(&mut a, &mut b);
        }
        let got: Vec<(u32, f32)> = a[..rows * k]
            .iter()
            .map(|&key| {
                let v = worker_compute::select::from_order_key((key >> 32) as u32);
                (u32::MAX - key as u32, v)
            })
            .collect();
        let mut want = Vec::new();
        c.top_k_rows(&buf_with(&c, &x), rows, dim, k, &mut want)
            .expect("cpu top-k");
        assert_eq!(got.len(), want.len());
        assert_eq!(
            want[0],
            ((dim / 2) as u32, 9.0),
            "the lower index of a tie first"
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.0 == w.0 && g.1.to_bits() == w.1.to_bits(),
                "dim {dim}, k {k}, entry {i}: {g:?} vs {w:?}"
            );
        }
    }
}

#[test]
fn the_draw_lands_where_the_hosts_cumulative_weights_put_it() {
    type Draw = unsafe extern "C" fn(*const f32, i32, *const f32, *const f32, *mut i32);
    let draw: Draw = kernel("draw_rows");
    let (rows, dim) = (3usize, 5000usize);
    let x = random(rows * dim, 77, 6.0);
    // Row 2 at temperature 0: its argmax.
    let temps = [0.8f32, 1.5, 0.0];
    for u in [0.0f32, 0.013, 0.37, 0.5, 0.91, 0.9999] {
        let us = [u, 1.0 - u * 0.5, u];
        let mut got = vec![-1i32; rows];
        let (xp, tp, up, gp) = (P::of(&x), P::of(&temps), P::of(&us), P::mut_of(&mut got));
        // SAFETY: x holds rows x dim values; temps, us and got one per row.
        launch((rows as u32, 1, 1), (256, 1, 1), 0, &|| unsafe {
            draw(xp.f(), dim as i32, tp.f(), up.f(), gp.i())
        });
        for r in 0..rows {
            let row = &x[r * dim..(r + 1) * dim];
            let id = got[r];
            assert!(id >= 0 && (id as usize) < dim, "row {r}: {id}");
            if temps[r] <= 0.0 {
                assert_eq!(id as u32, worker_compute::draw::argmax(row), "row {r}");
                continue;
            }
            // Where the host's weights put the draw: the id whose cumulative
            // range holds u * total (within f32 summation differences).
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let w: Vec<f64> = row
                .iter()
                .map(|&l| f64::from(worker_compute::draw::exp_neg((l - max) / temps[r])))
                .collect();
            let total: f64 = w.iter().sum();
            let target = f64::from(us[r]) * total;
            let before: f64 = w[..id as usize].iter().sum();
            let slack = total * 1e-5;
            assert!(
                before <= target + slack && target <= before + w[id as usize] + slack,
                "row {r}, u {u}: id {id} covers [{before}, {}] but the target is {target}",
                before + w[id as usize]
            );
        }
    }
}
