//! Whether the worker can run a model file, decided from its header alone.
//!
//! `fetch` runs this in the init container right after the download, so an
//! architecture or weight type the worker cannot run is refused with one
//! clear sentence before the worker container starts (and crash-loops);
//! `serve` runs it before loading and `inspect` shows its verdict. The
//! lists it checks against are the ones the loader uses: [`Arch::ALL`] for
//! architectures and [`worker_compute::matrix_types`] for matrices, so a
//! file that passes loads on every backend.

use crate::config::Arch;
use worker_gguf::{DEQUANT_TYPES, GgmlType, Header};

/// Why the worker cannot run a model file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// `general.architecture` names an architecture llorch does not
    /// implement.
    #[error(
        "architecture {arch:?} is not supported (supported architectures: {}); pick a model of a supported architecture",
        architecture_list()
    )]
    Architecture {
        /// The name from the file.
        arch: String,
    },
    /// The file names no architecture: not a model (a vocabulary, an
    /// adapter or a projector file, or a broken conversion).
    #[error(
        "the file names no architecture (general.architecture is missing or not a string), so it is not a model llorch can run (supported architectures: {})",
        architecture_list()
    )]
    NoArchitecture,
    /// A tensor whose weight type the backends cannot compute with.
    #[error(
        "tensor {tensor:?} is a {} of weight type {ty}, which llorch cannot run (supported {}: {}); pick another quantization of the model",
        if *matrix { "matrix" } else { "vector" },
        if *matrix { "matrix types" } else { "vector types" },
        if *matrix { worker_compute::matrix_type_list() } else { worker_compute::support::join(&DEQUANT_TYPES) }
    )]
    WeightType {
        /// The first tensor of an unsupported type, in file order.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// Whether it is a matrix (two or more dimensions), which the
        /// backends multiply in its encoding; a vector (a norm, a bias) is
        /// decoded to f32 at load and may be any type that decodes.
        matrix: bool,
    },
}

/// The supported architectures' names, comma-separated.
pub fn architecture_list() -> String {
    Arch::ALL
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Ok` when the worker can run the model `header` describes: its
/// architecture is one llorch implements, every matrix (a tensor of two or
/// more dimensions) has a type the backends compute with, and every vector
/// a type that decodes to f32. Otherwise the first reason it cannot, in
/// that order.
pub fn check_supported(header: &Header) -> Result<(), Unsupported> {
    let arch = header
        .metadata
        .architecture()
        .map_err(|_| Unsupported::NoArchitecture)?;
    if Arch::from_name(arch).is_none() {
        return Err(Unsupported::Architecture {
            arch: arch.to_owned(),
        });
    }
    for t in &header.tensors {
        let matrix = t.dims.len() >= 2;
        let ok = if matrix {
            worker_compute::is_matrix_type(t.ty)
        } else {
            DEQUANT_TYPES.contains(&t.ty)
        };
        if !ok {
            return Err(Unsupported::WeightType {
                tensor: t.name.clone(),
                ty: t.ty,
                matrix,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use worker_gguf::{GgufFile, GgufWriter};

    /// A header with `arch` and the tensors `(name, dims, type)`, their
    /// bytes zero.
    fn header(arch: Option<&str>, tensors: &[(&str, &[u64], GgmlType)]) -> Header {
        let mut w = GgufWriter::new();
        if let Some(a) = arch {
            w.add("general.architecture", a).expect("key");
        }
        for &(name, dims, ty) in tensors {
            let n: u64 = dims.iter().product();
            let bytes = ty.bytes_for(n).expect("whole blocks") as usize;
            w.add_tensor(name, dims, ty, vec![0; bytes])
                .expect("tensor");
        }
        GgufFile::from_bytes(w.to_bytes())
            .expect("a valid file")
            .header()
            .clone()
    }

    #[test]
    fn supported_files_pass() {
        for arch in Arch::ALL {
            let h = header(
                Some(arch.name()),
                &[
                    ("token_embd.weight", &[256, 8], GgmlType::Q8_0),
                    ("blk.0.attn_q.weight", &[256, 256], GgmlType::Q4_K),
                    ("output_norm.weight", &[256], GgmlType::F32),
                ],
            );
            assert_eq!(check_supported(&h), Ok(()), "{}", arch.name());
        }
    }

    #[test]
    fn an_unknown_architecture_is_named_with_the_supported_ones() {
        let err = check_supported(&header(Some("mamba"), &[])).expect_err("unsupported");
        assert_eq!(
            err,
            Unsupported::Architecture {
                arch: "mamba".into()
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("\"mamba\""), "{msg}");
        for arch in Arch::ALL {
            assert!(msg.contains(arch.name()), "{msg}");
        }
        assert_eq!(
            check_supported(&header(None, &[])),
            Err(Unsupported::NoArchitecture)
        );
    }

    #[test]
    fn the_first_matrix_of_an_unsupported_type_is_named() {
        let h = header(
            Some("llama"),
            &[
                ("blk.0.attn_q.weight", &[256, 4], GgmlType::Q8_0),
                ("blk.0.attn_k.weight", &[256, 4], GgmlType::TQ1_0),
                ("blk.0.attn_v.weight", &[256, 4], GgmlType::TQ2_0),
            ],
        );
        let err = check_supported(&h).expect_err("unsupported");
        assert_eq!(
            err,
            Unsupported::WeightType {
                tensor: "blk.0.attn_k.weight".into(),
                ty: GgmlType::TQ1_0,
                matrix: true,
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("\"blk.0.attn_k.weight\""), "{msg}");
        assert!(msg.contains("weight type TQ1_0"), "{msg}");
        assert!(msg.contains(&worker_compute::matrix_type_list()), "{msg}");
    }

    #[test]
    fn vectors_may_be_any_type_that_decodes() {
        // Q2_K decodes, so a Q2_K norm is fine whatever the kernels do.
        let h = header(
            Some("llama"),
            &[("output_norm.weight", &[256], GgmlType::Q2_K)],
        );
        assert_eq!(check_supported(&h), Ok(()));
        let h = header(
            Some("llama"),
            &[("output_norm.weight", &[256], GgmlType::TQ1_0)],
        );
        let err = check_supported(&h).expect_err("unsupported");
        assert!(
            matches!(err, Unsupported::WeightType { matrix: false, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("vector"), "{err}");
    }
}
