//! The server's engine: a continuous-batching scheduler on its own thread,
//! fed through a channel, with events bridged to the async server.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;
use worker_common::ErrorCode;
use worker_http::{
    ChatMessage, Engine, EngineError, EngineEvent, EngineFacts, FinishReason, GenRequest,
    JobHandle, TokenLogprob, TokenText,
};
use worker_models::{FailureKind, Job, JobEvent, JobSink, JobSpec, SamplingParams, StopReason};
use worker_tokenizer::Tokenizer;

/// Forwards scheduler events to a job's stream; `gpu` picks the codes of
/// device failures.
struct Sink {
    tx: UnboundedSender<EngineEvent>,
    gpu: bool,
    tokenizer: Arc<Tokenizer>,
}

impl Sink {
    /// A token as the log-probability options show it (control tokens by
    /// their text, as alternatives may be one).
    fn token(&self, id: u32, logprob: f32) -> TokenText {
        let bytes = self
            .tokenizer
            .token_bytes(id, true)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        TokenText {
            token: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
            logprob,
        }
    }
}

impl JobSink for Sink {
    fn send(&mut self, event: JobEvent) -> bool {
        let ev = match event {
            JobEvent::Started { seed } => EngineEvent::Started { seed },
            JobEvent::Text { text, tokens_out } => EngineEvent::Text { text, tokens_out },
            JobEvent::Logprob(lp) => EngineEvent::Logprob(TokenLogprob {
                chosen: self.token(lp.id, lp.logprob),
                top: lp.top.iter().map(|&(id, l)| self.token(id, l)).collect(),
                offset: lp.offset,
            }),
            JobEvent::Done(o) => EngineEvent::Done {
                reason: o.stop_reason.map(|r| match r {
                    StopReason::MaxTokens => FinishReason::MaxTokens,
                    StopReason::Eos => FinishReason::Eos,
                    StopReason::StopSequence => FinishReason::StopSequence,
                    StopReason::ContextFull => FinishReason::ContextFull,
                }),
                stop_sequence: o.stop_sequence,
                tokens_in: o.tokens_in,
                tokens_cached: o.tokens_cached,
                tokens_out: o.tokens_out,
                decode_time_ms: o.decode_time.as_millis() as u64,
                seed: o.seed,
            },
            JobEvent::Failed { kind, message } => EngineEvent::Failed {
                code: match (kind, self.gpu) {
                    (FailureKind::OutOfMemory, true) => ErrorCode::VramOom,
                    (FailureKind::OutOfMemory, false) => ErrorCode::InsufficientMemory,
                    (FailureKind::Device, true) => ErrorCode::CudaError,
                    _ => ErrorCode::Internal,
                },
                message,
            },
        };
        self.tx.send(ev).is_ok()
    }
}

/// The engine the HTTP server drives.
pub struct LocalEngine {
    jobs: Mutex<Sender<Job>>,
    tokenizer: Arc<Tokenizer>,
    facts: EngineFacts,
}

impl LocalEngine {
    pub fn new(jobs: Sender<Job>, tokenizer: Arc<Tokenizer>, facts: EngineFacts) -> Self {
        LocalEngine {
            jobs: Mutex::new(jobs),
            tokenizer,
            facts,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError {
        code: ErrorCode::Internal,
        message: e.to_string(),
    }
}

impl Engine for LocalEngine {
    fn submit(&self, req: GenRequest) -> Result<JobHandle, EngineError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            spec: JobSpec {
                prompt: req.prompt,
                max_tokens: req.max_tokens,
                sampling: SamplingParams {
                    temperature: req.temperature,
                    top_k: req.top_k,
                    top_p: req.top_p,
                    min_p: req.min_p,
                    repeat_penalty: req.repetition_penalty,
                    frequency_penalty: req.frequency_penalty,
                    presence_penalty: req.presence_penalty,
                    repeat_last_n: 64,
                    logit_bias: req.logit_bias,
                    seed: req.seed,
                },
                stop: req.stop,
                logprobs: req.logprobs,
                json_object: req.json_object,
            },
            sink: Box::new(Sink {
                tx,
                gpu: self.facts.backend == "cuda",
                tokenizer: self.tokenizer.clone(),
            }),
            cancel: cancel.clone(),
        };
        self.jobs
            .lock()
            .map_err(internal)?
            .send(job)
            .map_err(|_| internal("the engine thread stopped"))?;
        Ok(JobHandle { events: rx, cancel })
    }

    fn facts(&self) -> EngineFacts {
        self.facts.clone()
    }

    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, EngineError> {
        self.tokenizer
            .encode(text, add_special, parse_special)
            .map_err(internal)
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.tokenizer
            .decode(ids, false, true)
            .map_err(|e| EngineError {
                code: ErrorCode::InvalidRequest,
                message: e.to_string(),
            })
    }

    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<(String, bool), EngineError> {
        let msgs: Vec<worker_tokenizer::ChatMessage> = messages
            .iter()
            .map(|m| worker_tokenizer::ChatMessage {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect();
        let text = self
            .tokenizer
            .apply_chat_template(&msgs, true)
            .map_err(|e| EngineError {
                code: ErrorCode::InvalidRequest,
                message: e.to_string(),
            })?;
        let bos_text = self
            .tokenizer
            .special()
            .bos
            .and_then(|b| self.tokenizer.token_bytes(b, true).ok())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let has_bos = !bos_text.is_empty() && text.starts_with(&bos_text);
        Ok((text, has_bos))
    }
}
