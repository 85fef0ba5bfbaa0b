//! The fit check: does the model, with the KV cache the worker will
//! allocate, fit in the GPU memory the ModelWorker declares? It runs in the
//! fetch init container, which has the GGUF header, so a model that cannot
//! fit is refused before the worker container starts.

use worker_compute::KvType;
use worker_models::ModelConfig;

/// Memory the runtime needs beyond weights and KV cache: the CUDA context,
/// cuBLAS workspace and activation buffers. A fixed allowance, on the safe
/// side of what a one-GPU worker uses for models up to 8B.
pub const RUNTIME_OVERHEAD_BYTES: u64 = 512 << 20;
/// Prompt tokens processed per step, as `serve` sizes its workspace.
const MAX_BATCH: usize = 512;

/// What the worker will need on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub weights: u64,
    pub kv: u64,
    pub overhead: u64,
}

impl Need {
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv)
            .saturating_add(self.overhead)
    }
}

/// The bytes `serve --ctx-size n_ctx --parallel n_seq` needs for a model
/// file of `file_bytes` with config `cfg` (f16 KV cache, as served).
pub fn need(cfg: &ModelConfig, file_bytes: u64, n_ctx: usize, n_seq: usize) -> Need {
    Need {
        weights: file_bytes,
        kv: cfg
            .kv_spec(n_seq.max(1), n_ctx, KvType::F16, MAX_BATCH)
            .bytes(),
        overhead: RUNTIME_OVERHEAD_BYTES,
    }
}

/// The sentence a user reads when the model does not fit.
pub fn message(need: &Need, available: u64, n_ctx: usize, n_seq: usize) -> String {
    format!(
        "the model needs {} MiB of GPU memory ({} MiB weights, {} MiB KV cache for {n_seq} x {n_ctx} tokens, {} MiB runtime) but gpu.memory declares {} MiB; use a GPU with more memory, lower server.contextSize or server.parallel, or pick a smaller quantization",
        mib(need.total()),
        mib(need.weights),
        mib(need.kv),
        mib(need.overhead),
        mib(available)
    )
}

fn mib(b: u64) -> u64 {
    b.div_ceil(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use worker_gguf::{GgmlType, GgufFile};
    use worker_models::Arch;
    use worker_models::synthetic::{SyntheticSpec, write_model};

    #[test]
    fn kv_grows_with_context_and_sequences() {
        let path = std::env::temp_dir().join(format!("llorch-fit-{}.gguf", std::process::id()));
        write_model(
            &SyntheticSpec::conformance(Arch::Llama, GgmlType::Q8_0),
            &path,
        )
        .expect("write");
        let file = GgufFile::open(&path).expect("open");
        let cfg = ModelConfig::from_metadata(file.metadata()).expect("config");
        let _ = std::fs::remove_file(&path);
        let one = need(&cfg, 4 << 30, 4096, 1);
        // 2 layers x 2 KV heads x 64 dims x (K, V) x 2 bytes = 1 KiB a token.
        assert_eq!(one.kv, 4096 * 1024);
        assert_eq!(need(&cfg, 4 << 30, 4096, 4).kv, 4 * one.kv);
        assert_eq!(one.total(), (4 << 30) + one.kv + RUNTIME_OVERHEAD_BYTES);
        let m = message(&one, 4 << 30, 4096, 1);
        assert!(m.contains("needs 4612 MiB"), "{m}");
        assert!(m.contains("but gpu.memory declares 4096 MiB"), "{m}");
    }
}
