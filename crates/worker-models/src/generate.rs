//! One request at a time, for the command line and tests: the scheduler
//! with a single slot, so a generated token takes the same path as in the
//! server (sampling, constraints, log-probabilities, stop strings, prompt
//! caching), with its events handed to a callback as they come.

use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::sampling::{StepOutput, Want};
use crate::scheduler::Scheduler;
use crate::sequence::{Job, JobSink};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use worker_common::job::{JobEvent, JobRequest, Outcome};
use worker_compute::{Backend, KvType};
use worker_tokenizer::Tokenizer;

/// Runs requests one at a time on a model, with its own KV cache.
pub struct Generator<B: Backend> {
    scheduler: Scheduler<B>,
}

impl<B: Backend> std::fmt::Debug for Generator<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("n_ctx", &self.scheduler.n_ctx())
            .finish()
    }
}

/// Events into a channel the generator drains after every step.
struct Forward(mpsc::Sender<JobEvent>);

impl JobSink for Forward {
    fn send(&mut self, event: JobEvent) -> bool {
        self.0.send(event).is_ok()
    }
}

impl<B: Backend> Generator<B> {
    /// A generator with a context of `n_ctx` and prefill batches of `batch`.
    pub fn new(
        model: Model<B>,
        tokenizer: Tokenizer,
        n_ctx: usize,
        kv_type: KvType,
        batch: usize,
    ) -> Result<Self> {
        let scheduler = Scheduler::new(model, Arc::new(tokenizer), 1, n_ctx, kv_type, batch)?;
        Ok(Generator { scheduler })
    }

    /// The model.
    pub fn model(&self) -> &Model<B> {
        self.scheduler.model()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        self.scheduler.tokenizer()
    }

    /// The context size.
    pub fn n_ctx(&self) -> usize {
        self.scheduler.n_ctx()
    }

    /// Generates for `req`, calling `on_event` with each event as soon as
    /// it is final (text, log-probabilities, the end). Returning
    /// `ControlFlow::Break` cancels the request; its outcome then has no
    /// stop reason.
    pub fn generate(
        &mut self,
        req: &JobRequest,
        mut on_event: impl FnMut(&JobEvent) -> ControlFlow<()>,
    ) -> Result<Outcome> {
        if req.prompt.is_empty() {
            return Err(ModelError::InvalidRequest(
                "the prompt has no tokens".into(),
            ));
        }
        if req.prompt.len() >= self.n_ctx() {
            return Err(ModelError::ContextFull {
                prompt: req.prompt.len(),
                ctx: self.n_ctx(),
            });
        }
        let (tx, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        self.scheduler.push(Job {
            request: req.clone(),
            sink: Box::new(Forward(tx)),
            cancel: cancel.clone(),
        });
        while !self.scheduler.is_idle() {
            self.scheduler.step();
            for event in rx.try_iter() {
                match event {
                    JobEvent::Done(outcome) => return Ok(outcome),
                    JobEvent::Failed { code, message } => {
                        return Err(ModelError::Failed { code, message });
                    }
                    event => {
                        if on_event(&event).is_break() {
                            cancel.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        Err(ModelError::Failed {
            code: worker_common::ErrorCode::Internal,
            message: "the job ended without an outcome".into(),
        })
    }

    /// The logits of the last token of `prompt` (a fresh sequence).
    pub fn prompt_logits(&mut self, prompt: &[u32]) -> Result<Vec<f32>> {
        if prompt.is_empty() || prompt.len() > self.n_ctx() {
            return Err(ModelError::ContextFull {
                prompt: prompt.len(),
                ctx: self.n_ctx(),
            });
        }
        let mut out = StepOutput::new(self.model().vocab_size());
        self.scheduler
            .prefill_alone(prompt, Want::Logits, &mut out)?;
        Ok(out.logits)
    }

    /// Greedy continuation ids of `prompt` (no text handling), for
    /// conformance checks.
    pub fn greedy_ids(&mut self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        let mut step = StepOutput::new(self.model().vocab_size());
        self.scheduler
            .prefill_alone(prompt, Want::Argmax, &mut step)?;
        let mut out = Vec::with_capacity(n);
        for pos in (prompt.len()..).take(n) {
            let id = step.ids.first().copied().unwrap_or(0);
            out.push(id);
            if self.tokenizer().is_eog(id) || pos >= self.n_ctx() {
                break;
            }
            self.scheduler
                .feed_alone(id, pos, Want::Argmax, &mut step)?;
        }
        Ok(out)
    }
}
