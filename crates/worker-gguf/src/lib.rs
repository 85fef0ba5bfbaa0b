//! GGUF files: reading over mmap, validation, typed metadata, dequantization
//! and writing.
//!
//! GGUF is llama.cpp's model format: a header of key/value metadata and
//! tensor infos, then an aligned data section holding every tensor's bytes.
//! This crate reads it the way a server that loads untrusted files must:
//!
//! - **Header only.** [`GgufFile::open`] maps the file and parses the
//!   header; tensor data stays on disk until a caller touches it, as a
//!   zero-copy `&[u8]` into the map. Opening a multi-gigabyte model takes
//!   milliseconds.
//! - **Every malformed file is a typed error** ([`GgufError`]): truncation
//!   anywhere, lengths beyond the file, unknown types, bad shapes, misaligned,
//!   out-of-bounds or overlapping data, duplicate names. Counts read from the
//!   file are checked against the bytes left before anything is allocated,
//!   so a hostile count cannot make the reader reserve memory.
//! - **Typed metadata.** [`Metadata::get_u32`] and friends name the key that
//!   is missing or has the wrong type; [`Metadata::arch`] reads
//!   architecture-prefixed keys (`llama.block_count`). Arrays are stored as
//!   typed vectors, so a 262k-token vocabulary is one `Vec<String>`.
//! - **Dequantization** ([`dequantize`]) of F32, F16, BF16, Q4_0, Q4_1, Q5_0,
//!   Q5_1, Q8_0, Q2_K–Q6_K, IQ4_NL, IQ4_XS and MXFP4, bit-exact with the `gguf`
//!   Python package. The block layouts are in [`blocks`], one `#[repr(C)]`
//!   struct per type, viewed in place from file bytes; compute kernels reuse
//!   them.
//! - **Writing** ([`GgufWriter`]) for tests, fixtures and benchmark models;
//!   reading what it wrote gives back the same metadata and tensors.
//!
//! It knows nothing of compute: models and backends build on it.

pub mod blocks;
mod dequant;
mod error;
mod facts;
mod file;
mod metadata;
mod reader;
mod tensor;
mod types;
mod value;
mod writer;

pub use dequant::{DEQUANT_TYPES, dequantize, dequantize_to_vec};
pub use error::{GgufError, Result};
pub use facts::{file_stem, model_facts, parameter_count, quantization};
pub use file::{GgufFile, Tensor};
pub use metadata::{ArchMetadata, FromValue, Metadata, Mismatch};
pub use reader::{DEFAULT_ALIGNMENT, Header, MAX_ARRAY_NESTING, MAX_DIMS, parse_header};
pub use tensor::TensorInfo;
pub use types::{GgmlType, QK_K, file_type_name};
pub use value::{Array, Value, ValueType};
pub use writer::GgufWriter;
