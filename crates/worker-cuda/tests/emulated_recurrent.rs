//! The recurrent layers' kernels (`ssm_conv`, `delta_net` and
//! `delta_net_chunked`) run on the CPU under the kernel emulation
//! (tests/host/cuda_host.h), against the CPU backend, through the scripts
//! of tests/common: several sequences interleaved in one batch, prefill
//! chunks then single-token steps, a kept state restored, refused gaps, a
//! cleared sequence, a restart at 0; and long prompts (150 tokens: two
//! chunks of 64 and a part of one) from a fresh, a continued and a
//! restored state. With grouped heads and heads of widths that fill a
//! warp, leave threads idle and reach the kernel's widest. The host side
//! is the backend's own: its position checks (`StatePositions`), the table
//! the kernels read (`group_table`), which sequences take the chunked form
//! (`CHUNKED_FROM`) and the launch shapes (`delta_launch`). The kernels
//! sum in index order, the CPU backend may in another (dot products in
//! lanes; a run of 16 tokens or more chunked, shorter ones token by
//! token), so the outputs agree to rounding: NMSE at most 1e-12 for the
//! convolution and 1e-10 for the delta rule, and no value further from the
//! CPU's than 1e-5 of the largest.

mod common;
mod host;

use common::{StateStep, assert_close, recurrent_file, recurrent_inputs, recurrent_script};
use common::{long_recurrent_script, long_recurrent_spec, recurrent_spec, recurrent_step, weight};
use host::{P, kernel, launch, per_element};
use worker_compute::cpu::CpuBackend;
use worker_compute::{Backend, ComputeError, DeltaNetParams, KvSpec, StateShape, TokenPos};
use worker_cuda::{CHUNKED_FROM, SeqGroups, StatePositions, delta_launch, group_table};

type SsmConv = unsafe extern "C" fn(
    *const f32,
    *const f32,
    *mut f32,
    *mut f32,
    *const i32,
    i32,
    i32,
    i32,
    i64,
);
type DeltaNet = unsafe extern "C" fn(
    *const f32,
    *const f32,
    *const f32,
    *const f32,
    *mut f32,
    *mut f32,
    *const i32,
    i32,
    i32,
    i32,
    f32,
    i64,
    i32,
    i32,
);

/// One recurrent layer's states as the backend keeps them: live and kept
/// arrays (device memory, here host memory) and the host's positions.
struct States {
    shape: StateShape,
    live: Vec<f32>,
    kept: Vec<f32>,
    positions: StatePositions,
}

impl States {
    fn new(shape: StateShape, n_seq: usize) -> Self {
        States {
            shape,
            live: vec![0.0; n_seq * shape.len()],
            kept: vec![0.0; n_seq * shape.len()],
            positions: StatePositions::new(n_seq),
        }
    }

    fn range(&self, seq: usize) -> std::ops::Range<usize> {
        seq * self.shape.len()..(seq + 1) * self.shape.len()
    }
}

#[test]
fn recurrent_kernels_match_the_cpu() {
    // Grouped heads (two value heads per key head) of 32; one key head of
    // 48 (the block's last 16 threads idle) with 3 taps; heads of 128, the
    // widest the kernel takes (four warps, the norms summed in two).
    for (p, taps) in head_shapes() {
        let spec = recurrent_spec(recurrent_file(&p, taps).1);
        check_script(&p, taps, &spec, &recurrent_script(), 3);
    }
}

#[test]
fn long_prompts_run_the_chunked_form_as_the_cpu() {
    // Prompts of 150 tokens (two chunks of 64 and a part of one), 80
    // continuing a state mid-prompt and 150 from a restored kept state,
    // beside runs of 70, 2 and 1 tokens of other sequences; the CPU too
    // computes the long runs in its chunked form. Same bounds.
    for (p, taps) in head_shapes() {
        let spec = long_recurrent_spec(recurrent_file(&p, taps).1);
        check_script(&p, taps, &spec, &long_recurrent_script(), 0);
    }
}

/// The heads the tests run, with their convolution's taps.
fn head_shapes() -> Vec<(DeltaNetParams, usize)> {
    let widest = worker_cuda::DELTA_MAX_DIM;
    [(2, 4, 32, 4), (1, 2, 48, 3), (1, 2, widest, 4)]
        .into_iter()
        .map(|(n_k_heads, n_v_heads, head_dim, taps)| {
            let p = DeltaNetParams {
                n_k_heads,
                n_v_heads,
                head_dim,
                eps: 1e-6,
            };
            (p, taps)
        })
        .collect()
}

/// Runs `script` on the CPU backend and under the emulation, over a
/// cache of shape `spec` (layer 0 the recurrent one); outputs and
/// refusals must agree, and `refused` of the script's batches be refused.
fn check_script(
    p: &DeltaNetParams,
    taps: usize,
    spec: &KvSpec,
    script: &[StateStep],
    refused: usize,
) {
    let c = CpuBackend::new(2).expect("cpu backend");
    let (file, shape) = recurrent_file(p, taps);
    let (conv_w, a) = (weight(&c, &file, "conv"), weight(&c, &file, "a"));
    let host_w = file_floats(&file, "conv");
    let host_a = file_floats(&file, "a");
    let mut kv = c.kv(spec).expect("kv");
    let mut st = States::new(shape, spec.n_seq);
    let mut seen = 0;
    for (bi, step) in script.iter().enumerate() {
        let case = format!("{p:?} taps {taps}, step {bi}");
        let want = recurrent_step(&c, &mut kv, [&conv_w, &a], p, (bi, step));
        let got = emulated_step(&mut st, [&host_w, &host_a], p, (bi, step));
        match (got, want) {
            (Ok(Some([gc, gd])), Ok(Some([wc, wd]))) => {
                assert!(wd.iter().any(|&v| v != 0.0), "{case}: an all-zero output");
                assert_close(&format!("ssm_conv {case}"), &gc, &wc, 1e-12);
                assert_close(&format!("delta_net {case}"), &gd, &wd, 1e-10);
                assert_relative(&case, &gd, &wd, 1e-5);
            }
            (Ok(None), Ok(None)) => {}
            (Err(g), Err(w)) => {
                assert!(matches!(g, ComputeError::StateGap { .. }), "{case}: {g}");
                assert_eq!(g.to_string(), w.to_string(), "{case}");
                seen += 1;
            }
            (g, w) => panic!("{case}: emulated {g:?}, cpu {w:?}"),
        }
    }
    assert_eq!(seen, refused, "the script's gaps are refused");
}

/// Asserts that no value of `got` is further from `want`'s than `bound`
/// times the largest of `want`.
fn assert_relative(case: &str, got: &[f32], want: &[f32], bound: f32) {
    let top = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    eprintln!(
        "{case}: largest difference {:.3e} of the largest value",
        worst / top
    );
    assert!(
        worst <= bound * top,
        "{case}: a value {worst:e} from the CPU's, largest {top:e}"
    );
}

/// The f32 values of tensor `name`.
fn file_floats(file: &worker_gguf::GgufFile, name: &str) -> Vec<f32> {
    let t = file.tensor(name).expect("tensor");
    t.data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// One script step as the backend takes it (src/recurrent.rs): save,
/// restore and clear copy or zero one sequence's range; a batch is
/// checked on the host, then the two kernels run over its table.
fn emulated_step(
    st: &mut States,
    [w, a]: [&[f32]; 2],
    p: &DeltaNetParams,
    (bi, step): (usize, &StateStep),
) -> worker_compute::Result<Option<[Vec<f32>; 2]>> {
    let tokens = match step {
        StateStep::Save(s) => {
            let r = st.range(*s);
            st.kept[r.clone()].copy_from_slice(&st.live[r]);
            return st.positions.save(*s).map(|()| None);
        }
        StateStep::Restore(s) => {
            let r = st.range(*s);
            st.live[r.clone()].copy_from_slice(&st.kept[r]);
            return st.positions.restore(*s).map(|()| None);
        }
        StateStep::Clear(s) => {
            let r = st.range(*s);
            st.live[r].fill(0.0);
            return st.positions.clear(*s).map(|()| None);
        }
        StateStep::Batch(tokens) => tokens,
    };
    let groups = st.positions.check(tokens)?;
    let table = group_table(&groups)?;
    let [x, alpha, beta] = recurrent_inputs(p, tokens.len(), bi);
    let conv = conv(st, w, &x, &table, groups.len(), tokens);
    let out = delta(st, p, [&conv, &alpha, &beta, a], &table, &groups, tokens);
    st.positions.advance(&groups, tokens);
    Ok(Some([conv, out]))
}

/// The convolution kernel over the batch, one thread per (sequence,
/// channel).
fn conv(
    st: &mut States,
    w: &[f32],
    x: &[f32],
    table: &[i32],
    ng: usize,
    tokens: &[TokenPos],
) -> Vec<f32> {
    let f: SsmConv = kernel("ssm_conv");
    let c = st.shape.conv_channels;
    let mut out = vec![0f32; tokens.len() * c];
    let (xp, wp, sp, op, tp) = (
        P::of(x),
        P::of(w),
        P::mut_of(&mut st.live),
        P::mut_of(&mut out),
        P::of(table),
    );
    let (taps, len) = (st.shape.conv_taps as i32, st.shape.len() as i64);
    let (grid, block) = per_element(ng * c);
    // SAFETY: the state holds every sequence's, the table indexes rows of
    // the batch, and x and out hold its rows.
    launch(grid, block, 0, &|| unsafe {
        f(
            xp.f(),
            wp.f(),
            sp.f(),
            op.f(),
            tp.i(),
            ng as i32,
            c as i32,
            taps,
            len,
        )
    });
    out
}

/// The delta rule's kernels over the batch as the backend launches them
/// (`delta_launch`): `delta_net` for the sequences with fewer than
/// `CHUNKED_FROM` tokens, `delta_net_chunked` for the others, one block
/// per (value head, sequence).
fn delta(
    st: &mut States,
    p: &DeltaNetParams,
    [qkv, alpha, beta, a]: [&[f32]; 4],
    table: &[i32],
    groups: &SeqGroups,
    tokens: &[TokenPos],
) -> Vec<f32> {
    let ng = groups.len();
    let d = p.head_dim;
    let mut out = vec![0f32; tokens.len() * p.n_v_heads * d];
    let (qp, ap, bp, rp) = (P::of(qkv), P::of(alpha), P::of(beta), P::of(a));
    let (sp, op, tp) = (P::mut_of(&mut st.live), P::mut_of(&mut out), P::of(table));
    let (len, conv_len) = (st.shape.len() as i64, st.shape.conv_len() as i32);
    let from = CHUNKED_FROM as i32;
    for (chunked, name) in [(false, "delta_net"), (true, "delta_net_chunked")] {
        if !groups
            .iter()
            .any(|(_, _, rows)| (rows.len() >= CHUNKED_FROM) == chunked)
        {
            continue;
        }
        let f: DeltaNet = kernel(name);
        let (grid, block, shared) = delta_launch(p, ng, chunked);
        // SAFETY: as for the convolution; a holds one rate per value head.
        launch(grid, block, shared as usize, &|| unsafe {
            f(
                qp.f(),
                ap.f(),
                bp.f(),
                rp.f(),
                sp.f(),
                op.f(),
                tp.i(),
                ng as i32,
                p.n_k_heads as i32,
                d as i32,
                p.eps,
                len,
                conv_len,
                from,
            )
        });
    }
    out
}
