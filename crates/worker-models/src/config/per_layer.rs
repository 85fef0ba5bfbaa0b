//! Models whose layers differ from one another (Gemma 4): head sizes, K/V
//! heads and feed-forward widths per layer, layers that read an earlier
//! layer's K/V cache instead of keeping their own, and per-layer token
//! embeddings, read from GGUF metadata.
//!
//! The rules:
//! - sliding-window layers have heads of `attention.key_length_swa`
//!   (default `key_length`), the others of `attention.key_length`; values
//!   are as wide as keys in both;
//! - `attention.head_count_kv` and `feed_forward_length` may be given per
//!   layer (an array) or once;
//! - with `attention.shared_kv_layers` = `s`, the last `s` layers keep no
//!   K/V: a windowed one reads layer `n - s - 2`, a global one layer
//!   `n - s - 1` (`n` layers), which must be of the same kind, so at
//!   least two layers keep their own;
//! - `embedding_length_per_layer_input` (0 or absent: none) is the width
//!   of each layer's share of the per-layer token embeddings.

use super::{MAX_HEAD_DIM, MAX_HEADS, MAX_WIDTH};
use crate::error::{ModelError, Result};
use worker_gguf::{Array, Metadata, Value};

/// The shape of one layer of a model whose layers differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    /// Dimensions per head (queries, keys and values).
    pub head_dim: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// The earlier layer whose K/V rows this layer reads; it then keeps
    /// and computes no keys or values of its own.
    pub kv_source: Option<usize>,
}

/// The per-layer facts of a model whose layers differ.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Layers {
    pub shapes: Vec<LayerShape>,
    /// Width of each layer's per-layer input, if the model has them.
    pub per_layer_input: Option<usize>,
    /// Rotated dimensions of the sliding-window layers.
    pub n_rot_swa: usize,
}

/// `<arch>.<suffix>` per layer: an array of one value per layer, or one
/// value for every layer; `None` when absent.
pub(super) fn per_layer_values(
    meta: &Metadata,
    suffix: &str,
    n_layer: usize,
) -> Result<Option<Vec<usize>>> {
    let a = meta.arch()?;
    let key = a.key(suffix);
    let ints: Vec<i128> = match meta.get(&key) {
        Some(Value::Array(arr)) => match arr {
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
        },
        _ => return Ok(a.get_opt::<usize>(suffix)?.map(|v| vec![v; n_layer])),
    };
    let values: Vec<usize> = ints
        .iter()
        .map(|&x| usize::try_from(x))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| ModelError::Unsupported(format!("{key} has a negative value: {ints:?}")))?;
    if values.len() != n_layer {
        return Err(ModelError::Unsupported(format!(
            "{key} has {} values for {n_layer} layers",
            values.len()
        )));
    }
    Ok(Some(values))
}

/// The per-layer shapes of a model whose layers differ: `swa` says which
/// layers have the sliding window, `n_head` and `n_embd` are the model's.
pub(super) fn read(meta: &Metadata, swa: &[bool], n_head: usize, n_embd: usize) -> Result<Layers> {
    let a = meta.arch()?;
    let n_layer = swa.len();
    let full = a.get_opt::<usize>("attention.key_length")?;
    let full = full.unwrap_or(n_embd / n_head.max(1));
    let window = a
        .get_opt::<usize>("attention.key_length_swa")?
        .unwrap_or(full);
    for (k, v, want) in [
        ("attention.value_length", "attention.key_length", full),
        (
            "attention.value_length_swa",
            "attention.key_length_swa",
            window,
        ),
    ] {
        if let Some(got) = a.get_opt::<usize>(k)?
            && got != want
        {
            return Err(ModelError::Unsupported(format!(
                "{} is {got} but {} is {want}: values must be as wide as keys",
                a.key(k),
                a.key(v)
            )));
        }
    }
    let kv_heads = per_layer_values(meta, "attention.head_count_kv", n_layer)?
        .unwrap_or_else(|| vec![n_head; n_layer]);
    let n_ff = per_layer_values(meta, "feed_forward_length", n_layer)?.ok_or_else(|| {
        ModelError::Metadata(worker_gguf::GgufError::MissingKey {
            key: a.key("feed_forward_length"),
        })
    })?;
    let sources = kv_sources(meta, swa)?;
    let shapes: Vec<LayerShape> = (0..n_layer)
        .map(|il| LayerShape {
            head_dim: if swa[il] { window } else { full },
            n_head_kv: kv_heads[il],
            n_ff: n_ff[il],
            kv_source: sources[il],
        })
        .collect();
    check_shapes(&shapes, n_head)?;
    let n_rot_full = a.get_opt::<usize>("rope.dimension_count")?.unwrap_or(full);
    let n_rot_swa = a
        .get_opt::<usize>("rope.dimension_count_swa")?
        .unwrap_or(n_rot_full);
    for (n_rot, hd) in [(n_rot_full, full), (n_rot_swa, window)] {
        if n_rot > hd || !n_rot.is_multiple_of(2) {
            return Err(ModelError::Unsupported(format!(
                "RoPE over {n_rot} dimensions of heads of {hd}: it must be even and fit the head"
            )));
        }
    }
    let width = a
        .get_opt::<usize>("embedding_length_per_layer_input")?
        .unwrap_or(0);
    if width > MAX_WIDTH {
        return Err(ModelError::ImplausibleShape {
            key: a.key("embedding_length_per_layer_input"),
            value: width,
            max: MAX_WIDTH,
        });
    }
    Ok(Layers {
        shapes,
        per_layer_input: (width > 0).then_some(width),
        n_rot_swa,
    })
}

/// Refuses head sizes, head counts and widths past any real model, and
/// query heads that do not group evenly over a layer's K/V heads.
fn check_shapes(shapes: &[LayerShape], n_head: usize) -> Result<()> {
    for (il, s) in shapes.iter().enumerate() {
        let plausible = (1..=MAX_HEAD_DIM).contains(&s.head_dim)
            && (1..=MAX_HEADS).contains(&s.n_head_kv)
            && (1..=MAX_WIDTH * 16).contains(&s.n_ff)
            && n_head.is_multiple_of(s.n_head_kv);
        if !plausible {
            return Err(ModelError::Unsupported(format!(
                "layer {il}: {n_head} query heads over {} key/value heads of {}, a feed-forward \
                 of {}: heads must group evenly, and every size be above 0 and plausible",
                s.n_head_kv, s.head_dim, s.n_ff
            )));
        }
    }
    Ok(())
}

/// Per layer, the earlier layer whose K/V rows it reads (see the module's
/// rules).
fn kv_sources(meta: &Metadata, swa: &[bool]) -> Result<Vec<Option<usize>>> {
    let a = meta.arch()?;
    let n_layer = swa.len();
    let shared = a
        .get_opt::<usize>("attention.shared_kv_layers")?
        .unwrap_or(0);
    if shared == 0 {
        return Ok(vec![None; n_layer]);
    }
    let own = match n_layer.checked_sub(shared) {
        Some(own) if own >= 2 => own,
        _ => {
            return Err(ModelError::Unsupported(format!(
                "{shared} of {n_layer} layers share another's K/V cache: at least two must keep their own"
            )));
        }
    };
    (0..n_layer)
        .map(|il| {
            if il < own {
                return Ok(None);
            }
            let src = if swa[il] { own - 2 } else { own - 1 };
            if swa[src] != swa[il] {
                return Err(ModelError::Unsupported(format!(
                    "layer {il} would read layer {src}'s K/V cache, but one of them has the \
                     sliding window and the other not"
                )));
            }
            Ok(Some(src))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(keys: Vec<(&str, Value)>) -> Metadata {
        let mut m = Metadata::new();
        m.insert("general.architecture", "gemma4".into())
            .expect("insert");
        let base: [(&str, Value); 5] = [
            ("gemma4.attention.key_length", 128u32.into()),
            ("gemma4.attention.key_length_swa", 64u32.into()),
            ("gemma4.feed_forward_length", 256u32.into()),
            ("gemma4.attention.head_count_kv", 2u32.into()),
            ("gemma4.rope.dimension_count_swa", 64u32.into()),
        ];
        for (k, v) in base {
            if !keys.iter().any(|(e, _)| *e == k) {
                m.insert(k, v).expect("insert");
            }
        }
        for (k, v) in keys {
            m.insert(k, v).expect("insert");
        }
        m
    }

    const SWA: [bool; 5] = [true, false, true, true, false];

    #[test]
    fn the_last_layers_read_the_last_own_layer_of_their_kind() {
        let sources = |swa: &[bool], shared: u32| -> Result<Vec<Option<usize>>> {
            let m = meta(vec![("gemma4.attention.shared_kv_layers", shared.into())]);
            Ok(read(&m, swa, 4, 256)?
                .shapes
                .iter()
                .map(|s| s.kv_source)
                .collect())
        };
        let swa = [true, false, true, false];
        assert_eq!(
            sources(&swa, 2).expect("layers"),
            [None, None, Some(0), Some(1)]
        );
        let swa = [true, true, false, true, false];
        assert_eq!(
            sources(&swa, 2).expect("layers"),
            [None, None, None, Some(1), Some(2)]
        );
        assert_eq!(sources(&swa, 0).expect("layers"), [None; 5]);
        // Layer 3 is windowed and would read layer 1, a global one.
        assert!(sources(&SWA, 2).is_err());
        assert!(sources(&SWA, 4).is_err(), "one layer left");
        assert!(sources(&SWA, 9).is_err(), "more shared than layers");
    }

    #[test]
    fn head_sizes_follow_the_window_and_counts_may_vary() {
        let m = meta(vec![
            (
                "gemma4.attention.head_count_kv",
                Value::Array(Array::U32(vec![2, 1, 2, 2, 1])),
            ),
            (
                "gemma4.feed_forward_length",
                Value::Array(Array::I32(vec![256, 256, 256, 512, 512])),
            ),
            ("gemma4.rope.dimension_count_swa", 32u32.into()),
            ("gemma4.embedding_length_per_layer_input", 32u32.into()),
        ]);
        let l = read(&m, &SWA, 4, 256).expect("layers");
        let dims: Vec<_> = l
            .shapes
            .iter()
            .map(|s| (s.head_dim, s.n_head_kv, s.n_ff))
            .collect();
        assert_eq!(
            dims,
            [
                (64, 2, 256),
                (128, 1, 256),
                (64, 2, 256),
                (64, 2, 512),
                (128, 1, 512)
            ]
        );
        assert_eq!((l.n_rot_swa, l.per_layer_input), (32, Some(32)));
    }

    #[test]
    fn bad_shapes_are_refused() {
        for keys in [
            vec![("gemma4.attention.value_length_swa", 32u32.into())],
            vec![("gemma4.attention.head_count_kv", 3u32.into())],
            vec![("gemma4.rope.dimension_count_swa", 128u32.into())],
            vec![(
                "gemma4.feed_forward_length",
                Value::Array(Array::U32(vec![256, 256])),
            )],
            vec![("gemma4.attention.key_length_swa", 0u32.into())],
        ] {
            let m = meta(keys.clone());
            assert!(read(&m, &SWA, 4, 256).is_err(), "{keys:?}");
        }
    }
}

#[cfg(test)]
mod config_tests {
    use crate::config::{Arch, ModelConfig, QkNorm};
    use crate::error::ModelError;
    use worker_compute::KvType;
    use worker_gguf::{Array, Metadata, Value};

    /// Gemma 4 keys of a five-layer model (windowed, windowed, global,
    /// then a windowed and a global one reading the last two), less
    /// `without`, with `extra` over them.
    fn gemma4(without: &str, extra: Vec<(&str, Value)>) -> Result<ModelConfig, ModelError> {
        let mut m = Metadata::new();
        let keys: Vec<(&str, Value)> = vec![
            ("general.architecture", "gemma4".into()),
            ("gemma4.embedding_length", 256u32.into()),
            ("gemma4.block_count", 5u32.into()),
            ("gemma4.context_length", 4096u32.into()),
            ("gemma4.attention.head_count", 4u32.into()),
            (
                "gemma4.attention.head_count_kv",
                Value::Array(Array::U32(vec![2, 2, 1, 2, 1])),
            ),
            ("gemma4.attention.key_length", 128u32.into()),
            ("gemma4.attention.value_length", 128u32.into()),
            ("gemma4.attention.key_length_swa", 64u32.into()),
            ("gemma4.attention.value_length_swa", 64u32.into()),
            (
                "gemma4.feed_forward_length",
                Value::Array(Array::U32(vec![256, 256, 256, 512, 512])),
            ),
            ("gemma4.attention.layer_norm_rms_epsilon", 1e-6f32.into()),
            ("gemma4.attention.sliding_window", 512u32.into()),
            (
                "gemma4.attention.sliding_window_pattern",
                Value::Array(Array::Bool(vec![true, true, false, true, false])),
            ),
            ("gemma4.attention.shared_kv_layers", 2u32.into()),
            ("gemma4.embedding_length_per_layer_input", 32u32.into()),
            ("gemma4.rope.dimension_count", 128u32.into()),
            ("gemma4.rope.dimension_count_swa", 64u32.into()),
            ("gemma4.rope.freq_base", 1e6f32.into()),
            ("gemma4.rope.freq_base_swa", 1e4f32.into()),
            ("gemma4.final_logit_softcapping", 30f32.into()),
        ];
        for (k, v) in keys.into_iter().filter(|(k, _)| *k != without) {
            if !extra.iter().any(|(e, _)| *e == k) {
                m.insert(k, v).expect("insert");
            }
        }
        for (k, v) in extra {
            m.insert(k, v).expect("insert");
        }
        ModelConfig::from_metadata(&m)
    }

    #[test]
    fn gemma4_reads_its_layer_kinds_and_shared_layers() {
        let c = gemma4("", vec![]).expect("a Gemma 4 configuration");
        assert_eq!(c.arch, Arch::Gemma4);
        // The widest layer sizes the buffers.
        assert_eq!((c.head_dim, c.n_head_kv, c.n_ff), (128, 2, 512));
        let shapes: Vec<_> = (0..5)
            .map(|il| {
                let l = c.layer(il);
                (l.head_dim, l.n_head_kv, l.n_ff, l.kv_source)
            })
            .collect();
        assert_eq!(
            shapes,
            [
                (64, 2, 256, None),
                (64, 2, 256, None),
                (128, 1, 256, None),
                (64, 2, 512, Some(1)),
                (128, 1, 512, Some(2)),
            ]
        );
        assert_eq!((c.window(0), c.window(2)), (Some(512), None));
        assert_eq!((c.kq_scale, c.q_prescale), (1.0, None));
        assert_eq!((c.embd_scale, c.final_softcap), (Some(16.0), Some(30.0)));
        assert!(c.v_norm && c.rope_factors_global_only && c.post_norms);
        assert_eq!((c.qk_norm, c.per_layer_input), (QkNorm::PerHead, Some(32)));
        let rope = c.rope.as_ref().expect("RoPE");
        assert_eq!((rope.n_rot, rope.n_rot_swa), (128, 64));
        assert_eq!((rope.freq_base, rope.freq_base_swa), (1e6, 1e4));
        let spec = c.kv_spec(1, 64, KvType::F16, 8);
        assert_eq!(spec.kv_dim, 128);
        assert_eq!(spec.layer_dims, [128, 128, 128, 128, 128]);
        assert_eq!(spec.layer_sources, [None, None, None, Some(1), Some(2)]);
        spec.check_layout().expect("a layout the cache takes");
    }

    #[test]
    fn bad_gemma4_metadata_is_refused() {
        let cases: Vec<(&str, Vec<(&str, Value)>)> = vec![
            ("gemma4.attention.sliding_window", vec![]),
            ("gemma4.attention.sliding_window_pattern", vec![]),
            (
                "",
                vec![("gemma4.attention.sliding_window_pattern", 2u32.into())],
            ),
            ("", vec![("gemma4.attention.sliding_window", 0u32.into())]),
            ("", vec![("gemma4.attention.shared_kv_layers", 4u32.into())]),
            ("", vec![("gemma4.attention.shared_kv_layers", 3u32.into())]),
            (
                "",
                vec![("gemma4.attention.value_length_swa", 32u32.into())],
            ),
            ("", vec![("gemma4.attention.head_count_kv", 3u32.into())]),
            ("gemma4.feed_forward_length", vec![]),
            (
                "",
                vec![(
                    "gemma4.embedding_length_per_layer_input",
                    (1u32 << 30).into(),
                )],
            ),
        ];
        for (without, extra) in cases {
            let what = format!("without {without:?}, with {extra:?}");
            assert!(gemma4(without, extra).is_err(), "{what}");
        }
    }
}
