//! Chat `messages`: a non-empty array of `{role, content}`, where `content`
//! is a string, an array of text parts (`{"type": "text", "text": ...}`,
//! joined by newlines, as OpenAI clients send them), or null (an assistant
//! turn with nothing to say). The first bad message is reported, by index.

use crate::validate::{Field, Object, Violations};
use serde::Deserialize;
use worker_common::job::ChatMessage;

/// Roles a chat template understands.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

const CONSTRAINT: &str = "a non-empty array of {role, content}";

/// `messages` as it came.
pub type MessagesField = Option<Field<Vec<Field<Object<MessageBody>>>>>;

/// One message as it came.
#[derive(Debug, Deserialize)]
pub struct MessageBody {
    role: Option<Field<String>>,
    content: Option<Field<Content>>,
}

/// A message's content: text, or a list of parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Field<Object<Part>>>),
}

/// One content part as it came.
#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: Option<Field<String>>,
    text: Option<Field<String>>,
}

/// The messages, or none when they are invalid (recorded in `v`).
pub fn messages(v: &mut Violations, field: MessagesField) -> Vec<ChatMessage> {
    let Some(list) = field.and_then(Field::typed).filter(|list| !list.is_empty()) else {
        v.fail(
            "messages",
            CONSTRAINT,
            "messages must be a non-empty array of {role, content}",
        );
        return Vec::new();
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.into_iter().enumerate() {
        match m.typed().ok_or_else(no_role).and_then(|m| message(m.0)) {
            Ok(msg) => out.push(msg),
            Err(why) => {
                v.fail("messages", CONSTRAINT, format!("messages[{i}]: {why}"));
                return Vec::new();
            }
        }
    }
    out
}

fn no_role() -> String {
    "role must be a string".into()
}

fn message(m: MessageBody) -> Result<ChatMessage, String> {
    let role = m.role.and_then(Field::typed).ok_or_else(no_role)?;
    if !ROLES.contains(&role.as_str()) {
        return Err(format!("role {role:?} is not one of {}", ROLES.join(", ")));
    }
    let content = match m.content {
        None => String::new(),
        Some(Field::Typed(Content::Text(s))) => s,
        Some(Field::Typed(Content::Parts(parts))) => text_of(parts)?,
        Some(Field::Other(_)) => {
            return Err("content must be a string, an array of text parts or null".into());
        }
    };
    Ok(ChatMessage { role, content })
}

/// The text parts joined by newlines; any other part is refused.
fn text_of(parts: Vec<Field<Object<Part>>>) -> Result<String, String> {
    let mut texts = Vec::with_capacity(parts.len());
    for part in parts {
        let Some(Object(part)) = part.typed() else {
            return Err("each content part needs a type".into());
        };
        match part.kind.and_then(Field::typed).as_deref() {
            Some("text") => match part.text {
                Some(Field::Typed(t)) => texts.push(t),
                _ => return Err("a text part needs a text string".into()),
            },
            Some(other) => {
                return Err(format!(
                    "content parts of type {other:?} are not supported: this model reads text"
                ));
            }
            None => return Err("each content part needs a type".into()),
        }
    }
    Ok(texts.join("\n"))
}
