//! `llorch-worker bench`: prompt-processing and generation speed, measured
//! the way llama-bench measures it (pp: one batch of `-p` tokens; tg: `-n`
//! single-token steps from an empty context), median of repetitions.

use crate::runtime::{self, Device, Loaded};
use anyhow::Result;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use worker_compute::{Backend, KvType, TokenPos};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF model.
    #[arg(long, env = "LLORCH_MODEL")]
    model: PathBuf,
    /// Prompt tokens (0: skip the pp test).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Generated tokens (0: skip the tg test).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// KV cache element type: f16 (default) or f32.
    #[arg(long, default_value = "f16", value_parser = runtime::parse_kv_type)]
    kv_type: KvType,
    #[command(flatten)]
    rope: runtime::RopeArgs,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

runtime::one_sequence_command!(bench, |a| Some((a.n_prompt + a.n_gen).max(1)));

fn bench<B: Backend>(args: &Args, rt: Loaded<B>) -> Result<()> {
    let n_ctx = rt.n_ctx;
    let model = &rt.model;
    let vocab = model.vocab_size() as u32;
    let batch = args.n_prompt.max(1);
    let mut ws = model.workspace(batch, 1)?;
    let mut kv = model.kv_cache(1, n_ctx, args.kv_type, batch)?;
    let mut logits = Vec::new();
    // Deterministic token ids spread over the vocabulary.
    let ids: Vec<u32> = (0..batch as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let reps = args.reps.max(1);
    let mut results = Vec::new();

    if args.n_prompt > 0 {
        let pos: Vec<TokenPos> = (0..args.n_prompt as u32)
            .map(|p| TokenPos { seq: 0, pos: p })
            .collect();
        let mut runs = Vec::new();
        for rep in 0..=reps {
            let t = Instant::now();
            model.forward(
                &mut ws,
                &mut kv,
                &ids[..args.n_prompt],
                &pos,
                &[args.n_prompt - 1],
                &mut logits,
            )?;
            if rep > 0 {
                runs.push(t.elapsed()); // the first run warms up
            }
        }
        results.push(("pp", args.n_prompt, median(runs)));
    }
    if args.n_gen > 0 {
        let mut runs = Vec::new();
        for rep in 0..=reps {
            let t = Instant::now();
            for p in 0..args.n_gen {
                let tp = [TokenPos {
                    seq: 0,
                    pos: p as u32,
                }];
                model.forward(
                    &mut ws,
                    &mut kv,
                    &[ids[p % ids.len()]],
                    &tp,
                    &[0],
                    &mut logits,
                )?;
            }
            if rep > 0 {
                runs.push(t.elapsed());
            }
        }
        results.push(("tg", args.n_gen, median(runs)));
    }

    let info = model.backend_info();
    let file = model.file();
    let size = file.len();
    let params = worker_gguf::parameter_count(file);
    let quant = worker_gguf::quantization(file)?;
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|(test, n, d)| {
                json!({
                    "test": format!("{test}{n}"),
                    "tokens": n,
                    "seconds": d.as_secs_f64(),
                    "tokens_per_sec": *n as f64 / d.as_secs_f64(),
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "model": args.model.display().to_string(),
                "architecture": model.config().arch.name(),
                "quantization": quant,
                "size_bytes": size,
                "parameters": params,
                "backend": info.kind.as_str(),
                "device": info.device,
                "threads": args.threads,
                "repetitions": reps,
                "results": rows,
            })
        );
    } else {
        println!("| model | quant | size | params | backend | test | t/s |");
        println!("| --- | --- | ---: | ---: | --- | --- | ---: |");
        for (test, n, d) in &results {
            println!(
                "| {} | {quant} | {:.1} MiB | {:.1} M | {} | {test}{n} | {:.2} |",
                model.config().arch.name(),
                size as f64 / (1 << 20) as f64,
                params as f64 / 1e6,
                info.device,
                *n as f64 / d.as_secs_f64()
            );
        }
    }
    Ok(())
}
