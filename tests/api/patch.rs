//! PATCH {base}/{session} with a JSON merge patch (RFC 7396): applied to the latest snapshot
//! and saved like a POST.

use serde_json::{Value, json};
use snapkeep::store::name::sha256_hex;

use crate::helpers::{BASE, TestApp, assert_error, json};

const MERGE_PATCH: &str = "application/merge-patch+json";

/// Every example of RFC 7396 Appendix A, in order, as compact JSON text: (target, patch,
/// result). The same file drives the unit tests of `src/merge_patch.rs`.
fn rfc_7396_examples() -> Vec<(String, String, String)> {
    let examples: Vec<Value> =
        serde_json::from_str(include_str!("../data/rfc7396-appendix-a.json")).unwrap();
    assert_eq!(examples.len(), 15, "Appendix A has 15 examples");
    let text = |example: &Value, key: &str| example[key].to_string();
    examples
        .iter()
        .map(|e| (text(e, "target"), text(e, "patch"), text(e, "result")))
        .collect()
}

/// PATCHes `patch` as `application/merge-patch+json`.
async fn patch(app: &TestApp, session: &str, patch: &str) -> reqwest::Response {
    patch_as(app, session, Some(MERGE_PATCH), patch).await
}

async fn patch_as(
    app: &TestApp,
    session: &str,
    content_type: Option<&str>,
    patch: &str,
) -> reqwest::Response {
    let mut request = app.client.patch(app.session_url(session));
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.body(patch.to_owned()).send().await.unwrap()
}

async fn latest(app: &TestApp, session: &str) -> String {
    let response = app.get(&format!("{BASE}/{session}/latest")).await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// serde_json's compact form of `text`, keys in document order: what the server stores.
fn compact(text: &str) -> String {
    serde_json::to_string(&serde_json::from_str::<Value>(text).unwrap()).unwrap()
}

both!(every_example_of_rfc_7396_appendix_a_works_over_http);
async fn every_example_of_rfc_7396_appendix_a_works_over_http() {
    let app = TestApp::spawn().await;
    for (n, (target, merge, result)) in rfc_7396_examples().into_iter().enumerate() {
        let session = format!("rfc-{n}");
        app.save(&session, &target).await;

        let response = patch(&app, &session, &merge).await;

        assert_eq!(response.status(), 201, "{target} + {merge}");
        assert_eq!(
            latest(&app, &session).await,
            compact(&result),
            "{target} + {merge}"
        );
    }
}

#[tokio::test]
async fn a_patch_is_answered_like_a_post() {
    let app = TestApp::spawn().await;
    let first = app.save("s", r#"{"a":1}"#).await;

    let response = patch(&app, "s", r#"{"b":2}"#).await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let answer = json(response).await;
    let id = answer["id"].as_str().unwrap();
    let stored = r#"{"a":1,"b":2}"#;
    assert_eq!(location, format!("{BASE}/s/{id}"));
    assert_eq!(etag, format!("\"{id}\""));
    assert_eq!(answer["session"], "s");
    assert_eq!(answer["bytes"], stored.len());
    assert_eq!(answer["sha256"], sha256_hex(stored.as_bytes()));
    assert_eq!(answer["deduplicated"], false);
    assert_eq!(answer["pruned"], json!([]));
    assert!(answer["createdAt"].is_string());
    assert_eq!(app.listed("s").await, vec![id.to_owned(), first]);
    let file = app.session_dir("s").join(format!("{id}.json"));
    assert_eq!(std::fs::read_to_string(file).unwrap(), stored);
}

both!(a_patch_on_a_session_without_snapshots_applies_to_an_empty_object);
async fn a_patch_on_a_session_without_snapshots_applies_to_an_empty_object() {
    let app = TestApp::spawn().await;

    let response = patch(&app, "new", r#"{"a":{"b":1,"c":null},"d":null}"#).await;

    assert_eq!(response.status(), 201);
    assert_eq!(latest(&app, "new").await, r#"{"a":{"b":1}}"#);
}

both!(numbers_and_keys_the_patch_does_not_touch_are_kept_exactly);
async fn numbers_and_keys_the_patch_does_not_touch_are_kept_exactly() {
    let app = TestApp::spawn().await;
    app.save(
        "s",
        r#"{"z":1.10,"big":123456789012345678901234567890,"tiny":1e-400}"#,
    )
    .await;

    let response = patch(&app, "s", r#"{"a":1}"#).await;

    assert_eq!(response.status(), 201);
    assert_eq!(
        latest(&app, "s").await,
        r#"{"z":1.10,"big":123456789012345678901234567890,"tiny":1e-400,"a":1}"#
    );
}

both!(a_patched_document_spells_exponents_one_way_and_keeps_the_last_duplicate_key);
async fn a_patched_document_spells_exponents_one_way_and_keeps_the_last_duplicate_key() {
    // As the README says: values exact, spelling of exponents normalised, last duplicate wins.
    let app = TestApp::spawn().await;
    app.save("s", r#"{"huge":1e400,"b":1E5,"e":2E+3,"d":1,"d":2}"#)
        .await;

    assert_eq!(patch(&app, "s", r#"{"z":1}"#).await.status(), 201);
    assert_eq!(
        latest(&app, "s").await,
        r#"{"huge":1e+400,"b":1e+5,"e":2e+3,"d":2,"z":1}"#
    );
}

both!(a_snapshot_with_a_lone_surrogate_is_409_for_patch_and_fine_for_post);
async fn a_snapshot_with_a_lone_surrogate_is_409_for_patch_and_fine_for_post() {
    let app = TestApp::spawn().await;
    app.save("s", r#"{"cut":"\ud83d","n":1}"#).await;

    assert_error(patch(&app, "s", r#"{"n":2}"#).await, 409, "latest_not_json").await;
    assert_eq!(
        app.post("s", r#"{"cut":"\ud83d","n":2}"#).await.status(),
        201
    );
}

both!(a_patch_that_changes_nothing_is_deduplicated);
async fn a_patch_that_changes_nothing_is_deduplicated() {
    let app = TestApp::spawn().await;
    let first = app.save("s", r#"{"a":1,"b":[true]}"#).await;

    for merge in [r#"{"a":1}"#, "{}", r#"{"gone":null}"#] {
        let response = patch(&app, "s", merge).await;

        assert_eq!(response.status(), 200, "{merge}");
        assert_eq!(response.headers()["etag"], format!("\"{first}\"").as_str());
        let answer = json(response).await;
        assert_eq!(answer["deduplicated"], true, "{merge}");
        assert_eq!(answer["id"], first.as_str());
    }
    assert_eq!(app.listed("s").await, vec![first]);
}

both!(rotation_applies_to_patches);
async fn rotation_applies_to_patches() {
    let app = TestApp::with(&[("SNAPKEEP_RETAIN_LAST", "2")]).await;
    let first = app.save("s", r#"{"n":1}"#).await;
    let second = json(patch(&app, "s", r#"{"n":2}"#).await).await;
    assert_eq!(second["pruned"], json!([]));

    let response = patch(&app, "s", r#"{"n":3}"#).await;

    assert_eq!(response.status(), 201);
    let third = json(response).await;
    assert_eq!(third["pruned"], json!([first]));
    assert_eq!(
        app.listed("s").await,
        vec![
            third["id"].as_str().unwrap(),
            second["id"].as_str().unwrap()
        ]
    );
}

both!(a_patch_in_any_other_content_type_is_415);
async fn a_patch_in_any_other_content_type_is_415() {
    let app = TestApp::spawn().await;
    app.save("s", r#"{"a":1}"#).await;
    let before = app.tree();

    for content_type in [
        Some("application/json"),
        Some("text/plain"),
        Some("application/json-patch+json"),
        None,
    ] {
        let response = patch_as(&app, "s", content_type, r#"{"a":2}"#).await;

        let body = assert_error(response, 415, "unsupported_media_type").await;
        let sentence = body["error"].as_str().unwrap();
        assert!(
            sentence.contains(MERGE_PATCH),
            "{content_type:?}: {sentence}"
        );
    }
    assert_eq!(app.tree(), before);
}

both!(a_merge_patch_type_with_a_utf8_charset_is_accepted);
async fn a_merge_patch_type_with_a_utf8_charset_is_accepted() {
    let app = TestApp::spawn().await;

    let content_type = "Application/Merge-Patch+JSON; charset=utf-8";
    let response = patch_as(&app, "s", Some(content_type), r#"{"a":2}"#).await;

    assert_eq!(response.status(), 201);
}

both!(a_patch_that_is_not_json_is_400_invalid_json);
async fn a_patch_that_is_not_json_is_400_invalid_json() {
    let app = TestApp::spawn().await;
    app.save("s", r#"{"a":1}"#).await;
    let before = app.tree();

    for merge in [r#"{"a":"#, "", "{} {}", "{'a':1}"] {
        let response = patch(&app, "s", merge).await;

        assert_error(response, 400, "invalid_json").await;
    }
    assert_eq!(app.tree(), before);
}

both!(a_result_larger_than_the_limit_is_413_and_writes_nothing);
async fn a_result_larger_than_the_limit_is_413_and_writes_nothing() {
    let app = TestApp::with(&[("SNAPKEEP_MAX_BODY_BYTES", "1024")]).await;
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(1000));
    app.save("s", &big).await;
    let before = app.tree();

    // The patch is small; only the merged document is over the limit.
    let response = patch(&app, "s", &format!(r#"{{"more":"{}"}}"#, "y".repeat(50))).await;

    let body = assert_error(response, 413, "body_too_large").await;
    assert_eq!(body["limit"], 1024);
    assert_eq!(app.tree(), before);
    assert_eq!(latest(&app, "s").await, big);
}

#[tokio::test]
async fn a_patch_over_a_latest_edited_into_invalid_json_is_409_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let id = app.save("s", r#"{"a":1}"#).await;
    let file = app.session_dir("s").join(format!("{id}.json"));
    std::fs::write(&file, "{\"a\": 1,").unwrap();
    let before = app.tree();

    let response = patch(&app, "s", r#"{"b":2}"#).await;

    assert_error(response, 409, "latest_not_json").await;
    assert_eq!(app.tree(), before);
    assert_eq!(std::fs::read_to_string(file).unwrap(), "{\"a\": 1,");
}

#[tokio::test]
async fn a_patch_applies_to_the_latest_as_edited_on_disk() {
    let app = TestApp::spawn().await;
    let id = app.save("s", r#"{"a":1}"#).await;
    let file = app.session_dir("s").join(format!("{id}.json"));
    std::fs::write(&file, r#"{"a":"by hand"}"#).unwrap();

    let response = patch(&app, "s", r#"{"b":2}"#).await;

    assert_eq!(response.status(), 201);
    assert_eq!(latest(&app, "s").await, r#"{"a":"by hand","b":2}"#);
}

both!(a_patch_with_a_stale_if_match_is_412_and_writes_nothing);
async fn a_patch_with_a_stale_if_match_is_412_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let stale = app.save("s", r#"{"n":1}"#).await;
    let current = app.save("s", r#"{"n":2}"#).await;
    let before = app.tree();

    let response = app
        .client
        .patch(app.session_url("s"))
        .header("content-type", MERGE_PATCH)
        .header("if-match", format!("\"{stale}\""))
        .body(r#"{"n":3}"#)
        .send()
        .await
        .unwrap();

    let body = assert_error(response, 412, "precondition_failed").await;
    assert_eq!(body["latest"]["id"], current.as_str());
    assert_eq!(app.tree(), before);
}

both!(a_patch_with_the_current_if_match_is_applied);
async fn a_patch_with_the_current_if_match_is_applied() {
    let app = TestApp::spawn().await;
    let current = app.save("s", r#"{"n":1}"#).await;

    let response = app
        .client
        .patch(app.session_url("s"))
        .header("content-type", MERGE_PATCH)
        .header("if-match", format!("\"{current}\""))
        .body(r#"{"n":2}"#)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 201);
    assert_eq!(latest(&app, "s").await, r#"{"n":2}"#);
}

both!(refused_patches_to_a_new_session_create_nothing);
async fn refused_patches_to_a_new_session_create_nothing() {
    let app = TestApp::with(&[("SNAPKEEP_MAX_BODY_BYTES", "64")]).await;
    app.save("other", "{}").await;
    let before = app.tree();

    let too_large = patch(&app, "new", &format!(r#"{{"a":"{}"}}"#, "x".repeat(60))).await;
    assert_error(too_large, 413, "body_too_large").await;
    let stale = app
        .client
        .patch(app.session_url("new"))
        .header("content-type", MERGE_PATCH)
        .header("if-match", "*")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(stale, 412, "precondition_failed").await;
    assert_error(patch(&app, "new", "{").await, 400, "invalid_json").await;

    assert_eq!(app.tree(), before);
    assert!(app.listed("new").await.is_empty());
}
