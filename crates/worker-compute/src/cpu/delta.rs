//! The CPU backend's recurrent layers: the convolution and the gated delta
//! rule of [`crate::recurrent`] over each sequence of a batch, the delta
//! rule's heads spread over the thread pool, a prompt's tokens in the
//! chunked form.

use super::kv::CpuKv;
use crate::error::{ComputeError, Result};
use crate::recurrent::{self, DeltaInputs};
use crate::types::{DeltaNetParams, TokenPos};
use rayon::prelude::*;

/// Fewest tokens of one sequence in a batch that run the delta rule in its
/// chunked form (a prompt); fewer run it token by token (decode steps).
const CHUNKED_FROM: usize = 16;

/// [`crate::Backend::ssm_conv`] on host buffers.
pub(crate) fn conv(
    kv: &mut CpuKv,
    layer: usize,
    tokens: &[TokenPos],
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
) -> Result<()> {
    let states = kv.states_mut(layer)?;
    let shape = states.shape;
    let c = shape.conv_channels;
    let n = tokens.len();
    if x.len() < n * c || out.len() < n * c || w.len() != c * shape.conv_taps {
        return Err(ComputeError::Shape(format!(
            "a convolution of {c} channels and {} taps over {n} rows",
            shape.conv_taps
        )));
    }
    for (seq, first, rows) in recurrent::rows_by_sequence(tokens) {
        recurrent::check_continues(seq, first, &rows, tokens, states.next(seq))?;
        let (conv_state, _) = states.live_mut(seq, first == 0);
        recurrent::conv_rows(&shape, conv_state, w, x, &rows, out);
    }
    Ok(())
}

/// [`crate::Backend::delta_net`] on host buffers.
pub(crate) fn delta_net(
    kv: &mut CpuKv,
    layer: usize,
    tokens: &[TokenPos],
    x: &DeltaInputs<'_>,
    p: &DeltaNetParams,
    out: &mut [f32],
) -> Result<()> {
    let n = tokens.len();
    for (seq, _, _) in recurrent::rows_by_sequence(tokens) {
        kv.check_seq(seq)?;
    }
    let states = kv.states_mut(layer)?;
    let shape = states.shape;
    recurrent::check_delta_shapes(&shape, p, n, x, out.len())?;
    let groups = recurrent::rows_by_sequence(tokens);
    for (seq, first, rows) in &groups {
        recurrent::check_continues(*seq, *first, rows, tokens, states.next(*seq))?;
    }
    let (per_seq, conv, mat) = (shape.len(), shape.conv_len(), p.head_dim * p.head_dim);
    let d = p.head_dim;
    // One work item per (sequence, head): its matrix and its output rows.
    let mut items: Vec<(usize, usize, &mut [f32])> = Vec::new();
    let mut seqs: Vec<Option<&mut [f32]>> = states
        .all_live_mut()
        .chunks_exact_mut(per_seq)
        .map(Some)
        .collect();
    for (gi, (seq, _, _)) in groups.iter().enumerate() {
        let Some(state) = seqs.get_mut(*seq).and_then(Option::take) else {
            continue;
        };
        for (h, m) in state[conv..].chunks_exact_mut(mat).enumerate() {
            if groups[gi].1 == 0 {
                m.fill(0.0);
            }
            items.push((gi, h, m));
        }
    }
    let outputs: Vec<(usize, usize, Vec<f32>)> = items
        .into_par_iter()
        .map(|(gi, h, m)| {
            let rows = &groups[gi].2;
            let mut local = vec![0f32; rows.len() * d];
            if rows.len() >= CHUNKED_FROM {
                recurrent::delta_head_chunked(p, h, m, x, rows, &mut local);
            } else {
                recurrent::delta_head(p, h, m, x, rows, &mut local);
            }
            (gi, h, local)
        })
        .collect();
    let hv = p.n_v_heads;
    for (gi, h, local) in outputs {
        for (i, &r) in groups[gi].2.iter().enumerate() {
            out[(r * hv + h) * d..(r * hv + h + 1) * d].copy_from_slice(&local[i * d..(i + 1) * d]);
        }
    }
    for (seq, _, rows) in &groups {
        states.advance(*seq, tokens[rows[rows.len() - 1]].pos + 1);
    }
    Ok(())
}
