//! Hybrid models' blocks (Qwen 3.5): the gated delta net, a recurrent
//! layer that keeps a fixed-size state per sequence instead of K/V rows,
//! and full attention whose output is gated per value.
//!
//! A delta net block projects the normed batch to queries, keys and
//! values (one row of `conv_channels`), runs them through a short causal
//! convolution and a SiLU, then the gated delta rule
//! ([`worker_compute::recurrent`]); each head's output is RMS-normed,
//! multiplied by the SiLU of the gate projection, and projected back to
//! the embedding width.

use super::{Model, Workspace};
use crate::config::RecurrentConfig;
use crate::error::{ModelError, Result};
use crate::weights::{Attention, DeltaNet, Qkv};
use worker_compute::{Activation, Backend, TokenPos};

/// Buffers of the hybrid blocks for batches of up to `n` tokens.
pub(crate) struct HybridBufs<B: Backend> {
    /// Queries and their gates, interleaved per head (`2 * q_dim`).
    qg: B::Buf,
    /// The attention output's gates (`q_dim`).
    gate: B::Buf,
    /// Projected queries, keys and values before the convolution.
    mixed: B::Buf,
    /// The same after the convolution.
    conv: B::Buf,
    /// The output gate's projection (the value heads' width).
    z: B::Buf,
    /// Per value head: the decay's input and the update's logit.
    alpha: B::Buf,
    beta: B::Buf,
    /// The delta rule's output (the value heads' width).
    out: B::Buf,
}

impl<B: Backend> HybridBufs<B> {
    pub(crate) fn new(b: &B, r: &RecurrentConfig, q_dim: usize, n: usize) -> Result<Self> {
        let channels = r.state().conv_channels;
        Ok(HybridBufs {
            qg: b.buf(n * 2 * q_dim)?,
            gate: b.buf(n * q_dim)?,
            mixed: b.buf(n * channels)?,
            conv: b.buf(n * channels)?,
            z: b.buf(n * r.inner())?,
            alpha: b.buf(n * r.n_v_heads)?,
            beta: b.buf(n * r.n_v_heads)?,
            out: b.buf(n * r.inner())?,
        })
    }
}

fn no_buffers() -> ModelError {
    ModelError::InvalidRequest("a workspace without the hybrid blocks' buffers".into())
}

impl<B: Backend> Model<B> {
    /// Q (with its gates), K and V of the normed batch in `ws.h`: the
    /// query projection gives each head's queries then its gates, split
    /// into `ws.q` and the gate buffer.
    pub(super) fn gated_qkv(
        &self,
        ws: &mut Workspace<B>,
        a: &Attention<B::Weight>,
        n: usize,
    ) -> Result<()> {
        let (b, c) = (&*self.backend, &self.cfg);
        let (q_dim, kv_dim, hd) = (c.n_head * c.head_dim, c.n_head_kv * c.head_dim, c.head_dim);
        let Qkv::Split { q, k, v } = &a.qkv else {
            return Err(ModelError::Unsupported(
                "a gated attention output with fused Q, K and V".into(),
            ));
        };
        let hy = ws.hybrid.as_mut().ok_or_else(no_buffers)?;
        let outs = [&mut hy.qg, &mut ws.k, &mut ws.v];
        self.linear_shared([q, k, v], &ws.h, n, [2 * q_dim, kv_dim, kv_dim], outs)?;
        let rows = n * c.n_head;
        b.copy_cols(&hy.qg, rows, 2 * hd, 0, hd, &mut ws.q)?;
        b.copy_cols(&hy.qg, rows, 2 * hd, hd, hd, &mut hy.gate)?;
        Ok(())
    }

    /// The attention output in `ws.attn` times the sigmoid of its gates,
    /// projected into `ws.o`.
    pub(super) fn gated_output(
        &self,
        ws: &mut Workspace<B>,
        a: &Attention<B::Weight>,
        n: usize,
    ) -> Result<()> {
        let (b, c) = (&*self.backend, &self.cfg);
        let q_dim = c.n_head * c.head_dim;
        let hy = ws.hybrid.as_mut().ok_or_else(no_buffers)?;
        b.glu(&mut hy.gate, &ws.attn, n * q_dim, Activation::Sigmoid)?;
        self.linear(&a.wo, &hy.gate, n, c.n_embd, &mut ws.o)
    }

    /// The gated delta net of layer `il` over the normed batch in `ws.h`,
    /// its output projection in `ws.o`.
    pub(super) fn delta_block(
        &self,
        ws: &mut Workspace<B>,
        kv: &mut B::Kv,
        il: usize,
        d: &DeltaNet<B::Weight>,
        tokens: &[TokenPos],
    ) -> Result<()> {
        let (b, c) = (&*self.backend, &self.cfg);
        let r = c.recurrent.as_ref().ok_or_else(no_buffers)?;
        let n = tokens.len();
        let (hv, inner) = (r.n_v_heads, r.inner());
        let hy = ws.hybrid.as_mut().ok_or_else(no_buffers)?;
        b.matmul_shared(
            &[&d.qkv, &d.gate, &d.alpha, &d.beta],
            &ws.h,
            n,
            &mut [&mut hy.mixed, &mut hy.z, &mut hy.alpha, &mut hy.beta],
        )?;
        b.add_bias(&mut hy.alpha, n, hv, &d.dt_bias)?;
        b.ssm_conv(kv, il, tokens, &hy.mixed, &d.conv, &mut hy.conv)?;
        b.act(&mut hy.conv, n * r.state().conv_channels, Activation::Silu)?;
        let p = r.params(c.norm_eps);
        b.delta_net(
            kv,
            il,
            tokens,
            &hy.conv,
            &hy.alpha,
            &hy.beta,
            &d.a,
            &p,
            &mut hy.out,
        )?;
        b.rms_norm(&mut hy.out, n * hv, r.head_dim, Some(&d.norm), c.norm_eps)?;
        b.glu(&mut hy.z, &hy.out, n * inner, Activation::Silu)?;
        b.matmul(&d.out, &hy.z, n, &mut ws.o)?;
        Ok(())
    }
}
