//! Continuous batching: up to `n_parallel` requests share every forward step.
//!
//! Each active request owns a KV-cache sequence (a slot). A step gathers one
//! token from every request that is generating and as much prompt as the
//! batch has room for from requests still prefilling, runs one forward pass,
//! and samples the next token of every request whose logits came out. New
//! requests join between steps; finished or cancelled ones leave. Events go
//! to each request's [`JobSink`]; a sink that reports its receiver gone
//! cancels the request, as does the request's cancel flag.

use crate::error::Result;
use crate::generate::{Outcome, StopReason};
use crate::json_mode::{JsonState, JsonVocab};
use crate::logprobs::{RowLogprobs, TokenLogprob};
use crate::model::{Model, Workspace};
use crate::prefix;
use crate::sampling::{Sampler, SamplingParams, StepOutput, Want};
use crate::stops::{StopMatcher, StopOutcome};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use worker_compute::{Backend, KvType, TokenPos};
use worker_tokenizer::{StreamDecoder, Tokenizer};

/// What a job asks for.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Report each generated token's log-probability with this many
    /// alternatives (at most [`crate::MAX_TOP_LOGPROBS`]); `None`: none.
    pub logprobs: Option<usize>,
    /// Constrain the output to one JSON object ([`crate::JsonState`]).
    pub json_object: bool,
}

/// What happens to a job, in order: `Started`, any number of `Text` (and,
/// when asked for, one `Logprob` per generated token, sent before the
/// `Text` in which the token's text starts, or before `Done`; none for the
/// tokens of a matched stop string), then exactly one `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// The job got a slot; prompt processing begins.
    Started {
        /// The sampling seed in use.
        seed: u64,
    },
    /// A generated token's log-probabilities (only when the job asked).
    Logprob(TokenLogprob),
    /// A piece of complete UTF-8 text.
    Text {
        /// The text.
        text: String,
        /// Tokens generated so far.
        tokens_out: usize,
    },
    /// The job ended; `stop_reason` is `None` when it was cancelled.
    Done(Outcome),
    /// The engine failed while running the job.
    Failed {
        /// What kind of failure, for the error code.
        kind: FailureKind,
        /// What happened.
        message: String,
    },
}

/// Why a job failed, as far as its error code cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The device ran out of memory (a GPU: `VRAM_OOM`); the worker goes on.
    OutOfMemory,
    /// The device failed (a GPU: `CUDA_ERROR`).
    Device,
    /// Anything else.
    Internal,
}

impl FailureKind {
    /// The kind of an engine error.
    pub fn of(e: &crate::ModelError) -> Self {
        match e {
            crate::ModelError::Compute(worker_compute::ComputeError::OutOfMemory { .. }) => {
                FailureKind::OutOfMemory
            }
            crate::ModelError::Compute(worker_compute::ComputeError::Device(_)) => {
                FailureKind::Device
            }
            _ => FailureKind::Internal,
        }
    }
}

/// Where a job's events go.
pub trait JobSink: Send {
    /// Delivers an event; `false` means nobody listens any more (the job is
    /// then cancelled).
    fn send(&mut self, event: JobEvent) -> bool;
}

/// A job with its event sink and cancel flag.
pub struct Job {
    /// The request.
    pub spec: JobSpec,
    /// Where events go.
    pub sink: Box<dyn JobSink>,
    /// Set to cancel the job between steps.
    pub cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("spec", &self.spec).finish()
    }
}

/// Raw logits kept for log-probabilities before the row is changed.
enum RawLogits {
    /// The whole row (JSON mode's mask may change any logit).
    Row(Vec<f32>),
    /// The tokens the sampler's penalties and biases change, sorted.
    Ids(Vec<(u32, f32)>),
}

/// Where a new request goes ([`Scheduler::place`]).
struct Placement {
    /// The free slot.
    seq: usize,
    /// The prefix of the prompt it holds already.
    own: usize,
    /// A busy slot holding a longer prefix, and that prefix's length.
    copy: Option<(usize, usize)>,
}

struct Slot {
    job: Job,
    sampler: Sampler,
    decoder: StreamDecoder,
    stops: StopMatcher,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    /// The sampled token to feed in the next step.
    next: Option<u32>,
    /// The position the next fed token takes.
    pos: usize,
    tokens_out: usize,
    /// Prompt tokens taken from the cache.
    tokens_cached: usize,
    admitted: Instant,
    first_logits: Option<Instant>,
    /// Bytes of text the decoder has produced so far (a token's text
    /// starts there, or within the character it completes).
    decoded_bytes: usize,
    /// Bytes of text sent so far.
    emitted_bytes: usize,
    /// Log-probabilities waiting for their text, with where that text
    /// starts (in `decoded_bytes`).
    pending: VecDeque<(usize, TokenLogprob)>,
    /// Where the output stands in its JSON object (JSON mode).
    json: Option<JsonState>,
}

/// The batching engine; drive it with [`Scheduler::run`] on its own thread.
pub struct Scheduler<B: Backend> {
    model: Model<B>,
    tokenizer: Arc<Tokenizer>,
    ws: Workspace<B>,
    kv: B::Kv,
    n_ctx: usize,
    max_batch: usize,
    slots: Vec<Option<Slot>>,
    queue: VecDeque<Job>,
    /// What the last step left for sampling.
    out: StepOutput,
    /// Per sequence: the tokens whose K and V rows its cache holds, at
    /// positions `0..n` (prompt caching, [`crate::prefix`]).
    cached: Vec<Vec<u32>>,
    /// Per sequence: the step it last served, to reuse the least recent
    /// when no cache helps.
    last_used: Vec<u64>,
    steps: u64,
    /// Per sequence: what its sliding-window rings hold.
    rings: Vec<Vec<prefix::Ring>>,
    /// Token texts for JSON mode, made when a job first asks for it.
    json_vocab: Option<JsonVocab>,
    /// The JSON mask's scratch.
    json_scratch: Vec<bool>,
}

impl<B: Backend> std::fmt::Debug for Scheduler<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("n_parallel", &self.slots.len())
            .field("n_ctx", &self.n_ctx)
            .finish()
    }
}

impl<B: Backend> Scheduler<B> {
    /// A scheduler with `n_parallel` slots of `n_ctx` positions each.
    pub fn new(
        mut model: Model<B>,
        tokenizer: Arc<Tokenizer>,
        n_parallel: usize,
        n_ctx: usize,
        kv_type: KvType,
        max_batch: usize,
    ) -> Result<Self> {
        model.set_context_length(n_ctx);
        let n_parallel = n_parallel.max(1);
        let max_batch = max_batch.max(n_parallel);
        let ws = model.workspace(max_batch, n_parallel)?;
        let kv_spec = model.kv_spec(n_parallel, n_ctx, kv_type, max_batch);
        let kv = model.kv_cache(n_parallel, n_ctx, kv_type, max_batch)?;
        let out = StepOutput::new(model.vocab_size());
        Ok(Scheduler {
            model,
            tokenizer,
            ws,
            kv,
            n_ctx,
            max_batch,
            slots: (0..n_parallel).map(|_| None).collect(),
            queue: VecDeque::new(),
            out,
            cached: vec![Vec::new(); n_parallel],
            last_used: vec![0; n_parallel],
            steps: 0,
            rings: vec![prefix::Ring::for_spec(&kv_spec); n_parallel],
            json_vocab: None,
            json_scratch: Vec::new(),
        })
    }

    /// Adds a job; it starts when a slot is free.
    pub fn push(&mut self, job: Job) {
        self.queue.push_back(job);
    }

    /// Whether nothing is running or waiting.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.slots.iter().all(Option::is_none)
    }

    /// Serves jobs from `rx` until it closes and all work is done.
    pub fn run(mut self, rx: Receiver<Job>) {
        loop {
            if self.is_idle() {
                match rx.recv() {
                    Ok(job) => self.push(job),
                    Err(_) => return,
                }
            }
            loop {
                match rx.recv_timeout(Duration::ZERO) {
                    Ok(job) => self.push(job),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        if self.is_idle() {
                            return;
                        }
                        break;
                    }
                }
            }
            self.step();
        }
    }

    fn admit(&mut self) {
        // A job that ends here (cancelled while queued, or refused) leaves
        // its slot to the next job in the same pass, so a free slot never
        // waits a step behind dead jobs. A job whose prompt a running job
        // is still computing waits for those rows ([`Scheduler::waits`]);
        // the jobs behind it go first.
        let mut next = 0;
        // Waiting jobs keep a free slot each for when their rows are there.
        let mut reserved = 0;
        loop {
            let free = self.slots.iter().filter(|s| s.is_none()).count();
            if free <= reserved || next >= self.queue.len() {
                return;
            }
            let waits = self
                .queue
                .get(next)
                .is_some_and(|j| !j.cancel.load(Ordering::Relaxed) && self.waits(&j.spec.prompt));
            if waits {
                next += 1;
                reserved += 1;
                continue;
            }
            let Some(mut job) = self.queue.remove(next) else {
                return;
            };
            if job.cancel.load(Ordering::Relaxed) {
                finish_cancelled(&mut job, None);
                continue;
            }
            if job.spec.prompt.is_empty() || job.spec.prompt.len() >= self.n_ctx {
                let msg = format!(
                    "the prompt has {} tokens but the context holds {}",
                    job.spec.prompt.len(),
                    self.n_ctx
                );
                job.sink.send(JobEvent::Failed {
                    kind: FailureKind::Internal,
                    message: msg,
                });
                continue;
            }
            let Some(Placement { seq, own, copy }) = self.place(&job.spec.prompt) else {
                self.queue.insert(next, job);
                return;
            };
            let sampler = Sampler::new(job.spec.sampling.clone(), &job.spec.prompt);
            if !job.sink.send(JobEvent::Started {
                seed: sampler.seed(),
            }) {
                continue;
            }
            let reuse = match copy {
                Some((from, reuse)) => self.copy_prefix(from, seq, reuse, own),
                None => own,
            };
            if reuse == 0
                && let Err(e) = self.model.backend().kv_clear(&mut self.kv, seq)
            {
                let e = crate::ModelError::from(e);
                job.sink.send(JobEvent::Failed {
                    kind: FailureKind::of(&e),
                    message: e.to_string(),
                });
                continue;
            }
            self.cached[seq].truncate(reuse);
            let json = job.spec.json_object;
            if json && self.json_vocab.is_none() {
                self.json_vocab = Some(JsonVocab::new(&self.tokenizer));
            }
            let stops = StopMatcher::new(&job.spec.stop);
            self.slots[seq] = Some(Slot {
                job,
                sampler,
                decoder: StreamDecoder::new(),
                stops,
                prefilled: reuse,
                next: None,
                pos: reuse,
                tokens_out: 0,
                tokens_cached: reuse,
                admitted: Instant::now(),
                first_logits: None,
                decoded_bytes: 0,
                emitted_bytes: 0,
                pending: VecDeque::new(),
                json: json.then(JsonState::default),
            });
        }
    }

    /// The free slot for a request with `prompt`, the prefix it holds
    /// already, and, when a busy slot holds a longer one (by at least
    /// [`prefix::MIN_COPY`] tokens), that slot and its prefix to copy. The
    /// slot is the free one with the longest prefix, else the one used
    /// least recently; a copy goes to the least recently used one, so as
    /// not to overwrite another conversation's history. `None`: no slot is
    /// free.
    fn place(&self, prompt: &[u32]) -> Option<Placement> {
        let reuse = |s: usize| prefix::reusable(&self.cached[s], prompt, &self.rings[s]);
        let free = || (0..self.slots.len()).filter(|&s| self.slots[s].is_none());
        let (best, own) = free()
            .map(|s| (s, reuse(s)))
            .max_by_key(|&(s, r)| (r, std::cmp::Reverse(self.last_used[s])))?;
        let busy = (0..self.slots.len())
            .filter(|&s| self.slots[s].is_some())
            .map(|s| (s, reuse(s)))
            .max_by_key(|&(_, r)| r)
            .filter(|&(_, r)| r >= own + prefix::MIN_COPY);
        match busy {
            Some(copy) => {
                let lru = free().min_by_key(|&s| self.last_used[s]).unwrap_or(best);
                let own = if lru == best { own } else { reuse(lru) };
                Some(Placement {
                    seq: lru,
                    own,
                    copy: Some(copy),
                })
            }
            None => Some(Placement {
                seq: best,
                own,
                copy: None,
            }),
        }
    }

    /// Whether a job with `prompt` should wait: a running job has not yet
    /// computed a prefix of it at least [`prefix::MIN_COPY`] tokens longer
    /// than any slot holds now, whose rows it can copy once they are there
    /// (the `n` choices of one request, or the same prompt sent twice at
    /// once). It waits only until that shared part is computed, while the
    /// rows are surely still held, and keeps a free slot meanwhile.
    fn waits(&self, prompt: &[u32]) -> bool {
        if !self.model.backend().can_copy_kv() {
            return false;
        }
        // What a slot, free or busy, could give now.
        let now = (0..self.slots.len())
            .map(|s| prefix::reusable(&self.cached[s], prompt, &self.rings[s]))
            .max()
            .unwrap_or(0);
        self.slots.iter().flatten().any(|s| {
            let target = prefix::shareable(&s.job.spec.prompt, prompt);
            // Only until it has computed the shared part: its ring (window
            // plus a batch) still holds those rows then.
            s.prefilled < target && target >= now + prefix::MIN_COPY
        })
    }

    /// Copies the rows of `from`'s first `reuse` positions into slot `seq`
    /// (which holds `own` already); returns the prefix `seq` then holds. A
    /// backend that cannot copy leaves `own`.
    fn copy_prefix(&mut self, from: usize, seq: usize, reuse: usize, own: usize) -> usize {
        match self.model.backend().kv_copy(&mut self.kv, from, seq, reuse) {
            Ok(()) => {
                self.cached[seq] = self.cached[from][..reuse].to_vec();
                self.rings[seq] = self.rings[from].clone();
                reuse
            }
            Err(worker_compute::ComputeError::Unsupported(_)) => own,
            Err(e) => {
                // The copy may have half happened: nothing in `seq` is known.
                tracing::warn!(error = %e, "copying a cached prompt failed; computing it");
                self.cached[seq].clear();
                for r in &mut self.rings[seq] {
                    r.forget();
                }
                0
            }
        }
    }

    /// One forward step over every active job.
    pub fn step(&mut self) {
        // Drop jobs cancelled since the last step, then fill the free slots.
        for seq in 0..self.slots.len() {
            if self.slots[seq]
                .as_ref()
                .is_some_and(|s| s.job.cancel.load(Ordering::Relaxed))
                && let Some(mut slot) = self.slots[seq].take()
            {
                let outcome = outcome(&slot, None);
                finish_cancelled(&mut slot.job, Some(outcome));
            }
        }
        self.admit();
        let mut ids = Vec::new();
        let mut tokens = Vec::new();
        let mut want = Vec::new(); // (batch row, seq)
        // Generating jobs first: one token each.
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            if let Some(s) = slot
                && let Some(next) = s.next.take()
            {
                want.push((ids.len(), seq));
                ids.push(next);
                tokens.push(TokenPos {
                    seq,
                    pos: s.pos as u32,
                });
                self.cached[seq].truncate(s.pos);
                self.cached[seq].push(next);
                s.pos += 1;
            }
        }
        // Then prompt chunks, as far as the batch has room.
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            if s.prefilled >= s.job.spec.prompt.len() {
                continue;
            }
            let room = self.max_batch - ids.len();
            if room == 0 {
                break;
            }
            let take = room.min(s.job.spec.prompt.len() - s.prefilled);
            self.cached[seq].truncate(s.prefilled);
            for i in 0..take {
                let id = s.job.spec.prompt[s.prefilled + i];
                ids.push(id);
                self.cached[seq].push(id);
                tokens.push(TokenPos {
                    seq,
                    pos: (s.prefilled + i) as u32,
                });
            }
            s.prefilled += take;
            s.pos = s.prefilled;
            if s.prefilled == s.job.spec.prompt.len() {
                want.push((ids.len() - 1, seq));
            }
        }
        if ids.is_empty() {
            return;
        }
        let rows: Vec<usize> = want.iter().map(|&(r, _)| r).collect();
        // What the step reads back: the argmax when every job that samples
        // is greedy, a draw made where the logits are when every job samples
        // the whole row at a temperature, the top candidates when all keep a
        // top-k, the whole rows otherwise (on a GPU, all but the last keep
        // the logits there).
        let need = want
            .iter()
            .filter_map(|&(_, seq)| {
                self.slots[seq].as_ref().map(|s| match s.json {
                    // The constraint masks the whole row.
                    Some(_) => Want::Logits,
                    None => s.sampler.want(),
                })
            })
            .reduce(Want::and)
            .unwrap_or(Want::Argmax);
        // Log-probabilities come from the whole rows, read beside the picks
        // (which stay where the samplers' wants put them).
        let logprobs = want.iter().any(|&(_, seq)| {
            self.slots[seq]
                .as_ref()
                .is_some_and(|s| s.job.spec.logprobs.is_some())
        });
        self.out.keep_logits(logprobs);
        if need == Want::Draw {
            let draws: Vec<(f32, f32)> = want
                .iter()
                .map(|&(_, seq)| {
                    self.slots[seq]
                        .as_mut()
                        .map_or((0.0, 0.0), |s| s.sampler.draw_params())
                })
                .collect();
            self.out.set_draws(draws);
        }
        let result = self.model.forward_for(
            &mut self.ws,
            &mut self.kv,
            &ids,
            &tokens,
            &rows,
            need,
            &mut self.out,
        );
        if let Err(e) = result {
            // What the cache holds is unknown now.
            for c in &mut self.cached {
                c.clear();
            }
            for r in self.rings.iter_mut().flatten() {
                r.forget();
            }
            self.fail_all(FailureKind::of(&e), &e.to_string());
            return;
        }
        self.steps += 1;
        for &TokenPos { seq, pos } in &tokens {
            self.last_used[seq] = self.steps;
            for r in &mut self.rings[seq] {
                r.write(pos as usize);
            }
        }
        for (i, &(_, seq)) in want.iter().enumerate() {
            let done = match self.slots[seq].as_mut() {
                Some(slot) => advance(
                    slot,
                    i,
                    &mut self.out,
                    &self.tokenizer,
                    self.json_vocab
                        .as_ref()
                        .map(|v| (v, &mut self.json_scratch)),
                    self.n_ctx,
                ),
                None => false,
            };
            if done {
                self.slots[seq] = None;
            }
        }
    }

    fn fail_all(&mut self, kind: FailureKind, msg: &str) {
        for slot in self.slots.iter_mut() {
            if let Some(mut s) = slot.take() {
                s.job.sink.send(JobEvent::Failed {
                    kind,
                    message: msg.to_string(),
                });
            }
        }
    }
}

fn outcome(slot: &Slot, reason: Option<StopReason>) -> Outcome {
    let now = Instant::now();
    let first = slot.first_logits.unwrap_or(now);
    Outcome {
        stop_reason: reason,
        stop_sequence: None,
        tokens_in: slot.job.spec.prompt.len(),
        tokens_cached: slot.tokens_cached,
        tokens_out: slot.tokens_out,
        seed: slot.sampler.seed(),
        prompt_time: first - slot.admitted,
        decode_time: now - first,
    }
}

fn finish_cancelled(job: &mut Job, outcome: Option<Outcome>) {
    let outcome = outcome.unwrap_or(Outcome {
        stop_reason: None,
        stop_sequence: None,
        tokens_in: job.spec.prompt.len(),
        tokens_cached: 0,
        tokens_out: 0,
        seed: job.spec.sampling.seed.unwrap_or(0),
        prompt_time: Duration::ZERO,
        decode_time: Duration::ZERO,
    });
    job.sink.send(JobEvent::Done(outcome));
}

/// Samples the next token of a slot from logits row `row` of the step;
/// returns whether the job is finished.
fn advance(
    s: &mut Slot,
    row: usize,
    out: &mut StepOutput,
    tok: &Tokenizer,
    mut json: Option<(&JsonVocab, &mut Vec<bool>)>,
    n_ctx: usize,
) -> bool {
    if s.first_logits.is_none() {
        s.first_logits = Some(Instant::now());
    }
    if s.job.cancel.load(Ordering::Relaxed) {
        let o = outcome(s, None);
        finish_cancelled(&mut s.job, Some(o));
        return true;
    }
    if s.tokens_out >= s.job.spec.max_tokens {
        return finish(s, StopReason::MaxTokens);
    }
    // The model's distribution, read before the sampler may change the row
    // (penalties and biases change logits in place): the normalizer, the
    // top tokens and the raw logits of the tokens it will change.
    let logprobs = s.job.spec.logprobs.and_then(|n| {
        let r = out.logits(row)?;
        let raw = if s.json.is_some() {
            // JSON mode's mask changes any logit: keep the row.
            RawLogits::Row(r.to_vec())
        } else {
            RawLogits::Ids(
                s.sampler
                    .adjusted_ids()
                    .into_iter()
                    .filter_map(|id| r.get(id as usize).map(|&l| (id, l)))
                    .collect(),
            )
        };
        Some((RowLogprobs::of(r, n), raw))
    });
    if let (Some(state), Some((vocab, scratch)), Some(r)) =
        (&s.json, json.as_mut(), out.logits_mut(row))
        && !vocab.mask(state, r, scratch)
    {
        tracing::warn!("JSON mode: no token can continue the object; the answer ends unfinished");
        return finish(s, StopReason::Eos);
    }
    let mut id = out.pick(row, &mut s.sampler);
    if s.json.is_some()
        && let Some(r) = out.logits(row)
        && r.get(id as usize) == Some(&f32::NEG_INFINITY)
    {
        // Masked weights are tiny, not zero: should a draw land on one,
        // the likeliest allowed token instead.
        id = crate::sampling::argmax(r);
    }
    if tok.is_eog(id) {
        return finish(s, StopReason::Eos);
    }
    if let (Some(state), Some((vocab, _))) = (&mut s.json, json.as_ref())
        && !state.push_bytes(vocab.bytes(id))
    {
        // The mask allowed it, so this cannot happen; should it, the text
        // stays an unfinished object rather than invalid.
        tracing::warn!(
            token = id,
            "JSON mode: a chosen token does not fit; the answer ends unfinished"
        );
        return finish(s, StopReason::Eos);
    }
    s.sampler.accept(id);
    s.tokens_out += 1;
    let bytes = tok.token_bytes(id, false).unwrap_or_default();
    if let Some((lp, raw)) = logprobs {
        let logit = match &raw {
            RawLogits::Row(r) => r.get(id as usize).copied(),
            RawLogits::Ids(ids) => match ids.binary_search_by_key(&id, |e| e.0) {
                Ok(i) => Some(ids[i].1),
                Err(_) => out.logits(row).and_then(|r| r.get(id as usize).copied()),
            },
        };
        let mut entry = lp.token(id, logit.unwrap_or(f32::NEG_INFINITY));
        entry.offset = s.decoded_bytes;
        s.pending.push_back((s.decoded_bytes, entry));
    }
    let text = s.decoder.push(bytes);
    s.decoded_bytes += text.len();
    match s.stops.push(&text) {
        StopOutcome::Emit(t) => {
            if !emit(s, t) {
                let o = outcome(s, None);
                finish_cancelled(&mut s.job, Some(o));
                return true;
            }
        }
        StopOutcome::Stopped { before, stop } => return stopped(s, before, stop),
    }
    if s.json.is_some_and(|j| j.is_complete()) {
        // The object is closed: nothing may follow.
        return finish(s, StopReason::Eos);
    }
    if s.tokens_out >= s.job.spec.max_tokens {
        return finish(s, StopReason::MaxTokens);
    }
    if s.pos >= n_ctx {
        return finish(s, StopReason::ContextFull);
    }
    s.next = Some(id);
    false
}

/// Sends `text` (when not empty), preceded by the log-probabilities of the
/// tokens whose text starts within it or before; false when the job's
/// receiver is gone.
fn emit(s: &mut Slot, text: String) -> bool {
    let end = s.emitted_bytes + text.len();
    while let Some((start, _)) = s.pending.front() {
        if *start >= end || text.is_empty() {
            break;
        }
        if let Some((_, e)) = s.pending.pop_front()
            && !s.job.sink.send(JobEvent::Logprob(e))
        {
            return false;
        }
    }
    if text.is_empty() {
        return true;
    }
    s.emitted_bytes = end;
    s.job.sink.send(JobEvent::Text {
        text,
        tokens_out: s.tokens_out,
    })
}

/// A stop string matched: the text before it goes out, with the
/// log-probabilities of the tokens that reach into it; those wholly in the
/// stop string (or after it) are dropped like their text.
fn stopped(s: &mut Slot, before: String, stop: String) -> bool {
    emit(s, before);
    s.pending.clear();
    let mut o = outcome(s, Some(StopReason::StopSequence));
    o.stop_sequence = Some(stop);
    s.job.sink.send(JobEvent::Done(o));
    true
}

/// The job ends for `reason`: what was held back goes out (bytes of an
/// unfinished character, a possible stop string's start, through the stop
/// matcher so a stop string it completes still counts), then the
/// log-probabilities still pending, then `Done`.
fn finish(s: &mut Slot, reason: StopReason) -> bool {
    let rest = s.decoder.finish();
    if !rest.is_empty() {
        match s.stops.push(&rest) {
            StopOutcome::Emit(t) => {
                emit(s, t);
            }
            StopOutcome::Stopped { before, stop } => return stopped(s, before, stop),
        }
    }
    let tail = s.stops.finish();
    emit(s, tail);
    while let Some((_, e)) = s.pending.pop_front() {
        s.job.sink.send(JobEvent::Logprob(e));
    }
    s.job.sink.send(JobEvent::Done(outcome(s, Some(reason))));
    true
}
