//! `GET {base}/{session}/latest` answered from memory: a session's newest small snapshot is kept
//! once it has been read from disk, while the kernel reports no change to its directory or its
//! file (inotify). What is counted here is `snapkeep_latest_reads_from_memory_total`, so each
//! test first proves that the read it then disturbs did come from memory; the disturbance
//! itself is made right after that read, and read back at once.

use std::path::PathBuf;

use time::OffsetDateTime;

use crate::helpers::{BASE, TestApp, assert_error};
use crate::support::seed;

async fn from_memory(app: &TestApp) -> u64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    let series = "snapkeep_latest_reads_from_memory_total ";
    let line = text.lines().find_map(|line| line.strip_prefix(series));
    line.expect("the counter is exported").parse().unwrap()
}

/// The latest's status, body, `X-Snapshot-Id` and `X-Snapshot-Integrity`.
async fn latest(app: &TestApp, session: &str) -> (u16, String, String, String) {
    let response = app.get(&format!("{BASE}/{session}/latest")).await;
    let status = response.status().as_u16();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (id, integrity) = (header("x-snapshot-id"), header("x-snapshot-integrity"));
    (status, response.text().await.unwrap(), id, integrity)
}

/// Saves `body`, reads it once from disk and once from memory (asserted).
async fn kept(app: &TestApp, session: &str, body: &str) -> String {
    let id = app.save(session, body).await;
    assert_eq!(latest(app, session).await.2, id, "read from disk");
    let before = from_memory(app).await;
    let read = latest(app, session).await;
    assert_eq!(
        (read.0, read.1.as_str(), read.3.as_str()),
        (200, body, "ok")
    );
    assert_eq!(read.2, id);
    assert_eq!(
        from_memory(app).await,
        before + 1,
        "the read came from memory"
    );
    id
}

fn file(app: &TestApp, session: &str, id: &str) -> PathBuf {
    app.session_dir(session).join(format!("{id}.json"))
}

#[tokio::test]
async fn a_kept_latest_is_answered_from_memory_with_the_same_bytes_and_headers() {
    let app = TestApp::spawn().await;
    let id = kept(&app, "s", r#"{"n": 1}"#).await;
    let response = app.get(&format!("{BASE}/s/latest")).await;
    let headers = response.headers().clone();
    assert_eq!(headers["etag"], format!("\"{id}\"").as_str());
    assert_eq!(headers["content-length"], "8");
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers["last-modified"].to_str().unwrap().ends_with(" GMT"));

    let before = from_memory(&app).await;
    let unchanged = app
        .client
        .get(app.url(&format!("{BASE}/s/latest")))
        .header("if-none-match", format!("\"{id}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), 304);
    assert_eq!(from_memory(&app).await, before + 1);
}

both!(a_write_through_the_api_is_read_at_once);
async fn a_write_through_the_api_is_read_at_once() {
    let app = TestApp::spawn().await;
    kept(&app, "s", "[1]").await;
    let newer = app.save("s", "[2]").await;
    assert_eq!(
        latest(&app, "s").await,
        (200, "[2]".into(), newer, "ok".into())
    );
}

#[tokio::test]
async fn a_file_edited_in_place_is_seen_even_with_its_old_modification_time() {
    let app = TestApp::spawn().await;
    let id = kept(&app, "s", "[1,2,3]").await;
    let path = file(&app, "s", &id);
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    // Same length, and the modification time put back: nothing in `stat` but the change time
    // tells, and the read must not depend on times.
    std::fs::write(&path, "[7,8,9]").unwrap();
    let handle = std::fs::File::options().write(true).open(&path).unwrap();
    handle.set_modified(modified).unwrap();
    assert_eq!(
        latest(&app, "s").await,
        (200, "[7,8,9]".into(), id, "mismatch".into())
    );
}

#[tokio::test]
async fn a_file_replaced_by_rename_is_seen() {
    let app = TestApp::spawn().await;
    let id = kept(&app, "s", "[1]").await;
    // What an editor does: write a new file, rename it over the old name.
    let beside = app.session_dir("s").join("edit.swp");
    std::fs::write(&beside, "[9]").unwrap();
    std::fs::rename(&beside, file(&app, "s", &id)).unwrap();
    assert_eq!(
        latest(&app, "s").await,
        (200, "[9]".into(), id, "mismatch".into())
    );
}

#[tokio::test]
async fn a_newer_snapshot_added_by_hand_is_the_latest_at_once() {
    let app = TestApp::spawn().await;
    kept(&app, "s", "[1]").await;
    let later = OffsetDateTime::now_utc() + time::Duration::minutes(5);
    let added = seed(&app.data_dir, "s", later, "[2]");
    assert_eq!(
        latest(&app, "s").await,
        (200, "[2]".into(), added, "ok".into())
    );
}

#[tokio::test]
async fn removing_the_latest_by_hand_brings_back_the_one_before() {
    let app = TestApp::spawn().await;
    let older = app.save("s", "[1]").await;
    let newest = kept(&app, "s", "[2]").await;
    std::fs::remove_file(file(&app, "s", &newest)).unwrap();
    assert_eq!(
        latest(&app, "s").await,
        (200, "[1]".into(), older, "ok".into())
    );
}

#[tokio::test]
async fn removing_the_session_by_hand_makes_it_unknown_at_once() {
    let app = TestApp::spawn().await;
    kept(&app, "s", "[1]").await;
    std::fs::remove_dir_all(app.session_dir("s")).unwrap();
    assert_error(app.get(&format!("{BASE}/s/latest")).await, 404, "not_found").await;
}

both!(deleting_through_the_api_is_seen_at_once);
async fn deleting_through_the_api_is_seen_at_once() {
    let app = TestApp::spawn().await;
    let older = app.save("s", "[1]").await;
    let newest = kept(&app, "s", "[2]").await;
    assert_eq!(
        app.delete(&format!("{BASE}/s/{newest}")).await.status(),
        204
    );
    assert_eq!(
        latest(&app, "s").await,
        (200, "[1]".into(), older, "ok".into())
    );
}

#[tokio::test]
async fn a_write_through_another_name_of_the_file_is_seen() {
    let app = TestApp::spawn().await;
    let id = kept(&app, "s", "[1]").await;
    // A hard link elsewhere: writing through it changes nothing in the session's directory.
    let other = app.data_dir.join("linked.json");
    std::fs::hard_link(file(&app, "s", &id), &other).unwrap();
    let before = from_memory(&app).await;
    assert_eq!(latest(&app, "s").await.1, "[1]");
    assert_eq!(
        from_memory(&app).await,
        before,
        "the new link count: read from disk"
    );
    assert_eq!(latest(&app, "s").await.1, "[1]");
    assert_eq!(from_memory(&app).await, before + 1, "kept again");
    std::fs::write(&other, "[5]").unwrap();
    assert_eq!(
        latest(&app, "s").await,
        (200, "[5]".into(), id, "mismatch".into())
    );
}

#[tokio::test]
async fn every_change_is_seen_by_the_next_read_however_quick() {
    let app = TestApp::spawn().await;
    let mut id = kept(&app, "s", "[0]").await;
    let before = from_memory(&app).await;
    for n in 1..20 {
        let body = format!("[{n}]");
        // Edited by hand, then read back at once: twenty times, no pause anywhere.
        std::fs::write(file(&app, "s", &id), &body).unwrap();
        assert_eq!(latest(&app, "s").await.1, body, "edit {n}");
        id = app.save("s", &format!("[{n}, {n}]")).await;
        assert_eq!(latest(&app, "s").await.1, format!("[{n}, {n}]"));
        assert_eq!(latest(&app, "s").await.2, id, "kept again after the write");
    }
    // Each edit above was made to a latest kept in memory.
    assert_eq!(from_memory(&app).await, before + 19);
}

#[tokio::test]
async fn a_snapshot_edited_on_disk_is_never_answered_from_memory() {
    let app = TestApp::spawn().await;
    let id = app.save("s", "[1]").await;
    std::fs::write(file(&app, "s", &id), "[2]").unwrap();
    let before = from_memory(&app).await;
    for _ in 0..3 {
        assert_eq!(latest(&app, "s").await.3, "mismatch");
    }
    assert_eq!(
        from_memory(&app).await,
        before,
        "damaged content is read from disk"
    );
}

#[tokio::test]
async fn a_large_snapshot_is_never_kept_in_memory() {
    let app = TestApp::spawn().await;
    let large = format!("[{}]", vec!["1"; 40_000].join(","));
    assert!(large.len() > 64 * 1024);
    app.save("s", &large).await;
    let before = from_memory(&app).await;
    for _ in 0..3 {
        assert_eq!(latest(&app, "s").await.1.len(), large.len());
    }
    assert_eq!(from_memory(&app).await, before);
}

#[tokio::test]
async fn a_copy_of_the_data_directory_swapped_in_is_read_at_once() {
    let app = TestApp::spawn().await;
    kept(&app, "s", "[1]").await;
    // What an operator restoring a backup does: the whole directory moved aside, a copy in
    // its place, where the same session holds something else.
    let aside = app.data_dir.with_extension("aside");
    std::fs::rename(&app.data_dir, &aside).unwrap();
    std::fs::create_dir(&app.data_dir).unwrap();
    let restored = seed(&app.data_dir, "s", OffsetDateTime::now_utc(), "[7]");
    assert_eq!(
        latest(&app, "s").await,
        (200, "[7]".into(), restored, "ok".into())
    );
    std::fs::remove_dir_all(&aside).unwrap();
}
