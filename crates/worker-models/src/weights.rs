//! The tensors of a model, by role, as backend weights.

mod experts;
mod gemma4;

pub use gemma4::{BesideDense, PerLayerEmbd, PerLayerInput};

use crate::config::{Arch, FfnKind, ModelConfig, NormKind, QkNorm};
use crate::error::{ModelError, Result};
use std::sync::Arc;
use worker_compute::{Backend, WeightSource};
use worker_gguf::GgufFile;

/// A norm: weight and, for layer norms, bias.
#[derive(Debug)]
pub struct Norm<W> {
    pub w: W,
    pub b: Option<W>,
}

/// A projection: weight and optional bias.
#[derive(Debug)]
pub struct Linear<W> {
    pub w: W,
    pub b: Option<W>,
}

/// Attention projections: fused or separate.
#[derive(Debug)]
pub enum Qkv<W> {
    Fused(Linear<W>),
    Split {
        q: Linear<W>,
        k: Linear<W>,
        v: Linear<W>,
    },
    /// Values are the key projection (before the keys' norm and RoPE):
    /// the file has no value projection.
    KeyValues {
        q: Linear<W>,
        k: Linear<W>,
    },
    /// Queries only: the layer reads an earlier layer's keys and values.
    Query(Linear<W>),
}

/// One block: attention or a recurrent layer, then the feed-forward.
#[derive(Debug)]
pub struct Layer<W> {
    /// `None` where the architecture norms only after the block (OLMo 2).
    pub attn_norm: Option<Norm<W>>,
    /// What mixes tokens: attention, or a recurrent layer.
    pub mixer: Mixer<W>,
    pub post_attn_norm: Option<Norm<W>>,
    /// `None` where the architecture norms only after the block.
    pub ffn_norm: Option<Norm<W>>,
    pub ffn: Ffn<W>,
    pub post_ffn_norm: Option<Norm<W>>,
    /// The layer's share of the per-layer inputs, where the model has
    /// them.
    pub per_layer: Option<PerLayerInput<W>>,
    /// The layer's output is multiplied by this (Gemma 4's layer scalar).
    pub out_scale: Option<f32>,
}

/// How a block mixes tokens.
#[derive(Debug)]
pub enum Mixer<W> {
    Attention(Attention<W>),
    Recurrent(DeltaNet<W>),
}

/// An attention block's weights.
#[derive(Debug)]
pub struct Attention<W> {
    /// Q, K and V (Q twice as wide where the model gates its output: each
    /// head's queries, then its gates).
    pub qkv: Qkv<W>,
    pub q_norm: Option<W>,
    pub k_norm: Option<W>,
    /// A learned logit per query head that joins the attention softmax
    /// (gpt-oss).
    pub sinks: Option<W>,
    pub wo: Linear<W>,
}

/// A gated delta net's weights (Qwen 3.5's recurrent layers).
#[derive(Debug)]
pub struct DeltaNet<W> {
    /// Queries, keys and values before the convolution.
    pub qkv: W,
    /// The output gate's projection.
    pub gate: W,
    /// The convolution's taps, per channel (flat, f32).
    pub conv: W,
    /// Bias of the decay's input, per value head.
    pub dt_bias: W,
    /// The decay rate per value head (negative).
    pub a: W,
    /// The update strength's projection (one per value head).
    pub beta: W,
    /// The decay input's projection (one per value head).
    pub alpha: W,
    /// The RMS norm of each head's output.
    pub norm: W,
    pub out: W,
}

/// A block's feed-forward.
#[derive(Debug)]
pub enum Ffn<W> {
    /// One feed-forward for every token (`gate` absent for plain and fused
    /// wiring).
    Dense {
        gate: Option<Linear<W>>,
        up: Linear<W>,
        down: Linear<W>,
    },
    /// Routed experts: `router` gives each token's expert logits.
    Experts {
        router: Linear<W>,
        experts: Vec<Expert<W>>,
        /// The expert every token also goes through, where the model has
        /// one.
        shared: Option<SharedExpert<W>>,
    },
    /// Routed experts beside a dense feed-forward (Gemma 4).
    BesideDense(Box<BesideDense<W>>),
}

/// A shared expert: a gated feed-forward whose output is weighted by the
/// sigmoid of a per-token gate.
#[derive(Debug)]
pub struct SharedExpert<W> {
    /// The gate's projection, one row.
    pub weight_gate: W,
    pub ffn: Expert<W>,
}

/// One expert's gated feed-forward: views of its slices of the stacked
/// expert tensors (matrices and, where the model has them, biases), not
/// copies.
#[derive(Debug)]
pub struct Expert<W> {
    /// `None` where the gate is fused with `up`: its rows are then the
    /// gate's, then the up product's (twice the expert's width).
    pub gate: Option<Linear<W>>,
    pub up: Linear<W>,
    pub down: Linear<W>,
}

/// All weights of a model.
#[derive(Debug)]
pub struct Weights<W> {
    pub tok_embd: W,
    pub pos_embd: Option<W>,
    pub layers: Vec<Layer<W>>,
    pub output_norm: Norm<W>,
    /// The output projection; `None` when it is tied to `tok_embd`, which
    /// then serves both (loaded once, so its memory is not held twice).
    pub output: Option<Linear<W>>,
    /// Llama 3 RoPE frequency factors.
    pub rope_freqs: Option<Vec<f32>>,
    /// Phi-3 LongRoPE frequency factors.
    pub long_rope: Option<LongRope>,
    /// The per-layer token embeddings and their projection from the
    /// embeddings, where the model has them (Gemma 4).
    pub per_layer: Option<PerLayerEmbd<W>>,
}

/// LongRoPE's two sets of per-pair frequency factors: `short` while the
/// context fits the original training context, `long` beyond it.
#[derive(Debug, Clone, PartialEq)]
pub struct LongRope {
    pub long: Vec<f32>,
    pub short: Vec<f32>,
}

/// The first of `names` that the file has, as `n_pairs` floats.
fn rope_factors(file: &GgufFile, names: &[&str], n_pairs: usize) -> Result<Option<Vec<f32>>> {
    let Some(&name) = names.iter().find(|n| file.header().tensor(n).is_some()) else {
        return Ok(None);
    };
    let v = file.dequantize(name)?;
    if v.len() != n_pairs {
        return Err(ModelError::TensorShape {
            name: name.into(),
            got: vec![v.len() as u64],
            want: vec![n_pairs as u64],
        });
    }
    Ok(Some(v))
}

struct Loader<'a, B: Backend> {
    backend: &'a B,
    file: &'a Arc<GgufFile>,
    arch: Arch,
}

impl<B: Backend> Loader<'_, B> {
    /// The whole tensor `name`, described by `info`, as a weight source.
    fn source(&self, name: &str, info: &worker_gguf::TensorInfo) -> WeightSource {
        WeightSource {
            file: self.file.clone(),
            name: name.to_string(),
            ty: info.ty,
            dims: info.dims.clone(),
            expert: None,
        }
    }

    fn opt(&self, name: &str) -> Result<Option<B::Weight>> {
        let Some(info) = self.file.header().tensor(name) else {
            return Ok(None);
        };
        Ok(Some(self.backend.weight(self.source(name, info))?))
    }

    fn req(&self, name: &str) -> Result<B::Weight> {
        self.opt(name)?.ok_or_else(|| ModelError::MissingTensor {
            name: name.to_string(),
            arch: self.arch.name().to_string(),
        })
    }

    /// Checks a tensor's shape against what the metadata implies.
    fn shape(&self, name: &str, want: &[u64]) -> Result<()> {
        if let Some(info) = self.file.header().tensor(name)
            && info.dims != want
        {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                got: info.dims.clone(),
                want: want.to_vec(),
            });
        }
        Ok(())
    }

    fn linear(&self, name: &str, n_in: usize, n_out: usize) -> Result<Linear<B::Weight>> {
        let w = format!("{name}.weight");
        self.shape(&w, &[n_in as u64, n_out as u64])?;
        Ok(Linear {
            w: self.req(&w)?,
            b: self.opt(&format!("{name}.bias"))?,
        })
    }

    fn linear_opt(
        &self,
        name: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Option<Linear<B::Weight>>> {
        if self
            .file
            .header()
            .tensor(&format!("{name}.weight"))
            .is_none()
        {
            return Ok(None);
        }
        self.linear(name, n_in, n_out).map(Some)
    }

    /// Block `il`, its tensors loaded in a fixed order: projections,
    /// feed-forward, then the norms and the rest of attention.
    fn layer(&self, cfg: &ModelConfig, il: usize) -> Result<Layer<B::Weight>> {
        if cfg.arch == Arch::Gemma4 {
            return self.gemma4_layer(cfg, il);
        }
        let p = |s: &str| format!("blk.{il}.{s}");
        let e = cfg.n_embd;
        let qkv = match cfg.is_recurrent(il) {
            true => None,
            false => Some(self.qkv(cfg, il)?),
        };
        let ffn = match cfg.moe {
            Some(moe) => self.experts(il, e, moe)?,
            None => self.dense_ffn(cfg, il)?,
        };
        // gpt-oss and Qwen 3.5 name the norm before the feed-forward for
        // where it stands: after attention.
        let ffn_norm = match cfg.arch {
            Arch::GptOss | Arch::Qwen35 | Arch::Qwen35Moe => "post_attention_norm",
            _ => "ffn_norm",
        };
        let attn_norm = self.norm_if(cfg.pre_norms, &p("attn_norm"), cfg.norm)?;
        let mixer = match (qkv, &cfg.recurrent) {
            (Some(qkv), _) => Mixer::Attention(self.attention(cfg, il, qkv)?),
            (None, Some(r)) => Mixer::Recurrent(self.delta_net(r, e, il)?),
            (None, None) => {
                return Err(ModelError::Unsupported(format!(
                    "layer {il} is recurrent in a model without recurrent layers"
                )));
            }
        };
        Ok(Layer {
            attn_norm,
            mixer,
            post_attn_norm: self.norm_if(cfg.post_norms, &p("post_attention_norm"), cfg.norm)?,
            ffn_norm: self.norm_if(cfg.pre_norms, &p(ffn_norm), cfg.norm)?,
            ffn,
            post_ffn_norm: self.norm_if(cfg.post_norms, &p("post_ffw_norm"), cfg.norm)?,
            per_layer: None,
            out_scale: None,
        })
    }

    /// Block `il`'s attention weights beside its projections.
    fn attention(
        &self,
        cfg: &ModelConfig,
        il: usize,
        qkv: Qkv<B::Weight>,
    ) -> Result<Attention<B::Weight>> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let (q_norm, k_norm) = self.qk_norms(cfg, il)?.unzip();
        let sinks = if cfg.attn_sinks {
            self.shape(&p("attn_sinks.weight"), &[cfg.n_head as u64])?;
            Some(self.req(&p("attn_sinks.weight"))?)
        } else {
            None
        };
        Ok(Attention {
            qkv,
            q_norm,
            k_norm,
            sinks,
            wo: self.linear(&p("attn_output"), cfg.n_head * cfg.head_dim, cfg.n_embd)?,
        })
    }

    /// Block `il`'s gated delta net.
    fn delta_net(
        &self,
        r: &crate::config::RecurrentConfig,
        n_embd: usize,
        il: usize,
    ) -> Result<DeltaNet<B::Weight>> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let (e, hv, inner) = (n_embd as u64, r.n_v_heads as u64, r.inner() as u64);
        let channels = r.state().conv_channels as u64;
        let matrix = |name: &str, cols: u64, rows: u64| -> Result<B::Weight> {
            let name = p(name);
            self.shape(&name, &[cols, rows])?;
            self.req(&name)
        };
        Ok(DeltaNet {
            qkv: matrix("attn_qkv.weight", e, channels)?,
            gate: matrix("attn_gate.weight", e, inner)?,
            conv: self.flat(&p("ssm_conv1d.weight"), &[r.conv_taps as u64, channels])?,
            dt_bias: self.flat(&p("ssm_dt.bias"), &[hv])?,
            a: self.flat(&p("ssm_a"), &[hv])?,
            beta: matrix("ssm_beta.weight", e, hv)?,
            alpha: matrix("ssm_alpha.weight", e, hv)?,
            norm: self.flat(&p("ssm_norm.weight"), &[r.head_dim as u64])?,
            out: matrix("ssm_out.weight", inner, e)?,
        })
    }

    /// The tensor `name` of shape `dims`, as one f32 vector whatever its
    /// dimensions (small tensors the ops read whole, such as convolution
    /// taps).
    fn flat(&self, name: &str, dims: &[u64]) -> Result<B::Weight> {
        self.reshaped(name, dims, vec![dims.iter().product()])
    }

    /// The vector `name` of `n` values as a matrix of one row (a gate that
    /// gives one value per token).
    fn row(&self, name: &str, n: usize) -> Result<B::Weight> {
        self.reshaped(name, &[n as u64], vec![n as u64, 1])
    }

    /// The tensor `name`, which must have the shape `dims`, loaded as if
    /// its shape were `as_dims` (the same values).
    fn reshaped(&self, name: &str, dims: &[u64], as_dims: Vec<u64>) -> Result<B::Weight> {
        self.shape(name, dims)?;
        let info = self
            .file
            .header()
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                arch: self.arch.name().to_string(),
            })?;
        let mut src = self.source(name, info);
        src.dims = as_dims;
        Ok(self.backend.weight(src)?)
    }

    /// Block `il`'s query, key and value projections: one fused tensor
    /// where the file has it, else three.
    fn qkv(&self, cfg: &ModelConfig, il: usize) -> Result<Qkv<B::Weight>> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let e = cfg.n_embd;
        let (q_dim, kv_dim) = (cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim);
        // A gated output doubles the query projection.
        let q_dim = if cfg.attn_output_gate {
            2 * q_dim
        } else {
            q_dim
        };
        Ok(
            match self.linear_opt(&p("attn_qkv"), e, q_dim + 2 * kv_dim)? {
                Some(f) => Qkv::Fused(f),
                None => Qkv::Split {
                    q: self.linear(&p("attn_q"), e, q_dim)?,
                    k: self.linear(&p("attn_k"), e, kv_dim)?,
                    v: self.linear(&p("attn_v"), e, kv_dim)?,
                },
            },
        )
    }

    /// Block `il`'s dense feed-forward, wired as the configuration says.
    fn dense_ffn(&self, cfg: &ModelConfig, il: usize) -> Result<Ffn<B::Weight>> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let e = cfg.n_embd;
        let (gate, up) = match cfg.ffn {
            FfnKind::Gated => (
                Some(self.linear(&p("ffn_gate"), e, cfg.n_ff)?),
                self.linear(&p("ffn_up"), e, cfg.n_ff)?,
            ),
            FfnKind::FusedGated => (None, self.linear(&p("ffn_up"), e, 2 * cfg.n_ff)?),
            FfnKind::Plain => (None, self.linear(&p("ffn_up"), e, cfg.n_ff)?),
        };
        Ok(Ffn::Dense {
            gate,
            up,
            down: self.linear(&p("ffn_down"), cfg.n_ff, e)?,
        })
    }

    /// Block `il`'s RMS norms of q and k, per head or over all heads, if
    /// the model has them.
    fn qk_norms(&self, cfg: &ModelConfig, il: usize) -> Result<Option<(B::Weight, B::Weight)>> {
        let (q_width, k_width) = match cfg.qk_norm {
            QkNorm::None => return Ok(None),
            QkNorm::PerHead => (cfg.head_dim, cfg.head_dim),
            QkNorm::Whole => (cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim),
        };
        let norm = |name: &str, width: usize| -> Result<B::Weight> {
            let name = format!("blk.{il}.{name}.weight");
            self.shape(&name, &[width as u64])?;
            self.req(&name)
        };
        let q = norm("attn_q_norm", q_width)?;
        Ok(Some((q, norm("attn_k_norm", k_width)?)))
    }

    /// The norm `name` where the architecture has it (`present`).
    fn norm_if(
        &self,
        present: bool,
        name: &str,
        kind: NormKind,
    ) -> Result<Option<Norm<B::Weight>>> {
        if present {
            self.norm(name, kind).map(Some)
        } else {
            Ok(None)
        }
    }

    fn norm(&self, name: &str, kind: NormKind) -> Result<Norm<B::Weight>> {
        Ok(Norm {
            w: self.req(&format!("{name}.weight"))?,
            b: match kind {
                NormKind::Layer => Some(self.req(&format!("{name}.bias"))?),
                NormKind::Rms => None,
            },
        })
    }
}

impl<W> Weights<W> {
    /// Whether some layer's experts fuse their gate and up products.
    pub fn fused_experts(&self) -> bool {
        self.layers.iter().any(|l| match &l.ffn {
            Ffn::Experts { experts, .. } => experts.iter().any(|x| x.gate.is_none()),
            Ffn::BesideDense(f) => f.experts.iter().any(|x| x.gate.is_none()),
            Ffn::Dense { .. } => false,
        })
    }

    /// Loads every tensor the configuration calls for.
    pub fn load<B: Backend<Weight = W>>(
        backend: &B,
        file: &Arc<GgufFile>,
        cfg: &ModelConfig,
    ) -> Result<Self> {
        let l = Loader {
            backend,
            file,
            arch: cfg.arch,
        };
        let layers = (0..cfg.n_layer)
            .map(|i| l.layer(cfg, i))
            .collect::<Result<Vec<_>>>()?;
        let n_pairs = cfg.rope.as_ref().map_or(0, |r| r.n_rot / 2);
        let rope_freqs = rope_factors(file, &["rope_freqs.weight"], n_pairs)?;
        let long_rope = long_rope(file, n_pairs)?;
        let vocab = file
            .header()
            .tensor("token_embd.weight")
            .map(|t| t.n_rows() as usize)
            .unwrap_or(0);
        let output = l.linear_opt("output", cfg.n_embd, vocab)?;
        Ok(Weights {
            tok_embd: l.req("token_embd.weight")?,
            pos_embd: match cfg.arch {
                Arch::Gpt2 => Some(l.req("position_embd.weight")?),
                _ => None,
            },
            layers,
            output_norm: l.norm("output_norm", cfg.norm)?,
            output,
            rope_freqs,
            long_rope,
            per_layer: l.per_layer_embd(cfg)?,
        })
    }
}

/// Phi-3's LongRoPE factors: both sets, or neither.
fn long_rope(file: &GgufFile, n_pairs: usize) -> Result<Option<LongRope>> {
    let long = ["rope_factors_long.weight", "blk.0.rope_factors_long.weight"];
    let short = [
        "rope_factors_short.weight",
        "blk.0.rope_factors_short.weight",
    ];
    match (
        rope_factors(file, &long, n_pairs)?,
        rope_factors(file, &short, n_pairs)?,
    ) {
        (Some(long), Some(short)) => Ok(Some(LongRope { long, short })),
        (None, None) => Ok(None),
        _ => Err(ModelError::Unsupported(
            "LongRoPE needs both rope_factors_long and rope_factors_short".into(),
        )),
    }
}
