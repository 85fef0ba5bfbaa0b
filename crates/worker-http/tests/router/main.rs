//! The router end to end on a fake engine, without a model or a socket:
//! validation, authentication, admission, both streaming contracts, whole
//! answers, log-probabilities, cancellation and the worker's phases.

mod fake;
mod harness;

mod admission;
mod execute;
mod lifecycle;
mod misc;
mod openai;
