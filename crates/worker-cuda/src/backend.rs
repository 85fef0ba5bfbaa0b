//! [`CudaBackend`]: the [`Backend`] ops as kernel launches on one stream.

use crate::compile;
use crate::device::{self, DeviceFacts};
use crate::error::CudaError;
use crate::kernels::{self, Kernels, per_element, per_row};
use crate::kv::CudaKv;
use crate::memory::{self, Counted, Counter, driver_error};
use crate::weight::{CudaWeight, DeviceMatrix, type_code};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaStream, DevicePtr, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg,
};
use std::sync::{Arc, Mutex, MutexGuard};
use worker_compute::{
    Activation, AttnParams, Backend, BackendInfo, BackendKind, ComputeError, GpuInfo, KvSpec,
    Result, RopeParams, RopeStyle, TokenPos, WeightSource,
};
use worker_gguf::dequantize;

/// Host arrays staged on the device for a launch (token positions, ids).
#[derive(Debug, Default)]
pub(crate) struct Staging {
    tokens: Vec<TokenPos>,
    pub(crate) seq: Option<Counted<i32>>,
    pub(crate) pos: Option<Counted<i32>>,
    pub(crate) ints: Option<Counted<i32>>,
    pub(crate) floats: Option<Counted<f32>>,
    /// What `floats` holds (RoPE frequency factors), so they are copied
    /// once rather than per layer.
    floats_host: Vec<f32>,
    /// The graph epoch the cached positions belong to.
    epoch: u64,
    /// The graph epoch the cached RoPE factors belong to.
    floats_epoch: u64,
    /// Token ids chosen on the device.
    pub(crate) ids_out: Option<Counted<i32>>,
    /// Temperatures and uniform numbers of a draw, one per row.
    pub(crate) draw_t: Option<Counted<f32>>,
    pub(crate) draw_u: Option<Counted<f32>>,
    /// Top-k sort keys: two halves, one per pass in turn.
    pub(crate) topk: Option<Counted<u64>>,
    pub(crate) scratch: Option<Counted<f32>>,
    /// Split attention's partial results.
    pub(crate) attn_part: Option<Counted<f32>>,
    /// Per-row multipliers of `scale_rows`.
    pub(crate) row_scales: Option<Counted<f32>>,
    /// Activations quantized to 8 bits for `mm_q8`: values, and per 32 a
    /// scale and a sum.
    pub(crate) q8: Option<(Counted<i8>, Counted<f32>, Counted<i32>)>,
}

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
    staging: Mutex<Staging>,
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

    pub(crate) fn staging(&self) -> MutexGuard<'_, Staging> {
        self.staging.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Copies `host` into `slot`, growing it when too small.
    pub(crate) fn stage<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        slot: &mut Option<Counted<T>>,
        host: &[T],
    ) -> Result<()> {
        if slot.as_ref().is_none_or(|s| s.data.len() < host.len()) {
            // Allocations are not recorded: run what was.
            self.flush()?;
            *slot = None;
            *slot = Some(memory::alloc(
                &self.stream,
                &self.counter,
                host.len().next_power_of_two(),
                "staging",
            )?);
        }
        if let Some(s) = slot.as_mut()
            && !host.is_empty()
        {
            // (The engine drives a backend from one thread, so no capture
            // can begin between this check and the upload.)
            if self.capturing() {
                // SAFETY: T is plain data (i32, f32): its bytes are its value.
                let bytes = unsafe {
                    std::slice::from_raw_parts(
                        host.as_ptr().cast::<u8>(),
                        std::mem::size_of_val(host),
                    )
                };
                let (dst, _sync) = s.data.device_ptr(&self.stream);
                if self.capture_upload(dst, bytes)? {
                    return Ok(());
                }
                // The arena is full: run what was recorded, copy as usual.
                self.flush()?;
            }
            let mut view = s.data.slice_mut(0..host.len());
            self.stream
                .memcpy_htod(host, &mut view)
                .map_err(|e| driver_error(e, "a host-to-device copy", 0))?;
        }
        Ok(())
    }

    /// Puts the batch's sequences and positions on the device (skipped when
    /// they are those of the previous op).
    pub(crate) fn stage_tokens(&self, st: &mut Staging, tokens: &[TokenPos]) -> Result<()> {
        let epoch = self.graph_epoch.load(std::sync::atomic::Ordering::Relaxed);
        if st.tokens == tokens && st.seq.is_some() && st.epoch == epoch {
            return Ok(());
        }
        st.epoch = epoch;
        let seq: Vec<i32> = tokens.iter().map(|t| t.seq as i32).collect();
        let pos: Vec<i32> = tokens.iter().map(|t| t.pos as i32).collect();
        st.tokens.clear();
        self.stage(&mut st.seq, &seq)?;
        self.stage(&mut st.pos, &pos)?;
        st.tokens.extend_from_slice(tokens);
        Ok(())
    }

    /// Sizes the per-batch staging arrays (positions, ids, chosen ids) for
    /// batches of up to `max_batch` tokens, so serving does not allocate
    /// them again as batches grow.
    pub(crate) fn reserve_staging(&self, max_batch: usize) -> Result<()> {
        let cap = max_batch.max(1).next_power_of_two();
        self.flush()?;
        let mut st = self.staging();
        let st = &mut *st;
        for slot in [&mut st.seq, &mut st.pos, &mut st.ints, &mut st.ids_out] {
            if slot.as_ref().is_none_or(|s| s.data.len() < cap) {
                *slot = None;
                *slot = Some(memory::alloc(&self.stream, &self.counter, cap, "staging")?);
            }
        }
        // Cached staged positions may have been in a replaced buffer.
        st.tokens.clear();
        if self.q8_decode {
            let cols = self.max_cols.load(std::sync::atomic::Ordering::Relaxed);
            self.q8_staging(st, crate::matmul::Q8_CHUNK * cols)?;
        }
        Ok(())
    }

    /// `Staging::q8` for at least `len` activations.
    pub(crate) fn q8_staging<'a>(
        &self,
        st: &'a mut Staging,
        len: usize,
    ) -> Result<&'a mut (Counted<i8>, Counted<f32>, Counted<i32>)> {
        let len = len.next_multiple_of(32).max(32);
        if st.q8.as_ref().is_none_or(|(q, _, _)| q.data.len() < len) {
            self.flush()?;
            st.q8 = None;
            st.q8 = Some((
                memory::alloc(&self.stream, &self.counter, len, "8-bit activations")?,
                memory::alloc(&self.stream, &self.counter, len / 32, "8-bit activations")?,
                memory::alloc(&self.stream, &self.counter, len / 32, "8-bit activations")?,
            ));
        }
        st.q8
            .as_mut()
            .ok_or_else(|| ComputeError::Device("staging".into()))
    }

    /// A scratch area of at least `len` floats.
    pub(crate) fn scratch<'a>(
        &self,
        st: &'a mut Staging,
        len: usize,
    ) -> Result<&'a mut Counted<f32>> {
        if st.scratch.as_ref().is_none_or(|s| s.data.len() < len) {
            self.flush()?;
            st.scratch = None;
            st.scratch = Some(memory::alloc(&self.stream, &self.counter, len, "scratch")?);
        }
        st.scratch
            .as_mut()
            .ok_or_else(|| ComputeError::Device("scratch".into()))
    }

    pub(crate) fn elementwise<'a>(
        &'a self,
        f: &'a cudarc::driver::CudaFunction,
        n: usize,
    ) -> (LaunchArgs<'a>, LaunchConfig) {
        (self.stream.launch_builder(f), per_element(n))
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
        self.flush()?;
        let t = src
            .file
            .tensor(&src.name)
            .map_err(|e| ComputeError::Shape(e.to_string()))?;
        let ty = t.info.ty;
        let unsupported = || ComputeError::UnsupportedType {
            name: src.name.clone(),
            ty,
            backend: "cuda",
        };
        if src.is_vector() {
            // Norms and biases (one expert's, of a stack) as f32.
            let x = src.extent(t.info.n_bytes)?;
            let bytes = t.data.get(x.offset..x.offset + x.len).ok_or_else(|| {
                shape(format!(
                    "tensor {:?}: its data is shorter than its shape",
                    src.name
                ))
            })?;
            let mut v = vec![0f32; x.cols];
            dequantize(ty, bytes, &mut v).map_err(|_| unsupported())?;
            return Ok(CudaWeight::Vector(memory::upload(
                &self.stream,
                &self.counter,
                &v,
                "a weight",
            )?));
        }
        let code = type_code(ty).ok_or_else(unsupported)?;
        let x = src.extent(t.info.n_bytes)?;
        let (rows, cols) = (x.rows, x.cols);
        let data = t.data.get(x.offset..x.offset + x.len).ok_or_else(|| {
            shape(format!(
                "tensor {:?}: its data is shorter than its shape",
                src.name
            ))
        })?;
        if !cols.is_multiple_of(32) || rows == 0 {
            return Err(shape(format!(
                "tensor {:?}: rows of {cols} values are not whole groups of 32",
                src.name
            )));
        }
        self.max_cols
            .fetch_max(cols, std::sync::atomic::Ordering::Relaxed);
        Ok(CudaWeight::Matrix(DeviceMatrix {
            data: memory::upload(&self.stream, &self.counter, data, "a weight")?,
            ty,
            code,
            rows,
            cols,
            row_bytes: data.len() / rows,
        }))
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
        let DeviceMatrix {
            data,
            code,
            rows,
            cols,
            row_bytes,
            ..
        } = table.matrix("get_rows")?;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= *rows) {
            return Err(shape(format!(
                "token id {bad} beyond {rows} embedding rows"
            )));
        }
        need(out, ids.len() * cols, "get_rows")?;
        let ids: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let mut st = self.staging();
        self.stage(&mut st.ints, &ids)?;
        let Some(dev_ids) = st.ints.as_ref() else {
            return Err(ComputeError::Device("staging".into()));
        };
        let (rb, c, n) = (*row_bytes as i64, i32_of(*cols, "cols")?, ids.len() as i32);
        let mut a = self.stream.launch_builder(&self.k.get_rows);
        a.arg(code)
            .arg(&data.data)
            .arg(&rb)
            .arg(&c)
            .arg(&dev_ids.data)
            .arg(&n)
            .arg(&mut out.0.data);
        self.launch(
            a,
            per_element(ids.len() * (cols / 32)),
            "an embedding lookup",
        )
    }

    fn matmul(&self, w: &CudaWeight, x: &CudaBuf, n: usize, out: &mut CudaBuf) -> Result<()> {
        self.matmul_impl(w, x, n, out)
    }

    fn add_bias(&self, x: &mut CudaBuf, n: usize, dim: usize, bias: &CudaWeight) -> Result<()> {
        let b = bias.vector(dim, "a bias")?;
        need(x, n * dim, "add_bias")?;
        let (nn, d) = (n as i64, i32_of(dim, "dim")?);
        let (mut a, cfg) = self.elementwise(&self.k.add_bias, n * dim);
        a.arg(&mut x.0.data).arg(&b.data).arg(&nn).arg(&d);
        self.launch(a, cfg, "a bias add")
    }

    fn rms_norm(
        &self,
        x: &mut CudaBuf,
        rows: usize,
        dim: usize,
        w: Option<&CudaWeight>,
        eps: f32,
    ) -> Result<()> {
        need(x, rows * dim, "rms_norm")?;
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let d = i32_of(dim, "dim")?;
        let null = 0u64;
        let mut a = self.stream.launch_builder(&self.k.rms_norm);
        a.arg(&mut x.0.data).arg(&d);
        match w {
            Some(w) => a.arg(&w.vector(dim, "a norm weight")?.data),
            None => a.arg(&null),
        };
        a.arg(&eps);
        self.launch(a, per_row(rows, 256), "an RMS norm")
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
        need(x, rows * dim, "layer_norm")?;
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let w = w.vector(dim, "a norm weight")?;
        let d = i32_of(dim, "dim")?;
        let null = 0u64;
        let mut a = self.stream.launch_builder(&self.k.layer_norm);
        a.arg(&mut x.0.data).arg(&d).arg(&w.data);
        match b {
            Some(b) => a.arg(&b.vector(dim, "a norm bias")?.data),
            None => a.arg(&null),
        };
        a.arg(&eps);
        self.launch(a, per_row(rows, 256), "a layer norm")
    }

    fn rope(
        &self,
        x: &mut CudaBuf,
        tokens: &[TokenPos],
        n_head: usize,
        head_dim: usize,
        p: &RopeParams,
    ) -> Result<()> {
        need(x, tokens.len() * n_head * head_dim, "rope")?;
        let n_rot = p.n_rot.min(head_dim);
        if n_rot < 2 || tokens.is_empty() {
            return Ok(());
        }
        // The same f32 factor the CPU backend iterates.
        let theta_scale = p.freq_base.powf(-2.0 / n_rot as f32);
        let mut st = self.staging();
        self.stage_tokens(&mut st, tokens)?;
        if let Some(ff) = &p.freq_factors {
            if ff.len() < n_rot / 2 {
                return Err(shape(format!(
                    "{} RoPE factors, {} needed",
                    ff.len(),
                    n_rot / 2
                )));
            }
            // The same factors serve every layer of every step: copied once.
            let epoch = self.graph_epoch.load(std::sync::atomic::Ordering::Relaxed);
            if st.floats_host != *ff || st.floats.is_none() || st.floats_epoch != epoch {
                st.floats_host.clear();
                self.stage(&mut st.floats, ff)?;
                st.floats_host.extend_from_slice(ff);
                st.floats_epoch = epoch;
            }
        }
        let (Some(pos), floats) = (st.pos.as_ref(), st.floats.as_ref()) else {
            return Err(ComputeError::Device("staging".into()));
        };
        let (nh, hd, nr) = (
            i32_of(n_head, "heads")?,
            i32_of(head_dim, "head_dim")?,
            n_rot as i32,
        );
        let neox = i32::from(p.style == RopeStyle::Neox);
        let null = 0u64;
        let mut a = self.stream.launch_builder(&self.k.rope);
        a.arg(&mut x.0.data)
            .arg(&pos.data)
            .arg(&nh)
            .arg(&hd)
            .arg(&nr)
            .arg(&neox)
            .arg(&theta_scale)
            .arg(&p.freq_scale);
        match (&p.freq_factors, floats) {
            (Some(_), Some(f)) => a.arg(&f.data),
            _ => a.arg(&null),
        };
        let [corr_low, corr_high] = p.corr_dims;
        a.arg(&p.ext_factor)
            .arg(&corr_low)
            .arg(&corr_high)
            .arg(&p.attn_factor);
        let cfg = LaunchConfig {
            grid_dim: (tokens.len() as u32, n_head as u32, 1),
            block_dim: ((n_rot / 2) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch(a, cfg, "RoPE")
    }

    fn scale(&self, x: &mut CudaBuf, len: usize, s: f32) -> Result<()> {
        need(x, len, "scale")?;
        let n = len as i64;
        let (mut a, cfg) = self.elementwise(&self.k.scale_f32, len);
        a.arg(&mut x.0.data).arg(&n).arg(&s);
        self.launch(a, cfg, "a scale")
    }

    fn add(&self, a_buf: &mut CudaBuf, b: &CudaBuf, len: usize) -> Result<()> {
        need(a_buf, len, "add")?;
        need(b, len, "add")?;
        let n = len as i64;
        let (mut a, cfg) = self.elementwise(&self.k.add_f32, len);
        a.arg(&mut a_buf.0.data).arg(&b.0.data).arg(&n);
        self.launch(a, cfg, "an add")
    }

    fn glu(&self, gate: &mut CudaBuf, up: &CudaBuf, len: usize, act: Activation) -> Result<()> {
        need(gate, len, "glu")?;
        need(up, len, "glu")?;
        let (n, code) = (len as i64, act_code(act));
        let (mut a, cfg) = self.elementwise(&self.k.glu_f32, len);
        a.arg(&mut gate.0.data).arg(&up.0.data).arg(&n).arg(&code);
        self.launch(a, cfg, "a gated activation")
    }

    fn act(&self, x: &mut CudaBuf, len: usize, act: Activation) -> Result<()> {
        need(x, len, "act")?;
        let (n, code) = (len as i64, act_code(act));
        let (mut a, cfg) = self.elementwise(&self.k.act_f32, len);
        a.arg(&mut x.0.data).arg(&n).arg(&code);
        self.launch(a, cfg, "an activation")
    }

    fn softcap(&self, x: &mut CudaBuf, len: usize, cap: f32) -> Result<()> {
        need(x, len, "softcap")?;
        let n = len as i64;
        let (mut a, cfg) = self.elementwise(&self.k.softcap_f32, len);
        a.arg(&mut x.0.data).arg(&n).arg(&cap);
        self.launch(a, cfg, "a soft cap")
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

    fn kv_clear(&self, _kv: &mut CudaKv, _seq: usize) -> Result<()> {
        // As on the CPU: a request writes every position before reading it.
        Ok(())
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
}

/// The activation's code in the kernels (`act_f32`, `glu_f32`).
pub fn act_code(act: Activation) -> i32 {
    match act {
        Activation::Silu => 0,
        Activation::Gelu => 1,
        Activation::SwigluOai => 2,
    }
}

/// The kernel names, for the compile check.
pub fn kernel_names() -> &'static [&'static str] {
    kernels::NAMES
}
