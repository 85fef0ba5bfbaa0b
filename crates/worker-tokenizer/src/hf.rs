//! Hugging Face `tokenizer.json` through the `tokenizers` crate, for models
//! that ship one (standalone, or embedded in GGUF as
//! `tokenizer.huggingface.json`).

use crate::error::{Result, TokenizerError};
use crate::unicode::byte_to_char_table;
use crate::vocab::{SpecialTokens, TokenId};
use std::collections::{BTreeSet, HashMap, HashSet};

/// How token strings map back to bytes, read from the JSON's decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceStyle {
    /// GPT-2 byte characters (`ByteLevel` decoder).
    ByteLevel,
    /// `▁` for spaces and `<0xXX>` byte tokens (SentencePiece-style).
    Metaspace,
}

#[derive(Debug)]
pub(crate) struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    pub pieces: Vec<Box<[u8]>>,
    pub special: SpecialTokens,
    pub eog: BTreeSet<TokenId>,
    /// Added tokens marked special: rendered only on request.
    special_ids: HashSet<TokenId>,
}

const BOS_TEXTS: &[&str] = &["<|begin_of_text|>", "<bos>", "<s>", "<|startoftext|>"];
const EOS_TEXTS: &[&str] = &[
    "<|end_of_text|>",
    "<eos>",
    "</s>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
];

impl HfTokenizer {
    pub(crate) fn from_json(json: &str) -> Result<Self> {
        let err = |e: &dyn std::fmt::Display| TokenizerError::HuggingFace(e.to_string());
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes()).map_err(|e| err(&e))?;
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| err(&e))?;
        let decoder = value
            .get("decoder")
            .map(|d| d.to_string())
            .unwrap_or_default();
        let style = if decoder.contains("ByteLevel") {
            PieceStyle::ByteLevel
        } else {
            PieceStyle::Metaspace
        };

        let vocab = inner.get_vocab(true);
        let n = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        // Ids index a table: a few gaps are fine, an id far past the number
        // of tokens (a corrupt or hostile file) would size it by the id.
        if n > vocab.len().saturating_mul(4).saturating_add(1024) {
            return Err(TokenizerError::HuggingFace(format!(
                "token id {} is far past the {} tokens of the vocabulary",
                n - 1,
                vocab.len()
            )));
        }
        let mut texts = vec![String::new(); n];
        for (text, &id) in &vocab {
            texts[id as usize] = text.clone();
        }
        let special_ids: HashSet<TokenId> = inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(&id, _)| id)
            .collect();

        let table = byte_to_char_table();
        let char_to_byte: HashMap<char, u8> = (0..=255u8).map(|b| (table[b as usize], b)).collect();
        let pieces = texts
            .iter()
            .enumerate()
            .map(|(id, text)| {
                let bytes = if special_ids.contains(&(id as TokenId)) {
                    text.as_bytes().to_vec()
                } else {
                    piece_bytes(text, style, &char_to_byte)
                };
                bytes.into_boxed_slice()
            })
            .collect();

        let find = |names: &[&str]| names.iter().find_map(|n| vocab.get(*n).copied());
        let special = SpecialTokens {
            bos: find(BOS_TEXTS),
            eos: find(EOS_TEXTS),
            ..Default::default()
        };
        let eog = EOS_TEXTS
            .iter()
            .filter_map(|n| vocab.get(*n).copied())
            .collect();
        Ok(HfTokenizer {
            inner,
            pieces,
            special,
            eog,
            special_ids,
        })
    }

    /// Uses ids from GGUF metadata where the file has them.
    pub(crate) fn override_special(&mut self, special: &SpecialTokens) {
        let pick = |a: Option<TokenId>, b: Option<TokenId>| a.or(b);
        self.special.bos = pick(special.bos, self.special.bos);
        self.special.eos = pick(special.eos, self.special.eos);
        self.special.eot = pick(special.eot, self.special.eot);
        self.special.eom = pick(special.eom, self.special.eom);
        self.eog.extend(
            [special.eos, special.eot, special.eom]
                .into_iter()
                .flatten(),
        );
    }

    pub(crate) fn encode(&self, text: &str, add_special: bool) -> Result<Vec<TokenId>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| TokenizerError::HuggingFace(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub(crate) fn is_special(&self, id: TokenId) -> bool {
        self.special_ids.contains(&id)
    }

    /// Whether `text` holds the text of an added token marked special.
    pub(crate) fn holds_special_text(&self, text: &str) -> bool {
        self.special_ids.iter().any(|&id| {
            self.pieces
                .get(id as usize)
                .and_then(|p| std::str::from_utf8(p).ok())
                .is_some_and(|p| !p.is_empty() && text.contains(p))
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.pieces.len()
    }
}

fn piece_bytes(text: &str, style: PieceStyle, char_to_byte: &HashMap<char, u8>) -> Vec<u8> {
    match style {
        PieceStyle::ByteLevel => text
            .chars()
            .flat_map(|c| match char_to_byte.get(&c) {
                Some(&b) => vec![b],
                None => c.to_string().into_bytes(),
            })
            .collect(),
        PieceStyle::Metaspace => {
            let hex = text
                .strip_prefix("<0x")
                .and_then(|r| r.strip_suffix('>'))
                .filter(|h| h.len() == 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => vec![b],
                None => text.replace('▁', " ").into_bytes(),
            }
        }
    }
}
