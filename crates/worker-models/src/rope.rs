//! RoPE settings: the scaling a model was trained with, and the per-layer
//! parameters the backends apply.
//!
//! GGUF describes scaling with `<arch>.rope.scaling.type` (`none`,
//! `linear`, `yarn`, `longrope`), `.factor`, `.original_context_length` and
//! `.attn_factor`, and Phi-3's LongRoPE with two factor tensors, one for
//! contexts up to the original length and one beyond it. The rules are
//! llama.cpp's, so the angles match it:
//! - linear: angles divided by the factor;
//! - YaRN: the same, blended back to the unscaled angle for the
//!   high-frequency pairs (below a correction range derived from the
//!   original context, with betas 32 and 1), and cos/sin scaled by
//!   `1 + 0.1 ln(factor)` times the stored attention factor;
//! - LongRoPE: per-pair factors chosen by the context length, cos/sin
//!   scaled by the stored attention factor;
//! - sliding-window layers follow their architecture's rule ([`SwaRope`]).
//!
//! Mistral 3 files also carry YaRN's betas and a log multiplier of its
//! attention factor, which only that architecture reads.

use crate::error::{ModelError, Result};
use worker_compute::{RopeParams, RopeStyle};
use worker_gguf::ArchMetadata;

/// YaRN's frequency range: the pairs whose wavelength fits within the
/// original context `beta` times (llama.cpp's defaults).
const YARN_BETA_FAST: f32 = 32.0;
const YARN_BETA_SLOW: f32 = 1.0;

/// RoPE settings given by the user over the file's, as llama.cpp's
/// `--rope-scaling`, `--rope-scale`, `--rope-freq-base` and
/// `--yarn-orig-ctx` give them (for a model whose GGUF lacks its scaling,
/// or to stretch one further). Each field left `None` keeps the file's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RopeOverrides {
    /// `none`, `linear` or `yarn`.
    pub scaling: Option<String>,
    /// The context scaling factor (positions are divided by it).
    pub scale: Option<f32>,
    /// The frequency base of global layers.
    pub freq_base: Option<f32>,
    /// The context the model was trained with before scaling (YaRN).
    pub orig_ctx: Option<usize>,
}

/// How an architecture ropes its sliding-window layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwaRope {
    /// Their own base (default 10,000) and no position scaling (Gemma 3).
    Unscaled,
    /// Their own base (default the global one), scaled like the global
    /// layers, YaRN included (Gemma 2, gpt-oss).
    Scaled,
    /// The global base, with no scaling, YaRN or attention factor at all
    /// (OLMo 2 with windows).
    Plain,
}

/// What an architecture reads beyond the common RoPE keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchRope {
    /// Pairing style.
    pub style: RopeStyle,
    /// The rule of sliding-window layers.
    pub swa: SwaRope,
    /// Whether `rope.scaling.yarn_beta_fast`, `yarn_beta_slow` and
    /// `yarn_log_multiplier` are read (Mistral 3).
    pub yarn_keys: bool,
}

impl ArchRope {
    /// `style`, Gemma 3's window rule, no extra keys.
    pub fn plain(style: RopeStyle) -> Self {
        ArchRope {
            style,
            swa: SwaRope::Unscaled,
            yarn_keys: false,
        }
    }
}

/// RoPE settings of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Pairing style.
    pub style: RopeStyle,
    /// Rotated dimensions per head.
    pub n_rot: usize,
    /// Rotated dimensions per head of sliding-window layers (`n_rot`
    /// unless their heads differ).
    pub n_rot_swa: usize,
    /// Frequency base of global layers.
    pub freq_base: f32,
    /// Frequency base of sliding-window layers.
    pub freq_base_swa: f32,
    /// Position scale of global layers (1 / the scaling factor; 1 = none).
    pub freq_scale: f32,
    /// YaRN is on (1) or off (0).
    pub ext_factor: f32,
    /// Multiplies cos and sin (YaRN, LongRoPE; 1 = none).
    pub attn_factor: f32,
    /// The context the model was trained with before scaling.
    pub n_ctx_orig: usize,
    /// The rule of sliding-window layers.
    pub swa: SwaRope,
    /// YaRN's betas: the blend runs between the pairs whose wavelength
    /// fits the original context `beta_fast` and `beta_slow` times.
    pub beta_fast: f32,
    /// See `beta_fast`.
    pub beta_slow: f32,
}

impl RopeConfig {
    /// Reads the RoPE keys of `a`, then applies `o`; `head_dim` and
    /// `n_ctx_train` are the defaults of the rotated width and of the
    /// original context.
    pub fn from_metadata(
        a: &ArchMetadata<'_>,
        rules: ArchRope,
        head_dim: usize,
        n_ctx_train: usize,
        o: &RopeOverrides,
    ) -> Result<Self> {
        let (freq_scale, yarn) = scaling(a, o)?;
        let log_mul = if rules.yarn_keys {
            a.get_opt::<f32>("rope.scaling.yarn_log_multiplier")?
                .unwrap_or(0.0)
        } else {
            0.0
        };
        let mut attn_factor = if yarn {
            yarn_attn_factor(freq_scale, log_mul)
        } else {
            1.0
        };
        let (beta_fast, beta_slow) = yarn_betas(a, rules)?;
        let stored = a.get_opt::<f32>("rope.scaling.attn_factor")?.unwrap_or(1.0);
        if !(stored.is_finite() && stored > 0.0) {
            return Err(ModelError::Unsupported(format!(
                "rope scaling attention factor {stored}"
            )));
        }
        attn_factor *= stored;
        let n_ctx_orig = match o.orig_ctx {
            Some(n) => n,
            None => a
                .get_opt::<usize>("rope.scaling.original_context_length")?
                .unwrap_or(n_ctx_train),
        };
        if yarn && n_ctx_orig == 0 {
            return Err(ModelError::Unsupported(
                "YaRN with an original context of 0 positions".into(),
            ));
        }
        let freq_base = freq_base(a, o)?;
        let swa_default = match rules.swa {
            SwaRope::Unscaled => 10_000.0,
            SwaRope::Scaled | SwaRope::Plain => freq_base,
        };
        let n_rot = a
            .get_opt::<usize>("rope.dimension_count")?
            .unwrap_or(head_dim);
        Ok(RopeConfig {
            style: rules.style,
            n_rot,
            n_rot_swa: n_rot,
            freq_base,
            freq_base_swa: a
                .get_opt::<f32>("rope.freq_base_swa")?
                .unwrap_or(swa_default),
            freq_scale,
            ext_factor: if yarn { 1.0 } else { 0.0 },
            attn_factor,
            n_ctx_orig,
            swa: rules.swa,
            beta_fast,
            beta_slow,
        })
    }

    /// The parameters of one layer: sliding-window layers use their own
    /// base and no scaling; `factors` are the per-pair frequency factors
    /// (Llama 3's, or LongRoPE's for the context in use).
    pub fn layer(&self, swa: bool, factors: Option<Vec<f32>>) -> RopeParams {
        let (freq_base, freq_scale, ext_factor, attn_factor) = match (swa, self.swa) {
            (false, _) => (
                self.freq_base,
                self.freq_scale,
                self.ext_factor,
                self.attn_factor,
            ),
            (true, SwaRope::Unscaled) => {
                (self.freq_base_swa, 1.0, self.ext_factor, self.attn_factor)
            }
            (true, SwaRope::Scaled) => (
                self.freq_base_swa,
                self.freq_scale,
                self.ext_factor,
                self.attn_factor,
            ),
            // The global base: the window's own base key is not used.
            (true, SwaRope::Plain) => (self.freq_base, 1.0, 0.0, 1.0),
        };
        let n_rot = if swa { self.n_rot_swa } else { self.n_rot };
        RopeParams {
            style: self.style,
            n_rot,
            freq_base,
            freq_scale,
            freq_factors: factors,
            ext_factor,
            corr_dims: corr_dims(
                n_rot,
                self.n_ctx_orig,
                freq_base,
                [self.beta_fast, self.beta_slow],
            ),
            attn_factor,
        }
    }
}

/// The pair index whose wavelength fits `n_ctx_orig` exactly `beta` times.
fn corr_dim(n_rot: usize, n_ctx_orig: usize, beta: f32, base: f32) -> f32 {
    n_rot as f32 * (n_ctx_orig as f32 / (beta * 2.0 * std::f32::consts::PI)).ln()
        / (2.0 * base.ln())
}

/// YaRN's blend range in pairs, clamped to the rotated width as llama.cpp
/// clamps it.
pub fn yarn_corr_dims(n_rot: usize, n_ctx_orig: usize, base: f32) -> [f32; 2] {
    corr_dims(n_rot, n_ctx_orig, base, [YARN_BETA_FAST, YARN_BETA_SLOW])
}

/// [`yarn_corr_dims`] with the betas `[fast, slow]`.
fn corr_dims(n_rot: usize, n_ctx_orig: usize, base: f32, [fast, slow]: [f32; 2]) -> [f32; 2] {
    let start = corr_dim(n_rot, n_ctx_orig, fast, base).floor();
    let end = corr_dim(n_rot, n_ctx_orig, slow, base).ceil();
    [start.max(0.0), end.min(n_rot as f32 - 1.0)]
}

/// The frequency scale (1 / the scaling factor) and whether the scaling
/// is YaRN, from the overrides or the file. `rope.scale_linear` is the
/// factor's older name.
fn scaling(a: &ArchMetadata<'_>, o: &RopeOverrides) -> Result<(f32, bool)> {
    let factor = match (o.scale, a.get_opt::<f32>("rope.scaling.factor")?) {
        (Some(f), _) | (None, Some(f)) => f,
        (None, None) => a.get_opt::<f32>("rope.scale_linear")?.unwrap_or(0.0),
    };
    let linear = if factor == 0.0 { 1.0 } else { 1.0 / factor };
    let kind = match &o.scaling {
        Some(k) => k.as_str(),
        None => a.get_opt::<&str>("rope.scaling.type")?.unwrap_or("linear"),
    };
    let (freq_scale, yarn) = match kind {
        "none" => (1.0, false),
        "linear" | "longrope" => (linear, false),
        "yarn" => (linear, true),
        other => {
            return Err(ModelError::Unsupported(format!(
                "rope scaling type {other:?} (supported: none, linear, yarn, longrope)"
            )));
        }
    };
    if !(freq_scale.is_finite() && freq_scale > 0.0) {
        return Err(ModelError::Unsupported(format!(
            "rope scaling factor {factor}"
        )));
    }
    Ok((freq_scale, yarn))
}

/// YaRN's attention factor, with its own scaling (applied again with the
/// angles) cancelled here; a log multiplier divides it by the factor it
/// implies for every dimension.
fn yarn_attn_factor(freq_scale: f32, log_mul: f32) -> f32 {
    let f = 1.0 / freq_scale;
    let mscale = |m: f32| {
        if f <= 1.0 {
            1.0
        } else {
            0.1 * m * f.ln() + 1.0
        }
    };
    let base = if log_mul != 0.0 {
        mscale(1.0) / mscale(log_mul)
    } else {
        mscale(1.0)
    };
    base * (1.0 / (1.0 + 0.1 * f.ln()))
}

/// YaRN's betas: the file's where the architecture reads them, else
/// llama.cpp's defaults.
fn yarn_betas(a: &ArchMetadata<'_>, rules: ArchRope) -> Result<(f32, f32)> {
    let (beta_fast, beta_slow) = if rules.yarn_keys {
        (
            a.get_opt::<f32>("rope.scaling.yarn_beta_fast")?
                .unwrap_or(YARN_BETA_FAST),
            a.get_opt::<f32>("rope.scaling.yarn_beta_slow")?
                .unwrap_or(YARN_BETA_SLOW),
        )
    } else {
        (YARN_BETA_FAST, YARN_BETA_SLOW)
    };
    if !(beta_fast.is_finite() && beta_slow.is_finite() && beta_fast > 0.0 && beta_slow > 0.0) {
        return Err(ModelError::Unsupported(format!(
            "YaRN betas {beta_fast} and {beta_slow}"
        )));
    }
    Ok((beta_fast, beta_slow))
}

/// The frequency base, from the overrides or the file (10000 by default).
fn freq_base(a: &ArchMetadata<'_>, o: &RopeOverrides) -> Result<f32> {
    let freq_base = match o.freq_base {
        Some(b) => b,
        None => a.get_opt::<f32>("rope.freq_base")?.unwrap_or(10_000.0),
    };
    if !(freq_base.is_finite() && freq_base > 1.0) {
        return Err(ModelError::Unsupported(format!(
            "rope frequency base {freq_base}"
        )));
    }
    Ok(freq_base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corr_dims_cover_the_high_frequencies() {
        // n_rot 64, original context 64, base 1e4: wavelengths of pairs
        // 0..=8 fit the context at least once.
        assert_eq!(yarn_corr_dims(64, 64, 10_000.0), [0.0, 9.0]);
        // A long original context moves the range up and clamps it.
        let [lo, hi] = yarn_corr_dims(128, 32_768, 1_000_000.0);
        assert!(lo > 0.0 && hi <= 127.0 && lo < hi, "{lo} {hi}");
    }
}
