//! The routes of the browser half: the client module at `/snapkeep.js`, the inspection page at
//! `/` and `{base}/_ui`, and the page's session listing `{base}/_sessions` (operator-only when
//! tokens are on). What the module and the page do in a browser is tested in Chromium
//! (tests/browser/).

use reqwest::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE, ETAG, IF_NONE_MATCH, ORIGIN,
};
use snapkeep::auth::mint;
use snapkeep::store::name::SessionId;

use crate::helpers::{BASE, TestApp, assert_error, json};

const OPERATOR: &str = "operator-token-0123456789";
const KEY: &str = "signing-key-0123456789abcdef";
const CLIENT_SOURCE: &str = include_str!("../../client/snapkeep.js");

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    match response.headers().get(&name) {
        Some(value) => value.to_str().unwrap().to_owned(),
        None => String::new(),
    }
}

both!(the_client_module_is_served_as_javascript_with_an_etag);
async fn the_client_module_is_served_as_javascript_with_an_etag() {
    let app = TestApp::spawn().await;
    let response = app.get("/snapkeep.js").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, CONTENT_TYPE),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&response, CACHE_CONTROL), "no-cache");
    let etag = header(&response, ETAG);
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    assert_eq!(response.text().await.unwrap(), CLIENT_SOURCE);

    let again = app
        .client
        .get(app.url("/snapkeep.js"))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.bytes().await.unwrap().len(), 0);

    let head = app
        .client
        .head(app.url("/snapkeep.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, ETAG), etag);

    // Also under the base, for apps whose reverse proxy forwards only that.
    let under_base = app.get(&format!("{BASE}/_snapkeep.js")).await;
    assert_eq!(under_base.status(), 200);
    assert_eq!(header(&under_base, ETAG), etag);
}

both!(the_client_module_follows_the_apis_cors_settings);
async fn the_client_module_follows_the_apis_cors_settings() {
    let app = TestApp::with(&[("SNAPKEEP_CORS_ORIGINS", "https://app.example")]).await;
    let from = |origin: &'static str| {
        app.client
            .get(app.url("/snapkeep.js"))
            .header(ORIGIN, origin)
            .send()
    };
    let allowed = from("https://app.example").await.unwrap();
    assert_eq!(
        header(&allowed, ACCESS_CONTROL_ALLOW_ORIGIN),
        "https://app.example"
    );
    let refused = from("https://evil.example").await.unwrap();
    assert_eq!(header(&refused, ACCESS_CONTROL_ALLOW_ORIGIN), "");
}

both!(the_page_is_served_at_the_root_and_under_the_base_with_the_base_written_in);
async fn the_page_is_served_at_the_root_and_under_the_base_with_the_base_written_in() {
    let app = TestApp::with(&[("SNAPKEEP_BASE_PATH", "/app/state")]).await;
    for path in ["/", "/app/state/_ui"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, CONTENT_TYPE), "text/html; charset=utf-8");
        let policy = header(&response, CONTENT_SECURITY_POLICY);
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        let page = response.text().await.unwrap();
        assert!(
            !page.contains("{{SNAPKEEP_BASE}}"),
            "{path}: placeholder left"
        );
        assert!(page.contains("/app/state"), "{path}: base path missing");
    }
    // The default base's page is not served under another base.
    assert_eq!(app.get(&format!("{BASE}/_ui")).await.status(), 404);
}

#[tokio::test]
async fn sessions_lists_each_session_with_count_bytes_and_newest() {
    let app = TestApp::spawn().await;
    assert_eq!(
        json(app.get(&format!("{BASE}/_sessions")).await).await,
        serde_json::json!({ "sessions": [] })
    );
    app.save("beta", r#"{"n":1}"#).await;
    app.save("alpha", r#"{"n":1}"#).await;
    let newest = app.save("alpha", r#"{"n":22}"#).await;
    std::fs::create_dir(app.session_dir("empty")).unwrap();

    let listing = json(app.get(&format!("{BASE}/_sessions")).await).await;
    let sessions = listing["sessions"].as_array().unwrap();
    let names: Vec<&str> = sessions
        .iter()
        .map(|s| s["session"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "empty"]);
    assert_eq!(sessions[0]["snapshots"], 2);
    assert_eq!(sessions[0]["bytes"], 7 + 8);
    assert_eq!(sessions[0]["newest"]["id"], newest.as_str());
    assert_eq!(sessions[0]["newest"]["bytes"], 8);
    assert!(sessions[0]["newest"]["createdAt"].is_string());
    assert_eq!(sessions[1]["snapshots"], 1);
    assert_eq!(sessions[2]["snapshots"], 0);
    assert!(sessions[2]["newest"].is_null());
}

both!(with_tokens_sessions_needs_the_operator_and_the_page_stays_open);
async fn with_tokens_sessions_needs_the_operator_and_the_page_stays_open() {
    let app = TestApp::with(&[("SNAPKEEP_TOKEN", OPERATOR), ("SNAPKEEP_SIGNING_KEY", KEY)]).await;
    let url = app.url(&format!("{BASE}/_sessions"));
    let without = app.client.get(&url).send().await.unwrap();
    assert_error(without, 401, "unauthorized").await;

    // A session token opens its own session only, never the operator's listing.
    let session_token = mint(
        KEY.as_bytes(),
        &SessionId::parse("alpha").unwrap(),
        i64::MAX,
    );
    let as_session = app
        .client
        .get(&url)
        .header(AUTHORIZATION, format!("Bearer {session_token}"))
        .send()
        .await
        .unwrap();
    assert_error(as_session, 403, "forbidden").await;

    let as_operator = app
        .client
        .get(&url)
        .header(AUTHORIZATION, format!("Bearer {OPERATOR}"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_operator.status(), 200);

    // The page asks for the token itself, so it loads without one; it and the client module
    // hold no data.
    let paths = ["/", "/snapkeep.js"].map(str::to_owned);
    let under_base = ["_ui", "_snapkeep.js"].map(|p| format!("{BASE}/{p}"));
    for path in paths.into_iter().chain(under_base) {
        assert_eq!(app.get(&path).await.status(), 200, "{path}");
    }
}

both!(sessions_is_readable_in_read_only_mode_and_off_when_disabled);
async fn sessions_is_readable_in_read_only_mode_and_off_when_disabled() {
    let read_only = TestApp::with(&[("SNAPKEEP_READ_ONLY", "true")]).await;
    assert_eq!(
        read_only.get(&format!("{BASE}/_sessions")).await.status(),
        200
    );
    let disabled = TestApp::with(&[("SNAPKEEP_ENABLED", "false")]).await;
    let response = disabled.get(&format!("{BASE}/_sessions")).await;
    assert_error(response, 503, "disabled").await;
    // The files hold no data: an app importing the client from {base} keeps loading.
    for path in ["_ui", "_snapkeep.js"] {
        let response = disabled.get(&format!("{BASE}/{path}")).await;
        assert_eq!(response.status(), 200, "{path}");
    }
}

both!(underscore_names_are_no_sessions);
async fn underscore_names_are_no_sessions() {
    let app = TestApp::spawn().await;
    // Shaped like a session's routes, so the session id is what is wrong.
    for path in ["_other", "_sessions/x", "_ui/x", "_snapkeep.js/latest"] {
        let response = app.get(&format!("{BASE}/{path}")).await;
        assert_error(response, 400, "invalid_session").await;
    }
    let post = app
        .client
        .post(app.url(&format!("{BASE}/_sessions")))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert!(app.tree().is_empty(), "{:?}", app.tree());
}
