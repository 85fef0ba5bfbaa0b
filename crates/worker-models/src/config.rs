//! One typed configuration per architecture, read from GGUF metadata once.
//!
//! Every architecture-specific choice the forward pass makes is a field
//! here, filled from the metadata keys and the rules llama.cpp applies; the
//! forward pass never looks at metadata strings.

mod hybrid;
mod layout;
mod multipliers;
mod per_layer;
mod shape;

use crate::error::{ModelError, Result};
use crate::rope::{RopeConfig, RopeOverrides};
pub use hybrid::RecurrentConfig;
use layout::{moe_config, rope_rules, window_layers};
pub use per_layer::LayerShape;
use shape::{Shape, read_shape};
use worker_compute::{Activation, KvSpec, KvType};
use worker_gguf::{ArchMetadata, Metadata};

/// Bounds on shape fields, far past any real model, so a corrupt file is
/// refused before anything is sized from it.
const MAX_LAYERS: usize = 4096;
const MAX_WIDTH: usize = 1 << 20;
const MAX_HEADS: usize = 1 << 12;
const MAX_HEAD_DIM: usize = 1 << 12;
const MAX_CONTEXT: usize = 1 << 26;
/// The supported architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, Mistral (and Mistral Small files written as Llama).
    Llama,
    /// Qwen 2 / 2.5.
    Qwen2,
    /// Phi-3 / Phi-4.
    Phi3,
    /// GPT-2.
    Gpt2,
    /// Gemma 3.
    Gemma3,
    /// Qwen 3 (dense): per-head Q/K RMS norms, no QKV bias.
    Qwen3,
    /// Gemma 2: attention and final logit soft-capping, alternating
    /// sliding-window layers, norms before and after each block.
    Gemma2,
    /// Mistral 3 text models (Ministral, Mistral Small 3.x): Llama with
    /// YaRN settings of its own and an attention temperature by position.
    Mistral3,
    /// SmolLM3: Llama without RoPE in every fourth layer.
    Smollm3,
    /// OLMo 2: norms after each block only, Q/K RMS norms over the whole
    /// projection.
    Olmo2,
    /// Granite 3.x: embedding, attention, residual and logit multipliers.
    Granite,
    /// Qwen 3 mixture of experts: Qwen 3 attention, a routed expert FFN.
    Qwen3Moe,
    /// gpt-oss: attention with biases and a learned sink per head,
    /// alternating sliding-window layers, YaRN; routed experts with biases
    /// and a clamped SwiGLU, weighted by a softmax over the chosen ones.
    GptOss,
    /// Qwen 3.5: gated delta net (linear attention) layers with three of
    /// every four layers, gated full attention in the rest.
    Qwen35,
    /// Qwen 3.5 with routed experts and a gated shared expert.
    Qwen35Moe,
    /// Gemma 4: head sizes and K/V heads by layer kind (windowed or
    /// global), the last layers reading earlier layers' K/V, per-layer
    /// token embeddings, and optionally routed experts beside the dense
    /// feed-forward.
    Gemma4,
}

impl Arch {
    /// The `general.architecture` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Phi3 => "phi3",
            Arch::Gpt2 => "gpt2",
            Arch::Gemma3 => "gemma3",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma2 => "gemma2",
            Arch::Mistral3 => "mistral3",
            Arch::Smollm3 => "smollm3",
            Arch::Olmo2 => "olmo2",
            Arch::Granite => "granite",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::GptOss => "gpt-oss",
            Arch::Qwen35 => "qwen35",
            Arch::Qwen35Moe => "qwen35moe",
            Arch::Gemma4 => "gemma4",
        }
    }

    /// Every supported architecture.
    pub const ALL: &'static [Arch] = &[
        Arch::Llama,
        Arch::Qwen2,
        Arch::Phi3,
        Arch::Gpt2,
        Arch::Gemma3,
        Arch::Qwen3,
        Arch::Gemma2,
        Arch::Mistral3,
        Arch::Smollm3,
        Arch::Olmo2,
        Arch::Granite,
        Arch::Qwen3Moe,
        Arch::GptOss,
        Arch::Qwen35,
        Arch::Qwen35Moe,
        Arch::Gemma4,
    ];

    /// The architecture whose `general.architecture` name is `name`, if
    /// llorch runs it.
    pub fn from_name(name: &str) -> Option<Arch> {
        Self::ALL.iter().copied().find(|a| a.name() == name)
    }
}

/// Which normalization the blocks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// RMS norm (weight only).
    Rms,
    /// Layer norm (weight and bias).
    Layer,
}

/// How the feed-forward block is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnKind {
    /// `down(act(gate(x)) * up(x))`.
    Gated,
    /// `down(act(u[..n_ff]) * u[n_ff..])` with `u = up(x)` (Phi-3's fused gate+up).
    FusedGated,
    /// `down(act(up(x)))` (GPT-2).
    Plain,
}

/// Where the query and key RMS norms apply, if the model has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    /// No Q/K norms.
    None,
    /// Over each head (Gemma 3, Qwen 3): weights of `head_dim`.
    PerHead,
    /// Over the whole projection (OLMo 2): weights of `n_head * head_dim`
    /// and `n_head_kv * head_dim`.
    Whole,
}

/// A feed-forward of routed experts: each token's router logits pick its
/// `n_expert_used` experts and their weights ([`MoeGating`]), and the
/// token's output is the weighted sum of those experts' gated
/// feed-forwards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeConfig {
    /// Experts per layer.
    pub n_expert: usize,
    /// Experts each token uses.
    pub n_expert_used: usize,
    /// Feed-forward width of one expert.
    pub n_ff_exp: usize,
    /// How the router's logits become the chosen experts' weights.
    pub gating: MoeGating,
    /// Feed-forward width of the shared expert every token also goes
    /// through, where the file has one (Qwen 3.5 MoE; its output is
    /// weighted by a sigmoid gate per token).
    pub n_ff_shared: usize,
    /// The experts run beside the dense feed-forward, each behind norms
    /// of its own, their outputs summed; the router reads the residual
    /// stream RMS-normed, divided by `sqrt(n_embd)` and scaled by a
    /// learned vector (Gemma 4).
    pub beside_dense: bool,
}

/// How a router's logits weight the experts a token chose (always those
/// with the largest logits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoeGating {
    /// A softmax over all experts, the chosen ones' probabilities then
    /// divided by their sum (Qwen 3 MoE, Mixtral).
    Softmax,
    /// A softmax over the chosen experts' logits alone (gpt-oss).
    SoftmaxChosen,
}

/// Mistral 3's attention temperature: queries at position `p` are
/// multiplied by `ln(floor(p / floor) + 1) * scale + 1`, so positions past
/// the original context attend more sharply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnTemperature {
    /// Growth per doubling of the position's range.
    pub scale: f32,
    /// Positions per step (the original context length).
    pub floor: f32,
}

impl AttnTemperature {
    /// The query multiplier at position `pos`.
    pub fn factor(&self, pos: u32) -> f32 {
        ((pos as f32 / self.floor).floor() + 1.0).ln() * self.scale + 1.0
    }
}

/// Everything the forward pass needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Arch,
    /// Embedding width.
    pub n_embd: usize,
    /// Layers.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Dimensions per head.
    pub head_dim: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Training context length.
    pub n_ctx_train: usize,
    /// Norm epsilon.
    pub norm_eps: f32,
    /// Norm kind.
    pub norm: NormKind,
    /// RoPE, when the model uses it (GPT-2 has learned positions instead).
    pub rope: Option<RopeConfig>,
    /// Feed-forward activation.
    pub act: Activation,
    /// Feed-forward wiring.
    pub ffn: FfnKind,
    /// Input embeddings are multiplied by this (Gemma: `sqrt(n_embd)`;
    /// Granite: its `embedding_scale`).
    pub embd_scale: Option<f32>,
    /// Queries are multiplied by this before attention (Gemma, Phi-3).
    pub q_prescale: Option<f32>,
    /// Multiplier of `q · k` inside attention.
    pub kq_scale: f32,
    /// Sliding window size and which layers use it.
    pub swa: Option<(u32, Vec<bool>)>,
    /// Soft cap of the final logits.
    pub final_softcap: Option<f32>,
    /// Soft cap of the attention scores (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// RMS norms of q and k.
    pub qk_norm: QkNorm,
    /// Norms before attention and before the feed-forward (every
    /// architecture but OLMo 2).
    pub pre_norms: bool,
    /// Norms after attention and after the feed-forward (Gemma 2 and 3,
    /// OLMo 2).
    pub post_norms: bool,
    /// Block outputs are multiplied by this before the residual add
    /// (Granite).
    pub residual_scale: Option<f32>,
    /// Final logits are divided by this (Granite).
    pub logit_scale: Option<f32>,
    /// Layers `il` with `(il + 1) % n == 0` skip RoPE (SmolLM3: 4).
    pub no_rope_period: Option<usize>,
    /// Queries scaled by position (Mistral 3).
    pub attn_temperature: Option<AttnTemperature>,
    /// Routed experts in place of the dense feed-forward (Qwen 3 MoE,
    /// Llama files with experts such as Mixtral, gpt-oss).
    pub moe: Option<MoeConfig>,
    /// Each query head has a learned logit that joins its attention
    /// softmax as a key with a zero value (gpt-oss).
    pub attn_sinks: bool,
    /// The query projection also gives a gate per query value, and the
    /// attention output is multiplied by its sigmoid (Qwen 3.5).
    pub attn_output_gate: bool,
    /// Recurrent layers among the attention layers (Qwen 3.5).
    pub recurrent: Option<RecurrentConfig>,
    /// Per layer, where layers differ in shape (Gemma 4; empty: every
    /// layer has `head_dim`, `n_head_kv` and `n_ff`, which are otherwise
    /// the largest of the layers').
    pub layer_shapes: Vec<LayerShape>,
    /// Width of each layer's share of the per-layer token embeddings, an
    /// input added after every block (Gemma 4).
    pub per_layer_input: Option<usize>,
    /// Values are RMS-normed per head, without a weight (Gemma 4).
    pub v_norm: bool,
    /// The file's RoPE frequency factors apply to the global layers only
    /// (Gemma 4); otherwise to every layer.
    pub rope_factors_global_only: bool,
}

impl ModelConfig {
    /// Reads the configuration of the model described by `meta`.
    pub fn from_metadata(meta: &Metadata) -> Result<Self> {
        Self::from_metadata_with(meta, &RopeOverrides::default())
    }

    /// [`ModelConfig::from_metadata`] with the user's RoPE settings over
    /// the file's.
    pub fn from_metadata_with(meta: &Metadata, rope: &RopeOverrides) -> Result<Self> {
        let name = meta.architecture()?;
        let arch = Arch::from_name(name).ok_or_else(|| ModelError::UnsupportedArchitecture {
            arch: name.to_string(),
        })?;
        let a = meta.arch()?;
        let s = read_shape(meta, arch)?;
        let moe = moe_config(arch, &a, s.n_ff)?;
        let recurrent = hybrid::recurrent_config(arch, meta, s.n_layer)?;
        let (norm, norm_eps) = read_norm(arch, &a)?;
        let mut rope = read_rope(arch, &a, &s, rope)?;
        let swa = read_window(arch, meta, &a, s.n_layer)?;
        let layers = match (arch, &swa) {
            (Arch::Gemma4, Some((_, kinds))) => {
                Some(per_layer::read(meta, kinds, s.n_head, s.n_embd)?)
            }
            _ => None,
        };
        if let (Some(r), Some(l)) = (rope.as_mut(), &layers) {
            r.n_rot_swa = l.n_rot_swa;
        }
        let m = multipliers::read(arch, &a, s.n_layer, s.n_embd, s.n_head, s.head_dim)?;
        let attn_temperature = multipliers::attn_temperature(
            arch,
            &a,
            rope.as_ref().map_or(s.n_ctx_train, |r| r.n_ctx_orig),
        )?;

        Ok(ModelConfig {
            arch,
            n_embd: s.n_embd,
            n_layer: s.n_layer,
            n_head: s.n_head,
            n_head_kv: s.n_head_kv,
            head_dim: s.head_dim,
            n_ff: s.n_ff,
            n_ctx_train: s.n_ctx_train,
            norm_eps,
            norm,
            rope,
            act: activation(arch),
            ffn: match arch {
                Arch::Gpt2 => FfnKind::Plain,
                Arch::Phi3 => FfnKind::FusedGated,
                _ => FfnKind::Gated,
            },
            embd_scale: m.embd_scale,
            q_prescale: m.q_prescale,
            kq_scale: m.kq_scale,
            swa,
            final_softcap: m.final_softcap,
            attn_softcap: m.attn_softcap,
            qk_norm: qk_norm(arch),
            pre_norms: arch != Arch::Olmo2,
            post_norms: matches!(
                arch,
                Arch::Gemma3 | Arch::Gemma2 | Arch::Olmo2 | Arch::Gemma4
            ),
            residual_scale: m.residual_scale,
            logit_scale: m.logit_scale,
            no_rope_period: (arch == Arch::Smollm3).then_some(4),
            attn_temperature,
            moe,
            attn_sinks: arch == Arch::GptOss,
            attn_output_gate: recurrent.is_some(),
            recurrent,
            per_layer_input: layers.as_ref().and_then(|l| l.per_layer_input),
            layer_shapes: layers.map_or_else(Vec::new, |l| l.shapes),
            v_norm: arch == Arch::Gemma4,
            rope_factors_global_only: arch == Arch::Gemma4,
        })
    }

    /// The feed-forward activation's width: the dense width, or one
    /// expert's in a mixture of experts (whose every layer has experts).
    pub fn ff_width(&self) -> usize {
        self.moe.map_or(self.n_ff, |m| m.n_ff_exp)
    }

    /// The shape of layer `il`: its own where layers differ, else the
    /// model's.
    pub fn layer(&self, il: usize) -> LayerShape {
        self.layer_shapes.get(il).copied().unwrap_or(LayerShape {
            head_dim: self.head_dim,
            n_head_kv: self.n_head_kv,
            n_ff: self.n_ff,
            kv_source: None,
        })
    }

    /// Whether layer `il` is recurrent (a gated delta net).
    pub fn is_recurrent(&self, il: usize) -> bool {
        self.recurrent.as_ref().is_some_and(|r| r.is_recurrent(il))
    }

    /// Whether layer `il` applies RoPE at all (SmolLM3 skips some;
    /// recurrent layers have no positions).
    pub fn has_rope(&self, il: usize) -> bool {
        self.rope.is_some()
            && !self.is_recurrent(il)
            && self
                .no_rope_period
                .is_none_or(|n| !(il + 1).is_multiple_of(n))
    }

    /// Whether layer `il` uses the sliding window.
    pub fn is_swa(&self, il: usize) -> bool {
        self.swa
            .as_ref()
            .is_some_and(|(_, l)| l.get(il).copied().unwrap_or(false))
    }

    /// The sliding window of layer `il`, if it has one.
    pub fn window(&self, il: usize) -> Option<u32> {
        self.swa
            .as_ref()
            .filter(|_| self.is_swa(il))
            .map(|(w, _)| *w)
    }

    /// The shape of a KV cache for `n_seq` sequences of `n_ctx` positions;
    /// known from the metadata alone, so `fetch` can check the fit of a
    /// model before any weight is loaded.
    pub fn kv_spec(&self, n_seq: usize, n_ctx: usize, ty: KvType, max_batch: usize) -> KvSpec {
        let layered = !self.layer_shapes.is_empty();
        let per_layer = |f: &dyn Fn(LayerShape) -> usize| -> Vec<usize> {
            (0..self.n_layer).map(|il| f(self.layer(il))).collect()
        };
        let dims = per_layer(&|l| l.n_head_kv * l.head_dim);
        KvSpec {
            n_seq,
            n_ctx,
            layer_windows: (0..self.n_layer).map(|il| self.window(il)).collect(),
            kv_dim: dims.iter().copied().max().unwrap_or(0),
            max_batch,
            ty,
            layer_states: match &self.recurrent {
                Some(r) => (0..self.n_layer)
                    .map(|il| r.is_recurrent(il).then(|| r.state()))
                    .collect(),
                None => Vec::new(),
            },
            layer_dims: if layered { dims } else { Vec::new() },
            layer_sources: if layered {
                (0..self.n_layer)
                    .map(|il| self.layer(il).kv_source)
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// The norm kind and its epsilon: layer norms for GPT-2, RMS norms
/// elsewhere.
fn read_norm(arch: Arch, a: &ArchMetadata<'_>) -> Result<(NormKind, f32)> {
    Ok(match arch {
        Arch::Gpt2 => (NormKind::Layer, a.get_f32("attention.layer_norm_epsilon")?),
        _ => (
            NormKind::Rms,
            a.get_f32("attention.layer_norm_rms_epsilon")?,
        ),
    })
}

/// The feed-forward activation of `arch`.
fn activation(arch: Arch) -> Activation {
    match arch {
        Arch::Gpt2 | Arch::Gemma3 | Arch::Gemma2 | Arch::Gemma4 => Activation::Gelu,
        Arch::GptOss => Activation::SwigluOai,
        _ => Activation::Silu,
    }
}

/// Where `arch` RMS-norms its queries and keys.
fn qk_norm(arch: Arch) -> QkNorm {
    match arch {
        Arch::Gemma3
        | Arch::Qwen3
        | Arch::Qwen3Moe
        | Arch::Qwen35
        | Arch::Qwen35Moe
        | Arch::Gemma4 => QkNorm::PerHead,
        Arch::Olmo2 => QkNorm::Whole,
        _ => QkNorm::None,
    }
}

/// RoPE, for an architecture that uses it, with the user's settings over
/// the file's.
fn read_rope(
    arch: Arch,
    a: &ArchMetadata<'_>,
    s: &Shape,
    overrides: &RopeOverrides,
) -> Result<Option<RopeConfig>> {
    // A Granite file may switch RoPE off (`rope.scaling.finetuned`
    // false); every other architecture that ropes always does.
    let roped =
        arch != Arch::Granite || a.get_opt::<bool>("rope.scaling.finetuned")?.unwrap_or(true);
    let rope = rope_rules(arch)
        .filter(|_| roped)
        .map(|rules| RopeConfig::from_metadata(a, rules, s.head_dim, s.n_ctx_train, overrides))
        .transpose()?;
    if let Some(r) = &rope {
        hybrid::check_rope_sections(a, r.n_rot)?;
    }
    Ok(rope)
}

/// The sliding window and the layers that use it, with each
/// architecture's defaults.
fn read_window(
    arch: Arch,
    meta: &Metadata,
    a: &ArchMetadata<'_>,
    n_layer: usize,
) -> Result<Option<(u32, Vec<bool>)>> {
    match arch {
        Arch::Gemma3 => window_layers(meta, n_layer, None, 6),
        Arch::Gemma2 => window_layers(meta, n_layer, Some(4096), 2),
        Arch::Olmo2 => window_layers(meta, n_layer, None, 4),
        // Gemma 4 must give its window and list its windowed layers.
        Arch::Gemma4 => {
            let w = a.get_as::<u32>("attention.sliding_window")?;
            let key = a.key("attention.sliding_window_pattern");
            let listed = matches!(
                meta.get(&key),
                Some(worker_gguf::Value::Array(worker_gguf::Array::Bool(_)))
            );
            if w == 0 || !listed {
                return Err(ModelError::Unsupported(format!(
                    "a sliding window of {w} and {key} not a list of booleans: Gemma 4 needs both"
                )));
            }
            window_layers(meta, n_layer, None, 0)
        }
        // gpt-oss must give its window; every other layer uses it.
        Arch::GptOss => {
            a.get_as::<u32>("attention.sliding_window")?;
            window_layers(meta, n_layer, None, 2)
        }
        // llama.cpp disables Phi-3's window; the others have none.
        _ => Ok(None),
    }
}
