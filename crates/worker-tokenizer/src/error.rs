//! The tokenizer crate's error type.

/// Why a tokenizer could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A metadata key the tokenizer needs is missing or malformed.
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] worker_gguf::GgufError),

    /// `tokenizer.ggml.model` names a tokenizer llorch does not implement.
    #[error(
        "tokenizer model {model:?} is not supported (supported: llama, gpt2, gemma4; or a model with an embedded tokenizer.huggingface.json)"
    )]
    UnsupportedModel {
        /// The model name from the file.
        model: String,
    },

    /// `tokenizer.ggml.pre` names a pre-tokenizer llorch does not implement.
    #[error("pre-tokenizer {pre:?} is not supported; supported values: {supported}")]
    UnsupportedPre {
        /// The value from the file.
        pre: String,
        /// The supported values, comma-separated.
        supported: String,
    },

    /// The vocabulary is inconsistent.
    #[error("invalid vocabulary: {0}")]
    InvalidVocab(String),

    /// A pre-tokenizer regex failed to compile (a bug in llorch).
    #[error("pre-tokenizer regex {regex:?} does not compile: {message}")]
    Regex {
        /// The regex.
        regex: String,
        /// The compiler's message.
        message: String,
    },

    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range (vocabulary size {n_vocab})")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        n_vocab: usize,
    },

    /// A Hugging Face `tokenizer.json` that could not be loaded or used.
    #[error("tokenizer.json: {0}")]
    HuggingFace(String),

    /// A chat template that does not compile or render.
    #[error("chat template: {0}")]
    ChatTemplate(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;
