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
