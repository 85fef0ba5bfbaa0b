//! Weights on the device, in their GGUF encoding.

use crate::backend::{CudaBackend, shape};
use crate::memory::{self, Counted};
use worker_compute::{ComputeError, Result, WeightSource};
use worker_gguf::{GgmlType, dequantize};

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

impl CudaBackend {
    /// Uploads one weight: a matrix byte for byte in its GGUF encoding, a
    /// 1-D tensor (norm, bias) decoded to f32.
    pub(crate) fn upload_weight(&self, src: WeightSource) -> Result<CudaWeight> {
        self.flush()?;
        let t = src
            .file
            .tensor(&src.name)
            .map_err(|e| ComputeError::Shape(e.to_string()))?;
        let ty = t.info.ty;
        let unsupported = || ComputeError::UnsupportedType {
            name: src.name.clone(),
            ty,
            backend: "cuda",
        };
        if src.is_vector() {
            // Norms and biases (one expert's, of a stack) as f32.
            let x = src.extent(t.info.n_bytes)?;
            let bytes = t.data.get(x.offset..x.offset + x.len).ok_or_else(|| {
                shape(format!(
                    "tensor {:?}: its data is shorter than its shape",
                    src.name
                ))
            })?;
            let mut v = vec![0f32; x.cols];
            dequantize(ty, bytes, &mut v).map_err(|_| unsupported())?;
            return Ok(CudaWeight::Vector(memory::upload(
                &self.stream,
                &self.counter,
                &v,
                "a weight",
            )?));
        }
        let code = type_code(ty).ok_or_else(unsupported)?;
        let x = src.extent(t.info.n_bytes)?;
        let (rows, cols) = (x.rows, x.cols);
        let data = t.data.get(x.offset..x.offset + x.len).ok_or_else(|| {
            shape(format!(
                "tensor {:?}: its data is shorter than its shape",
                src.name
            ))
        })?;
        if !cols.is_multiple_of(32) || rows == 0 {
            return Err(shape(format!(
                "tensor {:?}: rows of {cols} values are not whole groups of 32",
                src.name
            )));
        }
        self.max_cols
            .fetch_max(cols, std::sync::atomic::Ordering::Relaxed);
        Ok(CudaWeight::Matrix(DeviceMatrix {
            data: memory::upload(&self.stream, &self.counter, data, "a weight")?,
            ty,
            code,
            rows,
            cols,
            row_bytes: data.len() / rows,
        }))
    }
}
