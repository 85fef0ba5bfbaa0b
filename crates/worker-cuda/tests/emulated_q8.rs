//! The 8-bit-activation decode path (`quantize_q8` then `mm_q8`, chosen by
//! `LLORCH_CUDA_DECODE=q8`) run on the CPU under the kernel emulation,
//! against the CPU backend's products, for every weight type it decodes.
//! The launch shapes are the backend's (src/matmul.rs).

mod common;
mod host;

use common::{assert_close, buf_with, file_with, random, read, weight};
use host::{P, kernel, launch, per_element};
use worker_compute::Backend;
use worker_compute::cpu::CpuBackend;
use worker_gguf::GgmlType;
use worker_models::synthetic::random_matrix;

#[test]
fn q8_products_match_the_cpu() {
    type Quantize = unsafe extern "C" fn(*const f32, i64, *mut i8, *mut f32, *mut i32);
    type MmQ8 = unsafe extern "C" fn(
        i32,
        *const u8,
        i64,
        i32,
        i32,
        *const i8,
        *const f32,
        *const i32,
        i32,
        *mut f32,
    );
    let (quantize, mm): (Quantize, MmQ8) = (kernel("quantize_q8"), kernel("mm_q8"));
    let c = CpuBackend::new(2).expect("cpu backend");
    // 40 groups of 32 per row: lanes take two groups some of the time.
    let (rows, cols) = (40, 1280);
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
        let code = worker_cuda::type_code(ty).expect("a kernel type");
        let bytes = random_matrix(ty, rows, cols, 31 + code as u64).expect("matrix");
        let row_bytes = (bytes.len() / rows) as i64;
        let file = file_with(vec![(
            "w",
            ty,
            vec![cols as u64, rows as u64],
            bytes.clone(),
        )]);
        let wc = weight(&c, &file, "w");
        for n in [1usize, 3, 8] {
            let x = random(n * cols, 17 + n as u64, 2.0);
            let groups = n * cols / 32;
            let (mut xq, mut xd, mut xs) =
                (vec![0i8; n * cols], vec![0f32; groups], vec![0i32; groups]);
            let (xp, qp, dp, sp) = (
                P::of(&x),
                P::mut_of(&mut xq),
                P::mut_of(&mut xd),
                P::mut_of(&mut xs),
            );
            let (grid, block) = per_element(n * cols);
            // SAFETY: the arrays hold n * cols activations and their groups.
            launch(grid, block, 0, &|| unsafe {
                quantize(xp.f(), groups as i64, qp.u8().cast(), dp.f(), sp.i())
            });
            let mut got = vec![0f32; n * rows];
            let (w, o) = (P::of(&bytes), P::mut_of(&mut got));
            // SAFETY: as above; the output holds n * rows values.
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
                        qp.u8().cast(),
                        dp.f(),
                        sp.i(),
                        n as i32,
                        o.f(),
                    )
                },
            );
            // The values quantize exactly as stored: |q| <= 127, sums agree.
            for (g, chunk) in xq.chunks_exact(32).enumerate() {
                let sum: i32 = chunk.iter().map(|&q| i32::from(q)).sum();
                assert_eq!(sum, xs[g], "{ty} n={n}: group {g}'s sum");
                assert!(
                    chunk.iter().all(|&q| q != i8::MIN),
                    "{ty}: -128 never occurs"
                );
            }
            let (xc, mut oc) = (buf_with(&c, &x), c.buf(n * rows).expect("buf"));
            c.matmul(&wc, &xc, n, &mut oc).expect("cpu matmul");
            // Both sides quantize the activations to 8 bits, in blocks of 32
            // here and of 32 or 256 on the CPU (as ggml does).
            assert_close(
                &format!("mm_q8 {ty} n={n}"),
                &got,
                &read(&c, &oc, n * rows),
                1e-4,
            );
        }
    }
}
