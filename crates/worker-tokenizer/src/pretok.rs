//! Pre-tokenization for byte-level BPE: splitting text into words with the
//! regexes llama.cpp uses for each `tokenizer.ggml.pre`, then mapping each
//! word's bytes to GPT-2's printable characters.
//!
//! llama.cpp does not run these regexes on the text itself. It first
//! "collapses" every non-ASCII code point to one stand-in per Unicode
//! category (letter, number, punctuation, mark, symbol, other; whitespace
//! becomes `\v`) and rewrites each `\p{…}` class to match that stand-in plus
//! the ASCII members of the category. Exact parity needs the same view, so
//! this module does the same: stand-ins are private-use characters, the
//! rewritten regexes run on `fancy-regex` (backtracking, leftmost-first, with
//! lookahead, like the ECMAScript engine llama.cpp uses). Regexes without
//! `\p{…}` run on the text with non-ASCII whitespace replaced by `\v`, as
//! llama.cpp's wide-character path does.
//!
//! Several regexes apply in sequence: each one splits every piece left by the
//! previous one into its matches and the gaps between them.

use crate::error::{Result, TokenizerError};
use crate::unicode::{Coarse, byte_to_char_table, coarse};
use fancy_regex::Regex;

/// What a `tokenizer.ggml.pre` value selects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreConfig {
    pub exprs: &'static [&'static str],
    /// Map words to GPT-2 byte characters (false for SPM-style BPE).
    pub byte_encode: bool,
    /// Apply llama.cpp's space clean-up when detokenizing.
    pub clean_spaces: bool,
    /// Emit a whole word as one token when it is in the vocabulary.
    pub ignore_merges: bool,
    /// Default for adding BOS (the GGUF key overrides it).
    pub add_bos: bool,
    /// Spaces become `▁` before BPE (SPM-style BPE).
    pub escape_whitespaces: bool,
}

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const NEWLINES: &str = r"[^\n]+|[\n]+";
/// o200k (GPT-4o, gpt-oss, Llama 4): words split at case changes, with the
/// case classes written as lookaheads (`(?=\p{L})[^a-z]` for "a letter, not
/// lowercase"), as llama.cpp rewrites the tokenizer's `\p{Lu}`-style
/// classes; in its collapsed view only ASCII letters have a case.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

// Non-ASCII code points in regexes are written as escapes: the exact code
// points matter (U+212A KELVIN SIGN is not the letter K), and escapes survive
// any normalization an editor applies.
const DEFAULT_EXPRS: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"];
const DEEPSEEK_LLM_EXPRS: &[&str] = &[
    r"[\r\n]",
    r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+",
    r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
    r"\s+$",
    r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
    r"\p{N}+",
];
const DEEPSEEK_CODER_EXPRS: &[&str] = &[
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
    r"\p{N}",
];
const FALCON_EXPRS: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"];
const STARCODER_EXPRS: &[&str] = &[r"\p{N}", GPT2];
const CHATGLM4_EXPRS: &[&str] = &[LLAMA3];

impl PreConfig {
    const fn bpe(exprs: &'static [&'static str]) -> Self {
        PreConfig {
            exprs,
            byte_encode: true,
            clean_spaces: true,
            ignore_merges: false,
            add_bos: false,
            escape_whitespaces: false,
        }
    }

    const fn no_clean(self) -> Self {
        PreConfig {
            clean_spaces: false,
            ..self
        }
    }
}

/// The pre-tokenizer llama.cpp selects for a `tokenizer.ggml.pre` value, or
/// `None` when llorch does not support it.
pub(crate) fn pre_config(pre: &str) -> Option<PreConfig> {
    Some(match pre {
        "default" => PreConfig::bpe(DEFAULT_EXPRS),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => PreConfig {
            ignore_merges: true,
            add_bos: true,
            ..PreConfig::bpe(&[LLAMA3])
        },
        "dbrx" | "smaug-bpe" => PreConfig::bpe(&[LLAMA3]),
        "deepseek-llm" => PreConfig::bpe(DEEPSEEK_LLM_EXPRS).no_clean(),
        "deepseek-coder" => PreConfig::bpe(DEEPSEEK_CODER_EXPRS).no_clean(),
        "falcon" => PreConfig::bpe(FALCON_EXPRS),
        "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "exaone4" => PreConfig::bpe(&[GPT2]),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" => {
            PreConfig::bpe(STARCODER_EXPRS)
        }
        "command-r" | "smollm" => PreConfig::bpe(STARCODER_EXPRS).no_clean(),
        "qwen2" | "deepseek-r1-qwen" | "megrez" => PreConfig::bpe(&[QWEN2]).no_clean(),
        "stablelm2" => PreConfig::bpe(&[QWEN2]),
        "qwen35" => PreConfig::bpe(&[QWEN35]).no_clean(),
        "chatglm-bpe" => PreConfig::bpe(CHATGLM4_EXPRS),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" => PreConfig::bpe(&[GPT4O]).no_clean(),
        "gemma4" => PreConfig {
            byte_encode: false,
            add_bos: true,
            escape_whitespaces: true,
            ..PreConfig::bpe(&[NEWLINES])
        },
        _ => return None,
    })
}

/// Every `tokenizer.ggml.pre` value [`pre_config`] accepts, for messages.
pub(crate) const SUPPORTED_PRE: &[&str] = &[
    "default",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "dbrx",
    "smaug-bpe",
    "deepseek-llm",
    "deepseek-coder",
    "falcon",
    "gpt-2",
    "phi-2",
    "mpt",
    "olmo",
    "jais",
    "exaone4",
    "starcoder",
    "refact",
    "codeshell",
    "exaone",
    "minerva-7b",
    "command-r",
    "smollm",
    "qwen2",
    "deepseek-r1-qwen",
    "megrez",
    "stablelm2",
    "qwen35",
    "chatglm-bpe",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "gemma4",
];

// Stand-ins for collapsed non-ASCII code points, one per category.
const MARK_OTHER: char = '\u{E0D0}';
const MARK_NUMBER: char = '\u{E0D1}';
const MARK_LETTER: char = '\u{E0D2}';
const MARK_PUNCT: char = '\u{E0D3}';
const MARK_ACCENT: char = '\u{E0D4}';
const MARK_SYMBOL: char = '\u{E0D5}';

/// `\p{…}` classes and what they become: the stand-in plus ASCII members.
const CLASSES: &[(&str, char, &str)] = &[
    (r"\p{N}", MARK_NUMBER, r"\x30-\x39"),
    (r"\p{L}", MARK_LETTER, r"\x41-\x5A\x61-\x7A"),
    (
        r"\p{P}",
        MARK_PUNCT,
        r"\x21-\x23\x25-\x2A\x2C-\x2F\x3A-\x3B\x3F-\x40\x5B-\x5D\x5F\x7B\x7D",
    ),
    (r"\p{M}", MARK_ACCENT, ""),
    (r"\p{S}", MARK_SYMBOL, r"\x24\x2B\x3C-\x3E\x5E\x60\x7C\x7E"),
    (r"\p{Lu}", MARK_LETTER, r"\x41-\x5A\x61-\x7A"),
    (r"\p{Ll}", MARK_LETTER, r"\x41-\x5A\x61-\x7A"),
    (r"\p{Lt}", MARK_LETTER, r"\x41-\x5A\x61-\x7A"),
    (r"\p{Lm}", MARK_LETTER, r"\x41-\x5A\x61-\x7A"),
    (r"\p{Lo}", MARK_LETTER, r"\x41-\x5A\x61-\x7A"),
];

#[derive(Debug)]
enum Split {
    /// Runs of `\n` and runs of anything else.
    Newlines,
    Regex {
        re: Regex,
        collapsed: bool,
    },
}

/// A compiled pre-tokenizer: its regexes are built once, at load.
#[derive(Debug)]
pub(crate) struct PreTokenizer {
    splits: Vec<Split>,
    byte_encode: bool,
    byte_chars: [char; 256],
}

impl PreTokenizer {
    pub(crate) fn new(exprs: &[&str], byte_encode: bool) -> Result<Self> {
        let splits = exprs
            .iter()
            .map(|&expr| {
                if expr == NEWLINES {
                    return Ok(Split::Newlines);
                }
                let collapsed = CLASSES.iter().any(|(class, _, _)| expr.contains(class));
                let source = if collapsed {
                    collapse_regex(expr)
                } else {
                    expr.to_string()
                };
                let re = Regex::new(&source).map_err(|e| TokenizerError::Regex {
                    regex: expr.to_string(),
                    message: e.to_string(),
                })?;
                Ok(Split::Regex { re, collapsed })
            })
            .collect::<Result<_>>()?;
        Ok(PreTokenizer {
            splits,
            byte_encode,
            byte_chars: byte_to_char_table(),
        })
    }

    /// Splits `text` into words, byte-encoded when the tokenizer is byte-level.
    pub(crate) fn split(&self, text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = vec![chars.len()];
        let collapsed = Haystack::new(&chars, true);
        let plain = Haystack::new(&chars, false);
        for split in &self.splits {
            pieces = match split {
                Split::Newlines => split_newlines(&chars, &pieces),
                Split::Regex {
                    re,
                    collapsed: true,
                } => collapsed.split(re, &pieces),
                Split::Regex {
                    re,
                    collapsed: false,
                } => plain.split(re, &pieces),
            };
        }

        let mut words = Vec::with_capacity(pieces.len());
        let mut start = 0;
        for len in pieces {
            let word: String = chars[start..start + len].iter().collect();
            start += len;
            if self.byte_encode {
                words.push(word.bytes().map(|b| self.byte_chars[b as usize]).collect());
            } else {
                words.push(word);
            }
        }
        words
    }
}

/// Rewrites `\p{…}` classes for the collapsed view (see the module docs),
/// tracking whether the class stands inside brackets.
fn collapse_regex(expr: &str) -> String {
    let bytes = expr.as_bytes();
    let mut out = String::with_capacity(expr.len() * 2);
    let mut inside = false;
    let mut i = 0;
    while i < expr.len() {
        let escaped = i > 0 && bytes[i - 1] == b'\\';
        if bytes[i] == b'[' && !escaped {
            inside = true;
        } else if inside && bytes[i] == b']' && !escaped {
            inside = false;
        } else if let Some((class, mark, ascii)) = CLASSES
            .iter()
            .find(|(class, _, _)| expr[i..].starts_with(class))
        {
            if !inside {
                out.push('[');
            }
            out.push_str(&format!(r"\x{{{:X}}}", *mark as u32));
            out.push_str(ascii);
            if !inside {
                out.push(']');
            }
            i += class.len();
            continue;
        }
        // Copy one whole character (the regex may hold non-ASCII literals).
        let ch_len = expr[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&expr[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// The text as one regex view sees it, with the byte offset of each code
/// point so matches can be mapped back to code point counts.
struct Haystack {
    text: String,
    offsets: Vec<usize>,
}

impl Haystack {
    fn new(chars: &[char], collapsed: bool) -> Self {
        let mut text = String::with_capacity(chars.len());
        let mut offsets = Vec::with_capacity(chars.len() + 1);
        for &c in chars {
            offsets.push(text.len());
            let mapped = if c.is_ascii() {
                c
            } else {
                match (coarse(c), collapsed) {
                    (Coarse::Whitespace, _) => '\u{0B}',
                    (_, false) => c,
                    (Coarse::Number, true) => MARK_NUMBER,
                    (Coarse::Letter, true) => MARK_LETTER,
                    (Coarse::Punctuation, true) => MARK_PUNCT,
                    (Coarse::Mark, true) => MARK_ACCENT,
                    (Coarse::Symbol, true) => MARK_SYMBOL,
                    (Coarse::Other, true) => MARK_OTHER,
                }
            };
            text.push(mapped);
        }
        offsets.push(text.len());
        Haystack { text, offsets }
    }

    fn char_index(&self, byte: usize) -> usize {
        // Matches start and end on character boundaries.
        self.offsets.partition_point(|&o| o < byte)
    }

    /// Splits each piece (a length in code points) into matches and gaps.
    fn split(&self, re: &Regex, pieces: &[usize]) -> Vec<usize> {
        let mut out = Vec::with_capacity(pieces.len());
        let mut start = 0;
        for &len in pieces {
            let (lo, hi) = (self.offsets[start], self.offsets[start + len]);
            let piece = &self.text[lo..hi];
            let mut done = 0; // code points of this piece already emitted
            for m in re.find_iter(piece) {
                // A backtracking limit hit on hostile input ends the search;
                // the rest of the piece stays one word.
                let Ok(m) = m else { break };
                let m_start = self.char_index(lo + m.start()) - start;
                let m_end = self.char_index(lo + m.end()) - start;
                if m_start > done {
                    out.push(m_start - done);
                }
                if m_end > m_start {
                    out.push(m_end - m_start);
                }
                done = m_end;
            }
            if done < len {
                out.push(len - done);
            }
            start += len;
        }
        out
    }
}

fn split_newlines(chars: &[char], pieces: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(pieces.len());
    let mut start = 0;
    for &len in pieces {
        let piece = &chars[start..start + len];
        let mut i = 0;
        while i < piece.len() {
            let newline = piece[i] == '\n';
            let run = piece[i..]
                .iter()
                .take_while(|&&c| (c == '\n') == newline)
                .count();
            out.push(run);
            i += run;
        }
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(exprs: &[&str], text: &str) -> Vec<String> {
        PreTokenizer::new(exprs, false)
            .expect("compiles")
            .split(text)
    }

    #[test]
    fn gpt2_split() {
        assert_eq!(
            words(&[GPT2], "Hello world's   end 123"),
            ["Hello", " world", "'s", "  ", " end", " 123"]
        );
        assert_eq!(words(&[GPT2], "déjà vu"), ["déjà", " vu"]);
    }

    #[test]
    fn llama3_digits_and_newlines() {
        assert_eq!(words(&[LLAMA3], "12345\n\n x"), ["123", "45", "\n\n", " x"]);
    }

    #[test]
    fn gpt4o_splits_at_case_changes_and_keeps_contractions() {
        let pre = pre_config("gpt-4o").expect("supported");
        assert!(!pre.clean_spaces && pre.byte_encode);
        let split = |text| words(pre.exprs, text);
        assert_eq!(
            split("HelloWorld's ABCdef 12345 don't"),
            ["Hello", "World's", " ABCdef", " ", "123", "45", " don't"]
        );
        assert_eq!(split("CamelCaseXMLParser"), ["Camel", "Case", "XMLParser"]);
        assert_eq!(
            split("HELLO world\n\n  end"),
            ["HELLO", " world", "\n\n", " ", " end"]
        );
        assert_eq!(
            split("path/to/file.rs\n"),
            ["path", "/to", "/file", ".rs", "\n"]
        );
        // Non-ASCII letters have no case in the collapsed view, so a
        // capital one ends up a word of its own before capitals.
        assert_eq!(split("ÜBER straße"), ["Ü", "BER", " straße"]);
    }

    #[test]
    fn byte_encoding() {
        let p = PreTokenizer::new(&[GPT2], true).expect("compiles");
        assert_eq!(p.split(" é"), ["ĠÃ©"]);
    }

    #[test]
    fn every_supported_pre_compiles() {
        for pre in SUPPORTED_PRE {
            let cfg = pre_config(pre).expect("listed");
            PreTokenizer::new(cfg.exprs, cfg.byte_encode).expect(pre);
        }
        assert!(pre_config("no-such-pre").is_none());
    }
}
