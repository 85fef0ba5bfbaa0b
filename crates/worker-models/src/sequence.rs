//! One request's decoding: everything between a logits row of its sequence
//! and the events its client receives.
//!
//! A [`Sequence`] owns the request, its sampler, its logits processors
//! (constraints, then the bias and penalties), the streaming detokenizer, the stop matcher, the queue of
//! log-probabilities waiting for their text, and the counters of its
//! outcome. The scheduler decides which rows exist; the sequence turns
//! each of its rows into one token and the events that follow from it.

use crate::constraint::{LogitsProcessor, Verdict};
use crate::logprobs::RowLogprobs;
use crate::sampling::{Sampler, StepOutput, Want, argmax};
use crate::stops::{StopMatcher, StopOutcome};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use worker_common::ErrorCode;
use worker_common::job::{JobEvent, JobRequest, Outcome, StopReason, TokenLogprob};
use worker_tokenizer::{StreamDecoder, Tokenizer};

/// Where a job's events go.
pub trait JobSink: Send {
    /// Delivers an event; `false` means nobody listens any more (the job is
    /// then cancelled).
    fn send(&mut self, event: JobEvent) -> bool;
}

/// A job: the request, where its events go, and its cancel flag.
pub struct Job {
    /// The request.
    pub request: JobRequest,
    /// Where events go.
    pub sink: Box<dyn JobSink>,
    /// Set to cancel the job between steps.
    pub cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("request", &self.request)
            .finish()
    }
}

impl Job {
    /// Whether the job was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Ends a job that never got a slot: `Done` with no stop reason.
    pub fn finish_cancelled(mut self) {
        let outcome = Outcome {
            stop_reason: None,
            stop_sequence: None,
            tokens_in: self.request.prompt.len(),
            tokens_cached: 0,
            tokens_out: 0,
            seed: self.request.sampling.seed.unwrap_or(0),
            prompt_time: Duration::ZERO,
            decode_time: Duration::ZERO,
        };
        self.sink.send(JobEvent::Done(outcome));
    }

    /// Ends the job with an error.
    pub fn fail(&mut self, code: ErrorCode, message: String) {
        self.sink.send(JobEvent::Failed { code, message });
    }
}

/// Raw logits kept for log-probabilities before the row is changed.
enum RawLogits {
    /// The whole row (a constraint may change any logit).
    Row(Vec<f32>),
    /// The tokens the sampler's penalties and biases change, sorted.
    Ids(Vec<(u32, f32)>),
}

impl RawLogits {
    /// The raw logit of `id`; `row` is the row as it is now (unchanged
    /// where the kept ids do not reach).
    fn of(&self, id: u32, row: Option<&[f32]>) -> Option<f32> {
        match self {
            RawLogits::Row(r) => r.get(id as usize).copied(),
            RawLogits::Ids(ids) => match ids.binary_search_by_key(&id, |e| e.0) {
                Ok(i) => Some(ids[i].1),
                Err(_) => row.and_then(|r| r.get(id as usize).copied()),
            },
        }
    }
}

/// Log-probabilities waiting for the text their tokens start in.
#[derive(Debug, Default)]
struct LogprobQueue {
    /// Entries, with where their token's text starts (in decoded bytes).
    pending: VecDeque<(usize, TokenLogprob)>,
    /// Bytes of text the decoder has produced so far.
    decoded_bytes: usize,
    /// Bytes of text sent so far.
    emitted_bytes: usize,
}

/// A request being decoded in a slot.
pub(crate) struct Sequence {
    pub(crate) job: Job,
    sampler: Sampler,
    /// What changes the logits before the sampler: the constraints, then
    /// the bias and penalties.
    processors: Vec<Box<dyn LogitsProcessor>>,
    /// Whether a processor may change any logit (a mask), fixed per
    /// request.
    masks: bool,
    decoder: StreamDecoder,
    stops: StopMatcher,
    logprobs: LogprobQueue,
    /// Prompt tokens already in the cache.
    pub(crate) prefilled: usize,
    /// The sampled token to feed in the next step.
    pub(crate) next: Option<u32>,
    /// The position the next fed token takes.
    pub(crate) pos: usize,
    tokens_out: usize,
    /// Prompt tokens taken from the cache.
    tokens_cached: usize,
    admitted: Instant,
    first_logits: Option<Instant>,
}

impl Sequence {
    /// Starts `job` in a slot that holds its first `reuse` prompt tokens;
    /// `None` when its receiver is gone.
    pub(crate) fn start(
        mut job: Job,
        reuse: usize,
        constraints: Vec<Box<dyn LogitsProcessor>>,
    ) -> Option<Self> {
        // The request's bias and penalties run as the last processor, after
        // its constraints; the sampler keeps the cuts and the draw.
        let (sampler, adjustments) =
            Sampler::split(job.request.sampling.clone(), &job.request.prompt);
        let mut processors = constraints;
        processors.push(Box::new(adjustments));
        if !job.sink.send(JobEvent::Started {
            seed: sampler.seed(),
        }) {
            return None;
        }
        let stops = StopMatcher::new(&job.request.stop);
        Some(Sequence {
            job,
            sampler,
            masks: processors.iter().any(|p| p.changed_ids().is_none()),
            processors,
            decoder: StreamDecoder::new(),
            stops,
            logprobs: LogprobQueue::default(),
            prefilled: reuse,
            next: None,
            pos: reuse,
            tokens_out: 0,
            tokens_cached: reuse,
            admitted: Instant::now(),
            first_logits: None,
        })
    }

    /// The prompt.
    pub(crate) fn prompt(&self) -> &[u32] {
        &self.job.request.prompt
    }

    /// What the next choice needs from the step: the sampler's want, as
    /// each constraint widens it.
    pub(crate) fn want(&self) -> Want {
        self.processors
            .iter()
            .fold(self.sampler.want(), |w, p| p.want(w))
    }

    /// Whether the step must also read the whole row (log-probabilities).
    pub(crate) fn wants_logprobs(&self) -> bool {
        self.job.request.logprobs.is_some()
    }

    /// The temperature and uniform number of a draw made on the device.
    pub(crate) fn draw_params(&mut self) -> (f32, f32) {
        self.sampler.draw_params()
    }

    /// The outcome so far, ending for `reason` (`None`: cancelled).
    fn outcome(&self, reason: Option<StopReason>) -> Outcome {
        let now = Instant::now();
        let first = self.first_logits.unwrap_or(now);
        Outcome {
            stop_reason: reason,
            stop_sequence: None,
            tokens_in: self.job.request.prompt.len(),
            tokens_cached: self.tokens_cached,
            tokens_out: self.tokens_out,
            seed: self.sampler.seed(),
            prompt_time: first - self.admitted,
            decode_time: now - first,
        }
    }

    /// Ends the job as cancelled; always finished.
    pub(crate) fn cancelled(&mut self) -> bool {
        let o = self.outcome(None);
        self.job.sink.send(JobEvent::Done(o));
        true
    }

    /// Takes the next token from logits row `row` of the step; returns
    /// whether the job is finished.
    pub(crate) fn on_logits(
        &mut self,
        row: usize,
        out: &mut StepOutput,
        tok: &Tokenizer,
        n_ctx: usize,
    ) -> bool {
        if self.first_logits.is_none() {
            self.first_logits = Some(Instant::now());
        }
        if self.job.is_cancelled() {
            return self.cancelled();
        }
        if self.tokens_out >= self.job.request.max_tokens {
            return self.finish(StopReason::MaxTokens);
        }
        let Some((id, logprob)) = self.choose(row, out, tok) else {
            return self.finish(StopReason::Eos);
        };
        if tok.is_eog(id) {
            return self.finish(StopReason::Eos);
        }
        let mut complete = false;
        for p in &mut self.processors {
            match p.accept(id) {
                Verdict::Continue => {}
                Verdict::Complete => complete = true,
                // The mask allowed it, so this cannot happen; should it,
                // the text stays unfinished rather than invalid.
                Verdict::Stuck => return self.finish(StopReason::Eos),
            }
        }
        self.sampler.accept(id);
        self.tokens_out += 1;
        let q = &mut self.logprobs;
        if let Some(entry) = logprob {
            q.pending.push_back((q.decoded_bytes, entry));
        }
        let text = self
            .decoder
            .push(tok.token_bytes(id, false).unwrap_or_default());
        self.logprobs.decoded_bytes += text.len();
        match self.stops.push(&text) {
            StopOutcome::Emit(t) => {
                if !self.emit(t) {
                    return self.cancelled();
                }
            }
            StopOutcome::Stopped { before, stop } => return self.stopped(before, stop),
        }
        if complete {
            // The constrained value is closed: nothing may follow.
            return self.finish(StopReason::Eos);
        }
        if self.tokens_out >= self.job.request.max_tokens {
            return self.finish(StopReason::MaxTokens);
        }
        if self.pos >= n_ctx {
            return self.finish(StopReason::ContextFull);
        }
        self.next = Some(id);
        false
    }

    /// The token of row `row` after the constraints' masks, with its
    /// log-probability entry when the job asked; `None` when a constraint
    /// allows nothing.
    fn choose(
        &mut self,
        row: usize,
        out: &mut StepOutput,
        tok: &Tokenizer,
    ) -> Option<(u32, Option<TokenLogprob>)> {
        // The model's distribution, read before the sampler and the
        // constraints change the row: the normalizer, the top tokens and
        // the raw logits of the tokens they will change.
        let read = self.job.request.logprobs.and_then(|n| {
            let r = out.logits(row)?;
            let changed: Option<Vec<u32>> =
                self.processors.iter().try_fold(Vec::new(), |mut all, p| {
                    all.extend(p.changed_ids()?);
                    Some(all)
                });
            let raw = match changed {
                None => RawLogits::Row(r.to_vec()),
                Some(mut ids) => {
                    ids.sort_unstable();
                    ids.dedup();
                    RawLogits::Ids(
                        ids.into_iter()
                            .filter_map(|id| r.get(id as usize).map(|&l| (id, l)))
                            .collect(),
                    )
                }
            };
            Some((RowLogprobs::of(r, n), raw))
        });
        // The processors change what the sampler chooses from: the whole
        // row, or the top candidates when that is all the step read.
        match out.read() {
            Want::Logits => {
                if let Some(r) = out.logits_mut(row) {
                    for p in &mut self.processors {
                        if p.process(r) == Verdict::Stuck {
                            return None;
                        }
                    }
                }
            }
            Want::Top(_) => {
                if let Some(top) = out.top_mut(row) {
                    for p in &mut self.processors {
                        p.process_top(top);
                    }
                }
            }
            Want::Argmax | Want::Draw => {}
        }
        let mut id = out.pick(row, &mut self.sampler);
        if self.masks
            && let Some(r) = out.logits(row)
            && r.get(id as usize) == Some(&f32::NEG_INFINITY)
        {
            // Masked weights are tiny, not zero: should a draw land on one,
            // the likeliest allowed token instead.
            id = argmax(r);
        }
        let entry = read.map(|(lp, raw)| {
            let logit = raw.of(id, out.logits(row)).unwrap_or(f32::NEG_INFINITY);
            lp.entry(id, logit, self.logprobs.decoded_bytes, |t| {
                token_text(tok, t)
            })
        });
        Some((id, entry))
    }

    /// Sends `text` (when not empty), preceded by the log-probabilities of
    /// the tokens whose text starts within it or before; false when the
    /// job's receiver is gone.
    fn emit(&mut self, text: String) -> bool {
        let q = &mut self.logprobs;
        let end = q.emitted_bytes + text.len();
        while let Some((start, _)) = q.pending.front() {
            if *start >= end || text.is_empty() {
                break;
            }
            if let Some((_, e)) = q.pending.pop_front()
                && !self.job.sink.send(JobEvent::Logprob(e))
            {
                return false;
            }
        }
        if text.is_empty() {
            return true;
        }
        q.emitted_bytes = end;
        self.job.sink.send(JobEvent::Text {
            text,
            tokens_out: self.tokens_out,
        })
    }

    /// A stop string matched: the text before it goes out, with the
    /// log-probabilities of the tokens that reach into it; those wholly in
    /// the stop string (or after it) are dropped like their text.
    fn stopped(&mut self, before: String, stop: String) -> bool {
        self.emit(before);
        self.logprobs.pending.clear();
        let mut o = self.outcome(Some(StopReason::StopSequence));
        o.stop_sequence = Some(stop);
        self.job.sink.send(JobEvent::Done(o));
        true
    }

    /// The job ends for `reason`: what was held back goes out (bytes of an
    /// unfinished character, a possible stop string's start, through the
    /// stop matcher so a stop string it completes still counts), then the
    /// log-probabilities still pending, then `Done`.
    fn finish(&mut self, reason: StopReason) -> bool {
        let rest = self.decoder.finish();
        if !rest.is_empty() {
            match self.stops.push(&rest) {
                StopOutcome::Emit(t) => {
                    self.emit(t);
                }
                StopOutcome::Stopped { before, stop } => return self.stopped(before, stop),
            }
        }
        let tail = self.stops.finish();
        self.emit(tail);
        while let Some((_, e)) = self.logprobs.pending.pop_front() {
            self.job.sink.send(JobEvent::Logprob(e));
        }
        let o = self.outcome(Some(reason));
        self.job.sink.send(JobEvent::Done(o));
        true
    }
}

/// A token as the log-probability options show it: control tokens by
/// their text (an alternative may be one), bytes of a partial character
/// replaced in the string.
fn token_text(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tok
        .token_bytes(id, true)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}
