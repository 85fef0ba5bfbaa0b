//! JSON mode (`response_format: {"type": "json_object"}`): generation
//! constrained to one JSON object.
//!
//! [`JsonState`] is a pushdown automaton over characters whose whole state
//! is a few bytes (the container stack is a bit set), so checking a
//! candidate token is a copy of the state and a walk over the token's
//! characters. Before each choice, every token whose text would leave the
//! output no longer a prefix of a JSON object gets `-inf`; the
//! end-of-generation tokens are allowed only once the object is closed,
//! and then nothing else is. Whitespace between tokens is limited to a few
//! characters in a row, since a constrained model may otherwise emit
//! blank lines until `max_tokens`. Text that runs into `max_tokens` is an
//! unfinished object, as with OpenAI.

/// Deepest nesting (one bit per level).
const MAX_DEPTH: u32 = 64;
/// Most whitespace characters in a row outside strings.
const MAX_SPACE: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Before the object: `{`.
    Start,
    /// A value is due (after `:` or `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value in a container: `,` or its closing bracket.
    AfterValue,
    /// In a string; `key` when it is an object's key.
    Str { key: bool, esc: Esc },
    /// In a number.
    Num(Num),
    /// In `true`, `false` or `null`: which, and how many letters are in.
    Lit { which: u8, at: u8 },
    /// The object is closed: whitespace only.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    No,
    Backslash,
    /// Hex digits still due after `\u`.
    Hex(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl Num {
    /// Whether a number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }
}

const LITERALS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// Where the output stands in a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonState {
    mode: Mode,
    /// Bit `i`: level `i` is an object (else an array).
    stack: u64,
    depth: u32,
    spaces: u8,
}

impl Default for JsonState {
    fn default() -> Self {
        JsonState {
            mode: Mode::Start,
            stack: 0,
            depth: 0,
            spaces: 0,
        }
    }
}

impl JsonState {
    /// Whether the object is closed.
    pub fn is_complete(&self) -> bool {
        self.mode == Mode::Done
    }

    /// Whether the output is inside a string, past any escape: any
    /// character but a quote, a backslash or a control character fits as
    /// it is.
    pub fn in_string_text(&self) -> bool {
        matches!(self.mode, Mode::Str { esc: Esc::No, .. })
    }

    /// Whether `text` may follow; the state moves past it when it may.
    pub fn push_str(&mut self, text: &str) -> bool {
        let mut next = *self;
        for c in text.chars() {
            if !next.push(c) {
                return false;
            }
        }
        *self = next;
        true
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.stack & (1 << (self.depth - 1)) != 0
    }

    fn open(&mut self, object: bool) -> bool {
        if self.depth >= MAX_DEPTH {
            return false;
        }
        if object {
            self.stack |= 1 << self.depth;
        } else {
            self.stack &= !(1 << self.depth);
        }
        self.depth += 1;
        self.mode = if object {
            Mode::ObjectFirst
        } else {
            Mode::ArrayFirst
        };
        true
    }

    /// A value just ended.
    fn value_done(&mut self) {
        self.mode = if self.depth == 0 {
            Mode::Done
        } else {
            Mode::AfterValue
        };
    }

    fn close(&mut self, object: bool) -> bool {
        if self.depth == 0 || self.in_object() != object {
            return false;
        }
        self.depth -= 1;
        self.value_done();
        true
    }

    /// The start of a value.
    fn value(&mut self, c: char) -> bool {
        match c {
            '{' => self.open(true),
            '[' => self.open(false),
            '"' => {
                self.mode = Mode::Str {
                    key: false,
                    esc: Esc::No,
                };
                true
            }
            '-' => {
                self.mode = Mode::Num(Num::Minus);
                true
            }
            '0' => {
                self.mode = Mode::Num(Num::Zero);
                true
            }
            '1'..='9' => {
                self.mode = Mode::Num(Num::Int);
                true
            }
            't' | 'f' | 'n' => {
                let which = match c {
                    't' => 0,
                    'f' => 1,
                    _ => 2,
                };
                self.mode = Mode::Lit { which, at: 1 };
                true
            }
            _ => false,
        }
    }

    /// Whether `c` may follow; moves past it when it may.
    pub fn push(&mut self, c: char) -> bool {
        let space = matches!(c, ' ' | '\n' | '\r' | '\t');
        let structural = !matches!(
            self.mode,
            Mode::Str { .. } | Mode::Num(_) | Mode::Lit { .. }
        );
        if space && structural {
            // The answer starts with its object.
            if self.mode == Mode::Start || self.spaces >= MAX_SPACE {
                return false;
            }
            self.spaces += 1;
            return true;
        }
        if structural {
            self.spaces = 0;
        }
        match self.mode {
            Mode::Start => c == '{' && self.open(true),
            Mode::Value => self.value(c),
            Mode::ArrayFirst => {
                if c == ']' {
                    self.close(false)
                } else {
                    self.value(c)
                }
            }
            Mode::ObjectFirst | Mode::Key => {
                if c == '}' && self.mode == Mode::ObjectFirst {
                    self.close(true)
                } else if c == '"' {
                    self.mode = Mode::Str {
                        key: true,
                        esc: Esc::No,
                    };
                    true
                } else {
                    false
                }
            }
            Mode::Colon => {
                if c == ':' {
                    self.mode = Mode::Value;
                    true
                } else {
                    false
                }
            }
            Mode::AfterValue => match c {
                ',' => {
                    self.mode = if self.in_object() {
                        Mode::Key
                    } else {
                        Mode::Value
                    };
                    true
                }
                '}' => self.close(true),
                ']' => self.close(false),
                _ => false,
            },
            Mode::Str { key, esc } => match esc {
                Esc::No => match c {
                    '"' => {
                        if key {
                            self.mode = Mode::Colon;
                        } else {
                            self.value_done();
                        }
                        true
                    }
                    '\\' => {
                        self.mode = Mode::Str {
                            key,
                            esc: Esc::Backslash,
                        };
                        true
                    }
                    c => !c.is_control(),
                },
                Esc::Backslash => {
                    let esc = match c {
                        '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' => Esc::No,
                        'u' => Esc::Hex(4),
                        _ => return false,
                    };
                    self.mode = Mode::Str { key, esc };
                    true
                }
                Esc::Hex(n) => {
                    if !c.is_ascii_hexdigit() {
                        return false;
                    }
                    let esc = if n > 1 { Esc::Hex(n - 1) } else { Esc::No };
                    self.mode = Mode::Str { key, esc };
                    true
                }
            },
            Mode::Num(part) => {
                let next = match (part, c) {
                    (Num::Minus, '0') => Some(Num::Zero),
                    (Num::Minus, '1'..='9') => Some(Num::Int),
                    (Num::Int, '0'..='9') => Some(Num::Int),
                    (Num::Zero | Num::Int, '.') => Some(Num::Dot),
                    (Num::Dot | Num::Frac, '0'..='9') => Some(Num::Frac),
                    (Num::Zero | Num::Int | Num::Frac, 'e' | 'E') => Some(Num::Exp),
                    (Num::Exp, '+' | '-') => Some(Num::ExpSign),
                    (Num::Exp | Num::ExpSign | Num::ExpDigits, '0'..='9') => Some(Num::ExpDigits),
                    _ => None,
                };
                match next {
                    Some(n) => {
                        self.mode = Mode::Num(n);
                        true
                    }
                    // The number ends; the character must fit what follows.
                    None if part.complete() => {
                        self.value_done();
                        self.push(c)
                    }
                    None => false,
                }
            }
            Mode::Lit { which, at } => {
                let word = LITERALS[usize::from(which)];
                if word.get(usize::from(at)) != Some(&(c as u32 as u8)) || !c.is_ascii() {
                    return false;
                }
                if usize::from(at) + 1 == word.len() {
                    self.value_done();
                } else {
                    self.mode = Mode::Lit { which, at: at + 1 };
                }
                true
            }
            Mode::Done => false,
        }
    }
}

/// The vocabulary as JSON mode sees it, arranged so that a mask looks at
/// few tokens one by one: inside a string, the tokens that are plain text
/// there (no quote, backslash or control character) fit without a look;
/// elsewhere only the tokens whose first character after any leading
/// whitespace fits are walked (whitespace there changes no more than a
/// counter, so a character that does not fit alone does not fit after it),
/// and that character is ASCII (JSON outside a string's text is).
#[derive(Debug)]
pub struct JsonVocab {
    /// Every token's text, one after another; token `i` is
    /// `text[starts[i]..starts[i + 1]]` (empty: never allowed).
    text: String,
    starts: Vec<usize>,
    /// Tokens that are plain text inside a string.
    plain: Vec<u32>,
    /// Tokens with text that are not plain.
    special: Vec<u32>,
    /// Tokens by their first character after leading whitespace, for the
    /// ASCII ones.
    by_first: Vec<Vec<u32>>,
    /// Tokens of whitespace only.
    blank: Vec<u32>,
    eog: Vec<u32>,
}

impl JsonVocab {
    /// The texts of `tok`'s tokens as generation writes them (control
    /// tokens and text that is not UTF-8 are never allowed).
    pub fn new(tok: &worker_tokenizer::Tokenizer) -> Self {
        let n = tok.vocab_size();
        let mut v = JsonVocab {
            text: String::new(),
            starts: Vec::with_capacity(n + 1),
            plain: Vec::new(),
            special: Vec::new(),
            by_first: vec![Vec::new(); 128],
            blank: Vec::new(),
            eog: Vec::new(),
        };
        for i in 0..n {
            v.starts.push(v.text.len());
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            if tok.is_eog(id) {
                v.eog.push(id);
                continue;
            }
            let Some(t) = tok
                .token_bytes(id, false)
                .ok()
                .and_then(|b| std::str::from_utf8(b).ok())
                .filter(|t| !t.is_empty())
            else {
                continue;
            };
            v.text.push_str(t);
            if t.chars().all(|c| c != '"' && c != '\\' && !c.is_control()) {
                v.plain.push(id);
            } else {
                v.special.push(id);
            }
            match t
                .bytes()
                .find(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
            {
                None => v.blank.push(id),
                Some(b) => {
                    if let Some(ids) = v.by_first.get_mut(usize::from(b)) {
                        ids.push(id);
                    }
                }
            }
        }
        v.starts.push(v.text.len());
        v
    }

    /// The text of token `id` (empty when it has none).
    pub fn text(&self, id: u32) -> &str {
        let i = id as usize;
        match (self.starts.get(i), self.starts.get(i + 1)) {
            (Some(&a), Some(&b)) => self.text.get(a..b).unwrap_or(""),
            _ => "",
        }
    }

    fn fits(&self, state: &JsonState, id: u32) -> bool {
        let mut next = *state;
        next.push_str(self.text(id))
    }

    /// Sets to `-inf` the logits of the tokens that may not come next in
    /// `state`. Once the object is closed only the end-of-generation tokens
    /// remain; should no token fit (a vocabulary without some character
    /// JSON needs), they remain too, so generation ends.
    pub fn mask(&self, state: &JsonState, row: &mut [f32]) {
        let mut allowed = vec![false; row.len()];
        let mut mark = |id: u32| {
            if let Some(a) = allowed.get_mut(id as usize) {
                *a = true;
            }
        };
        let mut any = false;
        if !state.is_complete() {
            if state.in_string_text() {
                for &id in &self.plain {
                    mark(id);
                }
                any = !self.plain.is_empty();
                for &id in &self.special {
                    if self.fits(state, id) {
                        mark(id);
                        any = true;
                    }
                }
            } else {
                let fitting = self.by_first.iter().enumerate().filter(|(c, _)| {
                    let mut first = *state;
                    first.push(char::from(*c as u8))
                });
                for &id in fitting.flat_map(|(_, ids)| ids).chain(&self.blank) {
                    if self.fits(state, id) {
                        mark(id);
                        any = true;
                    }
                }
            }
        }
        if state.is_complete() || !any {
            for &id in &self.eog {
                mark(id);
            }
        }
        for (l, a) in row.iter_mut().zip(&allowed) {
            if !a {
                *l = f32::NEG_INFINITY;
            } else if l.is_nan() || *l == f32::NEG_INFINITY {
                // An allowed token must stay choosable.
                *l = f32::MIN;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(text: &str) -> Option<JsonState> {
        let mut s = JsonState::default();
        s.push_str(text).then_some(s)
    }

    #[test]
    fn whole_objects_are_complete() {
        for doc in [
            "{}",
            "{\"a\": 1}",
            "{\"a\": [1, -2.5e+3, 0, true, false, null, \"x\\n\\u00e9\"], \"b\": {\"c\": []}}",
            "{\"k\":\"v\",\"n\":{\"m\":[[],[{}]]}}",
            "{\"é\": \"ünïcode\"}",
        ] {
            let s = accepts(doc).unwrap_or_else(|| panic!("{doc}"));
            assert!(s.is_complete(), "{doc}");
            // What a JSON parser also reads as an object.
            let v: serde_json::Value = serde_json::from_str(doc).expect("valid JSON");
            assert!(v.is_object());
        }
    }

    #[test]
    fn prefixes_are_open_and_mistakes_refused() {
        for prefix in [
            "",
            "{",
            "{\"a",
            "{\"a\":",
            "{\"a\": [1, 2",
            "{\"a\": -",
            "{\"a\": tr",
            "{\"a\": 1.",
        ] {
            let s = accepts(prefix).unwrap_or_else(|| panic!("{prefix}"));
            assert!(!s.is_complete(), "{prefix}");
        }
        for bad in [
            "[1]",
            "1",
            "\"x\"",
            "{,",
            "{\"a\" 1}",
            "{\"a\": 01}",
            "{\"a\": 1.}",
            "{\"a\": -}",
            "{\"a\": tru}",
            "{\"a\": [1,]}",
            "{\"a\": 1,}",
            "{\"a\": 1}}",
            "{\"a\": 1] ",
            "{\"a\": \"\\x\"}",
            "{\"a\": \"\\u12g4\"}",
            "{\"a\": \"line\nbreak\"}",
            "{}{}",
            "{} x",
            "{'a': 1}",
            "{\"a\": 1e}",
            " {}",
        ] {
            let s = accepts(bad);
            assert!(
                s.is_none_or(|s| !s.is_complete()) && accepts(bad).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn numbers_end_at_the_next_structural_character() {
        let s = accepts("{\"a\": 12").expect("open");
        assert!(!s.is_complete());
        assert!(accepts("{\"a\": 12}").expect("closed").is_complete());
        assert!(
            accepts("{\"a\": [0,1.5 ,2e3]}")
                .expect("closed")
                .is_complete()
        );
    }

    #[test]
    fn whitespace_runs_and_depth_are_bounded() {
        assert!(accepts(&format!("{{{}}}", " ".repeat(usize::from(MAX_SPACE)))).is_some());
        assert!(accepts(&format!("{{{}}}", " ".repeat(usize::from(MAX_SPACE) + 1))).is_none());
        // Spaces inside strings are text, not whitespace.
        assert!(accepts(&format!("{{\"{}\": 1}}", " ".repeat(100))).is_some());
        let deep = format!("{{\"a\": {}", "[".repeat(MAX_DEPTH as usize - 1));
        assert!(accepts(&deep).is_some());
        assert!(accepts(&format!("{deep}[")).is_none());
    }
}
