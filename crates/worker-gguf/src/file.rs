//! An open GGUF file: the memory map (or a byte buffer) plus its header.

use crate::dequant::dequantize;
use crate::error::{GgufError, Result};
use crate::metadata::Metadata;
use crate::reader::{Header, parse_header};
use crate::tensor::TensorInfo;
use memmap2::Mmap;
use std::fs::File;
use std::ops::Deref;
use std::path::Path;

enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A validated GGUF file whose tensor data is a zero-copy view.
///
/// [`GgufFile::open`] maps the file and parses only its header, so opening a
/// multi-gigabyte model costs milliseconds and no resident memory beyond the
/// header pages; tensor bytes are paged in when a tensor is first read.
///
/// The map is shared with the file on disk: if another process truncates the
/// file while it is mapped, reading a tensor raises `SIGBUS`. Model files are
/// written once and never modified in place (`fetch` writes to a temporary
/// name and renames), which is what makes mapping them safe in practice.
pub struct GgufFile {
    storage: Storage,
    header: Header,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("len", &self.storage.len())
            .field("version", &self.header.version)
            .field("metadata_keys", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

/// A tensor's info with a view of its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    /// The tensor's header entry.
    pub info: &'a TensorInfo,
    /// Its raw data, exactly `info.n_bytes` long, in the file's encoding.
    pub data: &'a [u8],
}

impl GgufFile {
    /// Maps and validates the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let storage = if len == 0 {
            // A zero-length map is an error on some systems; an empty buffer
            // gives the same "truncated" error as any other short file.
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and lives as long as `self`. The
            // only hazard is another process truncating the file while it is
            // mapped (see the type's docs); nothing in this process writes it.
            Storage::Mapped(unsafe { Mmap::map(&file) }.map_err(io_err)?)
        };
        Self::from_storage(storage)
    }

    /// Validates a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<Self> {
        let header = parse_header(&storage)?;
        Ok(GgufFile { storage, header })
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The key/value metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    /// Tensor infos in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.storage
    }

    /// Tells the OS that this process no longer needs `len` bytes at
    /// `start` mapped, for a reader that has copied them: they leave the
    /// resident set, and a later read maps them again from the file. A hint
    /// (errors are ignored); nothing for a file held in memory.
    pub fn release(&self, start: usize, len: usize) {
        #[cfg(unix)]
        if let Storage::Mapped(map) = &self.storage
            && start.checked_add(len).is_some_and(|end| end <= map.len())
        {
            // SAFETY: the map is a read-only shared map of a file that is
            // never written in place (see the type's docs). Dropping its
            // pages changes no byte a later read sees: the kernel maps them
            // again from the file, so every slice handed out stays valid
            // and unchanged.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
            };
        }
        #[cfg(not(unix))]
        let _ = (start, len);
    }

    /// Size of the file in bytes.
    pub fn len(&self) -> u64 {
        self.storage.len() as u64
    }

    /// Whether the file is empty (never true for a valid file).
    pub fn is_empty(&self) -> bool {
        self.storage.is_empty()
    }

    /// The tensor called `name`, with its data.
    pub fn tensor(&self, name: &str) -> Result<Tensor<'_>> {
        let info = self
            .header
            .tensor(name)
            .ok_or_else(|| GgufError::TensorNotFound {
                name: name.to_string(),
            })?;
        Ok(self.view(info))
    }

    /// Every tensor with its data, in file order.
    pub fn tensors(&self) -> impl Iterator<Item = Tensor<'_>> {
        self.header.tensors.iter().map(|info| self.view(info))
    }

    fn view<'a>(&'a self, info: &'a TensorInfo) -> Tensor<'a> {
        // Bounds were checked when the header was parsed; `get` keeps this
        // panic-free regardless.
        let start = (self.header.data_offset + info.offset) as usize;
        let data = self
            .storage
            .get(start..start + info.n_bytes as usize)
            .unwrap_or_default();
        Tensor { info, data }
    }

    /// The tensor called `name`, dequantized to f32 (allocates).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor(name)?;
        let mut out = vec![0f32; t.info.n_elements as usize];
        dequantize(t.info.ty, t.data, &mut out)?;
        Ok(out)
    }
}
