//! The shape of a KV cache: sequences, positions, and per layer its
//! window, its width, its recurrent state, or the earlier layer whose rows
//! it reads.

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    /// Half precision (the default, as in llama.cpp).
    F16,
    /// Full precision.
    F32,
}

impl KvType {
    /// Bytes per cached value.
    pub fn elem_bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

/// The shape of a KV cache.
#[derive(Debug, Clone, PartialEq)]
pub struct KvSpec {
    /// Sequences it holds (parallel requests).
    pub n_seq: usize,
    /// Positions per sequence.
    pub n_ctx: usize,
    /// Per layer: the sliding window, if the layer has one. A windowed
    /// layer keeps only the window plus one batch of positions.
    pub layer_windows: Vec<Option<u32>>,
    /// K/V width per layer (`n_head_kv * head_dim`).
    pub kv_dim: usize,
    /// The largest batch of positions stored at once.
    pub max_batch: usize,
    /// Element type.
    pub ty: KvType,
    /// Per layer: the state of a recurrent layer, which keeps no K/V rows
    /// (empty: every layer attends).
    pub layer_states: Vec<Option<StateShape>>,
    /// Per layer: its K/V width, where layers differ (empty: every layer
    /// is `kv_dim` wide). `kv_dim` is then the widest of them.
    pub layer_dims: Vec<usize>,
    /// Per layer: the earlier layer whose K/V rows it reads, keeping none
    /// of its own (empty, or `None`: the layer keeps its own rows).
    pub layer_sources: Vec<Option<usize>>,
}

/// The fixed-size state a recurrent layer (a gated delta net) keeps per
/// sequence in place of K/V rows: its short convolution's last inputs and
/// one square matrix per head. Each sequence has a live state and a
/// snapshot (see [`crate::Backend::state_save`]), both f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateShape {
    /// Convolution taps (the kernel size); the state keeps `taps - 1`
    /// past inputs.
    pub conv_taps: usize,
    /// Channels of the convolution (the query, key and value widths).
    pub conv_channels: usize,
    /// Heads of the recurrence (value heads).
    pub n_heads: usize,
    /// Each head's key and value width; its matrix is `head_dim` square.
    pub head_dim: usize,
}

impl StateShape {
    /// Values of the convolution's state.
    pub fn conv_len(&self) -> usize {
        self.conv_taps.saturating_sub(1) * self.conv_channels
    }

    /// Values of the heads' matrices.
    pub fn matrix_len(&self) -> usize {
        self.n_heads * self.head_dim * self.head_dim
    }

    /// Values of one sequence's whole state.
    pub fn len(&self) -> usize {
        self.conv_len() + self.matrix_len()
    }

    /// Whether the state holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl KvSpec {
    /// The recurrent state of `layer`, if it is a recurrent layer.
    pub fn state(&self, layer: usize) -> Option<StateShape> {
        self.layer_states.get(layer).copied().flatten()
    }

    /// Whether any layer keeps a recurrent state.
    pub fn has_states(&self) -> bool {
        self.layer_states.iter().any(Option::is_some)
    }

    /// The K/V width of `layer`.
    pub fn dim(&self, layer: usize) -> usize {
        self.layer_dims.get(layer).copied().unwrap_or(self.kv_dim)
    }

    /// The earlier layer whose rows `layer` reads, if it keeps none.
    pub fn source(&self, layer: usize) -> Option<usize> {
        self.layer_sources.get(layer).copied().flatten()
    }

    /// Whether `layer` keeps K/V rows of its own (neither recurrent nor
    /// reading another layer's).
    pub fn keeps_rows(&self, layer: usize) -> bool {
        self.state(layer).is_none() && self.source(layer).is_none()
    }

    /// Whether every layer keeps its own rows, `kv_dim` wide: the layout
    /// of every backend. Widths per layer and layers that read another's
    /// rows need [`crate::Backend::layered_kv`].
    pub fn is_uniform(&self) -> bool {
        self.layer_dims.iter().all(|&d| d == self.kv_dim)
            && self.layer_sources.iter().all(Option::is_none)
    }

    /// Checks the per-layer layout: widths within `kv_dim`, and every
    /// layer that reads another's rows reads an earlier layer that keeps
    /// its own, with the same width and window.
    pub fn check_layout(&self) -> crate::Result<()> {
        let n = self.layer_windows.len();
        let bad = |why: String| Err(crate::ComputeError::Shape(why));
        if (!self.layer_dims.is_empty() && self.layer_dims.len() != n)
            || (!self.layer_sources.is_empty() && self.layer_sources.len() != n)
        {
            return bad(format!(
                "{} widths and {} sources for {n} cache layers",
                self.layer_dims.len(),
                self.layer_sources.len()
            ));
        }
        if let Some(il) = (0..n).find(|&il| self.dim(il) > self.kv_dim) {
            return bad(format!(
                "layer {il} is {} wide, past the widest {}",
                self.dim(il),
                self.kv_dim
            ));
        }
        for il in 0..n {
            let Some(src) = self.source(il) else {
                continue;
            };
            let fits = src < il
                && self.keeps_rows(src)
                && self.state(il).is_none()
                && self.dim(src) == self.dim(il)
                && self.layer_windows[src] == self.layer_windows[il];
            if !fits {
                return bad(format!(
                    "layer {il} cannot read layer {src}'s rows: it must be an earlier \
                     layer with rows of its own, of the same width and window"
                ));
            }
        }
        Ok(())
    }

    /// Positions a layer keeps per sequence: the window plus one batch for a
    /// windowed layer, else the whole context.
    pub fn layer_capacity(&self, window: Option<u32>) -> usize {
        match window {
            Some(w) => (w as usize + self.max_batch).min(self.n_ctx),
            None => self.n_ctx,
        }
    }

    /// Values one layer's K (or V) holds: `n_seq` sequences of
    /// [`layer_capacity`](Self::layer_capacity) slots of `kv_dim` values.
    /// A size past the address space is `OutOfMemory`.
    pub fn layer_len(&self, window: Option<u32>) -> crate::Result<usize> {
        self.rows_len(window, self.kv_dim)
    }

    /// Values layer `layer`'s K (or V) holds: as
    /// [`layer_len`](Self::layer_len) at the layer's own width, and none
    /// for a layer without rows of its own.
    pub fn layer_len_of(&self, layer: usize) -> crate::Result<usize> {
        if !self.keeps_rows(layer) {
            return Ok(0);
        }
        let window = self.layer_windows.get(layer).copied().flatten();
        self.rows_len(window, self.dim(layer))
    }

    fn rows_len(&self, window: Option<u32>, dim: usize) -> crate::Result<usize> {
        self.n_seq
            .checked_mul(self.layer_capacity(window))
            .and_then(|v| v.checked_mul(dim))
            .ok_or(crate::ComputeError::OutOfMemory {
                what: "the KV cache",
                need_bytes: u64::MAX,
            })
    }

    /// Bytes one layer's K (or V) holds: [`layer_len`](Self::layer_len)
    /// values of the element type.
    pub fn layer_bytes(&self, window: Option<u32>) -> crate::Result<usize> {
        self.layer_len(window)?
            .checked_mul(self.ty.elem_bytes())
            .ok_or(crate::ComputeError::OutOfMemory {
                what: "the KV cache",
                need_bytes: u64::MAX,
            })
    }

    /// Checks that sequence `seq` and position `pos` fit the cache.
    pub fn check(&self, seq: usize, pos: u32) -> crate::Result<()> {
        if seq >= self.n_seq {
            return Err(crate::ComputeError::BadSequence {
                seq,
                n_seq: self.n_seq,
            });
        }
        if pos as usize >= self.n_ctx {
            return Err(crate::ComputeError::ContextFull {
                pos,
                ctx: self.n_ctx,
            });
        }
        Ok(())
    }

    /// Bytes the cache holds (K and V, every layer and sequence).
    pub fn bytes(&self) -> u64 {
        let per = self.ty.elem_bytes();
        self.layer_windows
            .iter()
            .enumerate()
            .map(|(il, w)| match (self.state(il), self.source(il)) {
                // A live state and a snapshot per sequence, f32.
                (Some(st), _) => (2 * 4 * self.n_seq as u64).saturating_mul(st.len() as u64),
                // Another layer's rows: nothing of its own.
                (None, Some(_)) => 0,
                // Saturating: a hostile context size must not wrap to "fits".
                (None, None) => [self.n_seq, self.layer_capacity(*w), self.dim(il)]
                    .iter()
                    .fold(2 * per as u64, |acc: u64, n| acc.saturating_mul(*n as u64)),
            })
            .fold(0u64, u64::saturating_add)
    }
}
