//! The on-disk layout of each quantized block type.
//!
//! One `#[repr(C)]` struct per type, made only of byte arrays, so a block has
//! alignment 1 and any bit pattern is valid: a slice of file bytes can be
//! viewed as a slice of blocks without copying ([`as_blocks`]). Sizes are
//! asserted at compile time against the type table. Scales stored as f16 are
//! kept as raw little-endian bytes; [`f16_le`] decodes them.
//!
//! Field order follows the file format, which differs between families:
//! Q2_K, Q3_K and Q6_K keep their `d` at the end of the block.

use crate::GgmlType;
use crate::types::QK_K;

/// A block type that can be viewed in place from file bytes.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, contain only `u8`/`i8` arrays (so
/// alignment is 1 and every bit pattern is valid) and have exactly
/// `TYPE.type_size()` bytes.
pub unsafe trait Block: Sized {
    /// The tensor type this block belongs to.
    const TYPE: GgmlType;
}

/// Views `bytes` as blocks, or `None` when the length is not a whole number
/// of blocks.
pub fn as_blocks<B: Block>(bytes: &[u8]) -> Option<&[B]> {
    let size = std::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    // SAFETY: `Block` guarantees alignment 1, no invalid bit patterns and a
    // size of `size` bytes; the length is a whole number of blocks and the
    // returned slice borrows `bytes`.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) })
}

/// Decodes a little-endian IEEE half.
#[inline]
pub fn f16_le(bytes: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(bytes).to_f32()
}

macro_rules! blocks {
    ($($(#[$doc:meta])* $name:ident: $ty:ident { $($(#[$fdoc:meta])* $field:ident: [$ft:ty; $n:expr],)* })*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            #[repr(C)]
            pub struct $name {
                $($(#[$fdoc])* pub $field: [$ft; $n],)*
            }
            // SAFETY: repr(C), byte arrays only; the size is asserted below.
            unsafe impl Block for $name {
                const TYPE: GgmlType = GgmlType::$ty;
            }
            const _: () = assert!(std::mem::size_of::<$name>() == block_bytes(GgmlType::$ty));
            const _: () = assert!(std::mem::align_of::<$name>() == 1);
        )*
    };
}

/// Block sizes for the compile-time assertions (a `const fn` mirror of the
/// type table for the types that have a block struct).
const fn block_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_0 => 18,
        GgmlType::Q4_1 => 20,
        GgmlType::Q5_0 => 22,
        GgmlType::Q5_1 => 24,
        GgmlType::Q8_0 => 34,
        GgmlType::Q2_K => 84,
        GgmlType::Q3_K => 110,
        GgmlType::Q4_K => 144,
        GgmlType::Q5_K => 176,
        GgmlType::Q6_K => 210,
        GgmlType::Q8_K => 292,
        GgmlType::IQ4_NL => 18,
        GgmlType::IQ4_XS => 136,
        GgmlType::MXFP4 => 17,
        _ => 0,
    }
}

blocks! {
    /// 32 weights: `d * (q - 8)`, 4-bit `q`. Low nibbles hold elements 0..16,
    /// high nibbles 16..32.
    BlockQ4_0: Q4_0 { d: [u8; 2], qs: [u8; 16], }
    /// 32 weights: `d * q + m`, 4-bit `q`.
    BlockQ4_1: Q4_1 { d: [u8; 2], m: [u8; 2], qs: [u8; 16], }
    /// 32 weights: `d * (q - 16)`, 5-bit `q`; bit `i` of `qh` (little-endian
    /// u32) is the fifth bit of element `i`.
    BlockQ5_0: Q5_0 { d: [u8; 2], qh: [u8; 4], qs: [u8; 16], }
    /// 32 weights: `d * q + m`, 5-bit `q`.
    BlockQ5_1: Q5_1 { d: [u8; 2], m: [u8; 2], qh: [u8; 4], qs: [u8; 16], }
    /// 32 weights: `d * q`, signed 8-bit `q`.
    BlockQ8_0: Q8_0 { d: [u8; 2], qs: [i8; 32], }
    /// 256 weights in 16 groups of 16: 4-bit scale and min per group, 2-bit
    /// `q`; `d` and `dmin` at the end.
    BlockQ2K: Q2_K { scales: [u8; QK_K / 16], qs: [u8; QK_K / 4], d: [u8; 2], dmin: [u8; 2], }
    /// 256 weights in 16 groups of 16: 6-bit signed scales, 2 low bits in
    /// `qs` and a high bit in `hmask`; `d` at the end.
    BlockQ3K: Q3_K { hmask: [u8; QK_K / 8], qs: [u8; QK_K / 4], scales: [u8; 12], d: [u8; 2], }
    /// 256 weights in 8 groups of 32: 6-bit scale and min per group, 4-bit `q`.
    BlockQ4K: Q4_K { d: [u8; 2], dmin: [u8; 2], scales: [u8; 12], qs: [u8; QK_K / 2], }
    /// 256 weights in 8 groups of 32: as Q4_K with a fifth bit in `qh`.
    BlockQ5K: Q5_K { d: [u8; 2], dmin: [u8; 2], scales: [u8; 12], qh: [u8; QK_K / 8], qs: [u8; QK_K / 2], }
    /// 256 weights in 16 groups of 16: signed 8-bit scales, 6-bit `q` split
    /// into 4 low bits (`ql`) and 2 high bits (`qh`); `d` at the end.
    BlockQ6K: Q6_K { ql: [u8; QK_K / 2], qh: [u8; QK_K / 4], scales: [i8; QK_K / 16], d: [u8; 2], }
    /// 256 activations: f32 `d`, signed 8-bit `q`, and per-16 sums (i16) used
    /// by K-quant dot products.
    BlockQ8K: Q8_K { d: [u8; 4], qs: [i8; QK_K], bsums: [u8; QK_K / 8], }
    /// 32 weights: `d * IQ4_VALUES[q]`, 4-bit index `q`. Low nibbles hold
    /// elements 0..16, high nibbles 16..32.
    BlockIq4Nl: IQ4_NL { d: [u8; 2], qs: [u8; 16], }
    /// 256 weights in 8 groups of 32: `d * (ls - 32) * IQ4_VALUES[q]` with a
    /// 6-bit `ls` per group (low 4 bits in a nibble of `scales_l`, high 2
    /// bits in the little-endian u16 `scales_h`); each group's 16 bytes of
    /// `qs` are laid out as an IQ4_NL block's.
    BlockIq4Xs: IQ4_XS { d: [u8; 2], scales_h: [u8; 2], scales_l: [u8; QK_K / 64], qs: [u8; QK_K / 2], }
    /// 32 weights: `e8m0_half(e) * MXFP4_VALUES[q]`, 4-bit E2M1 code `q`
    /// under a shared power-of-two exponent `e`. Low nibbles hold elements
    /// 0..16, high nibbles 16..32. 17 bytes, so blocks (and rows) may start
    /// at any byte.
    BlockMxfp4: MXFP4 { e: [u8; 1], qs: [u8; 16], }
}

/// The sixteen E2M1 codes of an MXFP4 block, doubled so that they are
/// integers: bit 3 is the sign, and 0, 0.5, 1, 1.5, 2, 3, 4, 6 become 0, 1,
/// 2, 3, 4, 6, 8, 12. [`e8m0_half`] halves the block scale to make up for it.
pub const MXFP4_VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half the value of an E8M0 exponent byte, `2^(e - 128)`, as an f32: the
/// scale of an MXFP4 block against [`MXFP4_VALUES`]. Every byte is a finite
/// power of two: 0 and 1 give the subnormals 2^-128 and 2^-127, and 255,
/// which E8M0 reserves for NaN, is read as a number like the others (2^127).
#[inline]
pub fn e8m0_half(e: u8) -> f32 {
    if e < 2 {
        f32::from_bits(0x0020_0000 << e)
    } else {
        f32::from_bits(u32::from(e - 1) << 23)
    }
}

/// The sixteen values a 4-bit index selects in IQ4_NL and IQ4_XS blocks:
/// non-linear, denser near zero, where most weights are.
pub const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// The 6-bit scale of group `ib` (taken modulo 8) of an IQ4_XS block,
/// before its offset of 32 is taken off: the low 4 bits are nibble `ib % 2`
/// of `scales_l[ib / 2]`, the high 2 bits are bits `2 ib` and `2 ib + 1` of
/// `scales_h`.
#[inline]
pub fn iq4xs_scale(b: &BlockIq4Xs, ib: usize) -> u8 {
    let ib = ib % 8;
    let low = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F;
    let high = (u16::from_le_bytes(b.scales_h) >> (2 * ib)) & 3;
    low | ((high as u8) << 4)
}

/// Unpacks the 6-bit scales and mins of a Q4_K/Q5_K block: eight of each,
/// packed into 12 bytes.
#[inline]
pub fn kquant_scale_min(scales: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    // Four bytes at a time: scale/min j < 4 are the low 6 bits of bytes j
    // and j + 4; j ≥ 4 take their low 4 bits from a nibble of byte j + 4
    // and their top 2 bits from bits 6–7 of bytes j − 4 and j. The shifts
    // move bits across byte boundaries, and the masks keep only each
    // byte's own.
    let word =
        |i: usize| u32::from_le_bytes([scales[i], scales[i + 1], scales[i + 2], scales[i + 3]]);
    let (w0, w1, w2) = (word(0), word(4), word(8));
    let sc_lo = w0 & 0x3F3F_3F3F;
    let mn_lo = w1 & 0x3F3F_3F3F;
    let sc_hi = (w2 & 0x0F0F_0F0F) | ((w0 >> 2) & 0x3030_3030);
    let mn_hi = ((w2 >> 4) & 0x0F0F_0F0F) | ((w1 >> 2) & 0x3030_3030);
    let join = |lo: u32, hi: u32| {
        let (l, h) = (lo.to_le_bytes(), hi.to_le_bytes());
        [l[0], l[1], l[2], l[3], h[0], h[1], h[2], h[3]]
    };
    (join(sc_lo, sc_hi), join(mn_lo, mn_hi))
}

/// Unpacks the sixteen 6-bit signed scales of a Q3_K block.
#[inline]
pub fn q3k_scales(scales: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = (scales[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (scales[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{e8m0_half, kquant_scale_min};

    #[test]
    fn e8m0_half_is_two_to_the_e_less_128() {
        for e in 0..=255u8 {
            let want = 2f64.powi(i32::from(e) - 128);
            assert_eq!(f64::from(e8m0_half(e)), want, "e = {e}");
        }
    }

    /// The packing spelled out byte by byte, as the format describes it.
    fn bytewise(scales: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
        let mut sc = [0u8; 8];
        let mut mn = [0u8; 8];
        for j in 0..4 {
            sc[j] = scales[j] & 0x3F;
            mn[j] = scales[j + 4] & 0x3F;
            sc[j + 4] = (scales[j + 8] & 0x0F) | ((scales[j] >> 2) & 0x30);
            mn[j + 4] = (scales[j + 8] >> 4) | ((scales[j + 4] >> 2) & 0x30);
        }
        (sc, mn)
    }

    #[test]
    fn word_unpacking_equals_the_bytewise_definition() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..100_000 {
            let mut s = [0u8; 12];
            for b in &mut s {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            assert_eq!(kquant_scale_min(&s), bytewise(&s), "{s:?}");
        }
        for v in [0u8, 0xFF, 0x3F, 0xC0, 0x0F, 0xF0] {
            assert_eq!(kquant_scale_min(&[v; 12]), bytewise(&[v; 12]));
        }
    }
}
