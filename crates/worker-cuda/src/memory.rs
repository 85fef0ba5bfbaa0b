//! Device allocations, counted.
//!
//! Every buffer the backend allocates goes through [`Counter::alloc`] and
//! carries a [`Charge`] that gives its bytes back when it is dropped, so
//! the backend's reported memory is exactly what it holds, and a request
//! that fails half-way leaves nothing behind.

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, DriverError, ValidAsZeroBits};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use worker_compute::ComputeError;

/// Bytes held on the device.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The bytes of one allocation, returned on drop.
#[derive(Debug)]
pub struct Charge {
    counter: Arc<Counter>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.counter.0.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A device array with its charge.
#[derive(Debug)]
pub struct Counted<T> {
    /// The memory.
    pub data: CudaSlice<T>,
    _charge: Charge,
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        // The array is freed right after this (its field drops next), with
        // a driver call that needs the context current on this thread. Set
        // it directly: `bind_to_thread` first returns (and clears) any error
        // an earlier free recorded, and would then skip the binding.
        // SAFETY: the context outlives its arrays (each holds an Arc to it).
        let _ = unsafe { cudarc::driver::result::ctx::set_current(self.data.context().cu_ctx()) };
    }
}

/// A zeroed device array of `len` elements, counted in `counter`.
pub fn alloc<T: DeviceRepr + ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    counter: &Arc<Counter>,
    len: usize,
    what: &'static str,
) -> Result<Counted<T>, ComputeError> {
    let bytes = (len.max(1) * std::mem::size_of::<T>()) as u64;
    let data = stream.alloc_zeros::<T>(len.max(1));
    counted(
        counter,
        data.map_err(|e| driver_error(e, what, bytes))?,
        bytes,
    )
}

/// A device copy of `host`, counted in `counter`.
pub fn upload<T: DeviceRepr>(
    stream: &Arc<CudaStream>,
    counter: &Arc<Counter>,
    host: &[T],
    what: &'static str,
) -> Result<Counted<T>, ComputeError> {
    if host.is_empty() {
        // The driver refuses a zero-byte allocation.
        return alloc_uninit_one(stream, counter, what);
    }
    let bytes = std::mem::size_of_val(host) as u64;
    let data = stream.clone_htod(host);
    counted(
        counter,
        data.map_err(|e| driver_error(e, what, bytes))?,
        bytes,
    )
}

/// One element, for an empty upload (never read).
fn alloc_uninit_one<T: DeviceRepr>(
    stream: &Arc<CudaStream>,
    counter: &Arc<Counter>,
    what: &'static str,
) -> Result<Counted<T>, ComputeError> {
    let bytes = std::mem::size_of::<T>() as u64;
    // SAFETY: the element is never read before a kernel or copy writes it.
    let data = unsafe { stream.alloc::<T>(1) };
    counted(
        counter,
        data.map_err(|e| driver_error(e, what, bytes))?,
        bytes,
    )
}

fn counted<T>(
    counter: &Arc<Counter>,
    data: CudaSlice<T>,
    bytes: u64,
) -> Result<Counted<T>, ComputeError> {
    counter.0.fetch_add(bytes, Ordering::Relaxed);
    Ok(Counted {
        data,
        _charge: Charge {
            counter: counter.clone(),
            bytes,
        },
    })
}

/// A driver error as a compute error: out-of-memory keeps its own variant
/// (the worker answers it with `VRAM_OOM` and goes on serving).
pub fn driver_error(e: DriverError, what: &'static str, bytes: u64) -> ComputeError {
    if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        ComputeError::OutOfMemory {
            what,
            need_bytes: bytes,
        }
    } else {
        ComputeError::Device(format!("{what}: {e}"))
    }
}
