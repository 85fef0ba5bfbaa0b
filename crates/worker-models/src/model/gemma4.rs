//! Gemma 4's additions to a block: the per-layer inputs, and routed
//! experts beside the dense feed-forward.
//!
//! Per-layer inputs: before the first block, each token's row of the
//! per-layer embeddings (times `sqrt(width)`) is added to the projection
//! of its scaled embedding (times `1/sqrt(n_embd)`, each layer's share
//! RMS-normed), and the sum multiplied by `1/sqrt(2)`. After each block's
//! feed-forward, the block's output goes through a gate projection and a
//! GELU, is multiplied by the block's share of those inputs, projected
//! back to the embedding width, normed, and added to the block's output.
//! Then the output is multiplied by the block's scalar, where it has one.
//!
//! Experts beside the dense feed-forward: the dense branch reads the
//! block's feed-forward norm and is normed after; the experts read a norm
//! of their own and are normed after; the router reads the residual
//! stream RMS-normed, times `1/sqrt(n_embd)` and a learned vector; each
//! expert's output is multiplied by its scale, where the file has them.
//! The two branches' sum is the block's feed-forward output.

use super::{Model, Workspace};
use crate::config::MoeConfig;
use crate::error::{ModelError, Result};
use crate::weights::{BesideDense, Layer};
use worker_compute::{Activation, Backend};

/// Buffers of the per-layer inputs and of the dense branch beside the
/// experts, for batches of up to `n` tokens.
pub(crate) struct Gemma4Bufs<B: Backend> {
    /// Every layer's inputs per token (`n_layer * width`).
    inputs: B::Buf,
    /// The projection of the embeddings (`n_layer * width`).
    proj: B::Buf,
    /// One layer's gate and its share of the inputs (`width`).
    gate: B::Buf,
    share: B::Buf,
    /// The dense branch's output, and the router's input (`n_embd`).
    dense: B::Buf,
    router_in: B::Buf,
}

impl<B: Backend> Gemma4Bufs<B> {
    pub(crate) fn new(
        b: &B,
        n: usize,
        n_embd: usize,
        n_layer: usize,
        width: usize,
    ) -> Result<Self> {
        // A model without per-layer inputs keeps them one value long.
        let total = (n * n_layer * width).max(1);
        Ok(Gemma4Bufs {
            inputs: b.buf(total)?,
            proj: b.buf(total)?,
            gate: b.buf((n * width).max(1))?,
            share: b.buf((n * width).max(1))?,
            dense: b.buf(n * n_embd)?,
            router_in: b.buf(n * n_embd)?,
        })
    }
}

fn no_buffers() -> ModelError {
    ModelError::InvalidRequest("a workspace without Gemma 4's buffers".into())
}

impl<B: Backend> Model<B> {
    /// Every layer's input for the batch, from the token ids and the
    /// scaled embeddings in `ws.x`.
    pub(super) fn per_layer_inputs(&self, ws: &mut Workspace<B>, ids: &[u32]) -> Result<()> {
        let (b, c) = (&*self.backend, &self.cfg);
        let (Some(pl), Some(width)) = (&self.weights.per_layer, c.per_layer_input) else {
            return Ok(());
        };
        let n = ids.len();
        let total = n * c.n_layer * width;
        let g = ws.gemma4.as_mut().ok_or_else(no_buffers)?;
        b.get_rows(&pl.tok_embd, ids, &mut g.inputs)?;
        b.scale(&mut g.inputs, total, (width as f32).sqrt())?;
        b.matmul(&pl.model_proj, &ws.x, n, &mut g.proj)?;
        b.scale(&mut g.proj, total, 1.0 / (c.n_embd as f32).sqrt())?;
        b.rms_norm(
            &mut g.proj,
            n * c.n_layer,
            width,
            Some(&pl.proj_norm),
            c.norm_eps,
        )?;
        b.add(&mut g.inputs, &g.proj, total)?;
        b.scale(&mut g.inputs, total, 1.0 / 2f32.sqrt())?;
        Ok(())
    }

    /// Block `il`'s per-layer input into its output in `ws.x`, then the
    /// block's output scalar.
    pub(super) fn per_layer_output(
        &self,
        ws: &mut Workspace<B>,
        il: usize,
        layer: &Layer<B::Weight>,
        n: usize,
    ) -> Result<()> {
        let (b, c) = (&*self.backend, &self.cfg);
        let e = c.n_embd;
        if let (Some(p), Some(width)) = (&layer.per_layer, c.per_layer_input) {
            let g = ws.gemma4.as_mut().ok_or_else(no_buffers)?;
            b.matmul(&p.gate, &ws.x, n, &mut g.gate)?;
            b.copy_cols(
                &g.inputs,
                n,
                c.n_layer * width,
                il * width,
                width,
                &mut g.share,
            )?;
            b.glu(&mut g.gate, &g.share, n * width, Activation::Gelu)?;
            b.matmul(&p.proj, &g.gate, n, &mut ws.o)?;
            self.norm(&mut ws.o, n, &p.post_norm)?;
            b.add(&mut ws.x, &ws.o, n * e)?;
        }
        if let Some(s) = layer.out_scale {
            b.scale(&mut ws.x, n * e, s)?;
        }
        Ok(())
    }

    /// The dense branch and the experts of block `il` over the normed
    /// batch in `ws.h` (and the residual stream in `ws.x`), their sum into
    /// `ws.o`.
    pub(super) fn beside_dense_ffn(
        &self,
        ws: &mut Workspace<B>,
        il: usize,
        f: &BesideDense<B::Weight>,
        moe: &MoeConfig,
        n: usize,
    ) -> Result<()> {
        let (b, c) = (&*self.backend, &self.cfg);
        let e = c.n_embd;
        let d = &f.dense;
        self.dense_ffn(ws, d.gate.as_ref(), &d.up, &d.down, n, c.layer(il).n_ff)?;
        self.norm(&mut ws.o, n, &f.post_dense_norm)?;
        let g = ws.gemma4.as_mut().ok_or_else(no_buffers)?;
        b.copy_cols(&ws.o, n, e, 0, e, &mut g.dense)?;
        b.copy_cols(&ws.x, n, e, 0, e, &mut g.router_in)?;
        b.rms_norm(&mut g.router_in, n, e, Some(&f.router_scale), c.norm_eps)?;
        b.scale(&mut g.router_in, n * e, 1.0 / (e as f32).sqrt())?;
        let bufs = ws.moe.as_mut().ok_or_else(no_buffers)?;
        self.linear(&f.router, &g.router_in, n, moe.n_expert, &mut bufs.router)?;
        let mut routes = self.read_routes(ws, moe, n)?;
        if let Some(scales) = &f.expert_scales {
            for (weights, &s) in routes.weights.iter_mut().zip(scales) {
                weights.iter_mut().for_each(|w| *w *= s);
            }
        }
        self.pre_norm(&ws.x, n, Some(&f.experts_norm), &mut ws.h)?;
        self.run_experts(ws, &f.experts, &routes, moe.n_ff_exp, n)?;
        self.norm(&mut ws.o, n, &f.post_experts_norm)?;
        let g = ws.gemma4.as_ref().ok_or_else(no_buffers)?;
        b.add(&mut ws.o, &g.dense, n * e)?;
        Ok(())
    }
}
