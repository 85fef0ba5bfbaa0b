//! The CPU backend.

// Off x86-64 the SIMD kernels are compiled out, and the helpers and
// parameters that only feed them are unused: not a defect there.
#![cfg_attr(
    not(target_arch = "x86_64"),
    allow(dead_code, unused_imports, unused_variables, unused_mut)
)]

mod act_tiles;
mod attention;
mod delta;
mod dot;
#[cfg(target_arch = "x86_64")]
mod dot_avx2;
#[cfg(target_arch = "x86_64")]
mod dot_vnni;
mod kernels;
mod kv;
mod matmul;
mod ops;
mod prepared;
mod qact;
mod scatter;
mod state;
pub mod storage;
#[cfg(target_arch = "x86_64")]
mod tile_avx2;
#[cfg(target_arch = "x86_64")]
mod tile_k4;
#[cfg(target_arch = "x86_64")]
mod tile_lut;
mod weight;

pub use dot::{ActKind, act_kind};
pub use kernels::Kernels;
pub use kv::CpuKv;
pub use matmul::{MatRef, matmul, matmul_shared};
pub use prepared::PreparedActs;
pub use weight::CpuWeight;

use crate::Backend;
use crate::error::{ComputeError, Result};
use crate::types::{
    Activation, AttnParams, BackendInfo, BackendKind, DeltaNetParams, KvSpec, RopeParams, TokenPos,
    WeightSource,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use storage::MatrixBytes;
use worker_gguf::{GgufFile, dequantize};

/// A copied matrix's file (by address) and byte offset in it.
type CopyKey = (usize, usize);

/// A copy made at load: its file, held weakly so the address in the key
/// is not reused while the entry exists, and the copy.
struct CopyEntry {
    _file: Weak<GgufFile>,
    bytes: Weak<MatrixBytes>,
}

/// The CPU backend: a thread pool and the SIMD level found at start.
pub struct CpuBackend {
    pool: rayon::ThreadPool,
    threads: usize,
    avx2: bool,
    /// The matrix-product kernels.
    kernels: Kernels,
    /// Whether weight matrices are copied to huge pages (see [`storage`]).
    huge_pages: bool,
    /// The copies made so far, by file and offset, so a tensor loaded
    /// twice is copied once. Each entry holds a weak reference to its file:
    /// that keeps the file's address from being reused by another file
    /// while the entry exists.
    copies: Mutex<HashMap<CopyKey, CopyEntry>>,
    /// Reused activation conversions (one matrix product runs at a time).
    acts: Mutex<PreparedActs>,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend")
            .field("threads", &self.threads)
            .field("avx2", &self.avx2)
            .finish()
    }
}

/// Whether this CPU runs the AVX2/FMA/F16C build of the kernels.
/// Whether the activation quantizers may use AVX2: the CPU has it and
/// `LLORCH_CPU_SIMD` is not `off` or an unknown value (read once), so that
/// setting really keeps every vector instruction out.
pub(crate) fn quantizers_may_use_avx2() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| {
        let simd = std::env::var("LLORCH_CPU_SIMD").unwrap_or_default();
        matches!(simd.as_str(), "" | "avx2" | "auto") && cpu_has_avx2()
    })
}

/// The first `rows` rows of `dim` of `x`, or a shape error.
fn host_rows(x: &[f32], rows: usize, dim: usize) -> Result<&[f32]> {
    x.get(..rows * dim).ok_or_else(|| {
        ComputeError::Shape(format!(
            "{rows} rows of {dim} from a buffer of {} values",
            x.len()
        ))
    })
}

pub fn cpu_has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl CpuBackend {
    /// A backend with `threads` workers (0: one per core). Set
    /// `LLORCH_CPU_SIMD=off` to force the baseline kernels
    /// (`LLORCH_CPU_SIMD=avx2`: no VNNI), and
    /// `LLORCH_CPU_HUGE_PAGES=off` to keep weights in the file's map even
    /// where huge pages are available (see [`storage`]).
    pub fn new(threads: usize) -> Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("llorch-cpu-{i}"))
            .build()
            .map_err(|e| ComputeError::ThreadPool(e.to_string()))?;
        let off = |var: &str| std::env::var(var).is_ok_and(|v| v == "off");
        let kernels = Kernels::detect();
        Ok(CpuBackend {
            pool,
            threads,
            avx2: kernels != Kernels::Baseline,
            kernels,
            huge_pages: storage::huge_pages_available() && !off("LLORCH_CPU_HUGE_PAGES"),
            copies: Mutex::new(HashMap::new()),
            acts: Mutex::new(PreparedActs::default()),
        })
    }

    /// The bytes of `file[start..start + len]`, shared with an earlier
    /// weight of the same tensor.
    fn matrix_bytes(&self, file: &Arc<GgufFile>, start: usize, len: usize) -> Arc<MatrixBytes> {
        let mut copies = self.copies.lock().unwrap_or_else(|e| e.into_inner());
        let key = (Arc::as_ptr(file) as usize, start);
        if let Some(bytes) = copies.get(&key).and_then(|e| e.bytes.upgrade()) {
            return bytes;
        }
        copies.retain(|_, e| e.bytes.strong_count() > 0);
        let bytes = Arc::new(MatrixBytes::new(file, start, len, self.huge_pages));
        let entry = CopyEntry {
            _file: Arc::downgrade(file),
            bytes: Arc::downgrade(&bytes),
        };
        copies.insert(key, entry);
        bytes
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl Backend for CpuBackend {
    type Weight = CpuWeight;
    type Buf = Vec<f32>;
    type Kv = CpuKv;

    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: BackendKind::Cpu,
            device: format!(
                "cpu ({} threads, {})",
                self.threads,
                match self.kernels {
                    Kernels::Baseline => "baseline",
                    Kernels::Avx2 => "avx2",
                    Kernels::Vnni => "avx2+vnni",
                }
            ),
            memory_architecture: "host",
            gpu: None,
        }
    }

    fn weight(&self, src: WeightSource) -> Result<CpuWeight> {
        let t = src
            .file
            .tensor(&src.name)
            .map_err(|e| ComputeError::Shape(e.to_string()))?;
        let ty = t.info.ty;
        if src.is_vector() {
            return weight::vector(&src, &t);
        }
        if act_kind(ty).is_none() {
            return Err(ComputeError::UnsupportedType {
                name: src.name,
                ty,
                backend: "cpu",
            });
        }
        let x = src.extent(t.info.n_bytes)?;
        let start = (src.file.header().data_offset + t.info.offset) as usize + x.offset;
        Ok(CpuWeight::Matrix {
            bytes: self.matrix_bytes(&src.file, start, x.len),
            ty,
            rows: x.rows,
            cols: x.cols,
        })
    }

    fn buf(&self, len: usize) -> Result<Vec<f32>> {
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| ComputeError::OutOfMemory {
                what: "an activation buffer",
                need_bytes: len as u64 * 4,
            })?;
        v.resize(len, 0.0);
        Ok(v)
    }

    fn read(&self, buf: &Vec<f32>, out: &mut [f32]) -> Result<()> {
        out.copy_from_slice(&buf[..out.len()]);
        Ok(())
    }

    // Token choice straight from the buffer: the defaults would copy the
    // logits first (a device backend's read).
    fn argmax_rows(&self, x: &Vec<f32>, rows: usize, dim: usize, out: &mut Vec<u32>) -> Result<()> {
        let x = host_rows(x, rows, dim)?;
        out.clear();
        out.extend(x.chunks_exact(dim.max(1)).map(crate::draw::argmax));
        Ok(())
    }

    fn top_k_rows(
        &self,
        x: &Vec<f32>,
        rows: usize,
        dim: usize,
        k: usize,
        out: &mut Vec<(u32, f32)>,
    ) -> Result<()> {
        crate::select::top_k_rows(host_rows(x, rows, dim)?, dim, k, out);
        Ok(())
    }

    fn draw_rows(
        &self,
        x: &Vec<f32>,
        rows: usize,
        dim: usize,
        temps: &[f32],
        us: &[f32],
        out: &mut Vec<u32>,
    ) -> Result<()> {
        crate::draw::check_params(rows, temps, us)?;
        crate::draw::draw_rows(host_rows(x, rows, dim)?, dim, temps, us, out)
    }

    fn write(&self, buf: &mut Vec<f32>, data: &[f32]) -> Result<()> {
        buf[..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn get_rows(&self, table: &CpuWeight, ids: &[u32], out: &mut Vec<f32>) -> Result<()> {
        let m = table.mat_or_err()?;
        let row_bytes = m.cols / m.ty.block_size() * m.ty.type_size();
        for (i, &id) in ids.iter().enumerate() {
            let r = id as usize;
            if r >= m.rows {
                return Err(ComputeError::Shape(format!(
                    "token id {id} beyond {} embedding rows",
                    m.rows
                )));
            }
            dequantize(
                m.ty,
                &m.data[r * row_bytes..(r + 1) * row_bytes],
                &mut out[i * m.cols..(i + 1) * m.cols],
            )
            .map_err(|e| ComputeError::Shape(e.to_string()))?;
        }
        Ok(())
    }

    fn matmul(&self, w: &CpuWeight, x: &Vec<f32>, n: usize, out: &mut Vec<f32>) -> Result<()> {
        let m = w.mat_or_err()?;
        let mut guard = self.acts.lock().unwrap_or_else(|e| e.into_inner());
        let acts: &mut PreparedActs = &mut guard;
        self.pool.install(|| {
            matmul(
                m,
                &x[..n * m.cols],
                n,
                acts,
                &mut out[..n * m.rows],
                self.kernels,
            );
        });
        Ok(())
    }

    fn matmul_shared(
        &self,
        ws: &[&CpuWeight],
        x: &Vec<f32>,
        n: usize,
        outs: &mut [&mut Vec<f32>],
    ) -> Result<()> {
        let mats = ws
            .iter()
            .map(|w| w.mat_or_err())
            .collect::<Result<Vec<_>>>()?;
        let cols = mats.first().map_or(0, |m| m.cols);
        if mats.iter().any(|m| m.cols != cols) || mats.len() != outs.len() {
            return Err(ComputeError::Shape(
                "shared products need one input width and one output per weight".into(),
            ));
        }
        let mut outs: Vec<&mut [f32]> = outs
            .iter_mut()
            .zip(&mats)
            .map(|(o, m)| &mut o[..n * m.rows])
            .collect();
        let mut guard = self.acts.lock().unwrap_or_else(|e| e.into_inner());
        let acts: &mut PreparedActs = &mut guard;
        self.pool.install(|| {
            matmul_shared(&mats, &x[..n * cols], n, acts, &mut outs, self.kernels);
        });
        Ok(())
    }

    fn add_bias(&self, x: &mut Vec<f32>, n: usize, dim: usize, bias: &CpuWeight) -> Result<()> {
        let b = bias.vector()?;
        for row in x[..n * dim].chunks_exact_mut(dim) {
            for (v, &bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
        Ok(())
    }

    fn rms_norm(
        &self,
        x: &mut Vec<f32>,
        rows: usize,
        dim: usize,
        w: Option<&CpuWeight>,
        eps: f32,
    ) -> Result<()> {
        let w = w.map(CpuWeight::vector).transpose()?;
        ops::rms_norm(&mut x[..rows * dim], dim, w, eps);
        Ok(())
    }

    fn layer_norm(
        &self,
        x: &mut Vec<f32>,
        rows: usize,
        dim: usize,
        w: &CpuWeight,
        b: Option<&CpuWeight>,
        eps: f32,
    ) -> Result<()> {
        let b = b.map(CpuWeight::vector).transpose()?;
        ops::layer_norm(&mut x[..rows * dim], dim, w.vector()?, b, eps);
        Ok(())
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        tokens: &[TokenPos],
        n_head: usize,
        head_dim: usize,
        p: &RopeParams,
    ) -> Result<()> {
        let width = n_head * head_dim;
        let mut cs = Vec::with_capacity(head_dim / 2);
        for (t, row) in tokens.iter().zip(x.chunks_exact_mut(width)) {
            ops::rope(row, t.pos, n_head, head_dim, p, &mut cs);
        }
        Ok(())
    }

    fn scale(&self, x: &mut Vec<f32>, len: usize, s: f32) -> Result<()> {
        x[..len].iter_mut().for_each(|v| *v *= s);
        Ok(())
    }

    fn add(&self, a: &mut Vec<f32>, b: &Vec<f32>, len: usize) -> Result<()> {
        for (x, &y) in a[..len].iter_mut().zip(&b[..len]) {
            *x += y;
        }
        Ok(())
    }

    fn glu(&self, gate: &mut Vec<f32>, up: &Vec<f32>, len: usize, act: Activation) -> Result<()> {
        ops::glu(&mut gate[..len], &up[..len], act);
        Ok(())
    }

    fn act(&self, x: &mut Vec<f32>, len: usize, act: Activation) -> Result<()> {
        ops::act(&mut x[..len], act);
        Ok(())
    }

    fn softcap(&self, x: &mut Vec<f32>, len: usize, cap: f32) -> Result<()> {
        x[..len]
            .iter_mut()
            .for_each(|v| *v = cap * (*v / cap).tanh());
        Ok(())
    }

    fn add_rows(
        &self,
        dst: &mut Vec<f32>,
        src: &Vec<f32>,
        rows: &[usize],
        dim: usize,
    ) -> Result<()> {
        if rows.len() * dim > src.len() || rows.iter().any(|&r| (r + 1) * dim > dst.len()) {
            return Err(ComputeError::Shape(format!(
                "add_rows: {} rows of {dim} between buffers of {} and {}",
                rows.len(),
                src.len(),
                dst.len()
            )));
        }
        for (i, &r) in rows.iter().enumerate() {
            let s = &src[i * dim..(i + 1) * dim];
            for (a, b) in dst[r * dim..(r + 1) * dim].iter_mut().zip(s) {
                *a += b;
            }
        }
        Ok(())
    }

    fn scale_rows(&self, x: &mut Vec<f32>, width: usize, factors: &[f32]) -> Result<()> {
        let len = factors.len() * width;
        if len > x.len() {
            return Err(ComputeError::Shape(format!(
                "scale_rows: {} rows of {width} in a buffer of {}",
                factors.len(),
                x.len()
            )));
        }
        for (row, &f) in x[..len].chunks_exact_mut(width.max(1)).zip(factors) {
            row.iter_mut().for_each(|v| *v *= f);
        }
        Ok(())
    }

    fn copy_cols(
        &self,
        src: &Vec<f32>,
        n: usize,
        stride: usize,
        col: usize,
        width: usize,
        dst: &mut Vec<f32>,
    ) -> Result<()> {
        for t in 0..n {
            dst[t * width..(t + 1) * width]
                .copy_from_slice(&src[t * stride + col..t * stride + col + width]);
        }
        Ok(())
    }

    fn gather_rows(
        &self,
        src: &Vec<f32>,
        rows: &[usize],
        dim: usize,
        dst: &mut Vec<f32>,
    ) -> Result<()> {
        for (i, &r) in rows.iter().enumerate() {
            dst[i * dim..(i + 1) * dim].copy_from_slice(&src[r * dim..(r + 1) * dim]);
        }
        Ok(())
    }

    fn kv(&self, spec: &KvSpec) -> Result<CpuKv> {
        CpuKv::new(spec)
    }

    fn can_copy_kv(&self) -> bool {
        true
    }

    fn kv_copy(&self, kv: &mut CpuKv, from: usize, to: usize, positions: usize) -> Result<()> {
        kv.copy_seq(from, to, positions)
    }

    fn kv_clear(&self, kv: &mut CpuKv, seq: usize) -> Result<()> {
        // Positions are rewritten before they are read, so a new request
        // needs no rows cleared: attention only reads positions up to the
        // query's own, all of which the request has stored. Recurrent
        // states start over.
        kv.check_seq(seq)?;
        kv.all_states_mut().for_each(|s| s.clear(seq));
        Ok(())
    }

    fn ssm_conv(
        &self,
        kv: &mut CpuKv,
        layer: usize,
        tokens: &[TokenPos],
        x: &Vec<f32>,
        w: &CpuWeight,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        delta::conv(kv, layer, tokens, x, w.vector()?, out)
    }

    fn delta_net(
        &self,
        kv: &mut CpuKv,
        layer: usize,
        tokens: &[TokenPos],
        qkv: &Vec<f32>,
        alpha: &Vec<f32>,
        beta: &Vec<f32>,
        a: &CpuWeight,
        p: &DeltaNetParams,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let x = crate::recurrent::DeltaInputs {
            qkv,
            alpha,
            beta,
            a: a.vector()?,
        };
        self.pool
            .install(|| delta::delta_net(kv, layer, tokens, &x, p, out))
    }

    fn state_save(&self, kv: &mut CpuKv, seq: usize) -> Result<()> {
        kv.check_seq(seq)?;
        kv.all_states_mut().for_each(|s| s.save(seq));
        Ok(())
    }

    fn state_restore(&self, kv: &mut CpuKv, seq: usize) -> Result<()> {
        kv.check_seq(seq)?;
        kv.all_states_mut().for_each(|s| s.restore(seq));
        Ok(())
    }

    fn attention(
        &self,
        kv: &mut CpuKv,
        layer: usize,
        tokens: &[TokenPos],
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        p: &AttnParams,
        sinks: Option<&CpuWeight>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let sinks = sinks.map(CpuWeight::vector).transpose()?;
        self.pool.install(|| {
            let qkv = [&q[..], &k[..], &v[..]];
            attention::attention(kv, layer, tokens, qkv, p, sinks, out, self.avx2)
        })
    }

    fn layered_kv(&self) -> bool {
        true
    }

    fn attention_shared(
        &self,
        kv: &mut CpuKv,
        layer: usize,
        tokens: &[TokenPos],
        q: &Vec<f32>,
        p: &AttnParams,
        sinks: Option<&CpuWeight>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let sinks = sinks.map(CpuWeight::vector).transpose()?;
        self.pool
            .install(|| attention::attention_shared(kv, layer, tokens, q, p, sinks, out, self.avx2))
    }
}

#[cfg(test)]
mod tests;
