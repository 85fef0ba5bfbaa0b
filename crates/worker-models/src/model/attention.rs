//! The attention block: projections, their norms and RoPE, attention over
//! the KV cache (the layer's own rows, or an earlier layer's), and the
//! output projection. Head sizes and K/V heads are each layer's own
//! ([`crate::config::ModelConfig::layer`]).

use super::{Model, Workspace};
use crate::config::QkNorm;
use crate::error::Result;
use crate::weights::{Attention, Qkv};
use worker_compute::{Backend, TokenPos};

impl<B: Backend> Model<B> {
    /// Q, K and V of layer `il` from the normed batch in `ws.h`, into
    /// `ws.q`, `ws.k`, `ws.v` (and the output gate, where the model has
    /// one); Q only for a layer that reads another's K/V.
    fn qkv(
        &self,
        ws: &mut Workspace<B>,
        il: usize,
        layer: &Attention<B::Weight>,
        n: usize,
    ) -> Result<()> {
        let (b, c) = (&*self.backend, &self.cfg);
        let l = c.layer(il);
        let (q_dim, kv_dim) = (c.n_head * l.head_dim, l.n_head_kv * l.head_dim);
        if c.attn_output_gate {
            return self.gated_qkv(ws, layer, n);
        }
        match &layer.qkv {
            Qkv::Fused(f) => {
                let width = q_dim + 2 * kv_dim;
                self.linear(f, &ws.h, n, width, &mut ws.qkv)?;
                b.copy_cols(&ws.qkv, n, width, 0, q_dim, &mut ws.q)?;
                b.copy_cols(&ws.qkv, n, width, q_dim, kv_dim, &mut ws.k)?;
                b.copy_cols(&ws.qkv, n, width, q_dim + kv_dim, kv_dim, &mut ws.v)?;
            }
            Qkv::Split { q, k, v } => {
                let outs = [&mut ws.q, &mut ws.k, &mut ws.v];
                self.linear_shared([q, k, v], &ws.h, n, [q_dim, kv_dim, kv_dim], outs)?;
            }
            Qkv::KeyValues { q, k } => {
                let outs = [&mut ws.q, &mut ws.k];
                self.linear_shared([q, k], &ws.h, n, [q_dim, kv_dim], outs)?;
                b.copy_cols(&ws.k, n, kv_dim, 0, kv_dim, &mut ws.v)?;
            }
            Qkv::Query(q) => self.linear(q, &ws.h, n, q_dim, &mut ws.q)?,
        }
        Ok(())
    }

    /// The attention block of layer `il` over the normed batch in `ws.h`,
    /// its output projection in `ws.o`.
    pub(super) fn attention_block(
        &self,
        ws: &mut Workspace<B>,
        kv: &mut B::Kv,
        il: usize,
        a: &Attention<B::Weight>,
        tokens: &[TokenPos],
    ) -> Result<()> {
        let (b, c) = (&*self.backend, &self.cfg);
        let n = tokens.len();
        let l = c.layer(il);
        let (hd, n_kv) = (l.head_dim, l.n_head_kv);
        let (q_dim, kv_dim) = (c.n_head * hd, n_kv * hd);
        let own_kv = !matches!(a.qkv, Qkv::Query(_));
        self.qkv(ws, il, a, n)?;
        let (q_rows, q_w, k_rows, k_w) = match c.qk_norm {
            QkNorm::Whole => (n, q_dim, n, kv_dim),
            _ => (n * c.n_head, hd, n * n_kv, hd),
        };
        if let Some(qn) = &a.q_norm {
            b.rms_norm(&mut ws.q, q_rows, q_w, Some(qn), c.norm_eps)?;
        }
        if let Some(kn) = a.k_norm.as_ref().filter(|_| own_kv) {
            b.rms_norm(&mut ws.k, k_rows, k_w, Some(kn), c.norm_eps)?;
        }
        if c.v_norm && own_kv {
            b.rms_norm(&mut ws.v, n * n_kv, hd, None, c.norm_eps)?;
        }
        if let Some(rope) = &self.rope[il] {
            b.rope(&mut ws.q, tokens, c.n_head, hd, rope)?;
            if own_kv {
                b.rope(&mut ws.k, tokens, n_kv, hd, rope)?;
            }
        }
        if let Some(s) = c.q_prescale {
            b.scale(&mut ws.q, n * q_dim, s)?;
        }
        if let Some(t) = &c.attn_temperature {
            let factors: Vec<f32> = tokens.iter().map(|tp| t.factor(tp.pos)).collect();
            if factors.iter().any(|&f| f != 1.0) {
                b.scale_rows(&mut ws.q, q_dim, &factors)?;
            }
        }
        let (p, sinks) = (&self.attn[il], a.sinks.as_ref());
        if own_kv {
            b.attention(kv, il, tokens, &ws.q, &ws.k, &ws.v, p, sinks, &mut ws.attn)?;
        } else {
            b.attention_shared(kv, il, tokens, &ws.q, p, sinks, &mut ws.attn)?;
        }
        if c.attn_output_gate {
            return self.gated_output(ws, a, n);
        }
        self.linear(&a.wo, &ws.attn, n, c.n_embd, &mut ws.o)
    }
}
