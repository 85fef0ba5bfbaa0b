//! The CUDA weight decoders equal the reference decoders of worker-gguf,
//! bit for bit, for every type the kernels read, checked without a GPU:
//! `kernels/dequant.cuh` is plain C++ apart from a few intrinsics, so it is
//! compiled for the host (tests/host/dequant_host.cpp) and run on random
//! blocks.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use worker_gguf::{GgmlType, dequantize};
use worker_models::synthetic::random_matrix;

fn compile_host_decoders(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/dequant_host.cpp");
    let exe = dir.join("dequant_host");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = Command::new(&cxx)
        .args(["-std=c++17", "-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler {cxx:?}: {e}"));
    assert!(
        out.status.success(),
        "the decoders do not compile for the host:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

#[test]
fn cuda_decoders_equal_the_reference_for_every_type() {
    let dir = std::env::temp_dir().join(format!("llorch-decoders-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let exe = compile_host_decoders(&dir);
    let (rows, cols) = (4, 1024);
    for (code, ty) in [
        (0, GgmlType::F32),
        (1, GgmlType::F16),
        (2, GgmlType::BF16),
        (3, GgmlType::Q4_0),
        (4, GgmlType::Q4_1),
        (5, GgmlType::Q5_0),
        (6, GgmlType::Q5_1),
        (7, GgmlType::Q8_0),
        (8, GgmlType::Q4_K),
        (9, GgmlType::Q5_K),
        (10, GgmlType::Q6_K),
    ] {
        let bytes = random_matrix(ty, rows, cols, 42 + code).expect("matrix");
        let mut want = vec![0f32; rows * cols];
        dequantize(ty, &bytes, &mut want).expect("reference decode");
        let mut child = Command::new(&exe)
            .args([code.to_string(), (rows * cols).to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("decoder runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&bytes)
            .expect("write blocks");
        let out = child.wait_with_output().expect("decoder output");
        assert!(out.status.success(), "{ty}: decoder failed");
        let got: Vec<f32> = out
            .stdout
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(got.len(), want.len(), "{ty}: length");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits(),
                "{ty}: value {i} decodes to {g}, the reference to {w}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
