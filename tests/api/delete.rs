//! DELETE {base}/{session}/{id} and DELETE {base}/{session}.

use crate::helpers::{BASE, TestApp, assert_error};

#[tokio::test]
async fn deleting_one_snapshot() {
    let app = TestApp::spawn().await;
    let old = app.save("s", "[1]").await;
    let new = app.save("s", "[2]").await;

    let response = app.delete(&format!("{BASE}/s/{old}")).await;
    assert_eq!(response.status(), 204);
    assert_eq!(app.listed("s").await, vec![new.clone()]);
    assert!(!app.session_dir("s").join(format!("{old}.json")).exists());

    assert_error(
        app.delete(&format!("{BASE}/s/{old}")).await,
        404,
        "not_found",
    )
    .await;
}

both!(deleting_the_latest_makes_the_previous_one_latest);
async fn deleting_the_latest_makes_the_previous_one_latest() {
    let app = TestApp::spawn().await;
    let old = app.save("s", "[1]").await;
    let new = app.save("s", "[2]").await;
    assert_eq!(app.delete(&format!("{BASE}/s/{new}")).await.status(), 204);
    let latest = app.get(&format!("{BASE}/s/latest")).await;
    assert_eq!(latest.headers()["x-snapshot-id"], old.as_str());
}

#[tokio::test]
async fn deleting_a_session_removes_its_snapshots_and_directory() {
    let app = TestApp::spawn().await;
    app.save("s", "[1]").await;
    app.save("s", "[2]").await;
    app.save("keep", "[1]").await;

    assert_eq!(app.delete(&format!("{BASE}/s")).await.status(), 204);
    assert!(app.listed("s").await.is_empty());
    assert!(!app.session_dir("s").exists());
    assert_eq!(
        app.listed("keep").await.len(),
        1,
        "other sessions are untouched"
    );
    assert_error(app.get(&format!("{BASE}/s/latest")).await, 404, "not_found").await;
}

#[tokio::test]
async fn deleting_a_session_keeps_files_snapkeep_did_not_make() {
    let app = TestApp::spawn().await;
    app.save("s", "[1]").await;
    let notes = app.session_dir("s").join("NOTES.txt");
    std::fs::write(&notes, "operator's notes").unwrap();

    assert_eq!(app.delete(&format!("{BASE}/s")).await.status(), 204);
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "operator's notes");
    assert_eq!(app.tree(), vec!["s".to_string(), "s/NOTES.txt".to_string()]);
}

both!(deleting_an_unknown_session_is_fine_and_creates_nothing);
async fn deleting_an_unknown_session_is_fine_and_creates_nothing() {
    let app = TestApp::spawn().await;
    assert_eq!(app.delete(&format!("{BASE}/nobody")).await.status(), 204);
    assert!(app.tree().is_empty());
}

both!(a_session_can_be_written_again_after_deletion);
async fn a_session_can_be_written_again_after_deletion() {
    let app = TestApp::spawn().await;
    app.save("s", "[1]").await;
    assert_eq!(app.delete(&format!("{BASE}/s")).await.status(), 204);
    let id = app.save("s", "[1]").await;
    assert_eq!(app.listed("s").await, vec![id]);
}
