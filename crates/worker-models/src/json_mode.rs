//! JSON mode (`response_format: {"type": "json_object"}`): generation
//! constrained to one JSON object.
//!
//! [`JsonState`] is a pushdown automaton over bytes whose whole state is a
//! few bytes (the container stack is a bit set), so checking a candidate
//! token is a copy of the state and a walk over the token's bytes. Bytes,
//! not characters: a character split over several tokens (byte tokens,
//! byte-level BPE pieces) can still be written inside a string, where any
//! byte from 0x80 up is text; outside strings JSON is ASCII. Before each
//! choice, every token that would leave the output no longer a prefix of
//! a JSON object gets `-inf`, and the job ends as soon as the object
//! closes. Whitespace between values is bounded (two newlines in a row,
//! 64 characters), since a constrained model may otherwise emit blank
//! lines until `max_tokens`; text that runs into `max_tokens` is an
//! unfinished object, as with OpenAI. What it accepts, a JSON parser
//! reads: lone UTF-16 surrogate escapes are refused, and numbers keep to
//! 100 digits and two-digit exponents so they stay within `f64`.

/// Deepest nesting (one bit per level).
const MAX_DEPTH: u32 = 64;
/// Most whitespace characters in a row outside strings.
const MAX_SPACE: u8 = 64;
/// Most newlines in a row outside strings.
const MAX_NEWLINES: u8 = 2;
/// Most digits before a number's exponent, and in it.
const MAX_DIGITS: u8 = 100;
const MAX_EXP_DIGITS: u8 = 2;

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
    /// The object is closed.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    No,
    Backslash,
    /// In `\uXXXX`: hex digits still due, the value so far, and whether
    /// this is the low half of a surrogate pair.
    Hex {
        left: u8,
        value: u16,
        low: bool,
    },
    /// After a high surrogate: `\` of its low half is due.
    LowBackslash,
    /// After a high surrogate's `\`: `u` is due.
    LowU,
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
    /// Whitespace characters and newlines in the current run.
    spaces: u8,
    newlines: u8,
    /// Digits of the current number's mantissa, and of its exponent.
    digits: u8,
    exp_digits: u8,
}

impl Default for JsonState {
    fn default() -> Self {
        JsonState {
            mode: Mode::Start,
            stack: 0,
            depth: 0,
            spaces: 0,
            newlines: 0,
            digits: 0,
            exp_digits: 0,
        }
    }
}

fn hex(b: u8) -> Option<u16> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u16::try_from(d).ok())
}

impl JsonState {
    /// Whether the object is closed.
    pub fn is_complete(&self) -> bool {
        self.mode == Mode::Done
    }

    /// Whether the output is inside a string, past any escape: any byte
    /// but a quote, a backslash or a control character fits as it is.
    pub fn in_string_text(&self) -> bool {
        matches!(self.mode, Mode::Str { esc: Esc::No, .. })
    }

    /// Whether `text` may follow; the state moves past it when it may.
    pub fn push_str(&mut self, text: &str) -> bool {
        self.push_bytes(text.as_bytes())
    }

    /// Whether `bytes` may follow; the state moves past them when they
    /// may.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> bool {
        let mut next = *self;
        for &b in bytes {
            if !next.push(b) {
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

    fn number(&mut self, part: Num) -> bool {
        self.mode = Mode::Num(part);
        true
    }

    /// The start of a value.
    fn value(&mut self, b: u8) -> bool {
        self.digits = 0;
        self.exp_digits = 0;
        match b {
            b'{' => self.open(true),
            b'[' => self.open(false),
            b'"' => {
                self.mode = Mode::Str {
                    key: false,
                    esc: Esc::No,
                };
                true
            }
            b'-' => self.number(Num::Minus),
            b'0' => {
                self.digits = 1;
                self.number(Num::Zero)
            }
            b'1'..=b'9' => {
                self.digits = 1;
                self.number(Num::Int)
            }
            b't' | b'f' | b'n' => {
                let which = match b {
                    b't' => 0,
                    b'f' => 1,
                    _ => 2,
                };
                self.mode = Mode::Lit { which, at: 1 };
                true
            }
            _ => false,
        }
    }

    fn string(&mut self, key: bool, esc: Esc, b: u8) -> bool {
        let next = match esc {
            Esc::No => match b {
                b'"' => {
                    if key {
                        self.mode = Mode::Colon;
                    } else {
                        self.value_done();
                    }
                    return true;
                }
                b'\\' => Esc::Backslash,
                0..=0x1f => return false,
                _ => Esc::No,
            },
            Esc::Backslash => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Esc::No,
                b'u' => Esc::Hex {
                    left: 4,
                    value: 0,
                    low: false,
                },
                _ => return false,
            },
            Esc::Hex { left, value, low } => {
                let Some(d) = hex(b) else { return false };
                let value = (value << 4) | d;
                if left > 1 {
                    Esc::Hex {
                        left: left - 1,
                        value,
                        low,
                    }
                } else {
                    match (low, value) {
                        // A high surrogate: its low half must follow.
                        (false, 0xd800..=0xdbff) => Esc::LowBackslash,
                        // A low surrogate alone; or a high one's partner
                        // that is not low.
                        (false, 0xdc00..=0xdfff) => return false,
                        (true, 0xdc00..=0xdfff) => Esc::No,
                        (true, _) => return false,
                        (false, _) => Esc::No,
                    }
                }
            }
            Esc::LowBackslash => {
                if b != b'\\' {
                    return false;
                }
                Esc::LowU
            }
            Esc::LowU => {
                if b != b'u' {
                    return false;
                }
                Esc::Hex {
                    left: 4,
                    value: 0,
                    low: true,
                }
            }
        };
        self.mode = Mode::Str { key, esc: next };
        true
    }

    /// Whether byte `b` may follow; moves past it when it may.
    pub fn push(&mut self, b: u8) -> bool {
        let structural = !matches!(
            self.mode,
            Mode::Str { .. } | Mode::Num(_) | Mode::Lit { .. }
        );
        if structural {
            if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return self.space(b);
            }
            self.spaces = 0;
            self.newlines = 0;
        }
        match self.mode {
            Mode::Start => b == b'{' && self.open(true),
            Mode::Value => self.value(b),
            Mode::ArrayFirst => {
                if b == b']' {
                    self.close(false)
                } else {
                    self.value(b)
                }
            }
            Mode::ObjectFirst | Mode::Key => self.key_start(b),
            Mode::Colon => {
                if b == b':' {
                    self.mode = Mode::Value;
                    true
                } else {
                    false
                }
            }
            Mode::AfterValue => self.after_value(b),
            Mode::Str { key, esc } => self.string(key, esc, b),
            Mode::Num(part) => self.number_byte(part, b),
            Mode::Lit { which, at } => self.literal_byte(which, at, b),
            Mode::Done => false,
        }
    }

    /// Whitespace between tokens: bounded runs, at most a few newlines,
    /// none before the object or after it.
    fn space(&mut self, b: u8) -> bool {
        // The answer starts with its object, and ends with it.
        if matches!(self.mode, Mode::Start | Mode::Done) || self.spaces >= MAX_SPACE {
            return false;
        }
        if b == b'\n' {
            if self.newlines >= MAX_NEWLINES {
                return false;
            }
            self.newlines += 1;
        }
        self.spaces += 1;
        true
    }

    /// A key's opening quote, or the end of an empty object.
    fn key_start(&mut self, b: u8) -> bool {
        if b == b'}' && self.mode == Mode::ObjectFirst {
            self.close(true)
        } else if b == b'"' {
            self.mode = Mode::Str {
                key: true,
                esc: Esc::No,
            };
            true
        } else {
            false
        }
    }

    /// After a value: a comma, or the end of its object or array.
    fn after_value(&mut self, b: u8) -> bool {
        match b {
            b',' => {
                self.mode = if self.in_object() {
                    Mode::Key
                } else {
                    Mode::Value
                };
                true
            }
            b'}' => self.close(true),
            b']' => self.close(false),
            _ => false,
        }
    }

    /// A byte inside a number at `part`, with the digit counts bounded; a
    /// byte that ends a complete number must fit what follows it.
    fn number_byte(&mut self, part: Num, b: u8) -> bool {
        let next = match (part, b) {
            (Num::Minus, b'0') => Some(Num::Zero),
            (Num::Minus, b'1'..=b'9') => Some(Num::Int),
            (Num::Int, b'0'..=b'9') => Some(Num::Int),
            (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
            (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::Exp),
            (Num::Exp, b'+' | b'-') => Some(Num::ExpSign),
            (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Some(Num::ExpDigits),
            _ => None,
        };
        match next {
            Some(n) => {
                if b.is_ascii_digit() {
                    let (count, cap) = if n == Num::ExpDigits {
                        (&mut self.exp_digits, MAX_EXP_DIGITS)
                    } else {
                        (&mut self.digits, MAX_DIGITS)
                    };
                    if *count >= cap {
                        return false;
                    }
                    *count += 1;
                }
                self.number(n)
            }
            // The number ends; the byte must fit what follows.
            None if part.complete() => {
                self.value_done();
                self.push(b)
            }
            None => false,
        }
    }

    /// The next byte of `true`, `false` or `null`.
    fn literal_byte(&mut self, which: u8, at: u8, b: u8) -> bool {
        let word = LITERALS[usize::from(which)];
        if word.get(usize::from(at)) != Some(&b) {
            return false;
        }
        if usize::from(at) + 1 == word.len() {
            self.value_done();
        } else {
            self.mode = Mode::Lit { which, at: at + 1 };
        }
        true
    }
}

/// The vocabulary as JSON mode sees it, arranged so that a mask looks at
/// few tokens one by one: inside a string, the tokens that are plain text
/// there (no quote, backslash or control byte) fit without a look;
/// elsewhere only the tokens whose first byte after any leading whitespace
/// fits are walked (whitespace there changes no more than counters, so a
/// byte that does not fit alone does not fit after it either), and that
/// byte is ASCII (JSON outside a string's text is).
#[derive(Debug)]
pub struct JsonVocab {
    /// Every token's bytes, one after another; token `i` is
    /// `bytes[starts[i]..starts[i + 1]]` (empty: never allowed).
    bytes: Vec<u8>,
    starts: Vec<usize>,
    /// Per token: plain text inside a string.
    plain: Vec<bool>,
    /// Whether any token is.
    any_plain: bool,
    /// Tokens with bytes that are not plain.
    special: Vec<u32>,
    /// Tokens by their first byte after leading whitespace, for ASCII.
    by_first: Vec<Vec<u32>>,
    /// Tokens of whitespace only.
    blank: Vec<u32>,
    eog: Vec<u32>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

impl JsonVocab {
    /// The bytes of `tok`'s tokens as generation writes them (control
    /// tokens write none, so they are never allowed).
    pub fn new(tok: &worker_tokenizer::Tokenizer) -> Self {
        let n = tok.vocab_size();
        let mut v = JsonVocab {
            bytes: Vec::new(),
            starts: Vec::with_capacity(n + 1),
            plain: vec![false; n],
            any_plain: false,
            special: Vec::new(),
            by_first: vec![Vec::new(); 128],
            blank: Vec::new(),
            eog: Vec::new(),
        };
        for i in 0..n {
            v.starts.push(v.bytes.len());
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            if tok.is_eog(id) {
                v.eog.push(id);
                continue;
            }
            let t = tok.token_bytes(id, false).unwrap_or_default();
            if t.is_empty() {
                continue;
            }
            v.bytes.extend_from_slice(t);
            if t.iter().all(|&b| b != b'"' && b != b'\\' && b >= 0x20) {
                v.plain[i] = true;
            } else {
                v.special.push(id);
            }
            match t.iter().find(|&&b| !is_space(b)) {
                None => v.blank.push(id),
                Some(&b) => {
                    if let Some(ids) = v.by_first.get_mut(usize::from(b)) {
                        ids.push(id);
                    }
                }
            }
        }
        v.starts.push(v.bytes.len());
        v.any_plain = v.plain.contains(&true);
        v
    }

    /// The bytes of token `id` (empty when it writes none).
    pub fn bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.starts.get(i), self.starts.get(i + 1)) {
            (Some(&a), Some(&b)) => self.bytes.get(a..b).unwrap_or(&[]),
            _ => &[],
        }
    }

    fn fits(&self, state: &JsonState, id: u32) -> bool {
        let mut next = *state;
        next.push_bytes(self.bytes(id))
    }

    /// Sets to `-inf` the logits of the tokens that may not come next in
    /// `state` (`allowed` is scratch, kept between calls); returns whether
    /// any may. Once the object is closed only the end-of-generation tokens
    /// remain. An allowed token keeps a finite logit, so the likeliest
    /// allowed token is the row's maximum.
    pub fn mask(&self, state: &JsonState, row: &mut [f32], allowed: &mut Vec<bool>) -> bool {
        allowed.clear();
        let mut any = false;
        if state.is_complete() {
            allowed.resize(row.len(), false);
            for &id in &self.eog {
                if let Some(a) = allowed.get_mut(id as usize) {
                    *a = true;
                    any = true;
                }
            }
        } else if state.in_string_text() {
            allowed.extend_from_slice(&self.plain);
            allowed.resize(row.len(), false);
            any = self.any_plain;
            for &id in &self.special {
                if self.fits(state, id)
                    && let Some(a) = allowed.get_mut(id as usize)
                {
                    *a = true;
                    any = true;
                }
            }
        } else {
            allowed.resize(row.len(), false);
            let fitting = self.by_first.iter().enumerate().filter(|(b, _)| {
                let mut first = *state;
                u8::try_from(*b).is_ok_and(|b| first.push(b))
            });
            for &id in fitting.flat_map(|(_, ids)| ids).chain(&self.blank) {
                if self.fits(state, id)
                    && let Some(a) = allowed.get_mut(id as usize)
                {
                    *a = true;
                    any = true;
                }
            }
        }
        for (l, a) in row.iter_mut().zip(allowed.iter()) {
            if !a {
                *l = f32::NEG_INFINITY;
            } else if l.is_nan() || *l == f32::NEG_INFINITY {
                // Choosable still, and far from overflowing when a penalty
                // scales it.
                *l = -1e30;
            }
        }
        any
    }
}

#[cfg(test)]
mod tests;
