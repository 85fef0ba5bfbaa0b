//! [`PreparedActs`]: a call's activations converted once to the form the
//! weight type's dot product wants (f16, bf16, or 8-bit blocks), and for
//! the tile kernels interleaved in groups of eight tokens.

use super::act_tiles::{Q8_0x8, Q8Kx8, groups_for, interleave_q8_0, interleave_q8_k};
use super::dot::{ActKind, ActRow, act_kind};
use super::qact::{Q8_0, Q8_1, Q8K, quantize_q8_0_into, quantize_q8_1_into, quantize_q8_k_into};
use half::{bf16, f16};
use rayon::prelude::*;
use worker_gguf::GgmlType;

/// Activations of `n_tok` tokens, converted for one weight type.
#[derive(Debug, Default)]
pub struct PreparedActs {
    kind: Option<ActKind>,
    cols: usize,
    f16: Vec<f16>,
    bf16: Vec<bf16>,
    q8_0: Vec<Q8_0>,
    q8_1: Vec<Q8_1>,
    q8k: Vec<Q8K>,
    /// Groups of eight tokens (the last one maybe padded), interleaved for
    /// the tile kernels (prepared only when those kernels will run).
    pub(super) q8_0x8: Vec<Q8_0x8>,
    pub(super) q8kx8: Vec<Q8Kx8>,
    pub(super) groups: usize,
}

impl PreparedActs {
    /// Converts `x` (`n_tok` rows of `cols`) for weights of type `ty`;
    /// with `tiles`, also interleaves groups of eight tokens for the tile
    /// kernels (for the Q8_0 and Q8_K forms).
    pub fn prepare(&mut self, ty: GgmlType, x: &[f32], cols: usize, tiles: bool) {
        let kind = act_kind(ty);
        self.kind = kind;
        self.cols = cols;
        self.groups = 0;
        let n_tok = x.len() / cols.max(1);
        // Token rows are quantized in parallel (this runs inside the
        // backend's pool).
        match kind {
            Some(ActKind::F16) => {
                self.f16.clear();
                self.f16.extend(x.iter().map(|&v| f16::from_f32(v)));
            }
            Some(ActKind::Bf16) => {
                self.bf16.clear();
                self.bf16.extend(x.iter().map(|&v| bf16::from_f32(v)));
            }
            Some(ActKind::Q8_0) => {
                self.q8_0.clear();
                self.q8_0.resize(n_tok * cols / 32, Q8_0::ZERO);
                self.q8_0
                    .par_chunks_mut(cols / 32)
                    .zip(x.par_chunks(cols))
                    .for_each(|(o, row)| quantize_q8_0_into(row, o));
            }
            Some(ActKind::Q8_1) => {
                self.q8_1.clear();
                self.q8_1.resize(n_tok * cols / 32, Q8_1::ZERO);
                self.q8_1
                    .par_chunks_mut(cols / 32)
                    .zip(x.par_chunks(cols))
                    .for_each(|(o, row)| quantize_q8_1_into(row, o));
            }
            Some(ActKind::Q8K) => {
                self.q8k.clear();
                self.q8k.resize(n_tok * cols / 256, Q8K::ZERO);
                self.q8k
                    .par_chunks_mut(cols / 256)
                    .zip(x.par_chunks(cols))
                    .for_each(|(o, row)| quantize_q8_k_into(row, o));
            }
            Some(ActKind::F32) | None => {}
        }
        if tiles && groups_for(n_tok) > 0 {
            match kind {
                Some(ActKind::Q8_0) => {
                    interleave_q8_0(&self.q8_0, cols / 32, n_tok, &mut self.q8_0x8)
                }
                Some(ActKind::Q8K) => {
                    interleave_q8_k(&self.q8k, cols / 256, n_tok, &mut self.q8kx8)
                }
                _ => return,
            }
            self.groups = groups_for(n_tok);
        }
    }

    /// Token `t`'s activations in the prepared form (`x` itself for f32).
    pub(super) fn row<'a>(&'a self, x: &'a [f32], t: usize) -> ActRow<'a> {
        let c = self.cols;
        match self.kind {
            Some(ActKind::F16) => ActRow::F16(&self.f16[t * c..(t + 1) * c]),
            Some(ActKind::Bf16) => ActRow::Bf16(&self.bf16[t * c..(t + 1) * c]),
            Some(ActKind::Q8_0) => ActRow::Q8_0(&self.q8_0[t * c / 32..(t + 1) * c / 32]),
            Some(ActKind::Q8_1) => ActRow::Q8_1(&self.q8_1[t * c / 32..(t + 1) * c / 32]),
            Some(ActKind::Q8K) => ActRow::Q8K(&self.q8k[t * c / 256..(t + 1) * c / 256]),
            Some(ActKind::F32) | None => ActRow::F32(&x[t * c..(t + 1) * c]),
        }
    }
}
