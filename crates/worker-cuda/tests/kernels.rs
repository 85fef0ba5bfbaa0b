//! Every CUDA kernel compiles with NVRTC, on a machine without a GPU.
//!
//! NVRTC needs no device, so this runs in `make test`, which installs NVRTC
//! from PyPI and puts it on the library path. Plain `cargo test` lists it as
//! ignored. The cubins are also stored in the kernel cache, so a GPU
//! machine without NVRTC can load them (scripts/gpu-bundle.sh fills the
//! cache it carries this way).

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
        let cubin = compile::compile(&arch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&cubin[..4], b"\x7fELF", "{arch}: not an ELF cubin");
        for kernel in worker_cuda::kernel_names() {
            // Each kernel's name, NUL-terminated, in the symbol string table.
            let sym = format!("{kernel}\0");
            assert!(
                cubin.windows(sym.len()).any(|w| w == sym.as_bytes()),
                "{arch}: kernel {kernel} missing from the cubin"
            );
        }
        if let Some(dir) = compile::cache_dir() {
            compile::store(&dir, &compile::cache_key(&arch), &cubin);
        }
    }
}
