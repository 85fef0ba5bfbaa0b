//! The kernel sources, compiled with NVRTC for the device's architecture
//! and cached on disk.
//!
//! NVRTC turns the CUDA C below into PTX for `compute_XY`; the driver then
//! compiles that PTX for the exact device when the module loads. The PTX is
//! kept in a cache directory under a name made of the SHA-256 of the
//! sources, the architecture and the options, so a worker starts without
//! compiling after the first time, and a changed kernel can never be served
//! from a stale file. NVRTC is loaded only on a cache miss.

use crate::error::CudaError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Every kernel, in one translation unit (the helpers first).
pub const SOURCE: &str = concat!(
    include_str!("kernels/common.cuh"),
    include_str!("kernels/dequant.cuh"),
    include_str!("kernels/matmul.cu"),
    include_str!("kernels/ops.cu"),
    include_str!("kernels/attention.cu"),
);

/// NVRTC options besides the architecture. Precise division and square
/// roots, no flush-to-zero: the kernels are compared with the CPU backend.
const OPTIONS: &[&str] = &["--std=c++17", "--fmad=true"];

/// The virtual architecture for a compute capability, e.g. `compute_90`.
pub fn arch_for(major: i32, minor: i32) -> String {
    format!("compute_{major}{minor}")
}

/// The cache file name of the PTX for `arch`.
pub fn cache_key(arch: &str) -> String {
    let mut h = Sha256::new();
    h.update(SOURCE.as_bytes());
    h.update([0]);
    h.update(arch.as_bytes());
    for o in OPTIONS {
        h.update([0]);
        h.update(o.as_bytes());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("llorch-{}-{arch}.ptx", &hex[..16])
}

/// Where compiled kernels are kept: `LLORCH_KERNEL_CACHE`, else
/// `/var/cache/llorch/kernels` when that directory can be created (the
/// worker image mounts an emptyDir there), else `~/.cache/llorch/kernels`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("LLORCH_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    let system = Path::new("/var/cache/llorch/kernels");
    if std::fs::create_dir_all(system).is_ok() && writable(system) {
        return Some(system.to_path_buf());
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/llorch/kernels"))
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Whether NVRTC can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library; calls nothing in it.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles the kernels for `arch` with NVRTC.
pub fn compile(arch: &str) -> Result<String, CudaError> {
    if !nvrtc_present() {
        return Err(CudaError::LibraryMissing {
            what: "runtime compiler",
            lib: "libnvrtc",
            hint: "install the CUDA runtime with NVRTC (the llorch/worker image has it) or add its directory to LD_LIBRARY_PATH",
        });
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options: std::iter::once(format!("--gpu-architecture={arch}"))
            .chain(OPTIONS.iter().map(|o| o.to_string()))
            .collect(),
        name: Some("llorch.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts)
        .map(|ptx| ptx.to_src())
        .map_err(|e| CudaError::Compile {
            arch: arch.to_string(),
            log: e.to_string(),
        })
}

/// The PTX for `arch`: from the cache when present, else compiled and
/// stored (a cache that cannot be written only costs the next start a
/// compile).
pub fn ptx_for(arch: &str) -> Result<String, CudaError> {
    let dir = cache_dir();
    let key = cache_key(arch);
    if let Some(dir) = &dir
        && let Ok(ptx) = std::fs::read_to_string(dir.join(&key))
    {
        tracing::debug!(path = %dir.join(&key).display(), "kernels from the cache");
        return Ok(ptx);
    }
    let started = std::time::Instant::now();
    let ptx = compile(arch)?;
    tracing::info!(
        arch,
        seconds = started.elapsed().as_secs_f64(),
        "kernels compiled"
    );
    if let Some(dir) = dir {
        store(&dir, &key, &ptx);
    }
    Ok(ptx)
}

/// Writes `ptx` into the cache atomically; failures are logged, not fatal.
pub fn store(dir: &Path, key: &str, ptx: &str) {
    let tmp = dir.join(format!(".{key}.{}", std::process::id()));
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, ptx))
        .and_then(|()| std::fs::rename(&tmp, dir.join(key)));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(dir = %dir.display(), error = %e, "cannot cache the compiled kernels");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_the_architecture() {
        assert_ne!(cache_key("compute_80"), cache_key("compute_90"));
        assert!(cache_key("compute_90").ends_with("-compute_90.ptx"));
        assert_eq!(arch_for(9, 0), "compute_90");
    }
}
