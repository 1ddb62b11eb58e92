//! The HTTP face of snapkeep: [`router`] is the one route table, with the layers around it.
//! Handlers live in `handlers.rs`; the request's head is parsed in `extract.rs`, its body in
//! `body.rs` (JSON validity in the crate's `json` module); checks before any route in `guard.rs`; failures in
//! `error.rs`; counting in `metrics.rs`; request logs in `trace.rs`.

mod assets;
mod body;
mod error;
mod events;
mod extract;
mod guard;
mod handlers;
mod metrics;
pub mod openapi;
mod trace;

use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::config::{Config, CorsOrigins};
use crate::store::Store;

pub use self::metrics::Metrics;
pub use error::ApiError;
pub use guard::{Limiters, PeerAddr};

/// What every handler can reach: the settings and the store.
pub type AppState = Arc<App>;

#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Store,
    /// Rate limiting's token buckets; `None` when it is off.
    pub limiters: Option<Arc<Limiters>>,
    /// This app's counters, rendered by `GET /metrics`.
    pub metrics: Metrics,
    /// The client module and the inspection page, embedded in the binary.
    pub assets: assets::Assets,
    /// Places for change feeds (`SNAPKEEP_MAX_STREAMS`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the server stops: every change feed ends.
    pub stopping: tokio_util::sync::CancellationToken,
}

/// A connection's place under `SNAPKEEP_MAX_CONNECTIONS`, in each of its requests' extensions:
/// a change feed gives it back (streams have a cap of their own), and it is given back anyway
/// when the connection ends.
#[derive(Debug, Clone)]
pub struct ConnectionSlot(Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>);

impl ConnectionSlot {
    pub fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(permit))))
    }

    /// Gives the place back now.
    pub fn release(&self) {
        let permit = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(permit);
    }
}

impl App {
    pub fn new(config: Config) -> AppState {
        let store = Store::new(&config.storage, config.retention, config.quotas);
        let limiters = guard::limiters(config.rate_limit);
        let assets = assets::Assets::new(&config.base_path);
        let streams = Arc::new(tokio::sync::Semaphore::new(config.max_streams));
        Arc::new(Self {
            config,
            store,
            limiters,
            metrics: Metrics::new(),
            assets,
            streams,
            stopping: tokio_util::sync::CancellationToken::new(),
        })
    }
}

/// Builds the whole application: routes, the guard (rate limits, switch-off, credentials,
/// read-only), CORS, `nosniff`, metrics, request ids, request logs and compression.
pub fn router(app: AppState) -> Router {
    use handlers::*;
    let base = app.config.base_path.as_str();
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/", get(assets::page))
        .route("/snapkeep.js", get(assets::client))
        .route("/snapkeep-mirror.js", get(assets::mirror))
        .route(base, get(status))
        .route(&format!("{base}/openapi.json"), openapi::route(base))
        // Names starting with `_` are no session's: the operator's page and listing.
        .route(&format!("{base}/_ui"), get(assets::page))
        .route(&format!("{base}/_snapkeep.js"), get(assets::client))
        .route(&format!("{base}/_snapkeep-mirror.js"), get(assets::mirror))
        .route(&format!("{base}/_sessions"), get(sessions))
        .route(&format!("{base}/_events"), get(events::all))
        .route(
            &format!("{base}/{{session}}"),
            get(list).post(save).patch(patch).delete(delete_session),
        )
        .route(&format!("{base}/{{session}}/latest"), get(latest))
        .route(&format!("{base}/{{session}}/events"), get(events::session))
        .route(
            &format!("{base}/{{session}}/{{id}}"),
            get(snapshot).delete(delete_snapshot),
        )
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed);
    // One `layer` call with the whole stack, outermost first: `Router::layer` wraps every route
    // in a boxed service, which each request clones, so each extra call would add a clone per
    // layer to every request.
    let cors = cors(&app.config.access.cors_origins);
    let refused_origins_learn_nothing = cors
        .is_some()
        .then(|| middleware::map_response(cors_only_for_allowed_origins));
    let layers = ServiceBuilder::new()
        // Outermost, so the span below has the id: a client's own X-Request-Id is kept, else a
        // UUID is made; either way the answer carries it.
        .layer(SetRequestIdLayer::x_request_id(trace::RequestIds::new()))
        .layer(PropagateRequestIdLayer::x_request_id())
        // One line per request, when it is answered. Refusals (503 disabled, 507 quota) are no
        // server failures, and real failures are logged where they happen (ApiError), so the
        // layer logs none at error level.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(trace::span)
                // tower-http's own "started processing request" stays, at DEBUG under
                // `tower_http`: off by default, and how the process tests see a request begin.
                .on_response(trace::answered)
                .on_failure(()),
        )
        // Outside CORS and the guard, so refusals are counted too.
        .layer(middleware::from_fn_with_state(app.clone(), metrics::track))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // CORS outside the guard: a browser's preflight carries no credentials.
        .option_layer(refused_origins_learn_nothing)
        .option_layer(cors)
        .layer(middleware::from_fn_with_state(app.clone(), guard::check))
        .layer(compression());
    routes.layer(layers).with_state(app)
}

/// Answers of at least 1 KiB (the client, the page, snapshots, listings) are gzipped for a client
/// that accepts it; change feeds never are (an event would wait in the compressor). The fastest
/// level: JSON shrinks nearly as much as at the default, for a fraction of the CPU on a 16 MiB
/// snapshot.
fn compression() -> CompressionLayer<impl Predicate> {
    let worth_it = SizeAbove::new(1024)
        .and(NotForContentType::SSE)
        .and(NotForContentType::IMAGES);
    CompressionLayer::new()
        .quality(CompressionLevel::Fastest)
        .compress_when(worth_it)
}

/// tower-http's CORS layer adds `Access-Control-Allow-Methods` (preflight) and
/// `Access-Control-Expose-Headers` whatever the origin; an answer that allows no origin keeps
/// none of them, so a refused origin learns nothing.
async fn cors_only_for_allowed_origins(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        let cors: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors {
            headers.remove(name);
        }
    }
    response
}

/// The CORS layer for the configured origins: preflights answered, the headers a client sends
/// allowed, the ones it needs to read exposed. A refused origin just gets no CORS headers.
fn cors(origins: &CorsOrigins) -> Option<CorsLayer> {
    let allow = match origins {
        CorsOrigins::None => return None,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .map(|origin| HeaderValue::from_str(origin).expect("checked by config")),
        ),
    };
    let custom = |name| HeaderName::from_static(name);
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                extract::SNAPKEEP_IF_MATCH,
                extract::SNAPKEEP_IF_NONE_MATCH,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                header::ETAG,
                header::LOCATION,
                header::LAST_MODIFIED,
                header::RETRY_AFTER,
                custom("x-snapshot-id"),
                custom("x-snapshot-integrity"),
                custom("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
