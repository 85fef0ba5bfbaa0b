//! The CUDA backend computes every matrix type the worker accepts.
//!
//! `worker_compute::matrix_types` is the list `fetch` and `serve` check a
//! model against; a type in it without a CUDA kernel code would pass the
//! check and then fail to load on a GPU. No GPU is needed.

#[test]
fn every_supported_matrix_type_has_a_kernel_code() {
    let missing: Vec<_> = worker_compute::matrix_types()
        .iter()
        .filter(|&&ty| worker_cuda::type_code(ty).is_none())
        .map(|ty| ty.name())
        .collect();
    assert!(
        missing.is_empty(),
        "supported matrix types without a CUDA kernel code: {}",
        missing.join(", ")
    );
}

#[test]
fn kernel_codes_are_distinct() {
    let mut codes: Vec<i32> = worker_compute::matrix_types()
        .iter()
        .filter_map(|&ty| worker_cuda::type_code(ty))
        .collect();
    let n = codes.len();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), n, "two types share a kernel code");
}
