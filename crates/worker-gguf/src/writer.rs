//! Writing GGUF files: metadata, tensor infos and aligned tensor data.

use crate::GgmlType;
use crate::error::{GgufError, Result};
use crate::metadata::Metadata;
use crate::reader::{DEFAULT_ALIGNMENT, MAGIC, align_up};
use crate::tensor::TensorInfo;
use crate::value::{Array, Value};
use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;

/// Builds a GGUF v3 file in memory and writes it out.
///
/// Quantized data is passed through as bytes, so the writer produces any
/// tensor type without knowing how to quantize it. Each tensor's data starts
/// at a multiple of the alignment and is padded to one, as llama.cpp does.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Metadata,
    tensors: Vec<(TensorInfo, Vec<u8>)>,
    names: HashSet<String>,
    alignment: Option<u64>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the data alignment (a power of two) and records it as
    /// `general.alignment`.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<()> {
        if !alignment.is_power_of_two() {
            return Err(GgufError::BadAlignment {
                found: alignment.to_string(),
            });
        }
        self.alignment = Some(alignment.into());
        self.metadata
            .set("general.alignment", Value::U32(alignment));
        Ok(())
    }

    /// Adds a metadata key; a duplicate key is an error.
    pub fn add(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<()> {
        self.metadata.insert(key, value.into())
    }

    /// The metadata collected so far.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Adds a tensor from its raw bytes, which must match `dims` and `ty`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<()> {
        let name = name.into();
        if self.names.contains(&name) {
            return Err(GgufError::DuplicateTensor { name });
        }
        let info = TensorInfo::new(name, dims.to_vec(), ty, 0)?;
        if info.n_bytes != data.len() as u64 {
            return Err(GgufError::TensorSize {
                name: info.name,
                ty,
                dims: dims.to_vec(),
                expected: info.n_bytes,
                got: data.len() as u64,
            });
        }
        self.names.insert(info.name.clone());
        self.tensors.push((info, data));
        Ok(())
    }

    /// Adds an F32 tensor.
    pub fn add_f32(&mut self, name: impl Into<String>, dims: &[u64], values: &[f32]) -> Result<()> {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_tensor(name, dims, GgmlType::F32, bytes)
    }

    fn alignment(&self) -> u64 {
        self.alignment.unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Writes the file.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let alignment = self.alignment();
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in self.metadata.iter() {
            put_string(&mut header, key);
            header.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut header, value);
        }
        let mut offset = 0u64;
        for (info, _) in &self.tensors {
            put_string(&mut header, &info.name);
            header.extend_from_slice(&(info.dims.len() as u32).to_le_bytes());
            for d in &info.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&info.ty.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = align_up(offset + info.n_bytes, alignment);
        }
        w.write_all(&header)?;

        let zeros = vec![0u8; alignment as usize];
        let header_len = header.len() as u64;
        let data_start = align_up(header_len, alignment);
        w.write_all(&zeros[..(data_start - header_len) as usize])?;
        for (info, data) in &self.tensors {
            w.write_all(data)?;
            let padded = align_up(info.n_bytes, alignment);
            w.write_all(&zeros[..(padded - info.n_bytes) as usize])?;
        }
        Ok(())
    }

    /// The file as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_to(&mut out);
        out
    }

    /// Writes the file to `path` through a temporary name and a rename, so a
    /// reader never sees a half-written model.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".partial");
        let tmp = Path::new(&tmp_name);
        let file = std::fs::File::create(tmp).map_err(io_err)?;
        let mut w = io::BufWriter::new(file);
        self.write_to(&mut w).map_err(io_err)?;
        w.into_inner()
            .map_err(|e| io_err(e.into_error()))?
            .sync_all()
            .map_err(io_err)?;
        std::fs::rename(tmp, path).map_err(io_err)
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, array: &Array) {
    out.extend_from_slice(&(array.element_type() as u32).to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    macro_rules! numbers {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match array {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => numbers!(v),
        Array::U16(v) => numbers!(v),
        Array::I16(v) => numbers!(v),
        Array::U32(v) => numbers!(v),
        Array::I32(v) => numbers!(v),
        Array::F32(v) => numbers!(v),
        Array::U64(v) => numbers!(v),
        Array::I64(v) => numbers!(v),
        Array::F64(v) => numbers!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_string(out, s)),
        Array::Array(v) => v.iter().for_each(|a| put_array(out, a)),
    }
}
