//! GET {base}/{session}, .../latest and .../{id}.

use crate::helpers::{BASE, TestApp, assert_error, json};

both!(list_is_newest_first_with_times_and_sizes);
async fn list_is_newest_first_with_times_and_sizes() {
    let app = TestApp::spawn().await;
    let first = app.save("s", "[1]").await;
    let second = app.save("s", "[22]").await;

    let response = app.get(&format!("{BASE}/s")).await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["session"], "s");
    let snapshots = body["snapshots"].as_array().unwrap();
    assert_eq!(snapshots.len(), 2);
    assert_eq!(snapshots[0]["id"], second.as_str());
    assert_eq!(snapshots[0]["bytes"], 4);
    assert_eq!(snapshots[1]["id"], first.as_str());
    assert_eq!(snapshots[1]["bytes"], 3);
    assert!(snapshots[0]["createdAt"].as_str().unwrap().ends_with('Z'));
}

both!(an_unknown_session_lists_empty);
async fn an_unknown_session_lists_empty() {
    let app = TestApp::spawn().await;
    let body = json(app.get(&format!("{BASE}/never-seen")).await).await;
    assert_eq!(
        body,
        serde_json::json!({ "session": "never-seen", "snapshots": [] })
    );
    assert!(app.tree().is_empty(), "a read creates nothing");
}

both!(latest_returns_the_exact_bytes_with_its_headers);
async fn latest_returns_the_exact_bytes_with_its_headers() {
    let app = TestApp::spawn().await;
    app.save("s", "[1]").await;
    let body = "{\"state\": [1, 2, 3], \"big\": 1e400}";
    let id = app.save("s", body).await;

    let response = app.get(&format!("{BASE}/s/latest")).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["etag"], format!("\"{id}\"").as_str());
    assert_eq!(headers["x-snapshot-id"], id.as_str());
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["content-length"], body.len().to_string().as_str());
    let modified = headers["last-modified"].to_str().unwrap();
    assert!(modified.ends_with(" GMT"), "{modified}");
    assert_eq!(response.text().await.unwrap(), body);
}

both!(latest_of_an_empty_session_is_404);
async fn latest_of_an_empty_session_is_404() {
    let app = TestApp::spawn().await;
    assert_error(app.get(&format!("{BASE}/s/latest")).await, 404, "not_found").await;
}

both!(one_snapshot_by_id);
async fn one_snapshot_by_id() {
    let app = TestApp::spawn().await;
    let old = app.save("s", "[\"old\"]").await;
    app.save("s", "[\"new\"]").await;
    let response = app.get(&format!("{BASE}/s/{old}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], format!("\"{old}\"").as_str());
    assert_eq!(response.text().await.unwrap(), "[\"old\"]");
}

both!(a_well_formed_unknown_id_is_404);
async fn a_well_formed_unknown_id_is_404() {
    let app = TestApp::spawn().await;
    app.save("s", "[1]").await;
    let unknown = "20200101T000000.000000Z-0123456789abcdef";
    assert_error(
        app.get(&format!("{BASE}/s/{unknown}")).await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get(&format!("{BASE}/other/{unknown}")).await,
        404,
        "not_found",
    )
    .await;
}

both!(head_gives_the_headers_without_the_body);
async fn head_gives_the_headers_without_the_body() {
    let app = TestApp::spawn().await;
    let id = app.save("s", "[1,2,3]").await;
    let response = app
        .client
        .head(app.url(&format!("{BASE}/s/latest")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-snapshot-id"], id.as_str());
    assert_eq!(response.text().await.unwrap(), "");
}

both!(a_large_snapshot_streams_back_intact);
async fn a_large_snapshot_streams_back_intact() {
    let app = TestApp::spawn().await;
    // ~8 MiB of JSON: an array of numbered strings.
    let items: Vec<String> = (0..700_000).map(|n| format!("\"{n:08}\"")).collect();
    let body = format!("[{}]", items.join(","));
    let id = app.save("big", &body).await;
    let response = app.get(&format!("{BASE}/big/{id}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        body.len().to_string().as_str()
    );
    let got = response.bytes().await.unwrap();
    assert!(got == body.as_bytes(), "the streamed bytes differ");
}

/// Every read checks the content against the digest in its id, whether the snapshot is small
/// (read whole) or large (streamed): a file edited by hand is served as it is on disk, flagged.
#[tokio::test]
async fn a_snapshot_edited_on_disk_is_served_as_it_is_and_flagged() {
    let app = TestApp::spawn().await;
    let large = format!("[{}]", vec!["\"x\""; 200_000].join(","));
    for (session, body) in [("small", "[1,2,3]".to_owned()), ("large", large)] {
        let id = app.save(session, &body).await;
        let url = format!("{BASE}/{session}/{id}");
        let intact = app.get(&url).await;
        assert_eq!(intact.headers()["x-snapshot-integrity"], "ok", "{session}");
        assert!(intact.bytes().await.unwrap() == body.as_bytes());

        let edited = body.replacen('[', "[0,", 1);
        std::fs::write(app.session_dir(session).join(format!("{id}.json")), &edited).unwrap();
        for path in [url.clone(), format!("{BASE}/{session}/latest")] {
            let response = app.get(&path).await;
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(
                response.headers()["x-snapshot-integrity"],
                "mismatch",
                "{path}"
            );
            let length = response.headers()["content-length"]
                .to_str()
                .unwrap()
                .to_owned();
            assert_eq!(length, edited.len().to_string(), "{path}");
            assert!(
                response.bytes().await.unwrap() == edited.as_bytes(),
                "{path}"
            );
        }
    }
}
