//! Chat templates: the model's `tokenizer.chat_template` (Jinja) rendered
//! with minijinja, or a documented default when the model has none.
//!
//! Templates written for Python's Jinja call string methods (`strip`,
//! `startswith`, …), `raise_exception` and `strftime_now`; minijinja's
//! Python-compatibility layer and those two functions make them work. A
//! model's own template renders with `trim_blocks` and `lstrip_blocks` on,
//! as the tooling those templates are written for renders them (a newline
//! after a block tag and the indentation before one are not output).
//!
//! Defaults, chosen by the vocabulary when the file has no template:
//! - `<start_of_turn>` in the vocabulary: the Gemma turn format (a system
//!   message is prepended to the first user turn; `assistant` is `model`);
//! - `<|turn>`: the Gemma 4 turn format (a leading system or developer
//!   message is a `system` turn; `assistant` is `model`; the generation
//!   prompt opens the model's turn with an empty thought channel, which is
//!   how the family's template asks for an answer without reasoning);
//! - `<|im_start|>`: ChatML;
//! - `<|start_header_id|>`: the Llama 3 header format;
//! - anything else: plain `role: content` lines ending with `assistant:`.
//!
//! (The built-in templates use no whitespace-trimming tags: their newlines
//! are content.)

use crate::error::{Result, TokenizerError};
use minijinja::{Environment, Error, ErrorKind, context};
use std::ops::Range;

pub use worker_common::job::ChatMessage;

const GEMMA: &str = "{{ bos_token }}\
{% set ns = namespace(system='') %}\
{% for m in messages %}\
{% if m.role == 'system' %}{% set ns.system = ns.system ~ m.content ~ '\n\n' %}\
{% else %}\
<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n\
{% if m.role == 'user' and ns.system %}{{ ns.system }}{% set ns.system = '' %}{% endif %}\
{{ m.content | trim }}<end_of_turn>\n\
{% endif %}\
{% endfor %}\
{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

const GEMMA4: &str = "{{ bos_token }}\
{% set lead = messages and messages[0].role in ['system', 'developer'] %}\
{% if lead %}<|turn>system\n{{ messages[0].content | trim }}<turn|>\n{% endif %}\
{% for m in (messages[1:] if lead else messages) %}\
<|turn>{{ 'model' if m.role == 'assistant' else m.role }}\n{{ m.content | trim }}<turn|>\n\
{% endfor %}\
{% if add_generation_prompt %}<|turn>model\n<|channel>thought\n<channel|>{% endif %}";

const CHATML: &str = "{% for m in messages %}\
<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

const LLAMA3: &str = "{{ bos_token }}\
{% for m in messages %}\
<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>\
{% endfor %}\
{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

const PLAIN: &str = "{% for m in messages %}\
{{ m.role }}: {{ m.content }}\n\
{% endfor %}\
{% if add_generation_prompt %}assistant:{% endif %}";

/// The render-context variable `strftime_now` reads the time from.
const NOW_VAR: &str = "llorch_now_secs";

/// A compiled chat template with the special-token texts it may use.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    is_default: bool,
}

impl ChatTemplate {
    /// Compiles `source`, or the default for a vocabulary that `has_token`
    /// describes when `source` is `None`.
    pub fn new(
        source: Option<&str>,
        bos: &str,
        eos: &str,
        has_token: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        let is_default = source.is_none();
        let mut env = Environment::new();
        if !is_default {
            env.set_trim_blocks(true);
            env.set_lstrip_blocks(true);
        }
        let source = match source {
            Some(s) => s.to_string(),
            None if has_token("<start_of_turn>") => GEMMA.to_string(),
            None if has_token("<|turn>") => GEMMA4.to_string(),
            None if has_token("<|im_start|>") => CHATML.to_string(),
            None if has_token("<|start_header_id|>") => LLAMA3.to_string(),
            None => PLAIN.to_string(),
        };
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function(
            "strftime_now",
            |state: &minijinja::State<'_, '_>, format: String| -> String {
                let secs = state
                    .lookup(NOW_VAR)
                    .and_then(|v| i64::try_from(v).ok())
                    .unwrap_or_else(crate::strftime::now_secs);
                crate::strftime::strftime(&format, secs)
            },
        );
        env.add_template_owned("chat", source)
            .map_err(|e| TokenizerError::ChatTemplate(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
            is_default,
        })
    }

    /// Whether this is a built-in default (the model has no template).
    pub fn is_default(&self) -> bool {
        self.is_default
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where
    /// the assistant's reply begins.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_at(messages, add_generation_prompt, crate::strftime::now_secs())
    }

    /// [`ChatTemplate::render`] as if the time were `secs` after the epoch
    /// (what `strftime_now` formats).
    pub fn render_at(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        secs: i64,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| TokenizerError::ChatTemplate(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
            llorch_now_secs => secs,
        })
        .map_err(|e| TokenizerError::ChatTemplate(e.to_string()))
    }
}

/// Marks a message's content in a render made to find where contents go:
/// private-use characters around the message's index.
const MARK_OPEN: char = '\u{F0000}';
const MARK_CLOSE: char = '\u{F0001}';

impl ChatTemplate {
    /// Renders `messages` and says where each message's content lies in the
    /// text: the template is rendered once with the contents and once with
    /// a marker in place of each, and the markers' places are taken only
    /// when putting the contents (as given, or trimmed, as templates often
    /// do) at them gives exactly the first render. `None`: the template
    /// does more with a content than place it (or a content holds the
    /// markers' characters), so its place is not known.
    pub fn render_guarded(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<(String, Option<Vec<Range<usize>>>)> {
        let secs = crate::strftime::now_secs();
        let text = self.render_at(messages, add_generation_prompt, secs)?;
        if messages
            .iter()
            .any(|m| m.content.contains([MARK_OPEN, MARK_CLOSE]))
        {
            return Ok((text, None));
        }
        let marked: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ChatMessage {
                content: format!("{MARK_OPEN}{i}{MARK_CLOSE}"),
                ..m.clone()
            })
            .collect();
        let skeleton = self.render_at(&marked, add_generation_prompt, secs)?;
        for trim in [false, true] {
            if let Some((filled, spans)) = fill_marks(&skeleton, messages, trim)
                && filled == text
            {
                return Ok((text, Some(spans)));
            }
        }
        Ok((text, None))
    }
}

/// `skeleton` with each marker replaced by its message's content (trimmed
/// with `trim`), and the byte range each content takes; `None` when a
/// marker is malformed.
fn fill_marks(
    skeleton: &str,
    messages: &[ChatMessage],
    trim: bool,
) -> Option<(String, Vec<Range<usize>>)> {
    let mut out = String::with_capacity(skeleton.len());
    let mut spans = Vec::new();
    let mut rest = skeleton;
    while let Some(open) = rest.find(MARK_OPEN) {
        out.push_str(&rest[..open]);
        let after = &rest[open + MARK_OPEN.len_utf8()..];
        let close = after.find(MARK_CLOSE)?;
        let index: usize = after[..close].parse().ok()?;
        let content = &messages.get(index)?.content;
        let content = if trim { content.trim() } else { content };
        spans.push(out.len()..out.len() + content.len());
        out.push_str(content);
        rest = &after[close + MARK_CLOSE.len_utf8()..];
    }
    out.push_str(rest);
    Some((out, spans))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs() -> Vec<ChatMessage> {
        vec![
            ChatMessage {
                role: "system".into(),
                content: "Be brief.".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: " Hi ".into(),
            },
        ]
    }

    #[test]
    fn gemma_default() {
        let t = ChatTemplate::new(None, "<bos>", "<eos>", |t| t == "<start_of_turn>").expect("ok");
        assert!(t.is_default());
        assert_eq!(
            t.render(&msgs(), true).expect("render"),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn gemma4_default() {
        let t = ChatTemplate::new(None, "<bos>", "<eos>", |t| t == "<|turn>").expect("ok");
        assert!(t.is_default());
        assert_eq!(
            t.render(&msgs(), true).expect("render"),
            "<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n<|channel>thought\n<channel|>"
        );
        assert_eq!(
            t.render(&msgs()[1..], false).expect("render"),
            "<bos><|turn>user\nHi<turn|>\n"
        );
        assert_eq!(t.render(&[], false).expect("render"), "<bos>");
    }

    #[test]
    fn chatml_default_and_custom_templates() {
        let t = ChatTemplate::new(None, "", "", |t| t == "<|im_start|>").expect("ok");
        assert_eq!(
            t.render(&msgs()[1..], true).expect("render"),
            "<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\n"
        );
        let custom = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}[{{ m.content.strip() }}]{% endfor %}";
        let t = ChatTemplate::new(Some(custom), "", "", |_| false).expect("ok");
        assert_eq!(t.render(&msgs()[1..], false).expect("render"), "[Hi]");
        let err = t.render(&msgs(), false).expect_err("raises");
        assert!(err.to_string().contains("no system"), "{err}");
        assert!(ChatTemplate::new(Some("{% for %}"), "", "", |_| false).is_err());
    }
}
