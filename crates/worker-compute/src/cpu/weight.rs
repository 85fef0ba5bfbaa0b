//! The CPU backend's weights: matrices kept in their GGUF encoding (in the
//! map or copied to huge pages), 1-D tensors expanded to f32 once.

use super::matmul::MatRef;
use super::storage::MatrixBytes;
use crate::error::{ComputeError, Result};
use crate::types::WeightSource;
use std::sync::Arc;
use worker_gguf::dequantize;

/// A weight on the CPU: matrices stay in the map, vectors are expanded.
#[derive(Debug)]
pub enum CpuWeight {
    /// A matrix in its GGUF encoding, viewed in the memory map.
    Matrix {
        /// The encoded bytes: in the map, or copied to huge pages (shared
        /// by the weights that name the same tensor, such as a tied output
        /// projection and the embedding table).
        bytes: Arc<MatrixBytes>,
        /// Element type.
        ty: worker_gguf::GgmlType,
        /// Rows.
        rows: usize,
        /// Elements per row.
        cols: usize,
    },
    /// A 1-D tensor (norm weights, biases) as f32.
    Vector(Vec<f32>),
}

impl CpuWeight {
    /// The matrix view, or `None` for a vector.
    pub fn mat(&self) -> Option<MatRef<'_>> {
        match self {
            CpuWeight::Matrix {
                bytes,
                ty,
                rows,
                cols,
            } => Some(MatRef {
                ty: *ty,
                rows: *rows,
                cols: *cols,
                data: bytes.bytes(),
            }),
            CpuWeight::Vector(_) => None,
        }
    }

    pub(crate) fn vector(&self) -> Result<&[f32]> {
        match self {
            CpuWeight::Vector(v) => Ok(v),
            CpuWeight::Matrix { .. } => Err(ComputeError::Shape("expected a 1-D tensor".into())),
        }
    }

    pub(crate) fn mat_or_err(&self) -> Result<MatRef<'_>> {
        self.mat()
            .ok_or_else(|| ComputeError::Shape("expected a matrix".into()))
    }
}

/// The 1-D weight `src` of tensor `t` (a norm, a bias, one expert's bias,
/// or a small tensor read whole) decoded to f32; a file that claims a huge
/// one gets an error, not an abort.
pub(crate) fn vector(src: &WeightSource, t: &worker_gguf::Tensor<'_>) -> Result<CpuWeight> {
    let ty = t.info.ty;
    let x = src.extent(t.info.n_bytes)?;
    let bytes = t.data.get(x.offset..x.offset + x.len).ok_or_else(|| {
        ComputeError::Shape(format!(
            "tensor {:?}: its data is shorter than its shape",
            src.name
        ))
    })?;
    let n = x.cols;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| ComputeError::OutOfMemory {
            what: "a vector weight",
            need_bytes: (n as u64).saturating_mul(4),
        })?;
    v.resize(n, 0f32);
    dequantize(ty, bytes, &mut v).map_err(|_| ComputeError::UnsupportedType {
        name: src.name.clone(),
        ty,
        backend: "cpu",
    })?;
    Ok(CpuWeight::Vector(v))
}
