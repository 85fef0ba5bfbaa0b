//! Whether a live object already holds every field the operator would
//! apply. Server-side apply of an unchanged object is a no-op for the
//! object's content, but older API servers (1.20 among them) still bump
//! `managedFields` time and with it the resourceVersion; comparing first
//! keeps an idle reconcile free of writes on every server version.

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
        (l, d) => l == d,
    }
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
