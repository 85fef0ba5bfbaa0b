//! `llorch-worker fetch`: put a model where the worker will load it.
//!
//! Runs as the init container of every worker pod. It resolves
//! `spec.model.uri` (`hf://`, `https://`, `http://`, `pvc://`, `file://`),
//! downloads or copies the file to `DEST/model.gguf.part` (resuming a
//! partial download), checks its SHA-256, renames it to `DEST/model.gguf`,
//! reads the GGUF header and writes `DEST/model.json` (the facts `serve`
//! reports). It then checks that the worker can run the model (its
//! architecture and weight types: `UNSUPPORTED_MODEL` otherwise) and, with
//! `--gpu-memory`, that the model and its KV cache fit the declared GPU
//! memory.
//!
//! A file already in `DEST` from the same URI (a persistent cache) is
//! reused without a download. Every failure ends the output with one JSON
//! line ([`worker_common::FetchFailure`]) and exit status 1: Kubernetes
//! keeps it as the container's termination message and the operator turns
//! it into the ModelWorker's conditions.

mod download;
mod fit;
mod source;
mod transfer;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use source::Source;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use worker_common::{ErrorCode, FetchFailure, ModelFacts};
use worker_gguf::GgufFile;
use worker_models::ModelConfig;

/// `fetch`'s flags, shared with the operator that writes them into pods.
pub type Args = worker_args::FetchFlags;

/// `DEST/model.json`.
#[derive(Debug, Serialize, Deserialize)]
struct ModelJson {
    #[serde(flatten)]
    facts: ModelFacts,
    source_uri: String,
}

/// A failure with the code the operator acts on.
struct Failed(FetchFailure);

impl Failed {
    fn load(err: anyhow::Error) -> Failed {
        Failed(FetchFailure {
            code: ErrorCode::ModelLoadFailed,
            message: format!("{err:#}"),
            need_bytes: None,
            available_bytes: None,
        })
    }
}

/// The longest failure message printed: the pod's termination message
/// keeps the last 2 KiB of the log, and the JSON line must fit whole.
const MAX_FAILURE_MESSAGE: usize = 1024;

/// Prints `failure` as the last line, clipped so it fits the termination
/// message.
fn print_failure(mut failure: FetchFailure) {
    if failure.message.len() > MAX_FAILURE_MESSAGE {
        let mut cut = MAX_FAILURE_MESSAGE;
        while !failure.message.is_char_boundary(cut) {
            cut -= 1;
        }
        failure.message.truncate(cut);
        failure.message.push('…');
    }
    match serde_json::to_string(&failure) {
        Ok(line) => eprintln!("{line}"),
        Err(_) => eprintln!("{}", failure.message),
    }
}

pub fn main(args: &Args) -> ExitCode {
    crate::logging::init(args.log_format());
    // A bug must still end with the JSON line the operator reads.
    std::panic::set_hook(Box::new(|info| {
        print_failure(FetchFailure {
            code: ErrorCode::Internal,
            message: format!("fetch failed unexpectedly: {info}"),
            need_bytes: None,
            available_bytes: None,
        });
    }));
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failed::load(e.into()))
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(Failed(failure)) => {
            tracing::error!(code = %failure.code, "{}", failure.message);
            // The last line: the operator reads it back from the
            // container's termination message.
            print_failure(failure);
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<String, Failed> {
    let gpu_memory = args
        .gpu_memory
        .as_deref()
        .map(worker_common::quantity::parse_bytes)
        .transpose()
        .map_err(|e| Failed::load(e.into()))?;
    let (file, json) = place(args).await.map_err(Failed::load)?;
    // Fetched now or found in the cache alike: a model the worker cannot
    // run fails here, with its reason, every time.
    worker_models::check_supported(file.header()).map_err(|e| {
        Failed(FetchFailure {
            code: ErrorCode::UnsupportedModel,
            message: format!("{} cannot be served: {e}", args.uri),
            need_bytes: None,
            available_bytes: None,
        })
    })?;
    // A feature of the architecture the engine lacks is unsupported too,
    // and as final as an unknown architecture.
    let cfg = ModelConfig::from_metadata(file.metadata()).map_err(|e| {
        let code = if e.is_unsupported() {
            ErrorCode::UnsupportedModel
        } else {
            ErrorCode::ModelLoadFailed
        };
        Failed(FetchFailure {
            code,
            message: format!("{} cannot be served: {e}", args.uri),
            need_bytes: None,
            available_bytes: None,
        })
    })?;
    if let Some(available) = gpu_memory {
        let n_ctx = args.ctx_size.unwrap_or_else(|| cfg.n_ctx_train.min(4096));
        let need = fit::need(&cfg, file.len(), n_ctx, args.parallel());
        if need.total() > available {
            return Err(Failed(FetchFailure {
                code: ErrorCode::InsufficientVram,
                message: fit::message(&need, available, n_ctx, args.parallel()),
                need_bytes: Some(need.total()),
                available_bytes: Some(available),
            }));
        }
        tracing::info!(
            need_mib = need.total() >> 20,
            available_mib = available >> 20,
            "the model fits"
        );
    }
    Ok(json)
}

/// Puts the model at `DEST/model.gguf` with its `model.json`; returns the
/// opened file and the JSON written.
async fn place(args: &Args) -> Result<(GgufFile, String)> {
    let source = source::parse(
        &args.uri,
        std::env::var("HF_ENDPOINT").ok().as_deref(),
        std::env::var("HF_TOKEN").ok().as_deref(),
        Path::new(source::PVC_ROOT),
    )?;
    let dest = args.dest();
    std::fs::create_dir_all(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let model = dest.join("model.gguf");
    let json_path = dest.join("model.json");
    // Replicas may share a cache (a ReadWriteMany claim, or a surge pod
    // beside the old one): one fetch at a time writes it.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dest.join(".fetch.lock"))
        .with_context(|| format!("cannot create the lock file in {}", dest.display()))?;
    if let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock() {
        tracing::info!("another fetch is filling this cache; waiting for it");
        lock.lock().context("cannot lock the cache")?;
    }
    if let Some(json) = cached(&model, &json_path, &args.uri, args.sha256.as_deref()) {
        tracing::info!(path = %model.display(), "the model is already here");
        return Ok((open(&model, &args.uri)?, json));
    }
    // The JSON describes model.gguf: it goes first, and comes back last.
    remove_if_present(&json_path)?;
    let part = dest.join("model.gguf.part");
    let started = std::time::Instant::now();
    let moved = match &source {
        Source::Http { url, bearer } => {
            tracing::info!(uri = %args.uri, "downloading");
            let client = client(args.ca_file.as_deref())?;
            download::download(&client, &args.uri, url, bearer.as_deref(), &part).await?
        }
        Source::Local(src) => {
            tracing::info!(uri = %args.uri, path = %src.display(), "copying");
            let (src, part) = (src.clone(), part.clone());
            tokio::task::spawn_blocking(move || transfer::copy(&src, &part))
                .await
                .context("the copy thread failed")??
        }
    };
    if let Err(e) = transfer::verify(args.sha256.as_deref(), &moved.sha256, &args.uri) {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    // Only a file that parses as GGUF takes the place of model.gguf: a
    // login page served with 200, or a body cut short with no length,
    // must not replace a good model in a shared cache.
    if let Err(e) = GgufFile::open(&part) {
        let _ = std::fs::remove_file(&part);
        return Err(
            anyhow::Error::new(e).context(format!("{} is not a usable GGUF file", args.uri))
        );
    }
    std::fs::rename(&part, &model)
        .with_context(|| format!("cannot rename {} to {}", part.display(), model.display()))?;
    tracing::info!(
        bytes = moved.bytes,
        seconds = started.elapsed().as_secs_f64(),
        sha256 = %moved.sha256,
        "model in place"
    );
    let file = open(&model, &args.uri)?;
    let json = describe(&file, &model, &args.uri, moved.sha256)?;
    let tmp = dest.join("model.json.tmp");
    std::fs::write(&tmp, format!("{json}\n"))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &json_path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), json_path.display()))?;
    drop(lock);
    Ok((file, json))
}

fn open(model: &Path, uri: &str) -> Result<GgufFile> {
    GgufFile::open(model).with_context(|| format!("{uri} is not a usable GGUF file"))
}

/// `model.json` for `file`, read from `model`.
fn describe(file: &GgufFile, model: &Path, uri: &str, sha256: String) -> Result<String> {
    let mut facts = worker_gguf::model_facts(file, model)
        .with_context(|| format!("{uri} is not a usable GGUF file"))?;
    facts.sha256 = Some(sha256);
    Ok(serde_json::to_string(&ModelJson {
        facts,
        source_uri: uri.to_owned(),
    })?)
}

/// The JSON of a model already in place from the same URI (and with the
/// expected hash, when one is given).
fn cached(model: &Path, json_path: &Path, uri: &str, want: Option<&str>) -> Option<String> {
    let text = std::fs::read_to_string(json_path).ok()?;
    let json: ModelJson = serde_json::from_str(&text).ok()?;
    let size = std::fs::metadata(model).ok()?.len();
    let same_hash = match (want, json.facts.sha256.as_deref()) {
        (Some(w), Some(h)) => w.eq_ignore_ascii_case(h),
        (Some(_), None) => false,
        (None, _) => true,
    };
    (json.source_uri == uri && json.facts.size_bytes == size && same_hash)
        .then(|| text.trim().to_owned())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The download client: system CA roots plus `ca_file`'s.
fn client(ca_file: Option<&Path>) -> Result<reqwest::Client> {
    let mut b = crate::http_client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read --ca-file {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-file {} holds no PEM certificates", path.display()))?;
        b = b.tls_certs_merge(certs);
    }
    b.build().context("cannot build the HTTP client")
}
