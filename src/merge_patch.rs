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

    /// Every example of RFC 7396 Appendix A, in order.
    #[test]
    fn rfc_7396_appendix_a() {
        let examples = [
            (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
            (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
            (
                r#"{"a":{"b":"c"}}"#,
                r#"{"a":{"b":"d","c":null}}"#,
                r#"{"a":{"b":"d"}}"#,
            ),
            (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
            (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
            (r#"{"a":"foo"}"#, r#"null"#, r#"null"#),
            (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
            (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
            (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
            (
                r#"{}"#,
                r#"{"a":{"bb":{"ccc":null}}}"#,
                r#"{"a":{"bb":{}}}"#,
            ),
        ];
        for (target, patch, result) in examples {
            assert_eq!(patched(target, patch), result, "{target} + {patch}");
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
