//! Tokenizers for the worker, with exact llama.cpp parity.
//!
//! Every token id the worker produces must be the one llama.cpp produces for
//! the same model and text, so the native tokenizers follow llama.cpp's
//! algorithms step for step, quirks included:
//!
//! - **SPM** (`tokenizer.ggml.model = llama`): `▁` for spaces, an optional
//!   space prefix, highest-score pair merging, `<0xNN>` byte fallback.
//! - **BPE** (`gpt2`): a pre-tokenizer chosen by `tokenizer.ggml.pre` splits
//!   the text with llama.cpp's regexes, evaluated on its collapsed
//!   category view ([`pretok`](crate) module docs); words are byte-encoded
//!   and merged by rank with a priority queue, never rescanned. An
//!   unsupported `pre` is an error at load, never a silent fallback.
//! - **Gemma 4** (`gemma4`): SPM-style BPE on raw UTF-8.
//! - Special tokens are cut out of the text first, longest first; control
//!   tokens only with `parse_special`, user-defined tokens always.
//! - Models with another tokenizer use their embedded
//!   `tokenizer.huggingface.json` through the `tokenizers` crate.
//!
//! Decoding gives bytes, because a token may hold part of a code point;
//! [`StreamDecoder`] turns a token stream into complete UTF-8 for SSE.
//! Chat templates are rendered with minijinja ([`ChatTemplate`]).
//!
//! The conformance suite runs llama.cpp's own tokenizer test vectors.

mod bpe;
mod chat;
mod decode;
mod error;
mod hf;
mod pretok;
mod special;
mod special_ids;
mod spm;
pub mod strftime;
mod tokenizer;
mod unicode;
mod vocab;

pub use chat::{ChatMessage, ChatTemplate};
pub use decode::StreamDecoder;
pub use error::{Result, TokenizerError};
pub use tokenizer::Tokenizer;
pub use vocab::{Attr, SpecialTokens, TokenId, VocabKind};
