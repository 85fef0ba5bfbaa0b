//! The one error type of this crate.

use crate::GgmlType;
use std::path::PathBuf;

/// Everything that can go wrong reading, validating or writing a GGUF file.
///
/// Every malformed file maps to one of these variants; the reader never
/// panics and never allocates according to a count it has not checked
/// against the size of the file. Offsets are absolute byte offsets into the
/// file, so a message can be checked with a hex dump.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, mapped or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: the magic bytes are {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },

    /// A version this reader does not handle (only 2 and 3 are supported).
    #[error(
        "GGUF version {version} is not supported (versions 2 and 3 are); convert the model again with a current llama.cpp"
    )]
    UnsupportedVersion {
        /// The version in the header.
        version: u32,
    },

    /// The file was written big-endian; only little-endian files are read.
    #[error("big-endian GGUF files are not supported; convert the model with little-endian output")]
    BigEndian,

    /// The file ends in the middle of something.
    #[error(
        "file is truncated: reading {what} at offset {offset} needs {needed} bytes, but the file has {len}"
    )]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// The file's length.
        len: u64,
    },

    /// A count or length that cannot fit in the rest of the file.
    #[error(
        "{what} at offset {offset} declares {count} entries, more than the {remaining} bytes left in the file can hold"
    )]
    CountBeyondFile {
        /// What was counted.
        what: &'static str,
        /// Where the count is.
        offset: u64,
        /// The declared count.
        count: u64,
        /// Bytes left after the count.
        remaining: u64,
    },

    /// A string that is not valid UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// What the string is.
        what: &'static str,
        /// Where it starts.
        offset: u64,
    },

    /// A metadata value type id outside 0..=12.
    #[error("metadata key {key:?}: unknown value type id {type_id}")]
    UnknownValueType {
        /// The key whose value has the type.
        key: String,
        /// The type id found.
        type_id: u32,
    },

    /// A bool stored as something other than 0 or 1.
    #[error("metadata key {key:?}: a bool must be 0 or 1, found {byte}")]
    InvalidBool {
        /// The key.
        key: String,
        /// The byte found.
        byte: u8,
    },

    /// Arrays nested deeper than the reader allows.
    #[error("metadata key {key:?}: arrays nested deeper than {max} levels")]
    NestingTooDeep {
        /// The key.
        key: String,
        /// The limit.
        max: usize,
    },

    /// The same metadata key twice.
    #[error("metadata key {key:?} appears twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },

    /// `general.alignment` is zero, not a power of two, or not a u32.
    #[error("general.alignment must be a power of two stored as u32, found {found}")]
    BadAlignment {
        /// The value found, as text.
        found: String,
    },

    /// The same tensor name twice.
    #[error("tensor {name:?} appears twice")]
    DuplicateTensor {
        /// The name.
        name: String,
    },

    /// A tensor with more than four dimensions.
    #[error("tensor {name:?} has {n_dims} dimensions; at most 4 are supported")]
    TooManyDims {
        /// The tensor.
        name: String,
        /// Its dimension count.
        n_dims: u32,
    },

    /// A tensor with no dimensions, or a dimension of zero.
    #[error(
        "tensor {name:?} has an empty shape {dims:?}: every tensor needs 1 to 4 non-zero dimensions"
    )]
    EmptyShape {
        /// The tensor.
        name: String,
        /// Its dimensions.
        dims: Vec<u64>,
    },

    /// A shape whose element or byte count overflows 64 bits.
    #[error("tensor {name:?}: shape {dims:?} is too large (its size overflows)")]
    ShapeOverflow {
        /// The tensor.
        name: String,
        /// Its dimensions.
        dims: Vec<u64>,
    },

    /// A tensor type id this reader does not know.
    #[error("tensor {name:?}: unknown tensor type id {type_id}")]
    UnknownTensorType {
        /// The tensor.
        name: String,
        /// The type id found.
        type_id: u32,
    },

    /// A row length that is not a whole number of quantization blocks.
    #[error(
        "tensor {name:?}: first dimension {ne0} is not a multiple of the {ty} block size {block}"
    )]
    NotBlockMultiple {
        /// The tensor.
        name: String,
        /// Its type.
        ty: GgmlType,
        /// Its first dimension.
        ne0: u64,
        /// The type's block size.
        block: usize,
    },

    /// Tensor data that does not start on the file's alignment.
    #[error("tensor {name:?}: data offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        /// The tensor.
        name: String,
        /// Its offset within the data section.
        offset: u64,
        /// The alignment.
        alignment: u64,
    },

    /// Tensor data that runs past the end of the file.
    #[error(
        "tensor {name:?}: data at bytes {start}..{end} lies beyond the end of the file ({len} bytes)"
    )]
    DataOutOfBounds {
        /// The tensor.
        name: String,
        /// Absolute start offset.
        start: u64,
        /// Absolute end offset.
        end: u64,
        /// The file's length.
        len: u64,
    },

    /// Two tensors whose data ranges overlap.
    #[error("tensors {first:?} and {second:?} overlap in the data section")]
    OverlappingData {
        /// The tensor that starts first.
        first: String,
        /// The tensor that starts inside it.
        second: String,
    },

    /// A metadata key that is not there.
    #[error("metadata key {key:?} is missing")]
    MissingKey {
        /// The key.
        key: String,
    },

    /// A metadata key of another type than asked for.
    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What the caller asked for.
        expected: &'static str,
        /// What the file holds.
        found: String,
    },

    /// An integer value outside the range asked for.
    #[error("metadata key {key:?}: value {value} does not fit in {expected}")]
    OutOfRange {
        /// The key.
        key: String,
        /// What the caller asked for.
        expected: &'static str,
        /// The value, as text.
        value: String,
    },

    /// A tensor name that is not in the file.
    #[error("tensor {name:?} is not in the file")]
    TensorNotFound {
        /// The name.
        name: String,
    },

    /// A tensor type that [`crate::dequantize`] does not decode.
    #[error("dequantizing {ty} is not supported")]
    UnsupportedDequant {
        /// The type.
        ty: GgmlType,
    },

    /// Dequantization input or output of the wrong size.
    #[error("dequantizing {ty}: {n_bytes} input bytes do not hold {n_elements} elements")]
    DequantSize {
        /// The type.
        ty: GgmlType,
        /// Input length.
        n_bytes: usize,
        /// Output length.
        n_elements: usize,
    },

    /// A tensor handed to the writer whose bytes do not match its shape.
    #[error("tensor {name:?}: {ty} shape {dims:?} needs {expected} bytes, got {got}")]
    TensorSize {
        /// The tensor.
        name: String,
        /// Its type.
        ty: GgmlType,
        /// Its dimensions.
        dims: Vec<u64>,
        /// Bytes the shape needs.
        expected: u64,
        /// Bytes given.
        got: u64,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
