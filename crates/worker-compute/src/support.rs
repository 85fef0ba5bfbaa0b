//! The weight types the backends compute matrix products with.
//!
//! One list for the whole worker: the CPU backend's kernels define it (a
//! type is in it when the CPU matrix product has an activation form for
//! it), every other backend must compute the same types (the CUDA crate
//! tests that it does), and the worker's support check, `fetch` and
//! `inspect` read it, so a model that passes the check loads everywhere.

use std::sync::LazyLock;
use worker_gguf::GgmlType;

/// Every type with a CPU matrix kernel, in id order.
static MATRIX_TYPES: LazyLock<Vec<GgmlType>> = LazyLock::new(|| {
    GgmlType::all()
        .filter(|&ty| crate::cpu::act_kind(ty).is_some())
        .collect()
});

/// The ggml types the backends compute as matrices (2-D and larger
/// weights), in id order.
pub fn matrix_types() -> &'static [GgmlType] {
    &MATRIX_TYPES
}

/// Whether the backends compute matrices of type `ty`.
pub fn is_matrix_type(ty: GgmlType) -> bool {
    MATRIX_TYPES.contains(&ty)
}

/// [`matrix_types`] as one comma-separated line (`F32, F16, …`), for
/// messages that tell a user what to pick instead.
pub fn matrix_type_list() -> String {
    join(matrix_types())
}

/// Type names joined by `", "`.
pub fn join(types: &[GgmlType]) -> String {
    types
        .iter()
        .map(|ty| ty.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_the_cpu_kernels() {
        let types = matrix_types();
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            assert!(types.contains(&ty), "{ty} missing from {types:?}");
            assert!(is_matrix_type(ty));
        }
        // Ternary and integer types have no kernel.
        for ty in [GgmlType::TQ1_0, GgmlType::I32] {
            assert!(!is_matrix_type(ty), "{ty}");
        }
        assert!(types.windows(2).all(|w| (w[0] as u32) < (w[1] as u32)));
        assert!(matrix_type_list().starts_with("F32, F16, "));
    }
}
