//! Extractors that turn an untrusted request's head into typed input, or into an [`ApiError`]:
//! path segments into session and snapshot ids, `If-Match`/`If-None-Match` into a
//! [`Precondition`]. (The body has its own pipeline, in `body.rs`.)

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::{HeaderMap, HeaderName, header, request::Parts};

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
///
/// `Snapkeep-If-Match` and `Snapkeep-If-None-Match` say the same, for browsers: the Fetch
/// standard makes a request that carries `If-Match` or `If-None-Match` skip caches, and
/// Chromium then skips its cache of CORS preflights too, so every cross-origin conditional
/// save would cost a preflight. (One of each pair per request.)
pub struct Conditions(pub Precondition);

pub const SNAPKEEP_IF_MATCH: HeaderName = HeaderName::from_static("snapkeep-if-match");
pub const SNAPKEEP_IF_NONE_MATCH: HeaderName = HeaderName::from_static("snapkeep-if-none-match");

impl<S: Send + Sync> FromRequestParts<S> for Conditions {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        Ok(Self(Precondition {
            if_match: either(headers, header::IF_MATCH, SNAPKEEP_IF_MATCH, false)?,
            if_none_match: either(headers, header::IF_NONE_MATCH, SNAPKEEP_IF_NONE_MATCH, true)?,
        }))
    }
}

/// The standard header, or its `Snapkeep-` twin; both at once is a mistake.
fn either(
    headers: &HeaderMap,
    standard: HeaderName,
    twin: HeaderName,
    weak_ok: bool,
) -> Result<Option<Expected>, ApiError> {
    match (headers.contains_key(&standard), headers.contains_key(&twin)) {
        (true, true) => Err(ApiError::InvalidHeader(format!(
            "Send {standard} or {twin}, not both: they say the same."
        ))),
        (false, true) => expected(headers, twin, weak_ok),
        _ => expected(headers, standard, weak_ok),
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
    // Empty list elements (`"a", , "b"`, a trailing comma) are no elements (RFC 9110, 5.6.1).
    let tags: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
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
