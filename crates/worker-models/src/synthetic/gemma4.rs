//! The parts of a synthetic Gemma 4: its layer kinds' settings, the
//! per-layer token embeddings, blocks whose heads and widths follow their
//! kind (the shared ones without keys or values), and the experts beside
//! the dense feed-forward, as the released files lay them out (gate and
//! up fused, a router scale, a scale per expert).

use super::build::{Builder, invalid};
use super::{SyntheticExperts, SyntheticLayers, SyntheticSpec};
use crate::config::Arch;
use std::io;
use worker_gguf::{Array, GgmlType, GgufWriter, Value};

/// The conformance model's layers: a windowed and a global layer with
/// K/V of their own, then a windowed one reading the first's (its
/// feed-forward twice as wide); windowed heads of 64 over two K/V heads,
/// global heads of 128 over one, a quarter of them rotated; per-layer
/// inputs of 32. Three layers, the fewest with every kind: a fourth (a
/// global one reading the second's) would only move the source index,
/// and through the per-layer inputs it would take the quantized files
/// past the conformance limit on rounding alone (llama.cpp's own logits
/// move by 1e-3 to 2e-3 NMSE there when it runs the prompt in other
/// batches).
pub(super) fn conformance_layers() -> SyntheticLayers {
    SyntheticLayers {
        swa: vec![true, false, true],
        head_dim_swa: 64,
        head_dim: 128,
        n_head_kv_swa: 2,
        shared_kv: 1,
        double_wide: true,
        per_layer_input: 32,
        keys_as_values: false,
        rotated: 32,
    }
}

impl SyntheticSpec {
    /// The conformance shape of Gemma 4 with experts (as the 26B-A4B
    /// files): a windowed and a global layer, the global one's keys
    /// serving as its values, each with eight experts of 64 (two per
    /// token) beside the dense feed-forward; no per-layer inputs or
    /// shared K/V.
    pub fn conformance_gemma4_moe(ty: GgmlType) -> Self {
        let mut s = Self::conformance(Arch::Gemma4, ty);
        s.n_layer = 2;
        s.layers = Some(SyntheticLayers {
            swa: vec![true, false],
            shared_kv: 0,
            double_wide: false,
            per_layer_input: 0,
            keys_as_values: true,
            ..conformance_layers()
        });
        s.experts = Some(SyntheticExperts {
            n_expert: 8,
            n_used: 2,
            n_ff: 64,
        });
        s.seed ^= 0xE0E0;
        s
    }
}

/// Gemma 4's keys: widths and K/V heads per layer, heads and RoPE by
/// kind, the window and its layers, the shared layers, the per-layer
/// inputs and a final soft cap that matters at these logits.
pub(super) fn add_gemma4_settings(
    w: &mut GgufWriter,
    s: &SyntheticSpec,
) -> worker_gguf::Result<()> {
    let Some(l) = &s.layers else {
        return Ok(());
    };
    let a = s.arch.name();
    let n = l.swa.len();
    let per_layer = |f: &dyn Fn(usize) -> usize| -> Value {
        Value::Array(Array::U32((0..n).map(|il| f(il) as u32).collect()))
    };
    w.add(
        format!("{a}.feed_forward_length"),
        per_layer(&|il| l.n_ff(il, s.n_ff)),
    )?;
    w.add(
        format!("{a}.attention.head_count_kv"),
        per_layer(&|il| l.heads(il, s.n_head_kv).1),
    )?;
    let keys: [(&str, u32); 6] = [
        ("attention.key_length_swa", l.head_dim_swa as u32),
        ("attention.value_length_swa", l.head_dim_swa as u32),
        ("rope.dimension_count", l.head_dim as u32),
        ("rope.dimension_count_swa", l.head_dim_swa as u32),
        ("attention.shared_kv_layers", l.shared_kv as u32),
        ("embedding_length_per_layer_input", l.per_layer_input as u32),
    ];
    for (k, v) in keys {
        w.add(format!("{a}.{k}"), v)?;
    }
    w.add(format!("{a}.rope.freq_base_swa"), 10_000.0f32)?;
    w.add(
        format!("{a}.attention.sliding_window"),
        s.window.unwrap_or(512),
    )?;
    w.add(
        format!("{a}.attention.sliding_window_pattern"),
        Value::Array(Array::Bool(l.swa.clone())),
    )?;
    w.add(format!("{a}.final_logit_softcapping"), 3.0f32)
}

impl Builder<'_> {
    /// The frequency factors of the global layers' RoPE, and the per-layer
    /// token embeddings with their projection (kept F32, as quantizers
    /// leave it) and its norm.
    pub(super) fn gemma4_embeddings(&mut self) -> io::Result<()> {
        let (s, Some(l)) = (self.s, self.s.layers.clone()) else {
            return Ok(());
        };
        // Pairs past the rotated ones turn by a negligible angle.
        let factors: Vec<f32> = (0..l.head_dim / 2)
            .map(|i| if i < l.rotated / 2 { 1.0 } else { 1e30 })
            .collect();
        self.w
            .add_f32("rope_freqs.weight", &[factors.len() as u64], &factors)
            .map_err(invalid)?;
        if l.per_layer_input > 0 {
            let total = l.per_layer_input * s.n_layer;
            self.matrix("per_layer_token_embd.weight".into(), total, s.n_vocab)?;
            self.f32_matrix("per_layer_model_proj.weight".into(), s.n_embd, total)?;
            self.vector(
                "per_layer_proj_norm.weight".into(),
                l.per_layer_input,
                1.0,
                0.2,
            )?;
        }
        Ok(())
    }

    /// Block `i` of a Gemma 4.
    pub(super) fn gemma4_block(&mut self, i: usize, l: &SyntheticLayers) -> io::Result<()> {
        let s = self.s;
        let p = |t: &str| format!("blk.{i}.{t}");
        let e = s.n_embd;
        let (hd, n_kv) = l.heads(i, s.n_head_kv);
        self.vector(p("attn_norm.weight"), e, 1.0, 0.2)?;
        self.matrix(p("attn_q.weight"), e, s.n_head * hd)?;
        if !l.is_shared(i) {
            self.matrix(p("attn_k.weight"), e, n_kv * hd)?;
            // A global layer's keys serve as its values where so asked.
            if l.swa[i] || !l.keys_as_values {
                self.matrix(p("attn_v.weight"), e, n_kv * hd)?;
            }
        }
        // Query and key norms of about hd^-1/4 each: the unscaled scores
        // then spread as 1/sqrt(hd)-scaled ones do, rather than so widely
        // that the softmax picks one key by a rounding.
        let qk = (hd as f32).powf(-0.25);
        self.vector(p("attn_q_norm.weight"), hd, qk, 0.2 * qk)?;
        if !l.is_shared(i) {
            self.vector(p("attn_k_norm.weight"), hd, qk, 0.2 * qk)?;
        }
        self.matrix(p("attn_output.weight"), s.n_head * hd, e)?;
        self.vector(p("post_attention_norm.weight"), e, 1.0, 0.2)?;
        self.vector(p("ffn_norm.weight"), e, 1.0, 0.2)?;
        let ff = l.n_ff(i, s.n_ff);
        self.matrix(p("ffn_gate.weight"), e, ff)?;
        self.matrix(p("ffn_up.weight"), e, ff)?;
        self.matrix(p("ffn_down.weight"), ff, e)?;
        if let Some(x) = s.experts {
            self.gemma4_experts(i, x)?;
        }
        self.vector(p("post_ffw_norm.weight"), e, 1.0, 0.2)?;
        if l.per_layer_input > 0 {
            self.matrix(p("inp_gate.weight"), e, l.per_layer_input)?;
            self.matrix(p("proj.weight"), l.per_layer_input, e)?;
            self.vector(p("post_norm.weight"), e, 1.0, 0.2)?;
        }
        self.vector(p("layer_output_scale.weight"), 1, 0.9, 0.1)
    }

    /// Block `i`'s experts, their router (F32, as quantizers leave it)
    /// and its input scale, each expert's output scale, and the norms of
    /// both branches.
    fn gemma4_experts(&mut self, i: usize, x: SyntheticExperts) -> io::Result<()> {
        let p = |t: &str| format!("blk.{i}.{t}");
        let e = self.s.n_embd;
        self.f32_matrix(p("ffn_gate_inp.weight"), e, x.n_expert)?;
        self.vector(p("ffn_gate_inp.scale"), e, 1.0, 0.5)?;
        self.stacked(p("ffn_gate_up_exps.weight"), e, 2 * x.n_ff, x.n_expert)?;
        self.stacked(p("ffn_down_exps.weight"), x.n_ff, e, x.n_expert)?;
        self.vector(p("ffn_down_exps.scale"), x.n_expert, 1.0, 0.5)?;
        self.vector(p("pre_ffw_norm_2.weight"), e, 1.0, 0.2)?;
        self.vector(p("post_ffw_norm_1.weight"), e, 1.0, 0.2)?;
        self.vector(p("post_ffw_norm_2.weight"), e, 1.0, 0.2)
    }
}
