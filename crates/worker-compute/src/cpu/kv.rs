//! The CPU KV cache: per layer and sequence, K and V rows by position.
//!
//! Layers with a sliding window keep only the window plus one batch of
//! positions, as a ring indexed by `pos % capacity`; the others keep the
//! whole context. Each layer's rows are as wide as its K/V; a layer that
//! reads an earlier layer's rows keeps none. Rows are f16 (llama.cpp's
//! default) or f32.

use super::state::LayerStates;
use crate::error::{ComputeError, Result};
use crate::types::{KvSpec, KvType};
use half::f16;

#[derive(Debug)]
enum Rows {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Rows {
    fn new(ty: KvType, len: usize) -> Result<Self> {
        let bytes = len as u64 * ty.elem_bytes() as u64;
        let oom = |_| ComputeError::OutOfMemory {
            what: "the KV cache",
            need_bytes: bytes,
        };
        Ok(match ty {
            KvType::F16 => {
                let mut v = Vec::new();
                v.try_reserve_exact(len).map_err(oom)?;
                v.resize(len, f16::ZERO);
                Rows::F16(v)
            }
            KvType::F32 => {
                let mut v = Vec::new();
                v.try_reserve_exact(len).map_err(oom)?;
                v.resize(len, 0.0);
                Rows::F32(v)
            }
        })
    }

    fn store(&mut self, at: usize, row: &[f32]) {
        match self {
            Rows::F16(v) => {
                for (d, &s) in v[at..at + row.len()].iter_mut().zip(row) {
                    *d = f16::from_f32(s);
                }
            }
            Rows::F32(v) => v[at..at + row.len()].copy_from_slice(row),
        }
    }

    fn copy_within(&mut self, src: usize, dst: usize, len: usize) {
        match self {
            Rows::F16(v) => v.copy_within(src..src + len, dst),
            Rows::F32(v) => v.copy_within(src..src + len, dst),
        }
    }

    fn load(&self, at: usize, out: &mut [f32]) {
        match self {
            Rows::F16(v) => {
                let n = out.len();
                for (o, s) in out.iter_mut().zip(&v[at..at + n]) {
                    *o = s.to_f32();
                }
            }
            Rows::F32(v) => out.copy_from_slice(&v[at..at + out.len()]),
        }
    }
}

#[derive(Debug)]
struct LayerKv {
    capacity: usize,
    /// Values per row.
    dim: usize,
    k: Rows,
    v: Rows,
}

/// KV cache of every layer and sequence.
#[derive(Debug)]
pub struct CpuKv {
    spec: KvSpec,
    layers: Vec<LayerKv>,
    /// Per layer: the states of a recurrent layer (which keeps no rows).
    states: Vec<Option<LayerStates>>,
}

impl CpuKv {
    pub(crate) fn new(spec: &KvSpec) -> Result<Self> {
        spec.check_layout()?;
        let layers = spec
            .layer_windows
            .iter()
            .enumerate()
            .map(|(il, w)| {
                let capacity = if spec.keeps_rows(il) {
                    spec.layer_capacity(*w)
                } else {
                    0
                };
                let len = spec.layer_len_of(il)?;
                Ok(LayerKv {
                    capacity,
                    dim: spec.dim(il),
                    k: Rows::new(spec.ty, len)?,
                    v: Rows::new(spec.ty, len)?,
                })
            })
            .collect::<Result<_>>()?;
        let states = (0..spec.layer_windows.len())
            .map(|il| {
                spec.state(il)
                    .map(|shape| LayerStates::new(shape, spec.n_seq))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        Ok(CpuKv {
            spec: spec.clone(),
            layers,
            states,
        })
    }

    /// The states of recurrent layer `layer`.
    pub(crate) fn states_mut(&mut self, layer: usize) -> Result<&mut LayerStates> {
        self.states
            .get_mut(layer)
            .and_then(Option::as_mut)
            .ok_or_else(|| ComputeError::Shape(format!("layer {layer} keeps no recurrent state")))
    }

    /// Every recurrent layer's states.
    pub(crate) fn all_states_mut(&mut self) -> impl Iterator<Item = &mut LayerStates> {
        self.states.iter_mut().flatten()
    }

    /// Checks that `seq` is one of the cache's sequences.
    pub(crate) fn check_seq(&self, seq: usize) -> Result<()> {
        self.spec.check(seq, 0)
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.spec.bytes()
    }

    pub(crate) fn kv_type(&self) -> KvType {
        self.spec.ty
    }

    fn slot(&self, layer: usize, seq: usize, pos: u32) -> Result<usize> {
        self.spec.check(seq, pos)?;
        let l = self.layer(layer)?;
        if l.capacity == 0 {
            return Err(ComputeError::Shape(format!(
                "layer {layer} keeps no K/V rows of its own"
            )));
        }
        Ok((seq * l.capacity + pos as usize % l.capacity) * l.dim)
    }

    fn layer(&self, layer: usize) -> Result<&LayerKv> {
        self.layers.get(layer).ok_or_else(|| {
            ComputeError::Shape(format!(
                "layer {layer} of a cache of {} layers",
                self.layers.len()
            ))
        })
    }

    /// The layer whose rows `layer` reads: an earlier one, or its own.
    pub(crate) fn rows_of(&self, layer: usize) -> usize {
        self.spec.source(layer).unwrap_or(layer)
    }

    /// The K/V width of `layer`.
    pub(crate) fn layer_dim(&self, layer: usize) -> usize {
        self.spec.dim(layer)
    }

    pub(crate) fn store(
        &mut self,
        layer: usize,
        seq: usize,
        pos: u32,
        k: &[f32],
        v: &[f32],
    ) -> Result<()> {
        let at = self.slot(layer, seq, pos)?;
        let l = &mut self.layers[layer];
        l.k.store(at, k);
        l.v.store(at, v);
        Ok(())
    }

    /// Copies sequence `from`'s rows of positions `0..positions` to
    /// sequence `to`; a ring (windowed layer) is copied whole.
    pub(crate) fn copy_seq(&mut self, from: usize, to: usize, positions: usize) -> Result<()> {
        self.spec.check(from, 0)?;
        self.spec.check(to, 0)?;
        if positions > self.spec.n_ctx {
            return Err(ComputeError::ContextFull {
                pos: u32::try_from(positions).unwrap_or(u32::MAX),
                ctx: self.spec.n_ctx,
            });
        }
        if from == to {
            return Ok(());
        }
        for l in &mut self.layers {
            let dim = l.dim;
            let rows = if l.capacity < self.spec.n_ctx {
                l.capacity
            } else {
                positions.min(l.capacity)
            };
            let (src, dst) = (from * l.capacity * dim, to * l.capacity * dim);
            l.k.copy_within(src, dst, rows * dim);
            l.v.copy_within(src, dst, rows * dim);
        }
        for st in self.states.iter_mut().flatten() {
            st.copy(from, to, positions)?;
        }
        Ok(())
    }

    /// Loads the K and V rows of `pos` (which must still be held).
    pub(crate) fn load(
        &self,
        layer: usize,
        seq: usize,
        pos: u32,
        k: &mut [f32],
        v: &mut [f32],
    ) -> Result<()> {
        let at = self.slot(layer, seq, pos)?;
        let l = &self.layers[layer];
        l.k.load(at, k);
        l.v.load(at, v);
        Ok(())
    }

    /// The largest batch the cache was sized for (windowed layers keep a
    /// ring of the window plus one batch).
    pub(crate) fn max_batch(&self) -> usize {
        self.spec.max_batch
    }

    /// Whether `layer` reads another layer's rows.
    pub(crate) fn has_source(&self, layer: usize) -> bool {
        self.spec.source(layer).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copying_a_sequence_takes_its_rows_and_its_ring() {
        // Layer 0 keeps the whole context (16); layer 1 a ring of 4 + 2.
        let spec = KvSpec {
            n_seq: 3,
            n_ctx: 16,
            layer_windows: vec![None, Some(4)],
            kv_dim: 2,
            max_batch: 2,
            ty: KvType::F32,
            layer_states: Vec::new(),
            layer_dims: Vec::new(),
            layer_sources: Vec::new(),
        };
        let mut kv = CpuKv::new(&spec).expect("kv");
        let row = |seq: usize, pos: u32| [seq as f32 * 100.0 + pos as f32, -(pos as f32)];
        for pos in 0..10u32 {
            for layer in 0..2 {
                let r = row(0, pos);
                kv.store(layer, 0, pos, &r, &r).expect("store");
            }
        }
        kv.copy_seq(0, 2, 7).expect("copy");
        let (mut k, mut v) = ([0f32; 2], [0f32; 2]);
        for pos in 0..7 {
            kv.load(0, 2, pos, &mut k, &mut v).expect("load");
            assert_eq!(
                (k, v),
                (row(0, pos), row(0, pos)),
                "full layer, position {pos}"
            );
        }
        // The ring (capacity 6) held positions 4..10; all of it came.
        for pos in 4..10 {
            kv.load(1, 2, pos, &mut k, &mut v).expect("load");
            assert_eq!(k, row(0, pos), "ring, position {pos}");
        }
        // Sequence 1 is untouched.
        kv.load(0, 1, 3, &mut k, &mut v).expect("load");
        assert_eq!(k, [0.0, 0.0]);
        assert!(kv.copy_seq(0, 3, 1).is_err());
        assert!(kv.copy_seq(0, 1, 17).is_err());
    }
}
