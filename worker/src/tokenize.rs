//! `llorch-worker tokenize` and `detokenize`: the model's tokenizer on the
//! command line, for checking ids against llama.cpp.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use worker_gguf::GgufFile;
use worker_tokenizer::Tokenizer;

#[derive(Debug, clap::Args)]
pub struct TokenizeArgs {
    /// The GGUF model whose tokenizer to use.
    #[arg(long, env = "LLORCH_MODEL")]
    model: PathBuf,
    /// Print a JSON array instead of space-separated ids.
    #[arg(long)]
    json: bool,
    /// Do not add BOS (or EOS) even where the model asks for it.
    #[arg(long)]
    no_bos: bool,
    /// Turn control-token texts such as `<start_of_turn>` into their ids.
    #[arg(long)]
    parse_special: bool,
    /// The text to tokenize.
    text: String,
}

#[derive(Debug, clap::Args)]
pub struct DetokenizeArgs {
    /// The GGUF model whose tokenizer to use.
    #[arg(long, env = "LLORCH_MODEL")]
    model: PathBuf,
    /// Token ids, comma-separated (`--tokens 1,2,3`).
    #[arg(long, value_delimiter = ',')]
    tokens: Vec<u32>,
    /// Token ids as separate arguments.
    ids: Vec<u32>,
}

pub fn load(model: &Path) -> Result<Tokenizer> {
    let file = GgufFile::open(model).with_context(|| format!("cannot read {}", model.display()))?;
    Tokenizer::from_gguf(file.metadata())
        .with_context(|| format!("cannot build the tokenizer of {}", model.display()))
}

pub fn tokenize(args: &TokenizeArgs) -> Result<()> {
    let tok = load(&args.model)?;
    let ids = tok.encode(&args.text, !args.no_bos, args.parse_special)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &ids)?;
        writeln!(out)?;
    } else {
        let line: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "{}", line.join(" "))?;
    }
    Ok(())
}

pub fn detokenize(args: &DetokenizeArgs) -> Result<()> {
    let ids: Vec<u32> = args.tokens.iter().chain(&args.ids).copied().collect();
    if ids.is_empty() {
        bail!("no token ids given: pass --tokens 1,2,3 or the ids as arguments");
    }
    let tok = load(&args.model)?;
    let bytes = tok.decode_bytes(&ids, false, true)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    writeln!(out)?;
    Ok(())
}
