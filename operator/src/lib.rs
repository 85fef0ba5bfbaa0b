//! The llorch operator's logic, as a library the binary and tests share.
//!
//! The reconcile pipeline is read → validate → build → apply → status, as
//! in the well-known kube-rs operators. [`validate`] and [`build`] are pure
//! functions of a ModelWorker (and the operator's configuration), tested
//! from YAML fixtures without a cluster; so is [`status`]. The
//! [`controller`] applies their output with server-side apply and writes
//! the status; [`report`] serves the workers' readiness reports and folds
//! them into the status, checking tokens against [`tokens`]; [`conditions`] types the status conditions and settles their transition times for both; [`leader`] elects one active replica on a Lease;
//! [`metrics`] is `/metrics`; [`gateway`] is the OpenAI endpoint in front of every ModelWorker; [`pods`] reads stuck pods; [`policy`] is what the installer lets ModelWorkers ask for; [`storage`] holds the model's source and
//! cache volumes.

pub mod autoscale;
pub mod build;
pub mod conditions;
pub mod controller;
pub mod gateway;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod pods;
pub mod policy;
pub mod report;
pub mod startup;
pub mod status;
pub mod storage;
pub mod subset;
pub mod tokens;
pub mod validate;
