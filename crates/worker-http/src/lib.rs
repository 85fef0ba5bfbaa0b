//! The worker's HTTP API on axum: the `/execute` SSE contract, the
//! OpenAI-compatible routes, health, readiness and metrics. It consumes a
//! small `Engine` trait and does not depend on any model or backend crate.
//!
//! Status: not implemented yet. The server issue fills this crate; until
//! then it exports nothing.
