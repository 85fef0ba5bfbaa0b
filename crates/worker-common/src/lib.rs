//! Types shared by every part of the worker and by the operator.
//!
//! This crate is deliberately light: it depends on `serde` and nothing else,
//! so the operator can use the same wire types as the worker (the readiness
//! report, the model facts) without pulling in any compute code.
//!
//! - [`ErrorCode`]: the one table of error codes a worker can answer with,
//!   each with its HTTP status and a fixed `retriable` flag.
//! - [`ModelFacts`]: what a GGUF file says about the model it holds, as the
//!   worker reports it and as `llorch-worker fetch` writes it to `model.json`.
//! - [`WorkerReport`]: the readiness (or failure) report a worker posts to
//!   the operator.
//! - [`FetchFailure`]: the JSON line a failed `llorch-worker fetch` ends
//!   with, which the operator reads from the init container's termination
//!   message.
//! - [`job`]: the job contract between the HTTP server and the engine
//!   (request, events, outcome, chat messages).
//! - [`quantity::parse_bytes`]: Kubernetes quantities (`24Gi`) as bytes.
//! - [`prom::Histogram`]: the Prometheus histogram both `/metrics` use.

mod error_code;
mod fetch;
pub mod job;
mod model;
pub mod paths;
pub mod prom;
pub mod quantity;
mod report;

pub use error_code::ErrorCode;
pub use fetch::FetchFailure;
pub use model::ModelFacts;
pub use report::{ReportError, ReportStatus, WorkerReport};
