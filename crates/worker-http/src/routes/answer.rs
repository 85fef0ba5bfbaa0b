//! The OpenAI routes' answers for `n` choices: one JSON body when the
//! request does not stream, else `data:` chunks tagged with each choice's
//! `index`, then `data: [DONE]`.
//!
//! With one choice, the last chunk carries `usage`, as llama.cpp's server
//! sends it; with several, each choice's last chunk has its
//! `finish_reason` and a final chunk with no choices carries the total
//! `usage`, as OpenAI sends it. The first failing choice ends the answer
//! (its error, then `[DONE]`) and cancels the others, whose receivers are
//! dropped.

use super::{EndInfo, Item, logprobs};
use crate::engine::FinishReason;
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
}

fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos | FinishReason::StopSequence => "stop",
        FinishReason::MaxTokens | FinishReason::ContextFull => "length",
    }
}

/// The usage of the choices that ended: the prompt once, every choice's
/// completion.
fn usage(ends: &[&EndInfo]) -> Value {
    let prompt = ends.first().map_or(0, |e| e.tokens_in);
    let cached = ends.first().map_or(0, |e| e.tokens_cached);
    let completion: usize = ends.iter().map(|e| e.tokens_out).sum();
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

    /// A choice's piece of text, with its log-probabilities.
    fn piece(
        &self,
        index: usize,
        text: String,
        lps: &[crate::engine::TokenLogprob],
        form: &mut logprobs::Completion,
    ) -> Value {
        match self.kind {
            Kind::Completion => {
                let lp = if self.logprobs {
                    form.chunk(&text, lps)
                } else {
                    Value::Null
                };
                json!({ "index": index, "text": text, "logprobs": lp, "finish_reason": null })
            }
            Kind::Chat => {
                let lp = if self.logprobs {
                    json!({ "content": logprobs::chat(lps), "refusal": null })
                } else {
                    Value::Null
                };
                json!({ "index": index, "delta": { "content": text }, "logprobs": lp, "finish_reason": null })
            }
        }
    }

    fn last_piece(&self, index: usize, reason: FinishReason) -> Value {
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

/// One JSON body with every choice.
pub async fn whole(head: Head, receivers: Vec<Receiver<Item>>) -> Response {
    let mut choices = Vec::with_capacity(receivers.len());
    let mut ends = Vec::with_capacity(receivers.len());
    for (index, mut rx) in receivers.into_iter().enumerate() {
        let mut text = String::new();
        let mut lps = Vec::new();
        let end = loop {
            match rx.recv().await {
                Some(Item::Text {
                    text: t, logprobs, ..
                }) => {
                    text.push_str(&t);
                    lps.extend(logprobs);
                }
                Some(Item::Progress { .. }) => {}
                Some(Item::End(end)) => break end,
                Some(Item::Error(e)) => return e.into_response(),
                None => {
                    return crate::error::ApiError::new(
                        worker_common::ErrorCode::Internal,
                        "the job ended without a result",
                    )
                    .into_response();
                }
            }
        };
        let reason = finish_reason(end.reason);
        choices.push(match head.kind {
            Kind::Completion => {
                let lp = if head.logprobs {
                    logprobs::Completion::default().chunk(&text, &lps)
                } else {
                    Value::Null
                };
                json!({ "index": index, "text": text, "logprobs": lp, "finish_reason": reason })
            }
            Kind::Chat => {
                let lp = if head.logprobs {
                    json!({ "content": logprobs::chat(&lps), "refusal": null })
                } else {
                    Value::Null
                };
                json!({ "index": index, "message": { "role": "assistant", "content": text }, "logprobs": lp, "finish_reason": reason })
            }
        });
        ends.push(end);
    }
    let object = match head.kind {
        Kind::Completion => "text_completion",
        Kind::Chat => "chat.completion",
    };
    let ends: Vec<&EndInfo> = ends.iter().collect();
    Json(json!({
        "id": head.id, "object": object, "created": head.created, "model": head.model,
        "choices": choices, "usage": usage(&ends),
    }))
    .into_response()
}

/// What the stream of chunks keeps between items.
struct Streaming {
    head: Head,
    choices: StreamMap<usize, ReceiverStream<Item>>,
    forms: Vec<logprobs::Completion>,
    ends: Vec<Option<EndInfo>>,
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
                if st.ends.len() > 1 {
                    let ends: Vec<&EndInfo> = st.ends.iter().flatten().collect();
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
                Item::End(end) => {
                    let usage = (st.ends.len() == 1).then(|| usage(&[&end]));
                    let event = st
                        .head
                        .chunk(vec![st.head.last_piece(index, end.reason)], usage);
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
