//! Token ids back to bytes: per-token pieces, whole-sequence detokenization
//! with llama.cpp's clean-up rules, and a streaming UTF-8 decoder for SSE.

use crate::vocab::{Attr, TokenId, Vocab, VocabKind};
use std::collections::HashMap;

/// The bytes of every token with special tokens rendered, computed once.
pub(crate) fn build_pieces(vocab: &Vocab) -> Vec<Box<[u8]>> {
    let table = crate::unicode::byte_to_char_table();
    let char_to_byte: HashMap<char, u8> = (0..=255u8).map(|b| (table[b as usize], b)).collect();
    vocab
        .tokens
        .iter()
        .map(|t| {
            let a = t.attr;
            let bytes: Vec<u8> = if a.any(Attr::UNKNOWN | Attr::CONTROL | Attr::USER_DEFINED) {
                t.text.as_bytes().to_vec()
            } else if a.any(Attr::NORMAL) {
                match vocab.kind {
                    VocabKind::Spm => t.text.replace('▁', " ").into_bytes(),
                    VocabKind::Bpe if vocab.escape_whitespaces => {
                        t.text.replace('▁', " ").into_bytes()
                    }
                    VocabKind::Bpe => byte_decode(&t.text, &char_to_byte),
                }
            } else if a.any(Attr::BYTE) {
                t.text
                    .get(3..5)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .map(|b| vec![b])
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            bytes.into_boxed_slice()
        })
        .collect()
}

/// Maps GPT-2 byte characters back to bytes. A character outside the table
/// is kept visible rather than dropped, marked the way llama.cpp marks it.
fn byte_decode(text: &str, char_to_byte: &HashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte.get(&c) {
            Some(&b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// The bytes of `ids` joined, as llama.cpp's `detokenize`: with
/// `remove_special`, a leading BOS and trailing EOS the tokenizer would add
/// are dropped; with `unparse_special`, control tokens are rendered; the
/// leading space an SPM tokenizer prefixes is removed; and, for vocabularies
/// that ask for it, spaces before punctuation and contractions are cleaned.
pub(crate) fn detokenize(
    vocab: &Vocab,
    pieces: &[Box<[u8]>],
    mut ids: &[TokenId],
    remove_special: bool,
    unparse_special: bool,
) -> Vec<u8> {
    let mut remove_space = vocab.add_space_prefix;
    if remove_special
        && vocab.add_bos
        && ids.first().is_some_and(|&id| Some(id) == vocab.special.bos)
    {
        remove_space = false;
        ids = &ids[1..];
    }
    if remove_special
        && vocab.add_eos
        && ids.last().is_some_and(|&id| Some(id) == vocab.special.eos)
    {
        ids = &ids[..ids.len() - 1];
    }
    let mut text = Vec::new();
    for &id in ids {
        let mut piece = piece(vocab, pieces, id, unparse_special);
        if remove_space {
            if let Some(rest) = piece.strip_prefix(b" ") {
                piece = rest;
            }
            remove_space = false;
        }
        text.extend_from_slice(piece);
    }
    if vocab.clean_spaces {
        clean_spaces(&mut text);
    }
    text
}

/// One token's bytes; control and unknown tokens are empty unless `special`.
pub(crate) fn piece<'a>(
    vocab: &Vocab,
    pieces: &'a [Box<[u8]>],
    id: TokenId,
    special: bool,
) -> &'a [u8] {
    if !special && vocab.attr(id).any(Attr::UNKNOWN | Attr::CONTROL) {
        return &[];
    }
    pieces.get(id as usize).map_or(&[], |p| p)
}

/// llama.cpp's three clean-up passes: drop the space before `?!.,`, around
/// a lone apostrophe, and before the contractions `'s 'm 're 've`. Ported
/// as in-place compactions over one buffer, because later checks read bytes
/// the earlier ones rewrote.
fn clean_spaces(text: &mut Vec<u8>) {
    let t = text;
    // First pass: " ?", " !", " .", " ,".
    let n = t.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);

    // Second pass: " ' " loses both spaces.
    let n = t.len();
    let mut total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = t[i];
        if x == b'\'' && i + 1 < n && t[i - 1] == b' ' && t[i + 1] == b' ' {
            total -= 1;
            i += 1;
            t[i] = 0;
        }
        t[total] = x;
        total += 1;
        i += 1;
    }
    t.truncate(total);

    // Third pass: " 's", " 'm", " 're", " 've" lose the space.
    let n = t.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = t[i + 1];
            let contraction = matches!(x1, b's' | b'm')
                || (i + 2 < n && matches!((x1, t[i + 2]), (b'r', b'e') | (b'v', b'e')));
            if contraction {
                total -= 1;
            }
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
}

/// Turns a stream of token pieces into complete UTF-8 text.
///
/// A token may end in the middle of a code point (byte-fallback tokens, or
/// byte-level BPE splitting an emoji); the decoder holds such a tail until
/// the next piece completes it, so it never emits U+FFFD for valid input.
/// Bytes that can never become valid UTF-8 are replaced by U+FFFD, one per
/// invalid sequence. [`StreamDecoder::finish`] flushes what is left.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token's bytes; returns the text that is now complete (may be
    /// empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix was just validated.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete sequence at the end: wait for more.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whether bytes are held back waiting for the rest of a code point.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: an incomplete tail becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_decoder_holds_partial_code_points() {
        let mut d = StreamDecoder::new();
        let crab = "🦀".as_bytes();
        assert_eq!(d.push(b"a"), "a");
        assert_eq!(d.push(&crab[..1]), "");
        assert_eq!(d.push(&crab[1..3]), "");
        assert!(d.has_pending());
        assert_eq!(d.push(&[crab[3], b'!']), "🦀!");
        assert_eq!(d.push("中".as_bytes()), "中");
        assert_eq!(d.finish(), "");
        // Invalid bytes are replaced; a truncated tail is flushed at the end.
        assert_eq!(d.push(&[0xFF, b'x']), "\u{FFFD}x");
        assert_eq!(d.push(&crab[..2]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }

    #[test]
    fn clean_up_passes() {
        let mut t = b"Hello , world ! it 's a ' test ' and they 're done .".to_vec();
        clean_spaces(&mut t);
        assert_eq!(
            String::from_utf8(t).expect("utf8"),
            "Hello, world! it's a'test'and they're done."
        );
    }
}
