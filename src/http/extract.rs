//! Extractors that turn an untrusted request into typed input, or into an [`ApiError`]:
//! path segments into session and snapshot ids, and the body into checked JSON bytes.
//!
//! The body pipeline, in order (each step refuses before any work of the next):
//! 1. `Content-Type` must be JSON, `text/plain` (what `sendBeacon` sends) or absent: else 415;
//! 2. `Content-Encoding` must be absent or `identity`: else 415;
//! 3. a `Content-Length` over the limit is refused before reading: 413;
//! 4. the body is read through a limit, so no more than `limit` bytes are ever buffered: 413;
//! 5. the bytes must be UTF-8 JSON (any value, nesting within serde_json's limit): else 400.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::{HeaderMap, header, request::Parts};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::AppState;
use super::error::ApiError;
use crate::store::name::{SessionId, SnapshotId};

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

/// A request body that is a complete, valid JSON document within the size limit.
pub struct JsonBody(pub Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        check_headers(req.headers(), limit)?;
        let body = match Limited::new(req.into_body(), limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.is::<LengthLimitError>() => {
                return Err(ApiError::BodyTooLarge { limit });
            }
            Err(_) => return Err(ApiError::IncompleteBody),
        };
        check_json(&body).map_err(ApiError::InvalidJson)?;
        Ok(Self(body))
    }
}

fn check_headers(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    if let Some(value) = headers.get(header::CONTENT_TYPE)
        && !value.to_str().is_ok_and(is_json_or_text)
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {value:?} is not accepted: send the snapshot as application/json \
             (or text/plain), in UTF-8."
        )));
    }
    if let Some(value) = headers.get(header::CONTENT_ENCODING)
        && !value.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding {value:?} is not accepted: send the body uncompressed."
        )));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => Err(ApiError::BodyTooLarge { limit }),
        _ => Ok(()),
    }
}

/// `application/json`, `application/*+json` or `text/plain`, with no charset other than UTF-8.
fn is_json_or_text(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let type_ok = essence == "application/json"
        || essence == "text/plain"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    let charset_ok = parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    type_ok && charset_ok
}

/// Checks that `bytes` hold one complete JSON value, without building it in memory. Any value
/// is fine: duplicate keys and numbers beyond f64 are stored as sent.
fn check_json(bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|err| {
        let (line, column) = position(&bytes[..err.valid_up_to()]);
        format!("The body is not valid UTF-8 (at line {line} column {column}).")
    })?;
    serde_json::from_str::<AnyJson>(text)
        .map(|_| ())
        .map_err(|err| format!("The body is not valid JSON: {err}."))
}

/// Line and column (1-based, like serde_json's) just after `prefix`.
fn position(prefix: &[u8]) -> (usize, usize) {
    let line = 1 + prefix.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + prefix.iter().rev().take_while(|&&b| b != b'\n').count();
    (line, column)
}

/// Accepts any JSON value and keeps nothing of it. Unlike `IgnoredAny`, it descends through
/// `deserialize_any`, so serde_json's nesting limit applies and a pathological document is
/// refused instead of being stored.
struct AnyJson;

impl<'de> Deserialize<'de> for AnyJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyJsonVisitor)
    }
}

struct AnyJsonVisitor;

impl<'de> Visitor<'de> for AnyJsonVisitor {
    type Value = AnyJson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_i64<E>(self, _: i64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_u64<E>(self, _: u64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_f64<E>(self, _: f64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_str<E>(self, _: &str) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_unit<E>(self) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyJson, A::Error> {
        while seq.next_element::<AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }
    // serde_json's arbitrary-precision numbers also arrive here, as a one-entry map.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyJson, A::Error> {
        while map.next_entry::<IgnoredAny, AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }
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
            assert!(is_json_or_text(ok), "{ok}");
        }
        for bad in [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin1",
            "text/html",
            "application/jsonx",
            "",
        ] {
            assert!(!is_json_or_text(bad), "{bad}");
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
    fn nesting_beyond_serde_json_limit_is_refused() {
        let deep = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check_json(deep(100).as_bytes()), Ok(()));
        let err = check_json(deep(10_000).as_bytes()).unwrap_err();
        assert!(err.contains("recursion limit exceeded"), "{err}");
    }
}
