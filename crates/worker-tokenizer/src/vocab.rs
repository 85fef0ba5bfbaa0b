//! The vocabulary as llama.cpp builds it from GGUF metadata: token texts,
//! scores and attributes, special ids, and the flags that steer encoding.

use crate::error::{Result, TokenizerError};
use crate::pretok::{PreConfig, SUPPORTED_PRE, pre_config};
use crate::special_ids;
use std::collections::{BTreeSet, HashMap};
use worker_gguf::Metadata;

/// A token id.
pub type TokenId = u32;

/// Token attributes (llama.cpp's `llama_token_attr`), as bit flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attr(u16);

#[allow(missing_docs)]
impl Attr {
    pub const UNDEFINED: Attr = Attr(0);
    pub const UNKNOWN: Attr = Attr(1 << 0);
    pub const UNUSED: Attr = Attr(1 << 1);
    pub const NORMAL: Attr = Attr(1 << 2);
    pub const CONTROL: Attr = Attr(1 << 3);
    pub const USER_DEFINED: Attr = Attr(1 << 4);
    pub const BYTE: Attr = Attr(1 << 5);
    pub const LSTRIP: Attr = Attr(1 << 7);
    pub const RSTRIP: Attr = Attr(1 << 8);

    /// Whether any flag of `other` is set.
    pub fn any(self, other: Attr) -> bool {
        self.0 & other.0 != 0
    }

    pub(crate) fn set(&mut self, other: Attr, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }

    /// The attribute a GGUF `tokenizer.ggml.token_type` value stands for.
    fn from_token_type(t: i32) -> Attr {
        match t {
            1 => Attr::NORMAL,
            2 => Attr::UNKNOWN,
            3 => Attr::CONTROL,
            4 => Attr::USER_DEFINED,
            5 => Attr::UNUSED,
            6 => Attr::BYTE,
            _ => Attr::UNDEFINED,
        }
    }
}

impl std::ops::BitOr for Attr {
    type Output = Attr;
    fn bitor(self, rhs: Attr) -> Attr {
        Attr(self.0 | rhs.0)
    }
}

/// The two token algorithms llorch implements natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece-style BPE over scores (`tokenizer.ggml.model = llama`).
    Spm,
    /// Merge-rank BPE (`gpt2`, and `gemma4`'s SPM-style BPE).
    Bpe,
}

#[derive(Debug, Clone)]
pub(crate) struct TokenData {
    pub text: String,
    pub score: f32,
    pub attr: Attr,
}

/// The special token ids of a vocabulary; `None` where it has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SpecialTokens {
    pub bos: Option<TokenId>,
    pub eos: Option<TokenId>,
    pub eot: Option<TokenId>,
    pub eom: Option<TokenId>,
    pub unk: Option<TokenId>,
    pub sep: Option<TokenId>,
    pub pad: Option<TokenId>,
    pub mask: Option<TokenId>,
    pub fim_pre: Option<TokenId>,
    pub fim_suf: Option<TokenId>,
    pub fim_mid: Option<TokenId>,
    pub fim_pad: Option<TokenId>,
    pub fim_rep: Option<TokenId>,
    pub fim_sep: Option<TokenId>,
}

/// BPE merge ranks, keyed by interned symbol ids so a lookup allocates
/// nothing: `rank(left, right)` is the merge's line in `tokenizer.ggml.merges`.
#[derive(Debug, Default)]
pub(crate) struct Merges {
    symbols: HashMap<String, u32>,
    ranks: HashMap<(u32, u32), u32>,
}

impl Merges {
    fn new(lines: &[String]) -> Self {
        let mut m = Merges::default();
        for (rank, line) in lines.iter().enumerate() {
            // The separator is the first space after the first character, so
            // a left side that is itself a space survives.
            let split = line.as_bytes().iter().skip(1).position(|&b| b == b' ');
            let (left, right) = match split {
                Some(p) => (&line[..p + 1], &line[p + 2..]),
                None => ("", ""),
            };
            let l = m.intern(left);
            let r = m.intern(right);
            // The first occurrence of a pair wins.
            m.ranks.entry((l, r)).or_insert(rank as u32);
        }
        m
    }

    fn intern(&mut self, s: &str) -> u32 {
        let next = self.symbols.len() as u32;
        *self.symbols.entry(s.to_string()).or_insert(next)
    }

    pub(crate) fn rank(&self, left: &str, right: &str) -> Option<u32> {
        let l = *self.symbols.get(left)?;
        let r = *self.symbols.get(right)?;
        self.ranks.get(&(l, r)).copied()
    }
}

/// A vocabulary loaded from GGUF metadata.
#[derive(Debug)]
pub(crate) struct Vocab {
    pub kind: VocabKind,
    pub model: String,
    pub pre: Option<String>,
    pub tokens: Vec<TokenData>,
    pub ids: HashMap<String, TokenId>,
    pub special: SpecialTokens,
    pub eog: BTreeSet<TokenId>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub escape_whitespaces: bool,
    pub clean_spaces: bool,
    pub ignore_merges: bool,
    pub pre_config: Option<PreConfig>,
    pub merges: Merges,
    /// Control, user-defined and unknown tokens, longest text first: the
    /// order in which they are cut out of the text.
    pub special_cache: Vec<TokenId>,
}

impl Vocab {
    pub(crate) fn from_metadata(meta: &Metadata) -> Result<Self> {
        let model = meta.get_str("tokenizer.ggml.model")?.to_string();
        let mut pre = meta
            .get_opt::<&str>("tokenizer.ggml.pre")?
            .map(str::to_string);

        let (kind, pre_cfg, mut special) = match model.as_str() {
            "llama" => (
                VocabKind::Spm,
                None,
                SpecialTokens {
                    bos: Some(1),
                    eos: Some(2),
                    unk: Some(0),
                    ..Default::default()
                },
            ),
            "gpt2" | "gemma4" => {
                if model == "gemma4" {
                    pre = Some("gemma4".to_string());
                }
                let name = pre
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .unwrap_or("default");
                let cfg = pre_config(name).ok_or_else(|| TokenizerError::UnsupportedPre {
                    pre: name.to_string(),
                    supported: SUPPORTED_PRE.join(", "),
                })?;
                let special = if model == "gpt2" {
                    SpecialTokens {
                        bos: Some(11),
                        eos: Some(11),
                        ..Default::default()
                    }
                } else {
                    SpecialTokens::default()
                };
                (VocabKind::Bpe, Some(cfg), special)
            }
            _ => return Err(TokenizerError::UnsupportedModel { model }),
        };

        let merges = match kind {
            VocabKind::Bpe => Merges::new(meta.get_str_array("tokenizer.ggml.merges")?),
            VocabKind::Spm => Merges::default(),
        };

        let (mut add_bos, add_eos, mut add_space_prefix, escape_whitespaces, clean_spaces) =
            match pre_cfg {
                Some(c) => (
                    c.add_bos,
                    false,
                    false,
                    c.escape_whitespaces,
                    c.clean_spaces,
                ),
                None => (true, false, true, false, false),
            };
        if let Some(v) = meta.get_opt::<bool>("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }

        let tokens = read_tokens(meta)?;
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if ids.insert(t.text.clone(), i as TokenId).is_some() {
                return Err(TokenizerError::InvalidVocab(format!(
                    "token text {:?} appears twice (again at id {i})",
                    t.text
                )));
            }
        }

        special_ids::apply_keys(meta, tokens.len(), &mut special)?;
        let add_bos_key = meta.get_opt::<bool>("tokenizer.ggml.add_bos_token")?;
        let add_eos_key = meta.get_opt::<bool>("tokenizer.ggml.add_eos_token")?;
        add_bos = add_bos_key.unwrap_or(add_bos);
        let add_eos = add_eos_key.unwrap_or(add_eos);
        if model == "gemma4" {
            // llama.cpp always adds BOS for Gemma 4, whatever the file says.
            add_bos = true;
        }

        let mut vocab = Vocab {
            kind,
            model,
            pre,
            tokens,
            ids,
            special,
            eog: BTreeSet::new(),
            add_bos,
            add_eos,
            add_space_prefix,
            escape_whitespaces,
            clean_spaces,
            ignore_merges: pre_cfg.is_some_and(|c| c.ignore_merges),
            pre_config: pre_cfg,
            merges,
            special_cache: Vec::new(),
        };
        special_ids::detect_by_text(&mut vocab);
        vocab.special_cache = special_cache(&vocab.tokens);
        let name = meta.get_opt::<&str>("general.name")?.unwrap_or_default();
        special_ids::model_attrs(&mut vocab, name);
        Ok(vocab)
    }

    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    pub(crate) fn id(&self, text: &str) -> Option<TokenId> {
        self.ids.get(text).copied()
    }

    pub(crate) fn attr(&self, id: TokenId) -> Attr {
        self.tokens
            .get(id as usize)
            .map_or(Attr::UNDEFINED, |t| t.attr)
    }

    /// The token for one byte in `<0xXX>` form, falling back to the byte
    /// itself as text (SPM byte fallback).
    pub(crate) fn byte_token(&self, byte: u8) -> Option<TokenId> {
        self.id(&format!("<0x{byte:02X}>"))
            .or_else(|| std::str::from_utf8(&[byte]).ok().and_then(|s| self.id(s)))
    }
}

fn read_tokens(meta: &Metadata) -> Result<Vec<TokenData>> {
    let texts = meta.get_str_array("tokenizer.ggml.tokens")?;
    let n = texts.len();
    let scores: Option<Vec<f32>> = match meta.get("tokenizer.ggml.scores") {
        None => None,
        Some(_) => Some(match meta.get_f32_array("tokenizer.ggml.scores") {
            Ok(s) => s.to_vec(),
            Err(_) => meta
                .get_i32_array("tokenizer.ggml.scores")?
                .iter()
                .map(|&s| s as f32)
                .collect(),
        }),
    };
    let types = meta.get_opt::<&[i32]>("tokenizer.ggml.token_type")?;
    if scores.as_ref().is_some_and(|s| s.len() < n) {
        return Err(TokenizerError::InvalidVocab(
            "tokenizer.ggml.scores has fewer entries than tokenizer.ggml.tokens".into(),
        ));
    }
    if types.is_some_and(|t| t.len() < n) {
        return Err(TokenizerError::InvalidVocab(
            "tokenizer.ggml.token_type has fewer entries than tokenizer.ggml.tokens".into(),
        ));
    }
    Ok(texts
        .iter()
        .enumerate()
        .map(|(i, text)| TokenData {
            text: if text.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                text.clone()
            },
            score: scores.as_ref().map_or(0.0, |s| s[i]),
            attr: types.map_or(Attr::NORMAL, |t| Attr::from_token_type(t[i])),
        })
        .collect())
}

fn special_cache(tokens: &[TokenData]) -> Vec<TokenId> {
    let mut cache: Vec<TokenId> = (0..tokens.len() as TokenId)
        .filter(|&id| {
            tokens[id as usize]
                .attr
                .any(Attr::CONTROL | Attr::USER_DEFINED | Attr::UNKNOWN)
        })
        .collect();
    cache.sort_by_key(|&id| std::cmp::Reverse(tokens[id as usize].text.len()));
    cache
}
