//! Cutting special tokens out of the text before the tokenizer runs.
//!
//! Special tokens are matched one at a time, longest first, across every
//! piece of text still unprocessed, as llama.cpp does: a longer special token
//! wins over a shorter one wherever they overlap. Control and unknown tokens
//! are only matched when the caller allows it (`parse_special`);
//! user-defined tokens always are.

use crate::vocab::{Attr, TokenId, Vocab};

/// A piece of the input: raw text still to tokenize, or a token already cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    Text(&'a str),
    Token(TokenId),
}

/// C's `isspace` on one byte, which is what `lstrip`/`rstrip` trim.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// The fragments of `text`: special tokens cut out (control and unknown
/// ones only with `parse_special`, and never where their text overlaps one
/// of the `guarded` byte ranges of `text`: the content of a chat message,
/// which stays plain text where the template's own text is parsed for
/// control tokens), the rest left as text.
pub(crate) fn partition_guarded<'a>(
    vocab: &Vocab,
    text: &'a str,
    parse_special: bool,
    guarded: &[std::ops::Range<usize>],
) -> Vec<Fragment<'a>> {
    let mut fragments = if text.is_empty() {
        Vec::new()
    } else {
        vec![Fragment::Text(text)]
    };
    // Where a slice of `text` starts in it.
    let offset = |piece: &str| piece.as_ptr() as usize - text.as_ptr() as usize;
    for &id in &vocab.special_cache {
        let token = &vocab.tokens[id as usize];
        let control = token.attr.any(Attr::CONTROL | Attr::UNKNOWN);
        if !parse_special && control {
            continue;
        }
        let needle = token.text.as_str();
        if needle.is_empty()
            || !fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)))
        {
            continue;
        }
        let blocked = |start: usize| {
            let end = start + needle.len();
            control && guarded.iter().any(|g| start < g.end && g.start < end)
        };
        let mut next = Vec::with_capacity(fragments.len() + 2);
        for fragment in fragments {
            let Fragment::Text(mut rest) = fragment else {
                next.push(fragment);
                continue;
            };
            let mut from = 0;
            while let Some(found) = rest[from..].find(needle) {
                let pos = from + found;
                if blocked(offset(rest) + pos) {
                    // Plain text here: look again after this occurrence's
                    // first character.
                    from = pos + rest[pos..].chars().next().map_or(1, char::len_utf8);
                    continue;
                }
                let mut left = &rest[..pos];
                if token.attr.any(Attr::LSTRIP) {
                    left = left.trim_end_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
                }
                if !left.is_empty() {
                    next.push(Fragment::Text(left));
                }
                next.push(Fragment::Token(id));
                rest = &rest[pos + needle.len()..];
                if token.attr.any(Attr::RSTRIP) {
                    rest = rest.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
                }
                from = 0;
            }
            if !rest.is_empty() {
                next.push(Fragment::Text(rest));
            }
        }
        fragments = next;
    }
    fragments
}
