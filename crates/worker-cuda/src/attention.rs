//! The KV cache's allocation and attention over it.

use crate::backend::{CudaBackend, CudaBuf, i32_of, need, shape};
use crate::kernels::per_element;
use crate::kv::{CudaKv, LayerKv};
use crate::memory;
use crate::weight::CudaWeight;
use cudarc::driver::{LaunchConfig, PushKernelArg};
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
        let layers = spec
            .layer_windows
            .iter()
            .map(|w| {
                let capacity = spec.layer_capacity(*w);
                let bytes = spec.layer_bytes(*w)?;
                Ok(LayerKv {
                    capacity,
                    k: memory::alloc(&self.stream, &self.counter, bytes, "the KV cache")?,
                    v: memory::alloc(&self.stream, &self.counter, bytes, "the KV cache")?,
                })
            })
            .collect::<Result<_>>()?;
        self.reserve_staging(spec.max_batch)?;
        Ok(CudaKv {
            spec: spec.clone(),
            layers,
        })
    }

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
        let n = tokens.len();
        let sinks = sinks
            .map(|s| s.vector(p.n_head, "the attention sinks"))
            .transpose()?;
        let kv_dim = kv.spec.kv_dim;
        let q_dim = p.n_head * p.head_dim;
        if p.n_head_kv == 0
            || !p.n_head.is_multiple_of(p.n_head_kv)
            || p.n_head_kv * p.head_dim != kv_dim
        {
            return Err(shape(format!(
                "{} query heads, {} KV heads of {} for a cache {kv_dim} wide",
                p.n_head, p.n_head_kv, p.head_dim
            )));
        }
        need(q, n * q_dim, "attention q")?;
        need(k, n * kv_dim, "attention k")?;
        need(v, n * kv_dim, "attention v")?;
        need(out, n * q_dim, "attention out")?;
        for t in tokens {
            kv.spec.check(t.seq, t.pos)?;
        }
        if n == 0 {
            return Ok(());
        }
        if p.window.is_some() && n > kv.spec.max_batch {
            // A windowed layer's ring holds the window plus one batch: a
            // larger batch would give two of its tokens the same slot, and
            // which write wins is undefined on a GPU.
            return Err(shape(format!(
                "a batch of {n} tokens exceeds the {} the sliding-window cache was sized for",
                kv.spec.max_batch
            )));
        }
        let is_f16 = i32::from(kv.spec.ty == KvType::F16);
        let window = p.window.map_or(0, |w| w.max(1) as i32);
        let max_keys = tokens
            .iter()
            .map(|t| match p.window {
                Some(w) => t.pos.min(w.max(1) - 1) as usize + 1,
                None => t.pos as usize + 1,
            })
            .max()
            .unwrap_or(1);
        let lk = kv
            .layers
            .get_mut(layer)
            .ok_or_else(|| shape(format!("layer {layer} beyond the cache")))?;
        let cap = i32_of(lk.capacity, "capacity")?;
        let mut st = self.staging();
        self.stage_tokens(&mut st, tokens)?;
        let plen = part_len(p.n_head, p.head_dim);
        if st.attn_part.as_ref().is_none_or(|s| s.data.len() < plen) {
            // Allocations (and frees) are not recorded: run what was.
            self.flush()?;
        }
        // Take the partials out so the staged positions can be borrowed too.
        let mut part = match st.attn_part.take() {
            Some(s) if s.data.len() >= plen => s,
            _ => memory::alloc(&self.stream, &self.counter, plen, "attention partials")?,
        };
        let result = (|| {
            let (Some(seq), Some(pos)) = (st.seq.as_ref(), st.pos.as_ref()) else {
                return Err(ComputeError::Device("staging".into()));
            };
            let (ni, kd) = (n as i32, kv_dim as i32);
            let mut a = self.stream.launch_builder(&self.k.kv_store);
            a.arg(&k.0.data)
                .arg(&v.0.data)
                .arg(&mut lk.k.data)
                .arg(&mut lk.v.data)
                .arg(&is_f16)
                .arg(&seq.data)
                .arg(&pos.data)
                .arg(&ni)
                .arg(&kd)
                .arg(&cap);
            self.launch(a, per_element(n * kv_dim), "a KV store")?;

            let (nh, nkv, hd) = (p.n_head as i32, p.n_head_kv as i32, p.head_dim as i32);
            // No sinks: a null pointer.
            let null = 0u64;
            let softcap = p.softcap.unwrap_or(0.0);
            let (n_split, split_len) = plan_splits(n, max_keys);
            let sl = i32_of(split_len, "keys per split")?;
            let ns = n_split as i32;
            let mut t0 = 0;
            while t0 < n {
                let tn = MAX_GRID_Y.min(n - t0);
                let q_view = q.0.data.slice(t0 * q_dim..(t0 + tn) * q_dim);
                let mut o_view = out.0.data.slice_mut(t0 * q_dim..(t0 + tn) * q_dim);
                let (seq_view, pos_view) =
                    (seq.data.slice(t0..t0 + tn), pos.data.slice(t0..t0 + tn));
                let mut a = self.stream.launch_builder(&self.k.attention);
                a.arg(&q_view)
                    .arg(&lk.k.data)
                    .arg(&lk.v.data)
                    .arg(&is_f16)
                    .arg(&mut o_view)
                    .arg(&mut part.data)
                    .arg(&seq_view)
                    .arg(&pos_view)
                    .arg(&nh)
                    .arg(&nkv)
                    .arg(&hd)
                    .arg(&kd)
                    .arg(&cap)
                    .arg(&window)
                    .arg(&p.scale)
                    .arg(&softcap)
                    .arg(&sl);
                match sinks {
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
                    let mut a = self.stream.launch_builder(&self.k.attention_merge);
                    a.arg(&part.data)
                        .arg(&mut o_view)
                        .arg(&nh)
                        .arg(&hd)
                        .arg(&ns);
                    match sinks {
                        Some(s) => a.arg(&s.data),
                        None => a.arg(&null),
                    };
                    let cfg = LaunchConfig {
                        grid_dim: (p.n_head as u32, tn as u32, 1),
                        block_dim: (ATTN_THREADS, 1, 1),
                        shared_mem_bytes: 0,
                    };
                    self.launch(a, cfg, "merging attention")?;
                }
                t0 += tn;
            }
            Ok(())
        })();
        st.attn_part = Some(part);
        result
    }
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
