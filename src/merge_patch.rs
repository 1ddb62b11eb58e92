//! JSON Merge Patch (RFC 7396): a pure function on `serde_json::Value`s.
//!
//! snapkeep builds serde_json with `arbitrary_precision` and `preserve_order`, so the values a
//! patch does not touch come out exactly as they went in: numbers are never rounded through
//! f64, and object keys keep their order.

use serde_json::{Map, Value};

/// Applies `patch` to `target`, as RFC 7396 section 2 describes.
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        unreachable!("made an object just above");
    };
    for (key, value) in patch {
        if value.is_null() {
            target.shift_remove(key);
        } else {
            apply(target.entry(key.as_str()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patched(target: &str, patch: &str) -> String {
        let mut target: Value = serde_json::from_str(target).unwrap();
        apply(&mut target, &serde_json::from_str(patch).unwrap());
        serde_json::to_string(&target).unwrap()
    }

    /// Every example of RFC 7396 Appendix A (a data file shared with the HTTP tests).
    #[test]
    fn rfc_7396_appendix_a() {
        let examples: Vec<Value> =
            serde_json::from_str(include_str!("../tests/data/rfc7396-appendix-a.json")).unwrap();
        assert_eq!(examples.len(), 15);
        for example in examples {
            let (target, patch) = (example["target"].to_string(), example["patch"].to_string());
            assert_eq!(
                patched(&target, &patch),
                example["result"].to_string(),
                "{target} + {patch}"
            );
        }
    }

    /// The example document of RFC 7396 section 3.
    #[test]
    fn rfc_7396_section_3() {
        let target = r#"{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},"tags":["example","sample"],"content":"This will be unchanged"}"#;
        let patch = r#"{"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]}"#;
        let result = r#"{"title":"Hello!","author":{"givenName":"John"},"tags":["example"],"content":"This will be unchanged","phoneNumber":"+01-123-456-7890"}"#;
        assert_eq!(patched(target, patch), result);
    }

    #[test]
    fn untouched_numbers_and_key_order_are_kept_exactly() {
        let target = r#"{"z":1.10,"big":123456789012345678901234567890,"tiny":1e-400,"a":0.1}"#;
        assert_eq!(
            patched(target, r#"{"a":2}"#),
            r#"{"z":1.10,"big":123456789012345678901234567890,"tiny":1e-400,"a":2}"#
        );
    }
}
