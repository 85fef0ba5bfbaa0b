//! Unicode facts the pre-tokenizers need: coarse categories, whitespace,
//! and GPT-2's byte-to-character table.

use unicode_general_category::{GeneralCategory as G, get_general_category};

/// The coarse category of a code point, as the pre-tokenizer regexes see it
/// (`\p{N}`, `\p{L}`, `\p{P}`, `\p{M}`, `\p{S}`); whitespace is checked first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coarse {
    Whitespace,
    Number,
    Letter,
    Punctuation,
    Mark,
    Symbol,
    Other,
}

pub(crate) fn coarse(c: char) -> Coarse {
    // White_Space is the set the reference tokenizer treats as `\s`.
    if c.is_whitespace() {
        return Coarse::Whitespace;
    }
    match get_general_category(c) {
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Coarse::Number,
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => Coarse::Letter,
        G::ConnectorPunctuation
        | G::DashPunctuation
        | G::OpenPunctuation
        | G::ClosePunctuation
        | G::InitialPunctuation
        | G::FinalPunctuation
        | G::OtherPunctuation => Coarse::Punctuation,
        G::NonspacingMark | G::SpacingMark | G::EnclosingMark => Coarse::Mark,
        G::MathSymbol | G::CurrencySymbol | G::ModifierSymbol | G::OtherSymbol => Coarse::Symbol,
        _ => Coarse::Other,
    }
}

/// GPT-2's reversible mapping of bytes to printable characters: printable
/// Latin-1 bytes map to themselves, the rest to U+0100 upwards in order.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let cp = if printable {
            u32::from(b)
        } else {
            let cp = next;
            next += 1;
            cp
        };
        table[b as usize] = char::from_u32(cp).unwrap_or('\u{FFFD}');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_byte_table() {
        let t = byte_to_char_table();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0xAD], 'Ń');
    }

    #[test]
    fn categories() {
        assert_eq!(coarse('é'), Coarse::Letter);
        assert_eq!(coarse('٣'), Coarse::Number);
        assert_eq!(coarse('\u{3000}'), Coarse::Whitespace);
        assert_eq!(coarse('\u{301}'), Coarse::Mark);
        assert_eq!(coarse('€'), Coarse::Symbol);
        assert_eq!(coarse('、'), Coarse::Punctuation);
        assert_eq!(coarse('\u{200B}'), Coarse::Other);
    }
}
