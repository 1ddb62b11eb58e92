//! `Content-Encoding: gzip` request bodies: stored decompressed, limited after decompression,
//! refused cleanly when corrupt or in another coding.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use snapkeep::store::name::sha256_hex;

use crate::helpers::{BASE, TestApp, assert_error, json};

/// A server with one session holding one snapshot, and its tree, so that "nothing on disk
/// changed" means something.
async fn seeded(vars: &[(&str, &str)]) -> (TestApp, Vec<String>) {
    let app = TestApp::with(vars).await;
    app.save("s", r#"{"kept":true}"#).await;
    let tree = app.tree();
    (app, tree)
}

fn gzip_with(bytes: &[u8], level: Compression) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), level);
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    gzip_with(bytes, Compression::default())
}

/// A JSON string of `len` bytes in all (quotes included).
fn json_string_of_len(len: usize) -> String {
    format!("\"{}\"", "x".repeat(len - 2))
}

/// A JSON string of `len` bytes whose content does not compress (hex of a digest chain).
fn incompressible_json_of_len(len: usize) -> String {
    let mut text = String::new();
    let mut digest = sha256_hex(b"seed");
    while text.len() < len - 2 {
        text.push_str(&digest);
        digest = sha256_hex(digest.as_bytes());
    }
    text.truncate(len - 2);
    format!("\"{text}\"")
}

/// A varied JSON document of a few KiB, so its deflate stream has a middle worth breaking.
fn document() -> String {
    let notes: Vec<String> = (0..100)
        .map(|n| {
            format!(
                r#"{{"id":{n},"text":"note {} of the day","done":{}}}"#,
                n * 7919 % 1000,
                n % 3 == 0
            )
        })
        .collect();
    format!(r#"{{"notes":[{}]}}"#, notes.join(","))
}

/// POSTs `body` as gzipped JSON.
async fn post_gzip(app: &TestApp, session: &str, body: Vec<u8>) -> reqwest::Response {
    post_encoded(app, session, "gzip", body).await
}

async fn post_encoded(
    app: &TestApp,
    session: &str,
    encoding: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.client
        .post(app.session_url(session))
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn latest(app: &TestApp, session: &str) -> String {
    let response = app.get(&format!("{BASE}/{session}/latest")).await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn a_gzipped_body_is_stored_and_served_decompressed() {
    let app = TestApp::spawn().await;
    let body = document();

    let response = post_gzip(&app, "s", gzip(body.as_bytes())).await;

    assert_eq!(response.status(), 201);
    let answer = json(response).await;
    assert_eq!(answer["bytes"], body.len());
    assert_eq!(answer["sha256"], sha256_hex(body.as_bytes()));
    let id = answer["id"].as_str().unwrap();
    let file = app.session_dir("s").join(format!("{id}.json"));
    assert_eq!(std::fs::read_to_string(file).unwrap(), body);
    assert_eq!(latest(&app, "s").await, body);
}

both!(x_gzip_and_any_letter_case_mean_gzip_too);
async fn x_gzip_and_any_letter_case_mean_gzip_too() {
    let app = TestApp::spawn().await;
    for (n, encoding) in ["x-gzip", "GZIP", "Gzip"].into_iter().enumerate() {
        let body = format!("[{n}]");

        let response = post_encoded(&app, "s", encoding, gzip(body.as_bytes())).await;

        assert_eq!(response.status(), 201, "{encoding}");
        assert_eq!(latest(&app, "s").await, body, "{encoding}");
    }
}

both!(a_body_that_decompresses_to_exactly_the_limit_is_accepted);
async fn a_body_that_decompresses_to_exactly_the_limit_is_accepted() {
    let app = TestApp::with(&[("SNAPKEEP_MAX_BODY_BYTES", "1024")]).await;
    let body = json_string_of_len(1024);

    let response = post_gzip(&app, "s", gzip(body.as_bytes())).await;

    assert_eq!(response.status(), 201);
    assert_eq!(json(response).await["bytes"], 1024);
    assert_eq!(latest(&app, "s").await, body);
}

both!(a_gzipped_body_larger_than_the_limit_that_decompresses_to_the_limit_is_accepted);
async fn a_gzipped_body_larger_than_the_limit_that_decompresses_to_the_limit_is_accepted() {
    let app = TestApp::with(&[("SNAPKEEP_MAX_BODY_BYTES", "1024")]).await;
    let body = incompressible_json_of_len(1024);
    let compressed = gzip_with(body.as_bytes(), Compression::none());
    assert!(compressed.len() > 1024, "gzip framing makes it larger");

    let response = post_gzip(&app, "s", compressed).await;

    assert_eq!(response.status(), 201);
    assert_eq!(latest(&app, "s").await, body);
}

both!(a_tiny_body_that_decompresses_past_the_limit_is_413);
async fn a_tiny_body_that_decompresses_past_the_limit_is_413() {
    let (app, before) = seeded(&[("SNAPKEEP_MAX_BODY_BYTES", "1024")]).await;
    let compressed = gzip(json_string_of_len(1025).as_bytes());
    assert!(compressed.len() < 100);

    let response = post_gzip(&app, "s", compressed).await;

    let body = assert_error(response, 413, "body_too_large").await;
    assert_eq!(body["limit"], 1024);
    assert_eq!(app.tree(), before);
}

both!(a_gzip_bomb_is_413_and_writes_nothing);
async fn a_gzip_bomb_is_413_and_writes_nothing() {
    let (app, before) = seeded(&[("SNAPKEEP_MAX_BODY_BYTES", "1048576")]).await;
    // 200 MiB of JSON, compressed a chunk at a time: never held whole in memory here.
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    let zeros = vec![b'0'; 1 << 20];
    encoder.write_all(b"\"").unwrap();
    for _ in 0..200 {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.write_all(b"\"").unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(
        bomb.len() < 1 << 20,
        "small enough to pass the Content-Length check"
    );

    let response = post_gzip(&app, "s", bomb).await;

    let body = assert_error(response, 413, "body_too_large").await;
    assert_eq!(body["limit"], 1048576);
    assert_eq!(app.tree(), before);
}

both!(random_bytes_labelled_gzip_are_400_invalid_gzip);
async fn random_bytes_labelled_gzip_are_400_invalid_gzip() {
    let (app, before) = seeded(&[]).await;
    // A fixed xorshift sequence: reproducible, and not a gzip header.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..512)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    assert_ne!(noise[..2], [0x1f, 0x8b]);

    let response = post_gzip(&app, "s", noise).await;

    assert_error(response, 400, "invalid_gzip").await;
    assert_eq!(app.tree(), before);
}

both!(a_gzip_stream_with_its_middle_flipped_is_400_invalid_gzip);
async fn a_gzip_stream_with_its_middle_flipped_is_400_invalid_gzip() {
    let (app, before) = seeded(&[]).await;
    let mut compressed = gzip(document().as_bytes());
    let middle = compressed.len() / 2;
    for byte in &mut compressed[middle - 4..middle + 4] {
        *byte ^= 0xff;
    }

    let response = post_gzip(&app, "s", compressed).await;

    assert_error(response, 400, "invalid_gzip").await;
    assert_eq!(app.tree(), before);
}

both!(a_truncated_gzip_stream_is_400_invalid_gzip);
async fn a_truncated_gzip_stream_is_400_invalid_gzip() {
    let (app, before) = seeded(&[]).await;
    let compressed = gzip(document().as_bytes());

    let response = post_gzip(&app, "s", compressed[..compressed.len() / 2].to_vec()).await;

    assert_error(response, 400, "invalid_gzip").await;
    assert_eq!(app.tree(), before);
}

both!(a_gzip_stream_missing_only_its_trailer_is_400_invalid_gzip);
async fn a_gzip_stream_missing_only_its_trailer_is_400_invalid_gzip() {
    let (app, before) = seeded(&[]).await;
    let compressed = gzip(document().as_bytes());
    // The last 8 bytes are the CRC-32 and the length: all the data is there, unchecked.
    let without_trailer = compressed[..compressed.len() - 8].to_vec();

    let response = post_gzip(&app, "s", without_trailer).await;

    assert_error(response, 400, "invalid_gzip").await;
    assert_eq!(app.tree(), before);
}

both!(gzip_of_invalid_json_is_400_invalid_json);
async fn gzip_of_invalid_json_is_400_invalid_json() {
    let (app, before) = seeded(&[]).await;

    let response = post_gzip(&app, "s", gzip(br#"{"a": [1, 2"#)).await;

    assert_error(response, 400, "invalid_json").await;
    assert_eq!(app.tree(), before);
}

both!(other_content_codings_are_415);
async fn other_content_codings_are_415() {
    let (app, before) = seeded(&[]).await;
    for encoding in ["br", "deflate", "gzip, br", "zstd", "compress"] {
        let response = post_encoded(&app, "s", encoding, b"{}".to_vec()).await;

        let body = assert_error(response, 415, "unsupported_media_type").await;
        let sentence = body["error"].as_str().unwrap();
        assert!(sentence.contains("gzip"), "names what to send: {sentence}");
    }
    assert_eq!(app.tree(), before);
}

#[tokio::test]

async fn codings_listed_in_two_header_lines_are_415() {
    let (app, before) = seeded(&[]).await;

    let response = app
        .client
        .post(app.session_url("s"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("content-encoding", "br")
        .body(gzip(b"{}"))
        .send()
        .await
        .unwrap();

    assert_error(response, 415, "unsupported_media_type").await;
    assert_eq!(app.tree(), before);
}

both!(a_patch_may_be_gzipped_too);
async fn a_patch_may_be_gzipped_too() {
    let app = TestApp::spawn().await;
    app.save("s", r#"{"a":1}"#).await;

    let response = app
        .client
        .patch(app.session_url("s"))
        .header("content-type", "application/merge-patch+json")
        .header("content-encoding", "gzip")
        .body(gzip(br#"{"b":[true],"a":null}"#))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 201);
    assert_eq!(latest(&app, "s").await, r#"{"b":[true]}"#);
}

both!(every_gzip_member_is_decoded_as_zcat_would);
async fn every_gzip_member_is_decoded_as_zcat_would() {
    let app = TestApp::spawn().await;
    let doc = r#"{"first":1,"second":2}"#;
    let (head, tail) = doc.split_at(11);
    let mut two_members = gzip(head.as_bytes());
    two_members.extend(gzip(tail.as_bytes()));

    assert_eq!(post_gzip(&app, "members", two_members).await.status(), 201);
    assert_eq!(latest(&app, "members").await, doc);
}

both!(bytes_after_the_gzip_stream_are_400_not_dropped);
async fn bytes_after_the_gzip_stream_are_400_not_dropped() {
    let (app, before) = seeded(&[]).await;
    let mut body = gzip(br#"{"a":1}"#);
    body.extend_from_slice(b"GARBAGE-NOT-GZIP");

    assert_error(post_gzip(&app, "s", body).await, 400, "invalid_gzip").await;
    assert_eq!(app.tree(), before);
}

both!(an_invalid_deflate_block_is_400_invalid_gzip_not_an_incomplete_body);
async fn an_invalid_deflate_block_is_400_invalid_gzip_not_an_incomplete_body() {
    let (app, before) = seeded(&[]).await;
    // A valid gzip header, then a deflate block of the reserved type 3 (BTYPE=11).
    let mut body = gzip(b"{}")[..10].to_vec();
    body.extend_from_slice(&[0x07, 0x00, 0x00, 0x00]);

    assert_error(post_gzip(&app, "s", body).await, 400, "invalid_gzip").await;
    assert_eq!(app.tree(), before);
}
