//! Plain data passed between models and backends.

pub use crate::kv_spec::{KvSpec, KvType, StateShape};
use std::sync::Arc;
use worker_gguf::{GgmlType, GgufFile};

/// Which kind of backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The CPU backend.
    Cpu,
    /// The CUDA backend.
    Cuda,
}

impl BackendKind {
    /// `cpu` or `cuda`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether it runs on a device of its own (a GPU).
    pub fn is_device(self) -> bool {
        self != BackendKind::Cpu
    }
}

/// Facts about a backend for `/health` and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// The kind.
    pub kind: BackendKind,
    /// A human-readable device, e.g. `cpu (2 threads, avx2)`.
    pub device: String,
    /// `host` (weights in host memory) or `vram-only`.
    pub memory_architecture: &'static str,
    /// The GPU, for a device backend.
    pub gpu: Option<GpuInfo>,
}

/// What `/health` says about a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// Device name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Compute capability, e.g. `9.0`.
    pub compute_capability: String,
    /// Total VRAM in bytes.
    pub vram_total_bytes: u64,
}

/// A tensor in the GGUF file, to be turned into a backend weight.
#[derive(Debug, Clone)]
pub struct WeightSource {
    /// The file (kept alive by the weight: its data is a view into the map).
    pub file: Arc<GgufFile>,
    /// The tensor name.
    pub name: String,
    /// Element type.
    pub ty: GgmlType,
    /// Shape in GGUF order (`dims[0]` is the row length).
    pub dims: Vec<u64>,
    /// For a tensor stacked over experts (its last dimension): the one
    /// expert this weight is, a matrix of a 3-D tensor or a vector (a
    /// bias) of a 2-D one. `None`: the whole tensor.
    pub expert: Option<usize>,
}

/// Where a weight's matrix lies within its tensor's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatrixExtent {
    /// Rows (output width).
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
    /// Byte offset within the tensor's data.
    pub offset: usize,
    /// Bytes.
    pub len: usize,
}

impl WeightSource {
    /// The source of expert `expert` of the stacked tensor `name`.
    pub fn expert_of(mut self, expert: usize) -> Self {
        self.expert = Some(expert);
        self
    }

    /// Whether this source is a vector (a norm, a bias, one expert's bias),
    /// which backends decode to f32, rather than a matrix kept in its
    /// encoding.
    pub fn is_vector(&self) -> bool {
        match self.expert {
            None => self.dims.len() == 1,
            Some(_) => self.dims.len() == 2,
        }
    }

    /// The extent of this source's matrix in a tensor of `n_bytes` bytes
    /// (the whole tensor, or one expert's slice, which must exist).
    pub fn extent(&self, n_bytes: u64) -> crate::Result<MatrixExtent> {
        let bad =
            |why: String| crate::ComputeError::Shape(format!("tensor {:?}: {why}", self.name));
        let cols = *self
            .dims
            .first()
            .ok_or_else(|| bad("no dimensions".into()))?;
        let total_rows: u64 = self.dims.iter().skip(1).product();
        if cols == 0 || total_rows == 0 {
            return Err(bad("an empty matrix".into()));
        }
        let n_bytes = usize::try_from(n_bytes).map_err(|_| bad("too large".into()))?;
        let whole = MatrixExtent {
            rows: total_rows as usize,
            cols: cols as usize,
            offset: 0,
            len: n_bytes,
        };
        let Some(e) = self.expert else {
            return Ok(whole);
        };
        // A stack of matrices, or of vectors (one row each).
        let (rows, n_expert) = match self.dims[..] {
            [_, rows, n_expert] => (rows, n_expert),
            [_, n_expert] => (1, n_expert),
            _ => {
                return Err(bad(format!(
                    "expert {e} of a tensor of {} dimensions (2 or 3 needed)",
                    self.dims.len()
                )));
            }
        };
        if e as u64 >= n_expert {
            return Err(bad(format!("expert {e} of {n_expert}")));
        }
        let len = n_bytes / n_expert as usize;
        Ok(MatrixExtent {
            rows: rows as usize,
            cols: cols as usize,
            offset: e * len,
            len,
        })
    }
}

/// A token's place in a batch: which sequence, which position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPos {
    /// The sequence (KV cache slot).
    pub seq: usize,
    /// The position within the sequence.
    pub pos: u32,
}

/// How RoPE pairs dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)` (llama).
    Normal,
    /// Halves `(i, i + n/2)` (GPT-NeoX: qwen2, phi3, gemma3).
    Neox,
}

/// RoPE parameters for one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeParams {
    /// Pairing style.
    pub style: RopeStyle,
    /// Rotated dimensions per head (the rest pass through).
    pub n_rot: usize,
    /// Frequency base.
    pub freq_base: f32,
    /// Linear position scale (1 = none).
    pub freq_scale: f32,
    /// Per-pair frequency divisors (Llama 3 `rope_freqs`, Phi-3 LongRoPE),
    /// `n_rot / 2` long.
    pub freq_factors: Option<Vec<f32>>,
    /// YaRN: how much of the unscaled angle is mixed back into the pairs
    /// below `corr_dims` (0 = plain scaling; 1 for YaRN models).
    pub ext_factor: f32,
    /// YaRN: the pair range over which scaled and unscaled angles are
    /// blended (pairs below the first keep the unscaled angle).
    pub corr_dims: [f32; 2],
    /// Multiplies cos and sin, so q·k by its square (YaRN and LongRoPE
    /// attention factor; 1 = none).
    pub attn_factor: f32,
}

impl RopeParams {
    /// Plain RoPE: no scaling, no factors.
    pub fn plain(style: RopeStyle, n_rot: usize, freq_base: f32) -> Self {
        RopeParams {
            style,
            n_rot,
            freq_base,
            freq_scale: 1.0,
            freq_factors: None,
            ext_factor: 0.0,
            corr_dims: [0.0, 0.0],
            attn_factor: 1.0,
        }
    }

    /// The cosine and sine of pair `i`'s angle at position `pos`, given
    /// `theta = pos * theta_scale^i` (the caller iterates the power, as
    /// llama.cpp does, so results match it bit for bit): YaRN's blend of the
    /// scaled and unscaled angle, then the attention factor.
    pub fn cos_sin(&self, i: usize, theta: f32) -> (f32, f32) {
        let ff = self
            .freq_factors
            .as_ref()
            .and_then(|f| f.get(i))
            .copied()
            .unwrap_or(1.0);
        let extrap = theta / ff;
        let interp = self.freq_scale * extrap;
        let (angle, mscale) = if self.ext_factor != 0.0 {
            let [low, high] = self.corr_dims;
            let y = (i as f32 - low) / (high - low).max(0.001);
            let mix = (1.0 - y.clamp(0.0, 1.0)) * self.ext_factor;
            (
                interp * (1.0 - mix) + extrap * mix,
                self.attn_factor * (1.0 + 0.1 * (1.0 / self.freq_scale).ln()),
            )
        } else {
            (interp, self.attn_factor)
        };
        (angle.cos() * mscale, angle.sin() * mscale)
    }
}

/// Attention parameters for one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnParams {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer).
    pub n_head_kv: usize,
    /// Dimensions per head.
    pub head_dim: usize,
    /// Multiplier of `q · k`.
    pub scale: f32,
    /// A sliding window: a query at `p` sees keys at `p - w + 1 ..= p`.
    pub window: Option<u32>,
    /// Soft cap of the attention logits.
    pub softcap: Option<f32>,
}

/// The gated delta rule of a recurrent layer: how its convolved rows split
/// into queries, keys and values, and the norm epsilon of its queries and
/// keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeltaNetParams {
    /// Query and key heads; value head `h` reads key head `h % n_k_heads`.
    pub n_k_heads: usize,
    /// Value heads (the state's heads).
    pub n_v_heads: usize,
    /// Width of every head.
    pub head_dim: usize,
    /// Epsilon of the queries' and keys' L2 norms.
    pub eps: f32,
}

impl DeltaNetParams {
    /// Width of a convolved row: queries, keys, then values.
    pub fn channels(&self) -> usize {
        (2 * self.n_k_heads + self.n_v_heads) * self.head_dim
    }
}

/// Activation functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)`.
    Silu,
    /// `1 / (1 + exp(-x))` (output gates).
    Sigmoid,
    /// GELU, tanh approximation, evaluated as ggml does (through f16).
    Gelu,
    /// gpt-oss's clamped SwiGLU: the gate `x` is capped at
    /// [`SWIGLU_OAI_LIMIT`] and gives `x * sigmoid(SWIGLU_OAI_ALPHA * x)`;
    /// in a gated product the up value is clamped to
    /// `±SWIGLU_OAI_LIMIT` and offset by one, `(up + 1)`.
    SwigluOai,
}

/// The sigmoid's slope in [`Activation::SwigluOai`], as gpt-oss was
/// trained with it.
pub const SWIGLU_OAI_ALPHA: f32 = 1.702;
/// The clamp of [`Activation::SwigluOai`]'s gate (above) and up value
/// (both sides).
pub const SWIGLU_OAI_LIMIT: f32 = 7.0;

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dims: &[u64], expert: Option<usize>) -> WeightSource {
        let file = worker_gguf::GgufWriter::new().to_bytes();
        WeightSource {
            file: Arc::new(GgufFile::from_bytes(file).expect("an empty file parses")),
            name: "w".into(),
            ty: GgmlType::F32,
            dims: dims.to_vec(),
            expert,
        }
    }

    #[test]
    fn an_expert_is_its_slice_of_the_stacked_tensor() {
        // 4 experts of 3 rows of 8 f32 values: 96 bytes each.
        let bytes = 4 * 3 * 8 * 4;
        let whole = source(&[8, 3, 4], None).extent(bytes).expect("whole");
        assert_eq!(
            (whole.rows, whole.cols, whole.offset, whole.len),
            (12, 8, 0, 384)
        );
        let third = source(&[8, 3, 4], Some(2)).extent(bytes).expect("expert");
        assert_eq!(
            (third.rows, third.cols, third.offset, third.len),
            (3, 8, 192, 96)
        );
        assert!(
            source(&[8, 3, 4], Some(4)).extent(bytes).is_err(),
            "past the last expert"
        );
        assert!(
            source(&[8, 12, 2, 2], Some(0)).extent(bytes).is_err(),
            "not a stack"
        );
        // A stack of 12 vectors of 8 (per-expert biases): expert 5 is one
        // row, 32 bytes in.
        let bias = source(&[8, 12], Some(5));
        assert!(bias.is_vector() && !source(&[8, 3, 4], Some(1)).is_vector());
        let row = bias.extent(12 * 8 * 4).expect("bias row");
        assert_eq!((row.rows, row.cols, row.offset, row.len), (1, 8, 160, 32));
        assert!(source(&[0, 3, 4], None).extent(0).is_err(), "empty");
    }

    #[test]
    fn a_recurrent_layer_counts_its_states_not_rows() {
        let state = StateShape {
            conv_taps: 4,
            conv_channels: 10,
            n_heads: 2,
            head_dim: 3,
        };
        assert_eq!((state.conv_len(), state.matrix_len()), (30, 18));
        let spec = KvSpec {
            n_seq: 2,
            n_ctx: 100,
            layer_windows: vec![None, None],
            kv_dim: 8,
            max_batch: 4,
            ty: KvType::F16,
            layer_states: vec![Some(state), None],
            layer_dims: Vec::new(),
            layer_sources: Vec::new(),
        };
        // The attending layer: K and V of 2 × 100 × 8 f16 values. The
        // recurrent one: a live state and a kept copy per sequence, f32.
        assert_eq!(spec.bytes(), 2 * 2 * 100 * 8 * 2 + 2 * 2 * 48 * 4);
    }
}
