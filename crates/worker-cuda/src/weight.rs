//! Weights on the device, in their GGUF encoding.

use crate::memory::Counted;
use worker_gguf::GgmlType;

/// A weight tensor on the device.
#[derive(Debug)]
pub enum CudaWeight {
    /// A matrix, bytes exactly as in the file.
    Matrix {
        /// The encoded rows.
        data: Counted<u8>,
        /// Element type.
        ty: GgmlType,
        /// Kernel type code (see `kernels/common.cuh`).
        code: i32,
        /// Rows.
        rows: usize,
        /// Elements per row.
        cols: usize,
        /// Bytes per row.
        row_bytes: usize,
    },
    /// A 1-D tensor (norm weights, biases) as f32.
    Vector(Counted<f32>),
}

/// The kernel code of a matrix type, if the kernels decode it.
pub fn type_code(ty: GgmlType) -> Option<i32> {
    Some(match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::BF16 => 2,
        GgmlType::Q4_0 => 3,
        GgmlType::Q4_1 => 4,
        GgmlType::Q5_0 => 5,
        GgmlType::Q5_1 => 6,
        GgmlType::Q8_0 => 7,
        GgmlType::Q4_K => 8,
        GgmlType::Q5_K => 9,
        GgmlType::Q6_K => 10,
        _ => return None,
    })
}
