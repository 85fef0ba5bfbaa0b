//! Kubernetes resource quantities (`24Gi`, `80G`, `1.5e9`) as byte counts.
//!
//! `spec.gpu.memory` is a Kubernetes `Quantity`; the operator checks it and
//! hands it to `llorch-worker fetch --gpu-memory` unchanged, so both parse
//! it with this one function.

use std::fmt;

/// A string that is not a quantity of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError {
    input: String,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a memory size: use a Kubernetes quantity such as 24Gi, 80G or 81920Mi",
            self.input
        )
    }
}

impl std::error::Error for QuantityError {}

const SUFFIXES: [(&str, u64); 12] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// The number of bytes `s` stands for, rounded up to a whole byte. Accepts
/// a decimal number with an optional binary (`Ki`…`Ei`) or decimal
/// (`k`…`E`) suffix, or a decimal exponent (`1e9`). Negative values and
/// values past `u64::MAX` are errors.
pub fn parse_bytes(s: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError {
        input: s.chars().take(64).collect(),
    };
    let t = s.trim();
    let (number, multiplier) = match SUFFIXES.iter().find(|(suf, _)| t.ends_with(suf)) {
        Some((suf, m)) => (&t[..t.len() - suf.len()], *m as f64),
        None => match t.find(['e', 'E']) {
            Some(i) => {
                let exp: i32 = t[i + 1..].parse().map_err(|_| err())?;
                if !(-30..=30).contains(&exp) {
                    return Err(err());
                }
                (&t[..i], 10f64.powi(exp))
            }
            None => (t, 1.0),
        },
    };
    let plain = number.strip_prefix('+').unwrap_or(number);
    if plain.is_empty() || !plain.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(err());
    }
    let value: f64 = plain.parse().map_err(|_| err())?;
    let bytes = (value * multiplier).ceil();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_and_exponents() {
        assert_eq!(parse_bytes("24Gi"), Ok(24 << 30));
        assert_eq!(parse_bytes("80G"), Ok(80_000_000_000));
        assert_eq!(parse_bytes("81920Mi"), Ok(80 << 30));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes(" 2k "), Ok(2000));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "Gi",
            "-1Gi",
            "1.2.3",
            "lots",
            "1e999",
            "9999999Ei",
            "1x",
            "1e",
        ] {
            let e = parse_bytes(bad).expect_err(bad);
            assert!(e.to_string().contains("is not a memory size"), "{e}");
        }
    }
}
