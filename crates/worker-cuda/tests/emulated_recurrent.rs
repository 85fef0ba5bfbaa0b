//! The recurrent layers' kernels (`ssm_conv`, `delta_net`) run on the CPU
//! under the kernel emulation (tests/host/cuda_host.h), against the CPU
//! backend, through the script of tests/common (several sequences
//! interleaved in one batch, prefill chunks then single-token steps, a kept
//! state restored, refused gaps, a cleared sequence, a restart at 0), with
//! grouped heads and heads of widths that fill a warp, leave threads idle
//! and reach the kernel's widest. The host side is the backend's own: its
//! position checks (`StatePositions`) and the table the kernels read
//! (`group_table`); the launch shapes are those of src/recurrent.rs. The
//! kernels compute the reference's recurrence in its order; the CPU backend
//! may sum in another (a prompt's chunked form, dot products in lanes), so
//! the outputs agree to rounding: NMSE at most 1e-12 for the convolution
//! and 1e-10 for the delta rule, and no value further from the CPU's than
//! 1e-5 of the largest.

mod common;
mod host;

use common::{StateStep, assert_close, recurrent_file, recurrent_inputs, recurrent_script};
use common::{recurrent_spec, recurrent_step, weight};
use host::{P, kernel, launch, per_element};
use worker_compute::cpu::CpuBackend;
use worker_compute::{Backend, ComputeError, DeltaNetParams, StateShape, TokenPos};
use worker_cuda::{StatePositions, group_table};

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
    let widest = worker_cuda::DELTA_MAX_DIM;
    for (n_k_heads, n_v_heads, head_dim, taps) in [(2, 4, 32, 4), (1, 2, 48, 3), (1, 2, widest, 4)]
    {
        let p = DeltaNetParams {
            n_k_heads,
            n_v_heads,
            head_dim,
            eps: 1e-6,
        };
        check_script(&p, taps);
    }
}

/// Runs the script on the CPU backend and under the emulation; outputs
/// and refusals must agree.
fn check_script(p: &DeltaNetParams, taps: usize) {
    let c = CpuBackend::new(2).expect("cpu backend");
    let (file, shape) = recurrent_file(p, taps);
    let (conv_w, a) = (weight(&c, &file, "conv"), weight(&c, &file, "a"));
    let host_w = file_floats(&file, "conv");
    let host_a = file_floats(&file, "a");
    let spec = recurrent_spec(shape);
    let mut kv = c.kv(&spec).expect("kv");
    let mut st = States::new(shape, spec.n_seq);
    let mut refused = 0;
    for (bi, step) in recurrent_script().iter().enumerate() {
        let case = format!("{p:?} taps {taps}, step {bi} {step:?}");
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
                refused += 1;
            }
            (g, w) => panic!("{case}: emulated {g:?}, cpu {w:?}"),
        }
    }
    assert_eq!(refused, 3, "the script's gaps are refused");
}

/// Asserts that no value of `got` is further from `want`'s than `bound`
/// times the largest of `want`.
fn assert_relative(case: &str, got: &[f32], want: &[f32], bound: f32) {
    let top = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
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
    let out = delta(
        st,
        p,
        [&conv, &alpha, &beta, a],
        &table,
        groups.len(),
        tokens,
    );
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

/// The delta rule's kernel over the batch, one block per (value head,
/// sequence).
fn delta(
    st: &mut States,
    p: &DeltaNetParams,
    [qkv, alpha, beta, a]: [&[f32]; 4],
    table: &[i32],
    ng: usize,
    tokens: &[TokenPos],
) -> Vec<f32> {
    let f: DeltaNet = kernel("delta_net");
    let d = p.head_dim;
    let mut out = vec![0f32; tokens.len() * p.n_v_heads * d];
    let (qp, ap, bp, rp) = (P::of(qkv), P::of(alpha), P::of(beta), P::of(a));
    let (sp, op, tp) = (P::mut_of(&mut st.live), P::mut_of(&mut out), P::of(table));
    let (len, conv_len) = (st.shape.len() as i64, st.shape.conv_len() as i32);
    // SAFETY: as for the convolution; a holds one rate per value head.
    launch(
        (p.n_v_heads as u32, ng as u32, 1),
        (d.next_multiple_of(32) as u32, 1, 1),
        (2 * d + 2) * 4,
        &|| unsafe {
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
            )
        },
    );
    out
}
