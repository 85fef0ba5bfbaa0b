//! Request validation: every violated field is reported at once, before any
//! inference, and the prompt is never echoed back.
//!
//! A body is read in two passes. First it is deserialized into its route's
//! struct, whose fields are [`Field`]s: a value of the wrong type is kept as
//! it came instead of failing the whole parse. Then [`Violations`] checks
//! the typed value field by field, collecting every problem, and the request
//! fails once with all of them. A `null` field is an absent one.

use crate::error::{ApiError, FieldError};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use worker_common::ErrorCode;
use worker_common::job::SamplingParams;

/// A field as it came: of the expected type, or anything else (which
/// validation reports).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Field<T> {
    /// The expected type.
    Typed(T),
    /// Any other JSON value.
    Other(Value),
}

impl<T> Field<T> {
    /// The typed value, if the field had the expected type.
    pub fn typed(self) -> Option<T> {
        match self {
            Field::Typed(t) => Some(t),
            Field::Other(_) => None,
        }
    }
}

/// A JSON object read as `T`. (Serde reads a struct from an array too;
/// a field that must be an object must refuse one.)
#[derive(Debug, Clone, PartialEq)]
pub struct Object<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = Map::<String, Value>::deserialize(d)?;
        T::deserialize(Value::Object(map))
            .map(Object)
            .map_err(D::Error::custom)
    }
}

/// `stop`: one string or a list of them (checked by [`Violations::stops`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// A list, of strings or not.
    Many(Vec<Field<String>>),
}

/// Parses a body into `T`: malformed JSON names the parser's position, a
/// body that is not an object is an invalid request.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "malformed JSON at line {}, column {}: {}",
                e.line(),
                e.column(),
                e
            ),
        )
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError::invalid(vec![FieldError {
            field: "(body)".into(),
            constraint: "a JSON object".into(),
            message: "the body must be a JSON object".into(),
        }]));
    };
    // Every field of a body struct takes any value, so this fails only if
    // a struct breaks that rule.
    T::deserialize(Value::Object(map))
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("reading the body failed: {e}")))
}

/// Typed checks of optional fields that collect every violation.
#[derive(Debug, Default)]
pub struct Violations {
    /// Violations found so far.
    pub errors: Vec<FieldError>,
}

impl Violations {
    /// Records a violation.
    pub fn fail(&mut self, field: &str, constraint: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_string(),
            constraint: constraint.to_string(),
            message: message.into(),
        });
    }

    /// An optional string.
    pub fn string(&mut self, name: &str, field: Option<Field<String>>) -> Option<String> {
        match field? {
            Field::Typed(s) => Some(s),
            Field::Other(_) => {
                self.fail(name, "a string", format!("{name} must be a string"));
                None
            }
        }
    }

    /// An optional number in `[lo, hi]` (`(lo, hi]` when `lo_open`).
    pub fn number(
        &mut self,
        name: &str,
        field: Option<Field<f64>>,
        lo: f64,
        lo_open: bool,
        hi: f64,
    ) -> Option<f64> {
        let field = field?;
        let constraint = format!("{}{lo}, {hi}]", if lo_open { "(" } else { "[" });
        match field {
            Field::Typed(x) if (x > lo || (!lo_open && x == lo)) && x <= hi && x.is_finite() => {
                Some(x)
            }
            Field::Typed(x) => {
                self.fail(
                    name,
                    &constraint,
                    format!("{name} must be in {constraint}, got {x}"),
                );
                None
            }
            Field::Other(_) => {
                self.fail(name, &constraint, format!("{name} must be a number"));
                None
            }
        }
    }

    /// An optional non-negative integer in `min..=max`.
    pub fn integer(
        &mut self,
        name: &str,
        field: Option<Field<u64>>,
        min: u64,
        max: u64,
    ) -> Option<u64> {
        let field = field?;
        let constraint = format!("an integer in {min}..={max}");
        match field {
            Field::Typed(x) if x >= min && x <= max => Some(x),
            _ => {
                self.fail(name, &constraint, format!("{name} must be {constraint}"));
                None
            }
        }
    }

    /// An optional boolean.
    pub fn boolean(&mut self, name: &str, field: Option<Field<bool>>) -> Option<bool> {
        match field? {
            Field::Typed(b) => Some(b),
            Field::Other(_) => {
                self.fail(name, "true or false", format!("{name} must be a boolean"));
                None
            }
        }
    }

    /// Stop strings: a string or an array of up to 4 non-empty strings of
    /// at most [`MAX_STOP_BYTES`] bytes each (every token is checked against
    /// each stop's prefixes, so their length is bounded).
    pub fn stops(&mut self, name: &str, field: Option<Field<Stop>>) -> Vec<String> {
        let constraint = "at most 4 non-empty strings of at most 256 bytes";
        let fits = |s: &str| !s.is_empty() && s.len() <= MAX_STOP_BYTES;
        match field {
            None => Vec::new(),
            Some(Field::Typed(Stop::One(s))) if fits(&s) => vec![s],
            Some(Field::Typed(Stop::Many(list))) if list.len() <= 4 => {
                let strings: Option<Vec<String>> = list
                    .into_iter()
                    .map(|s| s.typed().filter(|s| fits(s)))
                    .collect();
                strings.unwrap_or_else(|| {
                    self.fail(
                        name,
                        constraint,
                        format!("{name} must hold only non-empty strings of at most {MAX_STOP_BYTES} bytes"),
                    );
                    Vec::new()
                })
            }
            Some(_) => {
                self.fail(name, constraint, format!("{name} must be {constraint}"));
                Vec::new()
            }
        }
    }

    /// `logit_bias`: an object from token ids (as strings, the OpenAI
    /// form) below `vocab` to biases in [-100, 100], at most
    /// [`MAX_LOGIT_BIAS`] of them; sorted by id. The first bad entry is
    /// reported.
    pub fn logit_bias(
        &mut self,
        name: &str,
        field: Option<Field<Map<String, Value>>>,
        vocab: usize,
    ) -> Vec<(u32, f32)> {
        let constraint = "an object from token ids to numbers in [-100, 100]";
        let Some(field) = field else {
            return Vec::new();
        };
        let Some(m) = field.typed() else {
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
        for (k, b) in &m {
            let id = k.parse::<u32>().ok().filter(|&id| (id as usize) < vocab);
            let bias = b.as_f64().filter(|b| (-100.0..=100.0).contains(b));
            let why = match (id, bias) {
                (Some(id), Some(b)) => {
                    out.push((id, b as f32));
                    continue;
                }
                (None, _) => format!("{name}: {k:?} is not a token id below {vocab}"),
                (_, None) => format!("{name}: the bias of {k} must be a number in [-100, 100]"),
            };
            self.fail(name, constraint, why);
            return Vec::new();
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

/// The sampling fields every generation route takes (the wire's
/// `repetition_penalty` is the sampler's `repeat_penalty`).
#[derive(Debug, Default, Deserialize)]
pub struct SamplingFields {
    pub temperature: Option<Field<f64>>,
    pub top_p: Option<Field<f64>>,
    pub top_k: Option<Field<u64>>,
    pub min_p: Option<Field<f64>>,
    pub repetition_penalty: Option<Field<f64>>,
    pub frequency_penalty: Option<Field<f64>>,
    pub presence_penalty: Option<Field<f64>>,
    pub logit_bias: Option<Field<Map<String, Value>>>,
    pub seed: Option<Field<u64>>,
}

/// Checks the sampling fields, with defaults that turn off every cut a
/// field does not ask for; token ids must be below `vocab`.
pub fn sampling(
    v: &mut Violations,
    f: SamplingFields,
    default_temperature: f32,
    vocab: usize,
) -> SamplingParams {
    let temperature = v.number("temperature", f.temperature, 0.0, false, 2.0);
    let top_p = v.number("top_p", f.top_p, 0.0, true, 1.0);
    let top_k = v.integer("top_k", f.top_k, 0, u32::MAX.into());
    let min_p = v.number("min_p", f.min_p, 0.0, false, 1.0);
    let repeat_penalty = match v.number("repetition_penalty", f.repetition_penalty, 0.0, true, 2.0)
    {
        // Below f32's normal range it would be 0: logits times 0.
        Some(x) if !(x as f32).is_normal() => {
            v.fail(
                "repetition_penalty",
                "(0, 2]",
                "repetition_penalty is too small",
            );
            None
        }
        x => x,
    };
    let frequency_penalty = v.number("frequency_penalty", f.frequency_penalty, -2.0, false, 2.0);
    let presence_penalty = v.number("presence_penalty", f.presence_penalty, -2.0, false, 2.0);
    SamplingParams {
        temperature: temperature.map_or(default_temperature, |x| x as f32),
        top_p: top_p.map_or(1.0, |x| x as f32),
        top_k: top_k.map_or(0, |x| x as usize),
        min_p: min_p.map_or(0.0, |x| x as f32),
        repeat_penalty: repeat_penalty.map_or(1.0, |x| x as f32),
        frequency_penalty: frequency_penalty.map_or(0.0, |x| x as f32),
        presence_penalty: presence_penalty.map_or(0.0, |x| x as f32),
        repeat_last_n: 64,
        logit_bias: v.logit_bias("logit_bias", f.logit_bias, vocab),
        seed: v.integer("seed", f.seed, 0, u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field as a body would hold it.
    fn field<T: DeserializeOwned>(v: Value) -> Option<Field<T>> {
        serde_json::from_value(v).expect("a field takes any value")
    }

    /// The sampling fields and `stop`, as the generation routes read them.
    #[derive(Debug, Deserialize)]
    struct Generation {
        #[serde(flatten)]
        sampling: SamplingFields,
        stop: Option<Field<Stop>>,
    }

    #[test]
    fn job_ids() {
        assert!(valid_job_id("job-1.a_B"));
        assert!(!valid_job_id(""));
        assert!(!valid_job_id("has space"));
        assert!(!valid_job_id(&"x".repeat(65)));
    }

    #[test]
    fn logit_bias_is_bounded_and_sorted() {
        let read = |v: Value| {
            let mut f = Violations::default();
            let b = f.logit_bias("logit_bias", field(v), 100);
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
        let many: Map<String, Value> = (0..=MAX_LOGIT_BIAS)
            .map(|i| (i.to_string(), serde_json::json!(1)))
            .collect();
        let mut f = Violations::default();
        assert!(
            f.logit_bias("logit_bias", field(Value::Object(many)), usize::MAX)
                .is_empty()
        );
        assert_eq!(f.errors.len(), 1);
    }

    #[test]
    fn every_violation_is_reported() {
        let body =
            br#"{"temperature": 3, "top_p": 0, "top_k": -1, "repetition_penalty": 1e-50, "frequency_penalty": 2.5, "stop": ["", "a"], "seed": "x"}"#;
        let g: Generation = parse_body(body).expect("object");
        let mut f = Violations::default();
        let _ = sampling(&mut f, g.sampling, 1.0, 100);
        let _ = f.stops("stop", g.stop);
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
            let mut f = Violations::default();
            assert!(f.stops("stop", field(stop)).is_empty());
            assert_eq!(f.errors.len(), 1, "a long stop string is refused");
        }
        let mut f = Violations::default();
        let stop = field(serde_json::json!(["x".repeat(MAX_STOP_BYTES)]));
        assert_eq!(f.stops("stop", stop).len(), 1);
        assert!(f.errors.is_empty());
        let err = parse_body::<Generation>(b"{\"a\": ").expect_err("malformed");
        assert!(err.message.contains("line 1, column"), "{}", err.message);
    }

    #[test]
    fn a_field_of_the_wrong_type_spoils_only_itself() {
        let g: Generation =
            parse_body(br#"{"temperature": "hot", "top_k": 3, "stop": [1], "seed": null}"#)
                .expect("object");
        assert_eq!(
            g.sampling.temperature,
            Some(Field::Other(Value::from("hot")))
        );
        assert_eq!(g.sampling.top_k, Some(Field::Typed(3)));
        assert_eq!(g.sampling.seed, None, "null is absent");
        assert_eq!(
            g.stop,
            Some(Field::Typed(Stop::Many(vec![Field::Other(1.into())])))
        );
        // An object field refuses an array, which serde would read as a
        // struct.
        #[derive(Debug, Deserialize, PartialEq)]
        struct Pair {
            a: Option<Field<String>>,
        }
        let pair: Option<Field<Object<Pair>>> = field(serde_json::json!(["x"]));
        assert_eq!(pair, Some(Field::Other(serde_json::json!(["x"]))));
    }
}
