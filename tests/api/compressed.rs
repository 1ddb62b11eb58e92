//! Answers gzipped for a client that asks (`Accept-Encoding: gzip`): the client module, the page
//! and JSON of 1 KiB and more; small answers and change feeds go as they are.

use std::io::Read;

use flate2::read::GzDecoder;

use crate::helpers::{BASE, TestApp};

async fn get_gzip(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

fn encoding(response: &reqwest::Response) -> Option<&str> {
    let value = response.headers().get("content-encoding")?;
    Some(value.to_str().unwrap())
}

#[tokio::test]
async fn the_client_and_the_page_are_gzipped_for_a_client_that_asks() {
    let app = TestApp::spawn().await;
    for path in ["/snapkeep.js", "/snapkeep-mirror.js", "/"] {
        let plain = app.get(path).await;
        assert_eq!(encoding(&plain), None, "{path} without Accept-Encoding");
        let plain = plain.bytes().await.unwrap();

        let zipped = get_gzip(&app, path).await;
        assert_eq!(zipped.status(), 200, "{path}");
        assert_eq!(encoding(&zipped), Some("gzip"), "{path}");
        assert!(
            zipped.headers()["vary"]
                .to_str()
                .unwrap()
                .contains("accept-encoding")
        );
        let zipped = zipped.bytes().await.unwrap();
        assert!(
            zipped.len() * 2 < plain.len(),
            "{path}: {} of {}",
            zipped.len(),
            plain.len()
        );
        assert_eq!(
            gunzip(&zipped),
            plain,
            "{path} decompresses to the same bytes"
        );
    }
}

both!(a_large_snapshot_is_gzipped_with_its_etag_and_a_small_one_is_not);
async fn a_large_snapshot_is_gzipped_with_its_etag_and_a_small_one_is_not() {
    let app = TestApp::spawn().await;
    let large = format!(r#"{{"notes":[{}]}}"#, vec![r#""a note""#; 1000].join(","));
    let id = app.save("big", &large).await;
    app.save("small", r#"{"a":1}"#).await;

    for path in [format!("{BASE}/big/latest"), format!("{BASE}/big/{id}")] {
        let response = get_gzip(&app, &path).await;
        assert_eq!(encoding(&response), Some("gzip"), "{path}");
        assert_eq!(response.headers()["etag"], format!("\"{id}\"").as_str());
        let body = response.bytes().await.unwrap();
        assert_eq!(gunzip(&body), large.as_bytes(), "{path}: the stored bytes");
    }
    let small = get_gzip(&app, &format!("{BASE}/small/latest")).await;
    assert_eq!(
        encoding(&small),
        None,
        "under 1 KiB is not worth a gzip frame"
    );
    assert_eq!(small.text().await.unwrap(), r#"{"a":1}"#);
}

#[tokio::test]
async fn a_change_feed_is_never_gzipped() {
    let app = TestApp::spawn().await;
    let feed = get_gzip(&app, &format!("{BASE}/s/events")).await;
    assert_eq!(feed.status(), 200);
    assert_eq!(
        feed.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    assert_eq!(
        encoding(&feed),
        None,
        "an event would wait in the compressor"
    );
}
