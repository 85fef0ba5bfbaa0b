//! The table of error codes a worker or the gateway reports, on HTTP and in
//! SSE `error` events.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every error code a worker can report.
///
/// The serialized form is the SCREAMING_SNAKE_CASE name (`"INVALID_REQUEST"`),
/// which is what clients match on. Each code has a fixed HTTP status (used
/// when the error answers a request before any stream starts) and a fixed
/// `retriable` flag (whether the same request may succeed if sent again).
/// The one documented exception: a stream cut by the end of the shutdown
/// grace period carries [`ErrorCode::Cancelled`] with `retriable: true`,
/// because another replica can serve it; see [`ErrorCode::retriable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The request failed validation; the message names the fields.
    InvalidRequest,
    /// A required API key is missing or wrong.
    Unauthorized,
    /// The request body is larger than the server accepts.
    PayloadTooLarge,
    /// Every decoding slot and queue place is taken; retry after a while.
    Overloaded,
    /// The worker is loading its model or draining for shutdown.
    NotReady,
    /// The job was cancelled (by `/cancel`, a client disconnect or shutdown).
    Cancelled,
    /// The prompt plus generation does not fit in the context window.
    ContextFull,
    /// The model could not be loaded.
    ModelLoadFailed,
    /// The model's architecture or a weight type is one the worker cannot
    /// run: the same file will fail every time, so only a different model
    /// helps.
    UnsupportedModel,
    /// The model does not fit in host memory.
    InsufficientMemory,
    /// The model does not fit in GPU memory.
    InsufficientVram,
    /// A GPU allocation failed while serving a request.
    VramOom,
    /// The CUDA driver or runtime reported an error.
    CudaError,
    /// A bug or an unexpected condition inside the worker.
    Internal,
    /// The gateway knows no ModelWorker by the request's `model`.
    ModelNotFound,
    /// The gateway's API key does not grant the requested model.
    Forbidden,
    /// The gateway's API key sent more requests than its rate allows.
    RateLimited,
    /// Two ModelWorkers claim the requested name: the gateway picks none.
    ModelNameConflict,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Overloaded,
        ErrorCode::NotReady,
        ErrorCode::Cancelled,
        ErrorCode::ContextFull,
        ErrorCode::ModelLoadFailed,
        ErrorCode::UnsupportedModel,
        ErrorCode::InsufficientMemory,
        ErrorCode::InsufficientVram,
        ErrorCode::VramOom,
        ErrorCode::CudaError,
        ErrorCode::Internal,
        ErrorCode::ModelNotFound,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::ModelNameConflict,
    ];

    /// The wire name, e.g. `"INVALID_REQUEST"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::NotReady => "NOT_READY",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::ContextFull => "CONTEXT_FULL",
            ErrorCode::ModelLoadFailed => "MODEL_LOAD_FAILED",
            ErrorCode::UnsupportedModel => "UNSUPPORTED_MODEL",
            ErrorCode::InsufficientMemory => "INSUFFICIENT_MEMORY",
            ErrorCode::InsufficientVram => "INSUFFICIENT_VRAM",
            ErrorCode::VramOom => "VRAM_OOM",
            ErrorCode::CudaError => "CUDA_ERROR",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::ModelNotFound => "MODEL_NOT_FOUND",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::ModelNameConflict => "MODEL_NAME_CONFLICT",
        }
    }

    /// The HTTP status used when this error answers a request directly.
    ///
    /// `CANCELLED` uses 499 ("client closed request"), a status only ever
    /// seen in logs and metrics: a cancelled stream ends with an SSE event.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::ContextFull => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::ModelNotFound => 404,
            ErrorCode::ModelNameConflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Overloaded | ErrorCode::RateLimited => 429,
            ErrorCode::Cancelled => 499,
            ErrorCode::NotReady
            | ErrorCode::ModelLoadFailed
            | ErrorCode::UnsupportedModel
            | ErrorCode::InsufficientMemory
            | ErrorCode::InsufficientVram
            | ErrorCode::VramOom => 503,
            ErrorCode::CudaError | ErrorCode::Internal => 500,
        }
    }

    /// Whether sending the same request again may succeed.
    ///
    /// Only conditions that pass by themselves are retriable: a full queue,
    /// a worker still loading or draining, a GPU allocation that failed under
    /// momentary pressure. A cancellation is final for the client that asked
    /// for it; the shutdown case overrides this flag at the call site.
    pub const fn retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::Overloaded
                | ErrorCode::NotReady
                | ErrorCode::VramOom
                | ErrorCode::RateLimited
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_matches_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, code);
        }
    }

    #[test]
    fn statuses_follow_the_table() {
        assert_eq!(ErrorCode::InvalidRequest.http_status(), 400);
        assert_eq!(ErrorCode::Unauthorized.http_status(), 401);
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::Overloaded.http_status(), 429);
        assert_eq!(ErrorCode::NotReady.http_status(), 503);
        assert_eq!(ErrorCode::Internal.http_status(), 500);
        assert!(ErrorCode::Overloaded.retriable());
        assert!(!ErrorCode::InvalidRequest.retriable());
        assert!(!ErrorCode::Cancelled.retriable());
        assert_eq!(ErrorCode::UnsupportedModel.http_status(), 503);
        assert!(!ErrorCode::UnsupportedModel.retriable());
        assert_eq!(ErrorCode::UnsupportedModel.as_str(), "UNSUPPORTED_MODEL");
        assert_eq!(ErrorCode::ModelNotFound.http_status(), 404);
        assert_eq!(ErrorCode::Forbidden.http_status(), 403);
        assert_eq!(ErrorCode::RateLimited.http_status(), 429);
        assert!(ErrorCode::RateLimited.retriable());
        assert_eq!(ErrorCode::ModelNameConflict.http_status(), 409);
        assert!(!ErrorCode::ModelNameConflict.retriable());
    }
}
