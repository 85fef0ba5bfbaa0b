//! Prompt caching on a hybrid model (Qwen 3.5's layout, random weights):
//! a request that extends everything a slot holds, or the prompt whose
//! recurrent state the slot kept, starts from that state, and its
//! log-probabilities are those of a fresh run within f32 rounding; any
//! other prompt is computed afresh. Batches of 32 split each prompt into
//! several prefill chunks, and two slots run at once.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use worker_compute::KvType;
use worker_compute::cpu::CpuBackend;
use worker_gguf::{GgmlType, GgufFile};
use worker_models::synthetic::{SyntheticSpec, write_model};
use worker_models::{
    Arch, Job, JobEvent, JobRequest, JobSink, Model, Outcome, SamplingParams, Scheduler,
    TokenLogprob,
};
use worker_tokenizer::Tokenizer;

struct Collect(std::sync::mpsc::Sender<JobEvent>);
impl JobSink for Collect {
    fn send(&mut self, event: JobEvent) -> bool {
        self.0.send(event).is_ok()
    }
}

/// A scheduler over the F32 conformance model of `arch`.
fn scheduler(arch: Arch, dir: &std::path::Path, slots: usize) -> Scheduler<CpuBackend> {
    let path = dir.join(format!("{}.gguf", arch.name()));
    if !path.is_file() {
        write_model(&SyntheticSpec::conformance(arch, GgmlType::F32), &path).expect("synth");
    }
    let file = Arc::new(GgufFile::open(&path).expect("opens"));
    let tok = Arc::new(Tokenizer::from_gguf(file.metadata()).expect("tokenizer"));
    let model = Model::load(Arc::new(CpuBackend::new(2).expect("backend")), file).expect("loads");
    Scheduler::new(model, tok, slots, 256, KvType::F32, 32).expect("scheduler")
}

fn request(prompt: Vec<u32>) -> JobRequest {
    JobRequest {
        prompt,
        max_tokens: 6,
        sampling: SamplingParams::greedy(),
        stop: Vec::new(),
        logprobs: Some(5),
        json_object: false,
    }
}

/// Runs each job to the end, one after another; their events.
fn run_in_turn(sched: &mut Scheduler<CpuBackend>, jobs: Vec<JobRequest>) -> Vec<Vec<JobEvent>> {
    jobs.into_iter()
        .map(|request| {
            let (tx, rx) = std::sync::mpsc::channel();
            sched.push(Job {
                request,
                sink: Box::new(Collect(tx)),
                cancel: Arc::new(AtomicBool::new(false)),
            });
            while !sched.is_idle() {
                sched.step();
            }
            rx.try_iter().collect()
        })
        .collect()
}

fn outcome(events: &[JobEvent]) -> Outcome {
    match events.last() {
        Some(JobEvent::Done(o)) => o.clone(),
        other => panic!("the job did not finish: {other:?}"),
    }
}

fn logprobs(events: &[JobEvent]) -> Vec<TokenLogprob> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Logprob(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

/// The same tokens chosen, with every log-probability within `tol`.
fn assert_same(name: &str, got: &[JobEvent], want: &[JobEvent], tol: f32) {
    let (g, w) = (logprobs(got), logprobs(want));
    assert_eq!(g.len(), w.len(), "{name}: token counts");
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert_eq!(a.chosen.id, b.chosen.id, "{name}: token {i}");
        for (x, y) in std::iter::once(&a.chosen)
            .chain(&a.top)
            .zip(std::iter::once(&b.chosen).chain(&b.top))
        {
            assert_eq!(x.id, y.id, "{name}: token {i}'s candidates");
            assert!(
                (x.logprob - y.logprob).abs() <= tol,
                "{name}: token {i}: {} vs {}",
                x.logprob,
                y.logprob
            );
        }
    }
}

fn prompt(n: u32, salt: u32) -> Vec<u32> {
    (0..n).map(|i| 3 + (i * 37 + salt * 11) % 500).collect()
}

fn generated(events: &[JobEvent]) -> Vec<u32> {
    logprobs(events).iter().map(|l| l.chosen.id).collect()
}

fn check(arch: Arch) {
    let dir = std::env::temp_dir().join(format!(
        "llorch-recurrent-cache-{}-{}",
        std::process::id(),
        arch.name()
    ));
    std::fs::create_dir_all(&dir).expect("tmp");
    let first = prompt(100, 1);
    let mut cached = scheduler(arch, &dir, 2);
    let runs = run_in_turn(&mut cached, vec![request(first.clone())]);
    let reply = generated(&runs[0]);
    // The next turn extends all the slot holds (the prompt and the reply
    // as generated, whose last token was never fed).
    let whole: Vec<u32> = first.iter().chain(&reply).copied().chain([9, 10]).collect();
    // Then a turn that extends the first prompt only (a reply rendered
    // otherwise): the kept state.
    let edited: Vec<u32> = first.iter().copied().chain([11, 12, 13]).collect();
    // And one that shares less than the kept prompt: computed afresh.
    let short: Vec<u32> = first[..60].iter().copied().chain([14]).collect();
    let later = run_in_turn(
        &mut cached,
        vec![
            request(whole.clone()),
            request(first.clone()),
            request(edited.clone()),
            request(short.clone()),
        ],
    );
    let fresh = |p: &[u32]| {
        let mut s = scheduler(arch, &dir, 1);
        run_in_turn(&mut s, vec![request(p.to_vec())]).remove(0)
    };
    let name = arch.name();
    // Both slots were free; the one holding the first run is taken.
    assert_eq!(
        outcome(&later[0]).tokens_cached,
        first.len() + reply.len() - 1
    );
    assert_same(name, &later[0], &fresh(&whole), 1e-4);
    // The same prompt again: its last token must run, and no state holds
    // one token less, so nothing is reused; the answer is the first one.
    assert_eq!(outcome(&later[1]).tokens_cached, 0);
    assert_same(name, &later[1], &runs[0], 1e-4);
    assert_eq!(outcome(&later[2]).tokens_cached, first.len());
    assert_same(name, &later[2], &fresh(&edited), 1e-4);
    assert_eq!(outcome(&later[3]).tokens_cached, 0);
    assert_same(name, &later[3], &fresh(&short), 1e-4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn qwen35_reuses_whole_states_and_kept_prompts() {
    check(Arch::Qwen35);
}

#[test]
fn qwen35moe_reuses_whole_states_and_kept_prompts() {
    check(Arch::Qwen35Moe);
}

/// A second request extending the prompt of one still answering copies
/// the state that slot kept at its prompt's end into its own slot.
fn check_busy_copy(arch: Arch) {
    let dir = std::env::temp_dir().join(format!(
        "llorch-recurrent-copy-{}-{}",
        std::process::id(),
        arch.name()
    ));
    std::fs::create_dir_all(&dir).expect("tmp");
    let mut sched = scheduler(arch, &dir, 2);
    let first = prompt(100, 3);
    let (tx1, rx1) = std::sync::mpsc::channel();
    sched.push(Job {
        request: JobRequest {
            max_tokens: 40,
            ..request(first.clone())
        },
        sink: Box::new(Collect(tx1)),
        cancel: Arc::new(AtomicBool::new(false)),
    });
    // Its prompt (four batches of 32) and a few tokens of its answer.
    for _ in 0..8 {
        sched.step();
    }
    assert!(!sched.is_idle());
    let second: Vec<u32> = first.iter().copied().chain([21, 22, 23]).collect();
    let (tx2, rx2) = std::sync::mpsc::channel();
    sched.push(Job {
        request: request(second.clone()),
        sink: Box::new(Collect(tx2)),
        cancel: Arc::new(AtomicBool::new(false)),
    });
    while !sched.is_idle() {
        sched.step();
    }
    let (_, events): (Vec<JobEvent>, Vec<JobEvent>) =
        (rx1.try_iter().collect(), rx2.try_iter().collect());
    assert_eq!(outcome(&events).tokens_cached, first.len());
    let mut fresh = scheduler(arch, &dir, 1);
    let alone = run_in_turn(&mut fresh, vec![request(second)]).remove(0);
    assert_same(arch.name(), &events, &alone, 1e-4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn qwen35_copies_a_busy_slots_kept_prompt() {
    check_busy_copy(Arch::Qwen35);
}
