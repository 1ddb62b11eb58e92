//! Request logging: one span per request, named by the route template (not the raw path, which
//! holds session ids) and the request id, and one line when it is answered, with status and
//! latency. Health checks and scrapes come every few seconds from probes and Prometheus, so
//! they log at DEBUG; everything else at INFO.
//!
//! The request id comes from `X-Request-Id` (the client's, or a UUID made by [`RequestIds`]),
//! so a line in the log can be matched with the answer a client got.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderValue, Request, Response};
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing::{Level, Span};

use super::metrics::route_of;

/// Routes polled by machines, logged at DEBUG only.
const QUIET: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The span of one request; its level is DEBUG for the quiet routes.
pub fn span<B>(request: &Request<B>) -> Span {
    let route = route_of(request.extensions().get());
    let method = request.method().as_str();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    match QUIET.contains(&route) {
        true => tracing::debug_span!("request", method, route, request_id),
        false => tracing::info_span!("request", method, route, request_id),
    }
}

/// The request's one log line, at its span's level. A span that the filter turned off has
/// no metadata, and then its line would be filtered out as well.
pub fn answered<B>(response: &Response<B>, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    // Whole microseconds, so the number prints as 0.568 rather than 0.5680569999999999.
    let latency_ms = latency.as_micros() as f64 / 1000.0;
    match span.metadata().map(|m| *m.level()) {
        Some(Level::DEBUG) => tracing::debug!(status, latency_ms, "answered"),
        Some(_) => tracing::info!(status, latency_ms, "answered"),
        None => {}
    }
}

/// Request ids for requests that came without one: UUIDs (version 8, RFC 9562's own format)
/// made of a random start, drawn once, plus a counter. As unique as random ones, but making one
/// is an addition rather than a `getrandom` call per request (tower-http's `MakeRequestUuid`).
#[derive(Debug, Clone)]
pub struct RequestIds {
    start: u128,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    pub fn new() -> Self {
        Self {
            start: uuid::Uuid::new_v4().as_u128(),
            next: Arc::default(),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let bytes = self.start.wrapping_add(u128::from(n)).to_be_bytes();
        let id = uuid::Builder::from_custom_bytes(bytes).into_uuid();
        let text = id
            .hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer())
            .to_owned();
        HeaderValue::try_from(text).ok().map(RequestId::new)
    }
}
