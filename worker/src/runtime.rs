//! Loading a model for the subcommands that run one: device selection,
//! backend, KV cache and workspace.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::sync::Arc;
use worker_compute::KvType;
use worker_compute::cpu::CpuBackend;
use worker_gguf::GgufFile;
use worker_models::Model;
use worker_tokenizer::Tokenizer;

/// `--device cpu|cuda|cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(format!("unknown device {s:?}: use cpu, cuda or cuda:N")),
            },
        }
    }
}

/// `--kv-type f16|f32`.
pub fn parse_kv_type(s: &str) -> Result<KvType, String> {
    match s {
        "f16" => Ok(KvType::F16),
        "f32" => Ok(KvType::F32),
        _ => Err(format!("unknown KV cache type {s:?}: use f16 or f32")),
    }
}

/// A model ready to run, with its tokenizer.
pub struct Loaded {
    pub model: Model<CpuBackend>,
    pub tokenizer: Tokenizer,
    pub n_ctx: usize,
}

/// Opens `path` and loads it on `device` with `threads` threads. The context
/// size defaults to the training context, capped at 4096.
pub fn load(
    path: &Path,
    device: Device,
    threads: usize,
    ctx_size: Option<usize>,
) -> Result<Loaded> {
    if let Device::Cuda(_) = device {
        bail!("--device cuda: this build has no CUDA backend yet; use --device cpu");
    }
    let file =
        Arc::new(GgufFile::open(path).with_context(|| format!("cannot read {}", path.display()))?);
    let tokenizer = Tokenizer::from_gguf(file.metadata())
        .with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
    let backend = Arc::new(CpuBackend::new(threads)?);
    let model =
        Model::load(backend, file).with_context(|| format!("cannot load {}", path.display()))?;
    let n_ctx = ctx_size.unwrap_or_else(|| model.config().n_ctx_train.min(4096));
    if n_ctx == 0 {
        bail!("--ctx-size must be at least 1");
    }
    Ok(Loaded {
        model,
        tokenizer,
        n_ctx,
    })
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
