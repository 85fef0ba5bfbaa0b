//! Recurrent layers (gated delta nets): the states' allocation, the
//! convolution and the delta rule of `kernels/recurrent.cu` over each
//! sequence of a batch (a sequence's run of [`CHUNKED_FROM`] tokens or
//! more in the chunked form of `kernels/delta_chunked.cu`), and saving,
//! restoring and clearing a sequence's
//! states. Positions are checked on the host (`kv::StatePositions`) before
//! anything is launched, so a refused batch leaves every state as it was.

use crate::backend::{CudaBackend, CudaBuf, i32_of, need, shape};
use crate::kv::{CudaKv, LayerStates, StatePositions, group_table};
use crate::memory::{self, driver_error};
use crate::weight::CudaWeight;
use cudarc::driver::{LaunchConfig, PushKernelArg};
use worker_compute::{ComputeError, DeltaNetParams, Result, StateShape, TokenPos};

/// The widest head the delta rule's kernel keeps in registers, as
/// `DELTA_MAX_DIM` in `kernels/recurrent.cu`.
pub const DELTA_MAX_DIM: usize = 128;

/// Tokens per chunk of the delta rule's chunked form, as `DELTA_CHUNK` in
/// `kernels/delta_chunked.cu` (and `worker_compute::recurrent::CHUNK`).
pub const DELTA_CHUNK: usize = 64;

/// Fewest tokens of one sequence in a batch that run the delta rule in
/// its chunked form (`delta_net_chunked`: a prompt, or a part of one);
/// a sequence with fewer (a decode step) runs it token by token
/// (`delta_net`).
pub const CHUNKED_FROM: usize = 2;

/// Grid, block and shared bytes of the delta rule's kernels over
/// `n_groups` sequences: one block per (value head, sequence), a thread
/// per column of the head (for the chunked form, at least one per token
/// of a chunk), and the shared memory each kernel's comment sizes.
pub fn delta_launch(
    p: &DeltaNetParams,
    n_groups: usize,
    chunked: bool,
) -> ((u32, u32, u32), (u32, u32, u32), u32) {
    let d = p.head_dim;
    let (threads, shared) = if chunked {
        (d.max(DELTA_CHUNK), DELTA_CHUNK * d + d + 6 * DELTA_CHUNK)
    } else {
        (d, 2 * d + 2)
    };
    (
        (p.n_v_heads as u32, n_groups as u32, 1),
        (threads.next_multiple_of(32) as u32, 1, 1),
        (shared * 4) as u32,
    )
}

fn delta_config(p: &DeltaNetParams, n_groups: usize, chunked: bool) -> LaunchConfig {
    let (grid_dim, block_dim, shared_mem_bytes) = delta_launch(p, n_groups, chunked);
    LaunchConfig {
        grid_dim,
        block_dim,
        shared_mem_bytes,
    }
}

/// The per-row inputs of a delta net call.
pub(crate) struct DeltaBufs<'a> {
    pub qkv: &'a CudaBuf,
    pub alpha: &'a CudaBuf,
    pub beta: &'a CudaBuf,
    pub a: &'a CudaWeight,
}

/// Checks a delta net call's parameters against the layer's state and
/// the kernel, and its buffers against the batch of `n` rows (as the
/// reference's `check_delta_shapes`).
fn check_delta(
    state: &StateShape,
    p: &DeltaNetParams,
    n: usize,
    x: &DeltaBufs<'_>,
    out: &CudaBuf,
) -> Result<()> {
    let hv = p.n_v_heads;
    if state.n_heads != hv
        || state.head_dim != p.head_dim
        || state.conv_channels != p.channels()
        || p.n_k_heads == 0
        || !hv.is_multiple_of(p.n_k_heads)
    {
        return Err(shape_error(state, p, n));
    }
    if p.head_dim > DELTA_MAX_DIM {
        return Err(ComputeError::Unsupported(
            "gated delta net heads wider than 128 values on CUDA",
        ));
    }
    need(x.qkv, n * p.channels(), "delta_net qkv")?;
    need(x.alpha, n * hv, "delta_net alpha")?;
    need(x.beta, n * hv, "delta_net beta")?;
    need(out, n * hv * p.head_dim, "delta_net out")?;
    Ok(())
}

fn shape_error(state: &StateShape, p: &DeltaNetParams, n: usize) -> ComputeError {
    shape(format!(
        "a delta net of {} key and {} value heads of {} over a state of {} heads of {} and {} channels, for {n} rows",
        p.n_k_heads, p.n_v_heads, p.head_dim, state.n_heads, state.head_dim, state.conv_channels
    ))
}

impl CudaBackend {
    /// The zeroed live and kept states of one recurrent layer for `n_seq`
    /// sequences.
    pub(crate) fn alloc_states(&self, shape: StateShape, n_seq: usize) -> Result<LayerStates> {
        let len = n_seq
            .checked_mul(shape.len())
            .ok_or(ComputeError::OutOfMemory {
                what: "recurrent states",
                need_bytes: u64::MAX,
            })?;
        Ok(LayerStates {
            shape,
            live: memory::alloc(&self.stream, &self.counter, len, "recurrent states")?,
            kept: memory::alloc(&self.stream, &self.counter, len, "recurrent states")?,
            positions: StatePositions::new(n_seq),
        })
    }

    pub(crate) fn ssm_conv_impl(
        &self,
        kv: &mut CudaKv,
        layer: usize,
        tokens: &[TokenPos],
        x: &CudaBuf,
        w: &CudaWeight,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let n = tokens.len();
        let state = kv.layer_states(layer)?.shape;
        let (c, taps) = (state.conv_channels, state.conv_taps);
        let w = w.vector(c * taps, "the convolution taps")?;
        if c * taps > 0 && w.data.len() != c * taps {
            return Err(shape_msg_conv(c, taps, n));
        }
        need(x, n * c, "ssm_conv x")?;
        need(out, n * c, "ssm_conv out")?;
        let groups = kv.check_batch(layer, tokens)?;
        if n == 0 || c == 0 {
            return Ok(());
        }
        let table = group_table(&groups)?;
        let (ng, ci) = (i32_of(groups.len(), "sequences")?, i32_of(c, "channels")?);
        let (ti, len) = (i32_of(taps, "taps")?, state.len() as i64);
        let mut st = self.staging();
        self.stage_groups(&mut st, tokens, &table)?;
        let dev = st
            .groups
            .as_ref()
            .ok_or_else(|| ComputeError::Device("staging".into()))?;
        let states = kv.layer_states(layer)?;
        let (mut a, cfg) = self.elementwise(&self.k.ssm_conv, groups.len() * c);
        a.arg(&x.0.data)
            .arg(&w.data)
            .arg(&mut states.live.data)
            .arg(&mut out.0.data)
            .arg(&dev.data)
            .arg(&ng)
            .arg(&ci)
            .arg(&ti)
            .arg(&len);
        self.launch(a, cfg, "a causal convolution")
    }

    pub(crate) fn delta_net_impl(
        &self,
        kv: &mut CudaKv,
        layer: usize,
        tokens: &[TokenPos],
        x: &DeltaBufs<'_>,
        p: &DeltaNetParams,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let n = tokens.len();
        let state = kv.layer_states(layer)?.shape;
        check_delta(&state, p, n, x, out)?;
        let a_dev = x.a.vector(p.n_v_heads, "the decay rates")?;
        let groups = kv.check_batch(layer, tokens)?;
        if n == 0 || p.n_v_heads == 0 || p.head_dim == 0 {
            // Nothing to compute; the (empty) states still move on.
            kv.layer_states(layer)?.positions.advance(&groups, tokens);
            return Ok(());
        }
        let table = group_table(&groups)?;
        let ng = i32_of(groups.len(), "sequences")?;
        let (nk, hd) = (i32_of(p.n_k_heads, "key heads")?, p.head_dim as i32);
        let (len, conv) = (state.len() as i64, i32_of(state.conv_len(), "conv state")?);
        let mut st = self.staging();
        self.stage_groups(&mut st, tokens, &table)?;
        let dev = st
            .groups
            .as_ref()
            .ok_or_else(|| ComputeError::Device("staging".into()))?;
        let states = kv.layer_states(layer)?;
        let from = i32_of(CHUNKED_FROM, "chunked form's threshold")?;
        // Decode steps token by token, prompts in the chunked form: each
        // kernel takes its sequences of the table and passes over the
        // others'.
        for (chunked, f) in [
            (false, &self.k.delta_net),
            (true, &self.k.delta_net_chunked),
        ] {
            if !groups
                .iter()
                .any(|(_, _, rows)| (rows.len() >= CHUNKED_FROM) == chunked)
            {
                continue;
            }
            let mut a = self.stream.launch_builder(f);
            a.arg(&x.qkv.0.data)
                .arg(&x.alpha.0.data)
                .arg(&x.beta.0.data)
                .arg(&a_dev.data)
                .arg(&mut states.live.data)
                .arg(&mut out.0.data)
                .arg(&dev.data)
                .arg(&ng)
                .arg(&nk)
                .arg(&hd)
                .arg(&p.eps)
                .arg(&len)
                .arg(&conv)
                .arg(&from);
            self.launch(a, delta_config(p, groups.len(), chunked), "the delta rule")?;
        }
        states.positions.advance(&groups, tokens);
        Ok(())
    }

    /// Zeroes sequence `seq`'s live states: it starts over at position 0.
    pub(crate) fn clear_states(&self, kv: &mut CudaKv, seq: usize) -> Result<()> {
        kv.spec.check(seq, 0)?;
        for s in kv.states.iter_mut().flatten() {
            let r = s.range(seq);
            if !r.is_empty() {
                let mut view = s.live.data.try_slice_mut(r).ok_or_else(beyond)?;
                self.stream
                    .memset_zeros(&mut view)
                    .map_err(|e| driver_error(e, "clearing a recurrent state", 0))?;
            }
            s.positions.clear(seq)?;
        }
        Ok(())
    }

    /// Copies sequence `seq`'s live states to their kept copies (`save`),
    /// or the kept ones back to the live ones.
    pub(crate) fn keep_states(&self, kv: &mut CudaKv, seq: usize, save: bool) -> Result<()> {
        kv.spec.check(seq, 0)?;
        for s in kv.states.iter_mut().flatten() {
            let r = s.range(seq);
            if !r.is_empty() {
                let (src, dst) = if save {
                    (&s.live, &mut s.kept)
                } else {
                    (&s.kept, &mut s.live)
                };
                let from = src.data.try_slice(r.clone()).ok_or_else(beyond)?;
                let mut to = dst.data.try_slice_mut(r).ok_or_else(beyond)?;
                self.stream
                    .memcpy_dtod(&from, &mut to)
                    .map_err(|e| driver_error(e, "copying a recurrent state", 0))?;
            }
            if save {
                s.positions.save(seq)?;
            } else {
                s.positions.restore(seq)?;
            }
        }
        Ok(())
    }
}

fn shape_msg_conv(c: usize, taps: usize, n: usize) -> ComputeError {
    shape(format!(
        "a convolution of {c} channels and {taps} taps over {n} rows"
    ))
}

/// A state's range beyond its array (which the shapes rule out).
fn beyond() -> ComputeError {
    ComputeError::Device("a recurrent state beyond its array".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_limits_are_the_hosts() {
        let src = crate::compile::SOURCE;
        assert!(src.contains(&format!("#define DELTA_MAX_DIM {DELTA_MAX_DIM}\n")));
        assert!(src.contains(&format!("#define DELTA_CHUNK {DELTA_CHUNK}\n")));
        assert_eq!(DELTA_CHUNK, worker_compute::recurrent::CHUNK);
        // The chunked form's shared memory fits the 48 KiB every device
        // gives a block without asking, at the widest head.
        let p = DeltaNetParams {
            n_k_heads: 1,
            n_v_heads: 1,
            head_dim: DELTA_MAX_DIM,
            eps: 0.0,
        };
        assert!(delta_config(&p, 1, true).shared_mem_bytes <= 48 * 1024);
        let fields = crate::kv::GROUP_FIELDS;
        assert!(src.contains(&format!("#define GROUP_FIELDS {fields}\n")));
    }
}
