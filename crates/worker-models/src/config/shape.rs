//! The sizes of a model read from GGUF metadata, each bounded before
//! anything is sized from it.

use super::layout::layer_count;
use super::{Arch, MAX_CONTEXT, MAX_HEAD_DIM, MAX_HEADS, MAX_LAYERS, MAX_WIDTH, hybrid, per_layer};
use crate::error::{ModelError, Result};
use worker_gguf::{ArchMetadata, Metadata};

/// The sizes of a model, bounded.
pub(super) struct Shape {
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
}

/// The sizes of the model `meta` describes. Every count sizes an
/// allocation (a KV spec per layer, a cache of `n_head_kv * head_dim` per
/// position), so each is bounded before it is used; the query heads must
/// group evenly over the key/value heads.
pub(super) fn read_shape(meta: &Metadata, arch: Arch) -> Result<Shape> {
    let a = meta.arch()?;
    let n_embd = a.get_as::<usize>("embedding_length")?;
    let block_count = a.get_as::<usize>("block_count")?;
    check_bounds(&a, &[("block_count", block_count, MAX_LAYERS)])?;
    let n_head = layer_count(meta, "attention.head_count", block_count)?.ok_or_else(|| {
        ModelError::Metadata(worker_gguf::GgufError::MissingKey {
            key: a.key("attention.head_count"),
        })
    })?;
    let n_layer = block_count - hybrid::prediction_layers(&a, block_count)?;
    let (n_head_kv, head_dim) = match arch {
        Arch::Gemma4 => widest_heads(meta, block_count, n_head, n_embd)?,
        _ => uniform_heads(meta, block_count, n_head, n_embd)?,
    };
    check_bounds(
        &a,
        &[
            ("block_count", n_layer, MAX_LAYERS),
            ("embedding_length", n_embd, MAX_WIDTH),
            ("attention.head_count", n_head, MAX_HEADS),
            ("attention.head_count_kv", n_head_kv, MAX_HEADS),
            ("attention.key_length", head_dim, MAX_HEAD_DIM),
        ],
    )?;
    if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(ModelError::Unsupported(format!(
            "{n_head} query heads cannot be grouped over {n_head_kv} key/value heads"
        )));
    }
    let n_ff = ff_width(meta, arch, block_count)?;
    let n_ctx_train = a.get_as::<usize>("context_length")?;
    check_bounds(
        &a,
        &[
            ("feed_forward_length", n_ff, MAX_WIDTH * 16),
            ("context_length", n_ctx_train, MAX_CONTEXT),
        ],
    )?;
    Ok(Shape {
        n_embd,
        n_layer,
        n_head,
        n_head_kv,
        head_dim,
        n_ff,
        n_ctx_train,
    })
}

/// K/V heads and head size of a model whose layers all have the same
/// (K/V heads may be given per layer, all equal).
fn uniform_heads(
    meta: &Metadata,
    block_count: usize,
    n_head: usize,
    n_embd: usize,
) -> Result<(usize, usize)> {
    let a = meta.arch()?;
    let n_head_kv = layer_count(meta, "attention.head_count_kv", block_count)?.unwrap_or(n_head);
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
    Ok((n_head_kv, head_dim))
}

/// The most K/V heads and the largest head size of any layer, for a
/// model whose layers differ (see [`per_layer::read`] for each layer's).
fn widest_heads(
    meta: &Metadata,
    block_count: usize,
    n_head: usize,
    n_embd: usize,
) -> Result<(usize, usize)> {
    let a = meta.arch()?;
    let n_head_kv = per_layer::per_layer_values(meta, "attention.head_count_kv", block_count)?
        .map_or(n_head, |v| v.into_iter().max().unwrap_or(0));
    let full = a
        .get_opt::<usize>("attention.key_length")?
        .unwrap_or(n_embd / n_head.max(1));
    let window = a
        .get_opt::<usize>("attention.key_length_swa")?
        .unwrap_or(full);
    Ok((n_head_kv, full.max(window)))
}

/// The feed-forward width: the widest layer's where layers differ (Gemma
/// 4, which may give it per layer); a mixture of experts may give only
/// its experts' width.
fn ff_width(meta: &Metadata, arch: Arch, block_count: usize) -> Result<usize> {
    let a = meta.arch()?;
    match arch {
        Arch::Gemma4 => per_layer::per_layer_values(meta, "feed_forward_length", block_count)?
            .map(|v| v.into_iter().max().unwrap_or(0))
            .ok_or_else(|| {
                ModelError::Metadata(worker_gguf::GgufError::MissingKey {
                    key: a.key("feed_forward_length"),
                })
            }),
        Arch::Qwen3Moe | Arch::GptOss | Arch::Qwen35Moe => {
            Ok(a.get_opt::<usize>("feed_forward_length")?.unwrap_or(0))
        }
        _ => Ok(a.get_as::<usize>("feed_forward_length")?),
    }
}

/// Refuses the first `(key suffix, value, max)` whose value is past its
/// max.
fn check_bounds(a: &ArchMetadata<'_>, bounds: &[(&str, usize, usize)]) -> Result<()> {
    for &(suffix, value, max) in bounds {
        if value > max {
            return Err(ModelError::ImplausibleShape {
                key: a.key(suffix),
                value,
                max,
            });
        }
    }
    Ok(())
}
