//! The parts of a synthetic model beside its common tensors: the settings
//! that set architectures apart, RoPE scalings, gpt-oss's expert biases
//! and the vocabulary.

use super::{Rng, RopeScaling, SyntheticExperts, SyntheticSpec, vector};
use crate::config::Arch;
use worker_gguf::GgufWriter;

/// The settings that set some architectures apart, with values that make
/// each of them matter in a small model: Gemma 2's soft caps, Mistral 3's
/// YaRN betas, log multiplier and attention temperature (which grows past
/// position 64), Granite's multipliers, gpt-oss's YaRN.
pub(super) fn add_arch_settings(w: &mut GgufWriter, s: &SyntheticSpec) -> worker_gguf::Result<()> {
    let a = s.arch.name();
    match s.arch {
        Arch::Gemma2 => {
            w.add(format!("{a}.attn_logit_softcapping"), 2.0f32)?;
            w.add(format!("{a}.final_logit_softcapping"), 3.0f32)?;
        }
        Arch::Mistral3 => {
            w.add(format!("{a}.rope.scaling.type"), "yarn")?;
            w.add(format!("{a}.rope.scaling.factor"), 4.0f32)?;
            w.add(format!("{a}.rope.scaling.original_context_length"), 64u32)?;
            w.add(format!("{a}.rope.scaling.yarn_beta_fast"), 16.0f32)?;
            w.add(format!("{a}.rope.scaling.yarn_beta_slow"), 2.0f32)?;
            w.add(format!("{a}.rope.scaling.yarn_log_multiplier"), 0.5f32)?;
            w.add(format!("{a}.attention.temperature_scale"), 0.5f32)?;
        }
        Arch::GptOss => {
            // As the released files, with the original context cut to 64
            // (a quarter of the synthetic one) so the scaling shows.
            w.add(format!("{a}.rope.scaling.type"), "yarn")?;
            w.add(format!("{a}.rope.scaling.factor"), 4.0f32)?;
            w.add(format!("{a}.rope.scaling.original_context_length"), 64u32)?;
        }
        Arch::Granite => {
            w.add(format!("{a}.embedding_scale"), 4.0f32)?;
            w.add(format!("{a}.residual_scale"), 0.5f32)?;
            w.add(format!("{a}.logit_scale"), 2.0f32)?;
            w.add(format!("{a}.attention.scale"), 0.125f32)?;
        }
        _ => {}
    }
    Ok(())
}

/// The metadata of `scaling`, and LongRoPE's factor tensors.
pub(super) fn add_rope_scaling(
    w: &mut GgufWriter,
    s: &SyntheticSpec,
    scaling: RopeScaling,
) -> worker_gguf::Result<()> {
    let a = s.arch.name();
    let n_pairs = s.head_dim() / 2;
    match scaling {
        RopeScaling::Linear => {
            w.add(format!("{a}.rope.scaling.type"), "linear")?;
            w.add(format!("{a}.rope.scaling.factor"), 8.0f32)?;
        }
        RopeScaling::Yarn => {
            w.add(format!("{a}.rope.scaling.type"), "yarn")?;
            w.add(format!("{a}.rope.scaling.factor"), 4.0f32)?;
            w.add(format!("{a}.rope.scaling.original_context_length"), 64u32)?;
        }
        RopeScaling::LongRopeLong | RopeScaling::LongRopeShort => {
            let orig: u32 = if scaling == RopeScaling::LongRopeLong {
                128
            } else {
                256
            };
            // Phi-3's converter stores sqrt(1 + ln(scale) / ln(original)).
            let scale = s.n_ctx as f64 / f64::from(orig);
            let attn = (1.0 + scale.ln() / f64::from(orig).ln()).sqrt() as f32;
            w.add(format!("{a}.rope.scaling.original_context_length"), orig)?;
            w.add(format!("{a}.rope.scaling.attn_factor"), attn)?;
            let long: Vec<f32> = (0..n_pairs).map(|i| 1.0 + i as f32 * 0.5).collect();
            let short: Vec<f32> = (0..n_pairs).map(|i| 1.0 + (i % 3) as f32 * 0.25).collect();
            w.add_f32("rope_factors_long.weight", &[n_pairs as u64], &long)?;
            w.add_f32("rope_factors_short.weight", &[n_pairs as u64], &short)?;
        }
    }
    Ok(())
}

/// An SPM vocabulary llama.cpp accepts for any architecture: the three
/// special tokens, the 256 byte tokens, then plain pieces.
pub(super) fn add_vocab(w: &mut GgufWriter, n: usize) -> worker_gguf::Result<()> {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![2i32, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let mut i = 0;
    while tokens.len() < n {
        tokens.push(format!("▁tok{i}"));
        types.push(1);
        i += 1;
    }
    let scores: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
    w.add("tokenizer.ggml.model", "llama")?;
    w.add("tokenizer.ggml.tokens", tokens)?;
    w.add("tokenizer.ggml.scores", scores)?;
    w.add("tokenizer.ggml.token_type", types)?;
    w.add("tokenizer.ggml.bos_token_id", 1u32)?;
    w.add("tokenizer.ggml.eos_token_id", 2u32)?;
    w.add("tokenizer.ggml.unknown_token_id", 0u32)?;
    Ok(())
}

/// gpt-oss's expert biases of block `il`: per expert, a bias of its gate,
/// up and down products (stacked as `[width, n_expert]`). The gate and up
/// biases spread to ±8, past the activation's clamps at 7, so the clamps
/// show in the logits.
pub(super) fn expert_biases(
    w: &mut GgufWriter,
    rng: &mut Rng,
    il: usize,
    n_embd: usize,
    x: SyntheticExperts,
) -> worker_gguf::Result<()> {
    for (name, width, spread) in [
        ("ffn_gate_exps", x.n_ff, 8.0),
        ("ffn_up_exps", x.n_ff, 8.0),
        ("ffn_down_exps", n_embd, 0.1),
    ] {
        let v = vector(width * x.n_expert, 0.0, spread, rng);
        w.add_f32(
            format!("blk.{il}.{name}.bias"),
            &[width as u64, x.n_expert as u64],
            &v,
        )?;
    }
    Ok(())
}
