//! SNAPKEEP_ENABLED=false: session routes answer 503, health and status stay up, and the data
//! directory is neither created nor touched.

use crate::helpers::{BASE, TestApp, assert_error, json};

const ID: &str = "20261123T185337.123456Z-9f86d081884c7d65";

#[tokio::test]
async fn every_session_route_is_503_and_nothing_is_created() {
    let app = TestApp::with(&[("SNAPKEEP_ENABLED", "false")]).await;
    let c = &app.client;
    let requests = [
        c.post(app.session_url("s")).body("{}"),
        c.get(app.session_url("s")),
        c.get(app.url(&format!("{BASE}/s/latest"))),
        c.get(app.url(&format!("{BASE}/s/{ID}"))),
        c.delete(app.url(&format!("{BASE}/s/{ID}"))),
        c.delete(app.session_url("s")),
        c.patch(app.session_url("s")).body("{}"),
        c.put(app.session_url("s")).body("{}"),
        c.get(app.url(&format!("{BASE}/s/{ID}/extra"))),
        c.get(app.url(&format!("{BASE}/a%2fb"))),
    ];
    for request in requests {
        assert_error(request.send().await.unwrap(), 503, "disabled").await;
    }
    assert!(!app.data_dir.exists(), "the data directory was not created");
}

#[tokio::test]
async fn health_and_status_stay_up_and_say_disabled() {
    let app = TestApp::with(&[("SNAPKEEP_ENABLED", "false")]).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(json(ready).await["enabled"], false);
    let status = json(app.get(BASE).await).await;
    assert_eq!(status["enabled"], false);
    assert!(!app.data_dir.exists());
}

#[tokio::test]
async fn existing_snapshots_are_left_alone_while_disabled() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let session = data.join("s");
    std::fs::create_dir_all(&session).unwrap();
    std::fs::write(session.join(format!("{ID}.json")), "{}").unwrap();
    let leftover = session.join(format!(".{ID}.json.tmp"));
    std::fs::write(&leftover, "{").unwrap();

    let app = TestApp::with_dir(temp, data, &[("SNAPKEEP_ENABLED", "false")]).await;
    assert_error(app.delete(&format!("{BASE}/s")).await, 503, "disabled").await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert!(
        leftover.exists(),
        "not even temp files are cleaned while disabled"
    );
    assert_eq!(app.tree().len(), 3);
}
