//! The tokenizer a model uses, whichever kind it is.

use crate::bpe;
use crate::chat::{ChatMessage, ChatTemplate};
use crate::decode::{self, StreamDecoder};
use crate::error::{Result, TokenizerError};
use crate::hf::HfTokenizer;
use crate::pretok::PreTokenizer;
use crate::special::{Fragment, partition_guarded};
use crate::spm;
use crate::vocab::{Attr, SpecialTokens, TokenId, Vocab, VocabKind};
use std::collections::BTreeSet;
use worker_gguf::Metadata;

#[derive(Debug)]
enum Backend {
    Native {
        vocab: Vocab,
        pre: Option<PreTokenizer>,
        pieces: Vec<Box<[u8]>>,
    },
    HuggingFace(HfTokenizer),
}

/// A model's tokenizer: text to token ids and back, special ids, and the
/// chat template.
#[derive(Debug)]
pub struct Tokenizer {
    backend: Backend,
    chat: ChatTemplate,
}

/// Models whose `tokenizer.ggml.model` llorch tokenizes natively.
const NATIVE_MODELS: &[&str] = &["llama", "gpt2", "gemma4"];

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's metadata.
    ///
    /// The native implementation (exactly llama.cpp's) is used for the
    /// `llama`, `gpt2` and `gemma4` models; any other model is served by an
    /// embedded `tokenizer.huggingface.json` when the file has one.
    pub fn from_gguf(meta: &Metadata) -> Result<Self> {
        let model = meta.get_str("tokenizer.ggml.model")?;
        let template = meta.get_opt::<&str>("tokenizer.chat_template")?;
        if !NATIVE_MODELS.contains(&model)
            && let Some(json) = meta.get_opt::<&str>("tokenizer.huggingface.json")?
        {
            let mut hf = HfTokenizer::from_json(json)?;
            let mut special = SpecialTokens::default();
            crate::special_ids::apply_keys(meta, hf.len(), &mut special)?;
            hf.override_special(&special);
            return Self::from_hf_backend(hf, template);
        }

        let vocab = Vocab::from_metadata(meta)?;
        let pre = match vocab.pre_config {
            Some(cfg) => Some(PreTokenizer::new(cfg.exprs, cfg.byte_encode)?),
            None => None,
        };
        let pieces = decode::build_pieces(&vocab);
        let text_of = |id: Option<TokenId>| {
            id.and_then(|id| vocab.tokens.get(id as usize))
                .map_or(String::new(), |t| t.text.clone())
        };
        let chat = ChatTemplate::new(
            template,
            &text_of(vocab.special.bos),
            &text_of(vocab.special.eos),
            |t| vocab.id(t).is_some(),
        )?;
        Ok(Tokenizer {
            backend: Backend::Native { vocab, pre, pieces },
            chat,
        })
    }

    /// Builds a tokenizer from a Hugging Face `tokenizer.json`.
    pub fn from_hf_json(json: &str, chat_template: Option<&str>) -> Result<Self> {
        Self::from_hf_backend(HfTokenizer::from_json(json)?, chat_template)
    }

    fn from_hf_backend(hf: HfTokenizer, template: Option<&str>) -> Result<Self> {
        let text_of = |id: Option<TokenId>| {
            id.and_then(|id| hf.pieces.get(id as usize))
                .map_or(String::new(), |p| String::from_utf8_lossy(p).into_owned())
        };
        let chat = ChatTemplate::new(
            template,
            &text_of(hf.special.bos),
            &text_of(hf.special.eos),
            |_| false,
        )?;
        Ok(Tokenizer {
            backend: Backend::HuggingFace(hf),
            chat,
        })
    }

    /// Token ids for `text`.
    ///
    /// `add_special` adds BOS/EOS as the model's `add_bos_token` /
    /// `add_eos_token` say. `parse_special` lets control tokens written in
    /// the text (`<start_of_turn>`) become their ids; without it they are
    /// tokenized as plain text. User-defined tokens are always recognized,
    /// as in llama.cpp. (A `tokenizer.json` tokenizer always recognizes its
    /// added tokens.)
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<TokenId>> {
        self.encode_guarded(text, add_special, parse_special, &[])
    }

    /// [`Tokenizer::encode`] with control tokens parsed everywhere except
    /// in the `guarded` byte ranges of `text`, which are tokenized as plain
    /// text (a chat message's content within the rendered template). The
    /// text runs between control tokens are tokenized whole, so a guarded
    /// range without control-token text gives the same ids as
    /// [`Tokenizer::encode`]. A `tokenizer.json` tokenizer cannot guard
    /// ranges: it refuses to encode guarded control-token text.
    pub fn encode_guarded(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        guarded: &[std::ops::Range<usize>],
    ) -> Result<Vec<TokenId>> {
        let (vocab, pre) = match &self.backend {
            Backend::Native { vocab, pre, .. } => (vocab, pre),
            Backend::HuggingFace(hf) => {
                if parse_special
                    && guarded.iter().any(|g| {
                        text.get(g.clone())
                            .is_some_and(|t| hf.holds_special_text(t))
                    })
                {
                    return Err(TokenizerError::ChatTemplate(
                        "a message holds the model's control-token text, which this tokenizer cannot keep as plain text".into(),
                    ));
                }
                return hf.encode(text, add_special);
            }
        };
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let add_bos = add_special && vocab.add_bos;
        if add_bos && let Some(bos) = vocab.special.bos {
            out.push(bos);
        }
        let fragments = partition_guarded(vocab, text, parse_special, guarded);
        match (vocab.kind, pre) {
            (VocabKind::Spm, _) => {
                let mut prev_special = true;
                for f in fragments {
                    match f {
                        Fragment::Text(t) => {
                            let mut s = String::with_capacity(t.len() + 3);
                            if vocab.add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(t);
                            spm::tokenize(vocab, &s.replace(' ', "▁"), &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            (VocabKind::Bpe, Some(pre)) => {
                for f in fragments {
                    match f {
                        Fragment::Text(t) if vocab.escape_whitespaces => {
                            bpe::tokenize(vocab, pre, &t.replace(' ', "▁"), &mut out)
                        }
                        Fragment::Text(t) => bpe::tokenize(vocab, pre, t, &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            (VocabKind::Bpe, None) => {
                return Err(TokenizerError::InvalidVocab(
                    "a BPE vocabulary without a pre-tokenizer".into(),
                ));
            }
        }
        if add_special
            && vocab.add_eos
            && let Some(eos) = vocab.special.eos
        {
            out.push(eos);
        }
        Ok(out)
    }

    /// The bytes of one token. Control tokens (and unknown ones) are empty
    /// unless `special`. Bytes, not text: a token may hold part of a code
    /// point; [`StreamDecoder`] assembles them.
    pub fn token_bytes(&self, id: TokenId, special: bool) -> Result<&[u8]> {
        self.check(id)?;
        Ok(match &self.backend {
            Backend::Native { vocab, pieces, .. } => decode::piece(vocab, pieces, id, special),
            Backend::HuggingFace(hf) => {
                if !special && hf.is_special(id) {
                    &[]
                } else {
                    &hf.pieces[id as usize]
                }
            }
        })
    }

    /// The text of `ids` as llama.cpp's `detokenize` gives it, as bytes.
    /// `remove_special` drops a BOS/EOS the tokenizer would have added;
    /// `special` renders control tokens.
    pub fn decode_bytes(
        &self,
        ids: &[TokenId],
        remove_special: bool,
        special: bool,
    ) -> Result<Vec<u8>> {
        for &id in ids {
            self.check(id)?;
        }
        Ok(match &self.backend {
            Backend::Native { vocab, pieces, .. } => {
                decode::detokenize(vocab, pieces, ids, remove_special, special)
            }
            Backend::HuggingFace(hf) => ids
                .iter()
                .flat_map(|&id| {
                    if !special && hf.is_special(id) {
                        &[][..]
                    } else {
                        &hf.pieces[id as usize][..]
                    }
                })
                .copied()
                .collect(),
        })
    }

    /// [`Tokenizer::decode_bytes`] as text; bytes that are not valid UTF-8
    /// become U+FFFD.
    pub fn decode(&self, ids: &[TokenId], remove_special: bool, special: bool) -> Result<String> {
        let bytes = self.decode_bytes(ids, remove_special, special)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A decoder for streaming this tokenizer's output.
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new()
    }

    fn check(&self, id: TokenId) -> Result<()> {
        let n = self.vocab_size();
        if (id as usize) < n {
            Ok(())
        } else {
            Err(TokenizerError::TokenOutOfRange { id, n_vocab: n })
        }
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::Native { vocab, .. } => vocab.len(),
            Backend::HuggingFace(hf) => hf.len(),
        }
    }

    /// The special token ids.
    pub fn special(&self) -> &SpecialTokens {
        match &self.backend {
            Backend::Native { vocab, .. } => &vocab.special,
            Backend::HuggingFace(hf) => &hf.special,
        }
    }

    /// Every id that ends generation (EOS, EOT, EOM and their kin).
    pub fn eog_ids(&self) -> &BTreeSet<TokenId> {
        match &self.backend {
            Backend::Native { vocab, .. } => &vocab.eog,
            Backend::HuggingFace(hf) => &hf.eog,
        }
    }

    /// Whether `id` ends generation.
    pub fn is_eog(&self, id: TokenId) -> bool {
        self.eog_ids().contains(&id)
    }

    /// Whether [`Tokenizer::encode`] with `add_special` adds BOS.
    pub fn adds_bos(&self) -> bool {
        match &self.backend {
            Backend::Native { vocab, .. } => vocab.add_bos && vocab.special.bos.is_some(),
            Backend::HuggingFace(_) => true,
        }
    }

    /// What kind of tokenizer this is: `spm`, `bpe` or `huggingface`.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Native { vocab, .. } => match vocab.kind {
                VocabKind::Spm => "spm",
                VocabKind::Bpe => "bpe",
            },
            Backend::HuggingFace(_) => "huggingface",
        }
    }

    /// The `tokenizer.ggml.model` and `tokenizer.ggml.pre` it was built from.
    pub fn model(&self) -> (&str, Option<&str>) {
        match &self.backend {
            Backend::Native { vocab, .. } => (&vocab.model, vocab.pre.as_deref()),
            Backend::HuggingFace(_) => ("huggingface", None),
        }
    }

    /// The chat template.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat
    }

    /// The tokens of `messages` in the chat template: the template's own
    /// text with its control tokens parsed, each message's content as plain
    /// text, so control-token text a user writes (`<start_of_turn>`,
    /// `<|im_start|>system`) stays text and cannot forge a turn, as
    /// OpenAI's API behaves. The template's own BOS text is the BOS token;
    /// without one, the model's `add_bos_token` decides. Where the
    /// template does more with a content than place it, so its place in
    /// the text is not known, the text is tokenized as before when no
    /// content holds control-token text, and refused otherwise.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<TokenId>> {
        let (text, spans) = self.chat.render_guarded(messages, add_generation_prompt)?;
        let bos_text = self
            .special()
            .bos
            .and_then(|b| self.token_bytes(b, true).ok())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let add_bos = bos_text.is_empty() || !text.starts_with(&bos_text);
        let spans = match spans {
            Some(spans) => spans,
            None if messages.iter().any(|m| self.holds_control_text(&m.content)) => {
                return Err(TokenizerError::ChatTemplate(
                    "a message holds the model's control-token text, and this chat template changes message contents, so it cannot be kept as plain text".into(),
                ));
            }
            None => Vec::new(),
        };
        self.encode_guarded(&text, add_bos, true, &spans)
    }

    /// Whether `text` holds the text of a control token.
    fn holds_control_text(&self, text: &str) -> bool {
        match &self.backend {
            Backend::Native { vocab, .. } => {
                partition_guarded(vocab, text, true, &[]).iter().any(|f| {
                    matches!(f, Fragment::Token(id) if vocab
                        .tokens
                        .get(*id as usize)
                        .is_some_and(|t| t.attr.any(Attr::CONTROL | Attr::UNKNOWN)))
                })
            }
            Backend::HuggingFace(hf) => hf.holds_special_text(text),
        }
    }

    /// Renders `messages` with the chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.chat.render(messages, add_generation_prompt)
    }
}
