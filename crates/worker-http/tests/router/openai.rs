//! The OpenAI routes: what they refuse, the jobs they build, their whole
//! and streamed answers, and every route's form of log-probabilities.

use crate::fake::{BOS, BYTE_BASE, CONTEXT, MODEL, reply, with_logprobs};
use crate::harness::{Server, config, fields_of, json_of, names, sse};
use axum::http::StatusCode;
use serde_json::{Value, json};
use worker_common::job::StopReason;

#[tokio::test]
async fn completions_list_every_bad_field_at_once() {
    let s = Server::ready(config(), vec![]);
    let body = json!({
        "prompt": ["a", "b"], "max_tokens": 0, "max_completion_tokens": "x", "temperature": 3,
        "stop": 5, "stream": "yes", "logprobs": 6, "echo": true,
        "response_format": {"type": "json_schema"}, "tools": [{}], "functions": {},
        "suffix": "y", "best_of": 2, "stream_options": {"include_usage": 1}, "n": 0, "model": 5
    });
    let (status, _, err) = json_of(s.post("/v1/completions", body).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        fields_of(&err),
        [
            "prompt",
            "max_tokens",
            "max_completion_tokens",
            "temperature",
            "stop",
            "stream",
            "logprobs",
            "echo",
            "response_format",
            "tools",
            "functions",
            "suffix",
            "best_of",
            "stream_options",
            "n",
            "model"
        ]
    );
    let d = &err["error"]["details"];
    assert_eq!(d[0]["message"], "prompt must be a non-empty string");
    assert_eq!(
        d[4]["message"],
        "stop must be at most 4 non-empty strings of at most 256 bytes"
    );
    assert_eq!(d[6]["constraint"], "an integer in 0..=5");
    assert_eq!(
        d[7]["message"],
        "echo is not supported: the completion does not repeat the prompt"
    );
    assert_eq!(
        d[8]["message"],
        "response_format: only text and json_object are supported (a JSON schema is not)"
    );
    assert_eq!(d[9]["message"], "tools: tool calling is not supported");
    assert_eq!(d[12]["constraint"], "1");
    assert_eq!(
        d[13]["message"],
        "stream_options.include_usage must be a boolean"
    );
    assert_eq!(d[14]["constraint"], "an integer in 1..=16");
    assert_eq!(d[15]["message"], "model must be a string");
}

#[tokio::test]
async fn chat_lists_every_bad_field_at_once() {
    let s = Server::ready(config(), vec![]);
    let body = json!({
        "messages": [], "top_p": 2, "logprobs": "yes", "top_logprobs": 2,
        "echo": true, "suffix": "ignored on chat", "best_of": 3, "tools": "x"
    });
    let (status, _, err) = json_of(s.post("/v1/chat/completions", body).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        fields_of(&err),
        ["messages", "top_p", "logprobs", "top_logprobs", "tools"]
    );
    let d = &err["error"]["details"];
    assert_eq!(
        d[0]["message"],
        "messages must be a non-empty array of {role, content}"
    );
    assert_eq!(d[2]["message"], "logprobs must be a boolean");
    assert_eq!(d[3]["message"], "top_logprobs needs logprobs: true");
    let body = json!({
        "messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21
    });
    let (_, _, err) = json_of(s.post("/v1/chat/completions", body).await).await;
    assert_eq!(fields_of(&err), ["top_logprobs"]);
    assert_eq!(
        err["error"]["details"][0]["constraint"],
        "an integer in 0..=20"
    );
}

#[tokio::test]
async fn chat_messages_name_the_message_at_fault() {
    let s = Server::ready(config(), vec![]);
    for (messages, says) in [
        (
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
            "messages[0]: content parts of type \"image_url\" are not supported: this model reads text",
        ),
        (
            json!([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]),
            "messages[1]: role \"robot\" is not one of system, developer, user, assistant, tool",
        ),
        (
            json!([{"role": "user", "content": 7}]),
            "messages[0]: content must be a string, an array of text parts or null",
        ),
        (
            json!([["user", "hi"]]),
            "messages[0]: role must be a string",
        ),
        (
            json!([{"content": "hi"}]),
            "messages[0]: role must be a string",
        ),
        (
            json!([{"role": "user", "content": [{"text": "hi"}]}]),
            "messages[0]: each content part needs a type",
        ),
        (
            json!([{"role": "user", "content": ["hi"]}]),
            "messages[0]: each content part needs a type",
        ),
        (
            json!([{"role": "user", "content": [{"type": "text", "text": null}]}]),
            "messages[0]: a text part needs a text string",
        ),
        (
            json!("hi"),
            "messages must be a non-empty array of {role, content}",
        ),
    ] {
        let (status, _, err) = json_of(
            s.post("/v1/chat/completions", json!({"messages": messages}))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{messages}");
        assert_eq!(fields_of(&err), ["messages"], "{messages}");
        assert_eq!(err["error"]["details"][0]["message"], says, "{messages}");
        assert_eq!(
            err["error"]["details"][0]["constraint"],
            "a non-empty array of {role, content}"
        );
    }
    // Text parts join with newlines; null content is empty.
    let messages = json!([
        {"role": "system", "content": null},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]);
    let resp = s
        .post("/v1/chat/completions", json!({"messages": messages}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (prompt, add, parse) = s.engine.tokenized().pop().expect("tokenized");
    assert_eq!(prompt, "system: \nuser: a\nb\nassistant:");
    assert!(
        add && parse,
        "the template's text: BOS added, special text parsed"
    );
}

#[tokio::test]
async fn harmless_options_pass_and_json_mode_reaches_the_job() {
    let s = Server::ready(config(), vec![]);
    let body = json!({
        "messages": [{"role": "user", "content": "x"}], "model": "any", "user": "u-1",
        "response_format": {"type": "json_object"}, "tools": [], "functions": null,
        "stream_options": {"include_usage": null}, "metadata": {"k": "v"}
    });
    assert_eq!(s.post("/v1/chat/completions", body).await.status(), 200);
    let body = json!({
        "prompt": ["x"], "suffix": "", "best_of": 1, "echo": false,
        "response_format": {"type": "text"}, "stream_options": "ignored"
    });
    assert_eq!(s.post("/v1/completions", body).await.status(), 200);
    let jobs = s.engine.submitted();
    assert!(jobs[0].json_object);
    assert!(!jobs[1].json_object);
    assert_eq!(
        jobs[0].max_tokens,
        CONTEXT - jobs[0].prompt.len(),
        "chat: the room left"
    );
    assert_eq!(jobs[1].max_tokens, 16, "completions: 16");
    assert_eq!(jobs[1].prompt, [BOS, b'x' as u32 + BYTE_BASE]);
    let body = json!({"prompt": "x", "max_completion_tokens": 7});
    assert_eq!(s.post("/v1/completions", body).await.status(), 200);
    assert_eq!(s.engine.submitted()[2].max_tokens, 7);
}

#[tokio::test]
async fn whole_answers_map_stop_reasons_and_count_usage() {
    let s = Server::ready(
        config(),
        vec![
            reply(&["a", "b"], StopReason::MaxTokens),
            reply(&["c"], StopReason::Eos),
            reply(&["d"], StopReason::StopSequence),
            reply(&["e"], StopReason::ContextFull),
        ],
    );
    let mut reasons = Vec::new();
    for _ in 0..4 {
        let (status, _, c) =
            json_of(s.post("/v1/completions", json!({"prompt": "Hi"})).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(c["object"], "text_completion");
        assert!(c["id"].as_str().expect("id").starts_with("cmpl-"));
        assert_eq!(c["model"], MODEL);
        assert!(c["created"].as_u64().expect("created") > 0);
        reasons.push(c["choices"][0]["finish_reason"].clone());
        if reasons.len() == 1 {
            assert_eq!(c["choices"][0]["text"], "ab");
            assert_eq!(c["choices"][0]["index"], 0);
            assert_eq!(c["choices"][0]["logprobs"], Value::Null);
            assert_eq!(
                c["usage"],
                json!({"prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": 0},
                       "completion_tokens": 2, "total_tokens": 5})
            );
        }
    }
    assert_eq!(reasons, ["length", "stop", "stop", "length"]);

    let (status, _, chat) = json_of(
        s.post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "n": 2, "seed": 5}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(chat["object"], "chat.completion");
    assert!(chat["id"].as_str().expect("id").starts_with("chatcmpl-"));
    for (i, c) in chat["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .enumerate()
    {
        assert_eq!(c["index"], i);
        assert_eq!(
            c["message"],
            json!({"role": "assistant", "content": "Hello"})
        );
        assert_eq!(c["finish_reason"], "stop");
    }
    assert_eq!(chat["usage"]["completion_tokens"], 4, "both choices count");
    let seeds: Vec<Option<u64>> = s.engine.submitted()[4..]
        .iter()
        .map(|j| j.sampling.seed)
        .collect();
    assert_eq!(
        seeds,
        [Some(5), Some(6)],
        "seeded choices differ and repeat"
    );
}

#[tokio::test]
async fn completions_stream_data_chunks_then_done() {
    let s = Server::ready(config(), vec![reply(&["a", "b"], StopReason::MaxTokens)]);
    let events = sse(s
        .post("/v1/completions", json!({"prompt": "x", "stream": true}))
        .await)
    .await;
    assert!(events.iter().all(|(n, _)| n == "message"), "no event names");
    assert_eq!(events.len(), 4);
    let texts: Vec<&Value> = events[..2]
        .iter()
        .map(|(_, d)| &d["choices"][0]["text"])
        .collect();
    assert_eq!(texts, [&json!("a"), &json!("b")]);
    for (_, d) in &events[..3] {
        assert_eq!(d["object"], "text_completion");
        assert!(d.get("usage").is_none() || d["choices"][0]["finish_reason"] == "length");
    }
    let last = &events[2].1;
    assert_eq!(
        last["choices"],
        json!([{"index": 0, "text": "", "logprobs": null, "finish_reason": "length"}])
    );
    assert_eq!(
        last["usage"]["completion_tokens"], 2,
        "one choice: usage on its last chunk"
    );
    assert_eq!(events[3].1, json!("[DONE]"));
}

#[tokio::test]
async fn chat_stream_opens_each_choice_and_ends_with_the_total_usage() {
    let s = Server::ready(config(), vec![]);
    let body = json!({
        "messages": [{"role": "user", "content": "x"}], "n": 2, "stream": true,
        "stream_options": {"include_usage": true}
    });
    let events = sse(s.post("/v1/chat/completions", body).await).await;
    let data: Vec<&Value> = events.iter().map(|(_, d)| d).collect();
    for (i, d) in data[..2].iter().enumerate() {
        assert_eq!(d["object"], "chat.completion.chunk");
        assert_eq!(
            d["choices"],
            json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}])
        );
    }
    let mut text = [String::new(), String::new()];
    let mut finished = Vec::new();
    for d in &data[2..data.len() - 2] {
        let c = &d["choices"][0];
        let i = c["index"].as_u64().expect("index") as usize;
        assert!(
            d.get("usage").is_none(),
            "several choices: usage at the end only"
        );
        match c["finish_reason"].as_str() {
            Some(r) => {
                assert_eq!(c["delta"], json!({}));
                finished.push((i, r.to_string()));
            }
            None => text[i].push_str(c["delta"]["content"].as_str().expect("content")),
        }
    }
    assert_eq!(text, ["Hello", "Hello"]);
    finished.sort();
    assert_eq!(finished, [(0, "stop".into()), (1, "stop".into())]);
    let usage = data[data.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    assert_eq!(
        usage["usage"]["prompt_tokens"],
        s.engine.submitted()[0].prompt.len()
    );
    assert_eq!(data[data.len() - 1], &json!("[DONE]"));
}

#[tokio::test]
async fn logprobs_take_each_route_s_form() {
    let s = Server::ready(
        config(),
        vec![with_logprobs(), with_logprobs(), with_logprobs()],
    );
    // /execute: each token event lists what it completes; the last token,
    // whose text never came, in an event with no text.
    let body = json!({"job_id": "lp", "prompt": "x", "logprobs": 1});
    let events = sse(s.post("/execute", body).await).await;
    assert_eq!(
        names(&events),
        ["started", "token", "token", "token", "end"]
    );
    let last = &events[3].1;
    assert_eq!((&last["t"], &last["i"]), (&json!(""), &json!(2)));
    let lps: Vec<&Value> = events[1..4]
        .iter()
        .map(|(_, d)| &d["logprobs"][0])
        .collect();
    assert_eq!(lps[0]["token"], "He");
    assert_eq!(lps[2]["bytes"], json!([33]));
    assert_eq!(
        lps[1]["top_logprobs"][1],
        json!({"token": "?", "logprob": -2.0, "bytes": [63]})
    );
    assert_eq!(s.engine.submitted()[0].logprobs, Some(1));

    // Completions: the legacy parallel lists.
    let body = json!({"prompt": "x", "logprobs": 2});
    let (_, _, c) = json_of(s.post("/v1/completions", body).await).await;
    let lp = &c["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"], json!(["He", " you", "!"]));
    assert_eq!(lp["token_logprobs"], json!([-0.25, -0.25, -0.25]));
    assert_eq!(lp["top_logprobs"][1], json!({" you": -0.25, "?": -2.0}));
    assert_eq!(lp["text_offset"], json!([0, 2, 6]));
    assert_eq!(c["choices"][0]["text"], "He you");

    // Chat: `content` entries with their alternatives.
    let body = json!({
        "messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 2,
        "stream": true
    });
    let events = sse(s.post("/v1/chat/completions", body).await).await;
    let entries: Vec<Value> = events
        .iter()
        .filter_map(|(_, d)| d["choices"][0]["logprobs"]["content"].as_array())
        .flatten()
        .cloned()
        .collect();
    let tokens: Vec<&str> = entries
        .iter()
        .map(|e| e["token"].as_str().expect("token"))
        .collect();
    assert_eq!(tokens, ["He", " you", "!"]);
    assert_eq!(entries[0]["top_logprobs"].as_array().expect("top").len(), 2);
    let with_lps = events
        .iter()
        .find(|(_, d)| d["choices"][0]["logprobs"].is_object())
        .expect("a chunk with logprobs");
    assert_eq!(with_lps.1["choices"][0]["logprobs"]["refusal"], Value::Null);
    let jobs = s.engine.submitted();
    assert_eq!((jobs[1].logprobs, jobs[2].logprobs), (Some(2), Some(2)));
}
