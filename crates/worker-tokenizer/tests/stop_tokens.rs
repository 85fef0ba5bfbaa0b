//! The kind, BOS handling and stop tokens `Tokenizer::from_gguf` gives the
//! Qwen3.5 and Gemma 4 vocabularies (llama.cpp's vocab-only files): a turn
//! ends generation at the family's end-of-turn marker, and the markers that
//! open a turn never do.
//!
//! The files come from the llama-cpp-python 0.3.36 sdist, fetched and cached
//! by `scripts/llama-cpp-src.sh` (`make test` runs it first);
//! `LLORCH_LLAMA_CPP_SRC` overrides where the tree is.

use std::path::PathBuf;
use worker_gguf::GgufFile;
use worker_tokenizer::Tokenizer;

fn llama_cpp_vocab(name: &str) -> Tokenizer {
    let cache = std::env::var_os("LLORCH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/llorch")
        });
    let src = std::env::var_os("LLORCH_LLAMA_CPP_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("llama.cpp/src-0.3.36"));
    let path = src.join(format!("models/ggml-vocab-{name}.gguf"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/llama-cpp-src.sh (make test does)",
        path.display()
    );
    let file = GgufFile::open(&path).expect("vocab opens");
    Tokenizer::from_gguf(file.metadata()).expect("tokenizer loads")
}

/// The id of a token written as `text`, when the vocabulary has one.
fn id_of(tok: &Tokenizer, text: &str) -> Option<u32> {
    match tok.encode(text, false, true).ok()?.as_slice() {
        [id] => Some(*id),
        _ => None,
    }
}

fn must_id(tok: &Tokenizer, text: &str) -> u32 {
    id_of(tok, text).unwrap_or_else(|| panic!("{text:?} is one token"))
}

#[test]
fn qwen35_is_byte_level_bpe_ending_turns_at_im_end() {
    let tok = llama_cpp_vocab("qwen35");
    assert_eq!(tok.kind(), "bpe");
    assert_eq!(tok.model(), ("gpt2", Some("qwen35")));
    assert!(!tok.adds_bos(), "ChatML vocabularies add no BOS");

    let end_of_text = must_id(&tok, "<|endoftext|>");
    let im_end = must_id(&tok, "<|im_end|>");
    let im_start = must_id(&tok, "<|im_start|>");
    let special = tok.special();
    assert_eq!(special.eos, Some(end_of_text), "the file's EOS key");
    assert!(tok.is_eog(im_end), "<|im_end|> ends the assistant's turn");
    assert!(tok.is_eog(end_of_text), "<|endoftext|> ends generation");
    let eot = special.eot.expect("an end-of-turn token is found by text");
    assert!(tok.is_eog(eot));
    assert!(!tok.is_eog(im_start), "<|im_start|> opens a turn");
    // Plain text never ends generation.
    for id in tok.encode("Hello, world!", false, false).expect("encode") {
        assert!(!tok.is_eog(id), "{id} stops generation");
    }
}

#[test]
fn gemma4_is_spm_style_bpe_ending_turns_at_turn_close() {
    let tok = llama_cpp_vocab("gemma-4");
    assert_eq!(tok.kind(), "bpe");
    assert_eq!(tok.model(), ("gemma4", Some("gemma4")));
    assert!(tok.adds_bos(), "Gemma 4 always starts with BOS");
    let bos = tok.special().bos.expect("BOS");
    assert_eq!(tok.encode("Hi", true, false).expect("encode")[0], bos);
    assert_eq!(tok.encode("Hi", true, false).expect("encode").len(), 2);

    let eos = must_id(&tok, "<eos>");
    let turn_close = must_id(&tok, "<turn|>");
    let tool_response = must_id(&tok, "<|tool_response>");
    assert_eq!(tok.special().eos, Some(eos));
    // The turn closes at <turn|>; a tool call hands over at <|tool_response>.
    let want: Vec<u32> = vec![eos, tool_response, turn_close];
    assert_eq!(
        tok.eog_ids().iter().copied().collect::<Vec<_>>(),
        want,
        "exactly <eos>, <|tool_response> and <turn|> stop"
    );
    assert!(
        !tok.is_eog(must_id(&tok, "<|turn>")),
        "<|turn> opens a turn"
    );
    // Where a tool-response marker exists, </s> is ordinary text: parsed
    // for control tokens or not, it is the same tokens, and none stops.
    let s = tok.encode("</s>", false, true).expect("encode");
    assert_eq!(s, tok.encode("</s>", false, false).expect("encode"));
    assert!(s.iter().all(|&id| !tok.is_eog(id)), "{s:?}");
}
