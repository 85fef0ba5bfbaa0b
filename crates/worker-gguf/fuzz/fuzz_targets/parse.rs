//! Fuzzes the GGUF reader: any input must parse or fail with an error, and
//! whatever parses must give tensor views and dequantization without panics.
//!
//! Run: `cargo +nightly fuzz run parse` in `crates/worker-gguf`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use worker_gguf::{dequantize, GgufFile};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = file.metadata().arch().map(|a| a.get_u32("block_count"));
    for t in file.tensors() {
        assert_eq!(t.data.len() as u64, t.info.n_bytes);
        // Bounded: a fuzz input is small, so is every valid tensor in it.
        let mut out = vec![0f32; t.info.n_elements as usize];
        let _ = dequantize(t.info.ty, t.data, &mut out);
    }
});
