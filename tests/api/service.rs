//! Health, readiness and the status route.

use crate::helpers::{BASE, TestApp, json};

both!(healthz_answers_ok);
async fn healthz_answers_ok() {
    let app = TestApp::spawn().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await, serde_json::json!({ "status": "ok" }));
}

both!(readyz_is_ready_when_the_data_dir_is_writable);
async fn readyz_is_ready_when_the_data_dir_is_writable() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert!(
        app.tree().is_empty(),
        "the readiness probe leaves nothing behind"
    );
}

#[tokio::test]
async fn readyz_is_503_when_the_data_dir_is_gone() {
    let app = TestApp::spawn().await;
    std::fs::remove_dir(&app.data_dir).unwrap();
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    assert_eq!(json(response).await["code"], "not_ready");
}

both!(status_describes_the_service);
async fn status_describes_the_service() {
    let app = TestApp::with(&[
        ("SNAPKEEP_RETAIN_LAST", "4"),
        ("SNAPKEEP_RETAIN_DAILY", "7"),
        ("SNAPKEEP_RETAIN_WITHIN", "36h"),
        ("SNAPKEEP_SESSION_TTL", "90d"),
        ("SNAPKEEP_MAX_BODY_BYTES", "2048"),
    ])
    .await;
    let response = app.get(BASE).await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["service"], "snapkeep");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["enabled"], true);
    assert_eq!(body["maxBodyBytes"], 2048);
    assert_eq!(body["retention"]["last"], 4);
    assert_eq!(body["retention"]["daily"], 7);
    assert_eq!(body["retention"]["monthly"], 0);
    assert_eq!(body["retention"]["withinSeconds"], 36 * 3600);
    assert_eq!(body["retention"]["sessionTtlSeconds"], 90 * 86_400);
    assert_eq!(body["auth"], "none");
}

both!(the_base_path_is_configurable);
async fn the_base_path_is_configurable() {
    let app = TestApp::with(&[("SNAPKEEP_BASE_PATH", "/backup/v1")]).await;
    let response = app
        .client
        .post(app.url("/backup/v1/s"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(app.get("/api/backup/s").await.status(), 404);
    assert_eq!(
        app.get("/backup/v1/s/latest").await.text().await.unwrap(),
        "{}"
    );
}

both!(unknown_routes_and_methods_get_json_errors);
async fn unknown_routes_and_methods_get_json_errors() {
    let app = TestApp::spawn().await;
    crate::helpers::assert_error(app.get("/nope").await, 404, "not_found").await;
    let put = app
        .client
        .put(app.session_url("s"))
        .body("{}")
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error(put, 405, "method_not_allowed").await;
}
