//! Parsing and validating the GGUF header: metadata and tensor infos.
//!
//! The parser works on a byte slice (the memory map) and reads only the
//! header; tensor data is never touched. Every length and count in the file
//! is untrusted: before anything is allocated for `n` entries, the reader
//! checks that the rest of the file could hold `n` entries of the smallest
//! possible encoding, so a hostile count fails fast instead of reserving
//! gigabytes.

use crate::GgmlType;
use crate::error::{GgufError, Result};
use crate::metadata::Metadata;
use crate::tensor::TensorInfo;
use crate::value::{Array, Value, ValueType};
use std::collections::HashMap;

/// `GGUF` as it appears at the start of every file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest array nesting the reader accepts. llama.cpp itself reads no
/// nested arrays; the bound keeps recursion on hostile input shallow.
pub const MAX_ARRAY_NESTING: usize = 4;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// Smallest possible encoding of one key/value pair: an empty key (8-byte
/// length), the type (4) and a one-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// Smallest possible encoding of one tensor info: an empty name (8), the
/// dimension count (4), one dimension (8), the type (4) and the offset (8).
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 4 + 8 + 4 + 8;

/// The parsed header of a GGUF file.
#[derive(Debug, Clone)]
pub struct Header {
    /// The format version (2 or 3).
    pub version: u32,
    /// All key/value metadata, in file order.
    pub metadata: Metadata,
    /// All tensor infos, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section and of every tensor in it.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    index: HashMap<String, usize>,
}

impl Header {
    /// The tensor info with this name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The end of the last tensor's data (absolute), or the data offset when
    /// there are no tensors. Anything after it is padding.
    pub fn data_end(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| self.data_offset + t.offset + t.n_bytes)
            .max()
            .unwrap_or(self.data_offset)
    }
}

/// Parses and validates the header of a GGUF file held in `bytes`.
///
/// `bytes` must be the whole file: tensor bounds are checked against its
/// length. Only the header is read.
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    let mut cur = Cursor { buf: bytes, pos: 0 };

    let magic = cur.take(4, "the magic bytes")?;
    if magic != MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(magic);
        return Err(GgufError::BadMagic { found });
    }
    let version = cur.u32("the version")?;
    if version & 0xFFFF == 0 && matches!(version.swap_bytes(), 1..=3) {
        return Err(GgufError::BigEndian);
    }
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { version });
    }

    let n_tensors = cur.count("the tensor count", MIN_TENSOR_INFO_SIZE)?;
    let n_kv = cur.count("the metadata count", MIN_KV_SIZE)?;

    let mut metadata = Metadata::new();
    for _ in 0..n_kv {
        let key = cur.string("a metadata key")?;
        let type_id = cur.u32("a metadata value type")?;
        let value = cur.value(&key, type_id, 0)?;
        metadata.insert(key, value)?;
    }

    let alignment = alignment_of(&metadata)?;

    let mut tensors = Vec::with_capacity(n_tensors);
    let mut index = HashMap::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let info = cur.tensor_info()?;
        if index.insert(info.name.clone(), tensors.len()).is_some() {
            return Err(GgufError::DuplicateTensor { name: info.name });
        }
        tensors.push(info);
    }

    let data_offset = align_up(cur.pos as u64, alignment);
    check_tensor_data(&tensors, data_offset, alignment, bytes.len() as u64)?;

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        index,
    })
}

fn alignment_of(metadata: &Metadata) -> Result<u64> {
    let Some(value) = metadata.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match value.as_integer() {
        Some(a) if a > 0 && a <= u32::MAX.into() && (a as u64).is_power_of_two() => Ok(a as u64),
        Some(a) => Err(GgufError::BadAlignment {
            found: a.to_string(),
        }),
        None => Err(GgufError::BadAlignment {
            found: format!("a value of type {}", value.type_description()),
        }),
    }
}

/// Rounds `offset` up to a multiple of `alignment` (a power of two).
pub(crate) fn align_up(offset: u64, alignment: u64) -> u64 {
    offset.div_ceil(alignment).saturating_mul(alignment)
}

fn check_tensor_data(
    tensors: &[TensorInfo],
    data_offset: u64,
    alignment: u64,
    len: u64,
) -> Result<()> {
    for t in tensors {
        if !t.offset.is_multiple_of(alignment) {
            return Err(GgufError::Misaligned {
                name: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= len => {}
            _ => {
                return Err(GgufError::DataOutOfBounds {
                    name: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    len,
                });
            }
        }
    }

    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        // Offsets and sizes were bounded by the file length just above.
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(GgufError::OverlappingData {
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
            });
        }
    }
    Ok(())
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what,
                offset: self.pos as u64,
                needed: n,
                len: self.buf.len() as u64,
            });
        }
        // n <= remaining, which fits in usize.
        let n = n as usize;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a count and checks that `count` entries of at least
    /// `min_size` bytes each fit in the rest of the file.
    fn count(&mut self, what: &'static str, min_size: u64) -> Result<usize> {
        let offset = self.pos as u64;
        let count = self.u64(what)?;
        let remaining = self.remaining();
        if count.saturating_mul(min_size) > remaining {
            return Err(GgufError::CountBeyondFile {
                what,
                offset,
                count,
                remaining,
            });
        }
        // Bounded by the file length, so it fits in usize.
        Ok(count as usize)
    }

    fn string(&mut self, what: &'static str) -> Result<String> {
        let offset = self.pos as u64;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 { what, offset })
    }

    fn value(&mut self, key: &str, type_id: u32, depth: usize) -> Result<Value> {
        let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_string(),
            type_id,
        })?;
        const W: &str = "a metadata value";
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array(W)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(W)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(W)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(W)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(W)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(W)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(W)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(W)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(W)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(W)?)),
            ValueType::Bool => Value::Bool(self.bool(key)?),
            ValueType::String => Value::String(self.string("a metadata string")?),
            ValueType::Array => Value::Array(self.array_value(key, depth)?),
        })
    }

    fn bool(&mut self, key: &str) -> Result<bool> {
        match self.array::<1>("a metadata bool")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(GgufError::InvalidBool {
                key: key.to_string(),
                byte,
            }),
        }
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array> {
        if depth >= MAX_ARRAY_NESTING {
            return Err(GgufError::NestingTooDeep {
                key: key.to_string(),
                max: MAX_ARRAY_NESTING,
            });
        }
        let type_id = self.u32("an array element type")?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_string(),
            type_id,
        })?;
        let n = self.count("an array length", ty.min_encoded_size())?;

        macro_rules! numbers {
            ($variant:ident, $t:ty) => {{
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(<$t>::from_le_bytes(self.array("an array element")?));
                }
                Array::$variant(v)
            }};
        }

        Ok(match ty {
            ValueType::U8 => Array::U8(self.take(n as u64, "an array")?.to_vec()),
            ValueType::I8 => numbers!(I8, i8),
            ValueType::U16 => numbers!(U16, u16),
            ValueType::I16 => numbers!(I16, i16),
            ValueType::U32 => numbers!(U32, u32),
            ValueType::I32 => numbers!(I32, i32),
            ValueType::F32 => numbers!(F32, f32),
            ValueType::U64 => numbers!(U64, u64),
            ValueType::I64 => numbers!(I64, i64),
            ValueType::F64 => numbers!(F64, f64),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(key)?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string("an array string")?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo> {
        let name = self.string("a tensor name")?;
        let n_dims = self.u32("a tensor's dimension count")?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims { name, n_dims });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64("a tensor dimension")?);
        }
        let type_id = self.u32("a tensor type")?;
        let offset = self.u64("a tensor offset")?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            type_id,
        })?;
        TensorInfo::new(name, dims, ty, offset)
    }
}
