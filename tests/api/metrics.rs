//! `GET /metrics` (Prometheus text, every name `snapkeep_`): requests by route template, the
//! store's outcomes, refusals by error code, the usage gauges; who may scrape it; and the
//! `X-Request-Id` every answer carries.
//!
//! Each server counts on its own (no process-wide recorder), so the tests assert exact counts.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use snapkeep::auth::mint;
use snapkeep::store::name::SessionId;

use crate::helpers::{BASE, TestApp, assert_error, tree};

const OPERATOR: &str = "operator-token-0123456789";
const KEY: &str = "signing-key-0123456789abcdef";

/// The scrape's text, asserting it was answered 200 as Prometheus text.
async fn scrape(app: &TestApp, token: Option<&str>) -> String {
    let mut request = app.client.get(app.url("/metrics"));
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// The value of one series (`name{labels}` exactly as rendered), or 0 when it is absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

fn requests(route: &str, method: &str, status: u16) -> String {
    format!(
        "snapkeep_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
    )
}

fn rejected(reason: &str) -> String {
    format!("snapkeep_requests_rejected_total{{reason=\"{reason}\"}}")
}

both!(writes_dedups_prunes_and_refusals_are_counted_by_route_template);
async fn writes_dedups_prunes_and_refusals_are_counted_by_route_template() {
    let app = TestApp::with(&[("SNAPKEEP_RETAIN_LAST", "1"), ("SNAPKEEP_FSYNC", "false")]).await;
    let session = format!("{BASE}/{{session}}");
    let before = scrape(&app, None).await;
    assert_eq!(
        value(&before, "snapkeep_snapshots_written_total"),
        0.0,
        "{before}"
    );

    app.save("metrics-demo", r#"{"n":1}"#).await;
    app.save("metrics-demo", r#"{"n":22}"#).await;
    assert_eq!(app.post("metrics-demo", r#"{"n":22}"#).await.status(), 200);
    let invalid = app.post("metrics-demo", "{oops").await;
    assert_error(invalid, 400, "invalid_json").await;
    let latest = app.get(&format!("{BASE}/metrics-demo/latest")).await;
    assert_eq!(latest.status(), 200);
    assert_eq!(app.get("/no/such/path").await.status(), 404);

    let after = scrape(&app, None).await;
    let count = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(count(&requests(&session, "POST", 201)), 2.0, "{after}");
    assert_eq!(count(&requests(&session, "POST", 200)), 1.0);
    assert_eq!(count(&requests(&session, "POST", 400)), 1.0);
    assert_eq!(
        count(&requests(&format!("{session}/latest"), "GET", 200)),
        1.0
    );
    assert_eq!(count(&requests("unmatched", "GET", 404)), 1.0);
    assert_eq!(count("snapkeep_snapshots_written_total"), 2.0);
    assert_eq!(count("snapkeep_snapshots_deduplicated_total"), 1.0);
    assert_eq!(count("snapkeep_snapshots_pruned_total"), 1.0);
    assert_eq!(count("snapkeep_bytes_written_total"), 15.0);
    assert_eq!(count(&rejected("invalid_json")), 1.0);
    assert_eq!(count(&rejected("not_found")), 1.0);
    let timed = format!(
        "snapkeep_http_request_duration_seconds_count{{route=\"{session}\",method=\"POST\"}}"
    );
    assert_eq!(count(&timed), 4.0);
    assert!(
        !after.contains("metrics-demo"),
        "a raw path leaked: {after}"
    );
    for line in after
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(line.starts_with("snapkeep_"), "{line}");
    }
}

both!(refusals_are_counted_by_their_error_code);
async fn refusals_are_counted_by_their_error_code() {
    let vars = [
        ("SNAPKEEP_TOKEN", OPERATOR),
        ("SNAPKEEP_MAX_BODY_BYTES", "64"),
        ("SNAPKEEP_MAX_TOTAL_BYTES", "20"),
        ("SNAPKEEP_FSYNC", "false"),
    ];
    let app = TestApp::with(&vars).await;
    let post = |body: &'static str| {
        app.client
            .post(app.session_url("s"))
            .header(AUTHORIZATION, format!("Bearer {OPERATOR}"))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
    };
    assert_eq!(app.post("s", "{}").await.status(), 401);
    let too_large = post(r#"{"x":"0123456789012345678901234567890123456789012345678901234567"}"#);
    assert_eq!(too_large.send().await.unwrap().status(), 413);
    assert_eq!(
        post(r#"{"quota":"0123456789abc"}"#)
            .send()
            .await
            .unwrap()
            .status(),
        507
    );

    let text = scrape(&app, Some(OPERATOR)).await;
    assert_eq!(value(&text, &rejected("unauthorized")), 1.0, "{text}");
    assert_eq!(value(&text, &rejected("body_too_large")), 1.0);
    assert_eq!(value(&text, &rejected("insufficient_storage")), 1.0);
    assert_eq!(value(&text, "snapkeep_snapshots_written_total"), 0.0);

    let limited =
        TestApp::with(&[("SNAPKEEP_RATE_LIMIT", "1"), ("SNAPKEEP_RATE_BURST", "1")]).await;
    let mut answered = Vec::new();
    while answered.last() != Some(&429) && answered.len() < 10 {
        answered.push(limited.get(&format!("{BASE}/s")).await.status().as_u16());
    }
    let text = scrape(&limited, None).await;
    assert_eq!(
        value(&text, &rejected("rate_limited")),
        1.0,
        "{answered:?} {text}"
    );
}

#[tokio::test]
async fn gauges_show_the_sessions_and_bytes_on_disk() {
    let app = TestApp::with(&[("SNAPKEEP_FSYNC", "false")]).await;
    app.save("a", r#"{"one":1}"#).await;
    app.save("a", r#"{"one":2}"#).await;
    app.save("b", r#"[1,2,3]"#).await;
    let on_disk = |app: &TestApp| -> u64 {
        let files = tree(&app.data_dir)
            .into_iter()
            .filter(|p| p.ends_with(".json"));
        files
            .map(|p| std::fs::metadata(app.data_dir.join(p)).unwrap().len())
            .sum()
    };
    let text = scrape(&app, None).await;
    assert_eq!(value(&text, "snapkeep_sessions"), 2.0, "{text}");
    assert_eq!(value(&text, "snapkeep_stored_bytes"), on_disk(&app) as f64);
    assert_eq!(on_disk(&app), 25);

    assert_eq!(app.delete(&format!("{BASE}/a")).await.status(), 204);
    let text = scrape(&app, None).await;
    assert_eq!(value(&text, "snapkeep_sessions"), 1.0, "{text}");
    assert_eq!(value(&text, "snapkeep_stored_bytes"), 7.0);
}

both!(metrics_need_the_operator_token_once_one_is_set);
async fn metrics_need_the_operator_token_once_one_is_set() {
    let vars = [("SNAPKEEP_TOKEN", OPERATOR), ("SNAPKEEP_SIGNING_KEY", KEY)];
    let app = TestApp::with(&vars).await;
    let metrics = || app.client.get(app.url("/metrics"));

    assert_error(metrics().send().await.unwrap(), 401, "unauthorized").await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let session = SessionId::parse("s").unwrap();
    let session_token = mint(KEY.as_bytes(), &session, now + 3600);
    for wrong in [session_token.as_str(), "wrong-token-0123456789abc"] {
        let response = metrics()
            .header(AUTHORIZATION, format!("Bearer {wrong}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{wrong}");
        assert!(response.headers().contains_key(WWW_AUTHENTICATE));
    }
    let text = scrape(&app, Some(OPERATOR)).await;
    assert_eq!(value(&text, &rejected("unauthorized")), 3.0, "{text}");
}

both!(metrics_are_open_without_a_token_or_when_made_public);
async fn metrics_are_open_without_a_token_or_when_made_public() {
    let open = TestApp::spawn().await;
    scrape(&open, None).await;
    let public = TestApp::with(&[
        ("SNAPKEEP_TOKEN", OPERATOR),
        ("SNAPKEEP_METRICS_PUBLIC", "true"),
    ])
    .await;
    scrape(&public, None).await;
    // Public scraping opens /metrics only, not the sessions.
    assert_eq!(public.get(&format!("{BASE}/s")).await.status(), 401);
}

both!(every_answer_carries_a_request_id_and_a_given_one_is_kept);
async fn every_answer_carries_a_request_id_and_a_given_one_is_kept() {
    let app = TestApp::with(&[("SNAPKEEP_TOKEN", OPERATOR)]).await;
    let mut seen = Vec::new();
    for path in [
        "/healthz",
        "/metrics",
        "/nope",
        BASE,
        &format!("{BASE}/s/latest"),
    ] {
        let response = app.get(path).await;
        let id = response.headers().get("x-request-id");
        let id = id.unwrap_or_else(|| panic!("no X-Request-Id on {path}"));
        let id = id.to_str().unwrap().to_owned();
        assert_eq!(id.len(), 36, "not a UUID: {id}");
        assert!(!seen.contains(&id), "{id} twice");
        seen.push(id);
    }
    let given = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-42");
}
