//! Generation on the real default model: determinism, stops, cancellation,
//! limits.

use std::ops::ControlFlow;
use std::sync::Arc;
use worker_compute::KvType;
use worker_compute::cpu::CpuBackend;
use worker_gguf::GgufFile;
use worker_models::{
    Generator, JobEvent, JobRequest, Model, ModelError, SamplingParams, StopReason,
};
use worker_tokenizer::Tokenizer;

fn generator(n_ctx: usize) -> Generator<CpuBackend> {
    let path = worker_common::paths::default_model_path();
    assert!(
        path.is_file(),
        "the default model is missing at {}: run scripts/fetch-model.sh",
        path.display()
    );
    let file = Arc::new(GgufFile::open(&path).expect("opens"));
    let tok = Tokenizer::from_gguf(file.metadata()).expect("tokenizer");
    let model = Model::load(Arc::new(CpuBackend::new(2).expect("backend")), file).expect("loads");
    Generator::new(model, tok, n_ctx, KvType::F16, 64).expect("generator")
}

/// Gemma 3's tokenizer, from the default model.
fn gemma_tokenizer() -> Tokenizer {
    let file = GgufFile::open(worker_common::paths::default_model_path()).expect("opens");
    Tokenizer::from_gguf(file.metadata()).expect("tokenizer")
}

/// A scheduler on the default model (CPU, 2 threads, f16 cache) and its
/// tokenizer.
fn gemma_scheduler(
    slots: usize,
    n_ctx: usize,
    max_batch: usize,
) -> (worker_models::Scheduler<CpuBackend>, Arc<Tokenizer>) {
    let path = worker_common::paths::default_model_path();
    let file = Arc::new(GgufFile::open(&path).expect("opens"));
    let tok = Arc::new(Tokenizer::from_gguf(file.metadata()).expect("tokenizer"));
    let model = Model::load(Arc::new(CpuBackend::new(2).expect("backend")), file).expect("loads");
    let sched =
        worker_models::Scheduler::new(model, tok.clone(), slots, n_ctx, KvType::F16, max_batch)
            .expect("scheduler");
    (sched, tok)
}

fn request(
    g: &Generator<CpuBackend>,
    prompt: &str,
    max_tokens: usize,
    sampling: SamplingParams,
    stop: &[&str],
) -> JobRequest {
    JobRequest {
        prompt: g.tokenizer().encode(prompt, true, false).expect("encode"),
        max_tokens,
        sampling,
        stop: stop.iter().map(|s| s.to_string()).collect(),
        logprobs: None,
        json_object: false,
    }
}

fn run(g: &mut Generator<CpuBackend>, req: &JobRequest) -> (String, worker_models::Outcome) {
    let mut text = String::new();
    let outcome = g
        .generate(req, |e| {
            if let JobEvent::Text { text: t, .. } = e {
                text.push_str(t);
            }
            ControlFlow::Continue(())
        })
        .expect("generate");
    (text, outcome)
}

#[test]
fn same_seed_same_text_and_seed_reported() {
    let mut g = generator(256);
    let sampling = SamplingParams {
        temperature: 0.9,
        seed: Some(1234),
        ..Default::default()
    };
    let req = request(&g, "Write a short poem about the sea.", 24, sampling, &[]);
    let (a, oa) = run(&mut g, &req);
    let (b, ob) = run(&mut g, &req);
    assert_eq!(a, b);
    assert_eq!(oa.seed, 1234);
    assert_eq!(oa.tokens_out, ob.tokens_out);
    assert!(!a.is_empty());

    let mut unseeded = req.clone();
    unseeded.sampling.seed = None;
    let (_, o1) = run(&mut g, &unseeded);
    let (_, o2) = run(&mut g, &unseeded);
    assert_ne!(o1.seed, o2.seed, "a random seed is chosen and reported");
}

#[test]
fn greedy_stops_on_strings_and_limits() {
    let mut g = generator(256);
    let req = request(
        &g,
        "The capital of France is",
        16,
        SamplingParams::greedy(),
        &[],
    );
    let (full, outcome) = run(&mut g, &req);
    assert_eq!(outcome.stop_reason, Some(StopReason::MaxTokens));
    assert_eq!(outcome.tokens_out, 16);
    assert!(full.starts_with(" the capital of"), "{full:?}");

    // A stop string spanning tokens ends generation; its text is not emitted.
    let req = request(
        &g,
        "The capital of France is",
        16,
        SamplingParams::greedy(),
        &["of the"],
    );
    let (text, outcome) = run(&mut g, &req);
    assert_eq!(outcome.stop_reason, Some(StopReason::StopSequence));
    assert_eq!(outcome.stop_sequence.as_deref(), Some("of the"));
    assert_eq!(text, " the capital ");
    assert!(full.starts_with(&text));
}

#[test]
fn cancellation_and_context_limits() {
    let mut g = generator(64);
    let req = request(
        &g,
        "Count: one, two, three,",
        32,
        SamplingParams::greedy(),
        &[],
    );
    let mut pieces = 0;
    let outcome = g
        .generate(&req, |e| {
            if matches!(e, JobEvent::Text { .. }) {
                pieces += 1;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .expect("generate");
    assert_eq!(pieces, 1);
    assert_eq!(outcome.stop_reason, None, "cancelled");
    assert!(outcome.tokens_out <= 2);

    // Generation that runs into the end of the context says so.
    let req = request(
        &g,
        "Count: one, two, three,",
        1000,
        SamplingParams::greedy(),
        &[],
    );
    let (_, outcome) = run(&mut g, &req);
    assert!(matches!(
        outcome.stop_reason,
        Some(StopReason::ContextFull) | Some(StopReason::Eos)
    ));
    assert!(outcome.tokens_in + outcome.tokens_out <= 65);

    // A prompt that does not fit is an error naming both numbers.
    let long = JobRequest {
        prompt: vec![2; 64],
        ..req
    };
    let err = g
        .generate(&long, |_| ControlFlow::Continue(()))
        .expect_err("too long");
    assert!(
        matches!(
            err,
            ModelError::ContextFull {
                prompt: 64,
                ctx: 64
            }
        ),
        "{err}"
    );
}

struct Collect(std::sync::mpsc::Sender<worker_models::JobEvent>);
impl worker_models::JobSink for Collect {
    fn send(&mut self, event: worker_models::JobEvent) -> bool {
        self.0.send(event).is_ok()
    }
}

#[test]
fn batched_jobs_match_single_runs() {
    use std::sync::atomic::AtomicBool;
    use worker_models::{Job, JobEvent, JobRequest};

    let prompts = [
        "The capital of France is",
        "def add(a, b):",
        "Water boils at",
        "Once upon a time",
    ];
    // Greedy, top-k sampling with a penalty (candidates from the backend),
    // and sampling over the whole row: a batch mixing them reads the
    // candidates of the widest need, or the whole rows.
    let samplings = [
        SamplingParams::greedy(),
        SamplingParams {
            temperature: 0.9,
            top_k: 40,
            repeat_penalty: 1.2,
            seed: Some(7),
            ..Default::default()
        },
        SamplingParams::greedy(),
        // Temperature alone: drawn where the logits are (Want::Draw).
        SamplingParams {
            temperature: 0.7,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(8),
            ..Default::default()
        },
    ];
    // Reference: each prompt alone.
    let mut g = generator(256);
    let singles: Vec<String> = prompts
        .iter()
        .zip(&samplings)
        .map(|(p, s)| {
            let req = request(&g, p, 12, s.clone(), &[]);
            run(&mut g, &req).0
        })
        .collect();

    let (mut sched, tok) = gemma_scheduler(2, 256, 64);
    let mut receivers = Vec::new();
    for (p, sampling) in prompts.iter().zip(samplings) {
        let (tx, rx) = std::sync::mpsc::channel();
        sched.push(Job {
            request: JobRequest {
                prompt: tok.encode(p, true, false).expect("encode"),
                max_tokens: 12,
                sampling,
                stop: Vec::new(),
                logprobs: None,
                json_object: false,
            },
            sink: Box::new(Collect(tx)),
            cancel: Arc::new(AtomicBool::new(false)),
        });
        receivers.push(rx);
    }
    let mut steps = 0;
    while !sched.is_idle() {
        sched.step();
        steps += 1;
        assert!(steps < 1000, "the scheduler makes progress");
    }
    for (i, rx) in receivers.iter().enumerate() {
        let events: Vec<JobEvent> = rx.try_iter().collect();
        assert!(
            matches!(events.first(), Some(JobEvent::Started { .. })),
            "{events:?}"
        );
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                JobEvent::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        match events.last() {
            Some(JobEvent::Done(o)) => assert_eq!(o.stop_reason, Some(StopReason::MaxTokens)),
            other => panic!("job {i} did not finish: {other:?}"),
        }
        assert_eq!(
            text, singles[i],
            "job {i}: batched output equals the single run"
        );
    }
}

#[test]
fn queued_jobs_whose_clients_left_end_while_every_slot_is_busy() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use worker_models::{Job, JobEvent, JobRequest};

    let (mut sched, tok) = gemma_scheduler(1, 128, 16);
    let job = |prompt: &str, max_tokens, cancel: &Arc<AtomicBool>| {
        let (tx, rx) = std::sync::mpsc::channel();
        let job = Job {
            request: JobRequest {
                prompt: tok.encode(prompt, true, false).expect("encode"),
                max_tokens,
                sampling: SamplingParams::greedy(),
                stop: Vec::new(),
                logprobs: None,
                json_object: false,
            },
            sink: Box::new(Collect(tx)),
            cancel: cancel.clone(),
        };
        (job, rx)
    };
    let busy = Arc::new(AtomicBool::new(false));
    let (running, _running_rx) = job("Count to ten:", 64, &busy);
    sched.push(running);
    sched.step();
    // Long prompts queue behind the busy slot; their clients leave.
    let mut left = Vec::new();
    for _ in 0..4 {
        let cancel = Arc::new(AtomicBool::new(false));
        let (queued, rx) = job(&"a long prompt ".repeat(20), 8, &cancel);
        sched.push(queued);
        left.push((cancel, rx));
    }
    sched.step();
    assert_eq!(sched.queued(), 4);
    for (cancel, _) in &left {
        cancel.store(true, Ordering::Relaxed);
    }
    sched.step();
    assert_eq!(sched.queued(), 0, "the queue lets go of them at once");
    for (_, rx) in &left {
        let events: Vec<JobEvent> = rx.try_iter().collect();
        assert!(
            matches!(events.as_slice(), [JobEvent::Done(o)] if o.stop_reason.is_none() && o.tokens_out == 0),
            "{events:?}"
        );
    }
    assert!(!sched.is_idle(), "the running job goes on");
}

#[test]
fn jobs_cancelled_in_the_queue_do_not_hold_a_free_slot() {
    use std::sync::atomic::AtomicBool;
    use worker_models::{Job, JobEvent, JobRequest};

    let (mut sched, tok) = gemma_scheduler(1, 128, 16);
    let prompt = tok.encode("Hello", true, false).expect("encode");
    let mut receivers = Vec::new();
    for cancelled in [true, true, true, false] {
        let (tx, rx) = std::sync::mpsc::channel();
        sched.push(Job {
            request: JobRequest {
                prompt: prompt.clone(),
                max_tokens: 2,
                sampling: SamplingParams::greedy(),
                stop: Vec::new(),
                logprobs: None,
                json_object: false,
            },
            sink: Box::new(Collect(tx)),
            cancel: Arc::new(AtomicBool::new(cancelled)),
        });
        receivers.push(rx);
    }
    // One step finishes the three cancelled jobs and starts the live one.
    sched.step();
    for rx in &receivers[..3] {
        let events: Vec<JobEvent> = rx.try_iter().collect();
        assert!(
            matches!(events.as_slice(), [JobEvent::Done(o)] if o.stop_reason.is_none()),
            "{events:?}"
        );
    }
    let events: Vec<JobEvent> = receivers[3].try_iter().collect();
    assert!(
        matches!(events.first(), Some(JobEvent::Started { .. })),
        "the live job starts in the first step: {events:?}"
    );
}

#[test]
fn logprobs_describe_each_generated_token_without_changing_the_text() {
    use std::sync::atomic::AtomicBool;
    use worker_models::{Job, JobEvent, JobRequest};

    let (mut sched, tok) = gemma_scheduler(2, 128, 32);
    let prompt = tok
        .encode("The capital of France is", true, false)
        .expect("encode");
    // The same greedy job twice in one batch, one with log-probabilities.
    let mut receivers = Vec::new();
    for logprobs in [Some(3), None] {
        let (tx, rx) = std::sync::mpsc::channel();
        sched.push(Job {
            request: JobRequest {
                prompt: prompt.clone(),
                max_tokens: 6,
                sampling: SamplingParams::greedy(),
                stop: Vec::new(),
                logprobs,
                json_object: false,
            },
            sink: Box::new(Collect(tx)),
            cancel: Arc::new(AtomicBool::new(false)),
        });
        receivers.push(rx);
    }
    while !sched.is_idle() {
        sched.step();
    }
    let events: Vec<Vec<JobEvent>> = receivers.iter().map(|rx| rx.try_iter().collect()).collect();
    let text = |ev: &[JobEvent]| -> String {
        ev.iter()
            .filter_map(|e| match e {
                JobEvent::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(text(&events[0]), text(&events[1]));
    assert!(
        !events[1].iter().any(|e| matches!(e, JobEvent::Logprob(_))),
        "only the job that asked gets log-probabilities"
    );
    let entries: Vec<&worker_models::TokenLogprob> = events[0]
        .iter()
        .filter_map(|e| match e {
            JobEvent::Logprob(l) => Some(l),
            _ => None,
        })
        .collect();
    let Some(JobEvent::Done(o)) = events[0].last() else {
        panic!("the job finished: {:?}", events[0]);
    };
    assert_eq!(entries.len(), o.tokens_out);
    // Each entry comes before the text it completes.
    assert!(matches!(events[0].get(1), Some(JobEvent::Logprob(_))));
    let ids: Vec<u32> = entries.iter().map(|e| e.chosen.id).collect();
    assert_eq!(
        tok.decode(&ids, false, true).expect("decode"),
        text(&events[0])
    );
    for e in &entries {
        assert_eq!(e.top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(e.top[0], e.chosen, "{e:?}");
        let lp: Vec<f32> = e.top.iter().map(|t| t.logprob).collect();
        assert!(e.chosen.logprob <= 0.0 && lp[1] <= lp[0] && lp[2] <= lp[1]);
        let mass: f32 = lp.iter().map(|l| l.exp()).sum();
        assert!(mass <= 1.0 + 1e-5, "{e:?}");
    }
}

/// Runs `specs` in one batch on the default model; each job's events.
fn run_batch(specs: Vec<worker_models::JobRequest>) -> Vec<Vec<worker_models::JobEvent>> {
    use std::sync::atomic::AtomicBool;
    use worker_models::Job;
    let (mut sched, _) = gemma_scheduler(specs.len(), 128, 32);
    let mut receivers = Vec::new();
    for spec in specs {
        let (tx, rx) = std::sync::mpsc::channel();
        sched.push(Job {
            request: spec,
            sink: Box::new(Collect(tx)),
            cancel: Arc::new(AtomicBool::new(false)),
        });
        receivers.push(rx);
    }
    while !sched.is_idle() {
        sched.step();
    }
    receivers.iter().map(|rx| rx.try_iter().collect()).collect()
}

fn text_of(events: &[worker_models::JobEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            worker_models::JobEvent::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn logprobs_of(events: &[worker_models::JobEvent]) -> Vec<worker_models::TokenLogprob> {
    events
        .iter()
        .filter_map(|e| match e {
            worker_models::JobEvent::Logprob(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn logprobs_leave_batch_mates_alone_and_follow_stop_strings() {
    let tok = gemma_tokenizer();
    let prompt = tok
        .encode("Once upon a time, there was", true, false)
        .expect("encode");
    let spec = |sampling: SamplingParams, logprobs, stop: Vec<String>| worker_models::JobRequest {
        prompt: prompt.clone(),
        max_tokens: 10,
        sampling,
        stop,
        logprobs,
        json_object: false,
    };
    // A seeded draw over the whole row: alone, and beside a job that asks
    // for log-probabilities.
    let draw = SamplingParams {
        temperature: 0.9,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: Some(11),
        ..Default::default()
    };
    let alone = run_batch(vec![spec(draw.clone(), None, Vec::new())]);
    let together = run_batch(vec![
        spec(SamplingParams::greedy(), Some(2), Vec::new()),
        spec(draw, None, Vec::new()),
    ]);
    assert_eq!(text_of(&together[1]), text_of(&alone[0]));

    // A stop string in the middle of the greedy text: the tokens that
    // start before it keep their entries, the rest are dropped.
    let full_text = text_of(&together[0]);
    let full = logprobs_of(&together[0]);
    let cut = full_text
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= full_text.len() / 2)
        .expect("a middle");
    let stop: String = full_text[cut..].chars().take(3).collect();
    let stopped = run_batch(vec![spec(
        SamplingParams::greedy(),
        Some(2),
        vec![stop.clone()],
    )]);
    let before = text_of(&stopped[0]);
    assert!(
        full_text.starts_with(&format!("{before}{stop}")),
        "{before:?} {stop:?}"
    );
    let kept = logprobs_of(&stopped[0]);
    let want: Vec<_> = full
        .iter()
        .filter(|e| e.offset < before.len())
        .cloned()
        .collect();
    assert_eq!(kept, want);
    assert!(kept.len() < full.len());
}

/// Runs `specs` one after another on one scheduler with `slots` slots;
/// each job's events.
fn run_in_turn(
    slots: usize,
    n_ctx: usize,
    specs: Vec<worker_models::JobRequest>,
) -> Vec<Vec<worker_models::JobEvent>> {
    use std::sync::atomic::AtomicBool;
    use worker_models::Job;
    let (mut sched, _) = gemma_scheduler(slots, n_ctx, 32);
    let mut out = Vec::new();
    for spec in specs {
        let (tx, rx) = std::sync::mpsc::channel();
        sched.push(Job {
            request: spec,
            sink: Box::new(Collect(tx)),
            cancel: Arc::new(AtomicBool::new(false)),
        });
        while !sched.is_idle() {
            sched.step();
        }
        out.push(rx.try_iter().collect());
    }
    out
}

fn outcome_of(events: &[worker_models::JobEvent]) -> worker_models::Outcome {
    match events.last() {
        Some(worker_models::JobEvent::Done(o)) => o.clone(),
        other => panic!("the job did not finish: {other:?}"),
    }
}

#[test]
fn a_prompt_that_continues_an_earlier_one_reuses_its_cache() {
    let tok = gemma_tokenizer();
    let spec = |prompt: Vec<u32>| worker_models::JobRequest {
        prompt,
        max_tokens: 8,
        sampling: SamplingParams::greedy(),
        stop: Vec::new(),
        logprobs: None,
        json_object: false,
    };
    // Longer than Gemma 3's sliding window (512) plus the batch (32), so
    // the windowed layers' rings have wrapped.
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(70);
    let first = tok.encode(&long, true, false).expect("encode");
    assert!(first.len() > 600, "{}", first.len());
    let second_turn = |answer: &str| {
        let mut p = first.clone();
        p.extend(tok.encode(answer, false, false).expect("encode"));
        p.extend(tok.encode(" Then the fox", false, false).expect("encode"));
        p
    };
    let shared_start: Vec<u32> = first[..300]
        .iter()
        .copied()
        .chain(tok.encode(" Meanwhile", false, false).expect("encode"))
        .collect();

    let runs = run_in_turn(1, 1024, vec![spec(first.clone())]);
    let answer = text_of(&runs[0]);
    let continued = second_turn(&answer);
    // One slot: each later job finds the first one's cache.
    let cached = run_in_turn(
        1,
        1024,
        vec![
            spec(first.clone()),
            spec(continued.clone()),
            spec(first.clone()),
            spec(shared_start.clone()),
        ],
    );
    let fresh = |p: &Vec<u32>| run_in_turn(1, 1024, vec![spec(p.clone())]).remove(0);

    let o = outcome_of(&cached[1]);
    assert!(
        o.tokens_cached >= first.len(),
        "the continuation reuses the first turn: {} of {}",
        o.tokens_cached,
        continued.len()
    );
    assert_eq!(text_of(&cached[1]), text_of(&fresh(&continued)));
    // The same prompt again: all but its last token.
    assert_eq!(outcome_of(&cached[2]).tokens_cached, first.len() - 1);
    assert_eq!(text_of(&cached[2]), answer);
    // Only the first 300 tokens shared, but the windowed layers' rings
    // have moved on since: nothing reused, and the same text.
    assert_eq!(outcome_of(&cached[3]).tokens_cached, 0);
    assert_eq!(text_of(&cached[3]), text_of(&fresh(&shared_start)));

    // Regenerating at earlier points: B reuses most of A, then C reuses
    // less of B. B's history is shorter than what A wrote, and the rows C
    // would look back at (window 512, ring 544) hold A's later positions:
    // nothing may be reused.
    let n = first.len();
    let cut = |k: usize, tail: &str| -> Vec<u32> {
        let mut p = first[..k].to_vec();
        p.extend(tok.encode(tail, false, false).expect("encode"));
        p
    };
    let (b, c) = (cut(n - 10, " Meanwhile"), cut(n - 30, " Later"));
    let turns = run_in_turn(1, 1024, vec![spec(first.clone()), spec(b), spec(c.clone())]);
    assert_eq!(outcome_of(&turns[1]).tokens_cached, n - 10);
    assert_eq!(outcome_of(&turns[2]).tokens_cached, 0);
    assert_eq!(text_of(&turns[2]), text_of(&fresh(&c)));
}

#[test]
fn json_mode_writes_one_json_object() {
    let tok = gemma_tokenizer();
    let prompt = tok
        .encode(
            "<start_of_turn>user\nDescribe a cat as JSON with its name, age and colours.<end_of_turn>\n<start_of_turn>model\n",
            true,
            true,
        )
        .expect("encode");
    let spec = |sampling: SamplingParams| worker_models::JobRequest {
        prompt: prompt.clone(),
        max_tokens: 80,
        sampling,
        stop: Vec::new(),
        logprobs: None,
        json_object: true,
    };
    let sampled = SamplingParams {
        temperature: 1.0,
        seed: Some(3),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let runs = run_batch(vec![spec(SamplingParams::greedy()), spec(sampled)]);
    let mut tokens = 0;
    for events in &runs {
        let text = text_of(events);
        let o = outcome_of(events);
        tokens += o.tokens_out;
        eprintln!("{:?}: {text}", o.stop_reason);
        let mut state = worker_models::JsonState::default();
        assert!(state.push_str(&text), "not a JSON prefix: {text:?}");
        if o.stop_reason == Some(StopReason::Eos) {
            assert!(state.is_complete(), "{text:?}");
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            assert!(v.is_object(), "{text}");
        } else {
            assert_eq!(o.stop_reason, Some(StopReason::MaxTokens));
        }
    }
    eprintln!(
        "JSON mode: {tokens} tokens in {:.2} s (two jobs)",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn the_json_mask_allows_exactly_the_tokens_that_fit() {
    let tok = gemma_tokenizer();
    let vocab = worker_models::JsonVocab::new(&tok);
    let n = tok.vocab_size();
    for prefix in [
        "{",
        "{\"a",
        "{\"a\\",
        "{\"a\\u00",
        "{\"a\":",
        "{\"a\": 12",
        "{\"a\": [1, ",
        "{\"a\": tr",
        "{\"a\": \"\\ud83d",
        "{\"a\": {\"b\": [[\"x\"], -0.5e",
    ] {
        let mut state = worker_models::JsonState::default();
        assert!(state.push_str(prefix), "{prefix}");
        let mut row = vec![0.0f32; n];
        let mut scratch = Vec::new();
        let any = vocab.mask(&state, &mut row, &mut scratch);
        assert!(any, "{prefix}");
        let mut mismatches = Vec::new();
        for (id, &l) in row.iter().enumerate() {
            let id = id as u32;
            let bytes = vocab.bytes(id);
            let want = if tok.is_eog(id) {
                state.is_complete()
            } else {
                let mut s = state;
                !state.is_complete() && !bytes.is_empty() && s.push_bytes(bytes)
            };
            if want != l.is_finite() {
                mismatches.push((id, String::from_utf8_lossy(bytes).into_owned()));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{prefix:?}: {} tokens differ, e.g. {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(5)]
        );
    }
}

#[test]
fn a_busy_slots_prompt_is_copied_to_a_new_request() {
    use std::sync::atomic::AtomicBool;
    use worker_models::{Job, Scheduler};
    let (mut sched, tok) = gemma_scheduler(2, 1024, 32);
    // A shared "system prompt" longer than Gemma 3's window plus a batch,
    // so the windowed layers' rings are copied wrapped.
    let system = tok
        .encode(
            &"You are a careful assistant. Answer briefly. ".repeat(70),
            true,
            false,
        )
        .expect("encode");
    assert!(system.len() > 560, "{}", system.len());
    let spec = |prompt: Vec<u32>, max_tokens| worker_models::JobRequest {
        prompt,
        max_tokens,
        sampling: SamplingParams::greedy(),
        stop: Vec::new(),
        logprobs: None,
        json_object: false,
    };
    let push = |sched: &mut Scheduler<CpuBackend>, s: worker_models::JobRequest| {
        let (tx, rx) = std::sync::mpsc::channel();
        sched.push(Job {
            request: s,
            sink: Box::new(Collect(tx)),
            cancel: Arc::new(AtomicBool::new(false)),
        });
        rx
    };
    // The first user's request is still generating when the second's
    // arrives; the second lands in the other slot and copies the rows.
    let first = push(&mut sched, spec(system.clone(), 40));
    let mut steps = 0;
    while steps < 30 {
        sched.step();
        steps += 1;
    }
    let mut second_prompt = system.clone();
    second_prompt.extend(
        tok.encode(" What is two plus two?", false, false)
            .expect("encode"),
    );
    let second = push(&mut sched, spec(second_prompt.clone(), 8));
    while !sched.is_idle() {
        sched.step();
    }
    let first: Vec<_> = first.try_iter().collect();
    let second: Vec<_> = second.try_iter().collect();
    assert!(
        outcome_of(&first).tokens_out > 8,
        "the first was still running"
    );
    assert_eq!(outcome_of(&second).tokens_cached, system.len());
    let fresh = run_in_turn(1, 1024, vec![spec(second_prompt, 8)]);
    assert_eq!(text_of(&second), text_of(&fresh[0]));
}

#[test]
fn the_same_prompt_sent_at_once_is_computed_once() {
    let tok = gemma_tokenizer();
    let prompt = tok
        .encode(
            &"Tell me a story about a lighthouse keeper. ".repeat(8),
            true,
            false,
        )
        .expect("encode");
    let spec = || worker_models::JobRequest {
        prompt: prompt.clone(),
        max_tokens: 6,
        sampling: SamplingParams::greedy(),
        stop: Vec::new(),
        logprobs: None,
        json_object: false,
    };
    // Three at once (the `n` choices of one request): the first computes
    // the prompt, the others wait for its rows and copy them.
    let runs = run_batch(vec![spec(), spec(), spec()]);
    let cached: Vec<usize> = runs.iter().map(|e| outcome_of(e).tokens_cached).collect();
    // They wait until fewer than 16 shared tokens are left to compute
    // (not worth waiting for), then copy what is there.
    assert_eq!(cached[0], 0);
    for &c in &cached[1..] {
        assert!(c + 16 >= prompt.len() - 1 && c < prompt.len(), "{cached:?}");
    }
    assert_eq!(text_of(&runs[1]), text_of(&runs[0]));
    assert_eq!(text_of(&runs[2]), text_of(&runs[0]));
}

/// Events of several jobs in the order they happened, tagged by job.
struct Tagged(
    usize,
    std::sync::mpsc::Sender<(usize, worker_models::JobEvent)>,
);
impl worker_models::JobSink for Tagged {
    fn send(&mut self, event: worker_models::JobEvent) -> bool {
        self.1.send((self.0, event)).is_ok()
    }
}

#[test]
fn a_job_waiting_for_rows_keeps_its_slot() {
    use std::sync::atomic::AtomicBool;
    use worker_models::{Job, JobEvent};
    let (mut sched, tok) = gemma_scheduler(2, 512, 32);
    let shared = tok
        .encode(
            &"A long shared instruction for every request. ".repeat(12),
            true,
            false,
        )
        .expect("encode");
    let other = tok
        .encode("Something else entirely.", true, false)
        .expect("encode");
    let (tx, rx) = std::sync::mpsc::channel();
    // A computes the shared prompt; B (the same prompt) waits for its rows
    // and must keep the second slot; C (unrelated) comes after B.
    for (i, prompt, max_tokens) in [
        (0, shared.clone(), 12),
        (1, shared.clone(), 4),
        (2, other, 4),
    ] {
        sched.push(Job {
            request: worker_models::JobRequest {
                prompt,
                max_tokens,
                sampling: SamplingParams::greedy(),
                stop: Vec::new(),
                logprobs: None,
                json_object: false,
            },
            sink: Box::new(Tagged(i, tx.clone())),
            cancel: Arc::new(AtomicBool::new(false)),
        });
    }
    while !sched.is_idle() {
        sched.step();
    }
    let events: Vec<(usize, JobEvent)> = rx.try_iter().collect();
    let started = |job: usize| {
        events
            .iter()
            .position(|(i, e)| *i == job && matches!(e, JobEvent::Started { .. }))
            .expect("started")
    };
    assert!(started(1) < started(2), "B started before C");
    let b_done = events
        .iter()
        .find_map(|(i, e)| match (i, e) {
            (1, JobEvent::Done(o)) => Some(o.tokens_cached),
            _ => None,
        })
        .expect("B finished");
    assert!(b_done > 0, "B copied A's rows");
}
