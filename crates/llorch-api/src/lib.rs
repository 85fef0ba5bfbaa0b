//! The `ModelWorker` custom resource (`llorch.dev/v1alpha1`): spec and
//! status types, derived with kube's `CustomResource`, shared by the
//! operator and the end-to-end tests.
//!
//! Status: not implemented yet. The operator issue fills this crate; until
//! then it exports nothing.
