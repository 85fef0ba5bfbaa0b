//! Activations of eight tokens interleaved, for the prefill kernels that
//! put tokens in SIMD lanes (`tile_avx2`).
//!
//! A dot product of one weight block with one token's block ends in a
//! horizontal sum, and a prefill product does one per (row, token, block):
//! with the weights in their GGUF layout that reduction, not the
//! multiplies, is where the time goes. Interleaving *tokens* instead of
//! rows lets one 8-byte piece of a weight row, broadcast to four lanes, meet
//! four tokens' matching bytes in one `vpmaddubsw`; the sums then run down
//! the lanes, and one `vphaddd` per block gives the eight tokens' totals.
//! The weights stay in the map untouched (no repacked copy, no extra
//! memory); the activations are re-laid once per product, a small cost
//! next to the product.
//!
//! Integer sums are exact, so each token's block sum is the same integer as
//! in the one-token kernels, and the float steps are the same too: the
//! results are bit-identical.

use super::qact::{Q8_0, Q8K};
use rayon::prelude::*;

/// Tokens per group.
pub const GROUP: usize = 8;

/// One Q8_0 block of eight tokens.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct Q8_0x8 {
    /// `qs[c][t]`: token `t`'s values `8c..8c + 8` of the block.
    pub qs: [[[i8; 8]; GROUP]; 4],
    /// Each token's scale.
    pub d: [f32; GROUP],
    /// Each token's `Σ q` over the block (for weights stored unsigned).
    pub sum: [i32; GROUP],
}

/// One Q8_K block (256 values) of eight tokens.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct Q8Kx8 {
    /// `qs[j][c][t]`: token `t`'s values `32j + 8c .. 32j + 8c + 8`.
    pub qs: [[[[i8; 8]; GROUP]; 4]; 8],
    /// Each token's scale.
    pub d: [f32; GROUP],
    /// `sums[t][j]`: token `t`'s `Σ q` over values `32j .. 32j + 32`
    /// (|Σ| ≤ 32·127, an i16).
    pub sums: [[i16; 8]; GROUP],
    /// `bsums[t][k]`: token `t`'s `Σ q` over values `16k .. 16k + 16`.
    pub bsums: [[i16; 16]; GROUP],
}

/// Groups for `n_tok` tokens: the full ones, and a last one padded with
/// zero tokens when at least `GROUP / 2` tokens are left (a padded group
/// still costs less than that many tokens one by one; the padding's
/// outputs are zero and dropped).
pub fn groups_for(n_tok: usize) -> usize {
    if n_tok % GROUP >= GROUP / 2 {
        n_tok.div_ceil(GROUP)
    } else {
        n_tok / GROUP
    }
}

/// `out[g * nb + b]` = block `b` of tokens `8g .. 8g + 8`, for
/// `groups_for(n_tok)` groups of the `n_tok` token rows of `nb` blocks in
/// `rows` (tokens past `n_tok` are zero).
pub fn interleave_q8_0(rows: &[Q8_0], nb: usize, n_tok: usize, out: &mut Vec<Q8_0x8>) {
    out.clear();
    out.resize(groups_for(n_tok) * nb, Q8_0x8::ZERO);
    out.par_chunks_mut(nb).enumerate().for_each(|(g, o)| {
        for (b, x) in o.iter_mut().enumerate() {
            for t in 0..GROUP.min(n_tok - g * GROUP) {
                let src = &rows[(g * GROUP + t) * nb + b];
                for (c, chunk) in src.qs.chunks_exact(8).enumerate() {
                    x.qs[c][t].copy_from_slice(chunk);
                }
                x.d[t] = src.d;
                x.sum[t] = src.sum;
            }
        }
    });
}

/// [`interleave_q8_0`] for Q8_K blocks.
pub fn interleave_q8_k(rows: &[Q8K], nb: usize, n_tok: usize, out: &mut Vec<Q8Kx8>) {
    out.clear();
    out.resize(groups_for(n_tok) * nb, Q8Kx8::ZERO);
    out.par_chunks_mut(nb).enumerate().for_each(|(g, o)| {
        for (b, x) in o.iter_mut().enumerate() {
            for t in 0..GROUP.min(n_tok - g * GROUP) {
                let src = &rows[(g * GROUP + t) * nb + b];
                for (k, chunk) in src.qs.chunks_exact(8).enumerate() {
                    x.qs[k / 4][k % 4][t].copy_from_slice(chunk);
                }
                x.d[t] = src.d;
                for j in 0..8 {
                    x.sums[t][j] = src.bsums[2 * j] + src.bsums[2 * j + 1];
                }
                x.bsums[t] = src.bsums;
            }
        }
    });
}

impl Q8_0x8 {
    const ZERO: Self = Self {
        qs: [[[0; 8]; GROUP]; 4],
        d: [0.0; GROUP],
        sum: [0; GROUP],
    };
}

impl Q8Kx8 {
    const ZERO: Self = Self {
        qs: [[[[0; 8]; GROUP]; 4]; 8],
        d: [0.0; GROUP],
        sums: [[0; 8]; GROUP],
        bsums: [[0; 16]; GROUP],
    };
}
