//! The HTTP face of snapkeep: [`router`] is the one route table, with the layers around it.
//! Handlers live in `handlers.rs`, request parsing in `extract.rs`, failures in `error.rs`.

mod error;
mod extract;
mod handlers;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::store::Store;

pub use error::ApiError;

/// What every handler can reach: the settings and the store.
pub type AppState = Arc<App>;

#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Store,
}

impl App {
    pub fn new(config: Config) -> AppState {
        let store = Store::new(config.data_dir.clone(), config.fsync, config.retention);
        Arc::new(Self { config, store })
    }
}

/// Builds the whole application: routes, the switch-off guard and request tracing.
pub fn router(app: AppState) -> Router {
    use handlers::*;
    let base = app.config.base_path.as_str();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(base, get(status))
        .route(
            &format!("{base}/{{session}}"),
            get(list).post(save).patch(patch).delete(delete_session),
        )
        .route(&format!("{base}/{{session}}/latest"), get(latest))
        .route(
            &format!("{base}/{{session}}/{{id}}"),
            get(snapshot).delete(delete_snapshot),
        )
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), require_enabled))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

/// `SNAPKEEP_ENABLED=false`: everything under `{base}/` answers 503 before routing, so no
/// method or path shape gets another answer, and nothing on disk is read, created or touched.
async fn require_enabled(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let under_base = request
        .uri()
        .path()
        .strip_prefix(app.config.base_path.as_str())
        .is_some_and(|rest| rest.starts_with('/'));
    if under_base && !app.config.enabled {
        return Err(ApiError::Disabled);
    }
    Ok(next.run(request).await)
}
