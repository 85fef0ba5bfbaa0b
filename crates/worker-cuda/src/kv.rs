//! The KV cache in VRAM: per attention layer, K and V of every sequence,
//! f16 or f32; per recurrent layer, every sequence's state.
//!
//! Same layout as the CPU cache: sequence-major, `capacity` slots of the
//! layer's K/V width each ([`KvSpec::dim`]: widths may differ by layer),
//! position p in slot p % capacity (windowed layers keep a ring of the
//! window plus one batch). A layer that reads an earlier layer's rows
//! ([`KvSpec::source`]) keeps none of its own ([`rows_layout`],
//! [`rows_read`]). A recurrent layer keeps no
//! K/V rows: per sequence a live f32 state of [`StateShape::len`] values
//! (the convolution's last inputs, then the heads' transposed matrices)
//! and a kept copy of it, both on the device, and on the host the next
//! position each expects ([`StatePositions`]), so positions are checked
//! before any launch.

use crate::memory::Counted;
use worker_compute::recurrent::{check_continues, rows_by_sequence};
use worker_compute::{ComputeError, KvSpec, KvType, Result, StateShape, TokenPos};

/// One layer's K and V.
#[derive(Debug)]
pub struct LayerKv {
    /// Slots per sequence.
    pub capacity: usize,
    /// Values per slot: the layer's K/V width.
    pub dim: usize,
    /// Keys (raw f16 or f32 bytes).
    pub k: Counted<u8>,
    /// Values.
    pub v: Counted<u8>,
}

/// One recurrent layer's states of every sequence, `shape.len()` floats
/// each, sequence after sequence.
#[derive(Debug)]
pub struct LayerStates {
    /// The shape of one sequence's state.
    pub shape: StateShape,
    /// The live states, which the layer's ops read and move on.
    pub live: Counted<f32>,
    /// The copies `state_save` kept.
    pub kept: Counted<f32>,
    /// Where each sequence's live and kept states stand.
    pub positions: StatePositions,
}

impl LayerStates {
    /// The floats of sequence `seq`'s state in `live` and `kept`.
    pub fn range(&self, seq: usize) -> std::ops::Range<usize> {
        let n = self.shape.len();
        seq * n..(seq + 1) * n
    }
}

/// The sequences of a batch, as the recurrent kernels walk them: each
/// sequence, the position of its first token and its rows in batch order
/// ([`rows_by_sequence`]).
pub type SeqGroups = Vec<(usize, u32, Vec<usize>)>;

/// Per sequence, the next position its live state expects and the one its
/// kept copy expects. A state cannot go back, so a batch must continue
/// each sequence where its state stands, or start it at position 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePositions {
    next: Vec<u32>,
    kept: Vec<u32>,
}

impl StatePositions {
    /// `n_seq` sequences, all at position 0.
    pub fn new(n_seq: usize) -> Self {
        StatePositions {
            next: vec![0; n_seq],
            kept: vec![0; n_seq],
        }
    }

    /// The next position sequence `seq`'s live state expects.
    pub fn next(&self, seq: usize) -> u32 {
        self.next.get(seq).copied().unwrap_or(0)
    }

    fn check_seq(&self, seq: usize) -> Result<()> {
        if seq < self.next.len() {
            Ok(())
        } else {
            Err(ComputeError::BadSequence {
                seq,
                n_seq: self.next.len(),
            })
        }
    }

    /// The batch's rows by sequence, each checked to continue its live
    /// state: consecutive positions from 0 or from where the state stands,
    /// else [`ComputeError::StateGap`].
    pub fn check(&self, tokens: &[TokenPos]) -> Result<SeqGroups> {
        let groups = rows_by_sequence(tokens);
        for (seq, first, rows) in &groups {
            self.check_seq(*seq)?;
            check_continues(*seq, *first, rows, tokens, self.next(*seq))?;
        }
        Ok(groups)
    }

    /// The live states of `groups` (checked by [`Self::check`]) have moved
    /// on by their tokens.
    pub fn advance(&mut self, groups: &SeqGroups, tokens: &[TokenPos]) {
        for (seq, _, rows) in groups {
            let last = rows.last().and_then(|&r| tokens.get(r));
            if let (Some(n), Some(t)) = (self.next.get_mut(*seq), last) {
                *n = t.pos + 1;
            }
        }
    }

    /// Sequence `seq`'s state starts over.
    pub fn clear(&mut self, seq: usize) -> Result<()> {
        self.check_seq(seq)?;
        self.next[seq] = 0;
        Ok(())
    }

    /// Sequence `seq`'s live state was kept.
    pub fn save(&mut self, seq: usize) -> Result<()> {
        self.check_seq(seq)?;
        self.kept[seq] = self.next[seq];
        Ok(())
    }

    /// Sequence `seq`'s kept state is live again.
    pub fn restore(&mut self, seq: usize) -> Result<()> {
        self.check_seq(seq)?;
        self.next[seq] = self.kept[seq];
        Ok(())
    }
}

/// Fields per sequence at the head of a [`group_table`].
pub const GROUP_FIELDS: usize = 4;

/// The table the recurrent kernels read (`kernels/recurrent.cu`): per
/// sequence of the batch `[seq, fresh, start, count]` (`fresh`: it starts
/// at position 0, from the zero state), then the rows of every sequence
/// in turn, `start` indexing that list.
pub fn group_table(groups: &SeqGroups) -> Result<Vec<i32>> {
    let int = |v: usize| {
        i32::try_from(v)
            .map_err(|_| ComputeError::Shape(format!("{v} does not fit a kernel argument")))
    };
    let n_rows: usize = groups.iter().map(|(_, _, rows)| rows.len()).sum();
    let mut table = Vec::with_capacity(GROUP_FIELDS * groups.len() + n_rows);
    let mut start = 0;
    for (seq, first, rows) in groups {
        table.extend([
            int(*seq)?,
            i32::from(*first == 0),
            int(start)?,
            int(rows.len())?,
        ]);
        start += rows.len();
    }
    for (_, _, rows) in groups {
        for &r in rows {
            table.push(int(r)?);
        }
    }
    Ok(table)
}

/// The K/V rows one layer keeps: `capacity` slots per sequence of `dim`
/// values, `len` values in all (in K, and as many in V).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowsShape {
    /// Slots per sequence ([`KvSpec::layer_capacity`] of its window).
    pub capacity: usize,
    /// Values per slot ([`KvSpec::dim`]).
    pub dim: usize,
    /// Values of every sequence's slots ([`KvSpec::layer_len_of`]).
    pub len: usize,
}

/// The rows each layer of `spec` keeps: its own width and window for a
/// layer that keeps rows ([`KvSpec::keeps_rows`]), none for a recurrent
/// layer or one that reads an earlier layer's. The layout is checked
/// first ([`KvSpec::check_layout`]), so a layer that reads another's
/// always finds rows of its own width and window there.
pub fn rows_layout(spec: &KvSpec) -> Result<Vec<Option<RowsShape>>> {
    spec.check_layout()?;
    (0..spec.layer_windows.len())
        .map(|il| {
            if !spec.keeps_rows(il) {
                return Ok(None);
            }
            let window = spec.layer_windows.get(il).copied().flatten();
            Ok(Some(RowsShape {
                capacity: spec.layer_capacity(window),
                dim: spec.dim(il),
                len: spec.layer_len_of(il)?,
            }))
        })
        .collect()
}

/// The layer whose rows attention of `layer` reads: its own when it
/// stores them (`shared` false: [`worker_compute::Backend::attention`]),
/// the earlier layer it reads when it stores none (`shared` true:
/// [`worker_compute::Backend::attention_shared`]). Calling the one a
/// layer is not made for, a recurrent layer, or a layer past the cache,
/// is [`ComputeError::Shape`].
pub fn rows_read(spec: &KvSpec, layer: usize, shared: bool) -> Result<usize> {
    let n = spec.layer_windows.len();
    if layer >= n {
        return Err(ComputeError::Shape(format!(
            "layer {layer} of a cache of {n} layers"
        )));
    }
    if spec.state(layer).is_some() {
        return Err(ComputeError::Shape(format!(
            "layer {layer} keeps no K/V rows"
        )));
    }
    match (spec.source(layer), shared) {
        (None, false) => Ok(layer),
        (Some(src), true) => Ok(src),
        (Some(_), false) => Err(ComputeError::Shape(format!(
            "layer {layer} reads another layer's rows and stores none"
        ))),
        (None, true) => Err(ComputeError::Shape(format!(
            "layer {layer} reads no other layer's rows"
        ))),
    }
}

/// The KV cache of every layer and sequence.
#[derive(Debug)]
pub struct CudaKv {
    /// Its shape.
    pub spec: KvSpec,
    /// Per layer: K and V, none for a recurrent layer or one that reads
    /// an earlier layer's rows.
    pub layers: Vec<Option<LayerKv>>,
    /// Per layer: a recurrent layer's states.
    pub states: Vec<Option<LayerStates>>,
}

impl CudaKv {
    /// Bytes per cached value ([`KvType::elem_bytes`]).
    pub fn elem_bytes(ty: KvType) -> usize {
        ty.elem_bytes()
    }

    /// The rows attention of `layer` reads ([`rows_read`]), beside the
    /// cache's shape.
    pub fn rows_for(&mut self, layer: usize, shared: bool) -> Result<(&KvSpec, &mut LayerKv)> {
        let il = rows_read(&self.spec, layer, shared)?;
        let rows = self
            .layers
            .get_mut(il)
            .and_then(Option::as_mut)
            .ok_or_else(|| ComputeError::Shape(format!("layer {il} keeps no K/V rows")))?;
        Ok((&self.spec, rows))
    }

    /// The states of recurrent layer `layer`.
    pub fn layer_states(&mut self, layer: usize) -> Result<&mut LayerStates> {
        self.states
            .get_mut(layer)
            .and_then(Option::as_mut)
            .ok_or_else(|| ComputeError::Shape(format!("layer {layer} keeps no recurrent state")))
    }

    /// The batch's rows by sequence for recurrent layer `layer`: every
    /// token within the cache, every sequence continuing its state.
    pub fn check_batch(&mut self, layer: usize, tokens: &[TokenPos]) -> Result<SeqGroups> {
        for t in tokens {
            self.spec.check(t.seq, t.pos)?;
        }
        self.layer_states(layer)?.positions.check(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seq: usize, pos: u32) -> TokenPos {
        TokenPos { seq, pos }
    }

    #[test]
    fn the_table_lists_each_sequence_then_the_rows() {
        let tokens = [t(1, 5), t(0, 0), t(1, 6), t(0, 1), t(2, 3)];
        let mut p = StatePositions::new(3);
        p.next[1] = 5;
        p.next[2] = 3;
        let groups = p.check(&tokens).expect("continues");
        let table = group_table(&groups).expect("table");
        assert_eq!(
            table,
            vec![1, 0, 0, 2, 0, 1, 2, 2, 2, 0, 4, 1, 0, 2, 1, 3, 4]
        );
        p.advance(&groups, &tokens);
        assert_eq!((p.next(0), p.next(1), p.next(2)), (2, 7, 4));
    }

    #[test]
    fn gaps_and_unknown_sequences_are_refused() {
        let mut p = StatePositions::new(2);
        p.next[0] = 4;
        assert!(p.check(&[t(0, 4), t(0, 5)]).is_ok());
        assert!(p.check(&[t(0, 0)]).is_ok());
        assert!(matches!(
            p.check(&[t(0, 3)]),
            Err(ComputeError::StateGap {
                seq: 0,
                pos: 3,
                held: 4
            })
        ));
        assert!(matches!(
            p.check(&[t(0, 4), t(0, 6)]),
            Err(ComputeError::StateGap { .. })
        ));
        assert!(matches!(
            p.check(&[t(2, 0)]),
            Err(ComputeError::BadSequence { seq: 2, n_seq: 2 })
        ));
        p.save(0).expect("save");
        p.clear(0).expect("clear");
        assert_eq!(p.next(0), 0);
        p.restore(0).expect("restore");
        assert_eq!(p.next(0), 4);
        assert!(p.save(2).is_err());
    }

    /// Four attention layers as Gemma 4 has them: a windowed layer 32
    /// wide, a global one 96 wide, then one reading each; and a recurrent
    /// layer.
    fn layered() -> KvSpec {
        let state = StateShape {
            conv_taps: 4,
            conv_channels: 8,
            n_heads: 1,
            head_dim: 2,
        };
        KvSpec {
            n_seq: 2,
            n_ctx: 64,
            layer_windows: vec![Some(5), None, Some(5), None, None],
            kv_dim: 96,
            max_batch: 8,
            ty: KvType::F16,
            layer_states: vec![None, None, None, None, Some(state)],
            layer_dims: vec![32, 96, 32, 96, 96],
            layer_sources: vec![None, None, Some(0), Some(1), None],
        }
    }

    #[test]
    fn each_layer_keeps_rows_of_its_own_width_or_none() {
        let spec = layered();
        let rows = |capacity, dim| {
            Some(RowsShape {
                capacity,
                dim,
                len: 2 * capacity * dim,
            })
        };
        assert_eq!(
            rows_layout(&spec).expect("layout"),
            vec![rows(13, 32), rows(64, 96), None, None, None]
        );
        // What the layout holds is what the spec counts (K and V, f16).
        let held: usize = rows_layout(&spec)
            .expect("layout")
            .iter()
            .flatten()
            .map(|r| 2 * 2 * r.len)
            .sum();
        let states = 2 * 4 * 2 * spec.state(4).map_or(0, |s| s.len()) as u64;
        assert_eq!(held as u64 + states, spec.bytes());
        let mut bad = spec.clone();
        bad.layer_sources[3] = Some(0);
        assert!(matches!(rows_layout(&bad), Err(ComputeError::Shape(_))));
    }

    #[test]
    fn a_layer_reads_its_own_rows_or_its_sources() {
        let spec = layered();
        assert_eq!(rows_read(&spec, 0, false).ok(), Some(0));
        assert_eq!(rows_read(&spec, 1, false).ok(), Some(1));
        assert_eq!(rows_read(&spec, 2, true).ok(), Some(0));
        assert_eq!(rows_read(&spec, 3, true).ok(), Some(1));
        for (layer, shared) in [
            (0, true),
            (2, false),
            (3, false),
            (4, false),
            (4, true),
            (5, false),
        ] {
            assert!(
                matches!(rows_read(&spec, layer, shared), Err(ComputeError::Shape(_))),
                "layer {layer}, shared {shared}"
            );
        }
    }
}
