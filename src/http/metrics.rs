//! Prometheus metrics: what is counted ([`Metrics`]), the middleware that counts every request
//! ([`track`]), and `GET /metrics` ([`scrape`]), which renders them in the text format with every
//! name prefixed `snapkeep_`.
//!
//! Each [`App`](super::App) owns its own recorder rather than installing one globally: a global
//! recorder can be set once per process, and the integration tests run many servers in one
//! process, whose counts would then mix. So nothing here uses the `metrics::counter!` macros
//! (they go to the global recorder); everything is registered on the app's recorder.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use super::error::ErrorCode;
use super::guard::bearer;
use super::{ApiError, AppState};
use crate::auth::Keys;
use crate::store::{Counts, Saved};

const REQUESTS: &str = "snapkeep_http_requests_total";
const DURATION: &str = "snapkeep_http_request_duration_seconds";
const REJECTED: &str = "snapkeep_requests_rejected_total";
const WRITTEN: &str = "snapkeep_snapshots_written_total";
const DEDUPLICATED: &str = "snapkeep_snapshots_deduplicated_total";
const PRUNED: &str = "snapkeep_snapshots_pruned_total";
const BYTES_WRITTEN: &str = "snapkeep_bytes_written_total";
const SESSIONS: &str = "snapkeep_sessions";
const STORED_BYTES: &str = "snapkeep_stored_bytes";
const FROM_MEMORY: &str = "snapkeep_latest_reads_from_memory_total";

/// Latency buckets, in seconds: a dedup answers in well under a millisecond, an fsynced write
/// of a large snapshot can take seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Histogram samples pile up until drained; a scrape drains them, and so does a request once
/// this long has passed, so memory stays bounded when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

const HELP: [(&str, &str); 10] = [
    (
        REQUESTS,
        "HTTP requests answered, by route template, method and status.",
    ),
    (DURATION, "Time to answer, by route template and method."),
    (
        REJECTED,
        "Requests answered 4xx or 5xx, by the error's code.",
    ),
    (
        WRITTEN,
        "Snapshots written (a POST or PATCH that changed something).",
    ),
    (
        DEDUPLICATED,
        "Writes identical to the latest snapshot: nothing written.",
    ),
    (PRUNED, "Snapshots removed by retention after a write."),
    (BYTES_WRITTEN, "Bytes of snapshots written."),
    (SESSIONS, "Sessions with at least one snapshot."),
    (STORED_BYTES, "Bytes of all snapshots."),
    (
        FROM_MEMORY,
        "Reads of a latest snapshot answered from memory: its file and directory unchanged \
         since it was read.",
    ),
];

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// One app's metrics.
#[derive(Debug)]
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    started: Instant,
    /// Milliseconds after `started` of the last upkeep.
    last_upkeep: AtomicU64,
    /// The request series met so far, by route template.
    answers: RwLock<HashMap<Box<str>, Vec<Answers>>>,
}

/// The two series that count and time the answers of one route, method and status.
/// Registered once and then reused: making a metric's key (labels, their strings, hashing
/// them, the recorder's lookup) costs more than counting.
#[derive(Debug)]
struct Answers {
    method: &'static str,
    status: u16,
    duration: Histogram,
    requests: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DURATION.into()), &BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let metrics = Self {
            recorder,
            handle,
            started: Instant::now(),
            last_upkeep: AtomicU64::new(0),
            answers: RwLock::default(),
        };
        metrics.describe();
        metrics
    }

    /// Help lines, and the unlabelled counters registered at zero, so a dashboard sees them
    /// (and a rate over them works) before the first write.
    fn describe(&self) {
        // The Prometheus recorder keeps one table of help lines for every kind of metric.
        for (name, help) in HELP {
            self.recorder
                .describe_counter(name.into(), None, help.into());
        }
        for name in [WRITTEN, DEDUPLICATED, PRUNED, BYTES_WRITTEN] {
            self.counter(name, Vec::new()).increment(0);
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// Counts what a save or patch did.
    pub fn saved(&self, saved: &Saved) {
        if saved.deduplicated {
            self.counter(DEDUPLICATED, Vec::new()).increment(1);
        } else {
            self.counter(WRITTEN, Vec::new()).increment(1);
            self.counter(BYTES_WRITTEN, Vec::new())
                .increment(saved.info.bytes);
        }
        self.counter(PRUNED, Vec::new())
            .increment(saved.pruned.len() as u64);
    }

    fn answered(&self, route: &str, method: &Method, status: u16, took: Duration) {
        let method = method_label(method);
        let count = |answers: &Answers| {
            answers.duration.record(took.as_secs_f64());
            answers.requests.increment(1);
        };
        let same = |a: &&Answers| a.method == method && a.status == status;
        let known = self.answers.read().expect("metrics lock poisoned");
        match known.get(route).and_then(|all| all.iter().find(same)) {
            Some(answers) => count(answers),
            None => {
                drop(known);
                let mut known = self.answers.write().expect("metrics lock poisoned");
                let all = known.entry(route.into()).or_default();
                // Another request may have registered them since the read.
                if !all.iter().any(|a| same(&a)) {
                    all.push(self.register_answers(route, method, status));
                }
                count(all.iter().find(same).expect("just registered"));
            }
        }
        self.upkeep_now_and_then();
    }

    fn register_answers(&self, route: &str, method: &'static str, status: u16) -> Answers {
        let labels = vec![
            Label::new("route", route.to_owned()),
            Label::new("method", method),
        ];
        let key = Key::from_parts(DURATION, labels.clone());
        let duration = self.recorder.register_histogram(&key, &METADATA);
        let mut labels = labels;
        labels.push(Label::new("status", status.to_string()));
        Answers {
            method,
            status,
            duration,
            requests: self.counter(REQUESTS, labels),
        }
    }

    fn rejected(&self, reason: String) {
        self.counter(REJECTED, vec![Label::new("reason", reason)])
            .increment(1);
    }

    /// The exposition text, with the gauges (and the store's own counter) set from the store's
    /// running counts first.
    fn render(&self, counts: Counts, from_memory: u64) -> String {
        let gauge = |name| {
            self.recorder
                .register_gauge(&Key::from_name(name), &METADATA)
        };
        gauge(SESSIONS).set(counts.sessions as f64);
        gauge(STORED_BYTES).set(counts.bytes as f64);
        self.counter(FROM_MEMORY, Vec::new()).absolute(from_memory);
        self.handle.render()
    }

    fn upkeep_now_and_then(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_upkeep.load(Ordering::Relaxed);
        // Whoever swaps the time in does the upkeep; concurrent requests skip it.
        if now.saturating_sub(last) >= UPKEEP_EVERY.as_millis() as u64
            && self
                .last_upkeep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.handle.run_upkeep();
        }
    }
}

/// A bounded set of method labels: any other method would add a series per made-up name.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 7] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PATCH,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// The route template a request matched (`/api/backup/{session}/latest`), never the raw path,
/// which would make a series per session; `unmatched` when no route took it.
pub fn route_of(matched: Option<&MatchedPath>) -> &str {
    matched.map_or("unmatched", MatchedPath::as_str)
}

/// Middleware: counts and times every request, and counts refusals by their error code,
/// which [`ApiError`] leaves on every answer it makes (wherever the refusal was decided:
/// guard, extractor or store).
pub async fn track(State(app): State<AppState>, request: Request, next: Next) -> Response {
    // The template is shared, not copied: the request is gone by the time it is counted.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    let route = route_of(matched.as_ref());
    app.metrics
        .answered(route, &method, status.as_u16(), start.elapsed());
    if status.is_client_error() || status.is_server_error() {
        let code = response
            .extensions()
            .get::<ErrorCode>()
            .map_or("other", |c| c.0);
        app.metrics.rejected(code.to_owned());
    }
    response
}

/// `GET /metrics`. Open when no operator token is set or `SNAPKEEP_METRICS_PUBLIC=true`;
/// otherwise it needs the operator token, and a session token does not do.
pub async fn scrape(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let access = &app.config.access;
    if access.operator_token.is_some() && !app.config.metrics_public {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // No session: only the operator token passes.
        Keys::new(access)
            .check(bearer(&headers), None, now)
            .map_err(|_| ApiError::Unauthorized)?;
    }
    let store = &app.store;
    let text = app
        .metrics
        .render(store.counts(), store.latest_reads_from_memory());
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_beyond_the_usual_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }

    #[test]
    fn answers_are_counted_and_timed_by_route_method_and_status() {
        let metrics = Metrics::new();
        let route = "/api/backup/{session}/latest";
        for status in [200, 200, 304] {
            metrics.answered(route, &Method::GET, status, Duration::from_millis(2));
        }
        metrics.answered(route, &Method::HEAD, 200, Duration::from_millis(20));
        let text = metrics.render(Counts::default(), 0);
        let series = |method, status| {
            format!(
                r#"snapkeep_http_requests_total{{route="{route}",method="{method}",status="{status}"}}"#
            )
        };
        for (method, status, count) in [("GET", 200, 2), ("GET", 304, 1), ("HEAD", 200, 1)] {
            let line = format!("{} {count}\n", series(method, status));
            assert!(text.contains(&line), "{line} in {text}");
        }
        let timed = |method, count| {
            format!(
                r#"snapkeep_http_request_duration_seconds_count{{route="{route}",method="{method}"}} {count}"#
            )
        };
        assert!(text.contains(&timed("GET", 3)), "{text}");
        assert!(text.contains(&timed("HEAD", 1)), "{text}");
    }

    #[test]
    fn each_app_counts_on_its_own() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.answered("/healthz", &Method::GET, 200, Duration::from_millis(3));
        let series = r#"snapkeep_http_requests_total{route="/healthz",method="GET",status="200"}"#;
        let text = a.render(Counts::default(), 0);
        assert!(text.contains(&format!("{series} 1")), "{text}");
        let other = b.render(Counts::default(), 0);
        assert!(!other.contains(series), "{other}");
    }
}
