//! The KV cache's allocation (each layer's rows at its own width, none
//! for a layer that reads an earlier layer's) and attention over it.

use crate::backend::{CudaBackend, CudaBuf, i32_of, need, shape};
use crate::kernels::per_element;
use crate::kv::{CudaKv, LayerKv, RowsShape, rows_layout};
use crate::memory::{self, Counted};
use crate::staging::Staging;
use crate::weight::CudaWeight;
use cudarc::driver::{CudaSlice, CudaViewMut, LaunchConfig, PushKernelArg};
use worker_compute::{AttnParams, ComputeError, KvSpec, KvType, Result, TokenPos};

/// Threads per attention block (at least `ATTN_TILE`).
const ATTN_THREADS: u32 = 128;
/// Keys scored per tile, as `ATTN_TILE` in `kernels/attention.cu`.
const ATTN_TILE: usize = 64;
/// Batches of at most this many tokens may split their keys over several
/// blocks (decode, where the tokens alone leave the device idle).
const SPLIT_MAX_TOKENS: usize = 16;
/// Most splits per (token, head).
const MAX_SPLITS: usize = 32;
/// Fewest keys a split is given.
const MIN_SPLIT_KEYS: usize = 128;
/// Most blocks in a grid's y dimension.
const MAX_GRID_Y: usize = 65_535;

/// How the keys of a batch are split: `(n_split, keys per split)`.
pub(crate) fn plan_splits(n_tokens: usize, max_keys: usize) -> (usize, usize) {
    if n_tokens > SPLIT_MAX_TOKENS || max_keys <= MIN_SPLIT_KEYS {
        return (1, max_keys.max(1));
    }
    let len = max_keys.div_ceil(MAX_SPLITS).max(MIN_SPLIT_KEYS);
    (max_keys.div_ceil(len), len)
}

/// Floats of the partial results of split attention for `n_head` heads of
/// `head_dim`: sized once for the largest split batch, so serving never
/// allocates for it again.
fn part_len(n_head: usize, head_dim: usize) -> usize {
    SPLIT_MAX_TOKENS * n_head * MAX_SPLITS * (head_dim + 2)
}

impl CudaBackend {
    pub(crate) fn kv_impl(&self, spec: &KvSpec) -> Result<CudaKv> {
        let n_layers = spec.layer_windows.len();
        // A recurrent layer keeps its states instead of K/V rows, and a
        // layer that reads an earlier layer's rows keeps none.
        let layers = rows_layout(spec)?
            .into_iter()
            .map(|rows| rows.map(|r| self.alloc_layer_kv(spec.ty, r)).transpose())
            .collect::<Result<_>>()?;
        let states = (0..n_layers)
            .map(|il| {
                spec.state(il)
                    .map(|shape| self.alloc_states(shape, spec.n_seq))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        self.reserve_staging(spec.max_batch)?;
        if spec.has_states() {
            self.reserve_groups(spec.max_batch)?;
        }
        Ok(CudaKv {
            spec: spec.clone(),
            layers,
            states,
        })
    }

    /// One attention layer's K and V for every sequence, `rows` of type
    /// `ty`.
    fn alloc_layer_kv(&self, ty: KvType, rows: RowsShape) -> Result<LayerKv> {
        let bytes = rows
            .len
            .checked_mul(ty.elem_bytes())
            .ok_or(ComputeError::OutOfMemory {
                what: "the KV cache",
                need_bytes: u64::MAX,
            })?;
        Ok(LayerKv {
            capacity: rows.capacity,
            dim: rows.dim,
            k: memory::alloc(&self.stream, &self.counter, bytes, "the KV cache")?,
            v: memory::alloc(&self.stream, &self.counter, bytes, "the KV cache")?,
        })
    }

    /// Stores the batch's K and V in `layer`'s rows, then attention over
    /// them ([`worker_compute::Backend::attention`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_impl(
        &self,
        kv: &mut CudaKv,
        layer: usize,
        tokens: &[TokenPos],
        q: &CudaBuf,
        k: &CudaBuf,
        v: &CudaBuf,
        p: &AttnParams,
        sinks: Option<&CudaWeight>,
        out: &mut CudaBuf,
    ) -> Result<()> {
        self.attention_over(kv, layer, tokens, q, Some((k, v)), p, sinks, out)
    }

    /// Attention of `layer`: with `store`, the batch's K and V are written
    /// to the layer's own rows first; without, it reads the earlier
    /// layer's rows ([`crate::kv::rows_read`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_over(
        &self,
        kv: &mut CudaKv,
        layer: usize,
        tokens: &[TokenPos],
        q: &CudaBuf,
        store: Option<(&CudaBuf, &CudaBuf)>,
        p: &AttnParams,
        sinks: Option<&CudaWeight>,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let n = tokens.len();
        let sinks = sinks
            .map(|s| s.vector(p.n_head, "the attention sinks"))
            .transpose()?;
        let (spec, lk) = kv.rows_for(layer, store.is_none())?;
        let is_f16 = i32::from(spec.ty == KvType::F16);
        check_attention(spec, lk.dim, tokens, p, q, store, out)?;
        if n == 0 {
            return Ok(());
        }
        let cap = i32_of(lk.capacity, "capacity")?;
        let mut st = self.staging();
        self.stage_tokens(&mut st, tokens)?;
        let mut part = self.take_partials(&mut st, part_len(p.n_head, p.head_dim))?;
        let result = (|| {
            let (Some(seq), Some(pos)) = (st.seq.as_ref(), st.pos.as_ref()) else {
                return Err(ComputeError::Device("staging".into()));
            };
            let call = AttnCall {
                p,
                sinks,
                n,
                kv_dim: lk.dim,
                is_f16,
                cap,
                window: p.window.map_or(0, |w| w.max(1) as i32),
                max_keys: max_keys(tokens, p.window),
                seq: &seq.data,
                pos: &pos.data,
            };
            if let Some((k, v)) = store {
                self.store_kv(&call, lk, k, v)?;
            }
            self.attend(&call, lk, q, out, &mut part)
        })();
        st.attn_part = Some(part);
        result
    }

    /// The split-attention partials, taken out of staging (so that the
    /// staged positions can be borrowed beside them) and at least `len`
    /// long; the caller puts them back.
    fn take_partials(&self, st: &mut Staging, len: usize) -> Result<Counted<f32>> {
        if st.attn_part.as_ref().is_none_or(|s| s.data.len() < len) {
            // Allocations (and frees) are not recorded: run what was.
            self.flush()?;
        }
        Ok(match st.attn_part.take() {
            Some(s) if s.data.len() >= len => s,
            _ => memory::alloc(&self.stream, &self.counter, len, "attention partials")?,
        })
    }

    /// Writes the batch's keys and values into their cache slots.
    fn store_kv(&self, c: &AttnCall<'_>, lk: &mut LayerKv, k: &CudaBuf, v: &CudaBuf) -> Result<()> {
        let (ni, kd) = (c.n as i32, c.kv_dim as i32);
        let mut a = self.stream.launch_builder(&self.k.kv_store);
        a.arg(&k.0.data)
            .arg(&v.0.data)
            .arg(&mut lk.k.data)
            .arg(&mut lk.v.data)
            .arg(&c.is_f16)
            .arg(c.seq)
            .arg(c.pos)
            .arg(&ni)
            .arg(&kd)
            .arg(&c.cap);
        self.launch(a, per_element(c.n * c.kv_dim), "a KV store")
    }

    /// Attention of the batch's queries over the cache into `out`, in
    /// grids of at most [`MAX_GRID_Y`] tokens; keys split as
    /// [`plan_splits`] says, their partials merged.
    fn attend(
        &self,
        c: &AttnCall<'_>,
        lk: &LayerKv,
        q: &CudaBuf,
        out: &mut CudaBuf,
        part: &mut Counted<f32>,
    ) -> Result<()> {
        let p = c.p;
        let q_dim = p.n_head * p.head_dim;
        let (nh, nkv, hd) = (p.n_head as i32, p.n_head_kv as i32, p.head_dim as i32);
        let kd = c.kv_dim as i32;
        // No sinks: a null pointer.
        let null = 0u64;
        let softcap = p.softcap.unwrap_or(0.0);
        let (n_split, split_len) = plan_splits(c.n, c.max_keys);
        let sl = i32_of(split_len, "keys per split")?;
        let mut t0 = 0;
        while t0 < c.n {
            let tn = MAX_GRID_Y.min(c.n - t0);
            let q_view = q.0.data.slice(t0 * q_dim..(t0 + tn) * q_dim);
            let mut o_view = out.0.data.slice_mut(t0 * q_dim..(t0 + tn) * q_dim);
            let (seq_view, pos_view) = (c.seq.slice(t0..t0 + tn), c.pos.slice(t0..t0 + tn));
            let mut a = self.stream.launch_builder(&self.k.attention);
            a.arg(&q_view)
                .arg(&lk.k.data)
                .arg(&lk.v.data)
                .arg(&c.is_f16)
                .arg(&mut o_view)
                .arg(&mut part.data)
                .arg(&seq_view)
                .arg(&pos_view)
                .arg(&nh)
                .arg(&nkv)
                .arg(&hd)
                .arg(&kd)
                .arg(&c.cap)
                .arg(&c.window)
                .arg(&p.scale)
                .arg(&softcap)
                .arg(&sl);
            match c.sinks {
                Some(s) => a.arg(&s.data),
                None => a.arg(&null),
            };
            let cfg = LaunchConfig {
                grid_dim: (p.n_head as u32, tn as u32, n_split as u32),
                block_dim: (ATTN_THREADS, 1, 1),
                shared_mem_bytes: ((2 * p.head_dim + ATTN_TILE) * 4) as u32,
            };
            self.launch(a, cfg, "attention")?;
            if n_split > 1 {
                self.merge_splits(c, part, &mut o_view, tn, n_split)?;
            }
            t0 += tn;
        }
        Ok(())
    }

    /// Merges the `n_split` partial results of each of `tn` tokens into
    /// their rows of the output.
    fn merge_splits(
        &self,
        c: &AttnCall<'_>,
        part: &Counted<f32>,
        o_view: &mut CudaViewMut<'_, f32>,
        tn: usize,
        n_split: usize,
    ) -> Result<()> {
        let (nh, hd, ns) = (c.p.n_head as i32, c.p.head_dim as i32, n_split as i32);
        // No sinks: a null pointer.
        let null = 0u64;
        let mut a = self.stream.launch_builder(&self.k.attention_merge);
        a.arg(&part.data).arg(o_view).arg(&nh).arg(&hd).arg(&ns);
        match c.sinks {
            Some(s) => a.arg(&s.data),
            None => a.arg(&null),
        };
        let cfg = LaunchConfig {
            grid_dim: (c.p.n_head as u32, tn as u32, 1),
            block_dim: (ATTN_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(a, cfg, "merging attention")
    }
}

/// What the kernels of one attention call share.
struct AttnCall<'a> {
    p: &'a AttnParams,
    sinks: Option<&'a Counted<f32>>,
    /// Tokens in the batch.
    n: usize,
    /// Floats of one token's keys (and values).
    kv_dim: usize,
    /// 1 for an f16 cache, 0 for f32.
    is_f16: i32,
    /// Slots per sequence in the layer's cache.
    cap: i32,
    /// The sliding window, 0 for none.
    window: i32,
    /// Most keys any token of the batch attends to.
    max_keys: usize,
    /// Each token's sequence, staged.
    seq: &'a CudaSlice<i32>,
    /// Each token's position, staged.
    pos: &'a CudaSlice<i32>,
}

/// Checks the heads against the width `kv_dim` of the rows read, the
/// buffers against the batch (K and V when they are stored), each token's
/// slot, and a windowed layer's batch against the ring it was sized for.
fn check_attention(
    spec: &KvSpec,
    kv_dim: usize,
    tokens: &[TokenPos],
    p: &AttnParams,
    q: &CudaBuf,
    store: Option<(&CudaBuf, &CudaBuf)>,
    out: &CudaBuf,
) -> Result<()> {
    let n = tokens.len();
    let q_dim = p.n_head * p.head_dim;
    if p.n_head_kv == 0
        || !p.n_head.is_multiple_of(p.n_head_kv)
        || p.n_head_kv * p.head_dim != kv_dim
    {
        return Err(shape(format!(
            "{} query heads, {} KV heads of {} for cache rows {kv_dim} wide",
            p.n_head, p.n_head_kv, p.head_dim
        )));
    }
    need(q, n * q_dim, "attention q")?;
    if let Some((k, v)) = store {
        need(k, n * kv_dim, "attention k")?;
        need(v, n * kv_dim, "attention v")?;
    }
    need(out, n * q_dim, "attention out")?;
    for t in tokens {
        spec.check(t.seq, t.pos)?;
    }
    if p.window.is_some() && n > spec.max_batch {
        // A windowed layer's ring holds the window plus one batch: a
        // larger batch would give two of its tokens the same slot, and
        // which write wins is undefined on a GPU.
        return Err(shape(format!(
            "a batch of {n} tokens exceeds the {} the sliding-window cache was sized for",
            spec.max_batch
        )));
    }
    Ok(())
}

/// Most keys any token attends to: its position and those before, within
/// the window if there is one.
fn max_keys(tokens: &[TokenPos], window: Option<u32>) -> usize {
    tokens
        .iter()
        .map(|t| match window {
            Some(w) => t.pos.min(w.max(1) - 1) as usize + 1,
            None => t.pos as usize + 1,
        })
        .max()
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_batches_split_long_contexts_and_prefill_does_not() {
        assert_eq!(plan_splits(1, 100), (1, 100));
        assert_eq!(plan_splits(1, 1501), (12, 128));
        assert_eq!(plan_splits(4, 8192), (32, 256));
        assert_eq!(plan_splits(1, 100_000), (32, 3125));
        assert_eq!(plan_splits(512, 8192), (1, 8192));
        for (n, keys) in [(1, 129), (16, 5000), (2, 1 << 20)] {
            let (splits, len) = plan_splits(n, keys);
            assert!(splits <= MAX_SPLITS && len >= MIN_SPLIT_KEYS, "{n} {keys}");
            assert!(
                splits * len >= keys && (splits - 1) * len < keys,
                "{n} {keys}"
            );
        }
    }
}
