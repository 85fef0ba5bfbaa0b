//! Request validation: every violated field is reported at once, before any
//! inference, and the prompt is never echoed back.

use crate::error::{ApiError, FieldError};
use serde_json::{Map, Value};
use worker_common::job::SamplingParams;

/// Parses a JSON object body; malformed JSON names the parser's position.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            worker_common::ErrorCode::InvalidRequest,
            format!(
                "malformed JSON at line {}, column {}: {}",
                e.line(),
                e.column(),
                e
            ),
        )
    })?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::invalid(vec![FieldError {
            field: "(body)".into(),
            constraint: "a JSON object".into(),
            message: "the body must be a JSON object".into(),
        }])),
    }
}

/// Typed reads of optional fields that collect every violation.
#[derive(Debug, Default)]
pub struct Fields<'a> {
    map: Option<&'a Map<String, Value>>,
    /// Violations found so far.
    pub errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    /// Reads fields of `map`.
    pub fn new(map: &'a Map<String, Value>) -> Self {
        Fields {
            map: Some(map),
            errors: Vec::new(),
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(name)).filter(|v| !v.is_null())
    }

    /// Records a violation.
    pub fn fail(&mut self, field: &str, constraint: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_string(),
            constraint: constraint.to_string(),
            message: message.into(),
        });
    }

    /// An optional string.
    pub fn string(&mut self, name: &str) -> Option<&'a str> {
        match self.get(name) {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.fail(name, "a string", format!("{name} must be a string"));
                None
            }
        }
    }

    /// An optional number in `[lo, hi]` (exclusive bounds where asked).
    pub fn number(&mut self, name: &str, lo: f64, lo_open: bool, hi: f64) -> Option<f64> {
        let v = self.get(name)?;
        let constraint = format!("{}{lo}, {hi}]", if lo_open { "(" } else { "[" });
        match v.as_f64() {
            Some(x) if (x > lo || (!lo_open && x == lo)) && x <= hi && x.is_finite() => Some(x),
            Some(x) => {
                self.fail(
                    name,
                    &constraint,
                    format!("{name} must be in {constraint}, got {x}"),
                );
                None
            }
            None => {
                self.fail(name, &constraint, format!("{name} must be a number"));
                None
            }
        }
    }

    /// An optional non-negative integer, at most `max`.
    pub fn integer(&mut self, name: &str, min: u64, max: u64) -> Option<u64> {
        let v = self.get(name)?;
        let constraint = format!("an integer in {min}..={max}");
        match v.as_u64() {
            Some(x) if x >= min && x <= max => Some(x),
            _ => {
                self.fail(name, &constraint, format!("{name} must be {constraint}"));
                None
            }
        }
    }

    /// An optional boolean.
    pub fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.get(name)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.fail(name, "true or false", format!("{name} must be a boolean"));
                None
            }
        }
    }

    /// Stop strings: a string or an array of up to 4 non-empty strings of
    /// at most [`MAX_STOP_BYTES`] bytes each (every token is checked against
    /// each stop's prefixes, so their length is bounded).
    pub fn stops(&mut self, name: &str) -> Vec<String> {
        let constraint = "at most 4 non-empty strings of at most 256 bytes";
        let fits = |s: &str| !s.is_empty() && s.len() <= MAX_STOP_BYTES;
        match self.get(name) {
            None => Vec::new(),
            Some(Value::String(s)) if fits(s) => vec![s.clone()],
            Some(Value::Array(a)) if a.len() <= 4 => {
                let strings: Vec<String> = a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                if strings.len() != a.len() || !strings.iter().all(|s| fits(s)) {
                    self.fail(
                        name,
                        constraint,
                        format!("{name} must hold only non-empty strings of at most {MAX_STOP_BYTES} bytes"),
                    );
                    return Vec::new();
                }
                strings
            }
            Some(_) => {
                self.fail(name, constraint, format!("{name} must be {constraint}"));
                Vec::new()
            }
        }
    }

    /// `logit_bias`: an object from token ids (as strings, the OpenAI
    /// form) below `vocab` to biases in [-100, 100], at most
    /// [`MAX_LOGIT_BIAS`] of them; sorted by id.
    pub fn logit_bias(&mut self, name: &str, vocab: usize) -> Vec<(u32, f32)> {
        let constraint = "an object from token ids to numbers in [-100, 100]";
        let Some(v) = self.get(name) else {
            return Vec::new();
        };
        let Some(m) = v.as_object() else {
            self.fail(name, constraint, format!("{name} must be {constraint}"));
            return Vec::new();
        };
        if m.len() > MAX_LOGIT_BIAS {
            self.fail(
                name,
                constraint,
                format!("{name} has {} entries; at most {MAX_LOGIT_BIAS}", m.len()),
            );
            return Vec::new();
        }
        let mut out = Vec::with_capacity(m.len());
        for (k, b) in m {
            let id = k.parse::<u32>().ok().filter(|&id| (id as usize) < vocab);
            let bias = b.as_f64().filter(|b| (-100.0..=100.0).contains(b));
            match (id, bias) {
                (Some(id), Some(b)) => out.push((id, b as f32)),
                (None, _) => {
                    self.fail(
                        name,
                        constraint,
                        format!("{name}: {k:?} is not a token id below {vocab}"),
                    );
                    return Vec::new();
                }
                (_, None) => {
                    self.fail(
                        name,
                        constraint,
                        format!("{name}: the bias of {k} must be a number in [-100, 100]"),
                    );
                    return Vec::new();
                }
            }
        }
        out.sort_unstable_by_key(|e| e.0);
        // "7" and "07" name one token: its biases add up, within the range.
        out.dedup_by(|b, a| {
            let same = a.0 == b.0;
            if same {
                a.1 = (a.1 + b.1).clamp(-100.0, 100.0);
            }
            same
        });
        out
    }

    /// The request fails with every violation, if there are any.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.errors))
        }
    }
}

/// Whether `id` is 1–64 of `[A-Za-z0-9._-]`.
pub fn valid_job_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The longest stop string a request may give, in bytes.
pub const MAX_STOP_BYTES: usize = 256;

/// Most entries of `logit_bias`.
pub const MAX_LOGIT_BIAS: usize = 1024;

/// Reads the sampling fields (the wire's `repetition_penalty` is the
/// sampler's `repeat_penalty`), with `/execute`'s defaults, which turn off
/// every cut a field does not ask for; token ids must be below `vocab`.
pub fn sampling(f: &mut Fields<'_>, default_temperature: f32, vocab: usize) -> SamplingParams {
    SamplingParams {
        temperature: f
            .number("temperature", 0.0, false, 2.0)
            .map_or(default_temperature, |x| x as f32),
        top_p: f.number("top_p", 0.0, true, 1.0).map_or(1.0, |x| x as f32),
        top_k: f
            .integer("top_k", 0, u32::MAX.into())
            .map_or(0, |x| x as usize),
        min_p: f.number("min_p", 0.0, false, 1.0).map_or(0.0, |x| x as f32),
        repeat_penalty: match f.number("repetition_penalty", 0.0, true, 2.0) {
            // Below f32's normal range it would be 0: logits times 0.
            Some(x) if !(x as f32).is_normal() => {
                f.fail(
                    "repetition_penalty",
                    "(0, 2]",
                    "repetition_penalty is too small",
                );
                1.0
            }
            x => x.map_or(1.0, |x| x as f32),
        },
        frequency_penalty: f
            .number("frequency_penalty", -2.0, false, 2.0)
            .map_or(0.0, |x| x as f32),
        presence_penalty: f
            .number("presence_penalty", -2.0, false, 2.0)
            .map_or(0.0, |x| x as f32),
        repeat_last_n: 64,
        logit_bias: f.logit_bias("logit_bias", vocab),
        seed: f.integer("seed", 0, u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        assert!(valid_job_id("job-1.a_B"));
        assert!(!valid_job_id(""));
        assert!(!valid_job_id("has space"));
        assert!(!valid_job_id(&"x".repeat(65)));
    }

    #[test]
    fn logit_bias_is_bounded_and_sorted() {
        let read = |v: serde_json::Value| {
            let m = serde_json::Map::from_iter([("logit_bias".to_string(), v)]);
            let mut f = Fields::new(&m);
            let b = f.logit_bias("logit_bias", 100);
            (b, f.errors.len())
        };
        assert_eq!(
            read(serde_json::json!({"9": -100, "3": 2.5, "09": 1, "7": 100, "007": 50})),
            (vec![(3, 2.5), (7, 100.0), (9, -99.0)], 0)
        );
        for bad in [
            serde_json::json!({"100": 1}),
            serde_json::json!({"x": 1}),
            serde_json::json!({"-1": 1}),
            serde_json::json!({"1": 101}),
            serde_json::json!({"1": "5"}),
            serde_json::json!([1, 2]),
        ] {
            assert_eq!(read(bad.clone()), (Vec::new(), 1), "{bad}");
        }
        let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_LOGIT_BIAS)
            .map(|i| (i.to_string(), serde_json::json!(1)))
            .collect();
        let m = serde_json::Map::from_iter([(
            "logit_bias".to_string(),
            serde_json::Value::Object(many),
        )]);
        let mut f = Fields::new(&m);
        assert!(f.logit_bias("logit_bias", usize::MAX).is_empty());
        assert_eq!(f.errors.len(), 1);
    }

    #[test]
    fn every_violation_is_reported() {
        let body =
            br#"{"temperature": 3, "top_p": 0, "top_k": -1, "repetition_penalty": 1e-50, "frequency_penalty": 2.5, "stop": ["", "a"], "seed": "x"}"#;
        let m = parse_object(body).expect("object");
        let mut f = Fields::new(&m);
        let _ = sampling(&mut f, 1.0, 100);
        let _ = f.stops("stop");
        let names: Vec<&str> = f.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            names,
            [
                "temperature",
                "top_p",
                "top_k",
                "repetition_penalty",
                "frequency_penalty",
                "seed",
                "stop"
            ]
        );
        // Stop strings are bounded in length, alone or in an array.
        for stop in [
            serde_json::json!("x".repeat(MAX_STOP_BYTES + 1)),
            serde_json::json!(["ok", "x".repeat(MAX_STOP_BYTES + 1)]),
        ] {
            let m = serde_json::Map::from_iter([("stop".to_string(), stop)]);
            let mut f = Fields::new(&m);
            assert!(f.stops("stop").is_empty());
            assert_eq!(f.errors.len(), 1, "a long stop string is refused");
        }
        let m = serde_json::Map::from_iter([(
            "stop".to_string(),
            serde_json::json!(["x".repeat(MAX_STOP_BYTES)]),
        )]);
        let mut f = Fields::new(&m);
        assert_eq!(f.stops("stop").len(), 1);
        assert!(f.errors.is_empty());
        let err = parse_object(b"{\"a\": ").expect_err("malformed");
        assert!(err.message.contains("line 1, column"), "{}", err.message);
    }
}
