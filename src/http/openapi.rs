//! `GET {base}/openapi.json`: the API described in OpenAPI 3.1. The document is
//! `openapi.json` beside this file, embedded at build time; the server writes its base path
//! (and its version) in once, at start, as `assets.rs` does for the inspection page.
//!
//! [`ROUTES`] is the route table the document describes, in one place: the tests compare it
//! with the document's paths and with what the router answers (`tests/api/openapi.rs`).

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};

use super::AppState;

const DOCUMENT: &str = include_str!("openapi.json");

/// Where the document says the base path; replaced with the configured one at start.
pub const BASE_PLACEHOLDER: &str = "{{SNAPKEEP_BASE}}";

/// Where the document says the server's version.
const VERSION_PLACEHOLDER: &str = "{{SNAPKEEP_VERSION}}";

/// Every route of [`super::router`]: its path template (`{base}` for the base path) and the
/// methods it takes. `HEAD` is listed wherever `GET` is: it works there too.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/healthz", &["GET", "HEAD"]),
    ("/readyz", &["GET", "HEAD"]),
    ("/metrics", &["GET", "HEAD"]),
    ("/", &["GET", "HEAD"]),
    ("/snapkeep.js", &["GET", "HEAD"]),
    ("/snapkeep-mirror.js", &["GET", "HEAD"]),
    ("{base}", &["GET", "HEAD"]),
    ("{base}/openapi.json", &["GET", "HEAD"]),
    ("{base}/_ui", &["GET", "HEAD"]),
    ("{base}/_snapkeep.js", &["GET", "HEAD"]),
    ("{base}/_snapkeep-mirror.js", &["GET", "HEAD"]),
    ("{base}/_sessions", &["GET", "HEAD"]),
    ("{base}/_events", &["GET", "HEAD"]),
    (
        "{base}/{session}",
        &["GET", "HEAD", "POST", "PATCH", "DELETE"],
    ),
    ("{base}/{session}/latest", &["GET", "HEAD"]),
    ("{base}/{session}/events", &["GET", "HEAD"]),
    ("{base}/{session}/{id}", &["GET", "HEAD", "DELETE"]),
];

/// The document with `base_path` written into its paths, as served.
pub fn document(base_path: &str) -> String {
    // Inside a JSON string: escaped as JSON (a base path holds no such characters today).
    let quoted = serde_json::to_string(base_path).expect("a string serializes");
    let base = &quoted[1..quoted.len() - 1];
    DOCUMENT
        .replace(BASE_PLACEHOLDER, base)
        .replace(VERSION_PLACEHOLDER, env!("CARGO_PKG_VERSION"))
}

/// `GET {base}/openapi.json`, the document made once, when the router is built. Public, like
/// `GET {base}`.
pub fn route(base_path: &str) -> MethodRouter<AppState> {
    let body = Bytes::from(document(base_path));
    get(move || {
        let body = body.clone();
        async move {
            let headers = [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ];
            (headers, body).into_response()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    #[test]
    fn the_document_is_json_with_the_base_path_written_in() {
        let doc: Value = serde_json::from_str(&document("/custom/base")).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let text = doc.to_string();
        assert!(!text.contains("{{"), "a placeholder is left: {text}");
        assert!(doc["paths"]["/custom/base/{session}"].is_object());
    }

    #[test]
    fn the_document_describes_the_routes_and_no_other() {
        let doc: Value = serde_json::from_str(&document("/b")).unwrap();
        let described: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                let methods = item.as_object().unwrap().keys();
                methods
                    .filter(|m| *m != "parameters" && *m != "summary" && *m != "description")
                    .map(|m| (path.clone(), m.to_ascii_uppercase()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let listed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .flat_map(|(path, methods)| {
                let path = path.replace("{base}", "/b");
                methods.iter().map(move |m| (path.clone(), m.to_string()))
            })
            .collect();
        assert_eq!(described, listed);
    }
}
