//! What is particular to the S3 backend, seen in the bucket itself: objects named like the
//! files with exactly the bytes sent, the head that lists them, what a delete leaves, what is
//! not served, the idle-session sweep on heads written by hand, and the leftovers' sweep.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::helpers::{BACKEND, BASE, Backend, TestApp, json};
use crate::support::s3;
use snapkeep::store::name::{SnapshotId, sha256_hex};

/// A server on a new prefix of moto's bucket; `None` without moto (skipped, visibly).
async fn on_bucket(vars: &[(&str, &str)]) -> Option<TestApp> {
    s3::moto()?;
    Some(BACKEND.scope(Backend::S3, TestApp::with(vars)).await)
}

/// The object at `key` under the app's prefix.
async fn object(app: &TestApp, key: &str) -> Option<Vec<u8>> {
    let prefix = app.prefix.as_ref().unwrap();
    s3::moto().unwrap().get(&format!("{prefix}/{key}")).await
}

#[tokio::test]
async fn snapshots_are_objects_with_the_exact_bytes_and_a_plain_json_head_lists_them() {
    let Some(app) = on_bucket(&[("SNAPKEEP_RETAIN_LAST", "2")]).await else {
        return;
    };
    let body = "{ \"todos\" : [\"milk\"],\n  \"n\": 1.10 }";
    let first = app.save("demo", body).await;
    let second = app.save("demo", "[2]").await;
    let third = app.save("demo", "[3]").await;
    assert_eq!(
        app.tree(),
        [
            format!("demo/{second}.json"),
            format!("demo/{third}.json"),
            "demo/head.json".to_string()
        ],
        "the first was pruned"
    );
    assert_eq!(
        object(&app, &format!("demo/{third}.json")).await.unwrap(),
        b"[3]"
    );
    let head: Value =
        serde_json::from_slice(&object(&app, "demo/head.json").await.unwrap()).unwrap();
    assert_eq!(head["snapkeep"], 1);
    assert_eq!(head["generation"], 3);
    assert_eq!(
        head["snapshots"],
        json!([
            {"id": third, "bytes": 3, "sha256": sha256_hex(b"[3]")},
            {"id": second, "bytes": 3, "sha256": sha256_hex(b"[2]")},
        ])
    );
    assert!(!app.tree().iter().any(|k| k.contains(&first)));
}

#[tokio::test]
async fn a_deleted_session_keeps_an_empty_head_and_is_listed_nowhere() {
    let Some(app) = on_bucket(&[]).await else {
        return;
    };
    app.save("gone", "[1]").await;
    assert_eq!(app.delete(&format!("{BASE}/gone")).await.status(), 204);
    assert_eq!(app.tree(), ["gone/head.json"]);
    let head: Value =
        serde_json::from_slice(&object(&app, "gone/head.json").await.unwrap()).unwrap();
    assert_eq!(head["snapshots"], json!([]));
    let sessions = json(app.get(&format!("{BASE}/_sessions")).await).await;
    assert_eq!(sessions["sessions"], json!([]));
    assert!(app.listed("gone").await.is_empty());
    // And it can be written again.
    let again = app.save("gone", "[2]").await;
    assert_eq!(app.listed("gone").await, [again]);
}

#[tokio::test]
async fn an_object_no_head_lists_is_not_served() {
    let Some(app) = on_bucket(&[]).await else {
        return;
    };
    let listed = app.save("s", "[1]").await;
    let prefix = app.prefix.clone().unwrap();
    let at = OffsetDateTime::now_utc() + time::Duration::HOUR;
    let unlisted = SnapshotId::next(at, None, &sha256_hex(b"[\"by hand\"]")).unwrap();
    s3::moto()
        .unwrap()
        .put(&format!("{prefix}/s/{unlisted}.json"), b"[\"by hand\"]")
        .await;
    assert_eq!(app.listed("s").await, std::slice::from_ref(&listed));
    let latest = app.get(&format!("{BASE}/s/latest")).await;
    assert_eq!(latest.headers()["x-snapshot-id"], listed.as_str());
    let direct = app.get(&format!("{BASE}/s/{unlisted}")).await;
    assert_eq!(direct.status(), 404);
    // Young, it may be a write in progress: the sweep leaves it.
    assert_eq!(app.state.store.sweep().await.unwrap(), 0);
    assert!(object(&app, &format!("s/{unlisted}.json")).await.is_some());
}

/// Writes a session as an older snapkeep would have: one snapshot at `at`, and a head listing
/// it (with `usedAt`, when given).
async fn seed_bucket(
    app: &TestApp,
    session: &str,
    at: OffsetDateTime,
    used: Option<&str>,
) -> String {
    let moto = s3::moto().unwrap();
    let prefix = app.prefix.as_ref().unwrap();
    let content = format!("[\"{session}\"]");
    let sha256 = sha256_hex(content.as_bytes());
    let id = SnapshotId::next(at, None, &sha256).unwrap().to_string();
    moto.put(&format!("{prefix}/{session}/{id}.json"), content.as_bytes())
        .await;
    let mut head = json!({
        "snapkeep": 1,
        "generation": 1,
        "snapshots": [{"id": id, "bytes": content.len(), "sha256": sha256}],
    });
    if let Some(used) = used {
        head["usedAt"] = used.into();
    }
    let head = serde_json::to_vec(&head).unwrap();
    moto.put(&format!("{prefix}/{session}/head.json"), &head)
        .await;
    id
}

#[tokio::test]
async fn idle_sessions_go_by_their_last_use_and_a_steady_one_stays() {
    let Some(writer) = on_bucket(&[]).await else {
        return;
    };
    let old = datetime!(2025-01-01 00:00 UTC);
    seed_bucket(&writer, "quiet", old, None).await;
    let steady = seed_bucket(&writer, "steady", old, None).await;
    let used = seed_bucket(&writer, "used", old, Some("2099-01-01T00:00:00Z")).await;
    // A save of the same content marks "steady" as used, now.
    let same = json(writer.post("steady", "[\"steady\"]").await).await;
    assert_eq!(same["deduplicated"], true);
    let stopped = writer.stop().await;

    let app = BACKEND
        .scope(
            Backend::S3,
            TestApp::restart(stopped, &[("SNAPKEEP_SESSION_TTL", "90d")]),
        )
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !app.listed("quiet").await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle session was not swept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.listed("steady").await, [steady]);
    assert_eq!(app.listed("used").await, [used]);
}
