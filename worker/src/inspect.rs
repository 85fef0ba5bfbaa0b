//! `llorch-worker inspect PATH [--json]`: what a GGUF file holds, and
//! whether this worker can run it.

use anyhow::{Context, Result};
use serde_json::{Map, Value as Json, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use worker_common::ModelFacts;
use worker_gguf::{Array, GgufFile, Value, model_facts, parameter_count};

/// Arrays longer than this are summarized by type and length.
const ARRAY_SHOWN: usize = 16;
/// Strings longer than this are cut in text output (JSON has them whole).
const STRING_SHOWN: usize = 96;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF file.
    path: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let file = GgufFile::open(&args.path)
        .with_context(|| format!("cannot read {}", args.path.display()))?;
    let report = report(&file, &args.path)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_text(&mut out, &report)?;
    }
    Ok(())
}

/// Everything `inspect` says, as JSON; the text form is rendered from it so
/// the two cannot disagree.
fn report(file: &GgufFile, path: &Path) -> Result<Json> {
    let meta = file.metadata();
    // A file that is valid GGUF but lacks model facts (a vocabulary-only
    // file, a fixture) is still worth inspecting: say what is missing.
    let (facts, warnings) = match model_facts(file, path) {
        Ok(facts) => (Some(facts), Vec::new()),
        Err(e) => (None, vec![e.to_string()]),
    };
    // The verdict `fetch` and `serve` act on, from the same check.
    let unsupported = worker_models::check_supported(file.header()).err();
    let fact = |f: fn(&ModelFacts) -> Json| facts.as_ref().map_or(Json::Null, f);
    let tokens = meta.get_opt::<&Array>("tokenizer.ggml.tokens")?;
    let metadata: Vec<Json> = meta
        .iter()
        .map(|(key, value)| {
            let mut entry = Map::new();
            entry.insert("key".into(), key.into());
            describe(value, &mut entry);
            Json::Object(entry)
        })
        .collect();
    let header = file.header();
    let tensors: Vec<Json> = file
        .tensor_infos()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "type": t.ty.name(),
                "shape": t.dims,
                "offset": header.data_offset + t.offset,
                "bytes": t.n_bytes,
            })
        })
        .collect();
    Ok(json!({
        "path": path.display().to_string(),
        "gguf_version": file.version(),
        "size_bytes": file.len(),
        "architecture": fact(|f| json!(f.architecture)),
        "name": fact(|f| json!(f.name)),
        "quantization": fact(|f| json!(f.quantization)),
        "parameters": parameter_count(file),
        "context_length": fact(|f| json!(f.context_length)),
        "supported": unsupported.is_none(),
        "unsupported_reason": unsupported.map(|e| e.to_string()),
        "tokenizer": {
            "model": meta.get_opt::<&str>("tokenizer.ggml.model")?,
            "vocab_size": tokens.map(Array::len),
        },
        "alignment": header.alignment,
        "data_offset": header.data_offset,
        "metadata": metadata,
        "tensors": tensors,
        "warnings": warnings,
    }))
}

/// Adds `type` and either `value` or, for long arrays, `element_type` and
/// `length`.
fn describe(value: &Value, entry: &mut Map<String, Json>) {
    entry.insert("type".into(), value.value_type().name().into());
    match value {
        Value::Array(a) if a.len() > ARRAY_SHOWN => {
            entry.insert("element_type".into(), a.element_type().name().into());
            entry.insert("length".into(), a.len().into());
        }
        other => {
            entry.insert("value".into(), to_json(other));
        }
    }
}

fn to_json(value: &Value) -> Json {
    match value {
        Value::U8(v) => json!(v),
        Value::I8(v) => json!(v),
        Value::U16(v) => json!(v),
        Value::I16(v) => json!(v),
        Value::U32(v) => json!(v),
        Value::I32(v) => json!(v),
        Value::U64(v) => json!(v),
        Value::I64(v) => json!(v),
        // Print an f32 by its own shortest form, not its widened f64 digits.
        Value::F32(v) => format!("{v}")
            .parse::<f64>()
            .map_or(Json::Null, |f| json!(f)),
        Value::F64(v) => json!(v),
        Value::Bool(v) => json!(v),
        Value::String(s) => json!(s),
        Value::Array(a) => Json::Array(
            (0..a.len())
                .filter_map(|i| a.get(i))
                .map(|v| to_json(&v))
                .collect(),
        ),
    }
}

fn write_text(out: &mut impl Write, r: &Json) -> Result<()> {
    let field = |k: &str| r.get(k).cloned().unwrap_or(Json::Null);
    let plain = |v: Json| match v {
        Json::String(s) => s,
        Json::Null => "-".to_string(),
        other => other.to_string(),
    };
    let size = field("size_bytes").as_u64().unwrap_or(0);
    let params = field("parameters").as_u64().unwrap_or(0);
    let tok = field("tokenizer");
    writeln!(out, "file          {}", plain(field("path")))?;
    writeln!(out, "size          {} ({size} bytes)", human_bytes(size))?;
    writeln!(out, "gguf version  {}", plain(field("gguf_version")))?;
    writeln!(out, "architecture  {}", plain(field("architecture")))?;
    writeln!(out, "name          {}", plain(field("name")))?;
    writeln!(out, "quantization  {}", plain(field("quantization")))?;
    writeln!(out, "parameters    {} ({params})", human_count(params))?;
    writeln!(out, "context       {}", plain(field("context_length")))?;
    match field("unsupported_reason") {
        Json::String(reason) => writeln!(out, "supported     no: {reason}")?,
        _ => writeln!(out, "supported     yes")?,
    }
    writeln!(
        out,
        "tokenizer     {}, {} tokens",
        plain(tok.get("model").cloned().unwrap_or(Json::Null)),
        plain(tok.get("vocab_size").cloned().unwrap_or(Json::Null))
    )?;
    writeln!(out, "alignment     {}", plain(field("alignment")))?;
    for w in field("warnings")
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        writeln!(out, "warning       {}", plain(w.clone()))?;
    }

    let metadata = field("metadata");
    let metadata = metadata.as_array().map(Vec::as_slice).unwrap_or_default();
    writeln!(out, "\nmetadata ({} keys)", metadata.len())?;
    for m in metadata {
        let key = m.get("key").and_then(Json::as_str).unwrap_or_default();
        let ty = m.get("type").and_then(Json::as_str).unwrap_or_default();
        let shown = match (m.get("value"), m.get("element_type"), m.get("length")) {
            (Some(Json::String(s)), _, _) => quote_cut(s),
            (Some(v), _, _) => v.to_string(),
            (None, Some(et), Some(n)) => format!("[{}; {n}]", plain(et.clone())),
            _ => String::new(),
        };
        writeln!(out, "  {key:<44} {ty:<7} {shown}")?;
    }

    let tensors = field("tensors");
    let tensors = tensors.as_array().map(Vec::as_slice).unwrap_or_default();
    writeln!(out, "\ntensors ({})", tensors.len())?;
    writeln!(
        out,
        "  {:<40} {:<8} {:<22} {:>12} {:>12}",
        "name", "type", "shape", "offset", "bytes"
    )?;
    for t in tensors {
        let get = |k: &str| t.get(k).cloned().unwrap_or(Json::Null);
        writeln!(
            out,
            "  {:<40} {:<8} {:<22} {:>12} {:>12}",
            plain(get("name")),
            plain(get("type")),
            plain(get("shape")),
            plain(get("offset")),
            plain(get("bytes"))
        )?;
    }
    Ok(())
}

fn quote_cut(s: &str) -> String {
    let escaped: String = s.escape_debug().collect();
    if escaped.chars().count() <= STRING_SHOWN {
        return format!("\"{escaped}\"");
    }
    let head: String = escaped.chars().take(STRING_SHOWN).collect();
    format!("\"{head}\"… ({} bytes)", s.len())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn human_count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}
