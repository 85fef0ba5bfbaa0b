//! Key/value metadata with typed getters.

use crate::error::{GgufError, Result};
use crate::value::{Array, Value};
use std::collections::HashMap;

/// A value that can be read out of a [`Value`] by the typed getters.
///
/// Integer targets accept any integer type whose value fits (files disagree
/// on whether `block_count` is a u32 or a u64); float targets accept f32 and
/// f64; everything else needs the exact type.
pub trait FromValue<'a>: Sized {
    /// The name used in error messages, e.g. `u32`.
    const EXPECTED: &'static str;

    /// Converts, or says why not.
    fn from_value(value: &'a Value) -> std::result::Result<Self, Mismatch>;
}

/// Why a [`FromValue`] conversion failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// The value has another type.
    WrongType,
    /// The value is an integer outside the target's range.
    OutOfRange,
}

macro_rules! integer_from_value {
    ($($t:ty),*) => {
        $(
            impl FromValue<'_> for $t {
                const EXPECTED: &'static str = stringify!($t);
                fn from_value(value: &Value) -> std::result::Result<Self, Mismatch> {
                    let wide = value.as_integer().ok_or(Mismatch::WrongType)?;
                    <$t>::try_from(wide).map_err(|_| Mismatch::OutOfRange)
                }
            }
        )*
    };
}

integer_from_value!(u8, u16, u32, u64, i32, i64, usize);

impl FromValue<'_> for f32 {
    const EXPECTED: &'static str = "f32";
    fn from_value(value: &Value) -> std::result::Result<Self, Mismatch> {
        match *value {
            Value::F32(v) => Ok(v),
            Value::F64(v) => Ok(v as f32),
            _ => Err(Mismatch::WrongType),
        }
    }
}

impl FromValue<'_> for f64 {
    const EXPECTED: &'static str = "f64";
    fn from_value(value: &Value) -> std::result::Result<Self, Mismatch> {
        match *value {
            Value::F32(v) => Ok(v.into()),
            Value::F64(v) => Ok(v),
            _ => Err(Mismatch::WrongType),
        }
    }
}

impl FromValue<'_> for bool {
    const EXPECTED: &'static str = "bool";
    fn from_value(value: &Value) -> std::result::Result<Self, Mismatch> {
        match *value {
            Value::Bool(v) => Ok(v),
            _ => Err(Mismatch::WrongType),
        }
    }
}

impl<'a> FromValue<'a> for &'a str {
    const EXPECTED: &'static str = "string";
    fn from_value(value: &'a Value) -> std::result::Result<Self, Mismatch> {
        match value {
            Value::String(s) => Ok(s),
            _ => Err(Mismatch::WrongType),
        }
    }
}

impl<'a> FromValue<'a> for &'a Array {
    const EXPECTED: &'static str = "array";
    fn from_value(value: &'a Value) -> std::result::Result<Self, Mismatch> {
        match value {
            Value::Array(a) => Ok(a),
            _ => Err(Mismatch::WrongType),
        }
    }
}

macro_rules! slice_from_value {
    ($($t:ty => $variant:ident, $name:literal;)*) => {
        $(
            impl<'a> FromValue<'a> for &'a [$t] {
                const EXPECTED: &'static str = $name;
                fn from_value(value: &'a Value) -> std::result::Result<Self, Mismatch> {
                    match value {
                        Value::Array(Array::$variant(v)) => Ok(v),
                        _ => Err(Mismatch::WrongType),
                    }
                }
            }
        )*
    };
}

slice_from_value! {
    String => String, "array of string";
    f32 => F32, "array of f32";
    i32 => I32, "array of i32";
    u32 => U32, "array of u32";
    u8 => U8, "array of u8";
    bool => Bool, "array of bool";
}

/// The metadata of a GGUF file: keys in file order, looked up by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key; a key that is already present is an error.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> Result<()> {
        let key = key.into();
        if self.index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    /// Sets a key, replacing any value it had.
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys and values in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The raw value of a key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Whether the key is present.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// A typed value; errors name the key and say whether it is missing or
    /// of the wrong type.
    pub fn get_as<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<T> {
        let value = self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })?;
        convert(key, value)
    }

    /// A typed value that may be absent: `Ok(None)` when missing, an error
    /// when present with the wrong type.
    pub fn get_opt<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<Option<T>> {
        self.get(key).map(|v| convert(key, v)).transpose()
    }

    /// `key` as a u32.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get_as(key)
    }

    /// `key` as a u64.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get_as(key)
    }

    /// `key` as an i32.
    pub fn get_i32(&self, key: &str) -> Result<i32> {
        self.get_as(key)
    }

    /// `key` as an f32.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.get_as(key)
    }

    /// `key` as a bool.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.get_as(key)
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get_as(key)
    }

    /// `key` as an array of any element type.
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        self.get_as(key)
    }

    /// `key` as an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        self.get_as(key)
    }

    /// `key` as an array of f32.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        self.get_as(key)
    }

    /// `key` as an array of i32.
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        self.get_as(key)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// A view that prefixes every key with `general.architecture`, so
    /// `arch.get_u32("block_count")` reads `llama.block_count`.
    pub fn arch(&self) -> Result<ArchMetadata<'_>> {
        Ok(ArchMetadata {
            metadata: self,
            arch: self.architecture()?,
        })
    }
}

fn convert<'a, T: FromValue<'a>>(key: &str, value: &'a Value) -> Result<T> {
    T::from_value(value).map_err(|m| match m {
        Mismatch::WrongType => GgufError::WrongType {
            key: key.to_string(),
            expected: T::EXPECTED,
            found: value.type_description(),
        },
        Mismatch::OutOfRange => GgufError::OutOfRange {
            key: key.to_string(),
            expected: T::EXPECTED,
            value: value
                .as_integer()
                .map(|v| v.to_string())
                .unwrap_or_default(),
        },
    })
}

/// Metadata seen through the architecture prefix (`<arch>.<suffix>`).
#[derive(Debug, Clone, Copy)]
pub struct ArchMetadata<'a> {
    metadata: &'a Metadata,
    arch: &'a str,
}

impl<'a> ArchMetadata<'a> {
    /// The architecture name.
    pub fn name(&self) -> &'a str {
        self.arch
    }

    /// The full key for a suffix: `block_count` → `llama.block_count`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}.{}", self.arch, suffix)
    }

    /// A typed value under the architecture prefix.
    pub fn get_as<T: FromValue<'a>>(&self, suffix: &str) -> Result<T> {
        self.metadata.get_as(&self.key(suffix))
    }

    /// A typed value under the architecture prefix that may be absent.
    pub fn get_opt<T: FromValue<'a>>(&self, suffix: &str) -> Result<Option<T>> {
        self.metadata.get_opt(&self.key(suffix))
    }

    /// `<arch>.<suffix>` as a u32.
    pub fn get_u32(&self, suffix: &str) -> Result<u32> {
        self.get_as(suffix)
    }

    /// `<arch>.<suffix>` as a u64.
    pub fn get_u64(&self, suffix: &str) -> Result<u64> {
        self.get_as(suffix)
    }

    /// `<arch>.<suffix>` as an f32.
    pub fn get_f32(&self, suffix: &str) -> Result<f32> {
        self.get_as(suffix)
    }

    /// `<arch>.<suffix>` as a bool.
    pub fn get_bool(&self, suffix: &str) -> Result<bool> {
        self.get_as(suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metadata {
        let mut m = Metadata::new();
        m.insert("general.architecture", "llama".into())
            .expect("insert");
        m.insert("llama.block_count", Value::U64(32))
            .expect("insert");
        m.insert("llama.context_length", Value::I32(-1))
            .expect("insert");
        m.insert("llama.rope.freq_base", Value::F32(10000.0))
            .expect("insert");
        m.insert("tokenizer.ggml.tokens", vec!["a".to_string()].into())
            .expect("insert");
        m
    }

    #[test]
    fn typed_getters_convert_and_explain() {
        let m = sample();
        assert_eq!(m.get_u32("llama.block_count").expect("u32"), 32);
        assert_eq!(
            m.arch().expect("arch").get_u32("block_count").expect("u32"),
            32
        );
        assert_eq!(m.get_f32("llama.rope.freq_base").expect("f32"), 10000.0);
        assert_eq!(
            m.get_str_array("tokenizer.ggml.tokens").expect("arr"),
            ["a"]
        );

        let err = m.get_u32("llama.embedding_length").expect_err("missing");
        assert!(
            err.to_string()
                .contains("\"llama.embedding_length\" is missing")
        );
        let err = m.get_str("llama.block_count").expect_err("type");
        assert!(
            err.to_string().contains("has type u64, expected string"),
            "{err}"
        );
        let err = m.get_u32("llama.context_length").expect_err("range");
        assert!(
            err.to_string().contains("value -1 does not fit in u32"),
            "{err}"
        );
        let err = m.get_f32_array("tokenizer.ggml.tokens").expect_err("type");
        assert!(err.to_string().contains("array of string"), "{err}");

        assert_eq!(m.get_opt::<u32>("nope").expect("opt"), None);
        assert!(m.get_opt::<u32>("general.architecture").is_err());
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let mut m = sample();
        let err = m
            .insert("llama.block_count", Value::U32(1))
            .expect_err("dup");
        assert!(matches!(err, GgufError::DuplicateKey { .. }));
        m.set("llama.block_count", Value::U32(2));
        assert_eq!(m.get_u32("llama.block_count").expect("u32"), 2);
        assert_eq!(m.len(), 5);
    }
}
