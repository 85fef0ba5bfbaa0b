//! `llorch-worker logits`: the model's logits for a prompt, as JSON. This is
//! how conformance with llama.cpp is checked.

use crate::runtime::{self, Device, Loaded};
use anyhow::{Result, bail};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use worker_compute::{Backend, KvType, TokenPos};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF model.
    #[arg(long, env = "LLORCH_MODEL")]
    model: PathBuf,
    /// Text to tokenize (BOS added as the model asks).
    #[arg(long, conflicts_with = "tokens", required_unless_present = "tokens")]
    prompt: Option<String>,
    /// Token ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    tokens: Vec<u32>,
    /// Logits of every position instead of the last.
    #[arg(long)]
    all_positions: bool,
    /// Print JSON (the only format).
    #[arg(long)]
    json: bool,
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
    /// Tokens per forward batch.
    #[arg(long, default_value_t = 512)]
    batch: usize,
}

runtime::one_sequence_command!(logits, |a| a.ctx_size);

fn logits<B: Backend>(args: &Args, rt: Loaded<B>) -> Result<()> {
    let tokens = match &args.prompt {
        Some(p) => rt.tokenizer.encode(p, true, false)?,
        None => args.tokens.clone(),
    };
    if tokens.is_empty() {
        bail!("nothing to evaluate: the prompt has no tokens");
    }
    if tokens.len() > rt.n_ctx {
        bail!(
            "{} tokens do not fit the context of {}",
            tokens.len(),
            rt.n_ctx
        );
    }
    let batch = args.batch.max(1);
    let vocab = rt.model.vocab_size();
    let mut ws = rt.model.workspace(batch, batch)?;
    let mut kv = rt.model.kv_cache(1, rt.n_ctx, args.kv_type, batch)?;
    let mut rows: Vec<Vec<f32>> = Vec::new();
    let mut out = Vec::new();
    for (c, chunk) in tokens.chunks(batch).enumerate() {
        let pos: Vec<TokenPos> = (0..chunk.len())
            .map(|i| TokenPos {
                seq: 0,
                pos: (c * batch + i) as u32,
            })
            .collect();
        let last_chunk = (c + 1) * batch >= tokens.len();
        let want: Vec<usize> = if args.all_positions {
            (0..chunk.len()).collect()
        } else if last_chunk {
            vec![chunk.len() - 1]
        } else {
            Vec::new()
        };
        rt.model
            .forward(&mut ws, &mut kv, chunk, &pos, &want, &mut out)?;
        rows.extend(out.chunks_exact(vocab).map(<[f32]>::to_vec));
    }
    let logits = if args.all_positions {
        json!(rows)
    } else {
        json!(rows.pop().unwrap_or_default())
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(
        &mut stdout,
        &json!({ "tokens": tokens, "n_vocab": vocab, "logits": logits }),
    )?;
    writeln!(stdout)?;
    Ok(())
}
