//! The data directory is the whole truth: hand edits are seen while the server runs, files
//! snapkeep did not name are never listed or touched, and crash leftovers go at start.

use crate::helpers::{BASE, TestApp, json};

const ID: &str = "20261123T185337.123456Z-9f86d081884c7d65";

#[tokio::test]
async fn the_layout_is_one_directory_per_session_and_one_file_per_snapshot() {
    let app = TestApp::spawn().await;
    let a = app.save("app-1", "[1]").await;
    let b = app.save("app-2", "[2]").await;
    assert_eq!(
        app.tree(),
        vec![
            "app-1".to_string(),
            format!("app-1/{a}.json"),
            "app-2".to_string(),
            format!("app-2/{b}.json"),
        ]
    );
}

#[tokio::test]
async fn a_file_deleted_by_hand_disappears_while_the_server_runs() {
    let app = TestApp::spawn().await;
    let old = app.save("s", "[1]").await;
    let new = app.save("s", "[2]").await;
    std::fs::remove_file(app.session_dir("s").join(format!("{new}.json"))).unwrap();

    assert_eq!(app.listed("s").await, vec![old.clone()]);
    let latest = app.get(&format!("{BASE}/s/latest")).await;
    assert_eq!(latest.headers()["x-snapshot-id"], old.as_str());
    assert_eq!(app.get(&format!("{BASE}/s/{new}")).await.status(), 404);
}

#[tokio::test]
async fn a_file_copied_in_by_hand_is_served() {
    let app = TestApp::spawn().await;
    app.save("s", "[1]").await;
    let dir = app.session_dir("s");
    let restored = "29991231T235959.000000Z-0123456789abcdef";
    std::fs::write(dir.join(format!("{restored}.json")), "{\"restored\":true}").unwrap();

    assert_eq!(app.listed("s").await[0], restored);
    let latest = app.get(&format!("{BASE}/s/latest")).await;
    assert_eq!(latest.text().await.unwrap(), "{\"restored\":true}");
    // The next write still gets a greater id than the hand-placed one.
    let next = app.save("s", "[2]").await;
    assert!(next.as_str() > restored, "{next}");
}

#[tokio::test]
async fn files_snapkeep_did_not_name_are_never_listed_or_touched() {
    let app = TestApp::with(&[("SNAPKEEP_RETAIN_LAST", "1")]).await;
    app.save("s", "[1]").await;
    let dir = app.session_dir("s");
    let strays = [
        "README.md",
        "backup.json",
        &format!("{ID}.json.bak"),
        ".DS_Store",
    ];
    for name in strays {
        std::fs::write(dir.join(name), "stray").unwrap();
    }
    std::fs::write(app.data_dir.join("top-level.txt"), "stray").unwrap();

    app.save("s", "[2]").await;
    app.save("s", "[3]").await;
    assert_eq!(app.listed("s").await.len(), 1);
    for name in strays {
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).unwrap(),
            "stray",
            "{name}"
        );
    }
    assert!(app.data_dir.join("top-level.txt").exists());
}

#[tokio::test]
async fn temp_files_of_a_crashed_run_are_removed_at_start_and_others_are_kept() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let session = data.join("s");
    std::fs::create_dir_all(&session).unwrap();
    std::fs::write(session.join(format!("{ID}.json")), "[\"kept\"]").unwrap();
    std::fs::write(session.join(format!(".{ID}.json.tmp")), "[\"half").unwrap();
    std::fs::write(session.join(".other.tmp"), "not ours").unwrap();
    std::fs::write(data.join(format!(".{ID}.json.tmp")), "not in a session").unwrap();

    // TestApp starts the tests once start-up's preparation (this cleanup) is done.
    let app = TestApp::with_dir(temp, data, &[]).await;
    assert_eq!(app.listed("s").await, vec![ID.to_string()]);
    assert_eq!(
        app.tree(),
        vec![
            format!(".{ID}.json.tmp"),
            "s".to_string(),
            "s/.other.tmp".to_string(),
            format!("s/{ID}.json"),
        ]
    );
}

/// Start-up serves reads at once and prepares the directory in the background; a write that
/// arrives meanwhile waits for the cleanup (which could otherwise take its temp file for a
/// crash's) and the count (which could otherwise miss it), then goes through.
#[tokio::test]
async fn writes_wait_for_start_up_preparation_and_reads_do_not() {
    use snapkeep::store::{Precondition, Quotas, Storage, Store, retain::Retention};
    let temp = tempfile::tempdir().unwrap();
    let session = temp.path().join("s");
    std::fs::create_dir_all(&session).unwrap();
    std::fs::write(session.join(format!("{ID}.json")), "[\"kept\"]").unwrap();
    std::fs::write(session.join(format!(".{ID}.json.tmp")), "[\"half").unwrap();
    let retention = Retention::last(10.try_into().unwrap());
    let storage = Storage::Dir {
        root: temp.path().to_owned(),
        fsync: false,
    };
    let store = std::sync::Arc::new(Store::new(&storage, retention, Quotas::default()));
    store.create(true).await.unwrap();
    store.hold_writes();
    assert!(store.preparing());

    let s = snapkeep::store::name::SessionId::parse("s").unwrap();
    assert_eq!(store.list(&s).await.unwrap().len(), 1, "reads go on");
    let write = tokio::spawn({
        let (store, s) = (store.clone(), s.clone());
        async move {
            let body = bytes::Bytes::from_static(b"[\"new\"]");
            store.save(&s, body, Precondition::default()).await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!write.is_finished(), "the write waits for the preparation");
    assert_eq!(store.counts().sessions, 0, "nothing counted yet");

    assert_eq!(store.prepare().await.unwrap(), 1, "the crash's temp file");
    let saved = write.await.unwrap().unwrap();
    assert!(!store.preparing());
    assert_eq!(store.list(&s).await.unwrap().len(), 2);
    assert_eq!(store.counts().sessions, 1);
    assert_eq!(store.counts().bytes, 8 + saved.info.bytes);
}

#[tokio::test]
async fn a_restarted_server_serves_what_is_on_disk() {
    let app = TestApp::with(&[("SNAPKEEP_RETAIN_LAST", "2")]).await;
    let first = app.save("s", "[1]").await;
    let second = app.save("s", "[2]").await;
    let stopped = app.stop().await;

    let app = TestApp::restart(stopped, &[("SNAPKEEP_RETAIN_LAST", "2")]).await;
    assert_eq!(app.listed("s").await, vec![second.clone(), first.clone()]);
    let third = json(app.post("s", "[3]").await).await;
    assert_eq!(
        third["pruned"],
        serde_json::json!([first]),
        "rotation continues across restarts"
    );
    assert!(third["id"].as_str().unwrap() > second.as_str());
}

#[tokio::test]
async fn a_file_with_a_session_name_is_left_alone_and_is_no_500() {
    let app = TestApp::spawn().await;
    let readme = app.data_dir.join("README.md");
    std::fs::write(&readme, "operator notes").unwrap();

    assert!(app.listed("README.md").await.is_empty());
    let latest = app.get(&format!("{BASE}/README.md/latest")).await;
    assert_eq!(latest.status(), 404);
    assert_eq!(
        app.get(&format!("{BASE}/README.md/{ID}")).await.status(),
        404
    );
    assert_eq!(
        app.delete(&format!("{BASE}/README.md/{ID}")).await.status(),
        404
    );
    assert_eq!(app.delete(&format!("{BASE}/README.md")).await.status(), 204);
    let write = app.post("README.md", "{}").await;
    crate::helpers::assert_error(write, 409, "session_blocked").await;
    assert_eq!(std::fs::read_to_string(&readme).unwrap(), "operator notes");
}

#[tokio::test]
async fn a_snapshot_dated_at_the_end_of_time_stops_writes_with_an_answer_not_a_panic() {
    let app = TestApp::spawn().await;
    app.save("s", "[1]").await;
    let last = "99991231T235959.999999Z-0123456789abcdef";
    std::fs::write(app.session_dir("s").join(format!("{last}.json")), "[0]").unwrap();

    let response = app.post("s", "[2]").await;
    crate::helpers::assert_error(response, 500, "internal").await;
    assert_eq!(
        app.listed("s").await.len(),
        2,
        "nothing written, nothing pruned"
    );
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "the server is still up"
    );
}

/// While start-up prepares the directory, over HTTP: `/readyz` says `503`, reads are served,
/// and a write waits, then goes through once the preparation is done. (The server's own
/// start-up takes the hold itself; here the test takes it, to hold it as long as it likes.)
#[tokio::test]
async fn while_preparing_readyz_is_503_reads_are_served_and_a_write_waits() {
    use snapkeep::config::Config;
    use snapkeep::http::App;
    let temp = tempfile::tempdir().unwrap();
    let vars = [(
        "SNAPKEEP_DATA_DIR".to_owned(),
        temp.path().display().to_string(),
    )];
    let (config, _) = Config::from_vars(vars).unwrap();
    let state = App::new(config);
    state.store.create(true).await.unwrap();
    state.store.hold_writes();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = snapkeep::http::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();

    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    let refusal = crate::helpers::assert_error(ready, 503, "not_ready").await;
    assert!(
        refusal["error"].as_str().unwrap().contains("preparing"),
        "{refusal}"
    );
    let read = client
        .get(format!("{base}{BASE}/s/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 404, "a read is answered at once");

    let write = tokio::spawn({
        let (client, url) = (client.clone(), format!("{base}{BASE}/s"));
        async move { client.post(url).json(&[1]).send().await.unwrap().status() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!write.is_finished(), "the write waits for the preparation");
    state.store.prepare().await.unwrap();
    assert_eq!(write.await.unwrap(), 201);
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}
