//! Slow and idle clients: stalled or trickled headers and bodies, idle and keep-alive
//! connections, and the connection cap. Each is cut off within a bounded time while everyone
//! else is still served.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use snapkeep::store::name::{SnapshotId, sha256_hex};

use crate::helpers::{BASE, TestApp, json, parse_answer};

/// How long a server configured with a 1 s timeout may take to act on it on a noisy machine.
const BOUND: Duration = Duration::from_secs(10);

/// Reads until the server closes the connection (a reset counts as closed) and returns what it
/// sent before; fails if the connection is still open after [`BOUND`].
async fn wait_for_close(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(err) => panic!("reading from the server failed: {err}"),
            }
        }
    };
    timeout(BOUND, read)
        .await
        .expect("the server closes the connection within 10 s");
    received
}

/// Reads exactly one response (head and `Content-Length` body) without waiting for EOF, so
/// that the connection stays usable.
async fn read_one_response(stream: &mut TcpStream) -> String {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection mid-response");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().unwrap())
                    })
                    .expect("the response has a Content-Length");
                if body.len() >= length {
                    return text;
                }
            }
        }
    };
    timeout(BOUND, read).await.expect("a response within 10 s")
}

/// A client without `app.client`'s pooled keep-alive connection, so that each request needs a
/// new connection and so a connection slot of its own.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Saves and reads back a snapshot on new connections, as any other client would.
async fn save_and_read_back(app: &TestApp, session: &str) {
    let client = fresh_client();
    let body = format!(r#"{{"served":"{session}"}}"#);
    let saved = client
        .post(app.session_url(session))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 201);
    let id = json(saved).await["id"].as_str().unwrap().to_owned();
    let latest = client
        .get(app.url(&format!("{BASE}/{session}/latest")))
        .send()
        .await
        .unwrap();
    assert_eq!(latest.status(), 200);
    assert_eq!(latest.headers()["x-snapshot-id"], id.as_str());
    assert_eq!(latest.text().await.unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_headers_is_disconnected_while_others_are_served() {
    let app = TestApp::with(&[("SNAPKEEP_HEADER_TIMEOUT", "1s")]).await;
    let mut stalled = TcpStream::connect(app.addr).await.unwrap();
    let partial = format!("POST {BASE}/stalled HTTP/1.1\r\nHost: t\r\nContent-Type: appli");
    stalled.write_all(partial.as_bytes()).await.unwrap();

    save_and_read_back(&app, "other").await;

    let answer = wait_for_close(&mut stalled).await;
    assert!(
        answer.is_empty(),
        "closed without an answer, got {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(!app.session_dir("stalled").exists());
}

both!(
    a_connection_that_never_sends_a_byte_is_closed_without_an_answer,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn a_connection_that_never_sends_a_byte_is_closed_without_an_answer() {
    let app = TestApp::with(&[("SNAPKEEP_HEADER_TIMEOUT", "1s")]).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let answer = wait_for_close(&mut silent).await;
    assert!(
        answer.is_empty(),
        "closed without an answer, got {:?}",
        String::from_utf8_lossy(&answer)
    );
}

both!(
    headers_trickled_a_byte_at_a_time_are_cut_off_because_the_timeout_bounds_the_whole_head,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn headers_trickled_a_byte_at_a_time_are_cut_off_because_the_timeout_bounds_the_whole_head() {
    let app = TestApp::with(&[("SNAPKEEP_HEADER_TIMEOUT", "1s")]).await;
    let (mut reader, mut writer) = TcpStream::connect(app.addr).await.unwrap().into_split();
    // Every gap is far below the timeout, but all of it would take over a minute.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Padding: {}\r\n\r\n",
        "x".repeat(200)
    );
    let total = head.len();
    let trickle = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(300));
        let mut sent = 0;
        for byte in head.bytes() {
            ticks.tick().await;
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });

    let answer = wait_for_close(&mut reader).await;
    assert!(
        answer.is_empty(),
        "closed without an answer, got {:?}",
        String::from_utf8_lossy(&answer)
    );
    // Writing to a closed connection fails within a tick or two.
    let sent = timeout(BOUND, trickle).await.unwrap().unwrap();
    assert!(sent < total, "cut off before the headers were complete");
}

both!(
    a_body_trickled_a_byte_at_a_time_gets_408_and_nothing_is_written,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn a_body_trickled_a_byte_at_a_time_gets_408_and_nothing_is_written() {
    let app = TestApp::with(&[("SNAPKEEP_BODY_TIMEOUT", "1s")]).await;
    let seeded = app.save("s", r#"{"kept":true}"#).await;
    let before = app.tree();

    let body = format!("\"{}\"", "x".repeat(98));
    assert_eq!(body.len(), 100);
    let (mut reader, mut writer) = TcpStream::connect(app.addr).await.unwrap().into_split();
    let head = format!(
        "POST {BASE}/s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    // One byte every 200 ms: all 100 would take 20 s.
    let trickle = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(200));
        for byte in body.bytes() {
            ticks.tick().await;
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
        }
    });

    // Served meanwhile.
    let latest = app.get(&format!("{BASE}/s/latest")).await;
    assert_eq!(latest.status(), 200);
    assert_eq!(latest.headers()["x-snapshot-id"], seeded.as_str());

    let (status, answer) = parse_answer(&wait_for_close(&mut reader).await);
    assert_eq!(status, 408, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["code"], "request_timeout", "{answer}");
    assert!(answer["error"].as_str().is_some_and(|s| s.len() > 10));
    trickle.abort();

    assert_eq!(app.tree(), before, "nothing on disk changed");
    assert_eq!(app.listed("s").await, [seeded]);
}

both!(
    three_hundred_idle_connections_do_not_stop_others_from_being_served,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn three_hundred_idle_connections_do_not_stop_others_from_being_served() {
    let app = TestApp::spawn().await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(app.addr).await.unwrap());
    }

    // Well below the default 10 s header timeout, which would free the idle slots anyway.
    timeout(Duration::from_secs(5), save_and_read_back(&app, "busy"))
        .await
        .expect("served promptly while 300 connections sit idle");
    drop(idle);
}

both!(
    past_the_connection_cap_a_client_waits_until_an_idle_connection_times_out,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn past_the_connection_cap_a_client_waits_until_an_idle_connection_times_out() {
    let mut app = TestApp::with(&[
        ("SNAPKEEP_MAX_CONNECTIONS", "2"),
        ("SNAPKEEP_HEADER_TIMEOUT", "1s"),
    ])
    .await;
    // Let go of the start-up health check's keep-alive connection. Whether it or one of the
    // idle connections below holds the second slot, both slots are held by idle connections
    // for at least one header timeout from now.
    app.client = fresh_client();
    let start = Instant::now();
    let idle = [
        TcpStream::connect(app.addr).await.unwrap(),
        TcpStream::connect(app.addr).await.unwrap(),
    ];

    let (client, url) = (fresh_client(), app.url("/healthz"));
    let mut third = tokio::spawn(async move { client.get(url).send().await.unwrap() });

    // Nothing can free a slot during the first second, so no answer in the first half.
    let early = timeout_at(start + Duration::from_millis(500), &mut third).await;
    assert!(
        early.is_err(),
        "answered while both slots were held by idle connections: the cap is not applied"
    );

    let answer = timeout(BOUND, third)
        .await
        .expect("answered once an idle connection timed out and freed its slot")
        .unwrap();
    assert_eq!(answer.status(), 200);
    drop(idle);
}

both!(
    a_keep_alive_connection_left_idle_after_a_request_is_closed_after_the_header_timeout,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn a_keep_alive_connection_left_idle_after_a_request_is_closed_after_the_header_timeout() {
    let app = TestApp::with(&[("SNAPKEEP_HEADER_TIMEOUT", "1s")]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let first = read_one_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "the connection is kept alive after the answer: {first}"
    );

    let rest = wait_for_close(&mut stream).await;
    assert!(
        rest.is_empty(),
        "closed without another answer, got {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answer_is_disconnected_after_the_send_timeout() {
    let app = TestApp::with(&[
        ("SNAPKEEP_MAX_CONNECTIONS", "1"),
        ("SNAPKEEP_SEND_TIMEOUT", "1s"),
        ("SNAPKEEP_FSYNC", "false"),
    ])
    .await;
    // Seeded on disk, so that no earlier connection of ours occupies the only slot.
    let big = format!("{{\"blob\":\"{}\"}}", "b".repeat(8 * 1024 * 1024));
    let now = time::OffsetDateTime::now_utc();
    let id = SnapshotId::next(now, None, &sha256_hex(big.as_bytes())).unwrap();
    std::fs::create_dir_all(app.session_dir("big")).unwrap();
    std::fs::write(app.session_dir("big").join(format!("{id}.json")), &big).unwrap();

    // Asks for 8 MiB and never reads a byte: the answer cannot fit in the socket buffers.
    let mut stalled = TcpStream::connect(app.addr).await.unwrap();
    let request = format!("GET {BASE}/big/latest HTTP/1.1\r\nHost: t\r\n\r\n");
    stalled.write_all(request.as_bytes()).await.unwrap();

    // The only connection slot is the stalled one's until the send timeout frees it.
    let served = timeout(BOUND, fresh_client().get(app.url("/healthz")).send()).await;
    assert_eq!(served.expect("served within 10 s").unwrap().status(), 200);
    drop(stalled);
}
