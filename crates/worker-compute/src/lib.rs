//! The compute backend abstraction and the CPU backend.
//!
//! # The interface
//!
//! A model architecture is written once, against [`Backend`], and runs on
//! any backend. The interface is op-level: the model drives a sequence of
//! coarse operations (a quantized matrix product, an RMS norm over rows,
//! RoPE over heads, attention over the KV cache, a gated activation) on
//! backend-owned buffers. Op-level rather than graph-level, because the five
//! supported architectures are plain transformer stacks whose differences
//! are a handful of choices (norm kind, RoPE style, gating, biases), which
//! read best as ordinary code; and because each op is a natural unit for a
//! CUDA kernel or a CUDA-graph capture later. The seed design's
//! load/start/next-token interface lives one level up, in the engine
//! (`worker-models`), built on these ops.
//!
//! Weights stay in their GGUF encoding ([`WeightSource`] points into the
//! memory map); buffers hold f32 activations; the KV cache belongs to the
//! backend and stores f16 or f32.
//!
//! # The CPU backend
//!
//! [`cpu::CpuBackend`]: matrix products against weights in their GGUF
//! encoding (read from the map, or from a copy on transparent huge pages
//! where the kernel allows: see [`cpu::storage`]), with activations
//! quantized as ggml quantizes them (so results track llama.cpp's), integer
//! dot products with a scalar reference and AVX2/FMA (and AVX-512 VNNI)
//! kernels chosen at run time that give the reference's bits, a rayon
//! thread pool sized by `--threads`, and batched prefill as matrix-matrix
//! products with eight tokens in SIMD lanes.

pub mod cpu;
pub mod draw;
mod error;
mod kv_spec;
pub mod recurrent;
pub mod select;
pub mod support;
mod types;

pub use error::{ComputeError, Result};
pub use support::{is_matrix_type, matrix_type_list, matrix_types};
pub use types::{
    Activation, AttnParams, BackendInfo, BackendKind, DeltaNetParams, GpuInfo, KvSpec, KvType,
    MatrixExtent, RopeParams, RopeStyle, SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT, StateShape, TokenPos,
    WeightSource,
};

/// A compute backend: buffers, weights, a KV cache, and the ops a
/// transformer forward pass is made of.
///
/// Shapes are passed explicitly: a buffer holds `n` rows of `dim` f32
/// values, row-major, and is allocated large enough for the biggest batch.
/// Every op returns a `Result`: on a device, any launch or copy can fail
/// (out of memory, a lost device), and the engine must end the request
/// cleanly rather than panic.
pub trait Backend: Send + Sync {
    /// A weight tensor in its stored encoding.
    type Weight: Send + Sync;
    /// An activation buffer of f32 values.
    type Buf: Send;
    /// The KV cache of all sequences.
    type Kv: Send;

    /// What this backend is, for `/health` and the readiness report.
    fn info(&self) -> BackendInfo;

    /// Bytes the backend itself holds on its device, when it keeps its own
    /// memory (a GPU); `None` when the process's memory is the measure.
    fn allocated_bytes(&self) -> Option<u64> {
        None
    }

    /// Prepares a weight; a 1-D tensor may be expanded to f32 (norms and
    /// biases are tiny), matrices stay in their encoding.
    fn weight(&self, src: WeightSource) -> Result<Self::Weight>;
    /// A zeroed buffer of `len` values.
    fn buf(&self, len: usize) -> Result<Self::Buf>;
    /// Copies the first `out.len()` values of `buf` to the host.
    fn read(&self, buf: &Self::Buf, out: &mut [f32]) -> Result<()>;
    /// Copies `data` into the start of `buf`.
    fn write(&self, buf: &mut Self::Buf, data: &[f32]) -> Result<()>;

    /// `out[i] = table[ids[i]]` (embedding lookup, dequantized).
    fn get_rows(&self, table: &Self::Weight, ids: &[u32], out: &mut Self::Buf) -> Result<()>;
    /// `out[t] = w · x[t]` for `n` rows of `x`.
    fn matmul(&self, w: &Self::Weight, x: &Self::Buf, n: usize, out: &mut Self::Buf) -> Result<()>;
    /// `outs[i][t] = ws[i] · x[t]`: several products of one input (Q, K and
    /// V; gate and up), so a backend may convert the input once.
    fn matmul_shared(
        &self,
        ws: &[&Self::Weight],
        x: &Self::Buf,
        n: usize,
        outs: &mut [&mut Self::Buf],
    ) -> Result<()> {
        if ws.len() != outs.len() {
            return Err(ComputeError::Shape(format!(
                "{} weights but {} outputs for shared products",
                ws.len(),
                outs.len()
            )));
        }
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            self.matmul(w, x, n, out)?;
        }
        Ok(())
    }
    /// `x[t] += bias` for `n` rows of `dim`.
    fn add_bias(&self, x: &mut Self::Buf, n: usize, dim: usize, bias: &Self::Weight) -> Result<()>;
    /// RMS norm of each of `rows` rows of `dim`, times `w` when given.
    fn rms_norm(
        &self,
        x: &mut Self::Buf,
        rows: usize,
        dim: usize,
        w: Option<&Self::Weight>,
        eps: f32,
    ) -> Result<()>;
    /// Layer norm of each row, then `* w + b`.
    fn layer_norm(
        &self,
        x: &mut Self::Buf,
        rows: usize,
        dim: usize,
        w: &Self::Weight,
        b: Option<&Self::Weight>,
        eps: f32,
    ) -> Result<()>;
    /// Rotary embedding of `n_head` heads of `head_dim` for each token.
    fn rope(
        &self,
        x: &mut Self::Buf,
        tokens: &[TokenPos],
        n_head: usize,
        head_dim: usize,
        p: &RopeParams,
    ) -> Result<()>;
    /// `x *= s` over the first `len` values.
    fn scale(&self, x: &mut Self::Buf, len: usize, s: f32) -> Result<()>;
    /// `a += b` over the first `len` values.
    fn add(&self, a: &mut Self::Buf, b: &Self::Buf, len: usize) -> Result<()>;
    /// `gate = act(gate) * up` over the first `len` values
    /// ([`Activation::SwigluOai`] clamps `up` and multiplies by `up + 1`).
    fn glu(&self, gate: &mut Self::Buf, up: &Self::Buf, len: usize, act: Activation) -> Result<()>;
    /// `x = act(x)` over the first `len` values.
    fn act(&self, x: &mut Self::Buf, len: usize, act: Activation) -> Result<()>;
    /// `x = cap * tanh(x / cap)` over the first `len` values.
    fn softcap(&self, x: &mut Self::Buf, len: usize, cap: f32) -> Result<()>;
    /// `dst[rows[i]] += src[i]` for `rows.len()` rows of `dim` (an
    /// expert's output added into the rows of the tokens it serves; no row
    /// is listed twice). The default goes through the host.
    fn add_rows(
        &self,
        dst: &mut Self::Buf,
        src: &Self::Buf,
        rows: &[usize],
        dim: usize,
    ) -> Result<()> {
        let top = rows.iter().max().map_or(0, |&r| r + 1);
        let mut d = vec![0f32; top * dim];
        let mut s = vec![0f32; rows.len() * dim];
        self.read(dst, &mut d)?;
        self.read(src, &mut s)?;
        for (i, &r) in rows.iter().enumerate() {
            for (a, b) in d[r * dim..(r + 1) * dim].iter_mut().zip(&s[i * dim..]) {
                *a += b;
            }
        }
        self.write(dst, &d)
    }
    /// `x[t] *= factors[t]` for `factors.len()` rows of `width` (a
    /// multiplier per token). The default copies the rows through the host.
    fn scale_rows(&self, x: &mut Self::Buf, width: usize, factors: &[f32]) -> Result<()> {
        let mut host = vec![0f32; factors.len() * width];
        self.read(x, &mut host)?;
        for (row, &f) in host.chunks_exact_mut(width.max(1)).zip(factors) {
            row.iter_mut().for_each(|v| *v *= f);
        }
        self.write(x, &host)
    }
    /// Copies rows `rows` (each `dim` wide) of `src` to the first rows of `dst`.
    fn gather_rows(
        &self,
        src: &Self::Buf,
        rows: &[usize],
        dim: usize,
        dst: &mut Self::Buf,
    ) -> Result<()>;
    /// Copies `n` rows of `width` values starting at column `col` of rows of
    /// `stride` in `src` into `dst` (splitting fused projections).
    fn copy_cols(
        &self,
        src: &Self::Buf,
        n: usize,
        stride: usize,
        col: usize,
        width: usize,
        dst: &mut Self::Buf,
    ) -> Result<()>;

    /// The index of the largest value of each of `rows` rows of `dim` (the
    /// lowest index among equal values) into `out`: greedy sampling where
    /// the values live, so a device backend sends only token ids to the
    /// host. The default reads the rows and scans them on the host.
    fn argmax_rows(
        &self,
        x: &Self::Buf,
        rows: usize,
        dim: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let mut host = vec![0f32; rows * dim];
        self.read(x, &mut host)?;
        out.clear();
        out.extend(host.chunks_exact(dim.max(1)).map(draw::argmax));
        Ok(())
    }

    /// The `k` largest values of each of `rows` rows of `dim`, with their
    /// indices, in the order of [`select::before`] (the larger value, then
    /// the lower index), `min(k, dim)` entries per row into `out`: the
    /// candidates of top-k sampling, so a device backend sends a few pairs
    /// per row to the host instead of the vocabulary's logits. The default
    /// reads the rows and selects on the host.
    fn top_k_rows(
        &self,
        x: &Self::Buf,
        rows: usize,
        dim: usize,
        k: usize,
        out: &mut Vec<(u32, f32)>,
    ) -> Result<()> {
        let mut host = vec![0f32; rows * dim];
        self.read(x, &mut host)?;
        select::top_k_rows(&host, dim, k, out);
        Ok(())
    }

    /// A forward pass of `n_tokens` tokens begins. A device backend may
    /// record the step's ops and run them as one launch (CUDA graphs); the
    /// default does nothing.
    fn begin_step(&self, n_tokens: usize) -> Result<()> {
        let _ = n_tokens;
        Ok(())
    }

    /// The forward pass announced by [`Backend::begin_step`] has issued its
    /// last op (or failed): whatever was recorded runs now.
    fn end_step(&self) -> Result<()> {
        Ok(())
    }

    /// A token drawn from each of `rows` rows of `dim` logits: row `i` at
    /// temperature `temps[i]` (`<= 0`: its argmax) with the uniform number
    /// `us[i]`, as [`draw::draw`] defines it, into `out`. Sampling without
    /// a top-k on a device then sends only token ids to the host. The
    /// default reads the rows and draws on the host.
    fn draw_rows(
        &self,
        x: &Self::Buf,
        rows: usize,
        dim: usize,
        temps: &[f32],
        us: &[f32],
        out: &mut Vec<u32>,
    ) -> Result<()> {
        draw::check_params(rows, temps, us)?;
        let mut host = vec![0f32; rows * dim];
        self.read(x, &mut host)?;
        draw::draw_rows(&host, dim, temps, us, out)
    }

    /// A KV cache for the shape in `spec`.
    fn kv(&self, spec: &KvSpec) -> Result<Self::Kv>;
    /// Forgets everything sequence `seq` stored (a new request).
    fn kv_clear(&self, kv: &mut Self::Kv, seq: usize) -> Result<()>;
    /// Whether [`Backend::kv_copy`] is implemented (a request then waits for
    /// rows another is computing rather than computing them too).
    fn can_copy_kv(&self) -> bool {
        false
    }

    /// Copies what sequence `from` stored for positions `0..positions` to
    /// sequence `to` (a windowed layer's whole ring, which holds fewer), so
    /// a request can start from another one's prompt. A recurrent layer's
    /// state is copied when `from`'s live state or its kept copy holds
    /// exactly `positions` (else [`ComputeError::StateGap`]). The default is
    /// [`ComputeError::Unsupported`], and callers then compute the rows.
    fn kv_copy(&self, kv: &mut Self::Kv, from: usize, to: usize, positions: usize) -> Result<()> {
        let _ = (kv, from, to, positions);
        Err(ComputeError::Unsupported(
            "copying cache rows between sequences",
        ))
    }
    /// The causal convolution of recurrent layer `layer`: each token's row
    /// of `x` (the state's channels wide) convolved with the last inputs of
    /// its sequence, by the taps in `w` (a flat F32 weight, each channel's
    /// taps oldest first), into `out`; the sequence's convolution state
    /// then holds its newest inputs (see [`recurrent`]).
    #[allow(clippy::too_many_arguments)]
    fn ssm_conv(
        &self,
        kv: &mut Self::Kv,
        layer: usize,
        tokens: &[TokenPos],
        x: &Self::Buf,
        w: &Self::Weight,
        out: &mut Self::Buf,
    ) -> Result<()> {
        let _ = (kv, layer, tokens, x, w, out);
        Err(ComputeError::Unsupported("recurrent layers"))
    }

    /// The gated delta rule of recurrent layer `layer` over the convolved
    /// rows `qkv`, with each row's decay inputs `alpha` (bias added) and
    /// update logits `beta` (one per value head), the heads' decay rates
    /// `a`, into `out` (rows of `n_v_heads * head_dim`); each sequence's
    /// matrices move on by its tokens (see [`recurrent`]).
    #[allow(clippy::too_many_arguments)]
    fn delta_net(
        &self,
        kv: &mut Self::Kv,
        layer: usize,
        tokens: &[TokenPos],
        qkv: &Self::Buf,
        alpha: &Self::Buf,
        beta: &Self::Buf,
        a: &Self::Weight,
        p: &DeltaNetParams,
        out: &mut Self::Buf,
    ) -> Result<()> {
        let _ = (kv, layer, tokens, qkv, alpha, beta, a, p, out);
        Err(ComputeError::Unsupported("recurrent layers"))
    }

    /// Keeps a copy of sequence `seq`'s recurrent states (every recurrent
    /// layer's), replacing the last one kept: a state cannot go back to an
    /// earlier position, so the engine keeps the state at the end of a
    /// prompt for a later request that extends that prompt.
    fn state_save(&self, kv: &mut Self::Kv, seq: usize) -> Result<()> {
        let _ = (kv, seq);
        Err(ComputeError::Unsupported("recurrent layers"))
    }

    /// Makes the copy [`Backend::state_save`] kept of `seq`'s recurrent
    /// states its live states again.
    fn state_restore(&self, kv: &mut Self::Kv, seq: usize) -> Result<()> {
        let _ = (kv, seq);
        Err(ComputeError::Unsupported("recurrent layers"))
    }

    /// Whether [`Backend::kv`] honours a layout other than the uniform one
    /// ([`KvSpec::is_uniform`]): K/V widths per layer and layers that read
    /// an earlier layer's rows ([`Backend::attention_shared`]).
    fn layered_kv(&self) -> bool {
        false
    }

    /// Attention of each token's query over the rows of the earlier layer
    /// that `layer` reads ([`KvSpec::source`]), this batch's included
    /// (that layer stored them earlier in the same pass), into `out`;
    /// nothing is stored. Otherwise as [`Backend::attention`]. The default
    /// is [`ComputeError::Unsupported`].
    #[allow(clippy::too_many_arguments)]
    fn attention_shared(
        &self,
        kv: &mut Self::Kv,
        layer: usize,
        tokens: &[TokenPos],
        q: &Self::Buf,
        p: &AttnParams,
        sinks: Option<&Self::Weight>,
        out: &mut Self::Buf,
    ) -> Result<()> {
        let _ = (kv, layer, tokens, q, p, sinks, out);
        Err(ComputeError::Unsupported(
            "layers that read another layer's KV cache",
        ))
    }

    /// Stores this batch's K and V for `layer`, then computes attention of
    /// each token's query over its sequence's cache into `out`. `sinks`,
    /// when given, holds one logit per query head (at least `n_head`
    /// values) that joins that head's softmax as a key whose value is zero:
    /// it takes its share of the weights and adds nothing to the output
    /// (gpt-oss's attention sinks).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        kv: &mut Self::Kv,
        layer: usize,
        tokens: &[TokenPos],
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        p: &AttnParams,
        sinks: Option<&Self::Weight>,
        out: &mut Self::Buf,
    ) -> Result<()>;
}
