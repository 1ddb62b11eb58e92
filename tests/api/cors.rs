//! SNAPKEEP_CORS_ORIGINS: preflights answered without credentials, the allowed origin (or `*`)
//! and the exposed headers on actual requests, nothing at all for a refused origin or when CORS
//! is unset.

use reqwest::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, AUTHORIZATION, CONTENT_TYPE, HeaderMap, ORIGIN, VARY,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, Response};

use crate::helpers::{BASE, TestApp, json};

const APP: &str = "https://app.example.com";
const DEV: &str = "http://localhost:5173";
const LISTED: &str = "https://app.example.com,http://localhost:5173";
const EVIL: &str = "https://evil.example.net";
const OPERATOR: &str = "operator-token-0123456789";

/// The comma-separated items of every `name` header, lowercased.
fn items(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

/// The names of the `Access-Control-*` headers of an answer.
fn access_control(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

/// A browser's preflight for a `method` request to `path` from `origin` with the headers a
/// snapkeep client sends. It carries no credentials, as a browser's never does.
async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> Response {
    app.client
        .request(Method::OPTIONS, app.url(path))
        .header(ORIGIN, origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization, content-type, if-match",
        )
        .send()
        .await
        .unwrap()
}

/// Asserts a preflight answer that lets `allowed_origin` send every method and header a
/// snapkeep client uses.
fn assert_preflight_allows(response: &Response, allowed_origin: &str) {
    assert!(
        response.status().is_success(),
        "preflight answered {}",
        response.status()
    );
    let headers = response.headers();
    assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], allowed_origin);
    let methods = items(headers, ACCESS_CONTROL_ALLOW_METHODS);
    for method in ["get", "post", "patch", "delete"] {
        assert!(
            methods.contains(&method.to_owned()),
            "{method}: {methods:?}"
        );
    }
    let allowed = items(headers, ACCESS_CONTROL_ALLOW_HEADERS);
    for name in [
        "authorization",
        "content-type",
        "content-encoding",
        "if-match",
        "if-none-match",
    ] {
        assert!(allowed.contains(&name.to_owned()), "{name}: {allowed:?}");
    }
}

/// Asserts an actual answer readable by `allowed_origin`, with every header a client reads.
fn assert_readable_by(response: &Response, allowed_origin: &str) {
    let headers = response.headers();
    assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], allowed_origin);
    let exposed = items(headers, ACCESS_CONTROL_EXPOSE_HEADERS);
    for name in [
        "etag",
        "location",
        "last-modified",
        "retry-after",
        "x-snapshot-id",
    ] {
        assert!(exposed.contains(&name.to_owned()), "{name}: {exposed:?}");
    }
}

async fn post_from(app: &TestApp, origin: &str, body: &str) -> Response {
    app.client
        .post(app.session_url("s"))
        .header(ORIGIN, origin)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn get_from(app: &TestApp, path: &str, origin: &str) -> Response {
    app.client
        .get(app.url(path))
        .header(ORIGIN, origin)
        .send()
        .await
        .unwrap()
}

both!(a_listed_origin_gets_its_preflight_answered_for_every_method);
async fn a_listed_origin_gets_its_preflight_answered_for_every_method() {
    let app = TestApp::with(&[("SNAPKEEP_CORS_ORIGINS", LISTED)]).await;
    for origin in [APP, DEV] {
        for method in ["GET", "POST", "PATCH", "DELETE"] {
            let response = preflight(&app, &format!("{BASE}/s"), origin, method).await;
            assert_preflight_allows(&response, origin);
        }
    }
    let response = preflight(&app, &format!("{BASE}/s/latest"), APP, "GET").await;
    assert_preflight_allows(&response, APP);
    assert!(app.tree().is_empty(), "a preflight wrote something");
}

both!(a_listed_origin_can_read_writes_snapshots_and_lists);
async fn a_listed_origin_can_read_writes_snapshots_and_lists() {
    let app = TestApp::with(&[("SNAPKEEP_CORS_ORIGINS", LISTED)]).await;
    let saved = post_from(&app, APP, "[1]").await;
    assert_eq!(saved.status(), 201);
    assert_readable_by(&saved, APP);

    let latest = get_from(&app, &format!("{BASE}/s/latest"), DEV).await;
    assert_eq!(latest.status(), 200);
    assert_readable_by(&latest, DEV);

    let list = get_from(&app, &format!("{BASE}/s"), APP).await;
    assert_eq!(list.status(), 200);
    assert_readable_by(&list, APP);

    let status = get_from(&app, BASE, APP).await;
    assert_eq!(status.status(), 200);
    assert_readable_by(&status, APP);
}

both!(a_listed_origin_can_read_error_answers_too);
async fn a_listed_origin_can_read_error_answers_too() {
    let app = TestApp::with(&[
        ("SNAPKEEP_CORS_ORIGINS", LISTED),
        ("SNAPKEEP_TOKEN", OPERATOR),
    ])
    .await;
    let unauthorized = get_from(&app, &format!("{BASE}/s"), APP).await;
    assert_eq!(unauthorized.status(), 401);
    assert_readable_by(&unauthorized, APP);

    let missing = app
        .client
        .get(app.url(&format!("{BASE}/s/latest")))
        .header(ORIGIN, APP)
        .header(AUTHORIZATION, format!("Bearer {OPERATOR}"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_readable_by(&missing, APP);
}

both!(answers_to_a_list_of_origins_vary_by_origin);
async fn answers_to_a_list_of_origins_vary_by_origin() {
    let app = TestApp::with(&[("SNAPKEEP_CORS_ORIGINS", LISTED)]).await;
    let response = get_from(&app, &format!("{BASE}/s"), APP).await;
    let vary = items(response.headers(), VARY);
    assert!(vary.contains(&"origin".to_owned()), "{vary:?}");
}

both!(a_preflight_needs_no_token_when_one_is_configured);
async fn a_preflight_needs_no_token_when_one_is_configured() {
    let app = TestApp::with(&[
        ("SNAPKEEP_CORS_ORIGINS", LISTED),
        ("SNAPKEEP_TOKEN", OPERATOR),
        ("SNAPKEEP_SIGNING_KEY", "signing-key-0123456789abcdef"),
    ])
    .await;
    let id = "20261123T185337.123456Z-9f86d081884c7d65";
    for (path, method) in [
        (format!("{BASE}/s"), "POST"),
        (format!("{BASE}/s"), "PATCH"),
        (format!("{BASE}/s"), "GET"),
        (format!("{BASE}/s/latest"), "GET"),
        (format!("{BASE}/s/{id}"), "DELETE"),
        (format!("{BASE}/s"), "DELETE"),
    ] {
        let response = preflight(&app, &path, APP, method).await;
        assert_preflight_allows(&response, APP);
        assert!(
            response.headers().get(WWW_AUTHENTICATE).is_none(),
            "{method} {path}"
        );
    }
    // The preflight opened nothing: the actual request still needs the token.
    let response = post_from(&app, APP, "[1]").await;
    assert_eq!(response.status(), 401);
    assert!(app.tree().is_empty());
}

both!(any_origin_is_allowed_with_a_star);
async fn any_origin_is_allowed_with_a_star() {
    let app = TestApp::with(&[("SNAPKEEP_CORS_ORIGINS", "*")]).await;
    for origin in [APP, EVIL, "http://localhost:3000"] {
        let response = preflight(&app, &format!("{BASE}/s"), origin, "POST").await;
        assert_preflight_allows(&response, "*");
    }
    let saved = post_from(&app, EVIL, "[1]").await;
    assert_eq!(saved.status(), 201);
    assert_readable_by(&saved, "*");
    let latest = get_from(&app, &format!("{BASE}/s/latest"), APP).await;
    assert_eq!(latest.status(), 200);
    assert_readable_by(&latest, "*");
}

both!(a_star_still_leaves_the_token_in_charge);
async fn a_star_still_leaves_the_token_in_charge() {
    let app = TestApp::with(&[("SNAPKEEP_CORS_ORIGINS", "*"), ("SNAPKEEP_TOKEN", OPERATOR)]).await;
    let response = preflight(&app, &format!("{BASE}/s"), EVIL, "POST").await;
    assert_preflight_allows(&response, "*");
    let refused = post_from(&app, EVIL, "[1]").await;
    assert_eq!(refused.status(), 401);
    assert_readable_by(&refused, "*");
    assert!(app.tree().is_empty());
}

/// Origins that are not on the list, some of them close to one that is.
const REFUSED: [&str; 6] = [
    EVIL,
    "http://app.example.com",
    "https://app.example.com.evil.net",
    "https://evil-app.example.com",
    "https://app.example.com:8443",
    "null",
];

both!(a_refused_origin_is_never_told_it_may_read);
async fn a_refused_origin_is_never_told_it_may_read() {
    let app = TestApp::with(&[("SNAPKEEP_CORS_ORIGINS", LISTED)]).await;
    for origin in REFUSED {
        let response = preflight(&app, &format!("{BASE}/s"), origin, "POST").await;
        assert_ne!(response.status(), 500, "preflight from {origin}");
        let headers = response.headers();
        assert!(
            headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "{origin}"
        );

        let response = get_from(&app, &format!("{BASE}/s"), origin).await;
        assert_eq!(response.status(), 200, "GET from {origin}");
        let headers = response.headers();
        assert!(
            headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "{origin}"
        );
    }
    let saved = post_from(&app, EVIL, "[1]").await;
    assert_eq!(saved.status(), 201, "the server does not police browsers");
    assert!(saved.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

both!(a_refused_origin_gets_no_cors_headers_on_a_preflight);
async fn a_refused_origin_gets_no_cors_headers_on_a_preflight() {
    let app = TestApp::with(&[("SNAPKEEP_CORS_ORIGINS", LISTED)]).await;
    for origin in REFUSED {
        let response = preflight(&app, &format!("{BASE}/s"), origin, "POST").await;
        assert_ne!(response.status(), 500, "preflight from {origin}");
        let names = access_control(response.headers());
        assert!(
            names.is_empty(),
            "preflight from {origin}: {} {names:?}",
            response.status()
        );
    }
}

both!(a_refused_origin_gets_no_cors_headers_on_a_request);
async fn a_refused_origin_gets_no_cors_headers_on_a_request() {
    let app = TestApp::with(&[("SNAPKEEP_CORS_ORIGINS", LISTED)]).await;
    for origin in REFUSED {
        let response = get_from(&app, &format!("{BASE}/s"), origin).await;
        assert_eq!(response.status(), 200, "GET from {origin}");
        let names = access_control(response.headers());
        assert!(names.is_empty(), "GET from {origin}: {names:?}");
    }
}

both!(without_cors_origins_there_are_no_cors_headers_at_all);
async fn without_cors_origins_there_are_no_cors_headers_at_all() {
    let app = TestApp::spawn().await;
    let response = preflight(&app, &format!("{BASE}/s"), APP, "POST").await;
    assert_ne!(response.status(), 500);
    let names = access_control(response.headers());
    assert!(names.is_empty(), "preflight: {names:?}");

    let saved = post_from(&app, APP, "[1]").await;
    assert_eq!(saved.status(), 201);
    let names = access_control(saved.headers());
    assert!(names.is_empty(), "POST: {names:?}");

    for path in [
        format!("{BASE}/s/latest"),
        BASE.to_owned(),
        "/healthz".into(),
    ] {
        let response = get_from(&app, &path, APP).await;
        assert_eq!(response.status(), 200, "{path}");
        let names = access_control(response.headers());
        assert!(names.is_empty(), "{path}: {names:?}");
    }
}

both!(without_cors_origins_a_preflight_is_not_let_past_the_token);
async fn without_cors_origins_a_preflight_is_not_let_past_the_token() {
    let app = TestApp::with(&[("SNAPKEEP_TOKEN", OPERATOR)]).await;
    let response = preflight(&app, &format!("{BASE}/s"), APP, "POST").await;
    assert_eq!(response.status(), 401);
    assert!(access_control(response.headers()).is_empty());
    let body = json(response).await;
    assert_eq!(body["code"], "unauthorized", "{body}");
}

both!(a_preflight_answer_carries_nosniff_too);
async fn a_preflight_answer_carries_nosniff_too() {
    let app = TestApp::with(&[("SNAPKEEP_CORS_ORIGINS", LISTED)]).await;
    let response = preflight(&app, &format!("{BASE}/s"), APP, "POST").await;
    assert_preflight_allows(&response, APP);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
}
