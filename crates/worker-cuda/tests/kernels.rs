//! Every CUDA kernel compiles with NVRTC, on a machine without a GPU.
//!
//! NVRTC needs no device, so this runs in `make test`, which installs NVRTC
//! from PyPI and puts it on the library path. Plain `cargo test` lists it as
//! ignored. The PTX is also stored in the kernel cache, so a GPU machine
//! without NVRTC can load it (scripts/gpu-check.sh carries the cache).

use worker_cuda::compile;

#[test]
#[ignore = "needs NVRTC on the library path: make test runs it"]
fn kernels_compile_for_every_supported_architecture() {
    assert!(
        compile::nvrtc_present(),
        "NVRTC is not on the library path (scripts/test.sh puts the PyPI copy there)"
    );
    // Ampere, Ada and Hopper: the GPUs a cluster runs LLM workers on.
    for (major, minor) in [(8, 0), (8, 6), (8, 9), (9, 0)] {
        let arch = compile::arch_for(major, minor);
        let ptx = compile::compile(&arch).unwrap_or_else(|e| panic!("{e}"));
        for kernel in [
            "mm_small",
            "dq_rows",
            "get_rows",
            "rms_norm",
            "layer_norm",
            "rope",
            "scale_f32",
            "add_f32",
            "add_bias",
            "act_f32",
            "glu_f32",
            "softcap_f32",
            "copy_cols",
            "gather_rows",
            "kv_store",
            "attention",
        ] {
            assert!(
                ptx.contains(&format!(".entry {kernel}(")),
                "{arch}: kernel {kernel} missing from the PTX"
            );
        }
        if let Some(dir) = compile::cache_dir() {
            compile::store(&dir, &compile::cache_key(&arch), &ptx);
        }
    }
}
