//! Assembling a synthetic model: its metadata, then its tensors, block by
//! block. Every tensor draws its values from one generator in the order
//! the tensors are added, so the same spec and seed give the same bytes
//! only while that order stays as it is.

use super::gemma4::add_gemma4_settings;
use super::hybrid::add_hybrid_settings;
use super::parts::{add_arch_settings, add_rope_scaling, add_vocab, expert_biases};
use super::{Rng, SyntheticExperts, SyntheticSpec, matrix, vector};
use crate::config::Arch;
use std::io;
use worker_gguf::{GgmlType, GgufError, GgufWriter, Value};

/// The model described by `s`, ready to write.
pub(super) fn build(s: &SyntheticSpec) -> io::Result<GgufWriter> {
    let mut w = GgufWriter::new();
    add_metadata(&mut w, s).map_err(invalid)?;
    let mut b = Builder {
        s,
        w,
        rng: Rng(s.seed | 1),
    };
    b.embeddings()?;
    for i in 0..s.n_layer {
        b.block(i)?;
    }
    b.output()?;
    Ok(b.w)
}

/// A writer's refusal as the invalid-input error synthesis reports.
pub(super) fn invalid(e: GgufError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

/// Every metadata key of the model, tensors aside.
fn add_metadata(w: &mut GgufWriter, s: &SyntheticSpec) -> worker_gguf::Result<()> {
    add_shape(w, s)?;
    add_attention_settings(w, s)?;
    add_arch_settings(w, s)?;
    add_expert_counts(w, s)?;
    add_hybrid_settings(w, s)?;
    add_gemma4_settings(w, s)?;
    if let Some(scaling) = s.rope_scaling {
        add_rope_scaling(w, s, scaling)?;
    }
    add_vocab(w, s.n_vocab)
}

/// The architecture, name, sizes and RoPE base.
fn add_shape(w: &mut GgufWriter, s: &SyntheticSpec) -> worker_gguf::Result<()> {
    let a = s.arch.name();
    let hd = s.head_dim();
    // Gemma 4 gives these per layer (see `add_gemma4_settings`).
    if s.layers.is_none() {
        w.add(
            format!("{a}.feed_forward_length"),
            Value::U32(s.n_ff as u32),
        )?;
        w.add(
            format!("{a}.attention.head_count_kv"),
            Value::U32(s.n_head_kv as u32),
        )?;
    }
    let md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), a.into()),
        // No architecture in the name: llama.cpp keys vocabulary fixes on it.
        (
            "general.name".into(),
            format!("llorch synthetic {}", s.ty).into(),
        ),
        (format!("{a}.context_length"), Value::U32(s.n_ctx as u32)),
        (format!("{a}.embedding_length"), Value::U32(s.n_embd as u32)),
        (format!("{a}.block_count"), Value::U32(s.n_layer as u32)),
        (
            format!("{a}.attention.head_count"),
            Value::U32(s.n_head as u32),
        ),
        (format!("{a}.attention.key_length"), Value::U32(hd as u32)),
        (format!("{a}.attention.value_length"), Value::U32(hd as u32)),
        // Gemma 3's global layers use another base than its windowed ones;
        // gpt-oss has its own.
        (
            format!("{a}.rope.freq_base"),
            Value::F32(match s.arch {
                Arch::Gemma3 | Arch::Gemma4 => 1_000_000.0,
                Arch::GptOss => 150_000.0,
                _ => 10_000.0,
            }),
        ),
    ];
    for (k, v) in md {
        w.add(k, v)?;
    }
    Ok(())
}

/// The norm epsilon and, where the architecture has one, the sliding
/// window.
fn add_attention_settings(w: &mut GgufWriter, s: &SyntheticSpec) -> worker_gguf::Result<()> {
    let a = s.arch.name();
    match s.arch {
        Arch::Gpt2 => w.add(format!("{a}.attention.layer_norm_epsilon"), 1e-5f32),
        _ => w.add(format!("{a}.attention.layer_norm_rms_epsilon"), 1e-6f32),
    }?;
    if let Some(win) = s
        .window
        .filter(|_| matches!(s.arch, Arch::Gemma3 | Arch::Gemma2 | Arch::GptOss))
    {
        w.add(format!("{a}.attention.sliding_window"), win)?;
        // gpt-oss's files give no pattern: every other layer is the default.
        if s.arch != Arch::GptOss {
            w.add(format!("{a}.attention.sliding_window_pattern"), 2u32)?;
        }
        if s.arch == Arch::Gemma3 {
            w.add(format!("{a}.rope.freq_base_swa"), 10_000.0f32)?;
        }
    }
    Ok(())
}

/// The expert counts of a mixture of experts, and the expert width where
/// the architecture names it apart from the dense width.
fn add_expert_counts(w: &mut GgufWriter, s: &SyntheticSpec) -> worker_gguf::Result<()> {
    let Some(x) = s.experts else {
        return Ok(());
    };
    let a = s.arch.name();
    w.add(format!("{a}.expert_count"), x.n_expert as u32)?;
    w.add(format!("{a}.expert_used_count"), x.n_used as u32)?;
    if matches!(
        s.arch,
        Arch::Qwen3Moe | Arch::GptOss | Arch::Qwen35Moe | Arch::Gemma4
    ) {
        w.add(format!("{a}.expert_feed_forward_length"), x.n_ff as u32)?;
    }
    Ok(())
}

/// The tensors of a model being written, and the generator they draw from.
pub(super) struct Builder<'a> {
    pub(super) s: &'a SyntheticSpec,
    pub(super) w: GgufWriter,
    pub(super) rng: Rng,
}

impl Builder<'_> {
    /// A `cols`-wide weight matrix of the dense type (or the type a
    /// quantizer falls back to for that width).
    pub(super) fn matrix(&mut self, name: String, cols: usize, rows: usize) -> io::Result<()> {
        let ty = fallback(self.s.dense_ty, cols);
        let data = matrix(ty, rows, cols, &mut self.rng)?;
        self.w
            .add_tensor(name, &[cols as u64, rows as u64], ty, data)
            .map_err(invalid)
    }

    /// A `cols`-wide F32 matrix, whatever the spec's types.
    pub(super) fn f32_matrix(&mut self, name: String, cols: usize, rows: usize) -> io::Result<()> {
        let data = matrix(GgmlType::F32, rows, cols, &mut self.rng)?;
        self.w
            .add_tensor(name, &[cols as u64, rows as u64], GgmlType::F32, data)
            .map_err(invalid)
    }

    /// The matrices of one expert product, one per expert, stacked, of the
    /// experts' type (or its fallback for that width).
    pub(super) fn stacked(
        &mut self,
        name: String,
        cols: usize,
        rows: usize,
        n_expert: usize,
    ) -> io::Result<()> {
        let ty = fallback(self.s.ty, cols);
        let data = matrix(ty, rows * n_expert, cols, &mut self.rng)?;
        self.w
            .add_tensor(name, &[cols as u64, rows as u64, n_expert as u64], ty, data)
            .map_err(invalid)
    }

    /// An F32 vector of `n` values within `spread` of `center`.
    pub(super) fn vector(
        &mut self,
        name: String,
        n: usize,
        center: f32,
        spread: f32,
    ) -> io::Result<()> {
        let v = vector(n, center, spread, &mut self.rng);
        self.add_vector(name, &v)
    }

    fn add_vector(&mut self, name: String, v: &[f32]) -> io::Result<()> {
        self.w.add_f32(name, &[v.len() as u64], v).map_err(invalid)
    }

    /// A norm's weight, and its bias where the architecture uses layer
    /// norms (GPT-2).
    fn norm(&mut self, name: &str) -> io::Result<()> {
        let e = self.s.n_embd;
        self.vector(format!("{name}.weight"), e, 1.0, 0.2)?;
        if self.s.arch == Arch::Gpt2 {
            self.vector(format!("{name}.bias"), e, 0.0, 0.1)?;
        }
        Ok(())
    }

    /// The token embeddings, GPT-2's position embeddings and Llama's RoPE
    /// frequency factors.
    fn embeddings(&mut self) -> io::Result<()> {
        let s = self.s;
        self.matrix("token_embd.weight".into(), s.n_embd, s.n_vocab)?;
        if s.arch == Arch::Gpt2 {
            self.f32_matrix("position_embd.weight".into(), s.n_embd, s.n_ctx)?;
        }
        if s.arch == Arch::Llama {
            let factors: Vec<f32> = (0..s.head_dim() / 2)
                .map(|i| 1.0 + (i % 4) as f32)
                .collect();
            self.add_vector("rope_freqs.weight".into(), &factors)?;
        }
        self.gemma4_embeddings()
    }

    /// Block `i`: attention and feed-forward with the norms around them.
    fn block(&mut self, i: usize) -> io::Result<()> {
        if let Some(l) = &self.s.layers {
            return self.gemma4_block(i, l);
        }
        let arch = self.s.arch;
        let p = |t: &str| format!("blk.{i}.{t}");
        // OLMo 2 norms only after its blocks.
        let pre_norms = arch != Arch::Olmo2;
        let post_norms = matches!(arch, Arch::Gemma3 | Arch::Gemma2 | Arch::Olmo2);
        if pre_norms {
            self.norm(&p("attn_norm"))?;
        }
        match self.s.recurrent.filter(|d| d.is_recurrent(i)) {
            Some(d) => self.delta_net(i, d)?,
            None => {
                self.attention_inputs(i)?;
                self.attention_output(i)?;
            }
        }
        if post_norms {
            self.norm(&p("post_attention_norm"))?;
        }
        if pre_norms {
            // gpt-oss names the norm before its feed-forward for where it
            // stands.
            let name = match arch {
                Arch::GptOss | Arch::Qwen35 | Arch::Qwen35Moe => "post_attention_norm",
                _ => "ffn_norm",
            };
            self.norm(&p(name))?;
        }
        match self.s.experts {
            Some(x) => self.experts(i, x)?,
            None => self.dense_feed_forward(i)?,
        }
        if arch == Arch::Gpt2 {
            self.vector(p("ffn_down.bias"), self.s.n_embd, 0.0, 0.1)?;
        }
        if post_norms {
            self.norm(&p("post_ffw_norm"))?;
        }
        Ok(())
    }

    /// Block `i`'s query, key and value projections (fused in Phi-3 and
    /// GPT-2), their biases and their norms.
    fn attention_inputs(&mut self, i: usize) -> io::Result<()> {
        let s = self.s;
        let p = |t: &str| format!("blk.{i}.{t}");
        let (e, hd) = (s.n_embd, s.head_dim());
        let (q_dim, kv_dim) = (s.n_head * hd, s.n_head_kv * hd);
        // Qwen 3.5's query projection also gives each head's output gates.
        let q_out = if s.recurrent.is_some() {
            2 * q_dim
        } else {
            q_dim
        };
        match s.arch {
            Arch::Phi3 | Arch::Gpt2 => {
                self.matrix(p("attn_qkv.weight"), e, q_dim + 2 * kv_dim)?;
                if s.arch == Arch::Gpt2 {
                    self.vector(p("attn_qkv.bias"), q_dim + 2 * kv_dim, 0.0, 0.1)?;
                }
            }
            _ => {
                self.matrix(p("attn_q.weight"), e, q_out)?;
                self.matrix(p("attn_k.weight"), e, kv_dim)?;
                self.matrix(p("attn_v.weight"), e, kv_dim)?;
                if matches!(s.arch, Arch::Qwen2 | Arch::GptOss) {
                    self.vector(p("attn_q.bias"), q_dim, 0.0, 0.1)?;
                    self.vector(p("attn_k.bias"), kv_dim, 0.0, 0.1)?;
                    self.vector(p("attn_v.bias"), kv_dim, 0.0, 0.1)?;
                }
            }
        }
        let qk_norm_widths = match s.arch {
            Arch::Gemma3 | Arch::Qwen3 | Arch::Qwen3Moe | Arch::Qwen35 | Arch::Qwen35Moe => {
                Some((hd, hd))
            }
            Arch::Olmo2 => Some((q_dim, kv_dim)),
            _ => None,
        };
        if let Some((qw, kw)) = qk_norm_widths {
            self.vector(p("attn_q_norm.weight"), qw, 1.0, 0.2)?;
            self.vector(p("attn_k_norm.weight"), kw, 1.0, 0.2)?;
        }
        Ok(())
    }

    /// Block `i`'s output projection, its bias and gpt-oss's sinks.
    fn attention_output(&mut self, i: usize) -> io::Result<()> {
        let s = self.s;
        let p = |t: &str| format!("blk.{i}.{t}");
        let q_dim = s.n_head * s.head_dim();
        self.matrix(p("attn_output.weight"), q_dim, s.n_embd)?;
        if matches!(s.arch, Arch::Gpt2 | Arch::GptOss) {
            self.vector(p("attn_output.bias"), s.n_embd, 0.0, 0.1)?;
        }
        if s.arch == Arch::GptOss {
            // Sinks among the scores and well above them (-1 to 3).
            self.vector(p("attn_sinks.weight"), s.n_head, 1.0, 2.0)?;
        }
        Ok(())
    }

    /// Block `i`'s router and experts.
    fn experts(&mut self, i: usize, x: SyntheticExperts) -> io::Result<()> {
        let s = self.s;
        let p = |t: &str| format!("blk.{i}.{t}");
        let e = s.n_embd;
        // The router stays F32, as quantizers leave it.
        self.f32_matrix(p("ffn_gate_inp.weight"), e, x.n_expert)?;
        if s.arch == Arch::GptOss {
            // A router bias large enough to move the choices.
            self.vector(p("ffn_gate_inp.bias"), x.n_expert, 0.0, 0.5)?;
        }
        self.stacked(p("ffn_gate_exps.weight"), e, x.n_ff, x.n_expert)?;
        self.stacked(p("ffn_up_exps.weight"), e, x.n_ff, x.n_expert)?;
        self.stacked(p("ffn_down_exps.weight"), x.n_ff, e, x.n_expert)?;
        if s.arch == Arch::GptOss {
            expert_biases(&mut self.w, &mut self.rng, i, e, x).map_err(invalid)?;
        }
        if s.arch == Arch::Qwen35Moe {
            self.shared_expert(i, x)?;
        }
        Ok(())
    }

    /// Block `i`'s dense feed-forward: gate and up products (fused in
    /// Phi-3; GPT-2 has no gate, and an up bias), then the down product.
    fn dense_feed_forward(&mut self, i: usize) -> io::Result<()> {
        let s = self.s;
        let p = |t: &str| format!("blk.{i}.{t}");
        let e = s.n_embd;
        match s.arch {
            Arch::Phi3 => self.matrix(p("ffn_up.weight"), e, 2 * s.n_ff)?,
            Arch::Gpt2 => {
                self.matrix(p("ffn_up.weight"), e, s.n_ff)?;
                self.vector(p("ffn_up.bias"), s.n_ff, 0.0, 0.1)?;
            }
            _ => {
                self.matrix(p("ffn_gate.weight"), e, s.n_ff)?;
                self.matrix(p("ffn_up.weight"), e, s.n_ff)?;
            }
        }
        self.matrix(p("ffn_down.weight"), s.n_ff, e)
    }

    /// The output norm and, unless tied to the embeddings, the output
    /// matrix.
    fn output(&mut self) -> io::Result<()> {
        self.norm("output_norm")?;
        if self.s.untied_output {
            self.matrix("output.weight".into(), self.s.n_embd, self.s.n_vocab)?;
        }
        Ok(())
    }
}

/// The type a quantizer stores a `cols`-wide matrix in when `ty`'s blocks
/// do not divide its rows: a 32-wide type of about the same size, else
/// F16.
fn fallback(ty: GgmlType, cols: usize) -> GgmlType {
    if cols.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let smaller = match ty {
        GgmlType::IQ4_XS => GgmlType::IQ4_NL,
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if cols.is_multiple_of(smaller.block_size()) {
        smaller
    } else {
        GgmlType::F16
    }
}
