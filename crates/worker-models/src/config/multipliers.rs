//! The scales and caps that set architectures apart: of queries, of
//! attention scores, of embeddings, of block outputs and of logits.

use super::{Arch, AttnTemperature};
use crate::error::{ModelError, Result};
use worker_gguf::ArchMetadata;

/// The multipliers and caps of one model (see [`super::ModelConfig`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Multipliers {
    pub q_prescale: Option<f32>,
    pub kq_scale: f32,
    pub embd_scale: Option<f32>,
    pub final_softcap: Option<f32>,
    pub attn_softcap: Option<f32>,
    pub residual_scale: Option<f32>,
    pub logit_scale: Option<f32>,
}

/// A key that must hold a positive number when present.
fn positive(a: &ArchMetadata<'_>, key: &str) -> Result<Option<f32>> {
    match a.get_opt::<f32>(key)? {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(ModelError::Unsupported(format!(
            "{} is {v}: it must be a positive number",
            a.key(key)
        ))),
        v => Ok(v),
    }
}

/// A multiplier key that is unset when absent or 0, and otherwise must be
/// a finite number.
fn unless_zero(a: &ArchMetadata<'_>, key: &str) -> Result<Option<f32>> {
    match a.get_opt::<f32>(key)? {
        None | Some(0.0) => Ok(None),
        Some(v) if v.is_finite() => Ok(Some(v)),
        Some(v) => Err(ModelError::Unsupported(format!(
            "{} is {v}: it must be a finite number",
            a.key(key)
        ))),
    }
}

/// The multipliers of `arch`, from its keys and llama.cpp's defaults.
pub(super) fn read(
    arch: Arch,
    a: &ArchMetadata<'_>,
    n_layer: usize,
    n_embd: usize,
    n_head: usize,
    head_dim: usize,
) -> Result<Multipliers> {
    let inv_sqrt_head = 1.0 / (head_dim as f32).sqrt();
    // `attention.scale` (read by Granite only) replaces 1/sqrt(head_dim);
    // 0 means unset.
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
        Arch::Granite => (None, stored_scale()?),
        // Gemma 4 norms its queries and keys, and leaves their product
        // unscaled.
        Arch::Gemma4 => (None, 1.0),
        _ => (None, inv_sqrt_head),
    };
    let embd_scale = match arch {
        Arch::Gemma3 | Arch::Gemma2 | Arch::Gemma4 => Some((n_embd as f32).sqrt()),
        Arch::Granite => unless_zero(a, "embedding_scale")?,
        _ => None,
    };
    let (final_softcap, attn_softcap) = match arch {
        // Gemma 2 caps both, at 30 and 50 unless the file says.
        Arch::Gemma2 => (
            Some(positive(a, "final_logit_softcapping")?.unwrap_or(30.0)),
            Some(positive(a, "attn_logit_softcapping")?.unwrap_or(50.0)),
        ),
        _ => (
            a.get_opt::<f32>("final_logit_softcapping")?
                .filter(|&c| c > 0.0),
            None,
        ),
    };
    let (residual_scale, logit_scale) = match arch {
        Arch::Granite => (
            unless_zero(a, "residual_scale")?,
            Some(positive(a, "logit_scale")?.ok_or_else(|| {
                ModelError::Metadata(worker_gguf::GgufError::MissingKey {
                    key: a.key("logit_scale"),
                })
            })?),
        ),
        _ => (None, None),
    };
    Ok(Multipliers {
        q_prescale,
        kq_scale,
        embd_scale,
        final_softcap,
        attn_softcap,
        residual_scale,
        logit_scale,
    })
}

/// Mistral 3's attention temperature, when its file sets one; `floor` is
/// the original context length.
pub(super) fn attn_temperature(
    arch: Arch,
    a: &ArchMetadata<'_>,
    floor: usize,
) -> Result<Option<AttnTemperature>> {
    if arch != Arch::Mistral3 {
        return Ok(None);
    }
    Ok(match unless_zero(a, "attention.temperature_scale")? {
        Some(scale) => {
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
    })
}
