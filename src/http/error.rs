//! `ApiError`: every way a request can fail, the one place that picks its status code, and its
//! JSON body `{"error": "<sentence>", "code": "<machine_code>"}`. Details of server-side
//! failures go to the log; the client gets a fixed sentence.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::handlers::info_json;
use crate::store::name::NameError;
use crate::store::{SnapshotInfo, StoreError};

/// Seconds a client is asked to wait when the object store is unavailable.
const STORAGE_RETRY_AFTER: u64 = 2;

/// Seconds a client is asked to wait when every change feed place is taken.
const STREAMS_RETRY_AFTER: u64 = 10;

/// The machine code of an error answer, left on the response for the metrics to count.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

#[derive(Debug)]
pub enum ApiError {
    /// The path has no route's shape, or is not valid percent-encoded UTF-8.
    InvalidPath(String),
    InvalidName(NameError),
    InvalidJson(String),
    InvalidGzip(String),
    /// A header is malformed (the sentence says which and how it should look).
    InvalidHeader(String),
    /// The body did not arrive within the body timeout.
    BodyTimeout(Duration),
    /// A conditional request's expectation did not hold; `latest` is the session's current one.
    PreconditionFailed {
        latest: Option<SnapshotInfo>,
    },
    /// A patch cannot apply: the latest snapshot on disk is not valid JSON.
    LatestNotJson,
    /// A file that snapkeep did not make holds the session's name in the data directory.
    SessionBlocked,
    /// The body ended early (the client hung up or the connection broke mid-upload).
    IncompleteBody,
    NotFound(&'static str),
    MethodNotAllowed,
    BodyTooLarge {
        limit: usize,
    },
    UnsupportedMediaType(String),
    Disabled,
    /// No usable credentials (401).
    Unauthorized,
    /// A session token for another session (403).
    Forbidden,
    /// `SNAPKEEP_READ_ONLY`: writes and deletes are refused.
    ReadOnly,
    TooManyRequests {
        retry_after: u64,
    },
    /// A quota would be passed; the sentence names which.
    QuotaExceeded(String),
    NotReady,
    /// Start-up is still preparing the data directory; writes wait for it.
    Preparing,
    /// The server is stopping and starts no new write.
    ShuttingDown,
    InsufficientStorage,
    /// The object store is down, slow or failing; nothing was stored.
    StorageUnavailable,
    /// `SNAPKEEP_MAX_STREAMS` change feeds are open already.
    TooManyStreams,
    /// A server-side failure; its details were logged where it happened.
    Internal,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        use ApiError::*;
        match self {
            InvalidPath(why) => (StatusCode::BAD_REQUEST, "invalid_path", why.clone()),
            InvalidName(err) => {
                let code = match err {
                    NameError::Session | NameError::Reserved => "invalid_session",
                    NameError::Snapshot => "invalid_id",
                };
                (
                    StatusCode::BAD_REQUEST,
                    code,
                    format!("Invalid path: {err}."),
                )
            }
            InvalidJson(why) => (StatusCode::BAD_REQUEST, "invalid_json", why.clone()),
            InvalidGzip(why) => (
                StatusCode::BAD_REQUEST,
                "invalid_gzip",
                format!("The body is not valid gzip: {why}."),
            ),
            InvalidHeader(why) => (StatusCode::BAD_REQUEST, "invalid_header", why.clone()),
            BodyTimeout(limit) => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("The request body did not arrive within {limit:?}."),
            ),
            PreconditionFailed { .. } => (
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "The session's latest snapshot is not the one this request expected; \
                 \"latest\" is the current one."
                    .into(),
            ),
            LatestNotJson => (
                StatusCode::CONFLICT,
                "latest_not_json",
                "The latest snapshot is not JSON that a patch can apply to (it was edited on \
                 disk, or it holds a lone surrogate escape such as \\ud83d); POST a whole \
                 document instead."
                    .into(),
            ),
            SessionBlocked => (
                StatusCode::CONFLICT,
                "session_blocked",
                "A file that snapkeep did not make has this session's name in the data \
                 directory; use another session id."
                    .into(),
            ),
            IncompleteBody => (
                StatusCode::BAD_REQUEST,
                "incomplete_body",
                "The request body ended before it was complete.".into(),
            ),
            NotFound(what) => (StatusCode::NOT_FOUND, "not_found", (*what).into()),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This path does not take that method.".into(),
            ),
            BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("The snapshot is larger than this server's limit of {limit} bytes."),
            ),
            UnsupportedMediaType(why) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                why.clone(),
            ),
            Disabled => (
                StatusCode::SERVICE_UNAVAILABLE,
                "disabled",
                "Backups are switched off on this server (SNAPKEEP_ENABLED=false).".into(),
            ),
            Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Send a valid token: Authorization: Bearer <token> (an operator token, or a \
                 session token that has not expired)."
                    .into(),
            ),
            Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "This token is for another session.".into(),
            ),
            ReadOnly => (
                StatusCode::SERVICE_UNAVAILABLE,
                "read_only",
                "This server is read-only (SNAPKEEP_READ_ONLY=true): snapshots can be read and \
                 restored elsewhere, not written or deleted."
                    .into(),
            ),
            TooManyRequests { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("Too many requests; try again in {retry_after} s."),
            ),
            QuotaExceeded(why) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                why.clone(),
            ),
            ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "The server is stopping; nothing was written. Try again in a moment.".into(),
            ),
            Preparing => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "Start-up is still preparing the storage (removing a crash's temp files, counting \
                 snapshots); reads are served, writes wait until it is done."
                    .into(),
            ),
            NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "The storage cannot be used (written to, or read from when read-only): the data \
                 directory, or the bucket."
                    .into(),
            ),
            InsufficientStorage => (
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                "The server has no space left for this snapshot; earlier snapshots are intact."
                    .into(),
            ),
            StorageUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                format!(
                    "The storage behind this server is not answering; nothing was changed. Try \
                     again in {STORAGE_RETRY_AFTER} s."
                ),
            ),
            TooManyStreams => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                format!(
                    "This server has as many change feeds open as it takes \
                     (SNAPKEEP_MAX_STREAMS); try again in {STREAMS_RETRY_AFTER} s."
                ),
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "The server failed to handle this request; the details are in its log.".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, error) = self.parts();
        let mut body = json!({ "error": error, "code": code });
        match &self {
            ApiError::BodyTooLarge { limit } => body["limit"] = (*limit).into(),
            ApiError::PreconditionFailed { latest } => {
                body["latest"] = latest.as_ref().map(info_json).unwrap_or_default();
            }
            _ => {}
        }
        let mut response = (status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(code));
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"snapkeep\""),
                );
            }
            ApiError::TooManyRequests { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            ApiError::StorageUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(STORAGE_RETRY_AFTER));
            }
            ApiError::TooManyStreams => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(STREAMS_RETRY_AFTER));
            }
            _ => {}
        }
        response
    }
}

impl From<NameError> for ApiError {
    fn from(err: NameError) -> Self {
        ApiError::InvalidName(err)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::NotFound("No such snapshot."),
            StoreError::ShuttingDown => ApiError::ShuttingDown,
            // No HTTP route restores yet; when one does, a damaged snapshot is the server's
            // problem to report, not the client's mistake.
            StoreError::Damaged => ApiError::Internal,
            StoreError::PreconditionFailed { latest } => ApiError::PreconditionFailed { latest },
            StoreError::TooLarge { limit } => ApiError::BodyTooLarge { limit },
            StoreError::SessionBlocked => ApiError::SessionBlocked,
            StoreError::OverQuota(why) => ApiError::QuotaExceeded(why),
            StoreError::LatestNotJson(err) => {
                tracing::warn!(error = %err, "cannot patch: the latest snapshot is not JSON");
                ApiError::LatestNotJson
            }
            StoreError::StorageFull(io) => {
                tracing::warn!(error = %io, "refused a write: storage full");
                ApiError::InsufficientStorage
            }
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "the object store is unavailable");
                ApiError::StorageUnavailable
            }
            StoreError::Io(io) => {
                tracing::error!(error = %io, "storage error");
                ApiError::Internal
            }
        }
    }
}
