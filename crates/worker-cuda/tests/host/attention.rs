//! The KV store and attention kernels driven as src/attention.rs drives
//! them: the store into a layer's rows, attention over them (one block per
//! head, token and split), and the merge when the keys are split.

use super::{P, kernel, launch, per_element};
use std::ffi::c_void;
use worker_compute::{AttnParams, KvType, TokenPos};

type KvStore = unsafe extern "C" fn(
    *const f32,
    *const f32,
    *mut c_void,
    *mut c_void,
    i32,
    *const i32,
    *const i32,
    i32,
    i32,
    i32,
);
type Attention = unsafe extern "C" fn(
    *const f32,
    *const c_void,
    *const c_void,
    i32,
    *mut f32,
    *mut f32,
    *const i32,
    *const i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    f32,
    i32,
    *const f32,
);
type Merge = unsafe extern "C" fn(*const f32, *mut f32, i32, i32, i32, *const f32);

/// One layer's emulated K and V rows (device memory, here host memory):
/// `cap` slots per sequence of `dim` values of type `ty`.
pub struct Rows {
    pub ty: KvType,
    pub k: Vec<u8>,
    pub v: Vec<u8>,
    pub cap: usize,
    pub dim: usize,
}

impl Rows {
    /// Zeroed rows for `n_seq` sequences.
    pub fn new(ty: KvType, n_seq: usize, cap: usize, dim: usize) -> Self {
        let bytes = n_seq * cap * dim * ty.elem_bytes();
        Rows {
            ty,
            k: vec![0u8; bytes],
            v: vec![0u8; bytes],
            cap,
            dim,
        }
    }
}

/// The kernels' output for one batch over `rows`: the KV store of `kv`
/// when given, attention with the keys split every `split_len`, and the
/// merge of the splits when there are several.
pub fn attend(
    p: &AttnParams,
    rows: &mut Rows,
    tokens: &[TokenPos],
    q: &[f32],
    kv: Option<(&[f32], &[f32])>,
    split_len: usize,
    sinks: Option<&[f32]>,
) -> Vec<f32> {
    let (store, attn, merge): (KvStore, Attention, Merge) = (
        kernel("kv_store"),
        kernel("attention"),
        kernel("attention_merge"),
    );
    let n = tokens.len();
    let q_dim = p.n_head * p.head_dim;
    let seq: Vec<i32> = tokens.iter().map(|t| t.seq as i32).collect();
    let pos: Vec<i32> = tokens.iter().map(|t| t.pos as i32).collect();
    let max_keys = tokens
        .iter()
        .map(|t| match p.window {
            Some(w) => t.pos.min(w - 1) as usize + 1,
            None => t.pos as usize + 1,
        })
        .max()
        .unwrap_or(1);
    let n_split = max_keys.div_ceil(split_len);
    let mut part = vec![0f32; n * p.n_head * n_split * (p.head_dim + 2)];
    let mut out = vec![0f32; n * q_dim];
    let is_f16 = i32::from(rows.ty == KvType::F16);
    let (cap, dim) = (rows.cap as i32, rows.dim as i32);
    let (sp, pp) = (P::of(&seq), P::of(&pos));
    let (kc, vc) = (P::mut_of(&mut rows.k), P::mut_of(&mut rows.v));
    let sinks_p = sinks.map_or(0, |s| s.as_ptr() as usize);
    // SAFETY (every launch below): the rows hold n_seq x cap slots of dim
    // values, the batch's tokens fit them, and the outputs and partials
    // are sized as the kernels write them.
    if let Some((k, v)) = kv {
        let (kp, vp) = (P::of(k), P::of(v));
        let (grid, block) = per_element(n * rows.dim);
        launch(grid, block, 0, &|| unsafe {
            store(
                kp.f(),
                vp.f(),
                kc.u8().cast(),
                vc.u8().cast(),
                is_f16,
                sp.i(),
                pp.i(),
                n as i32,
                dim,
                cap,
            )
        });
    }
    let (qp, op, pa) = (P::of(q), P::mut_of(&mut out), P::mut_of(&mut part));
    launch(
        (p.n_head as u32, n as u32, n_split as u32),
        (128, 1, 1),
        (2 * p.head_dim + 64) * 4,
        &|| unsafe {
            attn(
                qp.f(),
                kc.u8().cast(),
                vc.u8().cast(),
                is_f16,
                op.f(),
                pa.f(),
                sp.i(),
                pp.i(),
                p.n_head as i32,
                p.n_head_kv as i32,
                p.head_dim as i32,
                dim,
                cap,
                p.window.map_or(0, |w| w as i32),
                p.scale,
                p.softcap.unwrap_or(0.0),
                split_len as i32,
                sinks_p as *const f32,
            )
        },
    );
    if n_split > 1 {
        launch((p.n_head as u32, n as u32, 1), (128, 1, 1), 0, &|| unsafe {
            merge(
                pa.f(),
                op.f(),
                p.n_head as i32,
                p.head_dim as i32,
                n_split as i32,
                sinks_p as *const f32,
            )
        });
    }
    out
}
