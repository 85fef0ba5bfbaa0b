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

mod parts;
mod shapes;

use crate::config::Arch;
use half::f16;
use parts::{add_arch_settings, add_rope_scaling, add_vocab, expert_biases, norm_out};
use std::io;
use std::path::Path;
use worker_gguf::{GgmlType, GgufWriter, Value};

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
    /// layer.
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
            n_layer: if arch == Arch::Smollm3 { 4 } else { 2 },
            n_head: if arch == Arch::GptOss { 8 } else { 4 },
            n_head_kv: 2,
            n_ff: 512,
            n_vocab: 512,
            n_ctx: 256,
            window: matches!(arch, Arch::Gemma3 | Arch::Gemma2 | Arch::GptOss).then_some(4),
            untied_output: matches!(
                arch,
                Arch::Llama | Arch::Phi3 | Arch::Gpt2 | Arch::Olmo2 | Arch::GptOss
            ),
            rope_scaling: None,
            seed: 0x5EED_0000 + arch as u64 * 97 + ty.id() as u64,
            // Eight experts, two per token, 256 wide (K-quant blocks).
            experts: matches!(arch, Arch::Qwen3Moe | Arch::GptOss).then_some(SyntheticExperts {
                n_expert: 8,
                n_used: 2,
                n_ff: 256,
            }),
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
    /// `llama-moe` for a Llama with experts.
    pub fn variant(&self) -> String {
        match (self.arch, self.experts) {
            (Arch::Llama, Some(_)) => "llama-moe".into(),
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
        // gpt-oss's heads are 64 wide at every size.
        match self.arch {
            Arch::GptOss => 64,
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

fn build(s: &SyntheticSpec) -> io::Result<GgufWriter> {
    let err =
        |e: worker_gguf::GgufError| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
    let mut rng = Rng(s.seed | 1);
    let mut w = GgufWriter::new();
    let a = s.arch.name();
    let (e, hd) = (s.n_embd, s.head_dim());
    let (q_dim, kv_dim) = (s.n_head * hd, s.n_head_kv * hd);
    let md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), a.into()),
        // No architecture in the name: llama.cpp keys vocabulary fixes on it.
        (
            "general.name".into(),
            format!("llorch synthetic {}", s.ty).into(),
        ),
        (format!("{a}.context_length"), Value::U32(s.n_ctx as u32)),
        (format!("{a}.embedding_length"), Value::U32(e as u32)),
        (format!("{a}.block_count"), Value::U32(s.n_layer as u32)),
        (
            format!("{a}.feed_forward_length"),
            Value::U32(s.n_ff as u32),
        ),
        (
            format!("{a}.attention.head_count"),
            Value::U32(s.n_head as u32),
        ),
        (
            format!("{a}.attention.head_count_kv"),
            Value::U32(s.n_head_kv as u32),
        ),
        (format!("{a}.attention.key_length"), Value::U32(hd as u32)),
        (format!("{a}.attention.value_length"), Value::U32(hd as u32)),
        // Gemma 3's global layers use another base than its windowed ones;
        // gpt-oss has its own.
        (
            format!("{a}.rope.freq_base"),
            Value::F32(match s.arch {
                Arch::Gemma3 => 1_000_000.0,
                Arch::GptOss => 150_000.0,
                _ => 10_000.0,
            }),
        ),
    ];
    for (k, v) in md {
        w.add(k, v).map_err(err)?;
    }
    match s.arch {
        Arch::Gpt2 => w.add(format!("{a}.attention.layer_norm_epsilon"), 1e-5f32),
        _ => w.add(format!("{a}.attention.layer_norm_rms_epsilon"), 1e-6f32),
    }
    .map_err(err)?;
    if let Some(win) = s
        .window
        .filter(|_| matches!(s.arch, Arch::Gemma3 | Arch::Gemma2 | Arch::GptOss))
    {
        w.add(format!("{a}.attention.sliding_window"), win)
            .map_err(err)?;
        // gpt-oss's files give no pattern: every other layer is the default.
        if s.arch != Arch::GptOss {
            w.add(format!("{a}.attention.sliding_window_pattern"), 2u32)
                .map_err(err)?;
        }
        if s.arch == Arch::Gemma3 {
            w.add(format!("{a}.rope.freq_base_swa"), 10_000.0f32)
                .map_err(err)?;
        }
    }
    add_arch_settings(&mut w, s).map_err(err)?;
    if let Some(x) = s.experts {
        w.add(format!("{a}.expert_count"), x.n_expert as u32)
            .map_err(err)?;
        w.add(format!("{a}.expert_used_count"), x.n_used as u32)
            .map_err(err)?;
        if matches!(s.arch, Arch::Qwen3Moe | Arch::GptOss) {
            w.add(format!("{a}.expert_feed_forward_length"), x.n_ff as u32)
                .map_err(err)?;
        }
    }
    if let Some(scaling) = s.rope_scaling {
        add_rope_scaling(&mut w, s, scaling).map_err(err)?;
    }
    add_vocab(&mut w, s.n_vocab).map_err(err)?;

    let dense_ty = s.dense_ty;
    let mat = |w: &mut GgufWriter,
               rng: &mut Rng,
               name: String,
               cols: usize,
               rows: usize|
     -> io::Result<()> {
        let data = matrix(dense_ty, rows, cols, rng)?;
        w.add_tensor(name, &[cols as u64, rows as u64], dense_ty, data)
            .map_err(err)
    };
    let vec_t = |w: &mut GgufWriter, name: String, v: Vec<f32>| -> io::Result<()> {
        w.add_f32(name, &[v.len() as u64], &v).map_err(err)
    };

    mat(&mut w, &mut rng, "token_embd.weight".into(), e, s.n_vocab)?;
    if s.arch == Arch::Gpt2 {
        let pos = matrix(GgmlType::F32, s.n_ctx, e, &mut rng)?;
        w.add_tensor(
            "position_embd.weight",
            &[e as u64, s.n_ctx as u64],
            GgmlType::F32,
            pos,
        )
        .map_err(err)?;
    }
    if s.arch == Arch::Llama {
        let factors: Vec<f32> = (0..hd / 2).map(|i| 1.0 + (i % 4) as f32).collect();
        vec_t(&mut w, "rope_freqs.weight".into(), factors)?;
    }
    let layer_norm = s.arch == Arch::Gpt2;
    for i in 0..s.n_layer {
        let p = |t: &str| format!("blk.{i}.{t}");
        let norm = |w: &mut GgufWriter, rng: &mut Rng, name: &str| -> io::Result<()> {
            vec_t(w, format!("{name}.weight"), vector(e, 1.0, 0.2, rng))?;
            if layer_norm {
                vec_t(w, format!("{name}.bias"), vector(e, 0.0, 0.1, rng))?;
            }
            Ok(())
        };
        // OLMo 2 norms only after its blocks.
        let pre_norms = s.arch != Arch::Olmo2;
        if pre_norms {
            norm(&mut w, &mut rng, &p("attn_norm"))?;
        }
        match s.arch {
            Arch::Phi3 | Arch::Gpt2 => {
                mat(
                    &mut w,
                    &mut rng,
                    p("attn_qkv.weight"),
                    e,
                    q_dim + 2 * kv_dim,
                )?;
                if s.arch == Arch::Gpt2 {
                    vec_t(
                        &mut w,
                        p("attn_qkv.bias"),
                        vector(q_dim + 2 * kv_dim, 0.0, 0.1, &mut rng),
                    )?;
                }
            }
            _ => {
                mat(&mut w, &mut rng, p("attn_q.weight"), e, q_dim)?;
                mat(&mut w, &mut rng, p("attn_k.weight"), e, kv_dim)?;
                mat(&mut w, &mut rng, p("attn_v.weight"), e, kv_dim)?;
                if matches!(s.arch, Arch::Qwen2 | Arch::GptOss) {
                    vec_t(&mut w, p("attn_q.bias"), vector(q_dim, 0.0, 0.1, &mut rng))?;
                    vec_t(&mut w, p("attn_k.bias"), vector(kv_dim, 0.0, 0.1, &mut rng))?;
                    vec_t(&mut w, p("attn_v.bias"), vector(kv_dim, 0.0, 0.1, &mut rng))?;
                }
            }
        }
        let qk_norm_widths = match s.arch {
            Arch::Gemma3 | Arch::Qwen3 | Arch::Qwen3Moe => Some((hd, hd)),
            Arch::Olmo2 => Some((q_dim, kv_dim)),
            _ => None,
        };
        if let Some((qw, kw)) = qk_norm_widths {
            vec_t(
                &mut w,
                p("attn_q_norm.weight"),
                vector(qw, 1.0, 0.2, &mut rng),
            )?;
            vec_t(
                &mut w,
                p("attn_k_norm.weight"),
                vector(kw, 1.0, 0.2, &mut rng),
            )?;
        }
        let post_norms = matches!(s.arch, Arch::Gemma3 | Arch::Gemma2 | Arch::Olmo2);
        mat(&mut w, &mut rng, p("attn_output.weight"), q_dim, e)?;
        if matches!(s.arch, Arch::Gpt2 | Arch::GptOss) {
            vec_t(&mut w, p("attn_output.bias"), vector(e, 0.0, 0.1, &mut rng))?;
        }
        if s.arch == Arch::GptOss {
            // Sinks among the scores and well above them (-1 to 3).
            let sinks = vector(s.n_head, 1.0, 2.0, &mut rng);
            vec_t(&mut w, p("attn_sinks.weight"), sinks)?;
        }
        if post_norms {
            norm(&mut w, &mut rng, &p("post_attention_norm"))?;
        }
        if pre_norms {
            // gpt-oss names the norm before its feed-forward for where it
            // stands.
            let name = match s.arch {
                Arch::GptOss => "post_attention_norm",
                _ => "ffn_norm",
            };
            norm(&mut w, &mut rng, &p(name))?;
        }
        if let Some(x) = s.experts {
            // The router stays F32, as quantizers leave it.
            let router = matrix(GgmlType::F32, x.n_expert, e, &mut rng)?;
            w.add_tensor(
                p("ffn_gate_inp.weight"),
                &[e as u64, x.n_expert as u64],
                GgmlType::F32,
                router,
            )
            .map_err(err)?;
            if s.arch == Arch::GptOss {
                // A router bias large enough to move the choices.
                let bias = vector(x.n_expert, 0.0, 0.5, &mut rng);
                vec_t(&mut w, p("ffn_gate_inp.bias"), bias)?;
            }
            let stacked =
                |w: &mut GgufWriter, rng: &mut Rng, name: &str, cols: usize, rows: usize| {
                    let data = matrix(s.ty, rows * x.n_expert, cols, rng)?;
                    w.add_tensor(
                        p(name),
                        &[cols as u64, rows as u64, x.n_expert as u64],
                        s.ty,
                        data,
                    )
                    .map_err(err)
                };
            stacked(&mut w, &mut rng, "ffn_gate_exps.weight", e, x.n_ff)?;
            stacked(&mut w, &mut rng, "ffn_up_exps.weight", e, x.n_ff)?;
            stacked(&mut w, &mut rng, "ffn_down_exps.weight", x.n_ff, e)?;
            if s.arch == Arch::GptOss {
                expert_biases(&mut w, &mut rng, i, e, x).map_err(err)?;
            }
        } else {
            match s.arch {
                Arch::Phi3 => mat(&mut w, &mut rng, p("ffn_up.weight"), e, 2 * s.n_ff)?,
                Arch::Gpt2 => {
                    mat(&mut w, &mut rng, p("ffn_up.weight"), e, s.n_ff)?;
                    vec_t(&mut w, p("ffn_up.bias"), vector(s.n_ff, 0.0, 0.1, &mut rng))?;
                }
                _ => {
                    mat(&mut w, &mut rng, p("ffn_gate.weight"), e, s.n_ff)?;
                    mat(&mut w, &mut rng, p("ffn_up.weight"), e, s.n_ff)?;
                }
            }
            mat(&mut w, &mut rng, p("ffn_down.weight"), s.n_ff, e)?;
        }
        if s.arch == Arch::Gpt2 {
            vec_t(&mut w, p("ffn_down.bias"), vector(e, 0.0, 0.1, &mut rng))?;
        }
        if post_norms {
            norm(&mut w, &mut rng, &p("post_ffw_norm"))?;
        }
    }
    norm_out(&mut w, &mut rng, e, layer_norm).map_err(err)?;
    if s.untied_output {
        mat(&mut w, &mut rng, "output.weight".into(), e, s.n_vocab)?;
    }
    Ok(w)
}
