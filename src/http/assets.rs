//! The browser half, built into the binary: the client module (`GET /snapkeep.js`), the
//! one-tag mirror (`GET /snapkeep-mirror.js`: the module made a classic script, followed by
//! `client/mirror.js`), and the inspection page (`GET /` and `GET {base}/_ui`). All are files
//! in `client/`, embedded at build time, so the binary stays one file and the page works with
//! no network beyond it.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::AppState;
use crate::store::name::hex;

const CLIENT: &str = include_str!("../../client/snapkeep.js");
const MIRROR: &str = include_str!("../../client/mirror.js");
const PAGE: &str = include_str!("../../client/inspect.html");

/// Where the page learns the API's base path: the server writes it in, once, at start.
const BASE_PLACEHOLDER: &str = "{{SNAPKEEP_BASE}}";
/// Where the page gets the client's envelope code (one copy of the crypto, in snapkeep.js).
const ENVELOPE_PLACEHOLDER: &str = "/* {{envelope code from snapkeep.js}} */";
/// The lines of snapkeep.js between these two read and write encryption envelopes.
const ENVELOPE_START: &str = "// --- end-to-end encryption ---";
const ENVELOPE_END: &str = "// --- end of end-to-end encryption ---";

/// The page runs its own inline script and talks to this server only.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// One embedded file, ready to answer with.
#[derive(Debug)]
pub struct Asset {
    body: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: Bytes, content_type: &'static str) -> Self {
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", hex(&digest[..12]));
        let etag = HeaderValue::from_str(&etag).expect("hex is a valid header");
        Self {
            body,
            content_type,
            etag,
        }
    }

    /// `200` with the file, or `304` when the client's `If-None-Match` names this version.
    fn respond(&self, request: &HeaderMap) -> Response {
        let unchanged = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == "*" || tag.as_bytes() == self.etag.as_bytes());
        let (status, body) = match unchanged {
            true => (StatusCode::NOT_MODIFIED, Body::empty()),
            false => (StatusCode::OK, Body::from(self.body.clone())),
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        // Always revalidated, so a new binary's file is picked up at once; the ETag makes
        // that a 304 otherwise.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if status == StatusCode::OK {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
        }
        response
    }
}

/// The client module and the page, the page with this server's base path written in.
#[derive(Debug)]
pub struct Assets {
    client: Asset,
    mirror: Asset,
    page: Asset,
}

impl Assets {
    pub fn new(base_path: &str) -> Self {
        let page = PAGE
            .replace(BASE_PLACEHOLDER, &html_escape(base_path))
            .replace(ENVELOPE_PLACEHOLDER, &envelope_code());
        Self {
            client: Asset::new(
                Bytes::from_static(CLIENT.as_bytes()),
                "text/javascript; charset=utf-8",
            ),
            mirror: Asset::new(
                Bytes::from(mirror_script()),
                "text/javascript; charset=utf-8",
            ),
            page: Asset::new(Bytes::from(page), "text/html; charset=utf-8"),
        }
    }
}

/// The one-tag mirror: a classic script (one that runs where it stands in the page, before the
/// page's later scripts), so the module's `export`s go and both files share one function's
/// scope.
fn mirror_script() -> String {
    let module = CLIENT.replace("\nexport ", "\n");
    format!(
        "// snapkeep-mirror.js: client/snapkeep.js and client/mirror.js, one classic script.\n(() => {{\n'use strict';\n{module}\n{MIRROR}}})();\n"
    )
}

/// The envelope part of the client module, as plain script for the page.
fn envelope_code() -> String {
    let start = CLIENT
        .find(ENVELOPE_START)
        .expect("snapkeep.js marks its envelope part");
    let end = CLIENT
        .find(ENVELOPE_END)
        .expect("snapkeep.js marks its envelope part's end");
    CLIENT[start..end].replace("\nexport ", "\n")
}

pub async fn mirror(State(app): State<AppState>, headers: HeaderMap) -> Response {
    app.assets.mirror.respond(&headers)
}

pub async fn client(State(app): State<AppState>, headers: HeaderMap) -> Response {
    app.assets.client.respond(&headers)
}

pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let mut response = app.assets.page.respond(&headers);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_is_the_module_without_exports_then_the_tag() {
        let script = mirror_script();
        assert!(!script.lines().any(|line| line.starts_with("export ")));
        assert!(script.contains("function connect(") && script.contains("function mirrorPage("));
        assert!(script.trim_end().ends_with("})();"));
    }

    #[test]
    fn the_page_gets_the_clients_envelope_code_without_exports() {
        let page = Assets::new("/api/backup").page.body;
        let page = std::str::from_utf8(&page).unwrap();
        assert!(!page.contains("{{envelope code from snapkeep.js}}"));
        for function in [
            "function isEnvelope(",
            "function deriveKey(",
            "function unseal(",
        ] {
            assert!(page.contains(function), "{function}");
        }
        assert!(!page.contains("export function"));
        assert!(
            !envelope_code().contains("</script"),
            "it would end the page's script"
        );
    }

    #[test]
    fn the_base_path_is_written_into_the_page_escaped() {
        assert_eq!(html_escape("/a\"b<c>&'"), "/a&quot;b&lt;c&gt;&amp;&#39;");
    }

    #[test]
    fn an_etag_names_one_version_and_matches_weakly() {
        let asset = Asset::new(Bytes::from_static(b"hello"), "text/plain");
        let mut headers = HeaderMap::new();
        assert_eq!(asset.respond(&headers).status(), StatusCode::OK);
        let tag = asset.etag.to_str().unwrap().to_owned();
        headers.insert(
            header::IF_NONE_MATCH,
            format!("\"x\", W/{tag}").parse().unwrap(),
        );
        assert_eq!(asset.respond(&headers).status(), StatusCode::NOT_MODIFIED);
        headers.insert(header::IF_NONE_MATCH, "\"other\"".parse().unwrap());
        assert_eq!(asset.respond(&headers).status(), StatusCode::OK);
    }
}
