//! Loading a model for the subcommands that run one: device selection,
//! backend, KV cache and workspace.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::sync::Arc;
use worker_common::ErrorCode;
use worker_compute::cpu::CpuBackend;
use worker_compute::{Backend, KvType};
use worker_gguf::GgufFile;
use worker_models::{Model, ModelConfig, RopeOverrides};
use worker_tokenizer::Tokenizer;

pub use worker_args::Device;

/// `--kv-type f16|f32`.
pub fn parse_kv_type(s: &str) -> Result<KvType, String> {
    match s {
        "f16" => Ok(KvType::F16),
        "f32" => Ok(KvType::F32),
        _ => Err(format!("unknown KV cache type {s:?}: use f16 or f32")),
    }
}

/// RoPE settings over the model file's, shared by every subcommand that
/// loads a model.
pub use worker_args::RopeFlags as RopeArgs;

/// The model's RoPE settings as `flags` override them.
pub fn rope_overrides(flags: &RopeArgs) -> RopeOverrides {
    RopeOverrides {
        scaling: flags.rope_scaling.clone(),
        scale: flags.rope_scale,
        freq_base: flags.rope_freq_base,
        orig_ctx: flags.yarn_orig_ctx,
    }
}

/// The KV cache type `--kv-type` names.
pub fn kv_type(t: worker_args::KvCacheType) -> KvType {
    match t {
        worker_args::KvCacheType::F16 => KvType::F16,
        worker_args::KvCacheType::F32 => KvType::F32,
    }
}

/// A model ready to run, with its tokenizer.
pub struct Loaded<B: Backend> {
    pub model: Model<B>,
    pub tokenizer: Tokenizer,
    pub n_ctx: usize,
}

/// What to load, and the KV cache it must fit with.
#[derive(Debug, Clone)]
pub struct LoadOptions<'a> {
    pub path: &'a Path,
    pub device: Device,
    pub threads: usize,
    /// The context size; default: the training context, capped at 4096.
    pub ctx_size: Option<usize>,
    /// Sequences the KV cache will hold (for the memory check).
    pub n_seq: usize,
    pub kv_type: KvType,
    /// RoPE settings over the file's.
    pub rope: RopeOverrides,
}

/// Work to do with a loaded model, whatever backend runs it: the
/// subcommands are written once, generic over [`Backend`], and
/// [`load_with`] picks the backend from `--device`.
pub trait WithModel {
    type Output;
    fn run<B: Backend + 'static>(self, loaded: Loaded<B>) -> Result<Self::Output>;
}

/// `pub fn run(args: &Args)` for a subcommand that works on one sequence:
/// it loads the model named by `args` (fields `model`, `device`, `threads`,
/// `kv_type`, `rope`; the context size from `$ctx`) and calls the generic
/// `$body(args, loaded)` with whichever backend `--device` picked.
macro_rules! one_sequence_command {
    ($body:ident, $ctx:expr) => {
        pub fn run(args: &Args) -> anyhow::Result<()> {
            let ctx: fn(&Args) -> Option<usize> = $ctx;
            let opts = $crate::runtime::LoadOptions {
                path: &args.model,
                device: args.device,
                threads: args.threads,
                ctx_size: ctx(args),
                n_seq: 1,
                kv_type: args.kv_type,
                rope: $crate::runtime::rope_overrides(&args.rope),
            };
            $crate::runtime::load_with(&opts, Job(args))
        }

        struct Job<'a>(&'a Args);

        impl $crate::runtime::WithModel for Job<'_> {
            type Output = ();
            fn run<B: worker_compute::Backend + 'static>(
                self,
                loaded: $crate::runtime::Loaded<B>,
            ) -> anyhow::Result<()> {
                $body(self.0, loaded)
            }
        }
    };
}
pub(crate) use one_sequence_command;

/// Opens the model, checks that it fits the device's memory, loads it on
/// the backend `--device` names and runs `job` with it.
pub fn load_with<J: WithModel>(opts: &LoadOptions<'_>, job: J) -> Result<J::Output> {
    let path = opts.path;
    let file =
        Arc::new(GgufFile::open(path).with_context(|| format!("cannot read {}", path.display()))?);
    // Before anything is sized from the file: an architecture or weight
    // type the worker cannot run is named as such (UNSUPPORTED_MODEL in the
    // report), not as whatever part of the load trips over it first.
    worker_models::check_supported(file.header())
        .with_context(|| format!("{} cannot be served", path.display()))?;
    let cfg = ModelConfig::from_metadata_with(file.metadata(), &opts.rope)
        .with_context(|| format!("cannot load {}", path.display()))?;
    let n_ctx = opts.ctx_size.unwrap_or_else(|| cfg.n_ctx_train.min(4096));
    if n_ctx == 0 {
        bail!("--ctx-size must be at least 1");
    }
    let kv_bytes = cfg
        .kv_spec(opts.n_seq.max(1), n_ctx, opts.kv_type, 512)
        .bytes();
    let tokenizer = Tokenizer::from_gguf(file.metadata())
        .with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
    match opts.device {
        Device::Cpu => {
            check_memory(file.len(), kv_bytes)?;
            let backend = Arc::new(CpuBackend::new(opts.threads)?);
            job.run(on_backend(
                backend, file, tokenizer, n_ctx, &opts.rope, path,
            )?)
        }
        Device::Cuda(ordinal) => cuda::load_with(
            ordinal, file, tokenizer, n_ctx, kv_bytes, &opts.rope, path, job,
        ),
    }
}

fn on_backend<B: Backend>(
    backend: Arc<B>,
    file: Arc<GgufFile>,
    tokenizer: Tokenizer,
    n_ctx: usize,
    rope: &RopeOverrides,
    path: &Path,
) -> Result<Loaded<B>> {
    let mut model = Model::load_with(backend, file, rope)
        .with_context(|| format!("cannot load {}", path.display()))?;
    model.set_context_length(n_ctx);
    Ok(Loaded {
        model,
        tokenizer,
        n_ctx,
    })
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::{WithModel, on_backend};
    use anyhow::Result;
    use std::path::Path;
    use std::sync::Arc;
    use worker_cuda::{CudaBackend, CudaError};
    use worker_gguf::GgufFile;
    use worker_models::RopeOverrides;
    use worker_tokenizer::Tokenizer;

    /// Room for buffers, scratch and cuBLAS besides weights and KV cache.
    const HEADROOM: u64 = 512 << 20;

    #[allow(clippy::too_many_arguments)]
    pub fn load_with<J: WithModel>(
        ordinal: usize,
        file: Arc<GgufFile>,
        tokenizer: Tokenizer,
        n_ctx: usize,
        kv_bytes: u64,
        rope: &RopeOverrides,
        path: &Path,
        job: J,
    ) -> Result<J::Output> {
        let backend = CudaBackend::new(ordinal)?;
        let weights: u64 = file.header().tensors.iter().map(|t| t.n_bytes).sum();
        let need = weights + kv_bytes + HEADROOM;
        let (free, _) = backend.mem_info()?;
        if need > free {
            return Err(CudaError::InsufficientVram {
                need_bytes: need,
                available_bytes: free,
            }
            .into());
        }
        job.run(on_backend(
            Arc::new(backend),
            file,
            tokenizer,
            n_ctx,
            rope,
            path,
        )?)
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::WithModel;
    use anyhow::{Result, bail};
    use std::path::Path;
    use std::sync::Arc;
    use worker_gguf::GgufFile;
    use worker_models::RopeOverrides;
    use worker_tokenizer::Tokenizer;

    #[allow(clippy::too_many_arguments)]
    pub fn load_with<J: WithModel>(
        _ordinal: usize,
        _file: Arc<GgufFile>,
        _tokenizer: Tokenizer,
        _n_ctx: usize,
        _kv_bytes: u64,
        _rope: &RopeOverrides,
        _path: &Path,
        _job: J,
    ) -> Result<J::Output> {
        bail!(
            "--device cuda: this llorch-worker was built without the CUDA backend; use the llorch/worker image, build with `cargo build --features cuda`, or run with --device cpu"
        )
    }
}

/// The model and its KV cache need more memory than the host has free.
#[derive(Debug)]
pub struct InsufficientMemory {
    pub need: u64,
    pub available: u64,
}

impl std::fmt::Display for InsufficientMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the model and its KV cache need {} MiB but only {} MiB of memory are available; lower --ctx-size or --parallel, or use a smaller model",
            self.need >> 20,
            self.available >> 20
        )
    }
}

impl std::error::Error for InsufficientMemory {}

/// `MemAvailable` from /proc/meminfo, if readable.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Fails with [`InsufficientMemory`] when the file plus a KV cache of
/// `kv_bytes` cannot fit in the memory the host has available.
pub fn check_memory(file_bytes: u64, kv_bytes: u64) -> Result<()> {
    let need = file_bytes + kv_bytes;
    match mem_available() {
        Some(available) if need > available => Err(InsufficientMemory { need, available }.into()),
        _ => Ok(()),
    }
}

/// The report's error code for a load failure.
pub fn load_error_code(e: &anyhow::Error) -> ErrorCode {
    if e.downcast_ref::<InsufficientMemory>().is_some() {
        return ErrorCode::InsufficientMemory;
    }
    if e.downcast_ref::<worker_models::Unsupported>().is_some()
        || e.downcast_ref::<worker_models::ModelError>()
            .is_some_and(worker_models::ModelError::is_unsupported)
    {
        return ErrorCode::UnsupportedModel;
    }
    #[cfg(feature = "cuda")]
    if let Some(c) = e.downcast_ref::<worker_cuda::CudaError>() {
        return match c {
            worker_cuda::CudaError::InsufficientVram { .. } => ErrorCode::InsufficientVram,
            _ => ErrorCode::CudaError,
        };
    }
    ErrorCode::ModelLoadFailed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_model_is_its_own_code() {
        let e = anyhow::Error::new(worker_models::Unsupported::Architecture {
            arch: "mamba".into(),
        })
        .context("m.gguf cannot be served");
        assert_eq!(load_error_code(&e), ErrorCode::UnsupportedModel);
        assert!(format!("{e:#}").contains("\"mamba\" is not supported"));
        let other = anyhow::anyhow!("tensor missing").context("cannot load m.gguf");
        assert_eq!(load_error_code(&other), ErrorCode::ModelLoadFailed);
    }
}
