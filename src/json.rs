//! Whether a body is one complete JSON document: checked without building it in memory, with a
//! sentence (line and column) for a person when it is not. Pure.

use std::io::{self, Read};

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
    // IgnoredAny checks the syntax without decoding strings or numbers (and without a limit
    // on nesting: that is counted next).
    serde_json::from_str::<IgnoredAny>(text).map_err(|err| {
        format!(
            "The body is not valid JSON: {}.",
            describe(&err, Some(text))
        )
    })?;
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
    Nesting::default().feed(json)
}

/// Nesting depth, fed a document in pieces (inside strings, brackets do not count).
#[derive(Debug, Default)]
struct Nesting {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Nesting {
    /// The offset in `bytes` of the first `[` or `{` nested deeper than [`MAX_DEPTH`].
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        while at < bytes.len() {
            if self.escaped {
                self.escaped = false;
            } else if self.in_string {
                // Nothing in a string counts: jump to its next quote or backslash.
                at += memchr::memchr2(b'"', b'\\', &bytes[at..])?;
                match bytes[at] {
                    b'"' => self.in_string = false,
                    _ => self.escaped = true,
                }
            } else {
                match bytes[at] {
                    b'"' => self.in_string = true,
                    b'[' | b'{' => {
                        self.depth += 1;
                        if self.depth > MAX_DEPTH {
                            return Some(at);
                        }
                    }
                    b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
            at += 1;
        }
        None
    }
}

/// serde_json's error, placed where the bad token is. serde_json notices a bad token at the
/// end of a line (`"b": tru` then a newline) only when it reads the newline, and says "line 4
/// column 0": this says line 3, at the token's first character (with `text`), or at the end
/// of line 3 (without).
pub fn describe(err: &serde_json::Error, text: Option<&str>) -> String {
    let (line, column) = (err.line(), err.column());
    let full = err.to_string();
    if column != 0 || line < 2 {
        return full;
    }
    let kind = full
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(&full);
    let Some(previous) = text.and_then(|t| t.split('\n').nth(line - 2)) else {
        return format!("{kind} at the end of line {}", line - 1);
    };
    let content = previous.trim_end();
    let delimiter = |c: char| c.is_whitespace() || ",:[]{}\"".contains(c);
    let start = content
        .char_indices()
        .rev()
        .take_while(|(_, c)| !delimiter(*c))
        .last()
        .map_or(content.len(), |(at, _)| at);
    let column = content[..start].chars().count() + 1;
    format!("{kind} at line {} column {column}", line - 1)
}

/// Line and column (1-based, like serde_json's) just after `prefix`.
fn position(prefix: &[u8]) -> (usize, usize) {
    let line = 1 + prefix.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + prefix.iter().rev().take_while(|&&b| b != b'\n').count();
    (line, column)
}

/// The same check as [`check_json`] for a document too large to hold in memory: `open` gives
/// a fresh reader of it, and it is read twice (UTF-8 and nesting, then syntax). The outer
/// error is a failure to read; the inner one the sentence for the client.
pub fn check_json_stream<R: Read>(
    mut open: impl FnMut() -> io::Result<R>,
) -> io::Result<Result<(), String>> {
    let (mut reader, mut buf, mut carried) = (open()?, vec![0u8; 64 * 1024], 0);
    let (mut nesting, mut line, mut column) = (Nesting::default(), 1, 1);
    let mut advance = |bytes: &[u8]| {
        for &byte in bytes {
            (line, column) = if byte == b'\n' {
                (line + 1, 1)
            } else {
                (line, column + 1)
            };
        }
        (line, column)
    };
    loop {
        let read = reader.read(&mut buf[carried..])?;
        let filled = carried + read;
        let piece = &buf[..filled];
        // A character cut at the end of a piece is carried over to the next one.
        let valid = match std::str::from_utf8(piece) {
            Ok(_) => filled,
            Err(err) if err.error_len().is_none() && read > 0 => err.valid_up_to(),
            Err(err) => {
                let (line, column) = advance(&piece[..err.valid_up_to()]);
                let at = format!("at line {line} column {column}");
                return Ok(Err(format!("The body is not valid UTF-8 ({at}).")));
            }
        };
        if let Some(offset) = nesting.feed(&piece[..valid]) {
            let (line, column) = advance(&piece[..=offset]);
            return Ok(Err(format!(
                "The body is not valid JSON here: arrays and objects nest deeper than \
                 {MAX_DEPTH} levels at line {line} column {column}."
            )));
        }
        advance(&piece[..valid]);
        if read == 0 {
            break;
        }
        buf.copy_within(valid..filled, 0);
        carried = filled - valid;
    }
    match serde_json::from_reader::<_, IgnoredAny>(io::BufReader::new(open()?)) {
        Ok(_) => Ok(Ok(())),
        Err(err) if err.is_io() => Err(err.into()),
        Err(err) => Ok(Err(format!(
            "The body is not valid JSON: {}.",
            describe(&err, None)
        ))),
    }
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
    fn a_bad_token_at_the_end_of_a_line_is_placed_on_it() {
        let err = check_json(b"{\n \"a\": 1,\n \"b\": tru\n}").unwrap_err();
        assert!(err.ends_with("at line 3 column 7."), "{err}");
        let err = check_json(b"[1,\n 2,\n nul\n]").unwrap_err();
        assert!(err.ends_with("at line 3 column 2."), "{err}");
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

    /// The streaming check says what the in-memory one says, also when a character or an
    /// escape is cut between two reads.
    #[test]
    fn the_streaming_check_agrees_with_the_in_memory_one() {
        let deep = |n| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let long = format!("{{\"s\":\"{}\"}}", "é😀\\\"".repeat(30_000));
        let cases: Vec<Vec<u8>> = vec![
            b"{}".to_vec(),
            long.into_bytes(),
            deep(MAX_DEPTH).into_bytes(),
            deep(MAX_DEPTH + 1).into_bytes(),
            b"{\"a\":\n \"\xff\"}".to_vec(),
            b"{\n  \"a\": 1 x}".to_vec(),
            b"{\"a\": [1, 2".to_vec(),
            b"\xe2\x82".to_vec(),
            b"".to_vec(),
        ];
        for case in cases {
            // Reads of 7 bytes at most, so pieces end inside characters and escapes.
            struct Trickle<'a>(&'a [u8]);
            impl Read for Trickle<'_> {
                fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                    let n = buf.len().min(7).min(self.0.len());
                    buf[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let streamed = check_json_stream(|| Ok(Trickle(&case))).unwrap();
            let in_memory = check_json(&case);
            assert_eq!(
                streamed.is_ok(),
                in_memory.is_ok(),
                "{:?}",
                String::from_utf8_lossy(&case)
            );
            if let (Err(a), Err(b)) = (&streamed, &in_memory)
                && (a.contains("UTF-8") || a.contains("deeper"))
            {
                assert_eq!(a, b);
            }
        }
    }

    /// The byte-at-a-time walk that `Nesting::feed` speeds up (it jumps through strings).
    fn reference_depth_error(bytes: &[u8]) -> Option<usize> {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for (offset, &byte) in bytes.iter().enumerate() {
            match (in_string, byte) {
                (true, _) if escaped => escaped = false,
                (true, b'\\') => escaped = true,
                (_, b'"') => in_string = !in_string,
                (false, b'[' | b'{') => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Some(offset);
                    }
                }
                (false, b']' | b'}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        None
    }

    proptest::proptest! {
        /// Fed whole or in two pieces cut anywhere, the nesting count finds what the plain
        /// byte-by-byte walk finds, in documents full of brackets, quotes and escapes.
        #[test]
        fn nesting_agrees_with_a_byte_by_byte_walk(
            opened in 0usize..140,
            rest in proptest::collection::vec(
                proptest::sample::select(b"[]{}\"\\ax".to_vec()), 0..600),
            cut in 0usize..800,
        ) {
            // Opened brackets first, so that some documents pass the limit.
            let doc = [vec![b'['; opened], rest].concat();
            let expected = reference_depth_error(&doc);
            proptest::prop_assert_eq!(Nesting::default().feed(&doc), expected);
            let cut = cut.min(doc.len());
            let mut nesting = Nesting::default();
            let found = nesting
                .feed(&doc[..cut])
                .or_else(|| nesting.feed(&doc[cut..]).map(|at| at + cut));
            proptest::prop_assert_eq!(found, expected);
        }
    }

    #[test]
    fn lone_surrogate_escapes_are_valid_json() {
        assert_eq!(check_json(br#"{"s":"\ud83d"}"#), Ok(()));
        assert_eq!(check_json(br#"["\udc00x", "\ud83d\ude00"]"#), Ok(()));
        assert!(check_json(br#"{"s":"\uZZZZ"}"#).is_err());
    }
}
