//! The parts of a synthetic hybrid model (Qwen 3.5): the recurrent layers'
//! settings and tensors, its gated attention's wider query projection,
//! and the shared expert of its mixture of experts.

use super::build::{Builder, invalid};
use super::{SyntheticDeltaNet, SyntheticExperts, SyntheticSpec};
use std::io;
use worker_gguf::{Array, GgufWriter, Value};

/// The recurrent layers' shape, which layers attend, the RoPE over a
/// quarter of each head (in text-position sections that reduce to NeoX
/// RoPE), and the shared expert's width.
pub(super) fn add_hybrid_settings(
    w: &mut GgufWriter,
    s: &SyntheticSpec,
) -> worker_gguf::Result<()> {
    let Some(d) = s.recurrent else {
        return Ok(());
    };
    let a = s.arch.name();
    let keys: [(&str, u32); 6] = [
        ("ssm.conv_kernel", d.conv_taps as u32),
        ("ssm.inner_size", (d.n_v_heads * d.head_dim) as u32),
        ("ssm.state_size", d.head_dim as u32),
        ("ssm.time_step_rank", d.n_v_heads as u32),
        ("ssm.group_count", d.n_k_heads as u32),
        ("full_attention_interval", d.interval as u32),
    ];
    for (k, v) in keys {
        w.add(format!("{a}.{k}"), v)?;
    }
    let n_rot = s.head_dim() / 4;
    w.add(format!("{a}.rope.dimension_count"), n_rot as u32)?;
    let pairs = (n_rot / 2) as i32;
    let first = (pairs + 2) / 3;
    let sections = vec![first, first, pairs - 2 * first, 0];
    w.add(
        format!("{a}.rope.dimension_sections"),
        Value::Array(Array::I32(sections)),
    )?;
    if let Some(x) = s.experts {
        w.add(
            format!("{a}.expert_shared_feed_forward_length"),
            x.n_ff as u32,
        )?;
    }
    Ok(())
}

impl Builder<'_> {
    /// Block `i`'s gated delta net.
    pub(super) fn delta_net(&mut self, i: usize, d: SyntheticDeltaNet) -> io::Result<()> {
        let p = |t: &str| format!("blk.{i}.{t}");
        let e = self.s.n_embd;
        let (hv, hd) = (d.n_v_heads, d.head_dim);
        let inner = hv * hd;
        let channels = (2 * d.n_k_heads + hv) * hd;
        self.matrix(p("attn_qkv.weight"), e, channels)?;
        self.matrix(p("attn_gate.weight"), e, inner)?;
        self.f32_matrix(p("ssm_conv1d.weight"), d.conv_taps, channels)?;
        self.vector(p("ssm_dt.bias"), hv, 0.0, 1.0)?;
        // Negative decay rates, from slow to fast.
        self.vector(p("ssm_a"), hv, -1.0, 0.8)?;
        self.matrix(p("ssm_beta.weight"), e, hv)?;
        self.matrix(p("ssm_alpha.weight"), e, hv)?;
        self.vector(p("ssm_norm.weight"), hd, 1.0, 0.2)?;
        self.matrix(p("ssm_out.weight"), inner, e)
    }

    /// Block `i`'s shared expert and its gate.
    pub(super) fn shared_expert(&mut self, i: usize, x: SyntheticExperts) -> io::Result<()> {
        let p = |t: &str| format!("blk.{i}.{t}");
        let e = self.s.n_embd;
        let gate = super::vector(e, 0.0, (3.0 / e as f32).sqrt(), &mut self.rng);
        self.w
            .add_f32(p("ffn_gate_inp_shexp.weight"), &[e as u64], &gate)
            .map_err(invalid)?;
        self.matrix(p("ffn_gate_shexp.weight"), e, x.n_ff)?;
        self.matrix(p("ffn_up_shexp.weight"), e, x.n_ff)?;
        self.matrix(p("ffn_down_shexp.weight"), x.n_ff, e)
    }
}
