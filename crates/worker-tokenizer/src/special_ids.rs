//! Special token ids: from GGUF keys, and by token text where files omit
//! them, the way llama.cpp fills them in (EOT, EOM, FIM, end-of-generation).

use crate::error::Result;
use crate::vocab::{Attr, SpecialTokens, TokenId, Vocab};
use worker_gguf::Metadata;

/// Reads `tokenizer.ggml.*_token_id` keys over the defaults. Defaults that
/// fall outside the vocabulary are dropped; a key outside it is ignored.
pub(crate) fn apply_keys(meta: &Metadata, n_vocab: usize, s: &mut SpecialTokens) -> Result<()> {
    let slots: [(&str, &mut Option<TokenId>); 14] = [
        ("bos_token_id", &mut s.bos),
        ("eos_token_id", &mut s.eos),
        ("eot_token_id", &mut s.eot),
        ("eom_token_id", &mut s.eom),
        ("unknown_token_id", &mut s.unk),
        ("seperator_token_id", &mut s.sep),
        ("padding_token_id", &mut s.pad),
        ("mask_token_id", &mut s.mask),
        ("fim_pre_token_id", &mut s.fim_pre),
        ("fim_suf_token_id", &mut s.fim_suf),
        ("fim_mid_token_id", &mut s.fim_mid),
        ("fim_pad_token_id", &mut s.fim_pad),
        ("fim_rep_token_id", &mut s.fim_rep),
        ("fim_sep_token_id", &mut s.fim_sep),
    ];
    for (suffix, slot) in slots {
        if slot.is_some_and(|id| id as usize >= n_vocab) {
            *slot = None;
        }
        let key = format!("tokenizer.ggml.{suffix}");
        if let Some(id) = meta.get_opt::<u32>(&key)?
            && (id as usize) < n_vocab
        {
            *slot = Some(id);
        }
    }
    // Deprecated spellings of the FIM ids.
    for (suffix, slot) in [
        ("prefix_token_id", &mut s.fim_pre),
        ("suffix_token_id", &mut s.fim_suf),
        ("middle_token_id", &mut s.fim_mid),
    ] {
        if let Some(id) = meta.get_opt::<u32>(&format!("tokenizer.ggml.{suffix}"))?
            && (id as usize) < n_vocab
        {
            *slot = Some(id);
        }
    }
    Ok(())
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Texts of tokens that end generation.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
/// Tokens that are always rendered, whatever their type says.
const ALWAYS_USER_DEFINED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// The lowest id whose text is in `texts`: files that omit an id get the one
/// their vocabulary spells in a well-known way. Such a token is made a
/// control token, as llama.cpp does.
fn find_by_text(vocab: &mut Vocab, slot: Option<TokenId>, texts: &[&str]) -> Option<TokenId> {
    if slot.is_some() {
        return slot;
    }
    let id = texts.iter().filter_map(|t| vocab.id(t)).min()?;
    vocab.tokens[id as usize].attr.set(Attr::CONTROL, true);
    Some(id)
}

pub(crate) fn detect_by_text(vocab: &mut Vocab) {
    let s = vocab.special.clone();
    vocab.special.eot = find_by_text(vocab, s.eot, EOT_TEXTS);
    vocab.special.eom = find_by_text(vocab, s.eom, EOM_TEXTS);
    vocab.special.fim_pre = find_by_text(vocab, s.fim_pre, FIM_PRE_TEXTS);
    vocab.special.fim_suf = find_by_text(vocab, s.fim_suf, FIM_SUF_TEXTS);
    vocab.special.fim_mid = find_by_text(vocab, s.fim_mid, FIM_MID_TEXTS);
    vocab.special.fim_pad = find_by_text(vocab, s.fim_pad, FIM_PAD_TEXTS);
    vocab.special.fim_rep = find_by_text(vocab, s.fim_rep, FIM_REP_TEXTS);
    vocab.special.fim_sep = find_by_text(vocab, s.fim_sep, FIM_SEP_TEXTS);

    // Control tokens named "unused…" are unused.
    for t in &mut vocab.tokens {
        if t.attr.any(Attr::CONTROL) && t.text.contains("unused") {
            t.attr.set(Attr::UNUSED, true);
        }
    }

    let s = vocab.special.clone();
    let mut eog: std::collections::BTreeSet<TokenId> = [s.fim_pad, s.fim_rep, s.fim_sep]
        .into_iter()
        .flatten()
        .collect();
    for text in EOG_TEXTS {
        if let Some(id) = vocab.id(text) {
            eog.insert(id);
            vocab.tokens[id as usize].attr.set(Attr::CONTROL, true);
        }
    }
    for text in ALWAYS_USER_DEFINED {
        if let Some(id) = vocab.id(text) {
            vocab.tokens[id as usize].attr = Attr::USER_DEFINED;
        }
    }
    eog.extend([s.eos, s.eot, s.eom].into_iter().flatten());

    // Harmony-style vocabularies end a turn with <|end|> but keep generating.
    let in_eog = |vocab: &Vocab, eog: &std::collections::BTreeSet<TokenId>, t: &str| {
        vocab.id(t).filter(|id| eog.contains(id))
    };
    let has = |vocab: &Vocab, eog: &std::collections::BTreeSet<TokenId>, t: &str| {
        in_eog(vocab, eog, t).is_some()
    };
    let call = has(vocab, &eog, "<|call|>") || has(vocab, &eog, "<|calls|>");
    if let Some(end) = in_eog(vocab, &eog, "<|end|>")
        && call
        && (has(vocab, &eog, "<|return|>") || has(vocab, &eog, "<|flush|>"))
    {
        eog.remove(&end);
        vocab.tokens[end as usize].attr = Attr::USER_DEFINED;
    }
    // Where a tool-response marker exists, </s> is an ordinary token.
    if let Some(s_id) = in_eog(vocab, &eog, "</s>")
        && (has(vocab, &eog, "<|tool_response>") || has(vocab, &eog, "<|plamo:eos|>"))
    {
        eog.remove(&s_id);
        vocab.tokens[s_id as usize].attr = Attr::NORMAL;
    }
    vocab.eog = eog;
}

/// Per-model attribute fixes llama.cpp applies by model name.
pub(crate) fn model_attrs(vocab: &mut Vocab, general_name: &str) {
    let name = general_name.to_ascii_lowercase();
    if name.contains("phi-3") || name.contains("phi3") {
        for &id in &vocab.special_cache {
            vocab.tokens[id as usize].attr.set(Attr::RSTRIP, true);
        }
        for (text, on) in [
            ("</s>", true),
            ("<unk>", false),
            ("<s>", false),
            ("<|endoftext|>", false),
        ] {
            if let Some(id) = vocab.id(text) {
                vocab.tokens[id as usize].attr.set(Attr::RSTRIP, on);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::vocab::{Attr, Vocab};
    use worker_gguf::{Metadata, Value};

    /// A BPE vocabulary of `texts` (types: 1 normal, 3 control, 4
    /// user-defined) with no merges.
    fn vocab(model: &str, pre: Option<&str>, texts: &[(&str, i32)]) -> Vocab {
        let mut meta = Metadata::new();
        meta.set("tokenizer.ggml.model", Value::from(model));
        if let Some(pre) = pre {
            meta.set("tokenizer.ggml.pre", Value::from(pre));
        }
        let tokens: Vec<String> = texts.iter().map(|(t, _)| t.to_string()).collect();
        let types: Vec<i32> = texts.iter().map(|&(_, ty)| ty).collect();
        meta.set("tokenizer.ggml.tokens", Value::from(tokens));
        meta.set("tokenizer.ggml.token_type", Value::from(types));
        meta.set("tokenizer.ggml.merges", Value::from(Vec::<String>::new()));
        Vocab::from_metadata(&meta).expect("vocab loads")
    }

    fn id(v: &Vocab, text: &str) -> u32 {
        v.id(text)
            .unwrap_or_else(|| panic!("{text:?} in the vocabulary"))
    }

    #[test]
    fn gemma4_stops_at_turn_close_and_tool_response_not_at_s() {
        let v = vocab(
            "gemma4",
            None,
            &[
                ("<pad>", 3),
                ("<eos>", 3),
                ("<bos>", 3),
                ("<|tool_response>", 4),
                ("<|turn>", 3),
                ("<turn|>", 3),
                ("</s>", 1),
            ],
        );
        let stops: Vec<u32> = v.eog.iter().copied().collect();
        let want = [
            id(&v, "<eos>"),
            id(&v, "<|tool_response>"),
            id(&v, "<turn|>"),
        ];
        assert_eq!(stops, want);
        // A stop token is a control token, whatever the file's type said.
        assert!(v.attr(id(&v, "<|tool_response>")).any(Attr::CONTROL));
        assert_eq!(v.attr(id(&v, "</s>")), Attr::NORMAL);
        assert!(v.add_bos, "Gemma 4 always adds BOS");
    }

    #[test]
    fn chatml_stops_at_im_end_and_end_of_text() {
        let v = vocab(
            "gpt2",
            Some("qwen35"),
            &[
                ("a", 1),
                ("<|endoftext|>", 3),
                ("<|im_start|>", 3),
                ("<|im_end|>", 3),
            ],
        );
        let stops: Vec<u32> = v.eog.iter().copied().collect();
        assert_eq!(stops, [id(&v, "<|endoftext|>"), id(&v, "<|im_end|>")]);
        assert!(v.special.eot.is_some_and(|t| v.eog.contains(&t)));
        assert!(!v.add_bos);
    }
}
