//! `llorch-worker`: the one binary of the worker.
//!
//! Each subcommand lives in its own module; this file only parses the
//! command line and turns errors into a message and a non-zero exit.

mod bench;
mod fetch;
mod generate;
mod http_client;
mod inspect;
mod listen;
mod local_engine;
mod logging;
mod logits;
mod report;
mod runtime;
mod serve;
mod synth;
mod tokenize;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The llorch worker: loads a GGUF model and serves inference.
#[derive(Debug, Parser)]
#[command(name = "llorch-worker", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print what a GGUF file holds: model facts, metadata and tensors.
    Inspect(inspect::Args),
    /// Print the token ids the model's tokenizer gives a text.
    Tokenize(tokenize::TokenizeArgs),
    /// Print the text of token ids.
    Detokenize(tokenize::DetokenizeArgs),
    /// Stream a completion of a prompt to stdout.
    Generate(generate::Args),
    /// Print the model's logits for a prompt as JSON.
    Logits(logits::Args),
    /// Write a random-weight model in a real architecture and shape.
    Synth(synth::Args),
    /// Measure prompt-processing and generation speed (like llama-bench).
    Bench(bench::Args),
    /// Serve the model over HTTP/SSE.
    Serve(Box<serve::Args>),
    /// Download or copy a model into place, check it, and write model.json
    /// (the init container of a worker pod).
    Fetch(fetch::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Tokenize(args) => tokenize::tokenize(&args),
        Command::Detokenize(args) => tokenize::detokenize(&args),
        Command::Logits(args) => logits::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Synth(args) => synth::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Serve(args) => serve::run(&args),
        // fetch reports its own errors, ending with a JSON line.
        Command::Fetch(args) => return fetch::main(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stops early (`inspect | head`) is not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let io = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind);
        let json = cause
            .downcast_ref::<serde_json::Error>()
            .and_then(|e| e.io_error_kind());
        io.or(json) == Some(std::io::ErrorKind::BrokenPipe)
    })
}
