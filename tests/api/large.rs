//! Bodies over 1 MiB go to a temp file at the top of the data directory as they arrive, and
//! are renamed into place: stored byte for byte like any other, checked the same way, and
//! never left behind when refused, broken off or overtaken.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::helpers::{BASE, TestApp, assert_error, json};

/// A JSON document of about `mib` MiB, with non-ASCII text so that reads split characters.
fn big(mib: usize, tag: &str) -> String {
    let item = format!("\"{tag} é 😀 \\\" {}\"", "x".repeat(100));
    let count = (mib << 20) / item.len();
    format!("{{\"items\":[{}]}}", vec![item; count].join(","))
}

/// What the store holds besides sessions (a temp file of an upload, say): nothing, once a
/// request is answered.
fn leftovers(app: &TestApp) -> Vec<String> {
    app.tree()
        .into_iter()
        .filter(|p| !p.contains('/') && !app.data_dir.join(p).is_dir())
        .collect()
}

#[tokio::test]
async fn a_large_upload_is_stored_byte_for_byte_and_leaves_no_temp_file() {
    let app = TestApp::spawn().await;
    let body = big(3, "one");
    let saved = json(app.post("s", body.clone()).await).await;
    let id = saved["id"].as_str().unwrap();
    assert_eq!(saved["bytes"], body.len());
    let digest: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(saved["sha256"], digest.as_str());
    let stored = std::fs::read(app.session_dir("s").join(format!("{id}.json"))).unwrap();
    assert!(stored == body.as_bytes());
    assert_eq!(leftovers(&app), Vec::<String>::new());

    // The same again deduplicates; a different one rotates in like any write.
    let again = json(app.post("s", body.clone()).await).await;
    assert_eq!(again["deduplicated"], true);
    assert_eq!(again["id"], id);
    let other = big(2, "two");
    let newer = app.save("s", &other).await;
    let latest = app.get(&format!("{BASE}/s/latest")).await;
    assert_eq!(latest.headers()["x-snapshot-id"], newer.as_str());
    assert!(latest.bytes().await.unwrap() == other.as_bytes());
    assert_eq!(app.listed("s").await.len(), 2);
}

both!(a_large_gzip_upload_is_stored_decompressed);
async fn a_large_gzip_upload_is_stored_decompressed() {
    let app = TestApp::spawn().await;
    let body = big(4, "zipped");
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(body.as_bytes()).unwrap();
    let gzipped = encoder.finish().unwrap();
    let response = app
        .client
        .post(app.session_url("z"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzipped)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let latest = app.get(&format!("{BASE}/z/latest")).await;
    assert!(latest.bytes().await.unwrap() == body.as_bytes());
    assert_eq!(leftovers(&app), Vec::<String>::new());
}

both!(a_large_body_that_is_not_json_is_refused_with_its_position_and_leaves_nothing);
async fn a_large_body_that_is_not_json_is_refused_with_its_position_and_leaves_nothing() {
    let app = TestApp::spawn().await;
    let valid = big(2, "bad");
    // Broken at the very end, long after the first MiB went to disk.
    let cases = [
        format!("{valid}x"),
        format!("{}\n\"\u{0}", &valid[..valid.len() - 1]),
    ];
    for body in cases {
        let error = assert_error(app.post("bad", body).await, 400, "invalid_json").await;
        let sentence = error["error"].as_str().unwrap();
        assert!(
            sentence.contains("not valid JSON") && sentence.contains("line"),
            "{sentence}"
        );
    }
    // Line breaks around a large document are fine.
    assert_eq!(
        app.post("bad", format!("[\n{valid}\n]\n")).await.status(),
        201
    );
    let mut bytes = valid.clone().into_bytes();
    let end = bytes.len() - 3;
    bytes[end] = 0xff;
    let error = assert_error(app.post("bad", bytes).await, 400, "invalid_json").await;
    assert!(
        error["error"].as_str().unwrap().contains("UTF-8"),
        "{error}"
    );
    assert_eq!(app.listed("bad").await.len(), 1, "only the valid one");
    assert_eq!(leftovers(&app), Vec::<String>::new());
}

both!(a_large_body_over_the_limit_or_refused_by_a_precondition_leaves_nothing);
async fn a_large_body_over_the_limit_or_refused_by_a_precondition_leaves_nothing() {
    let app = TestApp::with(&[("SNAPKEEP_MAX_BODY_BYTES", "3145728")]).await;
    // Chunked, so the limit is found while reading, after spooling began.
    let body = big(4, "over");
    let chunks: Vec<Result<_, std::io::Error>> = body
        .as_bytes()
        .chunks(256 * 1024)
        .map(|c| Ok(hyper::body::Frame::data(bytes::Bytes::copy_from_slice(c))))
        .collect();
    let stream = futures_util::stream::iter(chunks);
    let streamed = reqwest::Body::wrap(http_body_util::StreamBody::new(stream));
    let response = app.post("over", streamed).await;
    assert_error(response, 413, "body_too_large").await;

    let first = app.save("over", "[1]").await;
    let stale = app
        .client
        .post(app.session_url("over"))
        .header("content-type", "application/json")
        .header("if-none-match", "*")
        .body(big(2, "late"))
        .send()
        .await
        .unwrap();
    let refused = assert_error(stale, 412, "precondition_failed").await;
    assert_eq!(refused["latest"]["id"], first.as_str());
    assert_eq!(app.listed("over").await, vec![first]);
    assert_eq!(leftovers(&app), Vec::<String>::new());
}

#[tokio::test]
async fn a_large_upload_broken_off_midway_leaves_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn().await;
    let body = big(3, "cut");
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {BASE}/cut HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..2 << 20]).await.unwrap();
    // Wait until the upload is being spooled, then hang up.
    for _ in 0..200 {
        if leftovers(&app)
            .iter()
            .any(|n| n.starts_with(".snapkeep-upload-"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(leftovers(&app).len(), 1, "{:?}", app.tree());
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    for _ in 0..200 {
        if leftovers(&app).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(app.tree().is_empty(), "{:?}", app.tree());
}
