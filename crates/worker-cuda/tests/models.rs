//! Whole models on the GPU against the CPU backend: the logits of every
//! position of random-weight models of each architecture (Gemma 4's
//! layered cache included; NMSE <= 1e-3),
//! and Gemma 3 270M's greedy continuations, held to llama.cpp's own
//! spread on that model as the CPU conformance test is. Needs a GPU:
//! ignored by default, run by `scripts/gpu-check.sh` with `--ignored`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use worker_compute::cpu::CpuBackend;
use worker_compute::{Backend, KvType, TokenPos};
use worker_gguf::{GgmlType, GgufFile};
use worker_models::synthetic::{RopeScaling, SyntheticSpec, write_model};
use worker_models::{Arch, Generator, Model};
use worker_tokenizer::Tokenizer;

/// The CPU's top-two logit gap below which the two backends' greedy
/// choices may always part: two candidates this close may swap places
/// under either backend's rounding, so a continuation that parts there is
/// a near-tie, not a fault (the bound is raised to llama.cpp's own spread
/// when that is larger).
const NEAR_TIE: f32 = 0.02;

/// All-position logits of `tokens`: a prefill of the first `split` tokens
/// in one batch, then the rest one token at a time (both kernel paths).
fn logits<B: Backend>(backend: B, path: &Path, tokens: &[u32], split: usize) -> (Vec<f32>, usize) {
    let file = Arc::new(GgufFile::open(path).expect("model opens"));
    let mut model = Model::load(Arc::new(backend), file).expect("model loads");
    model.set_context_length(256);
    let n = tokens.len();
    let mut ws = model.workspace(n, n).expect("workspace");
    let mut kv = model.kv_cache(1, 256, KvType::F16, n).expect("kv");
    let mut all = Vec::new();
    let mut out = Vec::new();
    let pos = |r: std::ops::Range<usize>| -> Vec<TokenPos> {
        r.map(|i| TokenPos {
            seq: 0,
            pos: i as u32,
        })
        .collect()
    };
    let want: Vec<usize> = (0..split).collect();
    model
        .forward(
            &mut ws,
            &mut kv,
            &tokens[..split],
            &pos(0..split),
            &want,
            &mut out,
        )
        .expect("prefill");
    all.extend_from_slice(&out);
    for i in split..n {
        model
            .forward(
                &mut ws,
                &mut kv,
                &tokens[i..=i],
                &pos(i..i + 1),
                &[0],
                &mut out,
            )
            .expect("decode");
        all.extend_from_slice(&out);
    }
    (all, model.vocab_size())
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn synthetic_models_match_the_cpu_backend() {
    let tokens: Vec<u32> = (0..40u32).map(|i| (i * 131 + 7) % 500).collect();
    let dir = std::env::temp_dir().join(format!("llorch-cuda-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let mut specs = Vec::new();
    for &arch in Arch::ALL {
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::IQ4_NL,
            GgmlType::IQ4_XS,
            GgmlType::MXFP4,
        ] {
            specs.push((
                format!("{} {ty}", arch.name()),
                SyntheticSpec::conformance(arch, ty),
            ));
        }
    }
    for ty in [GgmlType::F32, GgmlType::Q4_K] {
        specs.push((
            format!("llama-moe {ty}"),
            SyntheticSpec::conformance_llama_moe(ty),
        ));
    }
    for (arch, scaling) in [
        (Arch::Llama, RopeScaling::Yarn),
        (Arch::Qwen2, RopeScaling::Yarn),
        (Arch::Gemma3, RopeScaling::Linear),
        (Arch::Phi3, RopeScaling::LongRopeLong),
        (Arch::Phi3, RopeScaling::LongRopeShort),
    ] {
        specs.push((
            format!("{} {}", arch.name(), scaling.name()),
            SyntheticSpec::conformance(arch, GgmlType::F32).with_rope_scaling(scaling),
        ));
    }
    let mut failures = Vec::new();
    for (name, spec) in specs {
        let path = dir.join(format!("{}.gguf", name.replace(' ', "-")));
        write_model(&spec, &path).expect("write model");
        let (want, vocab) = logits(CpuBackend::new(4).expect("cpu"), &path, &tokens, 32);
        let (got, _) = logits(gpu(), &path, &tokens, 32);
        let e = nmse(&got, &want);
        let argmax_same = got
            .chunks_exact(vocab)
            .zip(want.chunks_exact(vocab))
            .filter(|(g, w)| worker_models::argmax(g) == worker_models::argmax(w))
            .count();
        eprintln!(
            "{name}: nmse {e:.3e}, argmax equal at {argmax_same}/{} positions",
            tokens.len()
        );
        if e.is_nan() || e > 1e-3 {
            failures.push(format!("{name}: nmse {e:.3e} > 1e-3"));
        }
        if matches!(spec.ty, GgmlType::Q4_K | GgmlType::F16) || spec.rope_scaling.is_some() {
            // Decode steps recorded and replayed as CUDA graphs run the same
            // kernels in the same order: the same bits as without.
            let (graphed, _) = logits(gpu().with_graphs(true), &path, &tokens, 32);
            let same = graphed.len() == got.len()
                && graphed
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
            eprintln!("{name} (CUDA graphs): identical to eager: {same}");
            if !same {
                failures.push(format!(
                    "{name} (CUDA graphs): nmse {:.3e} against eager, not identical",
                    nmse(&graphed, &got)
                ));
            }
        }
        if spec.ty == GgmlType::Q4_K && spec.rope_scaling.is_none() {
            // The 8-bit-activation decode path (LLORCH_CUDA_DECODE=q8).
            let (q8, _) = logits(gpu().with_q8_decode(true), &path, &tokens, 32);
            let e = nmse(&q8, &want);
            eprintln!("{name} (q8 decode): nmse {e:.3e}");
            if e.is_nan() || e > 1e-3 {
                failures.push(format!("{name} (q8 decode): nmse {e:.3e} > 1e-3"));
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn gemma_path() -> PathBuf {
    let path = worker_common::paths::default_model_path();
    assert!(
        path.is_file(),
        "Gemma 3 270M is missing at {}: set LLORCH_TEST_MODEL",
        path.display()
    );
    path
}

fn generator<B: Backend>(backend: B, path: &Path) -> Generator<B> {
    let file = Arc::new(GgufFile::open(path).expect("model opens"));
    let tok = Tokenizer::from_gguf(file.metadata()).expect("tokenizer");
    let model = Model::load(Arc::new(backend), file).expect("model loads");
    Generator::new(model, tok, 512, KvType::F16, 512).expect("generator")
}

fn top_two_gap(v: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in v {
        if x > a {
            b = a;
            a = x;
        } else if x > b {
            b = x;
        }
    }
    a - b
}

/// The Gemma 3 conformance prompts and how far llama.cpp moves from itself
/// on them (`crates/worker-models/tests/fixtures/gemma3-270m-greedy.jsonl`,
/// from `scripts/reference/gen-conformance.sh`): the prompts, the largest
/// last-position NMSE and the largest top-two gap at which its greedy
/// continuations part.
fn gemma_references() -> (Vec<String>, f64, f32) {
    let name = "gemma3-270m-greedy.jsonl";
    // Built here, the tests may run from another checkout (gpu-check.sh
    // runs them from crates/worker-cuda of its copy).
    let path = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker-models/tests/fixtures"),
        PathBuf::from("../worker-models/tests/fixtures"),
    ]
    .into_iter()
    .map(|d| d.join(name))
    .find(|p| p.is_file())
    .unwrap_or_else(|| panic!("{name} not found beside worker-models' tests"));
    let text = std::fs::read_to_string(&path).expect("references");
    let (mut prompts, mut nmse_bound, mut gap_bound) = (Vec::new(), 0f64, NEAR_TIE);
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("json");
        prompts.push(r["text"].as_str().expect("text").to_string());
        nmse_bound = nmse_bound.max(r["self"]["nmse"].as_f64().expect("self.nmse"));
        if let Some(g) = r["self"]["part_gap"].as_f64() {
            gap_bound = gap_bound.max(g as f32);
        }
    }
    (prompts, nmse_bound, gap_bound)
}

#[test]
fn the_gemma_references_and_their_spread_are_read() {
    // What the GPU check below reads, checked where there is no GPU.
    let (prompts, nmse_bound, gap_bound) = gemma_references();
    assert!(prompts.len() >= 5, "{prompts:?}");
    assert!(nmse_bound > 0.0 && nmse_bound < 0.1, "{nmse_bound}");
    assert!((NEAR_TIE..1.0).contains(&gap_bound), "{gap_bound}");
}

#[test]
#[ignore = "needs an NVIDIA GPU and Gemma 3 270M: scripts/gpu-check.sh runs it"]
fn gemma3_greedy_matches_the_cpu_backend() {
    let path = gemma_path();
    let mut cpu = generator(CpuBackend::new(8).expect("cpu"), &path);
    let (prompts, nmse_bound, gap_bound) = gemma_references();
    eprintln!(
        "bounds from llama.cpp against itself: last-position NMSE {nmse_bound:.2e}, greedy parting at gaps up to {gap_bound:.4}"
    );
    let mut failures = Vec::new();
    // Both decode paths: f32 activations, and LLORCH_CUDA_DECODE=q8.
    for q8 in [false, true] {
        let mut gpu = generator(gpu().with_q8_decode(q8), &path);
        let mode = if q8 { "q8 decode" } else { "f32 decode" };
        for (i, text) in prompts.iter().enumerate() {
            let i = format!("{i} ({mode})");
            let prompt = cpu.tokenizer().encode(text, true, false).expect("encode");
            let want = cpu.greedy_ids(&prompt, 32).expect("cpu greedy");
            let got = gpu.greedy_ids(&prompt, 32).expect("gpu greedy");
            let l_cpu = cpu.prompt_logits(&prompt).expect("cpu logits");
            let l_gpu = gpu.prompt_logits(&prompt).expect("gpu logits");
            let e = nmse(&l_gpu, &l_cpu);
            match got.iter().zip(&want).position(|(a, b)| a != b) {
                None => eprintln!("prompt {i}: 32 greedy tokens equal; last-position nmse {e:.2e}"),
                Some(k) => {
                    let mut ctx = prompt.clone();
                    ctx.extend_from_slice(&want[..k]);
                    let gap = top_two_gap(&cpu.prompt_logits(&ctx).expect("logits"));
                    eprintln!(
                        "prompt {i}: differs at step {k}, CPU top-two gap {gap:.4}; nmse {e:.2e}"
                    );
                    if gap > gap_bound {
                        failures.push(format!("prompt {i} differs at step {k} (gap {gap:.4})"));
                    }
                }
            }
            if e > nmse_bound {
                failures.push(format!(
                    "prompt {i}: last-position nmse {e:.3e} > {nmse_bound:.3e}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

struct Collect(std::sync::mpsc::Sender<worker_models::JobEvent>);

impl worker_models::JobSink for Collect {
    fn send(&mut self, event: worker_models::JobEvent) -> bool {
        self.0.send(event).is_ok()
    }
}

/// Serves `n` requests (prompts of varying length, sampled and greedy,
/// four at a time) through the continuous-batching scheduler on `backend`,
/// to a synthetic model of `arch`, calling `measure` after the first
/// (warm-up) request and after the last; returns both measurements. Every
/// request must end `Done`.
fn serve_requests<B: Backend + 'static, M>(
    backend: Arc<B>,
    arch: Arch,
    n: usize,
    measure: impl Fn() -> M,
) -> (M, M) {
    use std::sync::atomic::AtomicBool;
    use worker_models::{Job, JobEvent, JobRequest, SamplingParams, Scheduler};
    let dir = std::env::temp_dir().join(format!(
        "llorch-cuda-requests-{}-{}",
        arch.name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("m.gguf");
    write_model(&SyntheticSpec::conformance(arch, GgmlType::Q4_K), &path).expect("write model");
    let file = Arc::new(GgufFile::open(&path).expect("model opens"));
    let tok = Arc::new(Tokenizer::from_gguf(file.metadata()).expect("tokenizer"));
    let model = Model::load(backend, file).expect("model loads");
    let mut sched = Scheduler::new(model, tok.clone(), 4, 256, KvType::F16, 64).expect("scheduler");
    let mut cached = 0;
    let mut run = |jobs: std::ops::Range<usize>| {
        let mut receivers = Vec::new();
        for i in jobs {
            let (tx, rx) = std::sync::mpsc::channel();
            // The first request is the longest: lazily sized scratch
            // (the prefill's decoded weights) reaches its size in it.
            let text = "the quick brown fox ".repeat(7 - i % 7);
            let mut sampling = SamplingParams::greedy();
            if i % 2 == 1 {
                sampling.temperature = 0.8;
                sampling.seed = Some(i as u64);
            }
            sched.push(Job {
                request: JobRequest {
                    prompt: tok.encode(&text, true, false).expect("encode"),
                    max_tokens: 4 + i % 5,
                    sampling,
                    stop: Vec::new(),
                    // Some ask for log-probabilities: the whole rows are
                    // read beside the others' picks.
                    logprobs: (i % 3 == 2).then_some(2),
                    json_object: false,
                },
                sink: Box::new(Collect(tx)),
                cancel: Arc::new(AtomicBool::new(false)),
            });
            receivers.push((rx, i % 3 == 2));
        }
        let mut steps = 0;
        while !sched.is_idle() {
            sched.step();
            steps += 1;
            assert!(steps < 100_000, "the scheduler makes progress");
        }
        for (rx, logprobs) in receivers {
            let events: Vec<JobEvent> = rx.try_iter().collect();
            let Some(JobEvent::Done(o)) = events.last() else {
                panic!("a request did not finish: {:?}", events.last());
            };
            // The prompts share prefixes: later ones reuse cached rows.
            cached += o.tokens_cached;
            let entries = events
                .iter()
                .filter(|e| matches!(e, JobEvent::Logprob(_)))
                .count();
            assert_eq!(entries, if logprobs { o.tokens_out } else { 0 });
        }
    };
    run(0..1);
    let baseline = measure();
    run(1..n);
    let after = measure();
    assert!(cached > 0, "no prompt reused a cached prefix");
    std::fs::remove_dir_all(&dir).ok();
    (baseline, after)
}

#[test]
fn the_gemma4_cache_is_one_the_cuda_cache_holds() {
    // What the loader's check admits on CUDA (`layered_kv`), checked
    // where there is no GPU: Gemma 4's cache has rows of several widths
    // and layers that read another's, and the CUDA cache lays out each
    // layer's rows (none for those that read) at exactly the bytes the
    // spec counts.
    let dir = std::env::temp_dir().join(format!("llorch-cuda-gemma4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("m.gguf");
    write_model(
        &SyntheticSpec::conformance(Arch::Gemma4, GgmlType::F32),
        &path,
    )
    .expect("write model");
    let file = Arc::new(GgufFile::open(&path).expect("model opens"));
    let model = Model::load(Arc::new(CpuBackend::new(1).expect("cpu")), file).expect("loads");
    for ty in [KvType::F16, KvType::F32] {
        let spec = model.kv_spec(4, 256, ty, 64);
        assert!(!spec.is_uniform(), "{spec:?}");
        let layout = worker_cuda::rows_layout(&spec).expect("layout");
        for (il, rows) in layout.iter().enumerate() {
            assert_eq!(rows.is_some(), spec.keeps_rows(il), "layer {il}");
        }
        let bytes: usize = layout
            .iter()
            .flatten()
            .map(|r| 2 * r.len * ty.elem_bytes())
            .sum();
        assert_eq!(bytes as u64, spec.bytes(), "{ty:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_request_loop_finishes_every_request_on_the_cpu() {
    // The same loop as the GPU check below, on the CPU: every request ends.
    // (serve_requests asserts that each ends `Done`.)
    let cpu = Arc::new(CpuBackend::new(2).expect("cpu"));
    serve_requests(cpu, Arch::Llama, 20, || ());
}

#[test]
fn the_request_loop_finishes_every_hybrid_request_on_the_cpu() {
    // The loop of the GPU check below for Qwen 3.5's recurrent layers
    // (states cleared, kept and restored between requests), on the CPU.
    let cpu = Arc::new(CpuBackend::new(2).expect("cpu"));
    serve_requests(cpu, Arch::Qwen35, 20, || ());
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn cuda_graphs_serve_every_request() {
    // Batched decode of 1 to 4 sequences, greedy and sampled, prompt chunks
    // with and without logits: every request ends `Done` with steps
    // recorded as graphs (serve_requests asserts it).
    serve_requests(Arc::new(gpu().with_graphs(true)), Arch::Llama, 30, || ());
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn hybrid_models_serve_every_request() {
    // Qwen 3.5's recurrent states through the scheduler on the GPU:
    // cleared for new requests, kept at the end of prompts and restored
    // for the ones that extend them; VRAM (states included) stays level.
    let g = Arc::new(gpu());
    let probe = g.clone();
    let (before, after) = serve_requests(g, Arch::Qwen35, 30, move || probe.allocated_bytes());
    assert_eq!(after, before, "bytes the backend holds");
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn gemma4_serves_every_request() {
    // Gemma 4's layers of several K/V widths and the layers that read an
    // earlier layer's rows, through the scheduler on the GPU; VRAM stays
    // level.
    let g = Arc::new(gpu());
    let probe = g.clone();
    let (before, after) = serve_requests(g, Arch::Gemma4, 30, move || probe.allocated_bytes());
    assert_eq!(after, before, "bytes the backend holds");
}

#[test]
#[ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it"]
fn vram_is_back_at_its_baseline_after_100_requests() {
    let g = Arc::new(gpu());
    let probe = g.clone();
    let (before, after) = serve_requests(g, Arch::Llama, 100, move || {
        let (free, _) = probe.mem_info().expect("mem info");
        (probe.allocated_bytes(), free)
    });
    eprintln!(
        "allocated {} -> {} bytes; driver free {} -> {} bytes",
        before.0, after.0, before.1, after.1
    );
    assert_eq!(after.0, before.0, "bytes the backend holds");
    // The driver's view may move a little as cuBLAS loads kernels for
    // batch shapes it had not seen (lazy module loading); a leak of
    // per-request buffers would move it by far more.
    assert!(
        after.1 + (16 << 20) >= before.1,
        "the driver's free VRAM dropped by {} bytes",
        before.1 - after.1
    );
}
