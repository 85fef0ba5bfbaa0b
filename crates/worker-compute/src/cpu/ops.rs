//! Element-wise and row-wise ops on f32 slices, computed as ggml computes
//! them where that choice shows in the results (f64 sums in norms, GELU
//! through f16, iterated RoPE angles).

// Kernels index fixed-size blocks and lanes explicitly: that is the shape
// the vectorizer turns into SIMD, and it mirrors the block layouts.
#![allow(clippy::needless_range_loop)]

use crate::types::{Activation, RopeParams, RopeStyle, SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT};
use half::f16;

/// RMS norm of each row of `dim`, times `w` when given.
pub fn rms_norm(x: &mut [f32], dim: usize, w: Option<&[f32]>, eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        let sum: f64 = row.iter().map(|&v| f64::from(v * v)).sum();
        let mean = (sum / dim as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for v in row.iter_mut() {
            *v *= scale;
        }
        if let Some(w) = w {
            for (v, &g) in row.iter_mut().zip(w) {
                *v *= g;
            }
        }
    }
}

/// Layer norm of each row of `dim`, then `* w + b`.
pub fn layer_norm(x: &mut [f32], dim: usize, w: &[f32], b: Option<&[f32]>, eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
        let mean = (sum / dim as f64) as f32;
        let mut var = 0f64;
        for v in row.iter_mut() {
            *v -= mean;
            var += f64::from(*v * *v);
        }
        let scale = 1.0 / ((var / dim as f64) as f32 + eps).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            *v = *v * scale * w[i] + b.map_or(0.0, |b| b[i]);
        }
    }
}

fn gelu_f32(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const GELU_COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// GELU as ggml evaluates it: through an f16 table (input and result
/// rounded to f16), identity above 10 and zero below -10. The table holds
/// the f16 GELU of every f16 value, built once (128 KiB), so each call is a
/// lookup instead of a `tanh`.
fn gelu_table(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let table = GELU_F16.get_or_init(|| {
            (0..=u16::MAX)
                .map(|bits| f16::from_f32(gelu_f32(f16::from_bits(bits).to_f32())).to_bits())
                .collect()
        });
        f16::from_bits(table[f16::from_f32(x).to_bits() as usize]).to_f32()
    }
}

/// GELU of every f16 value, indexed by its bits.
static GELU_F16: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The gate side of gpt-oss's SwiGLU: capped at the limit, then
/// `x * sigmoid(alpha * x)`.
fn swiglu_oai_gate(x: f32) -> f32 {
    let x = x.min(SWIGLU_OAI_LIMIT);
    x / (1.0 + (SWIGLU_OAI_ALPHA * -x).exp())
}

/// `x = act(x)`.
pub fn act(x: &mut [f32], act: Activation) {
    match act {
        Activation::Silu => x.iter_mut().for_each(|v| *v = silu(*v)),
        Activation::Sigmoid => x.iter_mut().for_each(|v| *v = sigmoid(*v)),
        Activation::Gelu => x.iter_mut().for_each(|v| *v = gelu_table(*v)),
        Activation::SwigluOai => x.iter_mut().for_each(|v| *v = swiglu_oai_gate(*v)),
    }
}

/// `gate = act(gate) * up`.
pub fn glu(gate: &mut [f32], up: &[f32], act: Activation) {
    match act {
        Activation::Silu => {
            for (g, &u) in gate.iter_mut().zip(up) {
                *g = silu(*g) * u;
            }
        }
        Activation::Sigmoid => {
            for (g, &u) in gate.iter_mut().zip(up) {
                *g = sigmoid(*g) * u;
            }
        }
        Activation::Gelu => {
            for (g, &u) in gate.iter_mut().zip(up) {
                // As ggml's geglu: the f16-rounded GELU times the f32 up.
                *g = if *g <= -10.0 {
                    0.0
                } else if *g >= 10.0 {
                    *g * u
                } else {
                    gelu_table(*g) * u
                };
            }
        }
        Activation::SwigluOai => {
            for (g, &u) in gate.iter_mut().zip(up) {
                let y = u.clamp(-SWIGLU_OAI_LIMIT, SWIGLU_OAI_LIMIT);
                *g = swiglu_oai_gate(*g) * (y + 1.0);
            }
        }
    }
}

/// Rotates `n_head` heads of `head_dim` for one token at `pos`.
pub fn rope(
    x: &mut [f32],
    pos: u32,
    n_head: usize,
    head_dim: usize,
    p: &RopeParams,
    cs: &mut Vec<(f32, f32)>,
) {
    let n_rot = p.n_rot.min(head_dim);
    let theta_scale = p.freq_base.powf(-2.0 / n_rot as f32);
    cs.clear();
    let mut theta = pos as f32;
    for i in 0..n_rot / 2 {
        cs.push(p.cos_sin(i, theta));
        theta *= theta_scale;
    }
    for head in x.chunks_exact_mut(head_dim).take(n_head) {
        for (i, &(c, s)) in cs.iter().enumerate() {
            let (a, b) = match p.style {
                RopeStyle::Normal => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + n_rot / 2),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * c - x1 * s;
            head[b] = x0 * s + x1 * c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_rows() {
        let mut x = vec![3.0, 4.0, 0.0, 0.0];
        rms_norm(&mut x, 4, None, 0.0);
        let rms = (x.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6);
    }

    #[test]
    fn gelu_matches_the_formula_within_f16() {
        for &x in &[-3.0f32, -0.5, 0.0, 0.1, 1.0, 2.5, 9.0] {
            let want = gelu_f32(x);
            let got = gelu_table(x);
            assert!(
                (got - want).abs() <= want.abs() * 2e-3 + 1e-4,
                "{x}: {got} vs {want}"
            );
        }
        assert_eq!(gelu_table(-11.0), 0.0);
        assert_eq!(gelu_table(12.0), 12.0);
    }

    #[test]
    fn swiglu_oai_clamps_the_gate_above_and_the_up_value_both_ways() {
        let sig = |x: f64| 1.0 / (1.0 + (-1.702 * x).exp());
        let close = |got: f32, want: f64| {
            assert!(
                (f64::from(got) - want).abs() <= want.abs() * 1e-6,
                "{got} vs {want}"
            );
        };
        let mut g = vec![1.0f32, 9.0, -9.0, 0.5, 2.0];
        glu(&mut g, &[2.0, 0.0, 0.0, -20.0, 30.0], Activation::SwigluOai);
        close(g[0], sig(1.0) * 3.0);
        // A gate above 7 counts as 7; below -7 it is not clamped.
        close(g[1], 7.0 * sig(7.0));
        close(g[2], -9.0 * sig(-9.0));
        // The up value is clamped to ±7, then offset by one.
        close(g[3], 0.5 * sig(0.5) * -6.0);
        close(g[4], 2.0 * sig(2.0) * 8.0);
        let mut a = vec![9.0f32, -1.0];
        act(&mut a, Activation::SwigluOai);
        close(a[0], 7.0 * sig(7.0));
        close(a[1], -sig(-1.0));
    }

    #[test]
    fn rope_preserves_norms_and_position_zero() {
        let p = RopeParams::plain(RopeStyle::Neox, 8, 10000.0);
        let orig: Vec<f32> = (0..16).map(|i| i as f32 * 0.1 - 0.7).collect();
        let mut cs = Vec::new();
        let mut x = orig.clone();
        rope(&mut x, 0, 2, 8, &p, &mut cs);
        assert_eq!(x, orig);
        rope(&mut x, 17, 2, 8, &p, &mut cs);
        let n0: f32 = orig[..8].iter().map(|v| v * v).sum();
        let n1: f32 = x[..8].iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-4);
    }
}
