//! Broken model files meet typed errors, never a panic: a small model in
//! Qwen 3.5's real layout (64 wide, Q8_0, about 120 KB; written here by
//! `synthetic::write_model`) cut at every byte, and a fixed-seed mutation
//! loop (byte flips, overwritten runs, cuts, duplicated and dropped spans)
//! over it. Each variant goes as
//! far as it can through what the worker does with a file: parse it, read
//! its configuration and tokenizer, load its weights, run two tokens. The
//! counts are printed for BENCHMARKS.md.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use worker_compute::cpu::CpuBackend;
use worker_compute::{KvType, TokenPos};
use worker_gguf::{GgmlType, GgufFile, parse_header};
use worker_models::synthetic::{SyntheticDeltaNet, SyntheticSpec, write_model};
use worker_models::{Arch, Model, ModelConfig};
use worker_tokenizer::Tokenizer;

/// The model's bytes: one recurrent and one attention layer, 64 wide.
fn fixture() -> Vec<u8> {
    let mut spec = SyntheticSpec::conformance(Arch::Qwen35, GgmlType::Q8_0);
    (
        spec.n_embd,
        spec.n_head,
        spec.n_head_kv,
        spec.n_ff,
        spec.n_vocab,
    ) = (64, 1, 1, 128, 300);
    spec.recurrent = Some(SyntheticDeltaNet {
        n_k_heads: 2,
        n_v_heads: 4,
        head_dim: 16,
        conv_taps: 4,
        interval: 2,
    });
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("llorch-hostile-{}-{call}.gguf", std::process::id()));
    write_model(&spec, &path).expect("synth");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let _ = std::fs::remove_file(&path);
    bytes
}

/// How far a file got: 0 parse error, 1 configuration refused, 2 tokenizer
/// refused, 3 weights refused, 4 forward pass refused, 5 ran.
fn take(bytes: Vec<u8>, backend: &Arc<CpuBackend>) -> u8 {
    let Ok(file) = GgufFile::from_bytes(bytes) else {
        return 0;
    };
    if ModelConfig::from_metadata(file.metadata()).is_err() {
        return 1;
    }
    if Tokenizer::from_gguf(file.metadata()).is_err() {
        return 2;
    }
    let Ok(model) = Model::load(backend.clone(), Arc::new(file)) else {
        return 3;
    };
    let run = || -> worker_models::Result<()> {
        let mut ws = model.workspace(2, 1)?;
        let mut kv = model.kv_cache(1, 16, KvType::F16, 2)?;
        let tokens = [TokenPos { seq: 0, pos: 0 }, TokenPos { seq: 0, pos: 1 }];
        let mut out = Vec::new();
        model.forward(&mut ws, &mut kv, &[1, 5], &tokens, &[1], &mut out)
    };
    match run() {
        Ok(()) => 5,
        Err(_) => 4,
    }
}

/// Runs `take` on `bytes`, counting a panic instead of unwinding.
fn survive(bytes: Vec<u8>, backend: &Arc<CpuBackend>, what: &str) -> u8 {
    catch_unwind(AssertUnwindSafe(|| take(bytes, backend)))
        .unwrap_or_else(|_| panic!("{what}: a panic, not an error"))
}

#[test]
fn a_model_cut_at_every_byte_is_refused() {
    let full = fixture();
    let backend = Arc::new(CpuBackend::new(1).expect("backend"));
    assert_eq!(survive(full.clone(), &backend, "the whole file"), 5);
    let data_end = parse_header(&full).expect("the fixture parses").data_end() as usize;
    // Every cut is parsed; every 256th also goes as far as it can.
    let mut refused = 0;
    for cut in 0..data_end {
        if parse_header(&full[..cut]).is_err() {
            refused += 1;
        }
        if cut % 256 == 0 {
            let stage = survive(full[..cut].to_vec(), &backend, &format!("cut at {cut}"));
            assert_eq!(
                stage, 0,
                "a file cut at {cut} of {data_end} bytes was taken"
            );
        }
    }
    assert_eq!(refused, data_end);
    println!(
        "{data_end} cuts of a {} byte model: every one refused, 0 panics",
        full.len()
    );
}

/// xorshift64*, fixed seed: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `bytes`, mostly in the header, where the structure is.
fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng, header_len: usize) {
    let len = bytes.len();
    let at = if rng.below(4) == 0 {
        rng.below(len)
    } else {
        rng.below(header_len.min(len))
    };
    match rng.below(5) {
        0 => bytes[at] ^= 1 << rng.below(8),
        1 => {
            let run = 1 + rng.below(8);
            let value = [0x00, 0xFF, 0x7F, 0x80][rng.below(4)];
            for b in bytes.iter_mut().skip(at).take(run) {
                *b = value;
            }
        }
        2 => bytes.truncate(at.max(1)),
        3 => {
            let span = bytes[at..(at + 1 + rng.below(16)).min(len)].to_vec();
            let to = rng.below(len);
            bytes.splice(to..to, span);
        }
        _ => {
            let end = (at + 1 + rng.below(16)).min(len);
            bytes.drain(at..end);
        }
    }
}

#[test]
fn mutated_models_meet_errors_not_panics() {
    const RUNS: usize = 3000;
    let full = fixture();
    let header_len = parse_header(&full).expect("the fixture parses").data_offset as usize;
    let backend = Arc::new(CpuBackend::new(1).expect("backend"));
    let mut rng = Rng(0x5EED_F022);
    let mut stages = [0usize; 6];
    for i in 0..RUNS {
        let mut bytes = full.clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut bytes, &mut rng, header_len);
        }
        stages[usize::from(survive(bytes, &backend, &format!("mutation {i}")))] += 1;
    }
    println!(
        "{RUNS} mutated models, 0 panics: {} unparsable, {} with a refused configuration, {} tokenizer, \
         {} weights, {} forward pass; {} ran",
        stages[0], stages[1], stages[2], stages[3], stages[4], stages[5]
    );
    // The loop reaches the parser's refusals and whole runs, or it tests
    // less than it claims.
    assert!(stages[0] > 0 && stages[5] > RUNS / 10, "{stages:?}");
}
