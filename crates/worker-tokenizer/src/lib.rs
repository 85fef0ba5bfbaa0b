//! Tokenizers for the worker: SentencePiece-style and byte-level BPE built
//! from GGUF `tokenizer.ggml.*` metadata, Hugging Face `tokenizer.json`
//! through the `tokenizers` crate, a streaming UTF-8 decoder for SSE, and
//! chat templates.
//!
//! Status: not implemented yet. The tokenizer issue fills this crate; until
//! then it exports nothing, so nothing can depend on behaviour it lacks.
