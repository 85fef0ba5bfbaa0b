//! Whether a live object already holds every field the operator would
//! apply. Server-side apply of an unchanged object is a no-op for the
//! object's content, but older API servers (1.20 among them) still bump
//! `managedFields` time and with it the resourceVersion; comparing first
//! keeps an idle reconcile free of writes on every server version.
//!
//! Containment alone cannot see a field the operator stopped setting (the
//! live object still has it): the controller also compares a hash of the
//! desired object, kept in an annotation ([`digest`]). Quantities compare
//! by value, since the API server rewrites `0.5` as `500m` and `1.5Gi` as
//! `1536Mi`.

use serde_json::Value;

/// True when every field set in `desired` has the same value in `live`.
/// Maps may carry extra keys in `live` (defaults, other managers' fields);
/// lists must have the same length and match element by element.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| contains(lv, dv)) || is_empty(dv)),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        (Value::String(l), Value::String(d)) => {
            l == d || quantity(l).is_some_and(|q| quantity(d) == Some(q))
        }
        (l, d) => l == d,
    }
}

/// A stable hash of `v` (SHA-256 of its JSON, keys in order), in hex.
pub fn digest(v: &Value) -> String {
    use sha2::{Digest, Sha256};
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of a Kubernetes quantity (`500m`, `1.5Gi`, `2e3`, `8`).
fn quantity(s: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("", 1.0),
    ];
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|&(suf, m)| s.strip_suffix(suf).map(|n| (n, m)))?;
    let (mantissa, exp) = match number.find(['e', 'E']) {
        Some(i) => (&number[..i], number[i + 1..].parse::<i32>().ok()?),
        None => (number, 0),
    };
    // Digits with at most one point, optionally signed: nothing else.
    let digits = mantissa.strip_prefix(['+', '-']).unwrap_or(mantissa);
    let plain = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|&c| c == '.').count() <= 1
        && digits.chars().any(|c| c.is_ascii_digit());
    if !plain || !(-30..=30).contains(&exp) {
        return None;
    }
    let v: f64 = mantissa.parse().ok()?;
    Some(v * 10f64.powi(exp) * scale)
}

/// A desired value the API server drops on write (an empty map or list, a
/// null), so its absence in the live object is no difference.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn quantities_compare_by_value() {
        let live = json!({"cpu": "500m", "memory": "1536Mi", "gpu": "1", "image": "v1"});
        assert!(contains(
            &live,
            &json!({"cpu": "0.5", "memory": "1.5Gi", "gpu": "1"})
        ));
        assert!(contains(&json!({"n": "2k"}), &json!({"n": "2e3"})));
        assert!(!contains(&live, &json!({"cpu": "1"})));
        assert!(!contains(&live, &json!({"image": "v2"})));
        // Not quantities: compared as text.
        assert!(!contains(&json!({"a": "1.0.0"}), &json!({"a": "1.0"})));
        assert!(!contains(&json!({"a": "m"}), &json!({"a": ""})));
    }

    #[test]
    fn the_digest_is_stable_and_sees_removals() {
        let a = json!({"spec": {"tolerations": [{"key": "x"}], "replicas": 1}});
        let b = json!({"spec": {"replicas": 1}});
        assert_eq!(super::digest(&a), super::digest(&a.clone()));
        assert_ne!(super::digest(&a), super::digest(&b));
        assert_eq!(super::digest(&a).len(), 32);
    }

    #[test]
    fn extra_live_fields_do_not_count() {
        let live = json!({"spec": {"replicas": 2, "progressDeadlineSeconds": 600}, "status": {}});
        assert!(contains(&live, &json!({"spec": {"replicas": 2}})));
    }

    #[test]
    fn a_changed_or_missing_field_counts() {
        let live = json!({"spec": {"replicas": 2}});
        assert!(!contains(&live, &json!({"spec": {"replicas": 3}})));
        assert!(!contains(&live, &json!({"spec": {"paused": true}})));
        assert!(!contains(&json!({"a": [1, 2]}), &json!({"a": [1]})));
        assert!(!contains(
            &json!({"a": [{"x": 1}]}),
            &json!({"a": [{"x": 2}]})
        ));
    }

    #[test]
    fn empty_desired_values_match_absence() {
        let live = json!({"metadata": {"name": "a"}});
        assert!(contains(
            &live,
            &json!({"metadata": {"name": "a", "annotations": {}}})
        ));
        assert!(contains(
            &live,
            &json!({"metadata": {"name": "a", "x": null}})
        ));
        assert!(contains(&json!({"n": 1.0}), &json!({"n": 1})));
    }
}
