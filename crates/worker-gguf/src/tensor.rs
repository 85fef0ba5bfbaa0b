//! Tensor infos: name, shape, type and where the data lies.

use crate::GgmlType;
use crate::error::{GgufError, Result};
use crate::reader::MAX_DIMS;

/// One tensor's entry in the header. The shape is in GGUF order: `dims[0]`
/// is the row length (ggml's `ne[0]`), the fastest-varying dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost first; 1 to 4 of them, none zero.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Number of elements.
    pub n_elements: u64,
    /// Number of bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Builds an info, validating the shape against the type.
    pub fn new(name: String, dims: Vec<u64>, ty: GgmlType, offset: u64) -> Result<Self> {
        if dims.len() > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                name,
                n_dims: dims.len() as u32,
            });
        }
        if dims.is_empty() || dims.contains(&0) {
            return Err(GgufError::EmptyShape { name, dims });
        }
        // ggml counts elements in int64, so the product must fit there.
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64);
        let Some(n_elements) = n_elements else {
            return Err(GgufError::ShapeOverflow { name, dims });
        };
        let block = ty.block_size();
        if !dims[0].is_multiple_of(block as u64) {
            return Err(GgufError::NotBlockMultiple {
                name,
                ty,
                ne0: dims[0],
                block,
            });
        }
        let Some(n_bytes) = ty.bytes_for(n_elements).filter(|&b| b <= i64::MAX as u64) else {
            return Err(GgufError::ShapeOverflow { name, dims });
        };
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_elements,
            n_bytes,
        })
    }

    /// Elements per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims[0]
    }

    /// Number of rows (the product of all dimensions but the first).
    pub fn n_rows(&self) -> u64 {
        self.n_elements / self.dims[0]
    }
}
