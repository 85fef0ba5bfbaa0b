//! The worker's command-line flags, defined once.
//!
//! `llorch-worker serve` and `fetch` parse these structs; the operator fills
//! the same structs from a ModelWorker and turns them into container
//! arguments with [`to_args`], so a flag renamed here is renamed for both,
//! and the list of flags a ModelWorker's `extraArgs` may not repeat
//! follows from what the operator sets. Settings with a default are
//! `Option`s whose default the accessors apply: a flag the operator leaves
//! unset is not written into the pod.
//!
//! This crate depends on clap and serde only (no engine code).

mod device;

pub use device::{Device, KvCacheType};

/// Sequences a worker decodes at once when `--parallel` is not given.
pub const DEFAULT_PARALLEL: usize = 4;

use clap::{Args, Command};
use serde::Serialize;
use std::path::PathBuf;

/// `llorch-worker serve`'s flags. The first ones are in the order the
/// operator writes them.
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize)]
pub struct ServeFlags {
    /// The GGUF model to serve.
    #[arg(long, env = "LLORCH_MODEL")]
    pub model: PathBuf,
    /// Port to listen on (0: any free port, printed at start; default 8080).
    #[arg(long, env = "LLORCH_PORT")]
    pub port: Option<u16>,
    /// The URI the model came from, echoed in reports.
    #[arg(long, env = "LLORCH_MODEL_REF")]
    pub model_ref: Option<String>,
    /// Where to POST the ready/failure report (none: no report).
    #[arg(long, env = "LLORCH_CALLBACK_URL")]
    pub callback_url: Option<String>,
    /// File holding the report's bearer token.
    #[arg(long, env = "LLORCH_CALLBACK_TOKEN_FILE")]
    pub callback_token_file: Option<PathBuf>,
    /// Seconds streams may run after SIGTERM (default 30).
    #[arg(long, env = "LLORCH_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,
    /// Seconds after SIGTERM during which requests are still taken while
    /// `/ready` is 503 (part of the grace period; default 0).
    #[arg(long, env = "LLORCH_DRAIN_DELAY")]
    pub drain_delay: Option<u64>,
    /// Log format: json or text (default text).
    #[arg(long, env = "LLORCH_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Context size per request (default: the model's, at most 4096).
    #[arg(long, env = "LLORCH_CTX_SIZE")]
    pub ctx_size: Option<usize>,
    /// Requests decoded at once (continuous batching; default 4).
    #[arg(long, env = "LLORCH_PARALLEL")]
    pub parallel: Option<usize>,
    /// Requests that may wait beyond those; more get 429 (default 16).
    #[arg(long, env = "LLORCH_QUEUE_DEPTH")]
    pub queue_depth: Option<usize>,
    /// File holding the API key inference routes require.
    #[arg(long, env = "LLORCH_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Address to listen on (default 0.0.0.0).
    #[arg(long, env = "LLORCH_HOST")]
    pub host: Option<String>,
    /// cpu, cuda or cuda:N (default cpu).
    #[arg(long, env = "LLORCH_DEVICE")]
    pub device: Option<Device>,
    /// Worker threads (0: one per core; default 0).
    #[arg(long, env = "LLORCH_THREADS")]
    pub threads: Option<usize>,
    /// This worker's id (default: $POD_NAME, else the hostname).
    #[arg(long, env = "LLORCH_WORKER_ID")]
    pub worker_id: Option<String>,
    /// This worker's URL in reports (default: http://$POD_IP:PORT, else
    /// the listen address).
    #[arg(long, env = "LLORCH_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Largest request body in bytes (default 1048576).
    #[arg(long, env = "LLORCH_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// KV cache element type: f16 or f32 (default f16).
    #[arg(long, env = "LLORCH_KV_TYPE", value_enum)]
    pub kv_type: Option<KvCacheType>,
    /// Seconds a stream may wait for its client to read before its job is
    /// cancelled and its place freed (default 30).
    #[arg(long, env = "LLORCH_STALL_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: Option<u64>,
    /// Seconds a connection may take to send a request's headers, and may
    /// stay open between requests, before the server closes it (default
    /// 30).
    #[arg(long, env = "LLORCH_HEADER_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: Option<u64>,
    #[command(flatten)]
    #[serde(flatten)]
    pub rope: RopeFlags,
}

impl ServeFlags {
    /// The port (8080 by default).
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(8080)
    }

    /// The listen address (all interfaces by default).
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or("0.0.0.0")
    }

    /// The device (the CPU by default).
    pub fn device(&self) -> Device {
        self.device.unwrap_or(Device::Cpu)
    }

    /// Worker threads (0: one per core).
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or(0)
    }

    /// Requests decoded at once.
    pub fn parallel(&self) -> usize {
        self.parallel.unwrap_or(DEFAULT_PARALLEL)
    }

    /// Requests that may wait beyond those.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth.unwrap_or(16)
    }

    /// Seconds streams may run after SIGTERM.
    pub fn shutdown_grace(&self) -> u64 {
        self.shutdown_grace.unwrap_or(30)
    }

    /// Seconds requests are still taken after SIGTERM.
    pub fn drain_delay(&self) -> u64 {
        self.drain_delay.unwrap_or(0)
    }

    /// `text` or `json`.
    pub fn log_format(&self) -> &str {
        self.log_format.as_deref().unwrap_or("text")
    }

    /// Largest request body in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes.unwrap_or(1 << 20)
    }

    /// How long a stream may wait for its client to read.
    pub fn stall_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.stall_timeout.unwrap_or(30))
    }

    /// How long a connection may take to send a request's headers.
    pub fn header_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.header_timeout.unwrap_or(30))
    }

    /// The KV cache element type.
    pub fn kv_type(&self) -> KvCacheType {
        self.kv_type.unwrap_or(KvCacheType::F16)
    }

    /// The container arguments: `serve` and every flag that is set.
    pub fn to_args(&self) -> Vec<String> {
        to_args("serve", self)
    }
}

/// RoPE settings over the model file's (llama.cpp's flags of the same
/// names), for every subcommand that loads a model.
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize)]
pub struct RopeFlags {
    /// RoPE scaling: none, linear or yarn (default: the model's).
    #[arg(long, env = "LLORCH_ROPE_SCALING", value_parser = ["none", "linear", "yarn"])]
    pub rope_scaling: Option<String>,
    /// RoPE context scaling factor: positions are divided by it (default:
    /// the model's).
    #[arg(long, env = "LLORCH_ROPE_SCALE", value_parser = parse_positive)]
    pub rope_scale: Option<f32>,
    /// RoPE frequency base (default: the model's).
    #[arg(long, env = "LLORCH_ROPE_FREQ_BASE", value_parser = parse_positive)]
    pub rope_freq_base: Option<f32>,
    /// The context the model was trained with before scaling, for YaRN
    /// (default: the model's).
    #[arg(long, env = "LLORCH_YARN_ORIG_CTX")]
    pub yarn_orig_ctx: Option<usize>,
}

/// `llorch-worker fetch`'s flags, in the order the operator writes them.
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize)]
pub struct FetchFlags {
    /// The model: hf://ORG/REPO/FILE.gguf[@REV], https://…, http://…,
    /// pvc://CLAIM/PATH or file:///PATH.
    #[arg(long, env = "LLORCH_MODEL_URI")]
    pub uri: String,
    /// Directory to write model.gguf and model.json to (default /models).
    #[arg(long, env = "LLORCH_MODEL_DIR")]
    pub dest: Option<PathBuf>,
    /// Expected SHA-256 of the file (hex); a mismatch fails.
    #[arg(long)]
    pub sha256: Option<String>,
    /// GPU memory to check the fit against (a quantity: 24Gi, 80G).
    #[arg(long)]
    pub gpu_memory: Option<String>,
    /// Context size the worker will serve (default: the model's, at most
    /// 4096).
    #[arg(long)]
    pub ctx_size: Option<usize>,
    /// Sequences the worker decodes at once (its --parallel; default 4).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// PEM file of extra CA certificates, for a private HTTPS mirror.
    #[arg(long, env = "LLORCH_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Log format: json or text (default text).
    #[arg(long, env = "LLORCH_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

impl FetchFlags {
    /// Where model.gguf and model.json go.
    pub fn dest(&self) -> PathBuf {
        self.dest
            .clone()
            .unwrap_or_else(|| PathBuf::from("/models"))
    }

    /// Sequences the worker decodes at once.
    pub fn parallel(&self) -> usize {
        self.parallel.unwrap_or(DEFAULT_PARALLEL)
    }

    /// `text` or `json`.
    pub fn log_format(&self) -> &str {
        self.log_format.as_deref().unwrap_or("text")
    }

    /// The container arguments: `fetch` and every flag that is set.
    pub fn to_args(&self) -> Vec<String> {
        to_args("fetch", self)
    }
}

/// A number above zero.
pub fn parse_positive(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// `subcommand` and the flags of `flags` that are set, in the order the
/// struct declares them: each field's value under its flag's long name
/// (clap names a field's argument after the field, as serde names its
/// value), repeated for lists, alone for a true switch.
fn to_args<F: Args + Serialize>(subcommand: &'static str, flags: &F) -> Vec<String> {
    let command = F::augment_args(Command::new(subcommand));
    let values = serde_json::to_value(flags).unwrap_or_default();
    let mut args = vec![subcommand.to_string()];
    for arg in command.get_arguments() {
        let (Some(long), Some(value)) = (arg.get_long(), values.get(arg.get_id().as_str())) else {
            continue;
        };
        let items = match value {
            serde_json::Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        for item in items {
            let text = match item {
                serde_json::Value::Null | serde_json::Value::Bool(false) => continue,
                serde_json::Value::Bool(true) => {
                    args.push(format!("--{long}"));
                    continue;
                }
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            args.push(format!("--{long}"));
            args.push(text);
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    enum Cli {
        Serve(Box<ServeFlags>),
        Fetch(FetchFlags),
    }

    #[test]
    fn the_args_parse_back_to_the_same_flags() {
        let serve = ServeFlags {
            model: "/models/model.gguf".into(),
            port: Some(9000),
            callback_url: Some("http://op:8081/r".into()),
            parallel: Some(2),
            device: Some(Device::Cuda(1)),
            kv_type: Some(KvCacheType::F32),
            rope: RopeFlags {
                rope_scale: Some(0.5),
                ..RopeFlags::default()
            },
            ..ServeFlags::default()
        };
        let args = serve.to_args();
        assert_eq!(
            args[..5],
            ["serve", "--model", "/models/model.gguf", "--port", "9000"]
        );
        match Cli::try_parse_from(std::iter::once("llorch-worker".to_string()).chain(args)) {
            Ok(Cli::Serve(parsed)) => assert_eq!(*parsed, serve),
            other => panic!("{other:?}"),
        }
        let fetch = FetchFlags {
            uri: "hf://o/r/f.gguf".into(),
            dest: Some("/models".into()),
            sha256: Some("ab".into()),
            ..FetchFlags::default()
        };
        assert_eq!(
            fetch.to_args(),
            [
                "fetch",
                "--uri",
                "hf://o/r/f.gguf",
                "--dest",
                "/models",
                "--sha256",
                "ab"
            ]
        );
        match Cli::try_parse_from(
            ["llorch-worker".to_string()]
                .into_iter()
                .chain(fetch.to_args()),
        ) {
            Ok(Cli::Fetch(parsed)) => assert_eq!(parsed, fetch),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unset_flags_are_left_out_and_defaults_apply() {
        let serve = ServeFlags {
            model: "m.gguf".into(),
            ..ServeFlags::default()
        };
        assert_eq!(serve.to_args(), ["serve", "--model", "m.gguf"]);
        assert_eq!(serve.port(), 8080);
        assert_eq!(serve.device(), Device::Cpu);
        assert_eq!(serve.log_format(), "text");
        assert_eq!(
            FetchFlags::default().dest(),
            std::path::Path::new("/models")
        );
    }
}
