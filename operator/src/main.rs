//! `llorch-operator`: the Kubernetes controller for `ModelWorker` resources.
//!
//! Status: the command line exists (`--version`, `--help`); the `run` and
//! `crd` subcommands arrive with the operator issue. Nothing here pretends
//! to reconcile anything yet.

use clap::Parser;

/// The llorch operator: reconciles ModelWorker resources into worker pods.
#[derive(Debug, Parser)]
#[command(name = "llorch-operator", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("llorch-operator: no subcommands yet; see --help");
    std::process::exit(2);
}
