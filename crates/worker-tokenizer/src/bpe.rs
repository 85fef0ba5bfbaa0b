//! Merge-rank BPE: each pre-tokenized word starts as single characters and
//! the adjacent pair with the lowest merge rank is merged until none is left.
//! A priority queue keeps this O(n log n) per word, never a rescan.

use crate::pretok::PreTokenizer;
use crate::vocab::{TokenId, Vocab};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Debug, Clone, Copy)]
struct Symbol {
    prev: Option<usize>,
    next: Option<usize>,
    start: usize,
    len: usize,
}

#[derive(Debug, PartialEq, Eq)]
struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    /// Where the merged text starts in the word, and its length.
    start: usize,
    size: usize,
}

// Lowest rank first; on a tie, the leftmost pair.
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.left.cmp(&self.left))
    }
}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Appends the tokens of `text` to `out`.
pub(crate) fn tokenize(vocab: &Vocab, pre: &PreTokenizer, text: &str, out: &mut Vec<TokenId>) {
    let byte_encode = vocab.pre_config.is_none_or(|c| c.byte_encode);
    let gemma4 = vocab.model == "gemma4";
    for word in pre.split(text) {
        let whole = (vocab.ignore_merges
            || (gemma4 && !word.is_empty() && word.bytes().all(|b| b == b'\n')))
            && vocab.id(&word).is_some();
        let symbols = if whole {
            vec![Symbol {
                prev: None,
                next: None,
                start: 0,
                len: word.len(),
            }]
        } else {
            merge(vocab, &word)
        };
        for s in symbols.iter().filter(|s| s.len > 0) {
            let piece = &word[s.start..s.start + s.len];
            if let Some(id) = vocab.id(piece) {
                out.push(id);
                continue;
            }
            // Not a token: each byte on its own, as far as the vocabulary
            // has tokens for them.
            for &b in piece.as_bytes() {
                let id = if byte_encode {
                    std::str::from_utf8(&[b]).ok().and_then(|s| vocab.id(s))
                } else {
                    vocab.id(&format!("<0x{b:02X}>"))
                };
                out.extend(id);
            }
        }
    }
}

fn merge(vocab: &Vocab, word: &str) -> Vec<Symbol> {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
    for (i, (start, c)) in word.char_indices().enumerate() {
        let len = c.len_utf8();
        symbols.push(Symbol {
            prev: i.checked_sub(1),
            next: (start + len < word.len()).then_some(i + 1),
            start,
            len,
        });
    }
    let mut queue = BinaryHeap::new();
    let try_add = |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, l: usize, r: usize| {
        let (a, b) = (symbols[l], symbols[r]);
        let left = &word[a.start..a.start + a.len];
        let right = &word[b.start..b.start + b.len];
        if let Some(rank) = vocab.merges.rank(left, right) {
            queue.push(Bigram {
                rank,
                left: l,
                right: r,
                start: a.start,
                size: a.len + b.len,
            });
        }
    };
    for i in 1..symbols.len() {
        try_add(&symbols, &mut queue, i - 1, i);
    }
    while let Some(bigram) = queue.pop() {
        let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
        // A pair is stale once either side has changed since it was queued.
        if l.len == 0
            || r.len == 0
            || l.start != bigram.start
            || l.len + r.len != bigram.size
            || l.start + l.len != r.start
        {
            continue;
        }
        symbols[bigram.left].len += r.len;
        symbols[bigram.right].len = 0;
        symbols[bigram.left].next = r.next;
        if let Some(n) = r.next {
            symbols[n].prev = Some(bigram.left);
        }
        if let Some(p) = symbols[bigram.left].prev {
            try_add(&symbols, &mut queue, p, bigram.left);
        }
        if let Some(n) = symbols[bigram.left].next {
            try_add(&symbols, &mut queue, bigram.left, n);
        }
    }
    symbols
}
