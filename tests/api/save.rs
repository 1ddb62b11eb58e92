//! POST {base}/{session}: new snapshots, deduplication and rotation.

use crate::helpers::{BASE, TestApp, json};

#[tokio::test]
async fn a_post_stores_the_exact_bytes_and_describes_the_snapshot() {
    let app = TestApp::spawn().await;
    let body = "{ \"todos\": [\"milk\"],  \"n\": 1.50 }\n";
    let response = app.post("s1", body).await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let answer = json(response).await;
    let id = answer["id"].as_str().unwrap();
    assert_eq!(location, format!("{BASE}/s1/{id}"));
    assert_eq!(etag, format!("\"{id}\""));
    assert_eq!(answer["session"], "s1");
    assert_eq!(answer["bytes"], body.len());
    assert_eq!(answer["deduplicated"], false);
    assert_eq!(answer["pruned"], serde_json::json!([]));
    let sha = sha256_hex(body.as_bytes());
    assert_eq!(answer["sha256"], sha);
    assert!(id.ends_with(&format!("-{}", &sha[..16])), "{id}");
    let created = answer["createdAt"].as_str().unwrap();
    assert_eq!(
        created.len(),
        "2026-11-23T18:53:37.123456Z".len(),
        "{created}"
    );
    assert_eq!(
        &id[..8],
        created[..10].replace('-', ""),
        "id and createdAt agree"
    );

    let file = app.session_dir("s1").join(format!("{id}.json"));
    assert_eq!(std::fs::read_to_string(file).unwrap(), body);
}

both!(text_plain_and_no_content_type_are_accepted);
async fn text_plain_and_no_content_type_are_accepted() {
    let app = TestApp::spawn().await;
    let beacon = app
        .client
        .post(app.session_url("s"))
        .header("content-type", "text/plain;charset=UTF-8")
        .body("[1]")
        .send()
        .await
        .unwrap();
    assert_eq!(beacon.status(), 201);
    let bare = app
        .client
        .post(app.session_url("s"))
        .body("[2]")
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 201);
    let vendor = app
        .client
        .post(app.session_url("s"))
        .header("content-type", "application/vnd.app+json")
        .body("[3]")
        .send()
        .await
        .unwrap();
    assert_eq!(vendor.status(), 201);
}

both!(any_json_value_is_stored_as_sent);
async fn any_json_value_is_stored_as_sent() {
    let app = TestApp::spawn().await;
    for body in [
        "null",
        "\"text\"",
        "42",
        r#"{"a":1,"a":2}"#,
        "1e400",
        "123456789012345678901234567890.5",
    ] {
        let id = app.save("values", body).await;
        let stored = app
            .get(&format!("{BASE}/values/{id}"))
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(stored, body);
    }
}

both!(the_same_body_twice_is_deduplicated);
async fn the_same_body_twice_is_deduplicated() {
    let app = TestApp::spawn().await;
    let first = app.save("s", r#"{"v":1}"#).await;

    let response = app.post("s", r#"{"v":1}"#).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], format!("\"{first}\"").as_str());
    let answer = json(response).await;
    assert_eq!(answer["deduplicated"], true);
    assert_eq!(answer["id"], first.as_str());
    assert_eq!(answer["pruned"], serde_json::json!([]));
    assert_eq!(app.listed("s").await, vec![first.clone()]);

    // Only the latest counts: going back to an older state is a new snapshot.
    let second = app.save("s", r#"{"v":2}"#).await;
    let third = app.save("s", r#"{"v":1}"#).await;
    assert_eq!(app.listed("s").await, vec![third, second, first]);
}

/// The contract: a deduplicated save writes nothing. The TTL's "last used" is kept beside the
/// snapshots, so the file keeps its bytes and its modification time.
#[tokio::test]
async fn a_deduplicated_save_leaves_the_snapshot_file_as_it_was() {
    let app = TestApp::spawn().await;
    let id = app.save("s", r#"{"v":1}"#).await;
    let file = app.session_dir("s").join(format!("{id}.json"));
    let past = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(past)
        .unwrap();
    assert_eq!(app.post("s", r#"{"v":1}"#).await.status(), 200);
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), past);
    assert_eq!(std::fs::read(&file).unwrap(), br#"{"v":1}"#);
}

both!(whitespace_differences_are_not_duplicates);
async fn whitespace_differences_are_not_duplicates() {
    let app = TestApp::spawn().await;
    app.save("s", r#"{"v":1}"#).await;
    assert_eq!(app.post("s", r#"{ "v": 1 }"#).await.status(), 201);
}

#[tokio::test]
async fn rotation_keeps_the_newest_n_and_reports_what_it_pruned() {
    let app = TestApp::with(&[("SNAPKEEP_RETAIN_LAST", "3")]).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(app.save("s", &format!("[{n}]")).await);
    }
    let answer = json(app.post("s", "[3]").await).await;
    assert_eq!(answer["pruned"], serde_json::json!([ids[0]]));
    ids.push(answer["id"].as_str().unwrap().to_owned());

    let answer = json(app.post("s", "[4]").await).await;
    assert_eq!(answer["pruned"], serde_json::json!([ids[1]]));
    ids.push(answer["id"].as_str().unwrap().to_owned());

    let kept: Vec<_> = ids[2..].iter().rev().cloned().collect();
    assert_eq!(app.listed("s").await, kept);
    assert_eq!(std::fs::read_dir(app.session_dir("s")).unwrap().count(), 3);
}

both!(retain_last_one_keeps_only_the_newest);
async fn retain_last_one_keeps_only_the_newest() {
    let app = TestApp::with(&[("SNAPKEEP_RETAIN_LAST", "1")]).await;
    app.save("s", "[1]").await;
    let newest = app.save("s", "[2]").await;
    assert_eq!(app.listed("s").await, vec![newest]);
}

both!(sessions_are_independent);
async fn sessions_are_independent() {
    let app = TestApp::with(&[("SNAPKEEP_RETAIN_LAST", "1")]).await;
    let a = app.save("a", "[1]").await;
    let b = app.save("b", "[1]").await;
    app.save("b", "[2]").await;
    assert_eq!(app.listed("a").await, vec![a]);
    assert!(!app.listed("b").await.contains(&b));
    assert_eq!(
        app.listed("A").await,
        Vec::<String>::new(),
        "session ids are case-sensitive"
    );
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    snapkeep::store::name::sha256_hex(bytes)
}
