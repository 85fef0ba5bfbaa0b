//! A fake engine: a byte tokenizer, a chat template that joins the turns,
//! and jobs that follow scripts of engine events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use worker_common::ErrorCode;
use worker_common::job::{
    ChatMessage, JobEvent, JobRequest, Outcome, StopReason, TokenLogprob, TokenText,
};
use worker_http::{Engine, EngineError, EngineFacts, JobHandle};

pub const BOS: u32 = 1;
/// Byte `b` is token `b + BYTE_BASE`.
pub const BYTE_BASE: u32 = 3;
/// The fake model's context.
pub const CONTEXT: usize = 64;
pub const MODEL: &str = "fake-model";

/// What the fake engine does with the next submitted job.
pub enum Script {
    /// Sends these events and closes (a `Done` with `tokens_in` 0 gets the
    /// prompt's length).
    Replay(Vec<JobEvent>),
    /// Starts, sends these events, then stays open until cancelled, then
    /// ends as cancelled.
    Hold(Vec<JobEvent>),
    /// `submit` itself fails.
    Refuse(EngineError),
}

/// An engine with a byte tokenizer whose jobs follow scripts; without a
/// script a job answers "Hello" in two pieces and stops at EOS.
#[derive(Default)]
pub struct FakeEngine {
    scripts: Mutex<VecDeque<Script>>,
    submitted: Mutex<Vec<JobRequest>>,
    /// `(text, add_special, parse_special)` of every tokenization.
    tokenized: Mutex<Vec<(String, bool, bool)>>,
}

impl FakeEngine {
    pub fn with(scripts: Vec<Script>) -> Arc<Self> {
        Arc::new(FakeEngine {
            scripts: Mutex::new(scripts.into()),
            ..FakeEngine::default()
        })
    }

    pub fn submitted(&self) -> Vec<JobRequest> {
        self.submitted.lock().expect("lock").clone()
    }

    pub fn tokenized(&self) -> Vec<(String, bool, bool)> {
        self.tokenized.lock().expect("lock").clone()
    }
}

pub fn outcome(reason: Option<StopReason>, tokens_out: usize) -> Outcome {
    Outcome {
        stop_reason: reason,
        stop_sequence: None,
        tokens_in: 0,
        tokens_cached: 0,
        tokens_out,
        seed: 42,
        prompt_time: Duration::from_millis(1),
        decode_time: Duration::from_millis(3),
    }
}

/// A job that says `pieces`, one token each, and stops for `reason`.
pub fn reply(pieces: &[&str], reason: StopReason) -> Script {
    let mut events = vec![JobEvent::Started { seed: 42 }];
    for (i, p) in pieces.iter().enumerate() {
        events.push(JobEvent::Text {
            text: p.to_string(),
            tokens_out: i + 1,
        });
    }
    events.push(JobEvent::Done(outcome(Some(reason), pieces.len())));
    Script::Replay(events)
}

/// A job that starts and runs until cancelled.
pub fn held() -> Script {
    Script::Hold(Vec::new())
}

pub fn failing(code: ErrorCode, message: &str) -> Script {
    Script::Replay(vec![
        JobEvent::Started { seed: 42 },
        JobEvent::Text {
            text: "Hi".into(),
            tokens_out: 1,
        },
        JobEvent::Failed {
            code,
            message: message.into(),
        },
    ])
}

pub fn token(text: &str, logprob: f32) -> TokenText {
    TokenText {
        id: 7,
        token: text.into(),
        bytes: text.as_bytes().to_vec(),
        logprob,
    }
}

/// A token's log-probability, with itself and one other as alternatives.
pub fn logprob(text: &str, offset: usize) -> JobEvent {
    JobEvent::Logprob(TokenLogprob {
        chosen: token(text, -0.25),
        top: vec![token(text, -0.25), token("?", -2.0)],
        offset,
    })
}

/// "He", " you", then "!" whose text never comes as a piece of its own.
pub fn with_logprobs() -> Script {
    Script::Replay(vec![
        JobEvent::Started { seed: 42 },
        logprob("He", 0),
        JobEvent::Text {
            text: "He".into(),
            tokens_out: 1,
        },
        logprob(" you", 2),
        JobEvent::Text {
            text: " you".into(),
            tokens_out: 2,
        },
        logprob("!", 6),
        JobEvent::Done(outcome(Some(StopReason::Eos), 3)),
    ])
}

impl Engine for FakeEngine {
    fn submit(&self, req: JobRequest) -> Result<JobHandle, EngineError> {
        let prompt_len = req.prompt.len();
        self.submitted.lock().expect("lock").push(req);
        let script = self
            .scripts
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or_else(|| reply(&["Hel", "lo"], StopReason::Eos));
        let (tx, events) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        match script {
            Script::Refuse(e) => return Err(e),
            Script::Replay(list) => {
                for mut ev in list {
                    if let JobEvent::Done(o) = &mut ev
                        && o.tokens_in == 0
                    {
                        o.tokens_in = prompt_len;
                    }
                    let _ = tx.send(ev);
                }
            }
            Script::Hold(list) => {
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    let _ = tx.send(JobEvent::Started { seed: 42 });
                    for ev in list {
                        let _ = tx.send(ev);
                    }
                    while !cancel.load(Ordering::Relaxed) && !tx.is_closed() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    let _ = tx.send(JobEvent::Done(outcome(None, 0)));
                });
            }
        }
        Ok(JobHandle { events, cancel })
    }

    fn facts(&self) -> EngineFacts {
        EngineFacts {
            model: MODEL.into(),
            architecture: "fake".into(),
            quantization: "F32".into(),
            tokenizer_kind: "bytes".into(),
            vocab_size: 300,
            context_length: CONTEXT,
            backend: "cpu".into(),
            device: "test".into(),
            memory_bytes: 1 << 20,
            memory_architecture: "host".into(),
            gpu: None,
        }
    }

    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, EngineError> {
        self.tokenized
            .lock()
            .expect("lock")
            .push((text.to_string(), add_special, parse_special));
        let bos = add_special.then_some(BOS);
        Ok(bos
            .into_iter()
            .chain(text.bytes().map(|b| u32::from(b) + BYTE_BASE))
            .collect())
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        let bytes: Vec<u8> = ids
            .iter()
            .filter_map(|&id| u8::try_from(id.checked_sub(BYTE_BASE)?).ok())
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn chat_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        let turns: String = messages
            .iter()
            .map(|m| format!("{}: {}\n", m.role, m.content))
            .collect();
        self.tokenize(&format!("{turns}assistant:"), true, true)
    }
}
