//! `llorch-worker synth`: write a random-weight model in a real
//! architecture and shape, for conformance tests and benchmarks.

use anyhow::{Result, anyhow, bail};
use std::path::PathBuf;
use worker_gguf::GgmlType;
use worker_models::Arch;
use worker_models::synthetic::{RopeScaling, SyntheticSpec, write_model};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The architecture: llama, qwen2, phi3, gpt2, gemma3, qwen3, gemma2,
    /// mistral3, smollm3, olmo2, granite, qwen3moe, gpt-oss, qwen35,
    /// qwen35moe or gemma4.
    #[arg(long, default_value = "llama")]
    arch: String,
    /// Type of the weight matrices, e.g. F32, Q8_0, Q4_K.
    #[arg(long = "type", default_value = "Q8_0")]
    ty: String,
    /// conformance (2 layers, 256 wide; Gemma 4: 3), moe (the Llama
    /// conformance shape with eight experts, two per token, as Mixtral
    /// files have them; Gemma 4's form with experts beside its dense
    /// feed-forward), 1b or 8b (Llama shapes), 1.7b (the Qwen 3 shape),
    /// 30b-a3b (Qwen3-30B-A3B cut to 12 layers), 20b (gpt-oss-20b cut to 6
    /// layers; `--type` is its experts', the other matrices are Q8_0), 2b
    /// (Qwen 3.5), or e2b (the Gemma 4 E2B shape).
    #[arg(long, default_value = "conformance")]
    shape: String,
    /// A RoPE scaling to write (conformance shape only): linear, yarn,
    /// longrope-long or longrope-short (Phi-3 LongRoPE factors whose long
    /// or short set a 256-position context selects).
    #[arg(long)]
    rope_scaling: Option<String>,
    /// Where to write the GGUF file.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: &Args) -> Result<()> {
    let arch = Arch::from_name(&args.arch).ok_or_else(|| {
        let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
        anyhow!(
            "unknown architecture {:?}: use one of {}",
            args.arch,
            names.join(", ")
        )
    })?;
    let ty = GgmlType::from_name(&args.ty)
        .ok_or_else(|| anyhow!("unknown tensor type {:?}", args.ty))?;
    let spec = match args.shape.as_str() {
        "conformance" => SyntheticSpec::conformance(arch, ty),
        "moe" if arch == Arch::Llama => SyntheticSpec::conformance_llama_moe(ty),
        "moe" if arch == Arch::Gemma4 => SyntheticSpec::conformance_gemma4_moe(ty),
        "1b" if arch == Arch::Llama => SyntheticSpec::llama_1b(ty),
        "8b" if arch == Arch::Llama => SyntheticSpec::llama_8b(ty),
        "1.7b" if arch == Arch::Qwen3 => SyntheticSpec::qwen3_1_7b(ty),
        "30b-a3b" if arch == Arch::Qwen3Moe => SyntheticSpec::qwen3moe_30b_a3b_cut(ty),
        "20b" if arch == Arch::GptOss => SyntheticSpec::gpt_oss_20b_cut(ty),
        "2b" if arch == Arch::Qwen35 => SyntheticSpec::qwen35_2b(ty),
        "e2b" if arch == Arch::Gemma4 => SyntheticSpec::gemma4_e2b(ty),
        other => bail!(
            "unknown shape {other:?} for {}: use conformance, moe/1b/8b with llama, 1.7b with qwen3, 30b-a3b with qwen3moe, 20b with gpt-oss, 2b with qwen35, or moe/e2b with gemma4",
            args.arch
        ),
    };
    let spec = match args.rope_scaling.as_deref() {
        None => spec,
        Some(name) if matches!(args.shape.as_str(), "conformance" | "moe") => {
            let scaling = RopeScaling::from_name(name).ok_or_else(|| {
                anyhow!("unknown RoPE scaling {name:?}: use linear, yarn, longrope-long or longrope-short")
            })?;
            spec.with_rope_scaling(scaling)
        }
        Some(_) => bail!("--rope-scaling needs --shape conformance"),
    };
    write_model(&spec, &args.out)?;
    println!("{}", args.out.display());
    Ok(())
}
