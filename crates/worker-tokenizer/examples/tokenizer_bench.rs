//! Tokenizer throughput: llorch's native tokenizers against the `tokenizers`
//! crate on the same vocabulary.
//!
//! ```text
//! cargo run --release -p worker-tokenizer --example tokenizer-bench
//! ```
//! Uses the llama.cpp tree from scripts/llama-cpp-src.sh (its docs and test
//! texts are the corpus; its Llama 3 vocab is the shared vocabulary) and the
//! default Gemma 3 model. Results go to BENCHMARKS.md.

use std::time::{Duration, Instant};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};
use worker_gguf::GgufFile;
use worker_tokenizer::Tokenizer;

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn median_time(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn corpus(src: &std::path::Path) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let mut text = String::new();
    for entry in std::fs::read_dir(src.join("docs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            text.push_str(&std::fs::read_to_string(&path)?);
        }
    }
    for entry in std::fs::read_dir(src.join("models"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "inp") {
            text.push_str(&std::fs::read_to_string(&path)?.replace("__ggml_vocab_test__", ""));
        }
    }
    Ok(text)
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let src = worker_common::paths::cache_dir().join("llama.cpp/src-0.3.36");
    let text = corpus(&src)?;
    let mb = text.len() as f64 / 1e6;
    println!(
        "corpus: {:.2} MB of llama.cpp docs and tokenizer test texts",
        mb
    );

    // Llama 3 (byte-level BPE): llorch vs the tokenizers crate.
    let file = GgufFile::open(src.join("models/ggml-vocab-llama-bpe.gguf"))?;
    let ours = Tokenizer::from_gguf(file.metadata())?;
    let meta = file.metadata();
    let vocab: tokenizers::models::bpe::Vocab = meta
        .get_str_array("tokenizer.ggml.tokens")?
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges: Vec<(String, String)> = meta
        .get_str_array("tokenizer.ggml.merges")?
        .iter()
        .filter_map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(true)
        .build()?;
    let mut hf = tokenizers::Tokenizer::new(bpe);
    let split = Split::new(
        SplitPattern::Regex(LLAMA3_REGEX.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )?;
    hf.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
    ]))));

    let ours_ids = ours.encode(&text, false, false)?;
    let hf_ids = hf.encode(text.as_str(), false)?.get_ids().to_vec();
    let same = ours_ids == hf_ids;
    let t_ours = median_time(5, || {
        let _ = ours.encode(&text, false, false);
    });
    let t_hf = median_time(5, || {
        let _ = hf.encode(text.as_str(), false);
    });
    println!(
        "llama-bpe  llorch {:>6.2} MB/s  tokenizers {:>6.2} MB/s  ratio {:.2}  ({} tokens, identical ids: {same})",
        mb / t_ours.as_secs_f64(),
        mb / t_hf.as_secs_f64(),
        t_hf.as_secs_f64() / t_ours.as_secs_f64(),
        ours_ids.len()
    );

    // Gemma 3 (SPM), llorch only.
    let gemma = GgufFile::open(worker_common::paths::default_model_path())?;
    let tok = Tokenizer::from_gguf(gemma.metadata())?;
    let n = tok.encode(&text, false, false)?.len();
    let t = median_time(5, || {
        let _ = tok.encode(&text, false, false);
    });
    println!(
        "gemma3-spm llorch {:>6.2} MB/s  ({n} tokens)",
        mb / t.as_secs_f64()
    );
    Ok(())
}
