//! Host arrays staged on the device for a launch: token positions and
//! ids, RoPE factors, sampling inputs, scratch. Each slot grows to the
//! largest request and is kept; `reserve_staging` sizes the per-batch ones
//! for the largest batch up front, so serving does not allocate them again.

use crate::backend::CudaBackend;
use crate::memory::{self, Counted, driver_error};
use cudarc::driver::{DevicePtr, DeviceRepr, ValidAsZeroBits};
use std::sync::MutexGuard;
use worker_compute::{ComputeError, Result, TokenPos};

/// Host arrays staged on the device for a launch (token positions, ids).
#[derive(Debug, Default)]
pub(crate) struct Staging {
    tokens: Vec<TokenPos>,
    pub(crate) seq: Option<Counted<i32>>,
    pub(crate) pos: Option<Counted<i32>>,
    pub(crate) ints: Option<Counted<i32>>,
    pub(crate) floats: Option<Counted<f32>>,
    /// What `floats` holds (RoPE frequency factors), so they are copied
    /// once rather than per layer.
    floats_host: Vec<f32>,
    /// The graph epoch the cached positions belong to.
    epoch: u64,
    /// The graph epoch the cached RoPE factors belong to.
    floats_epoch: u64,
    /// Token ids chosen on the device.
    pub(crate) ids_out: Option<Counted<i32>>,
    /// Temperatures and uniform numbers of a draw, one per row.
    pub(crate) draw_t: Option<Counted<f32>>,
    pub(crate) draw_u: Option<Counted<f32>>,
    /// Top-k sort keys: two halves, one per pass in turn.
    pub(crate) topk: Option<Counted<u64>>,
    pub(crate) scratch: Option<Counted<f32>>,
    /// Split attention's partial results.
    pub(crate) attn_part: Option<Counted<f32>>,
    /// The batch's sequences as the recurrent kernels read them
    /// (`kv::group_table`), and the tokens and graph epoch they are of.
    pub(crate) groups: Option<Counted<i32>>,
    groups_tokens: Vec<TokenPos>,
    groups_epoch: u64,
    /// Per-row multipliers of `scale_rows`.
    pub(crate) row_scales: Option<Counted<f32>>,
    /// Activations quantized to 8 bits for `mm_q8`: values, and per 32 a
    /// scale and a sum.
    pub(crate) q8: Option<(Counted<i8>, Counted<f32>, Counted<i32>)>,
}

impl CudaBackend {
    pub(crate) fn staging(&self) -> MutexGuard<'_, Staging> {
        self.staging.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies `host` into `slot`, growing it when too small.
    pub(crate) fn stage<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        slot: &mut Option<Counted<T>>,
        host: &[T],
    ) -> Result<()> {
        if slot.as_ref().is_none_or(|s| s.data.len() < host.len()) {
            // Allocations are not recorded: run what was.
            self.flush()?;
            *slot = None;
            *slot = Some(memory::alloc(
                &self.stream,
                &self.counter,
                host.len().next_power_of_two(),
                "staging",
            )?);
        }
        if let Some(s) = slot.as_mut()
            && !host.is_empty()
        {
            // (The engine drives a backend from one thread, so no capture
            // can begin between this check and the upload.)
            if self.capturing() {
                // SAFETY: T is plain data (i32, f32): its bytes are its value.
                let bytes = unsafe {
                    std::slice::from_raw_parts(
                        host.as_ptr().cast::<u8>(),
                        std::mem::size_of_val(host),
                    )
                };
                let (dst, _sync) = s.data.device_ptr(&self.stream);
                if self.capture_upload(dst, bytes)? {
                    return Ok(());
                }
                // The arena is full: run what was recorded, copy as usual.
                self.flush()?;
            }
            let mut view = s.data.slice_mut(0..host.len());
            self.stream
                .memcpy_htod(host, &mut view)
                .map_err(|e| driver_error(e, "a host-to-device copy", 0))?;
        }
        Ok(())
    }

    /// Puts the batch's sequences and positions on the device (skipped when
    /// they are those of the previous op).
    pub(crate) fn stage_tokens(&self, st: &mut Staging, tokens: &[TokenPos]) -> Result<()> {
        let epoch = self.graph_epoch.load(std::sync::atomic::Ordering::Relaxed);
        if st.tokens == tokens && st.seq.is_some() && st.epoch == epoch {
            return Ok(());
        }
        st.epoch = epoch;
        let seq: Vec<i32> = tokens.iter().map(|t| t.seq as i32).collect();
        let pos: Vec<i32> = tokens.iter().map(|t| t.pos as i32).collect();
        st.tokens.clear();
        self.stage(&mut st.seq, &seq)?;
        self.stage(&mut st.pos, &pos)?;
        st.tokens.extend_from_slice(tokens);
        Ok(())
    }

    /// Puts the group table of the batch `tokens` on the device (skipped
    /// when it is that of the previous recurrent op: every recurrent layer
    /// of a step reads the same one).
    pub(crate) fn stage_groups(
        &self,
        st: &mut Staging,
        tokens: &[TokenPos],
        table: &[i32],
    ) -> Result<()> {
        let epoch = self.graph_epoch.load(std::sync::atomic::Ordering::Relaxed);
        if st.groups_tokens == tokens && st.groups.is_some() && st.groups_epoch == epoch {
            return Ok(());
        }
        st.groups_tokens.clear();
        self.stage(&mut st.groups, table)?;
        st.groups_tokens.extend_from_slice(tokens);
        st.groups_epoch = epoch;
        Ok(())
    }

    /// Sizes the group table for batches of up to `max_batch` tokens (at
    /// most one sequence per token).
    pub(crate) fn reserve_groups(&self, max_batch: usize) -> Result<()> {
        let len = ((crate::kv::GROUP_FIELDS + 1) * max_batch.max(1)).next_power_of_two();
        self.flush()?;
        let mut st = self.staging();
        if st.groups.as_ref().is_none_or(|s| s.data.len() < len) {
            st.groups = None;
            st.groups = Some(memory::alloc(&self.stream, &self.counter, len, "staging")?);
            st.groups_tokens.clear();
        }
        Ok(())
    }

    /// Puts RoPE's frequency factors on the device (skipped when they are
    /// the ones already there: the same factors serve every layer of every
    /// step, so they are copied once).
    pub(crate) fn stage_rope_factors(&self, st: &mut Staging, ff: &[f32]) -> Result<()> {
        let epoch = self.graph_epoch.load(std::sync::atomic::Ordering::Relaxed);
        if st.floats_host != ff || st.floats.is_none() || st.floats_epoch != epoch {
            st.floats_host.clear();
            self.stage(&mut st.floats, ff)?;
            st.floats_host.extend_from_slice(ff);
            st.floats_epoch = epoch;
        }
        Ok(())
    }

    /// Sizes the per-batch staging arrays (positions, ids, chosen ids) for
    /// batches of up to `max_batch` tokens, so serving does not allocate
    /// them again as batches grow.
    pub(crate) fn reserve_staging(&self, max_batch: usize) -> Result<()> {
        let cap = max_batch.max(1).next_power_of_two();
        self.flush()?;
        let mut st = self.staging();
        let st = &mut *st;
        for slot in [&mut st.seq, &mut st.pos, &mut st.ints, &mut st.ids_out] {
            if slot.as_ref().is_none_or(|s| s.data.len() < cap) {
                *slot = None;
                *slot = Some(memory::alloc(&self.stream, &self.counter, cap, "staging")?);
            }
        }
        // Cached staged positions may have been in a replaced buffer.
        st.tokens.clear();
        if self.q8_decode {
            let cols = self.max_cols.load(std::sync::atomic::Ordering::Relaxed);
            self.q8_staging(st, crate::matmul::Q8_CHUNK * cols)?;
        }
        Ok(())
    }

    /// `Staging::q8` for at least `len` activations.
    pub(crate) fn q8_staging<'a>(
        &self,
        st: &'a mut Staging,
        len: usize,
    ) -> Result<&'a mut (Counted<i8>, Counted<f32>, Counted<i32>)> {
        let len = len.next_multiple_of(32).max(32);
        if st.q8.as_ref().is_none_or(|(q, _, _)| q.data.len() < len) {
            self.flush()?;
            st.q8 = None;
            st.q8 = Some((
                memory::alloc(&self.stream, &self.counter, len, "8-bit activations")?,
                memory::alloc(&self.stream, &self.counter, len / 32, "8-bit activations")?,
                memory::alloc(&self.stream, &self.counter, len / 32, "8-bit activations")?,
            ));
        }
        st.q8
            .as_mut()
            .ok_or_else(|| ComputeError::Device("staging".into()))
    }

    /// A scratch area of at least `len` floats.
    pub(crate) fn scratch<'a>(
        &self,
        st: &'a mut Staging,
        len: usize,
    ) -> Result<&'a mut Counted<f32>> {
        if st.scratch.as_ref().is_none_or(|s| s.data.len() < len) {
            self.flush()?;
            st.scratch = None;
            st.scratch = Some(memory::alloc(&self.stream, &self.counter, len, "scratch")?);
        }
        st.scratch
            .as_mut()
            .ok_or_else(|| ComputeError::Device("scratch".into()))
    }
}
