//! `llorch-operator`: the Kubernetes controller for `ModelWorker` resources.
//!
//! `crd` prints the CustomResourceDefinition generated from `llorch-api`
//! (the source of `manifests/crd.yaml`). The reconciler (`run`) is not
//! written yet: it says so and exits with status 2 rather than pretend.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The llorch operator: reconciles ModelWorker resources into worker pods.
#[derive(Debug, Parser)]
#[command(name = "llorch-operator", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the ModelWorker CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller (not implemented yet).
    Run,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => match llorch_api::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run => {
            eprintln!(
                "error: the reconciler is not implemented yet; only `crd` works in this version"
            );
            ExitCode::from(2)
        }
    }
}
