//! Dequantization checked bit for bit against the `gguf` Python package.
//!
//! The vectors in `fixtures/dequant.gguf` come from `fixtures/gen_dequant.py`
//! (the command to regenerate them is in that script).

use worker_gguf::{DEQUANT_TYPES, GgufFile, dequantize_to_vec};

#[test]
fn every_type_matches_the_reference_bit_for_bit() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dequant.gguf");
    let file = GgufFile::open(path).expect("the fixture opens");
    for ty in DEQUANT_TYPES {
        let q = file
            .tensor(&format!("{}.q", ty.name()))
            .expect("quantized tensor");
        assert_eq!(q.info.ty, ty);
        let want = file
            .dequantize(&format!("{}.f32", ty.name()))
            .expect("reference tensor");
        let got = dequantize_to_vec(ty, q.data, q.info.n_elements as usize).expect("dequantize");
        assert_eq!(got.len(), want.len(), "{ty}: length");
        let mismatches: Vec<usize> = (0..got.len())
            .filter(|&i| got[i].to_bits() != want[i].to_bits())
            .collect();
        assert!(
            mismatches.is_empty(),
            "{ty}: {} of {} values differ; first at {}: got {} want {}",
            mismatches.len(),
            got.len(),
            mismatches[0],
            got[mismatches[0]],
            want[mismatches[0]]
        );
        println!("{ty}: {} values bit-exact", got.len());
    }
}
