//! The contract's bad-input table: every refusal is a 4xx with a JSON sentence, and nothing on
//! disk changes.

use crate::helpers::{BASE, TestApp, assert_error, read_response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const ID: &str = "20261123T185337.123456Z-9f86d081884c7d65";

/// A seeded app: one session with one snapshot, so "nothing changed" can be checked.
async fn seeded(vars: &[(&str, &str)]) -> (TestApp, Vec<String>) {
    let app = TestApp::with(vars).await;
    app.save("s", r#"{"kept":true}"#).await;
    let tree = app.tree();
    (app, tree)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").into_bytes()
}

fn delete(path: &str) -> Vec<u8> {
    format!("DELETE {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").into_bytes()
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

both!(path_tricks_and_invalid_names_are_400);
async fn path_tricks_and_invalid_names_are_400() {
    let (app, before) = seeded(&[]).await;
    let long = "a".repeat(129);
    let cases = [
        (format!("{BASE}/.."), "invalid_session"),
        (format!("{BASE}/%2e%2e"), "invalid_session"),
        (format!("{BASE}/%2E%2E/s"), "invalid_session"),
        (format!("{BASE}/a%2fb"), "invalid_session"),
        (format!("{BASE}/..%2f..%2fetc"), "invalid_session"),
        (format!("{BASE}/.hidden"), "invalid_session"),
        (format!("{BASE}/{long}"), "invalid_session"),
        (format!("{BASE}/a%00b"), "invalid_session"),
        (format!("{BASE}/caf%C3%A9"), "invalid_session"),
        (format!("{BASE}/%ff"), "invalid_path"),
        (format!("{BASE}/s/.."), "invalid_id"),
        (format!("{BASE}/s/%2e%2e%2f%2e%2e%2fs"), "invalid_id"),
        (format!("{BASE}/s/not-an-id"), "invalid_id"),
        (format!("{BASE}/s/{ID}.json"), "invalid_id"),
        (format!("{BASE}/../etc/passwd"), "invalid_path"),
        (format!("{BASE}/s/../../x"), "invalid_path"),
        (format!("{BASE}//s"), "invalid_session"),
    ];
    for (path, code) in &cases {
        // POST is a route only for {base}/{session}; elsewhere it would be a 405 anyway.
        let session_shaped = path.matches('/').count() == 3;
        let mut requests = vec![get(path), delete(path)];
        if session_shaped {
            requests.push(post(path, "{}"));
        }
        for request in requests {
            let (status, body) = app.raw(&request).await;
            assert_eq!(status, 400, "{path}: {body}");
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["code"], *code, "{path}: {body}");
        }
    }
    assert_eq!(app.tree(), before, "nothing on disk changed");
}

both!(a_well_formed_url_that_names_no_resource_is_404);
/// RFC 9110: the syntax is fine, the resource does not exist (a path trick is still a 400).
async fn a_well_formed_url_that_names_no_resource_is_404() {
    let (app, before) = seeded(&[]).await;
    for path in [
        format!("{BASE}/s/{ID}/extra"),
        format!("{BASE}/s/latest/more"),
        format!("{BASE}/s/{ID}/a/b/c"),
    ] {
        for request in [get(&path), delete(&path), post(&path, "{}")] {
            let (status, body) = app.raw(&request).await;
            assert_eq!(status, 404, "{path}: {body}");
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["code"], "not_found", "{path}: {body}");
        }
    }
    assert_eq!(app.tree(), before, "nothing on disk changed");
}

both!(a_session_of_exactly_128_characters_is_fine);
async fn a_session_of_exactly_128_characters_is_fine() {
    let app = TestApp::spawn().await;
    app.save(&"a".repeat(128), "{}").await;
}

both!(invalid_json_is_400_with_line_and_column);
async fn invalid_json_is_400_with_line_and_column() {
    let (app, before) = seeded(&[]).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: [&[u8]; 7] = [
        b"not json",
        b"{\"a\": [1, 2",
        b"{\"a\":\n  1,}",
        b"",
        b"{\"a\": \"\xff\xfe\"}",
        b"{} trailing",
        deep.as_bytes(),
    ];
    for body in cases {
        let response = app.post("s", body.to_vec()).await;
        let answer = assert_error(response, 400, "invalid_json").await;
        let sentence = answer["error"].as_str().unwrap();
        assert!(
            sentence.contains(" line ") && sentence.contains(" column "),
            "{sentence}"
        );
    }
    assert_eq!(app.tree(), before, "nothing on disk changed");
}

both!(a_body_of_exactly_the_limit_is_accepted_and_one_more_byte_is_413);
async fn a_body_of_exactly_the_limit_is_accepted_and_one_more_byte_is_413() {
    let (app, before) = seeded(&[("SNAPKEEP_MAX_BODY_BYTES", "64")]).await;
    let exact = format!("\"{}\"", "x".repeat(62));
    assert_eq!(exact.len(), 64);
    let over = format!("\"{}\"", "x".repeat(63));

    let answer = assert_error(app.post("s", over).await, 413, "body_too_large").await;
    assert_eq!(answer["limit"], 64);
    assert_eq!(app.tree(), before, "nothing on disk changed");

    assert_eq!(app.post("s", exact).await.status(), 201);
}

both!(a_declared_length_over_the_limit_is_refused_before_the_body_is_sent);
async fn a_declared_length_over_the_limit_is_refused_before_the_body_is_sent() {
    let (app, before) = seeded(&[("SNAPKEEP_MAX_BODY_BYTES", "1024")]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // Headers only: the answer must come without a single body byte being sent.
    let head = format!(
        "POST {BASE}/s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"limit\":1024"), "{body}");
    assert_eq!(app.tree(), before);
}

both!(a_chunked_body_is_cut_off_at_the_limit_without_reading_the_rest);
async fn a_chunked_body_is_cut_off_at_the_limit_without_reading_the_rest() {
    let (app, before) = seeded(&[("SNAPKEEP_MAX_BODY_BYTES", "1024")]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST {BASE}/s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = "x".repeat(2000);
    stream
        .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
        .await
        .unwrap();
    // The body never ends; the answer must come anyway.
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(app.tree(), before);
}

both!(other_content_types_and_encodings_are_415);
async fn other_content_types_and_encodings_are_415() {
    let (app, before) = seeded(&[]).await;
    for content_type in [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/html",
        "application/xml",
        "application/json; charset=iso-8859-1",
    ] {
        let response = app
            .client
            .post(app.session_url("s"))
            .header("content-type", content_type)
            .body("{}")
            .send()
            .await
            .unwrap();
        let answer = assert_error(response, 415, "unsupported_media_type").await;
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("application/json")
        );
    }
    let response = app
        .client
        .post(app.session_url("s"))
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(response, 415, "unsupported_media_type").await;
    assert_eq!(app.tree(), before, "nothing on disk changed");
}

both!(no_client_mistake_is_a_500);
async fn no_client_mistake_is_a_500() {
    let app = TestApp::spawn().await;
    let requests = [
        get(&format!("{BASE}/%")),
        get(&format!("{BASE}/s/%zz")),
        post(&format!("{BASE}/s"), "\u{0}"),
        b"GET /api/backup/s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: x\r\n\r\n"
            .to_vec(),
    ];
    for request in requests {
        let (status, body) = app.raw(&request).await;
        assert!((400..500).contains(&status), "{status}: {body}");
    }
}
