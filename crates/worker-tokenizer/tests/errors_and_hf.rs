//! Bad tokenizer metadata gets a clear error; the tokenizer.json path works.

use worker_gguf::{GgufFile, GgufWriter};
use worker_tokenizer::{Tokenizer, TokenizerError};

fn tokenizer_from(build: impl FnOnce(&mut GgufWriter)) -> Result<Tokenizer, TokenizerError> {
    let mut w = GgufWriter::new();
    build(&mut w);
    let file = GgufFile::from_bytes(w.to_bytes()).expect("valid gguf");
    Tokenizer::from_gguf(file.metadata())
}

fn tokens(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("t{i}")).collect()
}

#[test]
fn unsupported_model_and_pre_are_errors_at_load() {
    let err = tokenizer_from(|w| {
        w.add("tokenizer.ggml.model", "bert").expect("add");
        w.add("tokenizer.ggml.tokens", tokens(4)).expect("add");
    })
    .expect_err("bert is not supported");
    assert!(
        matches!(err, TokenizerError::UnsupportedModel { .. }),
        "{err}"
    );

    let err = tokenizer_from(|w| {
        w.add("tokenizer.ggml.model", "gpt2").expect("add");
        w.add("tokenizer.ggml.pre", "no-such-pre").expect("add");
        w.add("tokenizer.ggml.tokens", tokens(4)).expect("add");
        w.add("tokenizer.ggml.merges", Vec::<String>::new())
            .expect("add");
    })
    .expect_err("unknown pre");
    let msg = err.to_string();
    assert!(
        msg.contains("no-such-pre") && msg.contains("llama-bpe"),
        "{msg}"
    );

    let err = tokenizer_from(|w| {
        w.add("tokenizer.ggml.model", "gpt2").expect("add");
        w.add("tokenizer.ggml.tokens", tokens(4)).expect("add");
    })
    .expect_err("no merges");
    assert!(err.to_string().contains("tokenizer.ggml.merges"), "{err}");

    let err = tokenizer_from(|w| {
        w.add("tokenizer.ggml.model", "llama").expect("add");
        w.add(
            "tokenizer.ggml.tokens",
            vec!["a".to_string(), "a".to_string()],
        )
        .expect("add");
    })
    .expect_err("duplicate token");
    assert!(matches!(err, TokenizerError::InvalidVocab(_)), "{err}");

    let err = tokenizer_from(|w| {
        w.add("tokenizer.ggml.model", "llama").expect("add");
        w.add("tokenizer.ggml.tokens", tokens(4)).expect("add");
        w.add("tokenizer.ggml.scores", vec![0.0f32; 2])
            .expect("add");
    })
    .expect_err("short scores");
    assert!(matches!(err, TokenizerError::InvalidVocab(_)), "{err}");
}

/// A byte-level BPE tokenizer.json built with the `tokenizers` crate itself.
fn hf_json() -> String {
    use std::collections::HashMap;
    use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, TokenizerImpl};

    let alphabet = ByteLevel::alphabet();
    let mut vocab: HashMap<String, u32> = HashMap::new();
    let mut sorted: Vec<char> = alphabet.into_iter().collect();
    sorted.sort();
    for c in sorted {
        let n = vocab.len() as u32;
        vocab.insert(c.to_string(), n);
    }
    let merges = vec![
        ("h".to_string(), "e".to_string()),
        ("he".to_string(), "l".to_string()),
        ("hel".to_string(), "l".to_string()),
        ("hell".to_string(), "o".to_string()),
    ];
    for m in ["he", "hel", "hell", "hello"] {
        let n = vocab.len() as u32;
        vocab.insert(m.to_string(), n);
    }
    let bpe = BPE::builder()
        .vocab_and_merges(
            vocab
                .into_iter()
                .collect::<tokenizers::models::bpe::Vocab>(),
            merges,
        )
        .build()
        .expect("bpe");
    let mut tk: TokenizerImpl<
        BPE,
        tokenizers::NormalizerWrapper,
        ByteLevel,
        tokenizers::PostProcessorWrapper,
        ByteLevelDecoder,
    > = TokenizerImpl::new(bpe);
    tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tk.with_decoder(Some(ByteLevelDecoder::default()));
    tk.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
    tk.to_string(false).expect("json")
}

#[test]
fn tokenizer_json_encodes_decodes_and_streams() {
    let tok = Tokenizer::from_hf_json(&hf_json(), None).expect("loads");
    assert_eq!(tok.kind(), "huggingface");
    let text = "hello héllo 🦀";
    let ids = tok.encode(text, false, false).expect("encode");
    let hello = ids[0];
    assert_eq!(tok.decode(&[hello], false, false).expect("decode"), "hello");
    assert_eq!(tok.decode(&ids, false, false).expect("decode"), text);

    let mut dec = tok.stream_decoder();
    let mut out = String::new();
    for &id in &ids {
        out.push_str(&dec.push(tok.token_bytes(id, false).expect("piece")));
    }
    assert_eq!(out + &dec.finish(), text);

    let eos = tok.special().eos.expect("<|endoftext|> is EOS");
    assert!(tok.is_eog(eos));
    assert_eq!(tok.token_bytes(eos, false).expect("piece"), b"");
    assert_eq!(tok.token_bytes(eos, true).expect("piece"), b"<|endoftext|>");
    assert!(Tokenizer::from_hf_json("{not json", None).is_err());

    // A token id far past the vocabulary's size is refused, not used to
    // size a table of 2^32 entries.
    let mut v: serde_json::Value = serde_json::from_str(&hf_json()).expect("json");
    v["model"]["vocab"]["hello"] = serde_json::json!(4_000_000_000u32);
    let err = Tokenizer::from_hf_json(&v.to_string(), None).expect_err("a sparse id");
    assert!(err.to_string().contains("far past"), "{err}");
}

#[test]
fn embedded_tokenizer_json_serves_other_models() {
    let json = hf_json();
    let tok = tokenizer_from(|w| {
        w.add("tokenizer.ggml.model", "t5").expect("add");
        w.add("tokenizer.ggml.tokens", tokens(4)).expect("add");
        w.add("tokenizer.huggingface.json", json.as_str())
            .expect("add");
    })
    .expect("falls back to the embedded tokenizer.json");
    assert_eq!(tok.kind(), "huggingface");
    assert_eq!(
        tok.decode(&tok.encode("hello", false, false).expect("e"), false, false)
            .expect("d"),
        "hello"
    );
}
