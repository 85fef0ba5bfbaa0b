//! Model facts derived from a file: what `inspect`, `fetch` and the worker's
//! report say about a model.

use crate::error::Result;
use crate::types::file_type_name;
use crate::{GgmlType, GgufFile};
use std::collections::HashMap;
use std::path::Path;
use worker_common::ModelFacts;

/// The facts of the model in `file`, read from `path` (used for the name
/// when the file has no `general.name`).
///
/// Fails only when `general.architecture` is missing or not a string, or a
/// well-known key has the wrong type: every model file has an architecture.
pub fn model_facts(file: &GgufFile, path: &Path) -> Result<ModelFacts> {
    let meta = file.metadata();
    let arch = meta.arch()?;
    let name = match meta.get_opt::<&str>("general.name")? {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => file_stem(path),
    };
    Ok(ModelFacts {
        architecture: arch.name().to_string(),
        name,
        quantization: quantization(file)?,
        parameters: parameter_count(file),
        context_length: arch.get_opt::<u64>("context_length")?,
        size_bytes: file.len(),
        sha256: None,
    })
}

/// The file stem of `path`, e.g. `gemma-3-270m-q4_k_m`.
pub fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Total number of elements over all tensors.
pub fn parameter_count(file: &GgufFile) -> u64 {
    file.tensor_infos().iter().map(|t| t.n_elements).sum()
}

/// The file type in llama.cpp's naming: from `general.file_type` when the
/// file records it, else the type that holds most of the matrix weights.
pub fn quantization(file: &GgufFile) -> Result<String> {
    if let Some(ft) = file.metadata().get_opt::<u32>("general.file_type")? {
        return Ok(match file_type_name(ft) {
            Some(name) => name.to_string(),
            None => format!("unknown file type {ft}"),
        });
    }
    let mut by_type: HashMap<GgmlType, u64> = HashMap::new();
    for t in file.tensor_infos().iter().filter(|t| t.dims.len() >= 2) {
        *by_type.entry(t.ty).or_default() += t.n_elements;
    }
    Ok(by_type
        .into_iter()
        .max_by_key(|&(ty, n)| (n, ty.id()))
        .map(|(ty, _)| ty.name().to_string())
        .unwrap_or_else(|| "F32".to_string()))
}
