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
    let indent = |n: usize| format!("{{\n{}\"a\": 1}}", " ".repeat(n));
    assert!(accepts(&indent(usize::from(MAX_SPACE) - 1)).is_some());
    assert!(accepts(&indent(usize::from(MAX_SPACE))).is_none());
    // Pretty-printed JSON fits; a third newline in a row does not.
    assert!(
        accepts("{\n    \"a\": {\n        \"b\": [\n            1\n        ]\n    }\n}").is_some()
    );
    assert!(accepts("{\n\n\"a\": 1}").is_some());
    assert!(accepts("{\n\n\n\"a\": 1}").is_none());
    // Nothing before the object, and nothing after it.
    assert!(accepts(" {}").is_none());
    assert!(accepts("{} ").is_none());
    // Spaces inside strings are text, not whitespace.
    assert!(accepts(&format!("{{\"{}\": 1}}", " ".repeat(100))).is_some());
    let deep = format!("{{\"a\": {}", "[".repeat(MAX_DEPTH as usize - 1));
    assert!(accepts(&deep).is_some());
    assert!(accepts(&format!("{deep}[")).is_none());
}

#[test]
fn what_it_accepts_a_parser_reads() {
    // A character split over two tokens: bytes from 0x80 up are string
    // text, so each half fits alone.
    let mut s = JsonState::default();
    assert!(s.push_str("{\"a\": \""));
    let e_acute = "é".as_bytes();
    assert!(s.push_bytes(&e_acute[..1]) && s.push_bytes(&e_acute[1..]));
    assert!(s.push_str("\"}") && s.is_complete());
    // Outside strings, such bytes never fit.
    assert!(!JsonState::default().push_bytes(&e_acute[..1]));
    // DEL and C1 controls are text; C0 controls are not.
    assert!(accepts("{\"\u{7f}\u{85}\": 1}").is_some_and(|s| s.is_complete()));
    assert!(accepts("{\"\u{1f}\": 1}").is_none());
    // Surrogate escapes only in pairs.
    for (doc, ok) in [
        ("{\"a\": \"\\ud83d\\ude00\"}", true),
        ("{\"a\": \"\\ud83d\"}", false),
        ("{\"a\": \"\\ud83dx\"}", false),
        ("{\"a\": \"\\ude00\"}", false),
        ("{\"a\": \"\\ud83d\\u0041\"}", false),
    ] {
        let got = accepts(doc).is_some_and(|s| s.is_complete());
        assert_eq!(got, ok, "{doc}");
        if ok {
            let v: serde_json::Value = serde_json::from_str(doc).expect("parses");
            assert!(v.is_object());
        }
    }
    // Numbers stay within f64.
    let long = format!("{{\"a\": {}}}", "9".repeat(usize::from(MAX_DIGITS)));
    assert!(accepts(&long).is_some_and(|s| s.is_complete()));
    let v: serde_json::Value = serde_json::from_str(&long).expect("parses");
    assert!(v.is_object());
    assert!(
        accepts(&format!(
            "{{\"a\": {}}}",
            "9".repeat(usize::from(MAX_DIGITS) + 1)
        ))
        .is_none()
    );
    assert!(accepts("{\"a\": 1.5e99}").is_some_and(|s| s.is_complete()));
    assert!(accepts("{\"a\": 1.5e999}").is_none());
}
