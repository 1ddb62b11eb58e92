//! Whether a body is one complete JSON document: checked without building it in memory, with a
//! sentence (line and column) for a person when it is not. Pure.

use serde::de::IgnoredAny;

/// Deepest nesting of arrays and objects accepted: what serde_json itself parses, so that every
/// stored snapshot can also be patched.
const MAX_DEPTH: usize = 127;

/// Checks that `bytes` hold one complete JSON value, without building it in memory. Any value
/// is fine: duplicate keys, numbers beyond f64 and lone surrogate escapes (`"\ud83d"`, which
/// `JSON.stringify` writes for a string cut inside an emoji) are stored as sent.
pub fn check_json(bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|err| {
        let (line, column) = position(&bytes[..err.valid_up_to()]);
        format!("The body is not valid UTF-8 (at line {line} column {column}).")
    })?;
    // IgnoredAny checks the syntax without decoding strings or numbers.
    serde_json::from_str::<IgnoredAny>(text)
        .map_err(|err| format!("The body is not valid JSON: {err}."))?;
    match too_deep_at(bytes) {
        None => Ok(()),
        Some(offset) => {
            let (line, column) = position(&bytes[..=offset]);
            Err(format!(
                "The body is not valid JSON here: arrays and objects nest deeper than \
                 {MAX_DEPTH} levels at line {line} column {column}."
            ))
        }
    }
}

/// The offset of the first `[` or `{` nested deeper than [`MAX_DEPTH`], in syntactically
/// valid JSON.
fn too_deep_at(json: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (offset, &byte) in json.iter().enumerate() {
        match (in_string, byte) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') | (false, b'"') => in_string = !in_string,
            (false, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(offset);
                }
            }
            (false, b']' | b'}') => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Line and column (1-based, like serde_json's) just after `prefix`.
fn position(prefix: &[u8]) -> (usize, usize) {
    let line = 1 + prefix.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + prefix.iter().rev().take_while(|&&b| b != b'\n').count();
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_json_value_is_accepted_as_is() {
        for ok in [
            "{}",
            "[]",
            "null",
            "0",
            "\"text\"",
            r#"{"a":1,"a":2}"#,
            "1e400",
            "123456789012345678901234567890",
            " {\"nested\": [true, false, {\"x\": -1.5e-3}]} \n",
        ] {
            assert_eq!(check_json(ok.as_bytes()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn invalid_json_is_described_with_line_and_column() {
        let err = check_json(b"{\n  \"a\": 1 x}").unwrap_err();
        assert!(err.ends_with("at line 2 column 10."), "{err}");
        let err = check_json(b"{\"a\": [1, 2").unwrap_err();
        assert!(err.contains("EOF while parsing"), "{err}");
        assert!(check_json(b"").is_err());
        assert!(check_json(b"{} {}").is_err());
        assert!(
            check_json(b"\xef\xbb\xbf{}").is_err(),
            "a byte-order mark is not JSON"
        );
    }

    #[test]
    fn invalid_utf8_is_located() {
        let err = check_json(b"{\"a\":\n \"\xff\"}").unwrap_err();
        assert_eq!(err, "The body is not valid UTF-8 (at line 2 column 3).");
    }

    #[test]
    fn nesting_is_limited_to_what_serde_json_parses() {
        let deep = |n| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let ok = deep(MAX_DEPTH);
        assert_eq!(check_json(ok.as_bytes()), Ok(()));
        assert!(serde_json::from_str::<serde_json::Value>(&ok).is_ok());
        let objects = format!("{}1{}", "{\"a\":".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert_eq!(check_json(objects.as_bytes()), Ok(()));
        let too_deep = deep(MAX_DEPTH + 1);
        assert!(serde_json::from_str::<serde_json::Value>(&too_deep).is_err());
        let err = check_json(too_deep.as_bytes()).unwrap_err();
        assert!(
            err.contains("deeper than 127 levels at line 1 column"),
            "{err}"
        );
        assert!(check_json(deep(100_000).as_bytes()).is_err());
        let brackets_in_strings = format!("[\"{}\", \"\\\"[\"]", "[".repeat(500));
        assert_eq!(check_json(brackets_in_strings.as_bytes()), Ok(()));
    }

    #[test]
    fn lone_surrogate_escapes_are_valid_json() {
        assert_eq!(check_json(br#"{"s":"\ud83d"}"#), Ok(()));
        assert_eq!(check_json(br#"["\udc00x", "\ud83d\ude00"]"#), Ok(()));
        assert!(check_json(br#"{"s":"\uZZZZ"}"#).is_err());
    }
}
