//! The shapes of released models, for benchmarks: real widths, head
//! sizes and expert counts, with the vocabulary shortened and the largest
//! cut to fewer layers, so that they fit a small machine.

use super::{SyntheticDeltaNet, SyntheticExperts, SyntheticLayers, SyntheticSpec};
use crate::config::Arch;
use worker_gguf::GgmlType;

impl SyntheticSpec {
    /// A Llama with the shapes of Llama 3.2 1B (vocabulary shortened).
    pub fn llama_1b(ty: GgmlType) -> Self {
        SyntheticSpec {
            arch: Arch::Llama,
            ty,
            dense_ty: ty,
            n_embd: 2048,
            n_layer: 16,
            n_head: 32,
            n_head_kv: 8,
            n_ff: 8192,
            n_vocab: 32768,
            n_ctx: 4096,
            window: None,
            untied_output: false,
            rope_scaling: None,
            seed: 1,
            experts: None,
            recurrent: None,
            layers: None,
        }
    }

    /// A Llama with the shapes of Llama 3 8B (vocabulary shortened).
    pub fn llama_8b(ty: GgmlType) -> Self {
        SyntheticSpec {
            arch: Arch::Llama,
            ty,
            dense_ty: ty,
            n_embd: 4096,
            n_layer: 32,
            n_head: 32,
            n_head_kv: 8,
            n_ff: 14336,
            n_vocab: 32768,
            n_ctx: 4096,
            window: None,
            untied_output: false,
            rope_scaling: None,
            seed: 8,
            experts: None,
            recurrent: None,
            layers: None,
        }
    }

    /// A Qwen 3 with the shapes of Qwen3-1.7B (vocabulary shortened).
    pub fn qwen3_1_7b(ty: GgmlType) -> Self {
        SyntheticSpec {
            arch: Arch::Qwen3,
            ty,
            dense_ty: ty,
            n_embd: 2048,
            n_layer: 28,
            n_head: 16,
            n_head_kv: 8,
            n_ff: 6144,
            n_vocab: 32768,
            n_ctx: 4096,
            window: None,
            untied_output: false,
            rope_scaling: None,
            seed: 17,
            experts: None,
            recurrent: None,
            layers: None,
        }
    }

    /// A Qwen 3 MoE with the shapes of Qwen3-30B-A3B cut to 12 of its 48
    /// layers (128 experts of 768, 8 per token; 16 heads of 128, so that
    /// the head size is the real one; vocabulary shortened), small enough
    /// to benchmark on a small machine.
    pub fn qwen3moe_30b_a3b_cut(ty: GgmlType) -> Self {
        SyntheticSpec {
            arch: Arch::Qwen3Moe,
            ty,
            dense_ty: ty,
            n_embd: 2048,
            n_layer: 12,
            n_head: 16,
            n_head_kv: 4,
            n_ff: 6144,
            n_vocab: 32768,
            n_ctx: 4096,
            window: None,
            untied_output: true,
            rope_scaling: None,
            seed: 30,
            experts: Some(SyntheticExperts {
                n_expert: 128,
                n_used: 8,
                n_ff: 768,
            }),
            recurrent: None,
            layers: None,
        }
    }

    /// A gpt-oss with the shapes of gpt-oss-20b cut to 6 of its 24 layers
    /// (2880 wide, 64 heads of 64, 8 key/value heads, 32 experts of 2880,
    /// 4 per token, windows of 128 on every other layer; vocabulary
    /// shortened). As in the released files, the experts take `ty`
    /// (MXFP4) and the other matrices Q8_0.
    pub fn gpt_oss_20b_cut(ty: GgmlType) -> Self {
        SyntheticSpec {
            arch: Arch::GptOss,
            ty,
            dense_ty: GgmlType::Q8_0,
            n_embd: 2880,
            n_layer: 6,
            n_head: 64,
            n_head_kv: 8,
            n_ff: 2880,
            n_vocab: 32768,
            n_ctx: 4096,
            window: Some(128),
            untied_output: true,
            rope_scaling: None,
            seed: 20,
            experts: Some(SyntheticExperts {
                n_expert: 32,
                n_used: 4,
                n_ff: 2880,
            }),
            recurrent: None,
            layers: None,
        }
    }

    /// A Qwen 3.5 of about 2B parameters in its layout (vocabulary
    /// shortened): 24 layers 2048 wide, three of every four gated delta
    /// nets (16 heads of 128, convolutions of 4 taps), the rest gated
    /// attention of 8 query heads of 256 and 2 key/value heads, RoPE over
    /// a quarter of each head.
    pub fn qwen35_2b(ty: GgmlType) -> Self {
        SyntheticSpec {
            arch: Arch::Qwen35,
            ty,
            dense_ty: ty,
            n_embd: 2048,
            n_layer: 24,
            n_head: 8,
            n_head_kv: 2,
            n_ff: 6144,
            n_vocab: 32768,
            n_ctx: 4096,
            window: None,
            untied_output: false,
            rope_scaling: None,
            seed: 35,
            experts: None,
            recurrent: Some(SyntheticDeltaNet {
                n_k_heads: 16,
                n_v_heads: 16,
                head_dim: 128,
                conv_taps: 4,
                interval: 4,
            }),
            layers: None,
        }
    }

    /// A Gemma 4 with the shapes of Gemma 4 E2B (vocabulary shortened):
    /// 35 layers 1536 wide, four windowed layers (of 512) to every global
    /// one, 8 query heads over one K/V head, of 256 in the windowed layers
    /// and 512 in the global ones (a quarter of them rotated); the last 20
    /// layers read the K/V of the last windowed and global layers before
    /// them and have feed-forwards twice as wide (12288 against 6144);
    /// per-layer inputs of 256.
    pub fn gemma4_e2b(ty: GgmlType) -> Self {
        let n_layer = 35;
        SyntheticSpec {
            arch: Arch::Gemma4,
            ty,
            dense_ty: ty,
            n_embd: 1536,
            n_layer,
            n_head: 8,
            n_head_kv: 1,
            n_ff: 6144,
            n_vocab: 32768,
            n_ctx: 4096,
            window: Some(512),
            untied_output: false,
            rope_scaling: None,
            seed: 4,
            experts: None,
            recurrent: None,
            layers: Some(SyntheticLayers {
                swa: (0..n_layer).map(|il| il % 5 != 4).collect(),
                head_dim_swa: 256,
                head_dim: 512,
                n_head_kv_swa: 1,
                shared_kv: 20,
                double_wide: true,
                per_layer_input: 256,
                keys_as_values: false,
                rotated: 128,
            }),
        }
    }
}
