//! Gemma 4's weights: layers whose head sizes and widths follow their
//! kind, layers without keys or values of their own, the per-layer token
//! embeddings and their projections, routed experts beside the dense
//! feed-forward, and the scalar each layer's output is multiplied by.

use super::{Attention, Expert, Ffn, Layer, Linear, Loader, Mixer, Norm, Qkv};
use crate::config::{ModelConfig, MoeConfig};
use crate::error::{ModelError, Result};
use worker_compute::Backend;

/// The per-layer token embeddings and their projection from the
/// embeddings: every layer's input is the sum of the two, of `width`
/// values per token (see [`crate::config::ModelConfig::per_layer_input`]).
#[derive(Debug)]
pub struct PerLayerEmbd<W> {
    /// `n_layer * width` values per token.
    pub tok_embd: W,
    /// From the scaled embeddings to `n_layer * width` values.
    pub model_proj: W,
    /// The RMS norm of each layer's share of the projection (`width`).
    pub proj_norm: W,
}

/// One layer's use of its per-layer input.
#[derive(Debug)]
pub struct PerLayerInput<W> {
    /// From the layer's output to `width` gate values.
    pub gate: W,
    /// From `width` values back to the embedding width.
    pub proj: W,
    pub post_norm: Norm<W>,
}

/// Routed experts beside a dense feed-forward: each branch has norms of
/// its own, and the router reads the residual stream through its own
/// scale.
#[derive(Debug)]
pub struct BesideDense<W> {
    /// The dense feed-forward (after the layer's feed-forward norm).
    pub dense: Expert<W>,
    pub post_dense_norm: Norm<W>,
    /// The norm before the experts.
    pub experts_norm: Norm<W>,
    pub router: Linear<W>,
    /// The router input's learned scale (`n_embd`).
    pub router_scale: W,
    pub experts: Vec<Expert<W>>,
    /// Per expert, a multiplier of its output, where the file has them.
    pub expert_scales: Option<Vec<f32>>,
    pub post_experts_norm: Norm<W>,
}

impl<B: Backend> Loader<'_, B> {
    /// The per-layer token embeddings, where the model has them.
    pub(super) fn per_layer_embd(
        &self,
        cfg: &ModelConfig,
    ) -> Result<Option<PerLayerEmbd<B::Weight>>> {
        let Some(width) = cfg.per_layer_input else {
            return Ok(None);
        };
        let total = (width * cfg.n_layer) as u64;
        let vocab = self
            .file
            .header()
            .tensor("token_embd.weight")
            .map_or(0, |t| t.n_rows());
        let matrix = |name: &str, dims: [u64; 2]| -> Result<B::Weight> {
            self.shape(name, &dims)?;
            self.req(name)
        };
        Ok(Some(PerLayerEmbd {
            tok_embd: matrix("per_layer_token_embd.weight", [total, vocab])?,
            model_proj: matrix("per_layer_model_proj.weight", [cfg.n_embd as u64, total])?,
            proj_norm: self.vector("per_layer_proj_norm.weight", width)?,
        }))
    }

    /// Block `il` of a Gemma 4 model.
    pub(super) fn gemma4_layer(&self, cfg: &ModelConfig, il: usize) -> Result<Layer<B::Weight>> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let e = cfg.n_embd;
        Ok(Layer {
            attn_norm: Some(self.rms_norm(&p("attn_norm.weight"), e)?),
            mixer: Mixer::Attention(self.gemma4_attention(cfg, il)?),
            post_attn_norm: Some(self.rms_norm(&p("post_attention_norm.weight"), e)?),
            ffn_norm: Some(self.rms_norm(&p("ffn_norm.weight"), e)?),
            ffn: self.gemma4_ffn(cfg, il)?,
            post_ffn_norm: Some(self.rms_norm(&p("post_ffw_norm.weight"), e)?),
            per_layer: self.per_layer_input(cfg, il)?,
            out_scale: self.scalar(&p("layer_output_scale.weight"))?,
        })
    }

    /// Block `il`'s attention: queries always; keys and values (or keys
    /// that serve as values) unless the layer reads another's.
    fn gemma4_attention(&self, cfg: &ModelConfig, il: usize) -> Result<Attention<B::Weight>> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let (e, l) = (cfg.n_embd, cfg.layer(il));
        let (q_dim, kv_dim) = (cfg.n_head * l.head_dim, l.n_head_kv * l.head_dim);
        if self.file.header().tensor(&p("attn_qkv.weight")).is_some() {
            return Err(ModelError::Unsupported(format!(
                "{}: fused query, key and value projections in a Gemma 4 file",
                p("attn_qkv.weight")
            )));
        }
        let q = self.linear(&p("attn_q"), e, q_dim)?;
        let q_norm = Some(self.vector(&p("attn_q_norm.weight"), l.head_dim)?);
        let (qkv, k_norm) = if l.kv_source.is_some() {
            (Qkv::Query(q), None)
        } else {
            let k = self.linear(&p("attn_k"), e, kv_dim)?;
            let qkv = match self.linear_opt(&p("attn_v"), e, kv_dim)? {
                Some(v) => Qkv::Split { q, k, v },
                None => Qkv::KeyValues { q, k },
            };
            (
                qkv,
                Some(self.vector(&p("attn_k_norm.weight"), l.head_dim)?),
            )
        };
        Ok(Attention {
            qkv,
            q_norm,
            k_norm,
            sinks: None,
            wo: self.linear(&p("attn_output"), q_dim, e)?,
        })
    }

    /// Block `il`'s feed-forward: dense, with experts beside it where the
    /// block has a router.
    fn gemma4_ffn(&self, cfg: &ModelConfig, il: usize) -> Result<Ffn<B::Weight>> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let (e, ff) = (cfg.n_embd, cfg.layer(il).n_ff);
        let dense = Expert {
            gate: Some(self.linear(&p("ffn_gate"), e, ff)?),
            up: self.linear(&p("ffn_up"), e, ff)?,
            down: self.linear(&p("ffn_down"), ff, e)?,
        };
        if self
            .file
            .header()
            .tensor(&p("ffn_gate_inp.weight"))
            .is_none()
        {
            let Expert { gate, up, down } = dense;
            return Ok(Ffn::Dense { gate, up, down });
        }
        let moe = cfg.moe.ok_or_else(|| {
            ModelError::Unsupported(format!(
                "{} routes to experts, but the file gives no expert count",
                p("ffn_gate_inp.weight")
            ))
        })?;
        Ok(Ffn::BesideDense(Box::new(BesideDense {
            dense,
            post_dense_norm: self.rms_norm(&p("post_ffw_norm_1.weight"), e)?,
            experts_norm: self.rms_norm(&p("pre_ffw_norm_2.weight"), e)?,
            router: self.linear(&p("ffn_gate_inp"), e, moe.n_expert)?,
            router_scale: self.vector(&p("ffn_gate_inp.scale"), e)?,
            experts: self.gemma4_experts(il, e, moe)?,
            expert_scales: self.expert_scales(il, moe.n_expert)?,
            post_experts_norm: self.rms_norm(&p("post_ffw_norm_2.weight"), e)?,
        })))
    }

    /// Block `il`'s experts: gate and up fused in one stacked tensor (its
    /// rows the gate's, then up's), or stacked apart; no biases.
    fn gemma4_experts(
        &self,
        il: usize,
        e: usize,
        moe: MoeConfig,
    ) -> Result<Vec<Expert<B::Weight>>> {
        let p = |s: &str| format!("blk.{il}.{s}");
        let (e64, ff, n) = (e as u64, moe.n_ff_exp as u64, moe.n_expert as u64);
        let fused = p("ffn_gate_up_exps.weight");
        let has_fused = self.file.header().tensor(&fused).is_some();
        let stacked = |name: &str, dims: [u64; 3]| -> Result<String> {
            let name = p(name);
            self.shape(&name, &dims)?;
            Ok(name)
        };
        let down = stacked("ffn_down_exps.weight", [ff, e64, n])?;
        let (gate, up) = if has_fused {
            self.shape(&fused, &[e64, 2 * ff, n])?;
            (None, fused)
        } else {
            let gate = stacked("ffn_gate_exps.weight", [e64, ff, n])?;
            (Some(gate), stacked("ffn_up_exps.weight", [e64, ff, n])?)
        };
        let linear = |name: &str, x: usize| -> Result<Linear<B::Weight>> {
            Ok(Linear {
                w: self.req_expert(name, x)?,
                b: None,
            })
        };
        (0..moe.n_expert)
            .map(|x| {
                Ok(Expert {
                    gate: gate.as_deref().map(|g| linear(g, x)).transpose()?,
                    up: linear(&up, x)?,
                    down: linear(&down, x)?,
                })
            })
            .collect()
    }

    /// Block `il`'s multiplier of each expert's output, where the file
    /// has them (`ffn_down_exps.scale`, one per expert).
    fn expert_scales(&self, il: usize, n_expert: usize) -> Result<Option<Vec<f32>>> {
        let name = format!("blk.{il}.ffn_down_exps.scale");
        if self.file.header().tensor(&name).is_none() {
            return Ok(None);
        }
        self.shape(&name, &[n_expert as u64])?;
        let v = self.file.dequantize(&name)?;
        if let Some(bad) = v.iter().find(|s| !s.is_finite()) {
            return Err(ModelError::Unsupported(format!(
                "{name} holds {bad}: expert scales must be finite"
            )));
        }
        Ok(Some(v))
    }

    /// Block `il`'s use of its per-layer input, where the model has them.
    fn per_layer_input(
        &self,
        cfg: &ModelConfig,
        il: usize,
    ) -> Result<Option<PerLayerInput<B::Weight>>> {
        let Some(width) = cfg.per_layer_input else {
            return Ok(None);
        };
        let p = |s: &str| format!("blk.{il}.{s}");
        let e = cfg.n_embd;
        Ok(Some(PerLayerInput {
            gate: self.linear(&p("inp_gate"), e, width)?.w,
            proj: self.linear(&p("proj"), width, e)?.w,
            post_norm: self.rms_norm(&p("post_norm.weight"), e)?,
        }))
    }

    /// The one value of tensor `name`, where the file has it.
    fn scalar(&self, name: &str) -> Result<Option<f32>> {
        if self.file.header().tensor(name).is_none() {
            return Ok(None);
        }
        self.shape(name, &[1])?;
        match self.file.dequantize(name)?[..] {
            [v] if v.is_finite() => Ok(Some(v)),
            ref other => Err(ModelError::Unsupported(format!(
                "{name} is {other:?}: one finite value is needed"
            ))),
        }
    }

    /// The vector `name` of `n` values (required).
    fn vector(&self, name: &str, n: usize) -> Result<B::Weight> {
        self.shape(name, &[n as u64])?;
        self.req(name)
    }

    /// The RMS norm whose weight is `name`, `n` wide.
    fn rms_norm(&self, name: &str, n: usize) -> Result<Norm<B::Weight>> {
        Ok(Norm {
            w: self.vector(name, n)?,
            b: None,
        })
    }
}
