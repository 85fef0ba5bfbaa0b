//! Matrix products `out[t][r] = W[r] · x[t]` with W in its stored type.
//!
//! Activations are converted once per call to the form the weight type's
//! dot product wants; output rows are split across the thread pool in
//! chunks, and each chunk runs every token, so a weight row is read from
//! memory once per call whatever the number of tokens (prefill as a
//! matrix-matrix product). The row loop exists twice: a baseline version
//! and one compiled for AVX2/FMA, chosen at run time ([`Kernels`]). In the
//! AVX2 build, batches run in groups of eight tokens with the tokens in
//! SIMD lanes (`tile_avx2`, `tile_k4` and `tile_lut`, on activations
//! re-laid by `act_tiles`); the few tokens a batch leaves, and single
//! tokens, run row by row (`dot_avx2`, two rows at a time). Every path
//! gives the scalar reference's bits.

// Kernels index fixed-size blocks and lanes explicitly: that is the shape
// the vectorizer turns into SIMD, and it mirrors the block layouts.
#![allow(clippy::needless_range_loop)]

use super::act_tiles::{GROUP, Q8_0x8, Q8Kx8};
use super::dot::{ActRow, act_kind, dot};
use super::kernels::{Kernels, has_tile_kernel};
use super::prepared::PreparedActs;
use super::scatter::{SharedOut, scatter};
use rayon::prelude::*;
use worker_gguf::GgmlType;

/// A weight matrix viewed in place: `rows` rows of `cols` elements.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl MatRef<'_> {
    fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }
}

/// Rows per task: large enough to amortize scheduling, small enough to
/// balance across threads.
const CHUNK_ROWS: usize = 16;

/// `out[t * w.rows + r] = w[r] · x[t]` for `n_tok` tokens.
pub fn matmul(
    w: MatRef<'_>,
    x: &[f32],
    n_tok: usize,
    acts: &mut PreparedActs,
    out: &mut [f32],
    kernels: Kernels,
) {
    let kernels = kernels.or_baseline();
    let tiles = kernels != Kernels::Baseline && has_tile_kernel(w.ty);
    acts.prepare(w.ty, x, w.cols, tiles);
    matmul_prepared(w, x, n_tok, acts, out, kernels);
}

/// `outs[i][t * ws[i].rows + r] = ws[i][r] · x[t]`: products of one input,
/// which is converted once when every weight wants the same form of it.
pub fn matmul_shared(
    ws: &[MatRef<'_>],
    x: &[f32],
    n_tok: usize,
    acts: &mut PreparedActs,
    outs: &mut [&mut [f32]],
    kernels: Kernels,
) {
    let kernels = kernels.or_baseline();
    let one_form = ws
        .windows(2)
        .all(|p| act_kind(p[0].ty) == act_kind(p[1].ty) && p[0].cols == p[1].cols);
    match ws.first() {
        Some(w0) if one_form => {
            let tiles = kernels != Kernels::Baseline && ws.iter().any(|w| has_tile_kernel(w.ty));
            acts.prepare(w0.ty, x, w0.cols, tiles);
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                matmul_prepared(*w, x, n_tok, acts, out, kernels);
            }
        }
        _ => {
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                matmul(*w, x, n_tok, acts, out, kernels);
            }
        }
    }
}

/// [`matmul`] with `acts` already prepared from `x` for `w`'s form.
fn matmul_prepared(
    w: MatRef<'_>,
    x: &[f32],
    n_tok: usize,
    acts: &PreparedActs,
    out: &mut [f32],
    kernels: Kernels,
) {
    let avx2 = kernels != Kernels::Baseline;
    // The prepared activations count tokens by `x`'s length.
    assert_eq!(x.len(), n_tok * w.cols, "matmul input size");
    assert_eq!(out.len(), n_tok * w.rows, "matmul output size");
    let row_bytes = w.row_bytes();
    if n_tok == 1 {
        out.par_chunks_mut(CHUNK_ROWS)
            .enumerate()
            .for_each(|(c, o)| {
                rows(
                    w,
                    row_bytes,
                    c * CHUNK_ROWS,
                    o.len(),
                    x,
                    1,
                    acts,
                    o,
                    kernels,
                );
            });
        return;
    }
    // Several tokens: each task computes [row][token] for its rows into a
    // buffer of its own, then scatters it to out[token][row]. Tasks own
    // disjoint rows, so they write disjoint elements of `out`.
    let n_rows = w.rows;
    let dst = SharedOut(out.as_mut_ptr());
    (0..n_rows.div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .for_each_init(Vec::new, |buf: &mut Vec<f32>, c| {
            let first = c * CHUNK_ROWS;
            let nr = CHUNK_ROWS.min(n_rows - first);
            buf.resize(nr * n_tok, 0.0);
            rows(w, row_bytes, first, nr, x, n_tok, acts, buf, kernels);
            // SAFETY: only this task writes rows first..first + nr of
            // `out`, which has n_tok * n_rows elements (asserted above).
            unsafe { scatter(buf, nr, n_tok, dst, n_rows, first, avx2) };
        });
}

#[allow(clippy::too_many_arguments)]
fn rows(
    w: MatRef<'_>,
    row_bytes: usize,
    first: usize,
    n_rows: usize,
    x: &[f32],
    n_tok: usize,
    acts: &PreparedActs,
    out: &mut [f32],
    kernels: Kernels,
) {
    #[cfg(target_arch = "x86_64")]
    if kernels != Kernels::Baseline {
        // SAFETY: `Kernels::detect` chooses a SIMD level only when the CPU
        // reports its features (AVX2, FMA and F16C; VNNI for `Vnni`).
        unsafe {
            rows_avx2(
                w,
                row_bytes,
                first,
                n_rows,
                x,
                n_tok,
                acts,
                out,
                kernels == Kernels::Vnni,
            )
        };
        return;
    }
    rows_generic(w, row_bytes, first, n_rows, x, n_tok, acts, out);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_body(
    w: MatRef<'_>,
    row_bytes: usize,
    first: usize,
    n_rows: usize,
    x: &[f32],
    n_tok: usize,
    acts: &PreparedActs,
    out: &mut [f32],
    first_tok: usize,
    dotf: impl Fn(GgmlType, &[u8], ActRow<'_>) -> f32,
) {
    for i in 0..n_rows {
        let r = first + i;
        let wrow = &w.data[r * row_bytes..(r + 1) * row_bytes];
        for t in first_tok..n_tok {
            out[i * n_tok + t] = dotf(w.ty, wrow, acts.row(x, t));
        }
    }
}

/// `dot` with the hand-written AVX2 kernels where there are some.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_fast(ty: GgmlType, w: &[u8], a: ActRow<'_>) -> f32 {
    use super::dot_avx2;
    match (ty, a) {
        (GgmlType::Q8_0, ActRow::Q8_0(x)) => dot_avx2::dot_q8_0(w, x),
        (GgmlType::Q5_0, ActRow::Q8_0(x)) => dot_avx2::dot_q5_0(w, x),
        (GgmlType::Q4_0, ActRow::Q8_0(x)) => dot_avx2::dot_q4_0(w, x),
        (GgmlType::Q4_K, ActRow::Q8K(x)) => dot_avx2::dot_q4_k(w, x),
        (GgmlType::Q5_K, ActRow::Q8K(x)) => dot_avx2::dot_q5_k(w, x),
        (GgmlType::IQ4_NL, ActRow::Q8_0(x)) => dot_avx2::dot_iq4_nl(w, x),
        (GgmlType::IQ4_XS, ActRow::Q8K(x)) => dot_avx2::dot_iq4_xs(w, x),
        (GgmlType::MXFP4, ActRow::Q8_0(x)) => dot_avx2::dot_mxfp4(w, x),
        (GgmlType::Q6_K, ActRow::Q8K(x)) => dot_avx2::dot_q6_k(w, x),
        _ => dot(ty, w, a),
    }
}

#[allow(clippy::too_many_arguments)]
fn rows_generic(
    w: MatRef<'_>,
    row_bytes: usize,
    first: usize,
    n_rows: usize,
    x: &[f32],
    n_tok: usize,
    acts: &PreparedActs,
    out: &mut [f32],
) {
    rows_body(w, row_bytes, first, n_rows, x, n_tok, acts, out, 0, dot);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_avx2(
    w: MatRef<'_>,
    row_bytes: usize,
    first: usize,
    n_rows: usize,
    x: &[f32],
    n_tok: usize,
    acts: &PreparedActs,
    out: &mut [f32],
    vnni: bool,
) {
    // The closure inherits this function's target features.
    let fast = |ty: GgmlType, w: &[u8], a: ActRow<'_>| dot_fast(ty, w, a);
    if n_tok == 1
        && matches!(
            w.ty,
            GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K | GgmlType::IQ4_NL | GgmlType::IQ4_XS
        )
    {
        for i in 0..n_rows {
            prefetch(w.data, (first + i + PREFETCH_ROWS) * row_bytes, row_bytes);
            let r = first + i;
            let wrow = &w.data[r * row_bytes..(r + 1) * row_bytes];
            out[i] = fast(w.ty, wrow, acts.row(x, 0));
        }
        return;
    }
    if n_tok == 1 && matches!(w.ty, GgmlType::Q4_0 | GgmlType::Q5_0) {
        // Two rows at a time: two independent float chains.
        let x8 = match acts.row(x, 0) {
            ActRow::Q8_0(a) => a,
            _ => &[],
        };
        let row = |i: usize| &w.data[(first + i) * row_bytes..(first + i + 1) * row_bytes];
        // Unsafe pointers: the VNNI kernels need features this function
        // does not enable; `vnni` is set only where the CPU has them.
        type TwoRows = unsafe fn(&[u8], &[u8], &[super::qact::Q8_0]) -> [f32; 2];
        let two_rows: TwoRows = match (w.ty, vnni) {
            (GgmlType::Q4_0, false) => super::dot_avx2::dot2_q4_0,
            (_, false) => super::dot_avx2::dot2_q5_0,
            (GgmlType::Q4_0, true) => super::dot_vnni::dot2_q4_0,
            (_, true) => super::dot_vnni::dot2_q5_0,
        };
        let mut i = 0;
        while i + 2 <= n_rows {
            prefetch(
                w.data,
                (first + i + PREFETCH_ROWS) * row_bytes,
                2 * row_bytes,
            );
            // SAFETY: see `TwoRows`.
            out[i..i + 2].copy_from_slice(&unsafe { two_rows(row(i), row(i + 1), x8) });
            i += 2;
        }
        if i < n_rows {
            out[i] = fast(w.ty, row(i), acts.row(x, 0));
        }
        return;
    }
    if n_tok == 1 && w.ty == GgmlType::Q8_0 {
        // Two rows at a time for one token (generation's output layer).
        let x8 = match acts.row(x, 0) {
            ActRow::Q8_0(a) => a,
            _ => &[],
        };
        let row = |i: usize| &w.data[(first + i) * row_bytes..(first + i + 1) * row_bytes];
        let mut i = 0;
        while i + 2 <= n_rows {
            prefetch(
                w.data,
                (first + i + PREFETCH_ROWS) * row_bytes,
                2 * row_bytes,
            );
            let two = if vnni {
                // SAFETY: `vnni` is set only where the CPU has AVX-512 VNNI,
                // VL and BW.
                unsafe { super::dot_vnni::dot2_q8_0(row(i), row(i + 1), x8) }
            } else {
                super::dot_avx2::dot2_q8_0(row(i), row(i + 1), x8)
            };
            out[i..i + 2].copy_from_slice(&two);
            i += 2;
        }
        if i < n_rows {
            out[i] = fast(w.ty, row(i), acts.row(x, 0));
        }
        return;
    }
    // Groups of eight tokens in lanes (the last one maybe padded); the
    // tokens after them below.
    let mut done = 0;
    if acts.groups > 0 && has_tile_kernel(w.ty) {
        // SAFETY: as for this function.
        unsafe { token_groups(w, row_bytes, first, n_rows, n_tok, acts, out, vnni) };
        done = (acts.groups * GROUP).min(n_tok);
    }
    // The tokens the groups leave (fewer than four), and every token of
    // the types without a tile kernel, one by one.
    rows_body(w, row_bytes, first, n_rows, x, n_tok, acts, out, done, fast);
}

/// How far ahead of the row being computed a one-token product asks for
/// the weights.
const PREFETCH_ROWS: usize = 2;

/// Asks the cache for `data[at..at + len]` (whatever of it exists).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn prefetch(data: &[u8], at: usize, len: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let end = (at + len).min(data.len());
    for off in (at..end).step_by(64) {
        // SAFETY: `off < data.len()`; a prefetch never faults anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(off).cast()) };
    }
}

/// Groups of eight tokens per tile of [`token_groups`]: their activations
/// stay in L1 while the chunk's rows pass over them.
const GROUP_TILE: usize = 2;

/// `out[i][t]` for every token of the eight-token groups, with the tile
/// kernels (tokens in lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn token_groups(
    w: MatRef<'_>,
    row_bytes: usize,
    first: usize,
    n_rows: usize,
    n_tok: usize,
    acts: &PreparedActs,
    out: &mut [f32],
    vnni: bool,
) {
    let row = |i: usize| &w.data[(first + i) * row_bytes..(first + i + 1) * row_bytes];
    for g0 in (0..acts.groups).step_by(GROUP_TILE) {
        let g_end = (g0 + GROUP_TILE).min(acts.groups);
        for i in 0..n_rows {
            if g0 == 0 {
                // First pass over the chunk: its rows come from memory.
                prefetch(w.data, (first + i + PREFETCH_ROWS) * row_bytes, row_bytes);
            }
            let mut g = g0;
            while g < g_end {
                let at = i * n_tok + g * GROUP;
                // Two groups per pass: the weights are decoded and
                // broadcast once for both.
                let mut values = [0f32; 2 * GROUP];
                let step = if g + 2 <= g_end {
                    // SAFETY: as for this function.
                    let two = unsafe { tile_row(w, row(i), acts, [g, g + 1], vnni) };
                    values.copy_from_slice(two.as_flattened());
                    2
                } else {
                    // SAFETY: as for this function.
                    let [one] = unsafe { tile_row(w, row(i), acts, [g], vnni) };
                    values[..GROUP].copy_from_slice(&one);
                    1
                };
                let valid = (step * GROUP).min(n_tok - g * GROUP);
                out[at..at + valid].copy_from_slice(&values[..valid]);
                g += step;
            }
        }
    }
}

/// One weight row against groups `gs` of the prepared activations, with
/// the tile kernel of the row's type.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, and AVX-512 VNNI/VL/BW if `vnni`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_row<const N: usize>(
    w: MatRef<'_>,
    row: &[u8],
    acts: &PreparedActs,
    gs: [usize; N],
    vnni: bool,
) -> [[f32; 8]; N] {
    use super::tile_avx2::{avx2, q6_k_x8, vnni as vn};
    use super::tile_k4::{avx2 as k4, vnni as k4_vn};
    use super::tile_lut::{avx2 as lut, vnni as lut_vn};
    let nb = w.cols / w.ty.block_size();
    // Only the form the type takes is prepared: slice it, not the other.
    // (Loops, not `map`: its closure was not inlined on this hot path.)
    let q8 = || {
        let mut x: [&[Q8_0x8]; N] = [&[]; N];
        for (x, &g) in x.iter_mut().zip(&gs) {
            *x = &acts.q8_0x8[g * nb..(g + 1) * nb];
        }
        x
    };
    let q8k = || {
        let mut x: [&[Q8Kx8]; N] = [&[]; N];
        for (x, &g) in x.iter_mut().zip(&gs) {
            *x = &acts.q8kx8[g * nb..(g + 1) * nb];
        }
        x
    };
    // SAFETY: the caller's contract.
    unsafe {
        match (w.ty, vnni) {
            (GgmlType::Q8_0, false) => avx2::q8_0_x8(row, q8()),
            (GgmlType::Q8_0, true) => vn::q8_0_x8(row, q8()),
            (GgmlType::Q4_0, false) => avx2::q4_0_x8(row, q8()),
            (GgmlType::Q4_0, true) => vn::q4_0_x8(row, q8()),
            (GgmlType::Q5_0, false) => avx2::q5_0_x8(row, q8()),
            (GgmlType::Q5_0, true) => vn::q5_0_x8(row, q8()),
            (GgmlType::Q4_K, false) => k4::q4_k_x8(row, q8k()),
            (GgmlType::Q4_K, true) => k4_vn::q4_k_x8(row, q8k()),
            (GgmlType::Q5_K, false) => k4::q5_k_x8(row, q8k()),
            (GgmlType::Q5_K, true) => k4_vn::q5_k_x8(row, q8k()),
            (GgmlType::IQ4_NL, false) => lut::iq4_nl_x8(row, q8()),
            (GgmlType::IQ4_NL, true) => lut_vn::iq4_nl_x8(row, q8()),
            (GgmlType::MXFP4, false) => lut::mxfp4_x8(row, q8()),
            (GgmlType::MXFP4, true) => lut_vn::mxfp4_x8(row, q8()),
            (GgmlType::IQ4_XS, false) => lut::iq4_xs_x8(row, q8k()),
            (GgmlType::IQ4_XS, true) => lut_vn::iq4_xs_x8(row, q8k()),
            _ => q6_k_x8(row, q8k()),
        }
    }
}
