//! `llorch-worker generate`: stream a completion of a prompt to stdout.

use crate::runtime::{self, Device, Loaded};
use anyhow::Result;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use worker_compute::{Backend, KvType};
use worker_models::{Generator, JobEvent, JobRequest, MAX_TOP_LOGPROBS, SamplingParams};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF model.
    #[arg(long, env = "LLORCH_MODEL")]
    model: PathBuf,
    /// The prompt (raw text, no chat template; BOS as the model asks).
    #[arg(long)]
    prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Minimum probability relative to the most likely token (0: off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Repetition penalty over the last 64 tokens (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Frequency penalty over the last 64 tokens (0: off).
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Presence penalty over the last 64 tokens (0: off).
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    /// Sampling seed (default: random, printed to stderr).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop strings (repeatable); the match is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// Constrain the output to one JSON object (JSON mode).
    #[arg(long)]
    json: bool,
    /// Print each generated token's log-probability to stderr, with this
    /// many alternatives (0-20).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=MAX_TOP_LOGPROBS as i64))]
    logprobs: Option<u8>,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Context size (default: the model's, at most 4096).
    #[arg(long)]
    ctx_size: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// KV cache element type: f16 (default) or f32.
    #[arg(long, default_value = "f16", value_parser = runtime::parse_kv_type)]
    kv_type: KvType,
    #[command(flatten)]
    rope: runtime::RopeArgs,
}

runtime::one_sequence_command!(generate, |a| a.ctx_size);

fn generate<B: Backend>(args: &Args, rt: Loaded<B>) -> Result<()> {
    let prompt = rt.tokenizer.encode(&args.prompt, true, false)?;
    let max_tokens = args.max_tokens.min(rt.n_ctx.saturating_sub(prompt.len()));
    let mut generator = Generator::new(rt.model, rt.tokenizer, rt.n_ctx, args.kv_type, 512)?;
    let req = JobRequest {
        prompt,
        max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repeat_penalty: args.repeat_penalty,
            frequency_penalty: args.frequency_penalty,
            presence_penalty: args.presence_penalty,
            repeat_last_n: 64,
            logit_bias: Vec::new(),
            seed: args.seed,
        },
        stop: args.stop.clone(),
        logprobs: args.logprobs.map(usize::from),
        json_object: args.json,
    };
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let outcome = generator.generate(&req, |event| {
        match event {
            JobEvent::Text { text, .. } => {
                if let Err(e) = stdout
                    .write_all(text.as_bytes())
                    .and_then(|()| stdout.flush())
                {
                    write_error = Some(e);
                    return ControlFlow::Break(());
                }
            }
            JobEvent::Logprob(lp) => {
                let top: Vec<String> = lp
                    .top
                    .iter()
                    .map(|t| format!("{:?} {:.4}", t.token, t.logprob))
                    .collect();
                eprintln!(
                    "[logprob] {:?} {:.4} | {}",
                    lp.chosen.token,
                    lp.chosen.logprob,
                    top.join(", ")
                );
            }
            _ => {}
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    writeln!(stdout)?;
    let rate = |n: usize, d: std::time::Duration| n as f64 / d.as_secs_f64().max(1e-9);
    eprintln!(
        "prompt: {} tokens, {:.1} tokens/s | generation: {} tokens, {:.1} tokens/s | stop: {} | seed: {}",
        outcome.tokens_in,
        rate(outcome.tokens_in, outcome.prompt_time),
        outcome.tokens_out,
        rate(outcome.tokens_out, outcome.decode_time),
        outcome.stop_reason.map_or("CANCELLED", |r| r.as_str()),
        outcome.seed
    );
    Ok(())
}
