//! Dequantization to f32, bit-exact with the `gguf` Python package.
//!
//! These are the scalar reference decoders: one function per block type,
//! written for clarity. Each performs the same f32 operations in the same
//! order as the reference (`d * sc` first, then `* q`, then `- dmin * m`),
//! and Rust never fuses a multiply and an add on its own, so the results
//! match bit for bit. Compute kernels that need speed live in
//! `worker-compute` and are tested against these.

use crate::GgmlType;
use crate::blocks::{
    Block, BlockIq4Nl, BlockIq4Xs, BlockMxfp4, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K,
    BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, IQ4_VALUES, MXFP4_VALUES, as_blocks,
    e8m0_half, f16_le, iq4xs_scale, kquant_scale_min, q3k_scales,
};
use crate::error::{GgufError, Result};

/// The types [`dequantize`] decodes.
pub const DEQUANT_TYPES: [GgmlType; 16] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::MXFP4,
];

/// Decodes `data`, holding `out.len()` elements of type `ty`, into `out`.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    if !DEQUANT_TYPES.contains(&ty) {
        return Err(GgufError::UnsupportedDequant { ty });
    }
    if ty.bytes_for(out.len() as u64) != Some(data.len() as u64) {
        return Err(GgufError::DequantSize {
            ty,
            n_bytes: data.len(),
            n_elements: out.len(),
        });
    }
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16_le([b[0], b[1]]);
            }
        }
        GgmlType::BF16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        GgmlType::Q4_0 => each_block(data, out, q4_0),
        GgmlType::Q4_1 => each_block(data, out, q4_1),
        GgmlType::Q5_0 => each_block(data, out, q5_0),
        GgmlType::Q5_1 => each_block(data, out, q5_1),
        GgmlType::Q8_0 => each_block(data, out, q8_0),
        GgmlType::Q2_K => each_block(data, out, q2_k),
        GgmlType::Q3_K => each_block(data, out, q3_k),
        GgmlType::Q4_K => each_block(data, out, q4_k),
        GgmlType::Q5_K => each_block(data, out, q5_k),
        GgmlType::Q6_K => each_block(data, out, q6_k),
        GgmlType::IQ4_NL => each_block(data, out, iq4_nl),
        GgmlType::IQ4_XS => each_block(data, out, iq4_xs),
        GgmlType::MXFP4 => each_block(data, out, mxfp4),
        _ => return Err(GgufError::UnsupportedDequant { ty }),
    }
    Ok(())
}

/// Decodes into a new vector of `n_elements` values.
pub fn dequantize_to_vec(ty: GgmlType, data: &[u8], n_elements: usize) -> Result<Vec<f32>> {
    let mut out = vec![0f32; n_elements];
    dequantize(ty, data, &mut out)?;
    Ok(out)
}

fn each_block<B: Block>(data: &[u8], out: &mut [f32], decode: fn(&B, &mut [f32])) {
    let per_block = B::TYPE.block_size();
    // The caller checked that `data` holds exactly out.len() elements.
    let blocks = as_blocks::<B>(data).unwrap_or_default();
    for (block, o) in blocks.iter().zip(out.chunks_exact_mut(per_block)) {
        decode(block, o);
    }
}

fn q4_0(b: &BlockQ4_0, out: &mut [f32]) {
    let d = f16_le(b.d);
    for (j, &q) in b.qs.iter().enumerate() {
        out[j] = d * f32::from((q & 0x0F) as i8 - 8);
        out[j + 16] = d * f32::from((q >> 4) as i8 - 8);
    }
}

fn q4_1(b: &BlockQ4_1, out: &mut [f32]) {
    let d = f16_le(b.d);
    let m = f16_le(b.m);
    for (j, &q) in b.qs.iter().enumerate() {
        out[j] = d * f32::from(q & 0x0F) + m;
        out[j + 16] = d * f32::from(q >> 4) + m;
    }
}

fn q5_0(b: &BlockQ5_0, out: &mut [f32]) {
    let d = f16_le(b.d);
    let qh = u32::from_le_bytes(b.qh);
    for (j, &q) in b.qs.iter().enumerate() {
        let lo = (q & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        out[j] = d * f32::from(lo as i8 - 16);
        out[j + 16] = d * f32::from(hi as i8 - 16);
    }
}

fn q5_1(b: &BlockQ5_1, out: &mut [f32]) {
    let d = f16_le(b.d);
    let m = f16_le(b.m);
    let qh = u32::from_le_bytes(b.qh);
    for (j, &q) in b.qs.iter().enumerate() {
        let lo = (q & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        out[j] = d * f32::from(lo) + m;
        out[j + 16] = d * f32::from(hi) + m;
    }
}

fn q8_0(b: &BlockQ8_0, out: &mut [f32]) {
    let d = f16_le(b.d);
    for (o, &q) in out.iter_mut().zip(b.qs.iter()) {
        *o = d * f32::from(q);
    }
}

// The K-quant decoders walk a block in runs of 16 elements that share one
// scale, so the inner loops are straight-line and vectorize.

fn q2_k(b: &BlockQ2K, out: &mut [f32]) {
    let d = f16_le(b.d);
    let dmin = f16_le(b.dmin);
    for (run, o) in out.chunks_exact_mut(16).enumerate() {
        // Element e = run * 16 + i: half = e / 128, shift = (e % 128) / 32.
        let (half, shift, l0) = (run / 8, (run % 8) / 2, (run % 2) * 16);
        let sc = b.scales[run];
        let dl = d * f32::from(sc & 0x0F);
        let ml = dmin * f32::from(sc >> 4);
        let qs = &b.qs[half * 32 + l0..][..16];
        for (o, &q) in o.iter_mut().zip(qs) {
            *o = dl * f32::from((q >> (2 * shift)) & 3) - ml;
        }
    }
}

fn q3_k(b: &BlockQ3K, out: &mut [f32]) {
    let d = f16_le(b.d);
    let scales = q3k_scales(&b.scales);
    for (run, o) in out.chunks_exact_mut(16).enumerate() {
        let (half, shift, l0) = (run / 8, (run % 8) / 2, (run % 2) * 16);
        let bit = run / 2; // e / 32
        let dl = d * f32::from(scales[run]);
        let qs = &b.qs[half * 32 + l0..][..16];
        let hm = &b.hmask[l0..][..16];
        for ((o, &q), &h) in o.iter_mut().zip(qs).zip(hm) {
            // A clear high bit subtracts 4: the stored bit is the complement.
            let low = ((q >> (2 * shift)) & 3) as i8;
            let q = low - if (h >> bit) & 1 == 0 { 4 } else { 0 };
            *o = dl * f32::from(q);
        }
    }
}

fn q4_k(b: &BlockQ4K, out: &mut [f32]) {
    let d = f16_le(b.d);
    let dmin = f16_le(b.dmin);
    let (sc, mn) = kquant_scale_min(&b.scales);
    for (group, o) in out.chunks_exact_mut(32).enumerate() {
        let d1 = d * f32::from(sc[group]);
        let m1 = dmin * f32::from(mn[group]);
        let shift = 4 * (group % 2);
        let qs = &b.qs[(group / 2) * 32..][..32];
        for (o, &q) in o.iter_mut().zip(qs) {
            *o = d1 * f32::from((q >> shift) & 0x0F) - m1;
        }
    }
}

fn q5_k(b: &BlockQ5K, out: &mut [f32]) {
    let d = f16_le(b.d);
    let dmin = f16_le(b.dmin);
    let (sc, mn) = kquant_scale_min(&b.scales);
    for (group, o) in out.chunks_exact_mut(32).enumerate() {
        let d1 = d * f32::from(sc[group]);
        let m1 = dmin * f32::from(mn[group]);
        let shift = 4 * (group % 2);
        let qs = &b.qs[(group / 2) * 32..][..32];
        for ((o, &q), &h) in o.iter_mut().zip(qs).zip(&b.qh) {
            let q = ((q >> shift) & 0x0F) | (((h >> group) & 1) << 4);
            *o = d1 * f32::from(q) - m1;
        }
    }
}

fn q6_k(b: &BlockQ6K, out: &mut [f32]) {
    let d = f16_le(b.d);
    for (run, o) in out.chunks_exact_mut(16).enumerate() {
        // Element e = run * 16 + i; within its 128-half, chunk s = e % 128 / 32.
        let (half, s, l0) = (run / 8, (run % 8) / 2, (run % 2) * 16);
        let dd = d * f32::from(b.scales[run]);
        let ql = &b.ql[half * 64 + (s % 2) * 32 + l0..][..16];
        let qh = &b.qh[half * 32 + l0..][..16];
        for ((o, &lo), &hi) in o.iter_mut().zip(ql).zip(qh) {
            let low = (lo >> (4 * (s / 2))) & 0x0F;
            let high = (hi >> (2 * s)) & 3;
            *o = dd * f32::from((low | (high << 4)) as i8 - 32);
        }
    }
}

// The IQ4 decoders look each 4-bit index up in the non-linear table; a
// group of 32 takes its low nibbles first, then its high nibbles, as the
// 32-weight types do.

/// One group of 32: `scale * IQ4_VALUES[q]` for the 16 bytes `qs`.
fn iq4_group(scale: f32, qs: &[u8], out: &mut [f32]) {
    let (lo, hi) = out.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi).zip(qs) {
        *l = scale * f32::from(IQ4_VALUES[usize::from(q & 0x0F)]);
        *h = scale * f32::from(IQ4_VALUES[usize::from(q >> 4)]);
    }
}

fn iq4_nl(b: &BlockIq4Nl, out: &mut [f32]) {
    iq4_group(f16_le(b.d), &b.qs, out);
}

fn iq4_xs(b: &BlockIq4Xs, out: &mut [f32]) {
    let d = f16_le(b.d);
    for (ib, (o, qs)) in out
        .chunks_exact_mut(32)
        .zip(b.qs.chunks_exact(16))
        .enumerate()
    {
        // The group's scale first (`d * (ls - 32)`), then times the value.
        let dl = d * f32::from(iq4xs_scale(b, ib) as i8 - 32);
        iq4_group(dl, qs, o);
    }
}

/// `2^(e - 128) * MXFP4_VALUES[q]`: the table value times the half scale,
/// low nibbles first.
fn mxfp4(b: &BlockMxfp4, out: &mut [f32]) {
    let d = e8m0_half(b.e[0]);
    let (lo, hi) = out.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b.qs) {
        *l = f32::from(MXFP4_VALUES[usize::from(q & 0x0F)]) * d;
        *h = f32::from(MXFP4_VALUES[usize::from(q >> 4)]) * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_sizes_and_types() {
        let mut out = [0f32; 32];
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0u8; 17], &mut out),
            Err(GgufError::DequantSize { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::IQ2_XXS, &[0u8; 66], &mut [0f32; 256]),
            Err(GgufError::UnsupportedDequant { .. })
        ));
    }

    #[test]
    fn q4_0_layout_low_nibbles_first() {
        let mut block = vec![0u8; 18];
        block[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        block[2] = 0x9A; // element 0 = 0xA - 8 = 2, element 16 = 0x9 - 8 = 1
        let out = dequantize_to_vec(GgmlType::Q4_0, &block, 32).expect("dequant");
        assert_eq!(out[0], 2.0);
        assert_eq!(out[16], 1.0);
        assert_eq!(out[1], -8.0);
    }

    #[test]
    fn iq4_nl_layout_low_nibbles_first() {
        let mut block = vec![0u8; 18];
        block[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        block[2] = 0xF8; // element 0 = table[8] = 1, element 16 = table[15] = 113
        block[17] = 0x0F; // element 15 = table[15], element 31 = table[0] = -127
        let out = dequantize_to_vec(GgmlType::IQ4_NL, &block, 32).expect("dequant");
        assert_eq!(out[0], 0.5);
        assert_eq!(out[16], 56.5);
        assert_eq!(out[15], 56.5);
        assert_eq!(out[31], -63.5);
        assert_eq!(out[1], -63.5);
    }

    #[test]
    fn mxfp4_layout_exponent_then_low_nibbles() {
        let mut block = vec![0u8; 17];
        block[0] = 128; // half scale 2^0 = 1: values are the doubled codes
        block[1] = 0xF7; // element 0 = table[7] = 12, element 16 = table[15] = -12
        block[2] = 0x08; // element 1 = table[8], element 17 = table[0]: both +0
        block[16] = 0x92; // element 15 = table[2] = 2, element 31 = table[9] = -1
        let out = dequantize_to_vec(GgmlType::MXFP4, &block, 32).expect("dequant");
        assert_eq!(
            (out[0], out[16], out[15], out[31]),
            (12.0, -12.0, 2.0, -1.0)
        );
        assert_eq!((out[1].to_bits(), out[17].to_bits()), (0, 0));
        block[0] = 120; // 2^-8
        let out = dequantize_to_vec(GgmlType::MXFP4, &block, 32).expect("dequant");
        assert_eq!((out[0], out[31]), (12.0 / 256.0, -1.0 / 256.0));
        // The extremes stay defined: 255 is 2^127 (so 12 · 2^127 overflows
        // to infinity), 0 the subnormal 2^-128.
        block[0] = 255;
        let out = dequantize_to_vec(GgmlType::MXFP4, &block, 32).expect("dequant");
        assert_eq!(out[0], f32::INFINITY);
        assert_eq!(f64::from(out[31]), -(2f64.powi(127)));
        block[0] = 0;
        let out = dequantize_to_vec(GgmlType::MXFP4, &block, 32).expect("dequant");
        assert_eq!(f64::from(out[31]), -(2f64.powi(-128)));
    }

    #[test]
    fn iq4_xs_group_scales_take_six_bits() {
        let mut block = vec![0u8; 136];
        block[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        // Group 0: ls = 0x3 | 0b10 << 4 = 35, so 3; group 1: ls = 0xA | 0b01
        // << 4 = 26, so -6; group 7: ls = 0x0 | 0b11 << 4 = 48, so 16.
        block[2..4].copy_from_slice(&0b1100_0000_0000_0110u16.to_le_bytes());
        block[4] = 0xA3;
        // Every index 8 (value 1), so each group shows its scale.
        block[8..].fill(0x88);
        let out = dequantize_to_vec(GgmlType::IQ4_XS, &block, 256).expect("dequant");
        assert_eq!(out[0], 3.0);
        assert_eq!(out[31], 3.0);
        assert_eq!(out[32], -6.0);
        assert_eq!(out[255], 16.0);
        // Groups 2 to 6 have ls = 0, so -32.
        assert_eq!(out[64], -32.0);
        assert_eq!(out[223], -32.0);
    }
}
