//! The KV cache's allocation and attention over it.

use crate::backend::{CudaBackend, CudaBuf, i32_of, need, shape};
use crate::kernels::per_element;
use crate::kv::{CudaKv, LayerKv};
use crate::memory;
use cudarc::driver::{LaunchConfig, PushKernelArg};
use worker_compute::{AttnParams, ComputeError, KvSpec, KvType, Result, TokenPos};

/// Most attention scores held at once (64 MiB of f32).
const SCORE_BUDGET: usize = 16 << 20;

impl CudaBackend {
    pub(crate) fn kv_impl(&self, spec: &KvSpec) -> Result<CudaKv> {
        let eb = CudaKv::elem_bytes(spec.ty);
        let layers = spec
            .layer_windows
            .iter()
            .map(|w| {
                let capacity = spec.layer_capacity(*w);
                let bytes = spec
                    .n_seq
                    .checked_mul(capacity)
                    .and_then(|v| v.checked_mul(spec.kv_dim))
                    .and_then(|v| v.checked_mul(eb))
                    .ok_or(ComputeError::OutOfMemory {
                        what: "the KV cache",
                        need_bytes: u64::MAX,
                    })?;
                Ok(LayerKv {
                    capacity,
                    k: memory::alloc(&self.stream, &self.counter, bytes, "the KV cache")?,
                    v: memory::alloc(&self.stream, &self.counter, bytes, "the KV cache")?,
                })
            })
            .collect::<Result<_>>()?;
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
        out: &mut CudaBuf,
    ) -> Result<()> {
        let n = tokens.len();
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
        // Scores go to scratch rows of `max_keys`; tokens run in chunks so
        // the scratch stays within a fixed budget whatever the context.
        let chunk = (SCORE_BUDGET / (p.n_head * max_keys).max(1)).clamp(1, n);
        let scratch_len = chunk * p.n_head * max_keys;
        // Take the scratch out so the staged positions can be borrowed too.
        let mut scratch = match st.scratch.take() {
            Some(s) if s.data.len() >= scratch_len => s,
            _ => memory::alloc(&self.stream, &self.counter, scratch_len, "attention scores")?,
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
            let softcap = p.softcap.unwrap_or(0.0);
            let mk = i32_of(max_keys, "keys")?;
            let q_dim = p.n_head * p.head_dim;
            let mut t0 = 0;
            while t0 < n {
                let tn = chunk.min(n - t0);
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
                    .arg(&mut scratch.data)
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
                    .arg(&mk);
                let cfg = LaunchConfig {
                    grid_dim: (p.n_head as u32, tn as u32, 1),
                    block_dim: (128, 1, 1),
                    shared_mem_bytes: (p.head_dim * 4) as u32,
                };
                self.launch(a, cfg, "attention")?;
                t0 += tn;
            }
            Ok(())
        })();
        st.scratch = Some(scratch);
        result
    }
}
