//! Route handlers: take typed input from the extractors, call the store, shape the answer.
//! No filesystem calls here.

use std::time::SystemTime;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::io::ReaderStream;

use super::AppState;
use super::body::{JsonBody, MergePatchBody};
use super::error::ApiError;
use super::extract::{Conditions, SessionPath, SnapshotPath};
use crate::store::name::SessionId;
use crate::store::{Opened, Saved, SnapshotBody, SnapshotInfo, Which};

type Result<T, E = ApiError> = std::result::Result<T, E>;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(app): State<AppState>) -> Result<Json<Value>> {
    if !app.config.enabled {
        // Nothing on disk is used while disabled, so nothing is probed either.
        return Ok(Json(json!({ "status": "ready", "enabled": false })));
    }
    if app.store.preparing() && !app.config.access.read_only {
        // Start-up is still removing a crash's leftovers and counting: writes wait for it.
        return Err(ApiError::Preparing);
    }
    // A read-only server (say, a restore replica on a read-only mount) needs to read only.
    let check = match app.config.access.read_only {
        true => app.store.check_readable().await,
        false => app.store.check_writable().await,
    };
    check.map_err(|err| {
        tracing::warn!(error = %err, "readiness check failed");
        ApiError::NotReady
    })?;
    Ok(Json(json!({ "status": "ready", "enabled": true })))
}

pub async fn status(State(app): State<AppState>) -> Json<Value> {
    let config = &app.config;
    let access = &config.access;
    let auth = match (&access.operator_token, &access.signing_key) {
        (None, None) => "none",
        (Some(_), None) => "token",
        (None, Some(_)) => "session-token",
        (Some(_), Some(_)) => "token+session-token",
    };
    let quotas = &config.quotas;
    let retention = &config.retention;
    Json(json!({
        "service": "snapkeep",
        "version": env!("CARGO_PKG_VERSION"),
        "enabled": config.enabled,
        "readOnly": access.read_only,
        "basePath": config.base_path,
        "maxBodyBytes": config.max_body_bytes,
        "retention": {
            "last": retention.last.get(),
            "hourly": retention.hourly,
            "daily": retention.daily,
            "weekly": retention.weekly,
            "monthly": retention.monthly,
            "yearly": retention.yearly,
            "withinSeconds": retention.within.map(|d| d.as_secs()),
            "sessionTtlSeconds": config.session_ttl.map(|d| d.as_secs()),
        },
        "auth": auth,
        "limits": {
            "requestsPerSecond": config.rate_limit.map(|r| r.per_second.get()),
            "burst": config.rate_limit.map(|r| r.burst.get()),
            "maxSessionBytes": quotas.session_bytes,
            "maxSessions": quotas.sessions,
            "maxTotalBytes": quotas.total_bytes,
        },
    }))
}

pub async fn save(
    State(app): State<AppState>,
    SessionPath(session): SessionPath,
    Conditions(precondition): Conditions,
    body: JsonBody,
) -> Result<Response> {
    let saved = match body {
        JsonBody::Memory(bytes) => app.store.save(&session, bytes, precondition).await?,
        JsonBody::Spooled(upload) => {
            let store = &app.store;
            store.save_spooled(&session, upload, precondition).await?
        }
    };
    app.metrics.saved(&saved);
    Ok(saved_response(&app, &session, saved))
}

pub async fn patch(
    State(app): State<AppState>,
    SessionPath(session): SessionPath,
    Conditions(precondition): Conditions,
    MergePatchBody(patch): MergePatchBody,
) -> Result<Response> {
    let limit = app.config.max_body_bytes;
    let saved = app
        .store
        .patch(&session, patch, precondition, limit)
        .await?;
    app.metrics.saved(&saved);
    Ok(saved_response(&app, &session, saved))
}

/// Every session with its snapshot count, bytes and newest snapshot, for the inspection page.
pub async fn sessions(State(app): State<AppState>) -> Result<Json<Value>> {
    let sessions: Vec<Value> = app
        .store
        .sessions()
        .await?
        .iter()
        .map(|summary| {
            json!({
                "session": summary.session.as_str(),
                "snapshots": summary.snapshots,
                "bytes": summary.bytes,
                "newest": summary.newest.as_ref().map(info_json),
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

pub async fn list(
    State(app): State<AppState>,
    SessionPath(session): SessionPath,
) -> Result<Json<Value>> {
    let snapshots: Vec<Value> = app
        .store
        .list(&session)
        .await?
        .iter()
        .map(info_json)
        .collect();
    Ok(Json(
        json!({ "session": session.as_str(), "snapshots": snapshots }),
    ))
}

pub async fn latest(
    State(app): State<AppState>,
    SessionPath(session): SessionPath,
    Conditions(precondition): Conditions,
) -> Result<Response> {
    let opened = app
        .store
        .open(&session, Which::Latest, precondition.if_none_match)
        .await?;
    Ok(snapshot_response(opened))
}

pub async fn snapshot(
    State(app): State<AppState>,
    SnapshotPath(session, id): SnapshotPath,
    Conditions(precondition): Conditions,
) -> Result<Response> {
    let opened = app
        .store
        .open(&session, Which::Id(id), precondition.if_none_match)
        .await?;
    Ok(snapshot_response(opened))
}

pub async fn delete_snapshot(
    State(app): State<AppState>,
    SnapshotPath(session, id): SnapshotPath,
    Conditions(precondition): Conditions,
) -> Result<StatusCode> {
    app.store.delete(&session, &id, precondition).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_session(
    State(app): State<AppState>,
    SessionPath(session): SessionPath,
    Conditions(precondition): Conditions,
) -> Result<StatusCode> {
    app.store.delete_session(&session, precondition).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unknown paths. Under the base path, a path trick (`..` or `.` as a segment, an encoded `/`,
/// NUL or non-ASCII, bytes that are no UTF-8) is the client's mistake and gets 400; any other
/// path names no resource there (an extra segment, say): 404, as anywhere else.
pub async fn fallback(State(app): State<AppState>, uri: Uri) -> ApiError {
    let base = &app.config.base_path;
    match uri.path().strip_prefix(base.as_str()) {
        Some(rest) if rest.starts_with('/') && rest.split('/').any(is_trick) => {
            ApiError::InvalidPath(format!(
                "Invalid path: expected {base}/{{session}}, {base}/{{session}}/latest, \
                 {base}/{{session}}/events or {base}/{{session}}/{{id}}."
            ))
        }
        _ => ApiError::NotFound("No such route."),
    }
}

/// A path segment that tries to leave its place: `.`, `..`, or one that decodes to something a
/// plain segment never holds.
fn is_trick(segment: &str) -> bool {
    match percent_decode(segment) {
        Some(decoded) => {
            decoded == "."
                || decoded == ".."
                || decoded
                    .chars()
                    .any(|c| c == '/' || c == '\\' || c == '\0' || !c.is_ascii())
        }
        None => true,
    }
}

/// `%XX` escapes decoded; `None` when they are malformed or not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The body of a write's answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SavedBody {
    session: String,
    id: String,
    created_at: String,
    bytes: u64,
    sha256: String,
    deduplicated: bool,
    pruned: Vec<String>,
}

impl SavedBody {
    fn new(session: &SessionId, saved: Saved) -> Self {
        Self {
            session: session.to_string(),
            id: saved.info.id.to_string(),
            created_at: saved.info.id.created_rfc3339(),
            bytes: saved.info.bytes,
            sha256: saved.sha256,
            deduplicated: saved.deduplicated,
            pruned: saved.pruned.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The answer to a write: `201` with the new snapshot, or `200` when deduplicated.
fn saved_response(app: &AppState, session: &SessionId, saved: Saved) -> Response {
    let status = match saved.deduplicated {
        true => StatusCode::OK,
        false => StatusCode::CREATED,
    };
    let location = format!("{}/{session}/{}", app.config.base_path, saved.info.id);
    let headers = [
        (header::LOCATION, location),
        (header::ETAG, etag(&saved.info.id.to_string())),
    ];
    (status, headers, Json(SavedBody::new(session, saved))).into_response()
}

/// Streams a snapshot's exact bytes, so a large one is never loaded whole; or `304` when the
/// client already has it (`If-None-Match`). A snapshot whose content no longer matches its id
/// is still served (the directory is the truth, and an operator may have edited it) but says
/// so in `X-Snapshot-Integrity: mismatch`.
fn snapshot_response(opened: Opened) -> Response {
    let snapshot = match opened {
        Opened::Unchanged(info) => {
            return (StatusCode::NOT_MODIFIED, snapshot_headers(&info)).into_response();
        }
        Opened::Snapshot(snapshot) => snapshot,
    };
    let mut headers = snapshot_headers(&snapshot.info);
    let integrity = if snapshot.intact { "ok" } else { "mismatch" };
    for (name, value) in [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (
            header::CONTENT_LENGTH,
            HeaderValue::from(snapshot.info.bytes),
        ),
        (X_SNAPSHOT_INTEGRITY, HeaderValue::from_static(integrity)),
    ] {
        headers.insert(name, value);
    }
    let body = match snapshot.body {
        SnapshotBody::Whole(bytes) => Body::from(bytes),
        SnapshotBody::Stream(stream) => Body::from_stream(ReaderStream::new(stream)),
    };
    (headers, body).into_response()
}

const X_SNAPSHOT_ID: HeaderName = HeaderName::from_static("x-snapshot-id");
const X_SNAPSHOT_INTEGRITY: HeaderName = HeaderName::from_static("x-snapshot-integrity");

/// What a `200` and a `304` for a snapshot both carry. A map of the final size, filled with
/// values made directly: this is on the path of every read of a snapshot.
fn snapshot_headers(info: &SnapshotInfo) -> HeaderMap {
    let modified = httpdate::fmt_http_date(SystemTime::from(info.id.created_at()));
    let id = info.id.to_string();
    let text = |text: String| HeaderValue::try_from(text).expect("ids and dates are ASCII");
    let mut headers = HeaderMap::with_capacity(8);
    for (name, value) in [
        (header::ETAG, text(etag(&id))),
        (header::LAST_MODIFIED, text(modified)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (X_SNAPSHOT_ID, text(id)),
    ] {
        headers.insert(name, value);
    }
    headers
}

/// How a snapshot is described in lists and in a `412`'s `latest`.
pub fn info_json(info: &SnapshotInfo) -> Value {
    json!({
        "id": info.id.to_string(),
        "createdAt": info.id.created_rfc3339(),
        "bytes": info.bytes,
    })
}

fn etag(id: &str) -> String {
    format!("\"{id}\"")
}
