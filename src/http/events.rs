//! The change feeds, as Server-Sent Events: `GET {base}/{session}/events` for one session,
//! `GET {base}/_events` (operator only) for all of them.
//!
//! - `event: snapshot`, `id: <id>`, `data: {"id","createdAt","bytes","sha256"}`: a new latest;
//! - `event: deleted`, `data: {"ids":[…],"latest":{…}|null}`: snapshots went away (a delete,
//!   retention's pruning, the session itself), with the latest after it;
//! - on the operator's feed, the same with `"session"` in `data`, and `event: resync` when it
//!   missed changes (a reader too slow): reload the list.
//!
//! The feed is state-based (see `store/feed.rs`): a (re)connect whose `Last-Event-ID` is not
//! the current latest gets it at once; a slow reader wakes to the current state. Streams have a
//! cap of their own (`SNAPKEEP_MAX_STREAMS`, `503` past it) and give back their connection's
//! place under `SNAPKEEP_MAX_CONNECTIONS`; a stop ends them all at once.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::extract::SessionPath;
use super::{AppState, ConnectionSlot};
use crate::store::feed::{Latest, Notice, State as FeedState, Subscription};
use crate::store::name::SnapshotId;

/// `GET {base}/{session}/events`.
pub async fn session(
    State(app): State<AppState>,
    SessionPath(session): SessionPath,
    slot: Option<axum::Extension<ConnectionSlot>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let permit = stream_permit(&app)?;
    let mut sent = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| SnapshotId::parse(text).ok());
    let told = sent.is_some();
    let mut subscription = app.store.subscribe(&session).await?;
    // A (re)connect catches up at once: the latest if it is not the one it has, or the news
    // that there is none when it thought there was.
    let now = subscription.current();
    let first = match (&now.latest, told) {
        (None, true) => Some(deleted(&[], None)),
        _ => event(&now, &mut sent),
    };
    let feed = SessionFeed {
        subscription,
        sent,
        first,
        stopping: app.stopping.clone(),
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        if let Some(first) = feed.first.take() {
            return Some((Ok(first), feed));
        }
        loop {
            let state = tokio::select! {
                _ = feed.stopping.cancelled() => return None,
                state = feed.subscription.next() => state?,
            };
            if let Some(event) = event(&state, &mut feed.sent) {
                return Some((Ok(event), feed));
            }
        }
    });
    Ok(respond(&app, slot, stream))
}

/// One subscriber's stream: dropped (with all it holds) when the client goes.
struct SessionFeed {
    subscription: Subscription,
    /// The latest this subscriber was last told of.
    sent: Option<SnapshotId>,
    /// The catch-up event, sent before any change.
    first: Option<Event>,
    stopping: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

/// `GET {base}/_events`: every session's changes, for the operator's page.
pub async fn all(
    State(app): State<AppState>,
    slot: Option<axum::Extension<ConnectionSlot>>,
) -> Result<Response, ApiError> {
    let permit = stream_permit(&app)?;
    let notices = app.store.subscribe_all();
    let feed = (notices, app.stopping.clone(), permit);
    let stream = futures_util::stream::unfold(feed, |(mut notices, stopping, permit)| async move {
        let notice = tokio::select! {
            _ = stopping.cancelled() => return None,
            notice = notices.recv() => notice,
        };
        let event = match notice {
            Ok(Notice { session, state }) => {
                let (mut data, name) = match &state.latest {
                    Some(latest) if state.removed.is_empty() => snapshot_data(latest),
                    latest => deleted_data(&state.removed, latest.as_ref()),
                };
                data["session"] = session.as_str().into();
                Event::default().event(name).data(data.to_string())
            }
            Err(RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), (notices, stopping, permit)))
    });
    Ok(respond(&app, slot, stream))
}

/// A place under `SNAPKEEP_MAX_STREAMS`, or `503`.
fn stream_permit(app: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    app.streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyStreams)
}

/// The stream as `text/event-stream`, with keep-alive comments. Its connection gives back its
/// place under the connection cap, and closes when the stream ends.
fn respond(
    app: &AppState,
    slot: Option<axum::Extension<ConnectionSlot>>,
    stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Response {
    if let Some(axum::Extension(slot)) = slot {
        slot.release();
    }
    let keep_alive = KeepAlive::new().interval(app.config.events_keepalive);
    let mut response = Sse::new(stream).keep_alive(keep_alive).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers answers by default; a feed must not wait in its buffer.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// What a subscriber that was last told of `sent` hears of `state`, if anything: a newer
/// latest is a `snapshot`; a latest gone or older (the newest deleted), or snapshots removed,
/// is `deleted`. Pure.
fn event(state: &FeedState, sent: &mut Option<SnapshotId>) -> Option<Event> {
    let latest = state.latest.as_ref();
    let now = latest.map(|l| &l.info.id);
    let newer = match (now, sent.as_ref()) {
        (Some(now), Some(before)) => now > before,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let moved = now != sent.as_ref();
    *sent = now.cloned();
    if newer {
        let (data, name) = snapshot_data(latest.expect("newer means there is one"));
        let id = latest.map(|l| l.info.id.to_string()).unwrap_or_default();
        return Some(Event::default().event(name).id(id).data(data.to_string()));
    }
    if moved || !state.removed.is_empty() {
        return Some(deleted(&state.removed, latest));
    }
    None
}

fn deleted(removed: &[SnapshotId], latest: Option<&Latest>) -> Event {
    let (data, name) = deleted_data(removed, latest);
    let id = latest.map(|l| l.info.id.to_string()).unwrap_or_default();
    Event::default().event(name).id(id).data(data.to_string())
}

fn snapshot_data(latest: &Latest) -> (Value, &'static str) {
    (describe(latest), "snapshot")
}

fn deleted_data(removed: &[SnapshotId], latest: Option<&Latest>) -> (Value, &'static str) {
    let ids: Vec<String> = removed.iter().map(ToString::to_string).collect();
    let data = json!({ "ids": ids, "latest": latest.map(describe) });
    (data, "deleted")
}

fn describe(latest: &Latest) -> Value {
    json!({
        "id": latest.info.id.to_string(),
        "createdAt": latest.info.id.created_rfc3339(),
        "bytes": latest.info.bytes,
        "sha256": latest.sha256,
    })
}
