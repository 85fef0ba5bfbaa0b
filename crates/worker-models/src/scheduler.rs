//! Continuous batching: up to `n_parallel` requests share every forward step.
//!
//! Each active request owns a KV-cache sequence (a slot) and a
//! [`Sequence`] that turns its logits rows into events. A step gathers one
//! token from every request that is generating and as much prompt as the
//! batch has room for from requests still prefilling, runs one forward pass,
//! and hands every row that came out to its sequence. New requests join
//! between steps, in the slot whose cache holds the longest prefix of their
//! prompt ([`PromptCache`]); finished or cancelled ones leave. A sink that
//! reports its receiver gone cancels the request, as does its cancel flag.

use crate::constraint::{JsonObject, LogitsProcessor};
use crate::error::{ModelError, Result};
use crate::json_mode::JsonVocab;
use crate::model::{Model, Workspace};
use crate::prefix::{self, Placement, PromptCache};
use crate::sampling::{StepOutput, Want};
use crate::sequence::{Job, Sequence};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;
use worker_common::ErrorCode;
use worker_compute::{Backend, KvType, TokenPos};
use worker_tokenizer::Tokenizer;

/// The batching engine; drive it with [`Scheduler::run`] on its own thread.
pub struct Scheduler<B: Backend> {
    model: Model<B>,
    tokenizer: Arc<Tokenizer>,
    ws: Workspace<B>,
    kv: B::Kv,
    n_ctx: usize,
    max_batch: usize,
    slots: Vec<Option<Sequence>>,
    queue: VecDeque<Job>,
    /// What the last step left for sampling.
    out: StepOutput,
    /// What each slot's cache holds (prompt caching).
    cache: PromptCache,
    /// Token texts for JSON mode, made when a job first asks for it.
    json_vocab: Option<Arc<JsonVocab>>,
    /// Whether the model has recurrent layers, whose state is kept at the
    /// end of each prompt.
    recurrent: bool,
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
            cache: PromptCache::new(&kv_spec),
            json_vocab: None,
            recurrent: kv_spec.has_states(),
        })
    }

    /// The model.
    pub fn model(&self) -> &Model<B> {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The context size of each slot.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
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

    /// The error code of an engine failure on this backend.
    fn code(&self, e: &ModelError) -> ErrorCode {
        e.code(self.model.backend().info().kind.is_device())
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
                .is_some_and(|j| !j.is_cancelled() && self.waits(&j.request.prompt));
            if waits {
                next += 1;
                reserved += 1;
                continue;
            }
            let Some(mut job) = self.queue.remove(next) else {
                return;
            };
            if job.is_cancelled() {
                job.finish_cancelled();
                continue;
            }
            let prompt_len = job.request.prompt.len();
            if prompt_len == 0 || prompt_len >= self.n_ctx {
                let e = ModelError::ContextFull {
                    prompt: prompt_len,
                    ctx: self.n_ctx,
                };
                job.fail(ErrorCode::InvalidRequest, e.to_string());
                continue;
            }
            let slots = &self.slots;
            let Some(placement) = self
                .cache
                .place(&job.request.prompt, |s| slots[s].is_none())
            else {
                self.queue.insert(next, job);
                return;
            };
            self.start(job, placement);
        }
    }

    /// Ends the queued jobs whose clients went away, at once: a queue of
    /// abandoned requests must not hold their prompts until a slot frees.
    fn drop_cancelled_queued(&mut self) {
        if !self.queue.iter().any(Job::is_cancelled) {
            return;
        }
        let (cancelled, waiting): (VecDeque<Job>, VecDeque<Job>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(Job::is_cancelled);
        self.queue = waiting;
        for job in cancelled {
            job.finish_cancelled();
        }
    }

    /// How many jobs wait for a slot.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Starts `job` where `placement` puts it.
    fn start(&mut self, mut job: Job, placement: Placement) {
        let Placement {
            seq,
            own,
            copy,
            restore,
        } = placement;
        let constraints = self.constraints(&job);
        let reuse = match copy {
            Some((from, reuse)) => self.copy_prefix(from, seq, reuse, own),
            None if restore => self.restore_kept(seq, own),
            None => own,
        };
        if reuse == 0
            && let Err(e) = self.model.backend().kv_clear(&mut self.kv, seq)
        {
            let e = ModelError::from(e);
            let code = self.code(&e);
            job.fail(code, e.to_string());
            return;
        }
        self.cache.truncate(seq, reuse);
        self.slots[seq] = Sequence::start(job, reuse, constraints);
    }

    /// The logits processors a job's request asks for.
    fn constraints(&mut self, job: &Job) -> Vec<Box<dyn LogitsProcessor>> {
        if !job.request.json_object {
            return Vec::new();
        }
        let vocab = self
            .json_vocab
            .get_or_insert_with(|| Arc::new(JsonVocab::new(&self.tokenizer)));
        vec![Box::new(JsonObject::new(vocab.clone()))]
    }

    /// Whether a job with `prompt` should wait: a running job has not yet
    /// computed a prefix of it at least [`prefix::MIN_COPY`] tokens longer
    /// than any slot holds now, whose rows it can copy once they are there
    /// (the `n` choices of one request, or the same prompt sent twice at
    /// once). It waits only until that shared part is computed, while the
    /// rows are surely still held, and keeps a free slot meanwhile.
    fn waits(&self, prompt: &[u32]) -> bool {
        if !self.model.backend().can_copy_kv() || self.recurrent {
            return false;
        }
        let now = self.cache.best_reusable(prompt);
        self.slots.iter().flatten().any(|s| {
            let target = prefix::shareable(s.prompt(), prompt);
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
                self.cache.copied(from, seq, reuse);
                reuse
            }
            Err(worker_compute::ComputeError::Unsupported(_)) => own,
            Err(e) => {
                // The copy may have half happened: nothing in `seq` is known.
                tracing::warn!(error = %e, "copying a cached prompt failed; computing it");
                self.cache.forget(seq);
                0
            }
        }
    }

    /// Makes slot `seq`'s kept recurrent state, holding its first `own`
    /// tokens, live again; returns the prefix it then holds (0 when that
    /// failed: the request computes its prompt afresh).
    fn restore_kept(&mut self, seq: usize, own: usize) -> usize {
        match self.model.backend().state_restore(&mut self.kv, seq) {
            Ok(()) => own,
            Err(e) => {
                tracing::warn!(error = %e, "restoring a kept prompt state failed; computing it");
                self.cache.forget(seq);
                0
            }
        }
    }

    /// Keeps the recurrent state of each slot in `done` (its prompt just
    /// computed), for a later request that extends that prompt.
    fn keep_prompt_states(&mut self, done: &[usize]) {
        if !self.recurrent {
            return;
        }
        for &seq in done {
            let Some(n) = self.slots[seq].as_ref().map(|s| s.prompt().len()) else {
                continue;
            };
            match self.model.backend().state_save(&mut self.kv, seq) {
                Ok(()) => self.cache.kept(seq, n),
                Err(e) => tracing::warn!(error = %e, "keeping a prompt state failed"),
            }
        }
    }

    /// One forward step over every active job.
    pub fn step(&mut self) {
        // Drop jobs cancelled since the last step, running or queued, then
        // fill the free slots.
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|s| s.job.is_cancelled())
                && let Some(mut s) = slot.take()
            {
                s.cancelled();
            }
        }
        self.drop_cancelled_queued();
        self.admit();
        let batch = self.gather();
        if batch.ids.is_empty() {
            return;
        }
        let need = self.prepare_output(&batch.want);
        let rows: Vec<usize> = batch.want.iter().map(|&(r, _)| r).collect();
        let result = self.model.forward_for(
            &mut self.ws,
            &mut self.kv,
            &batch.ids,
            &batch.tokens,
            &rows,
            need,
            &mut self.out,
        );
        if let Err(e) = result {
            // What the cache holds is unknown now.
            self.cache.forget_all();
            let code = self.code(&e);
            self.fail_all(code, &e.to_string());
            return;
        }
        self.cache
            .stepped(batch.tokens.iter().map(|t| (t.seq, t.pos as usize)));
        self.keep_prompt_states(&batch.prompts_done);
        for (i, &(_, seq)) in batch.want.iter().enumerate() {
            let done = match self.slots[seq].as_mut() {
                Some(s) => s.on_logits(i, &mut self.out, &self.tokenizer, self.n_ctx),
                None => false,
            };
            if done {
                self.slots[seq] = None;
            }
        }
    }

    /// The step's batch: one token from every generating job, then prompt
    /// chunks as far as the batch has room.
    fn gather(&mut self) -> Batch {
        let mut b = Batch::default();
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            if let Some(s) = slot
                && let Some(next) = s.next.take()
            {
                b.want.push((b.ids.len(), seq));
                b.ids.push(next);
                b.tokens.push(TokenPos {
                    seq,
                    pos: s.pos as u32,
                });
                self.cache.feed(seq, s.pos, next);
                s.pos += 1;
            }
        }
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            let prompt_len = s.prompt().len();
            if s.prefilled >= prompt_len {
                continue;
            }
            let room = self.max_batch - b.ids.len();
            if room == 0 {
                break;
            }
            let take = room.min(prompt_len - s.prefilled);
            for i in 0..take {
                let pos = s.prefilled + i;
                let id = s.prompt()[pos];
                b.ids.push(id);
                self.cache.feed(seq, pos, id);
                b.tokens.push(TokenPos {
                    seq,
                    pos: pos as u32,
                });
            }
            s.prefilled += take;
            s.pos = s.prefilled;
            if s.prefilled == prompt_len {
                b.want.push((b.ids.len() - 1, seq));
                b.prompts_done.push(seq);
            }
        }
        b
    }

    /// What the step reads back, from what each sequence with a row wants:
    /// the argmax when every one is greedy, a draw made where the logits
    /// are when every one samples the whole row at a temperature, the top
    /// candidates when all keep a top-k, the whole rows otherwise (on a
    /// GPU, all but the last keep the logits there). Log-probabilities come
    /// from the whole rows, read beside the picks.
    fn prepare_output(&mut self, want: &[(usize, usize)]) -> Want {
        let seqs = || want.iter().filter_map(|&(_, seq)| self.slots[seq].as_ref());
        let need = seqs()
            .map(Sequence::want)
            .reduce(Want::and)
            .unwrap_or(Want::Argmax);
        let logprobs = seqs().any(Sequence::wants_logprobs);
        self.out.keep_logits(logprobs);
        if need == Want::Draw {
            let draws: Vec<(f32, f32)> = want
                .iter()
                .map(|&(_, seq)| {
                    self.slots[seq]
                        .as_mut()
                        .map_or((0.0, 0.0), Sequence::draw_params)
                })
                .collect();
            self.out.set_draws(draws);
        }
        need
    }

    /// Runs `prompt` in slot 0 of an idle scheduler, outside any job, and
    /// leaves what `want` asks of its last token's logits in `out` (the
    /// conformance checks' raw logits).
    pub(crate) fn prefill_alone(
        &mut self,
        prompt: &[u32],
        want: Want,
        out: &mut StepOutput,
    ) -> Result<()> {
        if !self.is_idle() {
            return Err(ModelError::InvalidRequest(
                "the scheduler is serving jobs".into(),
            ));
        }
        // Slot 0's rows are overwritten: nothing of it is known any more.
        self.cache.forget(0);
        self.model.backend().kv_clear(&mut self.kv, 0)?;
        for (c, chunk) in prompt.chunks(self.max_batch).enumerate() {
            let start = c * self.max_batch;
            let pos: Vec<TokenPos> = (0..chunk.len())
                .map(|i| TokenPos {
                    seq: 0,
                    pos: (start + i) as u32,
                })
                .collect();
            let last = [chunk.len() - 1];
            let rows: &[usize] = if start + chunk.len() == prompt.len() {
                &last
            } else {
                &[]
            };
            self.model
                .forward_for(&mut self.ws, &mut self.kv, chunk, &pos, rows, want, out)?;
        }
        Ok(())
    }

    /// Feeds token `id` at `pos` to slot 0 after [`Self::prefill_alone`].
    pub(crate) fn feed_alone(
        &mut self,
        id: u32,
        pos: usize,
        want: Want,
        out: &mut StepOutput,
    ) -> Result<()> {
        let tp = [TokenPos {
            seq: 0,
            pos: pos as u32,
        }];
        self.model
            .forward_for(&mut self.ws, &mut self.kv, &[id], &tp, &[0], want, out)
    }

    fn fail_all(&mut self, code: ErrorCode, msg: &str) {
        for slot in self.slots.iter_mut() {
            if let Some(mut s) = slot.take() {
                s.job.fail(code, msg.to_string());
            }
        }
    }
}

/// The tokens of one step.
#[derive(Debug, Default)]
struct Batch {
    ids: Vec<u32>,
    tokens: Vec<TokenPos>,
    /// (batch row, slot) of each row whose logits a sequence takes.
    want: Vec<(usize, usize)>,
    /// Slots whose prompt's last token is in this batch.
    prompts_done: Vec<usize>,
}
