//! The kernel sources, compiled with NVRTC for the device's architecture
//! and cached on disk.
//!
//! NVRTC compiles the CUDA C below straight to a cubin (machine code) for
//! `sm_XY`, not to PTX: the driver would have to JIT PTX itself, and a
//! driver older than the NVRTC that wrote the PTX refuses it, whereas a
//! cubin from any CUDA 12 NVRTC runs on any CUDA 12 driver. The cubin is
//! kept in a cache directory under a name made of the SHA-256 of the
//! sources, the architecture and the options, so a worker starts without
//! compiling after the first time, and a changed kernel can never be served
//! from a stale file. NVRTC is loaded only on a cache miss; a cached file
//! the driver rejects is compiled again.

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
    include_str!("kernels/recurrent.cu"),
    include_str!("kernels/delta_chunked.cu"),
    include_str!("kernels/select.cu"),
);

/// NVRTC options besides the architecture. Precise division and square
/// roots and no flush-to-zero (NVRTC's defaults), so the kernels track the
/// CPU backend; multiply-adds may fuse (`--fmad=true`, faster), so results
/// are close to the CPU's (NMSE ~1e-15 on the decoders), not bit-equal as
/// under the host emulation, which compiles without contraction.
const OPTIONS: &[&str] = &["--std=c++17", "--fmad=true"];

/// The real architecture for a compute capability, e.g. `sm_90`.
pub fn arch_for(major: i32, minor: i32) -> String {
    format!("sm_{major}{minor}")
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
    format!("llorch-{}-{arch}.cubin", &hex[..16])
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

/// Compiles the kernels for `arch` (e.g. `sm_90`) with NVRTC to a cubin.
pub fn compile(arch: &str) -> Result<Vec<u8>, CudaError> {
    use cudarc::nvrtc::{result, sys};
    use std::ffi::CString;
    if !nvrtc_present() {
        return Err(CudaError::LibraryMissing {
            what: "runtime compiler",
            lib: "libnvrtc",
            hint: "install the CUDA runtime with NVRTC (the llorch/worker image has it) or add its directory to LD_LIBRARY_PATH",
        });
    }
    let failed = |log: String| CudaError::Compile {
        arch: arch.to_string(),
        log,
    };
    let src = CString::new(SOURCE).map_err(|e| failed(e.to_string()))?;
    let name = CString::new("llorch.cu").map_err(|e| failed(e.to_string()))?;
    let prog = result::create_program(&src, Some(&name)).map_err(|e| failed(e.to_string()))?;
    let options: Vec<String> = std::iter::once(format!("--gpu-architecture={arch}"))
        .chain(OPTIONS.iter().map(|o| o.to_string()))
        .collect();
    // SAFETY: `prog` is a live program until destroyed below; the buffers
    // passed to NVRTC have the sizes it reported.
    let cubin = unsafe {
        let compiled = result::compile_program(prog, &options);
        let out = match compiled {
            Err(e) => {
                let log = result::get_program_log(prog)
                    .map(|l| {
                        let bytes: Vec<u8> = l.iter().map(|&c| c as u8).collect();
                        String::from_utf8_lossy(&bytes)
                            .trim_end_matches('\0')
                            .to_string()
                    })
                    .unwrap_or_default();
                Err(failed(format!("{e}: {log}")))
            }
            Ok(()) => {
                let mut size = 0usize;
                sys::nvrtcGetCUBINSize(prog, &mut size)
                    .result()
                    .map_err(|e| failed(e.to_string()))
                    .and_then(|()| {
                        let mut buf = vec![0u8; size];
                        sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast())
                            .result()
                            .map(|()| buf)
                            .map_err(|e| failed(e.to_string()))
                    })
            }
        };
        let _ = result::destroy_program(prog);
        out
    }?;
    if cubin.len() < 4 || cubin[..4] != *b"\x7fELF" {
        return Err(failed("NVRTC returned no cubin".into()));
    }
    Ok(cubin)
}

/// The cached cubin for `arch`, if any.
pub fn cached(arch: &str) -> Option<(PathBuf, Vec<u8>)> {
    let path = cache_dir()?.join(cache_key(arch));
    let bytes = std::fs::read(&path).ok()?;
    Some((path, bytes))
}

/// Compiles the kernels for `arch` and stores them in the cache (a cache
/// that cannot be written only costs the next start a compile).
pub fn compile_and_cache(arch: &str) -> Result<Vec<u8>, CudaError> {
    let started = std::time::Instant::now();
    let cubin = compile(arch)?;
    tracing::info!(
        arch,
        seconds = started.elapsed().as_secs_f64(),
        "kernels compiled"
    );
    if let Some(dir) = cache_dir() {
        store(&dir, &cache_key(arch), &cubin);
    }
    Ok(cubin)
}

/// Writes `cubin` into the cache atomically; failures are logged, not fatal.
pub fn store(dir: &Path, key: &str, cubin: &[u8]) {
    let tmp = dir.join(format!(".{key}.{}", std::process::id()));
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, cubin))
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
        assert_ne!(cache_key("sm_80"), cache_key("sm_90"));
        assert!(cache_key("sm_90").ends_with("-sm_90.cubin"));
        assert_eq!(arch_for(9, 0), "sm_90");
    }
}
