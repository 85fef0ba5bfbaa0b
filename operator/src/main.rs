//! `llorch-operator`: the Kubernetes controller for `ModelWorker` resources.
//!
//! `crd` prints the CustomResourceDefinition generated from `llorch-api`
//! (the source of `manifests/crd.yaml`); `render -f mw.yaml` prints the
//! children the operator builds for a ModelWorker; `run` is the
//! controller (see `llorch_operator::controller`); `gateway` is the OpenAI
//! endpoint in front of every ModelWorker (see `llorch_operator::gateway`).

mod gateway_cmd;
mod run;

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
    /// Print the objects the operator would create for a ModelWorker.
    Render(RenderArgs),
    /// Run the controller until SIGTERM or Ctrl-C.
    Run(run::RunArgs),
    /// Run the gateway: one OpenAI endpoint routing to every ModelWorker.
    Gateway(gateway_cmd::GatewayArgs),
}

/// What shapes the children, shared by `render` and `run`.
#[derive(Debug, clap::Args)]
pub(crate) struct ChildArgs {
    /// Image of GPU workers.
    #[arg(long, env = "LLORCH_WORKER_IMAGE", default_value = concat!("llorch/worker:", env!("CARGO_PKG_VERSION")))]
    worker_image: String,
    /// Image of CPU workers.
    #[arg(long, env = "LLORCH_WORKER_CPU_IMAGE", default_value = concat!("llorch/worker:", env!("CARGO_PKG_VERSION"), "-cpu"))]
    worker_cpu_image: String,
    /// The report URL handed to workers. `run` defaults to the ClusterIP of
    /// the operator's own Service, looked up at start (no cluster DNS
    /// needed); `render` to the Service's DNS name.
    #[arg(long, env = "LLORCH_REPORT_URL")]
    report_url: Option<String>,
}

impl ChildArgs {
    /// The build settings, with `report_url` where the flag is unset.
    pub(crate) fn config(&self, report_url: &str) -> llorch_operator::build::BuildConfig {
        llorch_operator::build::BuildConfig {
            worker_image: self.worker_image.clone(),
            worker_cpu_image: self.worker_cpu_image.clone(),
            report_url: self
                .report_url
                .clone()
                .unwrap_or_else(|| report_url.to_owned()),
        }
    }
}

/// What ModelWorkers may ask for, shared by `render` and `run`.
#[derive(Debug, clap::Args)]
pub(crate) struct PolicyArgs {
    /// Node directories under which `file://` models may lie (repeatable or
    /// comma-separated). None: `file://` models are refused with InvalidSpec.
    #[arg(long, env = "LLORCH_ALLOWED_HOST_PATHS", value_delimiter = ',')]
    allowed_host_paths: Vec<String>,
    /// Prefixes `spec.image` must start with (repeatable or comma-separated).
    /// None: any image.
    #[arg(long, env = "LLORCH_ALLOWED_IMAGE_PREFIXES", value_delimiter = ',')]
    allowed_image_prefixes: Vec<String>,
    /// Names `spec.serviceAccountName` may take (repeatable or
    /// comma-separated). None: any.
    #[arg(long, env = "LLORCH_ALLOWED_SERVICE_ACCOUNTS", value_delimiter = ',')]
    allowed_service_accounts: Vec<String>,
}

impl PolicyArgs {
    /// The policy, or why an allowed host path is unusable.
    pub(crate) fn policy(
        &self,
    ) -> Result<llorch_operator::policy::Policy, llorch_operator::policy::BadHostPath> {
        llorch_operator::policy::Policy::new(
            self.allowed_host_paths.clone(),
            self.allowed_image_prefixes.clone(),
            self.allowed_service_accounts.clone(),
        )
    }
}

/// The report URL by the Service's DNS name, when nothing better is known.
pub(crate) const DNS_REPORT_URL: &str =
    "http://llorch-operator.llorch-system.svc:8081/v1/workers/report";

#[derive(Debug, clap::Args)]
struct RenderArgs {
    /// A YAML file holding the ModelWorker.
    #[arg(short = 'f', long = "filename")]
    file: std::path::PathBuf,
    /// Namespace, when the file names none.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    children: ChildArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// PodDisruptionBudget API version.
    #[arg(long, default_value = "policy/v1")]
    pdb_api_version: String,
}

/// The children of the ModelWorker in `args.file`, as a YAML stream.
fn render(args: &RenderArgs) -> Result<String, String> {
    use llorch_operator::build;
    let text =
        std::fs::read_to_string(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let mut mw: llorch_api::ModelWorker = text
        .split("\n---\n")
        .filter_map(|doc| serde_yaml::from_str::<serde_yaml::Value>(doc).ok())
        .find(|v| v["kind"] == "ModelWorker")
        .ok_or_else(|| format!("{}: no ModelWorker in the file", args.file.display()))
        .and_then(|v| {
            serde_yaml::from_value(v).map_err(|e| format!("{}: {e}", args.file.display()))
        })?;
    mw.metadata
        .namespace
        .get_or_insert_with(|| args.namespace.clone());
    let policy = args.policy.policy().map_err(|e| e.to_string())?;
    let problems = llorch_operator::validate::validate(&mw, &policy);
    if !problems.is_empty() {
        return Err(format!("invalid ModelWorker: {}", problems.join("; ")));
    }
    let cfg = args.children.config(DNS_REPORT_URL);
    let e = |e: build::BuildError| e.to_string();
    let mut docs = vec![
        yaml(&build::deployment(&mw, &cfg).map_err(e)?)?,
        yaml(&build::service(&mw).map_err(e)?)?,
        yaml(&build::callback_secret(&mw, "<generated by the operator>").map_err(e)?)?,
    ];
    if let Some(pvc) = llorch_operator::storage::cache_claim(&mw).map_err(e)? {
        docs.push(yaml(&pvc)?);
    }
    if let Some(pdb) = build::pod_disruption_budget(&mw, &args.pdb_api_version).map_err(e)? {
        docs.push(yaml(&pdb)?);
    }
    if let Some(np) = build::network_policy(&mw, &cfg).map_err(e)? {
        docs.push(yaml(&np)?);
    }
    Ok(docs.join("---\n"))
}

fn yaml<T: serde::Serialize>(v: &T) -> Result<String, String> {
    serde_yaml::to_string(v).map_err(|e| e.to_string())
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
        Command::Render(args) => match render(&args) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Gateway(args) => match gateway_cmd::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => match run::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
