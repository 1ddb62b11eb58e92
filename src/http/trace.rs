//! Request logging: one span per request, named by the route template (not the raw path, which
//! holds session ids) and the request id, and one line when it is answered, with status and
//! latency. Health checks and scrapes come every few seconds from probes and Prometheus, so
//! they log at DEBUG; everything else at INFO.
//!
//! The request id comes from `X-Request-Id` (the client's, or a UUID the layer in `mod.rs`
//! made), so a line in the log can be matched with the answer a client got.

use std::time::Duration;

use axum::http::{Request, Response};
use tracing::{Level, Span};

use super::metrics::route_of;

/// Routes polled by machines, logged at DEBUG only.
const QUIET: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The span of one request; its level is DEBUG for the quiet routes.
pub fn span<B>(request: &Request<B>) -> Span {
    let route = route_of(request);
    let method = request.method().as_str();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    match QUIET.contains(&route.as_str()) {
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
