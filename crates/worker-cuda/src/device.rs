//! Opening a device: the libraries, the context, the facts `/health` shows.

use crate::error::CudaError;
use cudarc::driver::CudaContext;
use std::sync::Arc;

/// What a device is, for `/health`, reports and the fit check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Ordinal.
    pub ordinal: usize,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Total VRAM in bytes.
    pub vram_total_bytes: u64,
    /// Free VRAM in bytes when the device was opened.
    pub vram_free_bytes: u64,
}

/// Whether the driver library can be loaded (no call into it is made).
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether cuBLAS can be loaded.
pub fn cublas_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// Opens device `ordinal`. A missing driver library is a typed error, never
/// the panic cudarc raises when a symbol cannot be loaded.
pub fn open(ordinal: usize) -> Result<(Arc<CudaContext>, DeviceFacts), CudaError> {
    if !driver_present() {
        return Err(CudaError::LibraryMissing {
            what: "driver",
            lib: "libcuda.so",
            hint: "run on a node with the NVIDIA driver and the NVIDIA container runtime (which mounts it into the pod)",
        });
    }
    let count = CudaContext::device_count()?.max(0) as usize;
    if ordinal >= count {
        return Err(CudaError::NoDevice { ordinal, count });
    }
    let ctx = CudaContext::new(ordinal)?;
    let (free, total) = ctx.mem_get_info()?;
    let facts = DeviceFacts {
        ordinal,
        name: ctx.name()?,
        compute_capability: ctx.compute_capability()?,
        vram_total_bytes: total as u64,
        vram_free_bytes: free as u64,
    };
    Ok((ctx, facts))
}

/// Free and total VRAM of an open device.
pub fn mem_info(ctx: &CudaContext) -> Result<(u64, u64), CudaError> {
    let (free, total) = ctx.mem_get_info()?;
    Ok((free as u64, total as u64))
}
