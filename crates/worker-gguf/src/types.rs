//! Tensor element types (`ggml_type`) and their block layouts.

use std::fmt;

/// Elements per super-block of the K-quant family.
pub const QK_K: usize = 256;

/// Declares [`GgmlType`] from one table, so ids, names and block layouts
/// cannot drift apart: `Variant = id, "name", block elements, block bytes`.
macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $name:literal, $block:expr, $bytes:expr;)*) => {
        /// A tensor's element type, with the numeric ids that GGUF files store.
        ///
        /// Every type llama.cpp writes is known here, so any file can be opened
        /// and inspected; [`crate::dequantize`] supports the subset that llorch
        /// computes with. Quantized types store elements in blocks:
        /// `block_size` elements packed into `type_size` bytes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types, missing_docs)]
        #[repr(u32)]
        pub enum GgmlType {
            $($variant = $id,)*
        }

        impl GgmlType {
            const ALL: &'static [GgmlType] = &[$(GgmlType::$variant,)*];

            /// The type with this on-disk id, if any.
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $($id => Some(GgmlType::$variant),)*
                    _ => None,
                }
            }

            /// The ggml name, e.g. `Q4_K`.
            pub fn name(self) -> &'static str {
                match self {
                    $(GgmlType::$variant => $name,)*
                }
            }

            /// Elements per block (1 for plain types).
            pub fn block_size(self) -> usize {
                match self {
                    $(GgmlType::$variant => $block,)*
                }
            }

            /// Bytes per block.
            pub fn type_size(self) -> usize {
                match self {
                    $(GgmlType::$variant => $bytes,)*
                }
            }
        }
    };
}

ggml_types! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 18;
    Q4_1 = 3, "Q4_1", 32, 20;
    Q5_0 = 6, "Q5_0", 32, 22;
    Q5_1 = 7, "Q5_1", 32, 24;
    Q8_0 = 8, "Q8_0", 32, 34;
    Q8_1 = 9, "Q8_1", 32, 40;
    Q2_K = 10, "Q2_K", QK_K, 84;
    Q3_K = 11, "Q3_K", QK_K, 110;
    Q4_K = 12, "Q4_K", QK_K, 144;
    Q5_K = 13, "Q5_K", QK_K, 176;
    Q6_K = 14, "Q6_K", QK_K, 210;
    Q8_K = 15, "Q8_K", QK_K, 292;
    IQ2_XXS = 16, "IQ2_XXS", QK_K, 66;
    IQ2_XS = 17, "IQ2_XS", QK_K, 74;
    IQ3_XXS = 18, "IQ3_XXS", QK_K, 98;
    IQ1_S = 19, "IQ1_S", QK_K, 50;
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    IQ3_S = 21, "IQ3_S", QK_K, 110;
    IQ2_S = 22, "IQ2_S", QK_K, 82;
    IQ4_XS = 23, "IQ4_XS", QK_K, 136;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    IQ1_M = 29, "IQ1_M", QK_K, 56;
    BF16 = 30, "BF16", 1, 2;
    TQ1_0 = 34, "TQ1_0", QK_K, 54;
    TQ2_0 = 35, "TQ2_0", QK_K, 66;
    MXFP4 = 39, "MXFP4", 32, 17;
    NVFP4 = 40, "NVFP4", 64, 36;
    Q1_0 = 41, "Q1_0", 128, 18;
}

impl GgmlType {
    /// Every known type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        GgmlType::ALL.iter().copied()
    }

    /// The on-disk id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The type whose ggml name is `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::all().find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Whether the type packs elements into quantized blocks.
    pub fn is_quantized(self) -> bool {
        !matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::F64
                | GgmlType::I8
                | GgmlType::I16
                | GgmlType::I32
                | GgmlType::I64
        )
    }

    /// Bytes needed for `n_elements` elements, or `None` when `n_elements`
    /// is not a whole number of blocks or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n_elements.is_multiple_of(block) {
            return None;
        }
        (n_elements / block).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name llama.cpp gives a `general.file_type` value (`llama_ftype`),
/// e.g. 15 → `Q4_K_M`.
pub fn file_type_name(file_type: u32) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        39 => "NVFP4",
        40 => "Q1_0",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let all: Vec<_> = GgmlType::all().collect();
        for (i, a) in all.iter().enumerate() {
            assert_eq!(GgmlType::from_id(a.id()), Some(*a));
            assert_eq!(GgmlType::from_name(a.name()), Some(*a));
            for b in &all[i + 1..] {
                assert_ne!(a, b);
                assert_ne!(a.id(), b.id());
            }
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q4_K.bytes_for(100), None);
        assert_eq!(file_type_name(15), Some("Q4_K_M"));
    }
}
