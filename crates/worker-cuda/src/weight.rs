//! Weights on the device, in their GGUF encoding.

use crate::memory::Counted;
use worker_compute::{ComputeError, Result};
use worker_gguf::GgmlType;

/// A weight tensor on the device.
#[derive(Debug)]
pub enum CudaWeight {
    /// A matrix, bytes exactly as in the file.
    Matrix(DeviceMatrix),
    /// A 1-D tensor (norm weights, biases) as f32.
    Vector(Counted<f32>),
}

/// A weight matrix on the device, in its GGUF encoding.
#[derive(Debug)]
pub struct DeviceMatrix {
    /// The encoded rows.
    pub data: Counted<u8>,
    /// Element type.
    pub ty: GgmlType,
    /// Kernel type code (see `kernels/common.cuh`).
    pub code: i32,
    /// Rows.
    pub rows: usize,
    /// Elements per row.
    pub cols: usize,
    /// Bytes per row.
    pub row_bytes: usize,
}

impl CudaWeight {
    /// The matrix, or a shape error naming the op that needs one.
    pub fn matrix(&self, op: &str) -> Result<&DeviceMatrix> {
        match self {
            CudaWeight::Matrix(m) => Ok(m),
            CudaWeight::Vector(_) => Err(ComputeError::Shape(format!("{op} needs a matrix"))),
        }
    }

    /// The 1-D weight, which must hold at least `dim` values (a malformed
    /// file must not make a kernel read past it).
    pub fn vector(&self, dim: usize, what: &str) -> Result<&Counted<f32>> {
        match self {
            CudaWeight::Vector(v) if v.data.len() >= dim => Ok(v),
            CudaWeight::Vector(v) => Err(ComputeError::Shape(format!(
                "{what} has {} values, {dim} needed",
                v.data.len()
            ))),
            CudaWeight::Matrix(_) => Err(ComputeError::Shape(format!("{what} must be 1-D"))),
        }
    }
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
        GgmlType::Q2_K => 11,
        GgmlType::Q3_K => 12,
        GgmlType::IQ4_NL => 13,
        GgmlType::IQ4_XS => 14,
        GgmlType::MXFP4 => 15,
        _ => return None,
    })
}
