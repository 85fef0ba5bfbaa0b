//! The CUDA backend's error type.

/// Why the CUDA backend could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// A CUDA library was not found on the library path.
    #[error("the CUDA {what} library ({lib}) was not found: {hint}; or run with --device cpu")]
    LibraryMissing {
        /// What the library is for.
        what: &'static str,
        /// Its file name stem.
        lib: &'static str,
        /// How to provide it.
        hint: &'static str,
    },
    /// The driver reports no device with this ordinal.
    #[error("no CUDA device {ordinal}: the driver sees {count}")]
    NoDevice {
        /// The requested ordinal.
        ordinal: usize,
        /// Devices present.
        count: usize,
    },
    /// A driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(String),
    /// The kernels did not compile (a bug in the kernel sources, or an
    /// NVRTC too old for the device).
    #[error("NVRTC could not compile the kernels for {arch}: {log}")]
    Compile {
        /// The target architecture, e.g. `compute_90`.
        arch: String,
        /// The compiler log.
        log: String,
    },
    /// The model and its caches need more VRAM than the device has free.
    #[error(
        "the model needs {} MiB of VRAM but the device has {} MiB free; use a smaller model, --ctx-size or --parallel",
        need_bytes >> 20,
        available_bytes >> 20
    )]
    InsufficientVram {
        /// Bytes needed.
        need_bytes: u64,
        /// Bytes free on the device.
        available_bytes: u64,
    },
}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(e.to_string())
    }
}
