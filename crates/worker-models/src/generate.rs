//! Generating text for one request: prefill, then sample, stream, stop.

use crate::error::{ModelError, Result};
use crate::model::{Model, Workspace};
use crate::sampling::{Sampler, SamplingParams, StepOutput, Want};
use crate::stops::{StopMatcher, StopOutcome};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};
use worker_compute::{Backend, KvType, TokenPos};
use worker_tokenizer::{StreamDecoder, Tokenizer};

/// One generation request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Prompt token ids (BOS included where the model wants one).
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Stop strings.
    pub stop: Vec<String>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` were generated.
    MaxTokens,
    /// The model produced an end-of-generation token.
    Eos,
    /// A stop string matched.
    StopSequence,
    /// The context is full.
    ContextFull,
}

impl StopReason {
    /// The wire name (`MAX_TOKENS`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::MaxTokens => "MAX_TOKENS",
            StopReason::Eos => "EOS",
            StopReason::StopSequence => "STOP_SEQUENCE",
            StopReason::ContextFull => "CONTEXT_FULL",
        }
    }
}

/// How a generation ended, with its counts and timings.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Why it stopped; `None` when the caller cancelled it.
    pub stop_reason: Option<StopReason>,
    /// The stop string that matched, if any.
    pub stop_sequence: Option<String>,
    /// Prompt tokens.
    pub tokens_in: usize,
    /// Prompt tokens whose cache rows an earlier request left (not
    /// computed again).
    pub tokens_cached: usize,
    /// Generated tokens.
    pub tokens_out: usize,
    /// The sampling seed used.
    pub seed: u64,
    /// Time to process the prompt.
    pub prompt_time: Duration,
    /// Time spent generating.
    pub decode_time: Duration,
}

/// Runs requests one at a time on a model, with its own KV cache.
pub struct Generator<B: Backend> {
    model: Model<B>,
    tokenizer: Tokenizer,
    ws: Workspace<B>,
    kv: B::Kv,
    n_ctx: usize,
    batch: usize,
}

impl<B: Backend> std::fmt::Debug for Generator<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("n_ctx", &self.n_ctx)
            .finish()
    }
}

impl<B: Backend> Generator<B> {
    /// A generator with a context of `n_ctx` and prefill batches of `batch`.
    pub fn new(
        mut model: Model<B>,
        tokenizer: Tokenizer,
        n_ctx: usize,
        kv_type: KvType,
        batch: usize,
    ) -> Result<Self> {
        model.set_context_length(n_ctx);
        let batch = batch.max(1);
        let ws = model.workspace(batch, 1)?;
        let kv = model.kv_cache(1, n_ctx, kv_type, batch)?;
        Ok(Generator {
            model,
            tokenizer,
            ws,
            kv,
            n_ctx,
            batch,
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

    /// The context size.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Runs the prompt and leaves what `want` asks of its last token's
    /// logits in `out`.
    fn prefill(&mut self, prompt: &[u32], want: Want, out: &mut StepOutput) -> Result<()> {
        self.model.backend().kv_clear(&mut self.kv, 0)?;
        for (c, chunk) in prompt.chunks(self.batch).enumerate() {
            let pos: Vec<TokenPos> = (0..chunk.len())
                .map(|i| TokenPos {
                    seq: 0,
                    pos: (c * self.batch + i) as u32,
                })
                .collect();
            let last = [chunk.len() - 1];
            let rows: &[usize] = if (c + 1) * self.batch >= prompt.len() {
                &last
            } else {
                &[]
            };
            self.model
                .forward_for(&mut self.ws, &mut self.kv, chunk, &pos, rows, want, out)?;
        }
        Ok(())
    }

    /// Generates for `req`, calling `on_text` with each piece of text (and
    /// the id of the token that completed it) as soon as it is final.
    /// Returning `ControlFlow::Break` from `on_text` cancels the request.
    pub fn generate(
        &mut self,
        req: &GenerateRequest,
        mut on_text: impl FnMut(&str, u32) -> ControlFlow<()>,
    ) -> Result<Outcome> {
        if req.prompt.is_empty() {
            return Err(ModelError::InvalidRequest(
                "the prompt has no tokens".into(),
            ));
        }
        if req.prompt.len() >= self.n_ctx {
            return Err(ModelError::ContextFull {
                prompt: req.prompt.len(),
                ctx: self.n_ctx,
            });
        }
        let mut sampler = Sampler::new(req.sampling.clone(), &req.prompt);
        let mut outcome = Outcome {
            stop_reason: None,
            stop_sequence: None,
            tokens_in: req.prompt.len(),
            tokens_cached: 0,
            tokens_out: 0,
            seed: sampler.seed(),
            prompt_time: Duration::ZERO,
            decode_time: Duration::ZERO,
        };
        let start = Instant::now();
        let mut out = StepOutput::new(self.model.vocab_size());
        let want = sampler.want();
        if want == Want::Draw {
            out.set_draws([sampler.draw_params()]);
        }
        self.prefill(&req.prompt, want, &mut out)?;
        outcome.prompt_time = start.elapsed();

        let decode_start = Instant::now();
        let mut decoder = StreamDecoder::new();
        let mut stops = StopMatcher::new(&req.stop);
        let mut pos = req.prompt.len();
        let mut last_id = 0;
        let mut cancelled = false;
        loop {
            if outcome.tokens_out >= req.max_tokens {
                outcome.stop_reason = Some(StopReason::MaxTokens);
                break;
            }
            let id = out.pick(0, &mut sampler);
            if self.tokenizer.is_eog(id) {
                outcome.stop_reason = Some(StopReason::Eos);
                break;
            }
            sampler.accept(id);
            outcome.tokens_out += 1;
            last_id = id;
            let text = decoder.push(self.tokenizer.token_bytes(id, false)?);
            match stops.push(&text) {
                StopOutcome::Emit(t) => {
                    if !t.is_empty() && on_text(&t, id).is_break() {
                        cancelled = true;
                        break;
                    }
                }
                StopOutcome::Stopped { before, stop } => {
                    if !before.is_empty() {
                        let _ = on_text(&before, id);
                    }
                    outcome.stop_reason = Some(StopReason::StopSequence);
                    outcome.stop_sequence = Some(stop);
                    break;
                }
            }
            if pos >= self.n_ctx {
                outcome.stop_reason = Some(StopReason::ContextFull);
                break;
            }
            let tp = [TokenPos {
                seq: 0,
                pos: pos as u32,
            }];
            let want = sampler.want();
            if want == Want::Draw {
                out.set_draws([sampler.draw_params()]);
            }
            self.model
                .forward_for(&mut self.ws, &mut self.kv, &[id], &tp, &[0], want, &mut out)?;
            pos += 1;
        }
        if !cancelled && outcome.stop_reason != Some(StopReason::StopSequence) {
            let mut tail = stops.push(&decoder.finish());
            if let StopOutcome::Emit(t) = &mut tail {
                t.push_str(&stops.finish());
            }
            match tail {
                StopOutcome::Emit(t) if !t.is_empty() => {
                    let _ = on_text(&t, last_id);
                }
                StopOutcome::Stopped { before, stop } => {
                    if !before.is_empty() {
                        let _ = on_text(&before, last_id);
                    }
                    outcome.stop_reason = Some(StopReason::StopSequence);
                    outcome.stop_sequence = Some(stop);
                }
                _ => {}
            }
        }
        if cancelled {
            outcome.stop_reason = None;
        }
        outcome.decode_time = decode_start.elapsed();
        Ok(outcome)
    }

    /// The logits of the last token of `prompt` (a fresh sequence).
    pub fn prompt_logits(&mut self, prompt: &[u32]) -> Result<Vec<f32>> {
        if prompt.is_empty() || prompt.len() > self.n_ctx {
            return Err(ModelError::ContextFull {
                prompt: prompt.len(),
                ctx: self.n_ctx,
            });
        }
        let mut out = StepOutput::new(self.model.vocab_size());
        self.prefill(prompt, Want::Logits, &mut out)?;
        Ok(out.logits)
    }

    /// Greedy continuation ids of `prompt` (no text handling), for
    /// conformance checks.
    pub fn greedy_ids(&mut self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        let mut step = StepOutput::new(self.model.vocab_size());
        self.prefill(prompt, Want::Argmax, &mut step)?;
        let mut out = Vec::with_capacity(n);
        for pos in (prompt.len()..).take(n) {
            let id = step.ids.first().copied().unwrap_or(0);
            out.push(id);
            if self.tokenizer.is_eog(id) || pos >= self.n_ctx {
                break;
            }
            let tp = [TokenPos {
                seq: 0,
                pos: pos as u32,
            }];
            self.model.forward_for(
                &mut self.ws,
                &mut self.kv,
                &[id],
                &tp,
                &[0],
                Want::Argmax,
                &mut step,
            )?;
        }
        Ok(out)
    }
}
