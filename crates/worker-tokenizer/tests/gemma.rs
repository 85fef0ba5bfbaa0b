//! The real default model's vocabulary (Gemma 3 270M): round trips, special
//! tokens, BOS handling and streaming decode.

use worker_gguf::GgufFile;
use worker_tokenizer::{ChatMessage, Tokenizer};

fn gemma() -> Tokenizer {
    let path = worker_common::paths::default_model_path();
    assert!(
        path.is_file(),
        "the default model is missing at {}: run scripts/fetch-model.sh (make test does)",
        path.display()
    );
    let file = GgufFile::open(&path).expect("model opens");
    Tokenizer::from_gguf(file.metadata()).expect("tokenizer loads")
}

const CORPUS: &[&str] = &[
    "Hello, world!",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n\nand runs of     spaces",
    "中文字符测试，标点符号。",
    "日本語のテキストとカタカナ",
    "한국어 문장입니다.",
    "Ελληνικά και русский текст",
    "emoji 🦙🦀👩‍👩‍👧 and flags 🇩🇪🇯🇵",
    "mixed: café naïve Zürich — “quotes” … ½ ∑ √",
    "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
    "<start_of_turn> looks special but is text here",
    "\u{0}\u{1}\u{7f} control bytes and \u{200b}zero width",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math alphanumerics 𝟙𝟚𝟛",
];

#[test]
fn round_trips_mixed_text() {
    let tok = gemma();
    assert_eq!(tok.kind(), "spm");
    assert_eq!(tok.vocab_size(), 262_144);
    for text in CORPUS {
        let ids = tok.encode(text, false, false).expect("encode");
        assert!(!ids.is_empty());
        let back = tok.decode(&ids, false, false).expect("decode");
        assert_eq!(&back, text, "ids {ids:?}");
    }
}

#[test]
fn streaming_decode_never_splits_a_code_point() {
    let tok = gemma();
    for text in CORPUS {
        let ids = tok.encode(text, false, false).expect("encode");
        let mut dec = tok.stream_decoder();
        let mut out = String::new();
        for &id in &ids {
            let chunk = dec.push(tok.token_bytes(id, false).expect("piece"));
            assert!(!chunk.contains('\u{FFFD}'), "{text:?}: U+FFFD in {chunk:?}");
            out.push_str(&chunk);
        }
        out.push_str(&dec.finish());
        assert_eq!(&out, text);
    }
}

#[test]
fn bos_and_special_tokens() {
    let tok = gemma();
    let bos = tok.special().bos.expect("gemma has BOS");
    assert_eq!(bos, 2);
    assert!(tok.adds_bos());
    let ids = tok.encode("Hi", true, false).expect("encode");
    assert_eq!(ids[0], bos);
    assert_ne!(tok.encode("Hi", false, false).expect("encode")[0], bos);

    let turn = "<start_of_turn>user\nHi";
    let parsed = tok.encode(turn, false, true).expect("encode");
    let plain = tok.encode(turn, false, false).expect("encode");
    let start = parsed[0];
    assert_eq!(
        tok.decode(&[start], false, true).expect("decode"),
        "<start_of_turn>"
    );
    assert!(
        !plain.contains(&start),
        "control tokens are text without parse_special"
    );
    // Control tokens are not rendered unless asked for.
    assert_eq!(
        tok.decode(&parsed, false, false).expect("decode"),
        "user\nHi"
    );
    assert_eq!(tok.decode(&parsed, false, true).expect("decode"), turn);

    let eos = tok.special().eos.expect("eos");
    assert!(tok.is_eog(eos));
    let end_of_turn = tok.encode("<end_of_turn>", false, true).expect("encode");
    assert_eq!(end_of_turn.len(), 1);
    assert!(tok.is_eog(end_of_turn[0]), "<end_of_turn> ends generation");
    assert!(tok.token_bytes(u32::MAX, false).is_err());
}

#[test]
fn default_chat_template_is_gemma_turns() {
    let tok = gemma();
    assert!(
        tok.chat_template().is_default(),
        "this file has no template"
    );
    let prompt = tok
        .apply_chat_template(
            &[ChatMessage {
                role: "user".into(),
                content: "Hi".into(),
            }],
            true,
        )
        .expect("render");
    assert_eq!(
        prompt,
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
    let ids = tok.encode(&prompt, false, true).expect("encode");
    assert_eq!(ids[0], 2, "the template's <bos> text parses to the BOS id");
}
