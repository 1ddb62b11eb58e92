//! Extractors that turn an untrusted request into typed input, or into an [`ApiError`]:
//! path segments into session and snapshot ids, `If-Match`/`If-None-Match` into a
//! [`Precondition`], and the body into checked JSON bytes.
//!
//! The body pipeline, in order (each step refuses before any work of the next):
//! 1. `Content-Type` must suit the route (for `POST`: JSON, `text/plain` as `sendBeacon` sends,
//!    or none; for `PATCH`: `application/merge-patch+json`): else 415;
//! 2. `Content-Encoding` must be absent, `identity` or `gzip`: else 415;
//! 3. a `Content-Length` over the limit is refused before reading: 413 (for gzip, 0.1% + 1 KiB
//!    of gzip framing is allowed on top, since the limit is on the decompressed bytes);
//! 4. the body is read (and gunzipped) through a limit on the decoded bytes, so no more than
//!    `limit` bytes are ever buffered and a gzip bomb costs at most `limit` bytes of work: 413;
//!    the whole body must arrive within `SNAPKEEP_BODY_TIMEOUT`: else 408; bad gzip: 400;
//! 5. the bytes must be UTF-8 JSON (any value, nesting within serde_json's limit): else 400.

use std::io;

use async_compression::tokio::bufread::GzipDecoder;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::{HeaderMap, HeaderName, header, request::Parts};
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::IgnoredAny;
use tokio::io::AsyncReadExt;
use tokio_util::io::StreamReader;

use super::AppState;
use super::error::ApiError;
use crate::store::name::{SessionId, SnapshotId};
use crate::store::{Expected, Precondition};

/// The `{session}` segment of the path.
pub struct SessionPath(pub SessionId);

/// The `{session}/{id}` segments of the path.
pub struct SnapshotPath(pub SessionId, pub SnapshotId);

impl<S: Send + Sync> FromRequestParts<S> for SessionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = path_params(parts, state).await?;
        Ok(Self(SessionId::parse(param(&params, "session"))?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SnapshotPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = path_params(parts, state).await?;
        let session = SessionId::parse(param(&params, "session"))?;
        Ok(Self(session, SnapshotId::parse(param(&params, "id"))?))
    }
}

async fn path_params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<RawPathParams, ApiError> {
    RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|_| {
            ApiError::InvalidPath("Invalid path: it is not valid percent-encoded UTF-8.".into())
        })
}

fn param<'a>(params: &'a RawPathParams, name: &str) -> &'a str {
    params
        .iter()
        .find_map(|(key, value)| (key == name).then_some(value))
        .unwrap_or_default()
}

/// A write's `If-Match` / `If-None-Match` headers. Entity tags are snapshot ids in quotes;
/// `If-Match` compares strongly (a weak `W/"…"` tag never matches), `If-None-Match` weakly.
pub struct Conditions(pub Precondition);

impl<S: Send + Sync> FromRequestParts<S> for Conditions {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self(Precondition {
            if_match: expected(&parts.headers, header::IF_MATCH, false)?,
            if_none_match: expected(&parts.headers, header::IF_NONE_MATCH, true)?,
        }))
    }
}

fn expected(
    headers: &HeaderMap,
    name: HeaderName,
    weak_ok: bool,
) -> Result<Option<Expected>, ApiError> {
    let values: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .collect();
    if values.is_empty() {
        return Ok(None);
    }
    let tags: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if tags == ["*"] {
        return Ok(Some(Expected::Any));
    }
    let mut ids = Vec::new();
    for tag in tags {
        let (weak, quoted) = match tag.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        let id = quoted
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|id| !id.contains('"'))
            .ok_or_else(|| {
                ApiError::InvalidHeader(format!(
                    "{name} takes \"*\" or quoted snapshot ids (the ETag as sent), such as \
                     \"20261123T185337.123456Z-9f86d081884c7d65\"."
                ))
            })?;
        if weak_ok || !weak {
            ids.push(id.to_owned());
        }
    }
    Ok(Some(Expected::OneOf(ids)))
}

/// A `POST` body: a complete, valid JSON document within the size limit.
pub struct JsonBody(pub Bytes);

/// A `PATCH` body: a JSON merge patch (`application/merge-patch+json`) within the size limit.
pub struct MergePatchBody(pub serde_json::Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let send = "application/json (or text/plain)";
        check_content_type(req.headers(), is_json_or_text, true, send)?;
        let body = read_body(req, state).await?;
        check_json(&body).map_err(ApiError::InvalidJson)?;
        Ok(Self(body))
    }
}

impl FromRequest<AppState> for MergePatchBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_merge_patch = |t: &str| essence(t) == "application/merge-patch+json";
        let send = "application/merge-patch+json";
        check_content_type(req.headers(), is_merge_patch, false, send)?;
        let body = read_body(req, state).await?;
        check_json(&body).map_err(ApiError::InvalidJson)?;
        let patch = serde_json::from_slice(&body)
            .map_err(|err| ApiError::InvalidJson(format!("The body is not valid JSON: {err}.")))?;
        Ok(Self(patch))
    }
}

/// Step 1: `accepted` judges a present `Content-Type`; `absent_ok` says whether none is fine.
fn check_content_type(
    headers: &HeaderMap,
    accepted: impl Fn(&str) -> bool,
    absent_ok: bool,
    what_to_send: &str,
) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return match absent_ok {
            true => Ok(()),
            false => Err(ApiError::UnsupportedMediaType(format!(
                "Send the body with Content-Type {what_to_send}."
            ))),
        };
    };
    match value
        .to_str()
        .is_ok_and(|t| accepted(t) && charset_is_utf8(t))
    {
        true => Ok(()),
        false => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {value:?} is not accepted here: send {what_to_send}, in UTF-8."
        ))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

/// Steps 2 to 4 of the pipeline: the encoding, the declared length, then the bytes.
async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let (limit, timeout) = (state.config.max_body_bytes, state.config.body_timeout);
    let encoding = encoding(req.headers())?;
    // gzip frames even incompressible data in 64 KiB blocks of 5 bytes' overhead (+ header).
    let allowance = match encoding {
        Encoding::Identity => 0,
        Encoding::Gzip => limit / 1024 + 1024,
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > (limit + allowance) as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let body = req.into_body();
    let read = async {
        match encoding {
            Encoding::Identity => read_plain(body, limit).await,
            Encoding::Gzip => read_gzip(body, limit).await,
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::BodyTimeout(timeout))?
}

/// The body's one content coding. Every `Content-Encoding` line counts (two lines mean the
/// same as one with a comma), and only a single gzip layer is undone.
fn encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let lines: Vec<&str> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .collect();
    let codings: Vec<&str> = lines
        .iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|coding| !coding.eq_ignore_ascii_case("identity"))
        .collect();
    match codings.as_slice() {
        [] => Ok(Encoding::Identity),
        [one] if one.eq_ignore_ascii_case("gzip") || one.eq_ignore_ascii_case("x-gzip") => {
            Ok(Encoding::Gzip)
        }
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding {:?} is not accepted: send the body as it is, or gzipped once.",
            lines.join(", ")
        ))),
    }
}

async fn read_plain(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(ApiError::BodyTooLarge { limit }),
        Err(_) => Err(ApiError::IncompleteBody),
    }
}

/// Gunzips `body` (every gzip member in it, as `zcat` would), stopping one byte past `limit`:
/// that much work at most, whatever it holds.
async fn read_gzip(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let transport = |err| io::Error::other(Transport(err));
    let compressed = StreamReader::new(TryStreamExt::map_err(body.into_data_stream(), transport));
    let mut decoder = GzipDecoder::new(compressed);
    // Members after the first are part of the body too; bytes that are no gzip member at all
    // are an error rather than silently dropped.
    decoder.multiple_members(true);
    let mut decoded = Vec::new();
    let read = decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut decoded)
        .await;
    match read {
        Ok(_) if decoded.len() > limit => Err(ApiError::BodyTooLarge { limit }),
        Ok(_) => Ok(decoded.into()),
        Err(err) if err.get_ref().is_some_and(|inner| inner.is::<Transport>()) => {
            Err(ApiError::IncompleteBody)
        }
        Err(err) => Err(ApiError::InvalidGzip(err.to_string())),
    }
}

/// A failure to receive the body (as opposed to a failure to decode it).
#[derive(Debug, thiserror::Error)]
#[error("the body could not be received: {0}")]
struct Transport(axum::Error);

fn essence(content_type: &str) -> String {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence.trim().to_ascii_lowercase()
}

/// No `charset` parameter, or `charset=utf-8`.
fn charset_is_utf8(content_type: &str) -> bool {
    content_type
        .split(';')
        .skip(1)
        .all(|param| match param.split_once('=') {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
                value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            }
            _ => true,
        })
}

/// `application/json`, `application/*+json` or `text/plain`.
fn is_json_or_text(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence == "application/json"
        || essence == "text/plain"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Deepest nesting of arrays and objects accepted: what serde_json itself parses, so that every
/// stored snapshot can also be patched.
const MAX_DEPTH: usize = 127;

/// Checks that `bytes` hold one complete JSON value, without building it in memory. Any value
/// is fine: duplicate keys, numbers beyond f64 and lone surrogate escapes (`"\ud83d"`, which
/// `JSON.stringify` writes for a string cut inside an emoji) are stored as sent.
fn check_json(bytes: &[u8]) -> Result<(), String> {
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
    fn content_types_that_carry_json() {
        for ok in [
            "application/json",
            "Application/JSON; charset=UTF-8",
            "application/merge-patch+json",
            "application/vnd.app.state+json",
            "text/plain;charset=UTF-8",
            "text/plain; charset=\"utf-8\"",
        ] {
            assert!(is_json_or_text(ok) && charset_is_utf8(ok), "{ok}");
        }
        for bad in [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin1",
            "text/html",
            "application/jsonx",
            "",
        ] {
            assert!(!(is_json_or_text(bad) && charset_is_utf8(bad)), "{bad}");
        }
    }

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
