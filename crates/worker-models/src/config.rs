//! One typed configuration per architecture, read from GGUF metadata once.
//!
//! Every architecture-specific choice the forward pass makes is a field
//! here, filled from the metadata keys and the rules llama.cpp applies; the
//! forward pass never looks at metadata strings.

use crate::error::{ModelError, Result};
use crate::rope::{RopeConfig, RopeOverrides};
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
    /// Llama 2/3, Mistral.
    Llama,
    /// Qwen 2 / 2.5.
    Qwen2,
    /// Phi-3.
    Phi3,
    /// GPT-2.
    Gpt2,
    /// Gemma 3.
    Gemma3,
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
        }
    }

    fn from_name(name: &str) -> Option<Arch> {
        Some(match name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "phi3" => Arch::Phi3,
            "gpt2" => Arch::Gpt2,
            "gemma3" => Arch::Gemma3,
            _ => return None,
        })
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
    /// Input embeddings are multiplied by this (Gemma: `sqrt(n_embd)`).
    pub embd_scale: Option<f32>,
    /// Queries are multiplied by this before attention (Gemma, Phi-3).
    pub q_prescale: Option<f32>,
    /// Multiplier of `q · k` inside attention.
    pub kq_scale: f32,
    /// Sliding window size and which layers use it.
    pub swa: Option<(u32, Vec<bool>)>,
    /// Soft cap of the final logits.
    pub final_softcap: Option<f32>,
    /// Per-head RMS norms of q and k (Gemma 3).
    pub qk_norm: bool,
    /// Norms after attention and after the feed-forward (Gemma 3).
    pub post_norms: bool,
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
        let style = match arch {
            Arch::Llama => Some(RopeStyle::Normal),
            Arch::Qwen2 | Arch::Phi3 | Arch::Gemma3 => Some(RopeStyle::Neox),
            Arch::Gpt2 => None,
        };
        let rope = style
            .map(|style| RopeConfig::from_metadata(&a, style, head_dim, n_ctx_train, rope))
            .transpose()?;

        let swa = match arch {
            Arch::Gemma3 => match a.get_opt::<u32>("attention.sliding_window")? {
                Some(w) if w > 0 => Some((w, swa_layers(meta, n_layer, 6)?)),
                _ => None,
            },
            // llama.cpp disables Phi-3's window; the others have none.
            _ => None,
        };

        let inv_sqrt_head = 1.0 / (head_dim as f32).sqrt();
        let (q_prescale, kq_scale) = match arch {
            Arch::Gemma3 | Arch::Phi3 => (Some(inv_sqrt_head), 1.0),
            Arch::Llama => (
                None,
                a.get_opt::<f32>("attention.scale")?
                    .unwrap_or(inv_sqrt_head),
            ),
            _ => (None, inv_sqrt_head),
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
                Arch::Gpt2 | Arch::Gemma3 => Activation::Gelu,
                _ => Activation::Silu,
            },
            ffn: match arch {
                Arch::Gpt2 => FfnKind::Plain,
                Arch::Phi3 => FfnKind::FusedGated,
                _ => FfnKind::Gated,
            },
            embd_scale: (arch == Arch::Gemma3).then(|| (n_embd as f32).sqrt()),
            q_prescale,
            kq_scale,
            swa,
            final_softcap: a
                .get_opt::<f32>("final_logit_softcapping")?
                .filter(|&c| c > 0.0),
            qk_norm: arch == Arch::Gemma3,
            post_norms: arch == Arch::Gemma3,
        })
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
