//! The CPU backend's recurrent states: per recurrent layer and sequence, a
//! live state, a kept copy of it, and the position each expects next.

use crate::error::{ComputeError, Result};
use crate::types::StateShape;

/// One recurrent layer's states for every sequence.
#[derive(Debug)]
pub(crate) struct LayerStates {
    pub(crate) shape: StateShape,
    live: Vec<f32>,
    kept: Vec<f32>,
    /// Per sequence: the next position its live state expects.
    next: Vec<u32>,
    kept_next: Vec<u32>,
}

impl LayerStates {
    pub(crate) fn new(shape: StateShape, n_seq: usize) -> Result<Self> {
        let len = n_seq
            .checked_mul(shape.len())
            .ok_or(ComputeError::OutOfMemory {
                what: "recurrent states",
                need_bytes: u64::MAX,
            })?;
        let zeroed = || -> Result<Vec<f32>> {
            let mut v = Vec::new();
            v.try_reserve_exact(len)
                .map_err(|_| ComputeError::OutOfMemory {
                    what: "recurrent states",
                    need_bytes: (len as u64).saturating_mul(4),
                })?;
            v.resize(len, 0.0);
            Ok(v)
        };
        Ok(LayerStates {
            shape,
            live: zeroed()?,
            kept: zeroed()?,
            next: vec![0; n_seq],
            kept_next: vec![0; n_seq],
        })
    }

    fn range(&self, seq: usize) -> std::ops::Range<usize> {
        let n = self.shape.len();
        seq * n..(seq + 1) * n
    }

    /// The next position sequence `seq`'s live state expects.
    pub(crate) fn next(&self, seq: usize) -> u32 {
        self.next.get(seq).copied().unwrap_or(0)
    }

    /// Sequence `seq`'s live state, split into its convolution part and
    /// its matrices, zeroed first when `fresh` (a sequence starting at
    /// position 0).
    pub(crate) fn live_mut(&mut self, seq: usize, fresh: bool) -> (&mut [f32], &mut [f32]) {
        let r = self.range(seq);
        let conv = self.shape.conv_len();
        let s = &mut self.live[r];
        if fresh {
            s.fill(0.0);
        }
        s.split_at_mut(conv)
    }

    /// The live states of every sequence, for work spread over them.
    pub(crate) fn all_live_mut(&mut self) -> &mut [f32] {
        &mut self.live
    }

    /// Sequence `seq`'s live state now holds positions `0..next`.
    pub(crate) fn advance(&mut self, seq: usize, next: u32) {
        if let Some(n) = self.next.get_mut(seq) {
            *n = next;
        }
    }

    pub(crate) fn clear(&mut self, seq: usize) {
        let r = self.range(seq);
        self.live[r].fill(0.0);
        self.advance(seq, 0);
    }

    pub(crate) fn save(&mut self, seq: usize) {
        let r = self.range(seq);
        self.kept[r.clone()].copy_from_slice(&self.live[r]);
        self.kept_next[seq] = self.next[seq];
    }

    pub(crate) fn restore(&mut self, seq: usize) {
        let r = self.range(seq);
        self.live[r.clone()].copy_from_slice(&self.kept[r]);
        self.next[seq] = self.kept_next[seq];
    }

    /// Copies to `to`'s live state the state of `from` that holds exactly
    /// `positions`: its live one, else the copy it kept; neither holding
    /// that many is a gap.
    pub(crate) fn copy(&mut self, from: usize, to: usize, positions: usize) -> Result<()> {
        let want = u32::try_from(positions).unwrap_or(u32::MAX);
        let (src, dst) = (self.range(from), self.range(to));
        let held = self.next(from);
        if held == want {
            self.live.copy_within(src, dst.start);
        } else if self.kept_next.get(from) == Some(&want) {
            let kept = self.kept[src].to_vec();
            self.live[dst].copy_from_slice(&kept);
        } else {
            return Err(ComputeError::StateGap {
                seq: from,
                pos: want,
                held,
            });
        }
        self.advance(to, want);
        Ok(())
    }
}
