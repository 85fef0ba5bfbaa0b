//! The server's engine: a continuous-batching scheduler on its own thread,
//! fed through a channel, with events bridged to the async server.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;
use worker_common::ErrorCode;
use worker_common::job::{ChatMessage, JobEvent, JobRequest};
use worker_http::{Engine, EngineError, EngineFacts, JobHandle};
use worker_models::{Job, JobSink};
use worker_tokenizer::Tokenizer;

/// Forwards the scheduler's events to a job's stream.
struct Sink(UnboundedSender<JobEvent>);

impl JobSink for Sink {
    fn send(&mut self, event: JobEvent) -> bool {
        self.0.send(event).is_ok()
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
    fn submit(&self, request: JobRequest) -> Result<JobHandle, EngineError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            request,
            sink: Box::new(Sink(tx)),
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

    fn chat_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        self.tokenizer
            .encode_chat(messages, true)
            .map_err(|e| EngineError {
                code: ErrorCode::InvalidRequest,
                message: e.to_string(),
            })
    }
}
