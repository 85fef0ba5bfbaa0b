//! Hybrid models' recurrent layers (Qwen 3.5's gated delta nets): their
//! shape, which layers they are, and the layers kept only for multi-token
//! prediction, read from GGUF metadata.

use super::{Arch, MAX_HEAD_DIM, MAX_HEADS};
use crate::error::{ModelError, Result};
use worker_compute::{DeltaNetParams, StateShape};
use worker_gguf::{ArchMetadata, Array, Metadata, Value};

/// The recurrent layers of a hybrid model.
#[derive(Debug, Clone, PartialEq)]
pub struct RecurrentConfig {
    /// Taps of each layer's causal convolution.
    pub conv_taps: usize,
    /// Query and key heads.
    pub n_k_heads: usize,
    /// Value heads (each keeps a `head_dim` square state).
    pub n_v_heads: usize,
    /// Width of every head.
    pub head_dim: usize,
    /// Per layer: whether it is recurrent (else full attention).
    pub layers: Vec<bool>,
}

impl RecurrentConfig {
    /// Whether layer `il` is recurrent.
    pub fn is_recurrent(&self, il: usize) -> bool {
        self.layers.get(il).copied().unwrap_or(false)
    }

    /// Width of the value heads together (the gate and the output's input).
    pub fn inner(&self) -> usize {
        self.n_v_heads * self.head_dim
    }

    /// The state one sequence keeps per recurrent layer.
    pub fn state(&self) -> StateShape {
        StateShape {
            conv_taps: self.conv_taps,
            conv_channels: self.params(0.0).channels(),
            n_heads: self.n_v_heads,
            head_dim: self.head_dim,
        }
    }

    /// The delta rule's parameters, with the model's norm epsilon.
    pub fn params(&self, eps: f32) -> DeltaNetParams {
        DeltaNetParams {
            n_k_heads: self.n_k_heads,
            n_v_heads: self.n_v_heads,
            head_dim: self.head_dim,
            eps,
        }
    }
}

/// Layers at the end of the file that serve only multi-token prediction
/// (`nextn_predict_layers`): llorch runs the model's own layers and skips
/// these.
pub(super) fn prediction_layers(a: &ArchMetadata<'_>, block_count: usize) -> Result<usize> {
    let n = a.get_opt::<usize>("nextn_predict_layers")?.unwrap_or(0);
    if n >= block_count {
        return Err(ModelError::Unsupported(format!(
            "{n} prediction layers of {block_count} leave no model layers"
        )));
    }
    Ok(n)
}

/// The recurrent layers of `arch`, for the hybrid architectures: their
/// shape from the `ssm.*` keys, and which layers they are (an explicit
/// per-layer list, else every layer but each `full_attention_interval`-th).
pub(super) fn recurrent_config(
    arch: Arch,
    meta: &Metadata,
    n_layer: usize,
) -> Result<Option<RecurrentConfig>> {
    if !matches!(arch, Arch::Qwen35 | Arch::Qwen35Moe) {
        return Ok(None);
    }
    let a = meta.arch()?;
    let conv_taps = a.get_as::<usize>("ssm.conv_kernel")?;
    let inner = a.get_as::<usize>("ssm.inner_size")?;
    let head_dim = a.get_as::<usize>("ssm.state_size")?;
    let n_k_heads = a.get_as::<usize>("ssm.group_count")?;
    let n_v_heads = a.get_as::<usize>("ssm.time_step_rank")?;
    let plausible = (1..=64).contains(&conv_taps)
        && (1..=MAX_HEAD_DIM).contains(&head_dim)
        && (1..=MAX_HEADS).contains(&n_k_heads)
        && (1..=MAX_HEADS).contains(&n_v_heads);
    if !plausible || !n_v_heads.is_multiple_of(n_k_heads) || inner != n_v_heads * head_dim {
        return Err(ModelError::Unsupported(format!(
            "a gated delta net of {n_k_heads} key and {n_v_heads} value heads of {head_dim} \
             (inner width {inner}, {conv_taps} convolution taps): the value heads must group \
             over the key heads, and keys and values must be equally wide"
        )));
    }
    Ok(Some(RecurrentConfig {
        conv_taps,
        n_k_heads,
        n_v_heads,
        head_dim,
        layers: recurrent_layers(meta, n_layer)?,
    }))
}

/// Which of the first `n_layer` layers are recurrent.
fn recurrent_layers(meta: &Metadata, n_layer: usize) -> Result<Vec<bool>> {
    let a = meta.arch()?;
    let key = a.key("attention.recurrent_layers");
    if let Some(v) = meta.get(&key) {
        let Value::Array(Array::Bool(flags)) = v else {
            return Err(ModelError::Unsupported(format!(
                "{key} is not a list of booleans"
            )));
        };
        if flags.len() < n_layer {
            return Err(ModelError::Unsupported(format!(
                "{key} has {} values for {n_layer} layers",
                flags.len()
            )));
        }
        return Ok(flags[..n_layer].to_vec());
    }
    let interval = a.get_opt::<usize>("full_attention_interval")?.unwrap_or(4);
    if interval == 0 {
        return Err(ModelError::Unsupported(
            "a full-attention interval of 0".into(),
        ));
    }
    Ok((0..n_layer)
        .map(|il| !(il + 1).is_multiple_of(interval))
        .collect())
}

/// Checks that multi-dimensional RoPE sections, where the file gives
/// them, reduce to plain RoPE for text: text positions are the same in the
/// first three sections, and in the interleaved layout every rotated pair
/// takes one of those three, so the rotation is NeoX RoPE over `n_rot`
/// dimensions. A layout that leaves pairs to the fourth section is refused.
pub(super) fn check_rope_sections(a: &ArchMetadata<'_>, n_rot: usize) -> Result<()> {
    let key = a.key("rope.dimension_sections");
    let sections: Vec<i64> = match a.get_opt::<&Array>("rope.dimension_sections")? {
        None => return Ok(()),
        Some(Array::I32(v)) => v.iter().map(|&x| i64::from(x)).collect(),
        Some(Array::U32(v)) => v.iter().map(|&x| i64::from(x)).collect(),
        Some(_) => {
            return Err(ModelError::Unsupported(format!(
                "{key} is not a list of integers"
            )));
        }
    };
    let s = |i: usize| sections.get(i).copied().unwrap_or(0).max(0) as usize;
    let total: usize = (0..4).map(s).sum();
    if total == 0 {
        return Err(ModelError::Unsupported(format!("{key} is empty")));
    }
    let fourth = (0..n_rot / 2).any(|pair| {
        let sector = pair % total;
        let text = (sector.is_multiple_of(3) && sector < 3 * s(0))
            || (sector % 3 == 1 && sector < 3 * s(1))
            || (sector % 3 == 2 && sector < 3 * s(2));
        !text
    });
    if fourth {
        return Err(ModelError::Unsupported(format!(
            "{key} = {sections:?} leaves rotated pairs to the fourth section"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(keys: Vec<(&str, Value)>) -> Metadata {
        let mut m = Metadata::new();
        m.insert("general.architecture", "qwen35".into())
            .expect("insert");
        for (k, v) in keys {
            m.insert(k, v).expect("insert");
        }
        m
    }

    #[test]
    fn every_fourth_layer_attends_unless_the_file_lists_them() {
        let m = meta(vec![]);
        assert_eq!(
            recurrent_layers(&m, 8).expect("layers"),
            [true, true, true, false, true, true, true, false]
        );
        let m = meta(vec![(
            "qwen35.attention.recurrent_layers",
            Value::Array(Array::Bool(vec![false, true, true])),
        )]);
        assert_eq!(recurrent_layers(&m, 2).expect("layers"), [false, true]);
        assert!(recurrent_layers(&m, 4).is_err());
    }

    #[test]
    fn text_rope_sections_must_cover_the_rotated_pairs() {
        let with = |v: Vec<i32>| {
            meta(vec![(
                "qwen35.rope.dimension_sections",
                Value::Array(Array::I32(v)),
            )])
        };
        let m = with(vec![11, 11, 10, 0]);
        assert!(check_rope_sections(&m.arch().expect("arch"), 64).is_ok());
        let m = with(vec![2, 2, 2, 10]);
        assert!(check_rope_sections(&m.arch().expect("arch"), 64).is_err());
    }
}
