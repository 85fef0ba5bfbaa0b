//! One typed configuration per architecture, read from GGUF metadata once.
//!
//! Every architecture-specific choice the forward pass makes is a field
//! here, filled from the metadata keys and the rules llama.cpp applies; the
//! forward pass never looks at metadata strings.

use crate::error::{ModelError, Result};
use crate::rope::{ArchRope, RopeConfig, RopeOverrides, SwaRope};
use worker_compute::{Activation, KvSpec, KvType, RopeStyle};
use worker_gguf::Metadata;

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
        let n_embd = a.get_as::<usize>("embedding_length")?;
        let n_layer = a.get_as::<usize>("block_count")?;
        let n_head = layer_count(meta, "attention.head_count", n_layer)?.ok_or_else(|| {
            ModelError::Metadata(worker_gguf::GgufError::MissingKey {
                key: a.key("attention.head_count"),
            })
        })?;
        let n_head_kv = layer_count(meta, "attention.head_count_kv", n_layer)?.unwrap_or(n_head);
        let head_dim = a
            .get_opt::<usize>("attention.key_length")?
            .unwrap_or(n_embd / n_head.max(1));
        if let Some(v) = a.get_opt::<usize>("attention.value_length")?
            && v != head_dim
        {
            return Err(ModelError::Unsupported(format!(
                "key length {head_dim} differs from value length {v}"
            )));
        }
        // Every count below sizes an allocation (a KV spec per layer, a
        // cache of n_head_kv * head_dim per position): bound them first.
        for (suffix, value, max) in [
            ("block_count", n_layer, MAX_LAYERS),
            ("embedding_length", n_embd, MAX_WIDTH),
            ("attention.head_count", n_head, MAX_HEADS),
            ("attention.head_count_kv", n_head_kv, MAX_HEADS),
            ("attention.key_length", head_dim, MAX_HEAD_DIM),
        ] {
            if value > max {
                return Err(ModelError::ImplausibleShape {
                    key: a.key(suffix),
                    value,
                    max,
                });
            }
        }
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(ModelError::Unsupported(format!(
                "{n_head} query heads cannot be grouped over {n_head_kv} key/value heads"
            )));
        }
        let n_ff = a.get_as::<usize>("feed_forward_length")?;
        let n_ctx_train = a.get_as::<usize>("context_length")?;
        for (suffix, value, max) in [
            ("feed_forward_length", n_ff, MAX_WIDTH * 16),
            ("context_length", n_ctx_train, MAX_CONTEXT),
        ] {
            if value > max {
                return Err(ModelError::ImplausibleShape {
                    key: a.key(suffix),
                    value,
                    max,
                });
            }
        }

        let (norm, norm_eps) = match arch {
            Arch::Gpt2 => (NormKind::Layer, a.get_f32("attention.layer_norm_epsilon")?),
            _ => (
                NormKind::Rms,
                a.get_f32("attention.layer_norm_rms_epsilon")?,
            ),
        };
        let rope = rope_rules(arch)
            .map(|rules| RopeConfig::from_metadata(&a, rules, head_dim, n_ctx_train, rope))
            .transpose()?;
        let swa = match arch {
            Arch::Gemma3 => window_layers(meta, n_layer, None, 6)?,
            Arch::Gemma2 => window_layers(meta, n_layer, Some(4096), 2)?,
            Arch::Olmo2 => window_layers(meta, n_layer, None, 4)?,
            // llama.cpp disables Phi-3's window; the others have none.
            _ => None,
        };

        let inv_sqrt_head = 1.0 / (head_dim as f32).sqrt();
        // `attention.scale` (read by Llama and Granite) replaces
        // 1/sqrt(head_dim); 0 means unset.
        let stored_scale = || -> Result<f32> {
            Ok(a.get_opt::<f32>("attention.scale")?
                .filter(|&s| s != 0.0)
                .unwrap_or(inv_sqrt_head))
        };
        let (q_prescale, kq_scale) = match arch {
            Arch::Gemma3 | Arch::Phi3 => (Some(inv_sqrt_head), 1.0),
            // Gemma 2 27B scales by the width per head rather than the
            // head size; the smaller ones by the head size.
            Arch::Gemma2 if n_layer == 46 => (Some(1.0 / ((n_embd / n_head) as f32).sqrt()), 1.0),
            Arch::Gemma2 => (Some(inv_sqrt_head), 1.0),
            Arch::Llama | Arch::Granite => (None, stored_scale()?),
            _ => (None, inv_sqrt_head),
        };
        let positive = |key: &str| -> Result<Option<f32>> {
            match a.get_opt::<f32>(key)? {
                Some(v) if !(v.is_finite() && v > 0.0) => Err(ModelError::Unsupported(format!(
                    "{} is {v}: it must be a positive number",
                    a.key(key)
                ))),
                v => Ok(v),
            }
        };
        let embd_scale = match arch {
            Arch::Gemma3 | Arch::Gemma2 => Some((n_embd as f32).sqrt()),
            Arch::Granite => positive("embedding_scale")?,
            _ => None,
        };
        let (final_softcap, attn_softcap) = match arch {
            // Gemma 2 caps both, at 30 and 50 unless the file says.
            Arch::Gemma2 => (
                Some(positive("final_logit_softcapping")?.unwrap_or(30.0)),
                Some(positive("attn_logit_softcapping")?.unwrap_or(50.0)),
            ),
            _ => (
                a.get_opt::<f32>("final_logit_softcapping")?
                    .filter(|&c| c > 0.0),
                None,
            ),
        };
        let (residual_scale, logit_scale) = match arch {
            Arch::Granite => (
                positive("residual_scale")?,
                Some(positive("logit_scale")?.ok_or_else(|| {
                    ModelError::Metadata(worker_gguf::GgufError::MissingKey {
                        key: a.key("logit_scale"),
                    })
                })?),
            ),
            _ => (None, None),
        };
        let attn_temperature = match (arch, positive("attention.temperature_scale")?) {
            (Arch::Mistral3, Some(scale)) => {
                let floor = rope.as_ref().map_or(n_ctx_train, |r| r.n_ctx_orig);
                if floor == 0 {
                    return Err(ModelError::Unsupported(
                        "an attention temperature needs an original context length above 0".into(),
                    ));
                }
                Some(AttnTemperature {
                    scale,
                    floor: floor as f32,
                })
            }
            _ => None,
        };

        Ok(ModelConfig {
            arch,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_ctx_train,
            norm_eps,
            norm,
            rope,
            act: match arch {
                Arch::Gpt2 | Arch::Gemma3 | Arch::Gemma2 => Activation::Gelu,
                _ => Activation::Silu,
            },
            ffn: match arch {
                Arch::Gpt2 => FfnKind::Plain,
                Arch::Phi3 => FfnKind::FusedGated,
                _ => FfnKind::Gated,
            },
            embd_scale,
            q_prescale,
            kq_scale,
            swa,
            final_softcap,
            attn_softcap,
            qk_norm: match arch {
                Arch::Gemma3 | Arch::Qwen3 => QkNorm::PerHead,
                Arch::Olmo2 => QkNorm::Whole,
                _ => QkNorm::None,
            },
            pre_norms: arch != Arch::Olmo2,
            post_norms: matches!(arch, Arch::Gemma3 | Arch::Gemma2 | Arch::Olmo2),
            residual_scale,
            logit_scale,
            no_rope_period: (arch == Arch::Smollm3).then_some(4),
            attn_temperature,
        })
    }

    /// Whether layer `il` applies RoPE at all (SmolLM3 skips some).
    pub fn has_rope(&self, il: usize) -> bool {
        self.rope.is_some()
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
        KvSpec {
            n_seq,
            n_ctx,
            layer_windows: (0..self.n_layer).map(|il| self.window(il)).collect(),
            kv_dim: self.n_head_kv * self.head_dim,
            max_batch,
            ty,
        }
    }
}

/// The RoPE rules of `arch`; `None` for learned positions (GPT-2).
fn rope_rules(arch: Arch) -> Option<ArchRope> {
    let style = match arch {
        Arch::Llama | Arch::Mistral3 | Arch::Smollm3 | Arch::Granite => RopeStyle::Normal,
        Arch::Qwen2 | Arch::Phi3 | Arch::Gemma3 | Arch::Qwen3 | Arch::Gemma2 | Arch::Olmo2 => {
            RopeStyle::Neox
        }
        Arch::Gpt2 => return None,
    };
    Some(ArchRope {
        style,
        swa: match arch {
            Arch::Gemma2 => SwaRope::Scaled,
            Arch::Olmo2 => SwaRope::Plain,
            _ => SwaRope::Unscaled,
        },
        yarn_keys: arch == Arch::Mistral3,
    })
}

/// The sliding window and its layers, when the model has one:
/// `attention.sliding_window` (else `default_window`; 0 means none) and the
/// layer pattern (else a period of `default_period`).
fn window_layers(
    meta: &Metadata,
    n_layer: usize,
    default_window: Option<u32>,
    default_period: usize,
) -> Result<Option<(u32, Vec<bool>)>> {
    let a = meta.arch()?;
    let window = a
        .get_opt::<u32>("attention.sliding_window")?
        .or(default_window);
    match window {
        Some(w) if w > 0 => Ok(Some((w, swa_layers(meta, n_layer, default_period)?))),
        _ => Ok(None),
    }
}

/// Which layers use the sliding window: an explicit per-layer array, or a
/// period `n` in which the last layer of every `n` is global.
fn swa_layers(meta: &Metadata, n_layer: usize, default_period: usize) -> Result<Vec<bool>> {
    let key = format!("{}.attention.sliding_window_pattern", meta.architecture()?);
    if let Some(worker_gguf::Value::Array(worker_gguf::Array::Bool(v))) = meta.get(&key) {
        return Ok((0..n_layer)
            .map(|i| v.get(i).copied().unwrap_or(false))
            .collect());
    }
    let period = meta.get_opt::<usize>(&key)?.unwrap_or(default_period);
    Ok((0..n_layer)
        .map(|il| period == 0 || il % period < period - 1)
        .collect())
}

/// `<arch>.<suffix>` as a count that GGUF may also give per layer (an
/// array, as llama.cpp accepts). Per-layer values must all be equal: the
/// forward pass has one head layout for every layer.
fn layer_count(meta: &Metadata, suffix: &str, n_layer: usize) -> Result<Option<usize>> {
    use worker_gguf::{Array, Value};
    let a = meta.arch()?;
    let key = a.key(suffix);
    let ints: Option<Vec<i128>> = match meta.get(&key) {
        Some(Value::Array(arr)) => Some(match arr {
            Array::U8(v) => v.iter().map(|&x| i128::from(x)).collect(),
            Array::I8(v) => v.iter().map(|&x| i128::from(x)).collect(),
            Array::U16(v) => v.iter().map(|&x| i128::from(x)).collect(),
            Array::I16(v) => v.iter().map(|&x| i128::from(x)).collect(),
            Array::U32(v) => v.iter().map(|&x| i128::from(x)).collect(),
            Array::I32(v) => v.iter().map(|&x| i128::from(x)).collect(),
            Array::U64(v) => v.iter().map(|&x| i128::from(x)).collect(),
            Array::I64(v) => v.iter().map(|&x| i128::from(x)).collect(),
            _ => {
                return Err(ModelError::Unsupported(format!(
                    "{key} is an array, but not of integers"
                )));
            }
        }),
        _ => None,
    };
    let Some(ints) = ints else {
        return Ok(a.get_opt::<usize>(suffix)?);
    };
    let per_layer: Vec<u64> = ints
        .iter()
        .map(|&x| u64::try_from(x))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| ModelError::Unsupported(format!("{key} has a negative value: {ints:?}")))?;
    if per_layer.len() != n_layer {
        return Err(ModelError::Unsupported(format!(
            "{key} has {} values for {n_layer} layers",
            per_layer.len()
        )));
    }
    match per_layer.split_first() {
        Some((&first, rest)) if rest.iter().all(|&x| x == first) => Ok(Some(first as usize)),
        _ => Err(ModelError::Unsupported(format!(
            "{key} differs between layers ({per_layer:?}): llorch needs the same head layout in every layer"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use worker_gguf::{Array, Value};

    fn meta(heads: Value) -> Metadata {
        let mut m = Metadata::new();
        m.insert("general.architecture", "llama".into())
            .expect("insert");
        m.insert("llama.attention.head_count", heads)
            .expect("insert");
        m
    }

    #[test]
    fn shapes_past_any_real_model_are_refused_before_use() {
        let with = |key: &str, v: u64| {
            let mut m = meta(Value::U32(4));
            for (k, default) in [("llama.embedding_length", 64), ("llama.block_count", 2)] {
                let value = if k == key { v } else { default };
                m.insert(k, Value::U64(value)).expect("insert");
            }
            if !key.ends_with("embedding_length") && !key.ends_with("block_count") {
                m.insert(key, Value::U64(v)).expect("insert");
            }
            ModelConfig::from_metadata(&m)
        };
        for (key, v) in [
            ("llama.block_count", 1u64 << 40),
            ("llama.embedding_length", 1 << 33),
            ("llama.attention.key_length", 1 << 30),
        ] {
            let r = with(key, v);
            assert!(
                matches!(&r, Err(ModelError::ImplausibleShape { key: k, .. }) if k == key),
                "{key}: {r:?}"
            );
        }
    }

    #[test]
    fn head_counts_may_be_given_per_layer_when_equal() {
        let count = |v| layer_count(&meta(v), "attention.head_count", 3);
        assert_eq!(count(Value::U32(8)).expect("scalar"), Some(8));
        assert_eq!(
            count(Value::Array(Array::I32(vec![8, 8, 8]))).expect("equal"),
            Some(8)
        );
        let varying = count(Value::Array(Array::U32(vec![8, 4, 8])));
        assert!(
            matches!(&varying, Err(ModelError::Unsupported(m)) if m.contains("differs between layers")),
            "{varying:?}"
        );
        let negative = count(Value::Array(Array::I64(vec![8, -1, 8])));
        assert!(
            matches!(&negative, Err(ModelError::Unsupported(m)) if m.contains("negative")),
            "{negative:?}"
        );
        let short = count(Value::Array(Array::U32(vec![8, 8])));
        assert!(
            matches!(&short, Err(ModelError::Unsupported(m)) if m.contains("2 values for 3 layers")),
            "{short:?}"
        );
        assert_eq!(
            layer_count(&meta(Value::U32(8)), "attention.head_count_kv", 3).expect("absent"),
            None
        );
    }
}
