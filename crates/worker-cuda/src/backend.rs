//! [`CudaBackend`]: the device, its stream, kernels and cuBLAS, and the
//! [`Backend`] ops, each a kernel launch on that one stream. The ops' bodies
//! live beside it by kind: `weight.rs` (uploads), `rows.rs`, `matmul.rs`,
//! `norm.rs`, `rope.rs`, `elementwise.rs`, `attention.rs`, `recurrent.rs`,
//! `select.rs`, and the host arrays they stage in `staging.rs`.

use crate::compile;
use crate::device::{self, DeviceFacts};
use crate::error::CudaError;
use crate::kernels::{self, Kernels};
use crate::kv::CudaKv;
use crate::memory::{self, Counted, Counter, driver_error};
use crate::recurrent::DeltaBufs;
use crate::staging::Staging;
use crate::weight::CudaWeight;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaStream, LaunchArgs, LaunchConfig};
use std::sync::{Arc, Mutex};
use worker_compute::{
    Activation, AttnParams, Backend, BackendInfo, BackendKind, ComputeError, DeltaNetParams,
    GpuInfo, KvSpec, Result, RopeParams, TokenPos, WeightSource,
};

/// The CUDA backend of one device.
pub struct CudaBackend {
    /// Decode steps recorded as CUDA graphs (`LLORCH_CUDA_GRAPHS=1`).
    /// First, so its graphs and pinned memory go while the context lives.
    pub(crate) graphs: Option<Mutex<crate::graph::Graphs>>,
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) k: Kernels,
    pub(crate) blas: Option<CudaBlas>,
    facts: DeviceFacts,
    pub(crate) counter: Arc<Counter>,
    pub(crate) staging: Mutex<Staging>,
    /// Decode products with 8-bit activations (`LLORCH_CUDA_DECODE=q8`).
    pub(crate) q8_decode: bool,
    /// The widest weight matrix uploaded, for sizing `Staging::q8`.
    pub(crate) max_cols: std::sync::atomic::AtomicUsize,
    /// Bumped when a recording is thrown away: uploads cached as done
    /// (positions, RoPE factors) before it may never have run.
    pub(crate) graph_epoch: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("facts", &self.facts)
            .field("cublas", &self.blas.is_some())
            .finish()
    }
}

/// A device buffer of f32 activations.
#[derive(Debug)]
pub struct CudaBuf(pub(crate) Counted<f32>);

impl CudaBuf {
    pub(crate) fn len(&self) -> usize {
        self.0.data.len()
    }
}

/// cuBLAS on `stream`, when the library is there and starts.
fn blas_on(stream: &Arc<CudaStream>) -> Option<CudaBlas> {
    if !device::cublas_present() {
        tracing::info!("cuBLAS not found; large batches use the built-in kernels");
        return None;
    }
    match CudaBlas::new(stream.clone()) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(error = %e, "cuBLAS did not start; large batches use the built-in kernels");
            None
        }
    }
}

pub(crate) fn shape(msg: String) -> ComputeError {
    ComputeError::Shape(msg)
}

pub(crate) fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| shape(format!("{what} {v} does not fit a kernel argument")))
}

pub(crate) fn need(buf: &CudaBuf, len: usize, what: &str) -> Result<()> {
    if buf.len() < len {
        return Err(shape(format!(
            "{what}: buffer of {} values, {len} needed",
            buf.len()
        )));
    }
    Ok(())
}

impl CudaBackend {
    /// Opens device `ordinal`, loads the kernels (compiled with NVRTC on
    /// first use, then from the disk cache) and cuBLAS when present.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        let (ctx, facts) = device::open(ordinal)?;
        // One stream runs every op in order, so the per-buffer events cudarc
        // records for multi-stream safety are pure overhead.
        // SAFETY: no buffer of this context is ever used on another stream.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = facts.compute_capability;
        let k = Kernels::load(&ctx, &compile::arch_for(major, minor))?;
        let stream = ctx.default_stream();
        let blas = blas_on(&stream);
        let backend = CudaBackend {
            ctx,
            stream,
            k,
            blas,
            facts,
            counter: Arc::new(Counter::default()),
            staging: Mutex::new(Staging::default()),
            q8_decode: std::env::var("LLORCH_CUDA_DECODE").is_ok_and(|v| v == "q8"),
            max_cols: std::sync::atomic::AtomicUsize::new(0),
            graphs: None,
            graph_epoch: std::sync::atomic::AtomicU64::new(0),
        };
        Ok(backend.with_graphs(std::env::var("LLORCH_CUDA_GRAPHS").is_ok_and(|v| v == "1")))
    }

    /// Whether decode steps are recorded and replayed as CUDA graphs; the
    /// default comes from `LLORCH_CUDA_GRAPHS=1`. Call it before anything
    /// is allocated: recording needs a stream of its own (the legacy
    /// default stream cannot be captured), and the backend moves to one.
    pub fn with_graphs(mut self, on: bool) -> Self {
        if !on {
            self.graphs = None;
            return self;
        }
        if self.stream.cu_stream().is_null() {
            match self.ctx.new_stream() {
                Ok(stream) => {
                    self.blas = blas_on(&stream);
                    self.stream = stream;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no stream for CUDA graphs; running without them");
                    return self;
                }
            }
        }
        self.graphs = Some(Default::default());
        self
    }

    /// Whether decode products quantize the activations to 8 bits and use
    /// integer dot products (Q4_0, Q5_0, Q8_0, Q3_K, Q4_K, Q6_K, IQ4_NL,
    /// IQ4_XS and MXFP4 weights); the default comes from
    /// `LLORCH_CUDA_DECODE=q8`.
    pub fn with_q8_decode(mut self, on: bool) -> Self {
        self.q8_decode = on;
        self
    }

    /// The device.
    pub fn facts(&self) -> &DeviceFacts {
        &self.facts
    }

    /// Bytes this backend holds on the device (weights, buffers, caches).
    pub fn allocated_bytes(&self) -> u64 {
        self.counter.bytes()
    }

    /// Free and total VRAM now.
    pub fn mem_info(&self) -> Result<(u64, u64), CudaError> {
        device::mem_info(&self.ctx)
    }

    /// Waits for every queued op; reports a fault of any of them.
    pub fn synchronize(&self) -> Result<()> {
        self.flush()?;
        self.stream
            .synchronize()
            .map_err(|e| driver_error(e, "a kernel", 0))?;
        // A failed free (recorded by cudarc when an array dropped) surfaces
        // here rather than as the error of some later, unrelated op.
        self.ctx
            .check_err()
            .map_err(|e| driver_error(e, "freeing device memory", 0))
    }

    pub(crate) fn launch(
        &self,
        mut args: LaunchArgs<'_>,
        cfg: LaunchConfig,
        what: &'static str,
    ) -> Result<()> {
        // SAFETY: every kernel's arguments are pushed in the order and with
        // the types of its CUDA signature, and the sizes were checked
        // against the buffers before the launch.
        unsafe { args.launch(cfg) }
            .map(|_| ())
            .map_err(|e| driver_error(e, what, 0))
    }
}

impl Backend for CudaBackend {
    type Weight = CudaWeight;
    type Buf = CudaBuf;
    type Kv = CudaKv;

    fn info(&self) -> BackendInfo {
        let f = &self.facts;
        BackendInfo {
            kind: BackendKind::Cuda,
            device: format!(
                "{} (cuda:{}, compute {}.{}, {} MiB)",
                f.name,
                f.ordinal,
                f.compute_capability.0,
                f.compute_capability.1,
                f.vram_total_bytes >> 20
            ),
            memory_architecture: "vram-only",
            gpu: Some(GpuInfo {
                name: f.name.clone(),
                compute_capability: format!(
                    "{}.{}",
                    f.compute_capability.0, f.compute_capability.1
                ),
                vram_total_bytes: f.vram_total_bytes,
            }),
        }
    }

    fn allocated_bytes(&self) -> Option<u64> {
        Some(self.counter.bytes())
    }

    fn weight(&self, src: WeightSource) -> Result<CudaWeight> {
        self.upload_weight(src)
    }

    fn buf(&self, len: usize) -> Result<CudaBuf> {
        self.flush()?;
        Ok(CudaBuf(memory::alloc(
            &self.stream,
            &self.counter,
            len,
            "an activation buffer",
        )?))
    }

    fn read(&self, buf: &CudaBuf, out: &mut [f32]) -> Result<()> {
        self.flush()?;
        need(buf, out.len(), "read")?;
        if out.is_empty() {
            return Ok(());
        }
        let view = buf.0.data.slice(0..out.len());
        self.stream
            .memcpy_dtoh(&view, out)
            .map_err(|e| driver_error(e, "a device-to-host copy", 0))?;
        self.synchronize()
    }

    fn write(&self, buf: &mut CudaBuf, data: &[f32]) -> Result<()> {
        self.flush()?;
        need(buf, data.len(), "write")?;
        if data.is_empty() {
            return Ok(());
        }
        let mut view = buf.0.data.slice_mut(0..data.len());
        self.stream
            .memcpy_htod(data, &mut view)
            .map_err(|e| driver_error(e, "a host-to-device copy", 0))
    }

    fn get_rows(&self, table: &CudaWeight, ids: &[u32], out: &mut CudaBuf) -> Result<()> {
        self.get_rows_impl(table, ids, out)
    }

    fn matmul(&self, w: &CudaWeight, x: &CudaBuf, n: usize, out: &mut CudaBuf) -> Result<()> {
        self.matmul_impl(w, x, n, out)
    }

    fn add_bias(&self, x: &mut CudaBuf, n: usize, dim: usize, bias: &CudaWeight) -> Result<()> {
        self.add_bias_impl(x, n, dim, bias)
    }

    fn rms_norm(
        &self,
        x: &mut CudaBuf,
        rows: usize,
        dim: usize,
        w: Option<&CudaWeight>,
        eps: f32,
    ) -> Result<()> {
        self.rms_norm_impl(x, rows, dim, w, eps)
    }

    fn layer_norm(
        &self,
        x: &mut CudaBuf,
        rows: usize,
        dim: usize,
        w: &CudaWeight,
        b: Option<&CudaWeight>,
        eps: f32,
    ) -> Result<()> {
        self.layer_norm_impl(x, rows, dim, w, b, eps)
    }

    fn rope(
        &self,
        x: &mut CudaBuf,
        tokens: &[TokenPos],
        n_head: usize,
        head_dim: usize,
        p: &RopeParams,
    ) -> Result<()> {
        self.rope_impl(x, tokens, n_head, head_dim, p)
    }

    fn scale(&self, x: &mut CudaBuf, len: usize, s: f32) -> Result<()> {
        self.scale_impl(x, len, s)
    }

    fn add(&self, a: &mut CudaBuf, b: &CudaBuf, len: usize) -> Result<()> {
        self.add_impl(a, b, len)
    }

    fn glu(&self, gate: &mut CudaBuf, up: &CudaBuf, len: usize, act: Activation) -> Result<()> {
        self.glu_impl(gate, up, len, act)
    }

    fn act(&self, x: &mut CudaBuf, len: usize, act: Activation) -> Result<()> {
        self.act_impl(x, len, act)
    }

    fn softcap(&self, x: &mut CudaBuf, len: usize, cap: f32) -> Result<()> {
        self.softcap_impl(x, len, cap)
    }

    fn add_rows(&self, dst: &mut CudaBuf, src: &CudaBuf, rows: &[usize], dim: usize) -> Result<()> {
        self.add_rows_impl(dst, src, rows, dim)
    }

    fn scale_rows(&self, x: &mut CudaBuf, width: usize, factors: &[f32]) -> Result<()> {
        self.scale_rows_impl(x, width, factors)
    }

    fn gather_rows(
        &self,
        src: &CudaBuf,
        rows: &[usize],
        dim: usize,
        dst: &mut CudaBuf,
    ) -> Result<()> {
        self.gather_rows_impl(src, rows, dim, dst)
    }

    fn copy_cols(
        &self,
        src: &CudaBuf,
        n: usize,
        stride: usize,
        col: usize,
        width: usize,
        dst: &mut CudaBuf,
    ) -> Result<()> {
        self.copy_cols_impl(src, n, stride, col, width, dst)
    }

    fn argmax_rows(&self, x: &CudaBuf, rows: usize, dim: usize, out: &mut Vec<u32>) -> Result<()> {
        self.argmax_impl(x, rows, dim, out)
    }

    fn draw_rows(
        &self,
        x: &CudaBuf,
        rows: usize,
        dim: usize,
        temps: &[f32],
        us: &[f32],
        out: &mut Vec<u32>,
    ) -> Result<()> {
        self.draw_impl(x, rows, dim, temps, us, out)
    }

    fn top_k_rows(
        &self,
        x: &CudaBuf,
        rows: usize,
        dim: usize,
        k: usize,
        out: &mut Vec<(u32, f32)>,
    ) -> Result<()> {
        self.top_k_impl(x, rows, dim, k, out)
    }

    fn kv(&self, spec: &KvSpec) -> Result<CudaKv> {
        self.flush()?;
        self.kv_impl(spec)
    }

    fn begin_step(&self, n_tokens: usize) -> Result<()> {
        self.begin_step_impl(n_tokens)
    }

    fn end_step(&self) -> Result<()> {
        self.flush()
    }

    fn kv_clear(&self, kv: &mut CudaKv, seq: usize) -> Result<()> {
        // As on the CPU: a request writes every position before reading it,
        // so no K/V row is cleared; recurrent states start over.
        self.clear_states(kv, seq)
    }

    fn ssm_conv(
        &self,
        kv: &mut CudaKv,
        layer: usize,
        tokens: &[TokenPos],
        x: &CudaBuf,
        w: &CudaWeight,
        out: &mut CudaBuf,
    ) -> Result<()> {
        self.ssm_conv_impl(kv, layer, tokens, x, w, out)
    }

    fn delta_net(
        &self,
        kv: &mut CudaKv,
        layer: usize,
        tokens: &[TokenPos],
        qkv: &CudaBuf,
        alpha: &CudaBuf,
        beta: &CudaBuf,
        a: &CudaWeight,
        p: &DeltaNetParams,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let x = DeltaBufs {
            qkv,
            alpha,
            beta,
            a,
        };
        self.delta_net_impl(kv, layer, tokens, &x, p, out)
    }

    fn state_save(&self, kv: &mut CudaKv, seq: usize) -> Result<()> {
        self.keep_states(kv, seq, true)
    }

    fn state_restore(&self, kv: &mut CudaKv, seq: usize) -> Result<()> {
        self.keep_states(kv, seq, false)
    }

    fn attention(
        &self,
        kv: &mut CudaKv,
        layer: usize,
        tokens: &[TokenPos],
        q: &CudaBuf,
        k: &CudaBuf,
        v: &CudaBuf,
        p: &AttnParams,
        sinks: Option<&CudaWeight>,
        out: &mut CudaBuf,
    ) -> Result<()> {
        self.attention_impl(kv, layer, tokens, q, k, v, p, sinks, out)
    }

    fn layered_kv(&self) -> bool {
        true
    }

    fn attention_shared(
        &self,
        kv: &mut CudaKv,
        layer: usize,
        tokens: &[TokenPos],
        q: &CudaBuf,
        p: &AttnParams,
        sinks: Option<&CudaWeight>,
        out: &mut CudaBuf,
    ) -> Result<()> {
        // Over the rows of the earlier layer `layer` reads, storing nothing.
        self.attention_over(kv, layer, tokens, q, None, p, sinks, out)
    }
}

/// The kernel names, for the compile check.
pub fn kernel_names() -> &'static [&'static str] {
    kernels::NAMES
}
