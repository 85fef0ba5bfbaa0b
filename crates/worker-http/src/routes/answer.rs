//! The OpenAI routes' answers for `n` choices: one JSON body when the
//! request does not stream, else `data:` chunks tagged with each choice's
//! `index`, then `data: [DONE]`.
//!
//! The choices are read together, so none waits behind another. With one
//! choice, the last chunk carries `usage`, as llama.cpp's server sends it;
//! with `stream_options.include_usage`, a final chunk with no choices
//! carries the total `usage`, as OpenAI sends it. The first failing choice
//! ends the answer (its error, then `[DONE]`) and cancels the others, whose
//! receivers are dropped.

use super::{Item, logprobs};
use axum::Json;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc::Receiver;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::ReceiverStream;
use worker_common::job::{Outcome, StopReason};

/// Which route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Completion,
    Chat,
}

/// What every answer of one request shares.
#[derive(Debug, Clone)]
pub struct Head {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub logprobs: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::Eos | StopReason::StopSequence => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
    }
}

/// A choice that ended: why, and its outcome.
type Ended = (StopReason, Outcome);

/// The usage of the choices that ended: the prompt once, every choice's
/// completion.
fn usage(ends: &[&Ended]) -> Value {
    let prompt = ends.first().map_or(0, |e| e.1.tokens_in);
    let cached = ends.first().map_or(0, |e| e.1.tokens_cached);
    let completion: usize = ends.iter().map(|e| e.1.tokens_out).sum();
    json!({
        "prompt_tokens": prompt,
        "prompt_tokens_details": { "cached_tokens": cached },
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

impl Head {
    fn chunk(&self, choices: Vec<Value>, usage: Option<Value>) -> Event {
        let object = match self.kind {
            Kind::Completion => "text_completion",
            Kind::Chat => "chat.completion.chunk",
        };
        let mut c = json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            c["usage"] = u;
        }
        Event::default().data(c.to_string())
    }

    /// The `logprobs` of a choice's `text` (all of it, or a chunk's
    /// worth), in the route's form; `null` when not asked for.
    fn logprobs(
        &self,
        text: &str,
        lps: &[worker_common::job::TokenLogprob],
        form: &mut logprobs::Completion,
    ) -> Value {
        match (self.logprobs, self.kind) {
            (false, _) => Value::Null,
            (true, Kind::Completion) => form.chunk(text, lps),
            (true, Kind::Chat) => json!({ "content": logprobs::chat(lps), "refusal": null }),
        }
    }

    /// A choice's piece of text, with its log-probabilities.
    fn piece(
        &self,
        index: usize,
        text: String,
        lps: &[worker_common::job::TokenLogprob],
        form: &mut logprobs::Completion,
    ) -> Value {
        let lp = self.logprobs(&text, lps, form);
        match self.kind {
            Kind::Completion => {
                json!({ "index": index, "text": text, "logprobs": lp, "finish_reason": null })
            }
            Kind::Chat => {
                json!({ "index": index, "delta": { "content": text }, "logprobs": lp, "finish_reason": null })
            }
        }
    }

    fn last_piece(&self, index: usize, reason: StopReason) -> Value {
        match self.kind {
            Kind::Completion => {
                json!({ "index": index, "text": "", "logprobs": null, "finish_reason": finish_reason(reason) })
            }
            Kind::Chat => {
                json!({ "index": index, "delta": {}, "logprobs": null, "finish_reason": finish_reason(reason) })
            }
        }
    }
}

fn unfinished() -> Response {
    crate::error::ApiError::new(
        worker_common::ErrorCode::Internal,
        "a choice ended without a result",
    )
    .into_response()
}

/// One JSON body with every choice.
pub async fn whole(head: Head, receivers: Vec<Receiver<Item>>) -> Response {
    let n = receivers.len();
    let mut choices = StreamMap::new();
    for (index, rx) in receivers.into_iter().enumerate() {
        choices.insert(index, ReceiverStream::new(rx));
    }
    let mut texts = vec![String::new(); n];
    let mut lps = vec![Vec::new(); n];
    let mut ends: Vec<Option<Ended>> = vec![None; n];
    while let Some((i, item)) = choices.next().await {
        match item {
            Item::Text { text, logprobs, .. } => {
                texts[i].push_str(&text);
                lps[i].extend(logprobs);
            }
            Item::Progress { .. } => {}
            Item::End(reason, outcome) => ends[i] = Some((reason, outcome)),
            // The others are cancelled as their receivers go.
            Item::Error(e) => return e.into_response(),
        }
    }
    let mut body = Vec::with_capacity(n);
    for (index, ((text, lps), end)) in texts.into_iter().zip(lps).zip(&ends).enumerate() {
        let Some(end) = end else {
            return unfinished();
        };
        let reason = finish_reason(end.0);
        let lp = head.logprobs(&text, &lps, &mut logprobs::Completion::default());
        body.push(match head.kind {
            Kind::Completion => {
                json!({ "index": index, "text": text, "logprobs": lp, "finish_reason": reason })
            }
            Kind::Chat => {
                json!({ "index": index, "message": { "role": "assistant", "content": text }, "logprobs": lp, "finish_reason": reason })
            }
        });
    }
    let object = match head.kind {
        Kind::Completion => "text_completion",
        Kind::Chat => "chat.completion",
    };
    let ends: Vec<&Ended> = ends.iter().flatten().collect();
    Json(json!({
        "id": head.id, "object": object, "created": head.created, "model": head.model,
        "choices": body, "usage": usage(&ends),
    }))
    .into_response()
}

/// What the stream of chunks keeps between items.
struct Streaming {
    head: Head,
    choices: StreamMap<usize, ReceiverStream<Item>>,
    forms: Vec<logprobs::Completion>,
    ends: Vec<Option<Ended>>,
    over: bool,
}

/// `data:` chunks as the choices produce them.
pub fn stream(head: Head, receivers: Vec<Receiver<Item>>) -> Response {
    let n = receivers.len();
    let first: Vec<Event> = match head.kind {
        Kind::Chat => (0..n)
            .map(|index| {
                head.chunk(
                    vec![json!({ "index": index, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null })],
                    None,
                )
            })
            .collect(),
        Kind::Completion => Vec::new(),
    };
    let mut choices = StreamMap::new();
    for (index, rx) in receivers.into_iter().enumerate() {
        choices.insert(index, ReceiverStream::new(rx));
    }
    let state = Streaming {
        head,
        choices,
        forms: (0..n).map(|_| logprobs::Completion::default()).collect(),
        ends: vec![None; n],
        over: false,
    };
    let rest = futures::stream::unfold(state, |mut st| async move {
        if st.over {
            return None;
        }
        loop {
            let Some((index, item)) = st.choices.next().await else {
                // Every choice ended.
                st.over = true;
                let mut events = Vec::new();
                if st.ends.iter().any(Option::is_none) {
                    let e = crate::error::ApiError::new(
                        worker_common::ErrorCode::Internal,
                        "a choice ended without a result",
                    );
                    events.push(Event::default().data(e.body().to_string()));
                } else if st.head.include_usage {
                    let ends: Vec<&Ended> = st.ends.iter().flatten().collect();
                    events.push(st.head.chunk(Vec::new(), Some(usage(&ends))));
                }
                events.push(Event::default().data("[DONE]"));
                return Some((events, st));
            };
            match item {
                Item::Progress { .. } => continue,
                Item::Text { text, logprobs, .. } => {
                    let piece = st.head.piece(index, text, &logprobs, &mut st.forms[index]);
                    let event = st.head.chunk(vec![piece], None);
                    return Some((vec![event], st));
                }
                Item::End(reason, outcome) => {
                    let end = (reason, outcome);
                    let usage = (st.ends.len() == 1).then(|| usage(&[&end]));
                    let event = st
                        .head
                        .chunk(vec![st.head.last_piece(index, reason)], usage);
                    st.ends[index] = Some(end);
                    return Some((vec![event], st));
                }
                Item::Error(e) => {
                    // The others are cancelled as their receivers go.
                    st.over = true;
                    st.choices.clear();
                    let events = vec![
                        Event::default().data(e.body().to_string()),
                        Event::default().data("[DONE]"),
                    ];
                    return Some((events, st));
                }
            }
        }
    });
    let events = futures::stream::iter(first)
        .chain(rest.flat_map(futures::stream::iter))
        .map(Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
        .into_response()
}
