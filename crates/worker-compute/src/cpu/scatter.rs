//! Writing a task's block of a batched product into the output: the task
//! computes `[row][token]` for its rows (a weight row stays hot while its
//! tokens pass), the output is `[token][row]`. With AVX2, 8×8 blocks are
//! transposed in registers; the edges go one value at a time.

/// The output of a matrix product, written by tasks that own disjoint
/// elements of it.
#[derive(Clone, Copy)]
pub(super) struct SharedOut(pub(super) *mut f32);

// SAFETY: tasks write disjoint elements (see `matmul`), and the slice
// outlives the parallel loop that uses the pointer.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `i` is within the output, and no other task writes element `i`.
    pub(super) unsafe fn write(self, i: usize, v: f32) {
        // SAFETY: the caller's contract.
        unsafe { *self.0.add(i) = v };
    }
}

/// Writes a task's `buf[i][t]` (`nr` rows × `n_tok` tokens) to
/// `out[t][first + i]`: 8×8 blocks transposed in registers with AVX2, the
/// edges one by one.
///
/// # Safety
/// `out` has `n_tok * n_rows` elements, `first + nr <= n_rows`, and no other
/// task writes rows `first..first + nr`.
pub(super) unsafe fn scatter(
    buf: &[f32],
    nr: usize,
    n_tok: usize,
    dst: SharedOut,
    n_rows: usize,
    first: usize,
    avx2: bool,
) {
    let (mut i8, mut t8) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        (i8, t8) = (nr / 8 * 8, n_tok / 8 * 8);
        for i0 in (0..i8).step_by(8) {
            for t0 in (0..t8).step_by(8) {
                // SAFETY: the caller's contract; rows first + i0 .. + 8 and
                // tokens t0 .. t0 + 8 are inside `out`, and buf rows
                // i0 .. i0 + 8 hold tokens t0 .. t0 + 8.
                unsafe { transpose8(&buf[i0 * n_tok + t0..], n_tok, dst, n_rows, t0, first + i0) };
            }
        }
    }
    let _ = avx2;
    // The edges: tokens past the last full eight for every row, then the
    // rows past the last full eight for the other tokens.
    let edge = |t: usize, i: usize| {
        // SAFETY: t * n_rows + first + i < n_tok * n_rows (the caller's
        // contract).
        unsafe { dst.write(t * n_rows + first + i, buf[i * n_tok + t]) };
    };
    for t in t8..n_tok {
        for i in 0..nr {
            edge(t, i);
        }
    }
    for t in 0..t8 {
        for i in i8..nr {
            edge(t, i);
        }
    }
}

/// `out[t0 + t][col + k] = src[k * stride + t]` for an 8×8 block.
///
/// # Safety
/// `src` holds 8 rows of 8 values `stride` apart; tokens `t0..t0 + 8` and
/// columns `col..col + 8` are inside `out` (rows of `n_rows`), and no other
/// task writes those columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose8(
    src: &[f32],
    stride: usize,
    dst: SharedOut,
    n_rows: usize,
    t0: usize,
    col: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(src.len() >= 7 * stride + 8);
    let mut r = [_mm256_setzero_ps(); 8];
    for (k, v) in r.iter_mut().enumerate() {
        // SAFETY: row k's 8 values are readable (the caller's contract).
        *v = unsafe { _mm256_loadu_ps(src.as_ptr().add(k * stride)) };
    }
    let a0 = _mm256_unpacklo_ps(r[0], r[1]);
    let a1 = _mm256_unpackhi_ps(r[0], r[1]);
    let a2 = _mm256_unpacklo_ps(r[2], r[3]);
    let a3 = _mm256_unpackhi_ps(r[2], r[3]);
    let a4 = _mm256_unpacklo_ps(r[4], r[5]);
    let a5 = _mm256_unpackhi_ps(r[4], r[5]);
    let a6 = _mm256_unpacklo_ps(r[6], r[7]);
    let a7 = _mm256_unpackhi_ps(r[6], r[7]);
    let b0 = _mm256_shuffle_ps::<0x44>(a0, a2);
    let b1 = _mm256_shuffle_ps::<0xEE>(a0, a2);
    let b2 = _mm256_shuffle_ps::<0x44>(a1, a3);
    let b3 = _mm256_shuffle_ps::<0xEE>(a1, a3);
    let b4 = _mm256_shuffle_ps::<0x44>(a4, a6);
    let b5 = _mm256_shuffle_ps::<0xEE>(a4, a6);
    let b6 = _mm256_shuffle_ps::<0x44>(a5, a7);
    let b7 = _mm256_shuffle_ps::<0xEE>(a5, a7);
    let cols = [
        _mm256_permute2f128_ps::<0x20>(b0, b4),
        _mm256_permute2f128_ps::<0x20>(b1, b5),
        _mm256_permute2f128_ps::<0x20>(b2, b6),
        _mm256_permute2f128_ps::<0x20>(b3, b7),
        _mm256_permute2f128_ps::<0x31>(b0, b4),
        _mm256_permute2f128_ps::<0x31>(b1, b5),
        _mm256_permute2f128_ps::<0x31>(b2, b6),
        _mm256_permute2f128_ps::<0x31>(b3, b7),
    ];
    for (t, v) in cols.into_iter().enumerate() {
        // SAFETY: the caller's contract.
        unsafe { _mm256_storeu_ps(dst.0.add((t0 + t) * n_rows + col), v) };
    }
}
