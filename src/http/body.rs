//! The request body of a write, from bytes on the wire to checked JSON, or an [`ApiError`].
//!
//! The body pipeline, in order (each step refuses before any work of the next):
//! 1. `Content-Type` must suit the route (for `POST`: JSON, `text/plain` as `sendBeacon` sends,
//!    or none; for `PATCH`: `application/merge-patch+json`): else 415;
//! 2. `Content-Encoding` must be absent, `identity` or `gzip`: else 415;
//! 3. a `Content-Length` over the limit is refused before reading: 413 (for gzip, 0.1% + 1 KiB
//!    of gzip framing is allowed on top, since the limit is on the decompressed bytes);
//! 4. the body is read (and gunzipped) through a limit on the decoded bytes, so a gzip bomb
//!    costs at most `limit` bytes of work: 413; up to 1 MiB it is held in memory, beyond that
//!    a `POST` body goes to a temp file as it arrives (memory stays flat whatever the upload);
//!    the whole body must arrive within `SNAPKEEP_BODY_TIMEOUT`: else 408; bad gzip: 400;
//! 5. the bytes must be UTF-8 JSON (any value, nesting within serde_json's limit): else 400;
//!    a spooled body is checked by the store as it finishes it, and removed when it fails.

use std::io;

use async_compression::tokio::bufread::GzipDecoder;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use futures_util::TryStreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::io::StreamReader;

use super::AppState;
use super::error::ApiError;
use crate::json::check_json;
use crate::store::{Spool, SpoolError, Spooled, Store, StoreError};

/// A `POST` body: a complete, valid JSON document within the size limit. A large one never
/// sits in memory: it is written to a temp file as it arrives ([`SPOOL_OVER`]).
pub enum JsonBody {
    Memory(Bytes),
    Spooled(Spooled),
}

/// Bodies up to this many decoded bytes are held in memory; a larger one goes to a temp file
/// in the data directory as it arrives, so that memory stays flat whatever the upload.
const SPOOL_OVER: usize = 1 << 20;

/// A `PATCH` body: a JSON merge patch (`application/merge-patch+json`) within the size limit.
pub struct MergePatchBody(pub serde_json::Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let send = "application/json (or text/plain)";
        check_content_type(req.headers(), is_json_or_text, true, send)?;
        match read_body(req, state, Some(&state.store)).await? {
            Received::Memory(body) => {
                check_json(&body).map_err(ApiError::InvalidJson)?;
                Ok(Self::Memory(body.into()))
            }
            Received::Spooled(spool) => match spool.finish().await {
                Ok(upload) => Ok(Self::Spooled(upload)),
                Err(SpoolError::NotJson(why)) => Err(ApiError::InvalidJson(why)),
                Err(SpoolError::Store(err)) => Err(err.into()),
            },
        }
    }
}

impl FromRequest<AppState> for MergePatchBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_merge_patch = |t: &str| essence(t) == "application/merge-patch+json";
        let send = "application/merge-patch+json";
        check_content_type(req.headers(), is_merge_patch, false, send)?;
        let Received::Memory(body) = read_body(req, state, None).await? else {
            unreachable!("without a store to spool to, a body stays in memory");
        };
        check_json(&body).map_err(ApiError::InvalidJson)?;
        let patch = serde_json::from_slice(&body).map_err(|err| {
            let why = crate::json::describe(&err, std::str::from_utf8(&body).ok());
            ApiError::InvalidJson(format!("The body is not valid JSON: {why}."))
        })?;
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

/// A body as received: in memory, or (with a store to spool to) in a temp file.
enum Received {
    Memory(Vec<u8>),
    Spooled(Box<Spool>),
}

/// Steps 2 to 4 of the pipeline: the encoding, the declared length, then the bytes, spooled
/// to a temp file once past [`SPOOL_OVER`] when `spool_to` is given.
async fn read_body(
    req: Request,
    state: &AppState,
    spool_to: Option<&Store>,
) -> Result<Received, ApiError> {
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
    let transport = |err| io::Error::other(Transport(err));
    let stream = TryStreamExt::map_err(req.into_body().into_data_stream(), transport);
    let wire = StreamReader::new(stream);
    let read = async {
        match encoding {
            Encoding::Identity => receive(wire, limit, declared, spool_to).await,
            Encoding::Gzip => {
                let mut decoder = GzipDecoder::new(wire);
                // Members after the first are part of the body too; bytes that are no gzip
                // member at all are an error rather than silently dropped.
                decoder.multiple_members(true);
                receive(decoder, limit, None, spool_to).await
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::BodyTimeout(timeout))?
}

/// Reads the decoded body, stopping one read past `limit`: that much work at most, whatever
/// it holds (a gzip bomb included). `expected` (a plain body's `Content-Length`) sizes the
/// buffers, so that a 4 KiB body does not cost a 64 KiB one.
async fn receive(
    mut body: impl AsyncRead + Unpin,
    limit: usize,
    expected: Option<u64>,
    spool_to: Option<&Store>,
) -> Result<Received, ApiError> {
    const PIECE: usize = 64 * 1024;
    let expected = expected.map_or(PIECE, |n| usize::try_from(n).unwrap_or(usize::MAX));
    // One byte more than expected, to see the end without growing.
    let mut memory = Vec::with_capacity(expected.saturating_add(1).min(SPOOL_OVER + 1));
    let (mut spool, mut buf, mut total) = (None::<Spool>, Vec::new(), 0);
    loop {
        // Straight into `memory` while the body fits there (one copy fewer than through
        // `buf`, which counts for large snapshots); through `buf` once it is spooled.
        let read = match spool {
            None => {
                if memory.len() == memory.capacity() {
                    memory.reserve(PIECE);
                }
                body.read_buf(&mut memory).await
            }
            Some(_) => {
                buf.resize(PIECE, 0);
                body.read(&mut buf).await
            }
        };
        let read =
            read.map_err(
                |err| match err.get_ref().is_some_and(|inner| inner.is::<Transport>()) {
                    true => ApiError::IncompleteBody,
                    false => ApiError::InvalidGzip(err.to_string()),
                },
            )?;
        if read == 0 {
            break;
        }
        total += read;
        if total > limit {
            return Err(ApiError::BodyTooLarge { limit });
        }
        if let Some(spool) = &mut spool {
            spool.write(&buf[..read]).await.map_err(io_error)?;
        } else if let Some(store) = spool_to
            && memory.len() > SPOOL_OVER
        {
            let mut started = store.spool().await?;
            started.write(&memory).await.map_err(io_error)?;
            memory = Vec::new();
            spool = Some(started);
        }
    }
    Ok(match spool {
        Some(spool) => Received::Spooled(Box::new(spool)),
        None => Received::Memory(memory),
    })
}

/// A failure to write or read a spooled upload: a full disk is a 507, as for any write.
fn io_error(err: io::Error) -> ApiError {
    StoreError::from(err).into()
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
}
