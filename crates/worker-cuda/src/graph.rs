//! CUDA graphs for decode steps (`LLORCH_CUDA_GRAPHS=1`,
//! [`CudaBackend::with_graphs`]): a decode step launches a few hundred small
//! kernels, and recorded as one graph the GPU runs them back to back
//! instead of waiting on the host between them.
//!
//! # How a step is recorded
//!
//! The engine announces each forward pass ([`Backend::begin_step`]) and its
//! end ([`Backend::end_step`], also after an error). For a
//! batch of up to [`MAX_GRAPH_BATCH`] tokens, once [`WARM_STEPS`] steps of
//! that size have run eagerly (so every staging buffer has its final size),
//! the stream starts capturing: the step's kernels are recorded, not run.
//! Host uploads inside the step (token ids, positions) cannot be captured
//! from pageable memory, so they are copied into a pinned arena and
//! recorded as copies from it. The end of the step, or the first operation
//! that cannot be recorded (an allocation, a read-back, a synchronization),
//! ends the capture: the recording becomes, or updates, the executable
//! graph kept for that batch size, which is launched, and the operation
//! then runs as usual. Recording needs a stream of its own (the legacy
//! default stream cannot be captured), so a backend with graphs on runs on
//! one. Updating (`cuGraphExecUpdate`) is much cheaper than
//! instantiating, and succeeds whenever only kernel arguments changed (new
//! positions, a longer context); a new shape (more attention splits) is
//! instantiated once.
//!
//! Any failure while capturing turns graphs off for the rest of the
//! process (with a warning) and fails the step that was being recorded; the
//! steps after it run eagerly.
//!
//! [`Backend::begin_step`]: worker_compute::Backend::begin_step
//! [`Backend::end_step`]: worker_compute::Backend::end_step

use crate::backend::CudaBackend;
use cudarc::driver::sys;
use std::collections::HashMap;
use worker_compute::{ComputeError, Result};

/// The largest batch recorded as a graph (decode steps; prefill batches
/// are long-running kernels where launch gaps do not matter).
pub const MAX_GRAPH_BATCH: usize = 8;
/// Eager steps of a batch size before its steps are recorded.
pub const WARM_STEPS: u32 = 3;
/// Bytes of pinned host memory for the uploads of one recorded step.
const ARENA_BYTES: usize = 1 << 16;
/// Uploads in the arena are 256-byte aligned.
const ARENA_ALIGN: usize = 256;

/// An executable graph, destroyed with its owner.
struct Exec(sys::CUgraphExec);

impl Drop for Exec {
    fn drop(&mut self) {
        // SAFETY: the handle came from cuGraphInstantiateWithFlags and is
        // destroyed once.
        let _ = unsafe { sys::cuGraphExecDestroy(self.0) };
    }
}

/// Page-locked host memory that recorded copies read from when the graph
/// runs.
struct Arena {
    ptr: *mut u8,
    used: usize,
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated with cuMemHostAlloc and freed once.
        let _ = unsafe { sys::cuMemFreeHost(self.ptr.cast()) };
    }
}

/// The state of graph recording of one backend.
#[derive(Default)]
pub(crate) struct Graphs {
    capturing: Option<usize>,
    execs: HashMap<usize, Exec>,
    warm: HashMap<usize, u32>,
    arena: Option<Arena>,
    off: bool,
}

// SAFETY: the raw handles are used only under the backend's mutex, and the
// driver allows them on any thread with the context current.
unsafe impl Send for Graphs {}

impl std::fmt::Debug for Graphs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graphs")
            .field("capturing", &self.capturing)
            .field("graphs", &self.execs.len())
            .field("off", &self.off)
            .finish()
    }
}

fn check(r: sys::CUresult, what: &str) -> Result<()> {
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(ComputeError::Device(format!("CUDA graph: {what}: {r:?}")))
    }
}

impl CudaBackend {
    fn graphs(&self) -> Option<std::sync::MutexGuard<'_, Graphs>> {
        self.graphs
            .as_ref()
            .map(|g| g.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A forward pass of `n` tokens begins: record it when graphs are on,
    /// the batch is a decode batch and its size is warm.
    pub(crate) fn begin_step_impl(&self, n: usize) -> Result<()> {
        // Every step ends its own recording (`end_step`); this only guards
        // against a caller that did not.
        self.flush()?;
        let Some(mut g) = self.graphs() else {
            return Ok(());
        };
        if g.off || n == 0 || n > MAX_GRAPH_BATCH {
            return Ok(());
        }
        // The raw driver calls below need the context on this thread.
        self.ctx
            .bind_to_thread()
            .map_err(|e| crate::memory::driver_error(e, "binding the context", 0))?;
        let warm = g.warm.entry(n).or_insert(0);
        *warm = warm.saturating_add(1);
        if *warm <= WARM_STEPS {
            return Ok(());
        }
        if g.arena.is_none() {
            let mut ptr = std::ptr::null_mut();
            // SAFETY: ptr receives the allocation; the context is current
            // on this thread (bound by every cudarc call).
            let r = unsafe { sys::cuMemHostAlloc(&mut ptr, ARENA_BYTES, 0) };
            if let Err(e) = check(r, "pinned host memory") {
                // Nothing is recorded yet: the step runs eagerly.
                self.turn_off(&mut g, e);
                return Ok(());
            }
            g.arena = Some(Arena {
                ptr: ptr.cast(),
                used: 0,
            });
        }
        if g.arena.as_ref().is_some_and(|a| a.used > 0) {
            // Copies of the last recorded step may still be reading it.
            if let Err(e) = self.stream.synchronize() {
                return Err(crate::memory::driver_error(e, "a synchronization", 0));
            }
        }
        if let Some(a) = g.arena.as_mut() {
            a.used = 0;
        }
        // SAFETY: the stream is this backend's; relaxed mode leaves other
        // threads' driver calls alone.
        let r = unsafe {
            sys::cuStreamBeginCapture_v2(
                self.stream.cu_stream(),
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
            )
        };
        if let Err(e) = check(r, "begin capture") {
            // Nothing is recorded yet: the step runs eagerly.
            self.turn_off(&mut g, e);
            return Ok(());
        }
        g.capturing = Some(n);
        Ok(())
    }

    /// Whether a step is being recorded.
    pub(crate) fn capturing(&self) -> bool {
        self.graphs().is_some_and(|g| g.capturing.is_some())
    }

    /// Records a copy of `bytes` to `dst` through the pinned arena; false
    /// when nothing is being recorded or the arena is full (the caller then
    /// ends the recording and copies as usual).
    pub(crate) fn capture_upload(&self, dst: sys::CUdeviceptr, bytes: &[u8]) -> Result<bool> {
        let Some(mut g) = self.graphs() else {
            return Ok(false);
        };
        if g.capturing.is_none() {
            return Ok(false);
        }
        let Some(a) = g.arena.as_mut() else {
            return Ok(false);
        };
        let start = a.used.next_multiple_of(ARENA_ALIGN);
        if start + bytes.len() > ARENA_BYTES {
            return Ok(false);
        }
        // SAFETY: the arena holds ARENA_BYTES and the range was checked; it
        // is not read until the recorded graph runs.
        let src = unsafe {
            let p = a.ptr.add(start);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            p
        };
        a.used = start + bytes.len();
        // SAFETY: dst is a live device array at least bytes.len() long (the
        // caller's staging slot), src stays valid until the next step.
        let r = unsafe {
            sys::cuMemcpyHtoDAsync_v2(dst, src.cast(), bytes.len(), self.stream.cu_stream())
        };
        if let Err(e) = check(r, "a recorded upload") {
            return Err(self.turn_off(&mut g, e));
        }
        Ok(true)
    }

    /// Ends the recording, if any, and launches it: what was recorded runs
    /// before whatever comes next on the stream. The end of every step.
    pub(crate) fn flush(&self) -> Result<()> {
        let Some(mut g) = self.graphs() else {
            return Ok(());
        };
        let Some(n) = g.capturing.take() else {
            return Ok(());
        };
        if let Err(e) = self.ctx.bind_to_thread() {
            let e = crate::memory::driver_error(e, "binding the context", 0);
            // Still capturing: turning off ends the capture.
            g.capturing = Some(n);
            return Err(self.turn_off(&mut g, e));
        }
        let stream = self.stream.cu_stream();
        let mut graph: sys::CUgraph = std::ptr::null_mut();
        // SAFETY: the stream is capturing (capturing was Some).
        let r = unsafe { sys::cuStreamEndCapture(stream, &mut graph) };
        if let Err(e) = check(r, "end capture") {
            return Err(self.turn_off(&mut g, e));
        }
        let launched = self.update_or_instantiate(&mut g, n, graph);
        // SAFETY: the recording is no longer needed once its executable
        // exists (or failed to).
        let _ = unsafe { sys::cuGraphDestroy(graph) };
        match launched {
            Ok(exec) => {
                // SAFETY: exec is a live executable graph of this context.
                let r = unsafe { sys::cuGraphLaunch(exec, stream) };
                check(r, "launch").map_err(|e| self.turn_off(&mut g, e))
            }
            Err(e) => Err(self.turn_off(&mut g, e)),
        }
    }

    /// The executable graph for batch `n`, updated to `graph` (cheap when
    /// only arguments changed) or instantiated anew.
    fn update_or_instantiate(
        &self,
        g: &mut Graphs,
        n: usize,
        graph: sys::CUgraph,
    ) -> Result<sys::CUgraphExec> {
        if let Some(exec) = g.execs.get(&n) {
            // SAFETY: an all-zero result info is a valid out-parameter.
            let mut info: sys::CUgraphExecUpdateResultInfo = unsafe { std::mem::zeroed() };
            // SAFETY: both handles are live.
            let r = unsafe { sys::cuGraphExecUpdate_v2(exec.0, graph, &mut info) };
            if r == sys::CUresult::CUDA_SUCCESS {
                return Ok(exec.0);
            }
            // Another shape: instantiate below.
        }
        g.execs.remove(&n);
        let mut exec: sys::CUgraphExec = std::ptr::null_mut();
        // SAFETY: graph is a complete recording.
        let r = unsafe { sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0) };
        check(r, "instantiate")?;
        g.execs.insert(n, Exec(exec));
        Ok(exec)
    }

    /// Ends a recording without running it (its step already failed).
    fn discard(&self, g: &mut Graphs) {
        g.capturing = None;
        let mut graph: sys::CUgraph = std::ptr::null_mut();
        // SAFETY: ends this stream's capture; an invalidated capture gives
        // no graph.
        let _ = unsafe { sys::cuStreamEndCapture(self.stream.cu_stream(), &mut graph) };
        if !graph.is_null() {
            // SAFETY: the recording is ours and not used again.
            let _ = unsafe { sys::cuGraphDestroy(graph) };
        }
    }

    /// Turns graphs off for the rest of the process after `e`.
    fn turn_off(&self, g: &mut Graphs, e: ComputeError) -> ComputeError {
        if g.capturing.is_some() {
            self.discard(g);
        }
        // Uploads recorded but never run must not count as done.
        self.graph_epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        g.off = true;
        g.execs.clear();
        tracing::warn!(error = %e, "CUDA graphs failed; decode steps run without them from now on");
        e
    }
}
