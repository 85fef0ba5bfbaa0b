//! Layout facts read from GGUF metadata: experts, the RoPE rules of each
//! architecture, sliding-window layers, and counts GGUF may give per layer.

use super::{Arch, MAX_WIDTH, MoeConfig, MoeGating};
use crate::error::{ModelError, Result};
use crate::rope::{ArchRope, SwaRope};
use worker_compute::RopeStyle;
use worker_gguf::Metadata;

/// The experts of `arch`, if its file has them: required for Qwen 3 MoE and
/// gpt-oss, present in Llama files with `expert_count` > 0 (their experts
/// are as wide as `feed_forward_length`). gpt-oss must give its experts'
/// width, and weights them by a softmax over the chosen ones.
pub(super) fn moe_config(
    arch: Arch,
    a: &worker_gguf::ArchMetadata<'_>,
    n_ff: usize,
) -> Result<Option<MoeConfig>> {
    const MAX_EXPERTS: usize = 1 << 12;
    let n_expert = a.get_opt::<usize>("expert_count")?.unwrap_or(0);
    let required = matches!(arch, Arch::Qwen3Moe | Arch::GptOss | Arch::Qwen35Moe);
    if n_expert == 0 && !required {
        return Ok(None);
    }
    if !matches!(
        arch,
        Arch::Llama | Arch::Qwen3Moe | Arch::GptOss | Arch::Qwen35Moe | Arch::Gemma4
    ) {
        return Err(ModelError::Unsupported(format!(
            "experts in a {} file",
            arch.name()
        )));
    }
    let n_expert_used = a.get_opt::<usize>("expert_used_count")?.unwrap_or(0);
    if n_expert == 0 || n_expert_used == 0 || n_expert_used > n_expert || n_expert > MAX_EXPERTS {
        return Err(ModelError::Unsupported(format!(
            "{n_expert} experts with {n_expert_used} used per token (at least 1 of 1, at most {MAX_EXPERTS})"
        )));
    }
    let n_ff_exp = match arch {
        Arch::Qwen3Moe => a
            .get_opt::<usize>("expert_feed_forward_length")?
            .unwrap_or(n_ff / n_expert_used),
        Arch::GptOss | Arch::Qwen35Moe | Arch::Gemma4 => {
            a.get_as::<usize>("expert_feed_forward_length")?
        }
        _ => n_ff,
    };
    let n_ff_shared = match arch {
        Arch::Qwen35Moe => a
            .get_opt::<usize>("expert_shared_feed_forward_length")?
            .unwrap_or(n_ff),
        _ => 0,
    };
    if n_ff_shared > MAX_WIDTH * 16 {
        return Err(ModelError::ImplausibleShape {
            key: a.key("expert_shared_feed_forward_length"),
            value: n_ff_shared,
            max: MAX_WIDTH * 16,
        });
    }
    if n_ff_exp == 0 || n_ff_exp > MAX_WIDTH * 16 {
        return Err(ModelError::ImplausibleShape {
            key: a.key("expert_feed_forward_length"),
            value: n_ff_exp,
            max: MAX_WIDTH * 16,
        });
    }
    Ok(Some(MoeConfig {
        n_expert,
        n_expert_used,
        n_ff_exp,
        gating: match arch {
            Arch::GptOss => MoeGating::SoftmaxChosen,
            _ => MoeGating::Softmax,
        },
        n_ff_shared,
        beside_dense: arch == Arch::Gemma4,
    }))
}

/// The RoPE rules of `arch`; `None` for learned positions (GPT-2).
pub(super) fn rope_rules(arch: Arch) -> Option<ArchRope> {
    let style = match arch {
        Arch::Llama | Arch::Mistral3 | Arch::Smollm3 | Arch::Granite => RopeStyle::Normal,
        Arch::Qwen2
        | Arch::Phi3
        | Arch::Gemma3
        | Arch::Qwen3
        | Arch::Gemma2
        | Arch::Olmo2
        | Arch::Qwen3Moe
        | Arch::GptOss
        | Arch::Qwen35
        | Arch::Qwen35Moe
        | Arch::Gemma4 => RopeStyle::Neox,
        Arch::Gpt2 => return None,
    };
    Some(ArchRope {
        style,
        swa: match arch {
            Arch::Gemma2 | Arch::GptOss => SwaRope::Scaled,
            Arch::Olmo2 => SwaRope::Plain,
            _ => SwaRope::Unscaled,
        },
        yarn_keys: arch == Arch::Mistral3,
    })
}

/// The sliding window and its layers, when the model has one:
/// `attention.sliding_window` (else `default_window`; 0 means none) and the
/// layer pattern (else a period of `default_period`).
pub(super) fn window_layers(
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
pub(super) fn layer_count(meta: &Metadata, suffix: &str, n_layer: usize) -> Result<Option<usize>> {
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
    use crate::config::ModelConfig;
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

    /// gpt-oss's keys as its released files give them, less `without`.
    fn gpt_oss(without: &str) -> Result<ModelConfig> {
        let mut m = Metadata::new();
        let keys: [(&str, Value); 14] = [
            ("general.architecture", "gpt-oss".into()),
            ("gpt-oss.embedding_length", 2880u32.into()),
            ("gpt-oss.block_count", 24u32.into()),
            ("gpt-oss.context_length", 131_072u32.into()),
            ("gpt-oss.attention.head_count", 64u32.into()),
            ("gpt-oss.attention.head_count_kv", 8u32.into()),
            ("gpt-oss.attention.key_length", 64u32.into()),
            ("gpt-oss.attention.layer_norm_rms_epsilon", 1e-5f32.into()),
            ("gpt-oss.attention.sliding_window", 128u32.into()),
            ("gpt-oss.expert_count", 32u32.into()),
            ("gpt-oss.expert_used_count", 4u32.into()),
            ("gpt-oss.expert_feed_forward_length", 2880u32.into()),
            ("gpt-oss.rope.scaling.type", "yarn".into()),
            ("gpt-oss.rope.scaling.factor", 32f32.into()),
        ];
        for (k, v) in keys.into_iter().filter(|(k, _)| *k != without) {
            m.insert(k, v).expect("insert");
        }
        ModelConfig::from_metadata(&m)
    }

    #[test]
    fn gpt_oss_reads_its_window_experts_and_rope_rules() {
        let c = gpt_oss("").expect("a gpt-oss configuration");
        assert_eq!((c.n_head * c.head_dim, c.n_embd), (4096, 2880));
        // Every other layer has the window, the first included.
        assert_eq!(
            (c.window(0), c.window(1), c.window(22)),
            (Some(128), None, Some(128))
        );
        let moe = c.moe.expect("experts");
        assert_eq!(
            (moe.n_expert, moe.n_expert_used, moe.n_ff_exp),
            (32, 4, 2880)
        );
        assert_eq!(moe.gating, MoeGating::SoftmaxChosen);
        assert!(c.attn_sinks && c.act == worker_compute::Activation::SwigluOai);
        let rope = c.rope.as_ref().expect("RoPE");
        assert_eq!((rope.style, rope.swa), (RopeStyle::Neox, SwaRope::Scaled));
        assert_eq!((rope.ext_factor, rope.freq_scale), (1.0, 1.0 / 32.0));
        // Its window and its experts' width are required.
        for key in [
            "gpt-oss.attention.sliding_window",
            "gpt-oss.expert_feed_forward_length",
            "gpt-oss.expert_count",
        ] {
            assert!(gpt_oss(key).is_err(), "without {key}");
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
