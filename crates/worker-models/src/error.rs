//! The models crate's error type.

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A metadata key is missing or has the wrong type.
    #[error("model metadata: {0}")]
    Metadata(#[from] worker_gguf::GgufError),
    /// The architecture is not one llorch implements.
    #[error(
        "architecture {arch:?} is not supported (supported: {})",
        crate::support::architecture_list()
    )]
    UnsupportedArchitecture {
        /// The architecture from the file.
        arch: String,
    },
    /// A tensor the architecture needs is not in the file.
    #[error("tensor {name:?} is missing: the file does not match its architecture {arch}")]
    MissingTensor {
        /// The tensor.
        name: String,
        /// The architecture.
        arch: String,
    },
    /// A tensor whose shape disagrees with the metadata.
    #[error("tensor {name:?} has shape {got:?}, expected {want:?}")]
    TensorShape {
        /// The tensor.
        name: String,
        /// Its shape.
        got: Vec<u64>,
        /// The shape the metadata implies.
        want: Vec<u64>,
    },
    /// A shape field past any real model (a corrupt or hostile file):
    /// refused before anything is sized from it.
    #[error("model metadata: {key} = {value} is past any real model (at most {max})")]
    ImplausibleShape {
        /// The metadata key.
        key: String,
        /// Its value.
        value: usize,
        /// The largest value accepted.
        max: usize,
    },
    /// A model feature llorch does not implement.
    #[error("unsupported model feature: {0}")]
    Unsupported(String),
    /// The compute backend failed.
    #[error(transparent)]
    Compute(#[from] worker_compute::ComputeError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] worker_tokenizer::TokenizerError),
    /// A request that cannot be served as asked.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A job failed in the engine, with the code its client gets.
    #[error("{message}")]
    Failed {
        /// The error code.
        code: worker_common::ErrorCode,
        /// What happened.
        message: String,
    },
    /// The prompt plus generation does not fit the context.
    #[error("the prompt has {prompt} tokens but the context holds {ctx}")]
    ContextFull {
        /// Prompt tokens.
        prompt: usize,
        /// Context size.
        ctx: usize,
    },
}

impl ModelError {
    /// Whether the file needs something the engine does not implement (an
    /// architecture, or a feature of one), rather than being broken: such
    /// a model is unsupported, and no retry changes that.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            ModelError::Unsupported(_) | ModelError::UnsupportedArchitecture { .. }
        )
    }
}

impl ModelError {
    /// The error code a job failing with this error reports; `device`:
    /// whether the backend runs on a GPU (whose memory and faults have
    /// codes of their own).
    pub fn code(&self, device: bool) -> worker_common::ErrorCode {
        use worker_common::ErrorCode;
        use worker_compute::ComputeError;
        match self {
            ModelError::Compute(ComputeError::OutOfMemory { .. }) if device => ErrorCode::VramOom,
            ModelError::Compute(ComputeError::OutOfMemory { .. }) => ErrorCode::InsufficientMemory,
            ModelError::Compute(ComputeError::Device(_)) if device => ErrorCode::CudaError,
            ModelError::InvalidRequest(_) | ModelError::ContextFull { .. } => {
                ErrorCode::InvalidRequest
            }
            ModelError::Failed { code, .. } => *code,
            _ => ErrorCode::Internal,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
