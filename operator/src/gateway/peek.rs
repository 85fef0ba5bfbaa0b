//! What the gateway reads of a request body: the model, whether it
//! streams, and the affinity key. The body itself goes to the worker as it
//! came.
//!
//! The affinity key names the prompt prefix a replica's cache would hold:
//! - the `x-llorch-session` header, when the client sends one;
//! - chat: the system (and developer) messages and the first user message,
//!   which every later turn of the conversation repeats;
//! - completions: the prompt's first `prefix_bytes` bytes.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The header that names a session explicitly.
pub const SESSION_HEADER: &str = "x-llorch-session";

/// The fields of a request the gateway uses.
#[derive(Debug, Deserialize)]
pub struct Peek {
    /// The model's name.
    pub model: Option<String>,
    /// Whether the answer streams.
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    prompt: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<serde_json::Value>,
}

/// Why a body cannot be routed.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    /// Not a JSON object of the expected shape.
    #[error("the body is not a JSON request: {0}")]
    Json(#[from] serde_json::Error),
    /// No `model`.
    #[error("model is required: the gateway routes by it (GET /v1/models lists them)")]
    NoModel,
}

impl Peek {
    /// Parses `body`; a request must name its model.
    pub fn parse(body: &[u8]) -> Result<(Peek, String), PeekError> {
        let peek: Peek = serde_json::from_slice(body)?;
        match peek.model.clone().filter(|m| !m.is_empty()) {
            Some(model) => Ok((peek, model)),
            None => Err(PeekError::NoModel),
        }
    }

    /// Whether the client asked for a stream.
    pub fn streams(&self) -> bool {
        self.stream == Some(true)
    }

    /// The affinity key: the session header's value, else the prompt
    /// prefix described in the module docs. `None` when the request has
    /// neither (least load alone decides).
    pub fn affinity_key(&self, session: Option<&str>, prefix_bytes: usize) -> Option<[u8; 32]> {
        if let Some(key) = session_key(session) {
            return Some(key);
        }
        let mut h = Sha256::new();
        if let Some(messages) = &self.messages {
            let mut any = false;
            for m in messages {
                let role = m.role.as_deref().unwrap_or("");
                h.update(role.as_bytes());
                h.update(b"\0");
                if let Some(c) = &m.content {
                    h.update(c.to_string().as_bytes());
                }
                h.update(b"\0");
                any = true;
                if role == "user" {
                    break;
                }
            }
            return any.then(|| h.finalize().into());
        }
        let prompt = match self.prompt.as_ref()? {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) => match items.first()? {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            _ => return None,
        };
        if prompt.is_empty() {
            return None;
        }
        h.update(b"prompt\0");
        h.update(&prompt.as_bytes()[..prompt.len().min(prefix_bytes)]);
        Some(h.finalize().into())
    }
}

/// The affinity key of a session header alone.
pub fn session_key(session: Option<&str>) -> Option<[u8; 32]> {
    let s = session.filter(|s| !s.is_empty())?;
    let mut h = Sha256::new();
    h.update(b"session\0");
    h.update(s.as_bytes());
    Some(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peek(v: serde_json::Value) -> Peek {
        Peek::parse(v.to_string().as_bytes()).expect("parses").0
    }

    #[test]
    fn a_conversation_keeps_its_key_from_turn_to_turn() {
        let first = peek(serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ]}));
        let third = peek(
            serde_json::json!({"model": "m", "stream": true, "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": "How are you?"},
            ]}),
        );
        let other = peek(serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Bonjour"},
        ]}));
        let k = |p: &Peek| p.affinity_key(None, 1024);
        assert!(k(&first).is_some());
        assert_eq!(k(&first), k(&third));
        assert_ne!(k(&first), k(&other));
        assert!(third.streams() && !first.streams());
        assert_ne!(
            first.affinity_key(Some("s1"), 1024),
            k(&first),
            "the session header wins"
        );
        assert_eq!(
            first.affinity_key(Some("s1"), 1024),
            other.affinity_key(Some("s1"), 1024)
        );
    }

    #[test]
    fn a_completion_prompt_keys_by_its_prefix() {
        let a = peek(serde_json::json!({"model": "m", "prompt": "0123456789 tail one"}));
        let b = peek(serde_json::json!({"model": "m", "prompt": ["0123456789 tail two"]}));
        assert_eq!(a.affinity_key(None, 10), b.affinity_key(None, 10));
        assert_ne!(a.affinity_key(None, 64), b.affinity_key(None, 64));
        let none = peek(serde_json::json!({"model": "m"}));
        assert_eq!(none.affinity_key(None, 10), None);
    }

    #[test]
    fn a_body_without_a_model_or_not_json_is_refused() {
        assert!(matches!(
            Peek::parse(br#"{"prompt": "x"}"#),
            Err(PeekError::NoModel)
        ));
        assert!(matches!(Peek::parse(b"[1, 2"), Err(PeekError::Json(_))));
        assert!(matches!(
            Peek::parse(br#"{"model": 7}"#),
            Err(PeekError::Json(_))
        ));
    }
}
