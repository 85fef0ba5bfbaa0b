//! Random-weight models in real architectures and shapes.
//!
//! Conformance tests and benchmarks need models whose layout is real but
//! whose size is chosen: a 2-layer, 256-wide model of each architecture for
//! checking logits against llama.cpp, or the shapes of a 1B or 8B Llama for
//! measuring speed. [`write_model`] writes one with the project's GGUF
//! writer. Quantized tensors are written as random blocks with bounded,
//! finite scales, so no quantizer is needed and every bit pattern of the
//! packed values occurs; plain tensors hold uniform values of variance
//! `1/cols`. The same spec and seed always give the same file.

mod build;
mod gemma4;
mod hybrid;
mod parts;
mod shapes;

use crate::config::Arch;
use build::build;
use half::f16;
use std::io;
use std::path::Path;
use worker_gguf::GgmlType;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    /// Architecture.
    pub arch: Arch,
    /// Type of the expert matrices, and of every weight matrix of a model
    /// without experts (norms, biases and routers stay F32).
    pub ty: GgmlType,
    /// Type of the matrices outside the experts: `ty`, except in gpt-oss
    /// files, whose experts alone are MXFP4.
    pub dense_ty: GgmlType,
    /// Embedding width (a multiple of 256 for K-quants).
    pub n_embd: usize,
    /// Layers.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Vocabulary size (at least 260).
    pub n_vocab: usize,
    /// Context length.
    pub n_ctx: usize,
    /// Sliding window (Gemma 2 and 3, gpt-oss), applied to every other
    /// layer (Gemma 4: to the layers its `layers` list).
    pub window: Option<u32>,
    /// Write a separate output matrix instead of tying it to the embeddings.
    pub untied_output: bool,
    /// RoPE scaling to write, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// Seed of the weights.
    pub seed: u64,
    /// Routed experts in place of the dense feed-forward: how many, how
    /// many each token uses, and one expert's width (Qwen 3 MoE, gpt-oss;
    /// Llama with experts, whose experts are `n_ff` wide).
    pub experts: Option<SyntheticExperts>,
    /// Gated delta net layers among the attention layers (Qwen 3.5).
    pub recurrent: Option<SyntheticDeltaNet>,
    /// Layers that differ by kind (Gemma 4).
    pub layers: Option<SyntheticLayers>,
}

/// The layers of a synthetic Gemma 4: which have the sliding window (the
/// spec's `window`), their head sizes and K/V heads by kind, the last
/// layers reading earlier layers' K/V, and the per-layer inputs. The
/// spec's `n_head_kv` is the global layers'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticLayers {
    /// Per layer: whether it has the sliding window.
    pub swa: Vec<bool>,
    /// Head size of the windowed layers.
    pub head_dim_swa: usize,
    /// Head size of the global layers.
    pub head_dim: usize,
    /// K/V heads of the windowed layers.
    pub n_head_kv_swa: usize,
    /// The last this many layers read earlier layers' K/V.
    pub shared_kv: usize,
    /// Those layers' feed-forward is twice `n_ff` wide.
    pub double_wide: bool,
    /// Width of each layer's per-layer input (0: none).
    pub per_layer_input: usize,
    /// The global layers have no value projection: their keys serve.
    pub keys_as_values: bool,
    /// Rotated dimensions of the global heads (the rest get frequency
    /// factors that stop them turning).
    pub rotated: usize,
}

impl SyntheticLayers {
    /// Head size and K/V heads of layer `il` (global: `n_head_kv`).
    pub fn heads(&self, il: usize, n_head_kv: usize) -> (usize, usize) {
        match self.swa.get(il) {
            Some(true) => (self.head_dim_swa, self.n_head_kv_swa),
            _ => (self.head_dim, n_head_kv),
        }
    }

    /// Whether layer `il` reads an earlier layer's K/V.
    pub fn is_shared(&self, il: usize) -> bool {
        il + self.shared_kv >= self.swa.len()
    }

    /// The feed-forward width of layer `il`.
    pub fn n_ff(&self, il: usize, n_ff: usize) -> usize {
        if self.double_wide && self.is_shared(il) {
            2 * n_ff
        } else {
            n_ff
        }
    }
}

/// The recurrent layers of a synthetic hybrid model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticDeltaNet {
    /// Query and key heads.
    pub n_k_heads: usize,
    /// Value heads.
    pub n_v_heads: usize,
    /// Width of every head.
    pub head_dim: usize,
    /// Convolution taps.
    pub conv_taps: usize,
    /// Every `interval`-th layer attends; the others are recurrent.
    pub interval: usize,
}

impl SyntheticDeltaNet {
    /// Whether layer `il` is recurrent.
    pub fn is_recurrent(&self, il: usize) -> bool {
        !(il + 1).is_multiple_of(self.interval.max(1))
    }
}

/// The experts of a synthetic mixture of experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticExperts {
    /// Experts per layer.
    pub n_expert: usize,
    /// Experts per token.
    pub n_used: usize,
    /// One expert's feed-forward width.
    pub n_ff: usize,
}

/// RoPE scalings a synthetic model can carry, each with fixed settings, so
/// that llama.cpp's reference logits check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeScaling {
    /// `rope.scaling.type = linear`, factor 8 (Gemma 3 scales only its
    /// global layers).
    Linear,
    /// YaRN, factor 4, original context 64.
    Yarn,
    /// Phi-3 LongRoPE factors, original context 128: a context of 256
    /// uses the long factors.
    LongRopeLong,
    /// The same with an original context of 256: a context of 256 uses
    /// the short factors.
    LongRopeShort,
}

impl RopeScaling {
    /// Every variant.
    pub const ALL: [RopeScaling; 4] = [
        RopeScaling::Linear,
        RopeScaling::Yarn,
        RopeScaling::LongRopeLong,
        RopeScaling::LongRopeShort,
    ];

    /// The name used on the command line and in fixture names.
    pub fn name(self) -> &'static str {
        match self {
            RopeScaling::Linear => "linear",
            RopeScaling::Yarn => "yarn",
            RopeScaling::LongRopeLong => "longrope-long",
            RopeScaling::LongRopeShort => "longrope-short",
        }
    }

    /// The variant called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }
}

impl SyntheticSpec {
    /// The small conformance shape for `arch` and `ty`. gpt-oss has eight
    /// heads of 64 (its real head size), so its attention is twice as wide
    /// as its embedding, as in the released models.
    pub fn conformance(arch: Arch, ty: GgmlType) -> Self {
        SyntheticSpec {
            arch,
            ty,
            // gpt-oss's conformance files keep the rest F32, so that its
            // MXFP4 experts are what a quantized file checks.
            dense_ty: if arch == Arch::GptOss {
                GgmlType::F32
            } else {
                ty
            },
            n_embd: 256,
            // SmolLM3 skips RoPE in every fourth layer: four layers show it.
            // Gemma 4 has three kinds of layer.
            n_layer: match arch {
                Arch::Smollm3 => 4,
                Arch::Gemma4 => 3,
                _ => 2,
            },
            n_head: if arch == Arch::GptOss { 8 } else { 4 },
            n_head_kv: if arch == Arch::Gemma4 { 1 } else { 2 },
            n_ff: if arch == Arch::Gemma4 { 256 } else { 512 },
            n_vocab: 512,
            n_ctx: 256,
            window: matches!(
                arch,
                Arch::Gemma3 | Arch::Gemma2 | Arch::GptOss | Arch::Gemma4
            )
            .then_some(4),
            untied_output: matches!(
                arch,
                Arch::Llama | Arch::Phi3 | Arch::Gpt2 | Arch::Olmo2 | Arch::GptOss
            ),
            rope_scaling: None,
            seed: 0x5EED_0000 + arch as u64 * 97 + ty.id() as u64,
            // Eight experts, two per token, 256 wide (K-quant blocks).
            experts: matches!(arch, Arch::Qwen3Moe | Arch::GptOss | Arch::Qwen35Moe).then_some(
                SyntheticExperts {
                    n_expert: 8,
                    n_used: 2,
                    n_ff: 256,
                },
            ),
            // Two key heads shared by four value heads, so the grouping
            // shows; a recurrent layer, then an attending one.
            recurrent: matches!(arch, Arch::Qwen35 | Arch::Qwen35Moe).then_some(
                SyntheticDeltaNet {
                    n_k_heads: 2,
                    n_v_heads: 4,
                    head_dim: 64,
                    conv_taps: 4,
                    interval: 2,
                },
            ),
            layers: (arch == Arch::Gemma4).then(gemma4::conformance_layers),
        }
    }

    /// The conformance shape of a Llama with experts (as Mixtral files
    /// are): eight experts of `n_ff` = 256, two per token.
    pub fn conformance_llama_moe(ty: GgmlType) -> Self {
        let mut s = Self::conformance(Arch::Llama, ty);
        s.n_ff = 256;
        s.experts = Some(SyntheticExperts {
            n_expert: 8,
            n_used: 2,
            n_ff: 256,
        });
        s.seed ^= 0xE0E0;
        s
    }

    /// The name of the conformance variant: the architecture, or
    /// `llama-moe` for a Llama with experts, `gemma4-moe` for Gemma 4's
    /// form with experts.
    pub fn variant(&self) -> String {
        match (self.arch, self.experts) {
            (Arch::Llama, Some(_)) => "llama-moe".into(),
            (Arch::Gemma4, Some(_)) => "gemma4-moe".into(),
            (arch, _) => arch.name().into(),
        }
    }

    /// The conformance shape with a RoPE scaling. LongRoPE models claim a
    /// trained context of 1,024, as a long-context Phi-3 claims more than
    /// its original.
    pub fn with_rope_scaling(mut self, scaling: RopeScaling) -> Self {
        if matches!(
            scaling,
            RopeScaling::LongRopeLong | RopeScaling::LongRopeShort
        ) {
            self.n_ctx = 1024;
        }
        self.rope_scaling = Some(scaling);
        self
    }

    fn head_dim(&self) -> usize {
        // gpt-oss's heads are 64 wide at every size; Gemma 4's global
        // heads are their own.
        match (self.arch, &self.layers) {
            (Arch::GptOss, _) => 64,
            (_, Some(l)) => l.head_dim,
            _ => self.n_embd / self.n_head,
        }
    }
}

/// xorshift64*: small, fast, reproducible everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Byte offsets of f16 scale fields and the scale that keeps weights near
/// `amp`, per block type. MXFP4's field is its E8M0 exponent byte instead,
/// which `matrix` writes as the power of two at or below the scale.
fn scale_fields(ty: GgmlType, amp: f32) -> Vec<(usize, f32)> {
    match ty {
        GgmlType::Q8_0 => vec![(0, amp / 127.0)],
        GgmlType::Q4_0 => vec![(0, amp / 8.0)],
        GgmlType::Q5_0 => vec![(0, amp / 16.0)],
        GgmlType::Q4_1 => vec![(0, 2.0 * amp / 15.0), (2, -amp)],
        GgmlType::Q5_1 => vec![(0, 2.0 * amp / 31.0), (2, -amp)],
        GgmlType::Q2_K => vec![(80, amp / 45.0), (82, amp / 30.0)],
        GgmlType::Q3_K => vec![(108, amp / 128.0)],
        GgmlType::Q4_K => vec![(0, amp / 945.0), (2, amp / 126.0)],
        GgmlType::Q5_K => vec![(0, amp / 1953.0), (2, amp / 126.0)],
        GgmlType::Q6_K => vec![(208, amp / 4064.0)],
        // The largest table value is 127 in magnitude; IQ4_XS scales it by
        // a 6-bit group scale less 32 (-32..31) as well.
        GgmlType::IQ4_NL => vec![(0, amp / 127.0)],
        GgmlType::IQ4_XS => vec![(0, amp / 4064.0)],
        // Doubled E2M1 codes reach 12 in magnitude.
        GgmlType::MXFP4 => vec![(0, amp / 12.0)],
        _ => Vec::new(),
    }
}

/// A `rows` x `cols` matrix of type `ty` in its GGUF encoding, random with
/// values of scale `1/sqrt(cols)`; the same seed gives the same bytes. Used
/// to compare backends op by op.
pub fn random_matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> io::Result<Vec<u8>> {
    matrix(ty, rows, cols, &mut Rng(seed | 1))
}

/// A `rows` x `cols` matrix of type `ty` with values of scale `1/sqrt(cols)`.
fn matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> io::Result<Vec<u8>> {
    let amp = (3.0 / cols as f32).sqrt();
    let n = rows * cols;
    Ok(match ty {
        GgmlType::F32 => (0..n)
            .flat_map(|_| (rng.unit() * amp).to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| f16::from_f32(rng.unit() * amp).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| half::bf16::from_f32(rng.unit() * amp).to_le_bytes())
            .collect(),
        _ => {
            let fields = scale_fields(ty, amp);
            if fields.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot synthesize {ty}"),
                ));
            }
            let bytes = ty.bytes_for(n as u64).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{cols} is not a whole number of {ty} blocks"),
                )
            })?;
            let mut data: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
            for block in data.chunks_exact_mut(ty.type_size()) {
                for &(off, scale) in &fields {
                    // Vary each block's scale a little, keeping its sign.
                    let s = scale * (0.75 + 0.25 * rng.unit().abs());
                    if ty == GgmlType::MXFP4 {
                        // The half scale of exponent byte `e` is 2^(e - 128):
                        // one more than the biased exponent of f32 `s`
                        // (positive, normal) is the power of two at or below.
                        block[off] = ((s.to_bits() >> 23) as u8).saturating_add(1);
                        continue;
                    }
                    block[off..off + 2].copy_from_slice(&f16::from_f32(s).to_le_bytes());
                }
            }
            data
        }
    })
}

fn vector(n: usize, center: f32, spread: f32, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| center + spread * rng.unit()).collect()
}

/// Writes the model described by `spec` to `path`.
pub fn write_model(spec: &SyntheticSpec, path: &Path) -> io::Result<()> {
    let w = build(spec)?;
    w.write_file(path)
        .map_err(|e| io::Error::other(e.to_string()))
}
