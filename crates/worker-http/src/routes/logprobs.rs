//! The wire forms of token log-probabilities.
//!
//! - Chat completions and `/execute`: a list of `{token, logprob, bytes,
//!   top_logprobs: [{token, logprob, bytes}]}`, one per token.
//! - Completions (the legacy form): parallel lists `tokens`,
//!   `token_logprobs`, `top_logprobs` (an object from token text to
//!   log-probability per position) and `text_offset` (where each token's
//!   text starts in the completion, in characters of the text sent).
//!
//! A log-probability that is not a number (a row of NaN logits) is written
//! as `null`, since JSON has no NaN.

use serde_json::{Map, Value, json};
use worker_common::job::{TokenLogprob, TokenText};

fn number(x: f32) -> Value {
    if x.is_finite() {
        json!(x)
    } else if x == f32::NEG_INFINITY {
        // Impossible tokens: OpenAI's floor, as clients expect a number.
        json!(-9999.0)
    } else {
        Value::Null
    }
}

fn text(t: &TokenText) -> Value {
    json!({ "token": t.token, "logprob": number(t.logprob), "bytes": t.bytes })
}

/// The chat form of `lps`.
pub fn chat(lps: &[TokenLogprob]) -> Value {
    Value::Array(
        lps.iter()
            .map(|lp| {
                let mut e = text(&lp.chosen);
                e["top_logprobs"] = Value::Array(lp.top.iter().map(text).collect());
                e
            })
            .collect(),
    )
}

/// The legacy completions form, chunk by chunk: keeps the text sent so
/// far to turn the tokens' byte offsets into character offsets.
#[derive(Debug, Default)]
pub struct Completion {
    text: String,
    /// A byte offset into `text` at a character boundary, and the
    /// characters before it (offsets only grow, so counting resumes there).
    counted: (usize, usize),
}

impl Completion {
    /// The characters of the text before byte `offset` (clamped to the
    /// text, and back to a character boundary).
    fn chars_before(&mut self, offset: usize) -> usize {
        let mut b = offset.min(self.text.len());
        while !self.text.is_char_boundary(b) {
            b -= 1;
        }
        let (from, chars) = self.counted;
        let chars = if b >= from {
            chars + self.text[from..b].chars().count()
        } else {
            self.text[..b].chars().count()
        };
        self.counted = (b, chars);
        chars
    }

    /// The form of `lps`, which came with `text` (the text after what was
    /// already given).
    pub fn chunk(&mut self, text: &str, lps: &[TokenLogprob]) -> Value {
        self.text.push_str(text);
        let mut tokens = Vec::with_capacity(lps.len());
        let mut logprobs = Vec::with_capacity(lps.len());
        let mut tops = Vec::with_capacity(lps.len());
        let mut offsets = Vec::with_capacity(lps.len());
        for lp in lps {
            tokens.push(json!(lp.chosen.token));
            logprobs.push(number(lp.chosen.logprob));
            let mut top = Map::new();
            for t in &lp.top {
                // Two tokens with one text (rare) keep the likelier.
                top.entry(t.token.clone())
                    .or_insert_with(|| number(t.logprob));
            }
            tops.push(Value::Object(top));
            offsets.push(json!(self.chars_before(lp.offset)));
        }
        json!({
            "tokens": tokens,
            "token_logprobs": logprobs,
            "top_logprobs": tops,
            "text_offset": offsets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(token: &str, logprob: f32, top: &[(&str, f32)], offset: usize) -> TokenLogprob {
        let t = |s: &str, l: f32| TokenText {
            id: 0,
            token: s.into(),
            bytes: s.as_bytes().to_vec(),
            logprob: l,
        };
        TokenLogprob {
            chosen: t(token, logprob),
            top: top.iter().map(|&(s, l)| t(s, l)).collect(),
            offset,
        }
    }

    #[test]
    fn both_forms() {
        let lps = [
            lp("Hé", -0.5, &[("Hé", -0.5), ("Ho", -1.5)], 0),
            lp(" x", f32::NEG_INFINITY, &[(" y", -0.1), (" y", -0.2)], 3),
        ];
        let c = chat(&lps);
        assert_eq!(c[0]["token"], "Hé");
        assert_eq!(c[0]["bytes"], json!([72, 195, 169]));
        assert_eq!(c[0]["top_logprobs"][1]["token"], "Ho");
        assert_eq!(c[1]["logprob"], json!(-9999.0));
        let mut form = Completion::default();
        let first = form.chunk("Hé", &lps[..1]);
        let second = form.chunk(" x", &lps[1..]);
        assert_eq!(first["text_offset"], json!([0]));
        assert_eq!(second["text_offset"], json!([2]));
        assert_eq!(second["top_logprobs"][0], json!({ " y": -0.1f32 }));
        assert_eq!(first["token_logprobs"], json!([-0.5]));
        assert_eq!(number(f32::NAN), Value::Null);
    }
}
