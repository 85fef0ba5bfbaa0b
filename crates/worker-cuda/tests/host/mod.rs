//! The CUDA kernels compiled for the host on top of the emulation in
//! `cuda_host.h`, and how the tests launch them.

#![allow(dead_code)]

pub mod attention;

use libloading::Library;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The kernels compiled for the host, loaded once per test process.
fn library() -> &'static Library {
    static LIB: OnceLock<Library> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("llorch-emulated-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/kernels_host.cpp");
        let so: PathBuf = dir.join("kernels_host.so");
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        // No FMA contraction on the host, so the decoders' arithmetic is the
        // reference's exactly.
        let out = Command::new(&cxx)
            .args([
                "-std=c++20",
                "-O1",
                "-ffp-contract=off",
                "-shared",
                "-fPIC",
                "-pthread",
                "-o",
            ])
            .arg(&so)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("cannot run the C++ compiler {cxx:?}: {e}"));
        assert!(
            out.status.success(),
            "the kernels do not compile for the host:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // SAFETY: the library is ours; its initializers only set up globals.
        let lib = unsafe { Library::new(&so) }.expect("the kernel library loads");
        // Loaded, the file is no longer needed.
        std::fs::remove_dir_all(&dir).ok();
        lib
    })
}

type LaunchFn = unsafe extern "C" fn(
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    usize,
    unsafe extern "C" fn(*mut c_void),
    *mut c_void,
);

unsafe extern "C" fn trampoline(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `&&(dyn Fn() + Sync)` that `launch` passes.
    let f = unsafe { &*(ctx as *const &(dyn Fn() + Sync)) };
    f();
}

/// Runs `body` (which calls one kernel) on every thread of the grid.
pub fn launch(
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared: usize,
    body: &(dyn Fn() + Sync),
) {
    // SAFETY: the symbol has this signature (tests/host/cuda_host.h).
    let f: LaunchFn = unsafe {
        *library()
            .get::<LaunchFn>(b"llorch_host_launch")
            .expect("launch")
    };
    let mut ctx: &(dyn Fn() + Sync) = body;
    // SAFETY: `ctx` outlives the call, which returns after every thread ran.
    unsafe {
        f(
            grid.0,
            grid.1,
            grid.2,
            block.0,
            block.1,
            block.2,
            shared,
            trampoline,
            (&mut ctx as *mut &(dyn Fn() + Sync)).cast(),
        )
    };
}

/// A kernel entry point of the library, as a function pointer of type `F`.
pub fn kernel<F: Copy>(name: &str) -> F {
    // SAFETY: each caller names the kernel's C signature as `F`.
    unsafe {
        *library()
            .get::<F>(name.as_bytes())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

/// A raw pointer that may be shared by the emulated threads.
#[derive(Clone, Copy)]
pub struct P(usize);

impl P {
    pub fn of<T>(v: &[T]) -> P {
        P(v.as_ptr() as usize)
    }
    pub fn mut_of<T>(v: &mut [T]) -> P {
        P(v.as_mut_ptr() as usize)
    }
    pub fn f(self) -> *mut f32 {
        self.0 as *mut f32
    }
    pub fn u8(self) -> *mut u8 {
        self.0 as *mut u8
    }
    pub fn i(self) -> *mut i32 {
        self.0 as *mut i32
    }
    pub fn u64(self) -> *mut u64 {
        self.0 as *mut u64
    }
}

pub fn per_element(n: usize) -> ((u32, u32, u32), (u32, u32, u32)) {
    ((n.div_ceil(256).max(1) as u32, 1, 1), (256, 1, 1))
}
