//! llama.cpp's own tokenizer test vectors: every text of every listed vocab
//! must give exactly llama.cpp's ids.
//!
//! The vocab-only GGUFs and their `.inp`/`.out` files come from the
//! llama-cpp-python 0.3.36 sdist, fetched and cached by
//! `scripts/llama-cpp-src.sh` (`make test` runs it first);
//! `LLORCH_LLAMA_CPP_SRC` overrides where the tree is.

use std::path::PathBuf;
use worker_gguf::GgufFile;
use worker_tokenizer::Tokenizer;

fn llama_cpp_src() -> PathBuf {
    let dir = std::env::var_os("LLORCH_LLAMA_CPP_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("LLORCH_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/llorch")
                });
            cache.join("llama.cpp/src-0.3.36")
        });
    assert!(
        dir.join("models").is_dir(),
        "llama.cpp's source tree is missing at {}: run scripts/llama-cpp-src.sh (make test does)",
        dir.display()
    );
    dir
}

/// The texts and expected ids of one vocab, as llama.cpp's test reads them.
fn vectors(name: &str) -> (Tokenizer, Vec<(String, Vec<u32>)>) {
    let models = llama_cpp_src().join("models");
    let gguf = models.join(format!("ggml-vocab-{name}.gguf"));
    let file = GgufFile::open(&gguf).expect("vocab file opens");
    let tok = Tokenizer::from_gguf(file.metadata()).expect("tokenizer loads");
    let inp = std::fs::read_to_string(gguf.with_extension("gguf.inp")).expect(".inp");
    let out = std::fs::read_to_string(gguf.with_extension("gguf.out")).expect(".out");
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts: Vec<String> = inp.split(sep).map(str::to_string).collect();
    if texts.last().is_some_and(String::is_empty) {
        texts.pop();
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("an id"))
                .collect()
        })
        .collect();
    assert_eq!(texts.len(), ids.len(), "{name}: .inp and .out disagree");
    (tok, texts.into_iter().zip(ids).collect())
}

fn check(name: &str) {
    let (tok, cases) = vectors(name);
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, false, false).expect("encode");
        if &got != want {
            failures.push(format!("  {text:?}\n    got  {got:?}\n    want {want:?}"));
        }
    }
    println!(
        "vocab {name}: {} of {} vectors pass",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "vocab {name}: {} of {} vectors differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

macro_rules! vocab_tests {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check($name);
            }
        )*
    };
}

vocab_tests! {
    llama_spm => "llama-spm",
    llama_bpe => "llama-bpe",
    qwen2 => "qwen2",
    phi_3 => "phi-3",
    gpt_2 => "gpt-2",
    starcoder => "starcoder",
    deepseek_llm => "deepseek-llm",
    deepseek_coder => "deepseek-coder",
    falcon => "falcon",
    mpt => "mpt",
    refact => "refact",
    command_r => "command-r",
    qwen35 => "qwen35",
    gemma_4 => "gemma-4",
}
