//! Rate limits (a token bucket per client address and one per session, 429 with Retry-After,
//! X-Forwarded-For only from trusted proxies) and quotas (bytes per session, number of sessions,
//! bytes in total: 507 with the data left intact), and the limits the status route advertises.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use snapkeep::store::name::sha256_hex;

use crate::helpers::{BASE, TestApp, assert_error, json};

/// The bucket size used by the rate-limit tests; at one token a second, the bucket does not
/// refill meaningfully while a test runs (and `until_limited` allows for what it does refill).
const BURST: u64 = 3;

async fn rate_limited(extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("SNAPKEEP_RATE_LIMIT", "1"),
        ("SNAPKEEP_RATE_BURST", "3"),
        ("SNAPKEEP_FSYNC", "false"),
    ];
    vars.extend_from_slice(extra);
    TestApp::with(&vars).await
}

fn list(app: &TestApp, session: &str) -> reqwest::RequestBuilder {
    app.client.get(app.session_url(session))
}

fn list_via(app: &TestApp, session: &str, forwarded_for: &str) -> reqwest::RequestBuilder {
    list(app, session).header("x-forwarded-for", forwarded_for)
}

/// What `until_limited` saw: how many requests passed before the 429, its `Retry-After`, and
/// when the first request was sent.
struct Limited {
    passed: u64,
    retry_after: u64,
    start: Instant,
}

/// Sends `make(0)`, `make(1)`, … until one is answered 429, asserting that every request before
/// it succeeded and that their number is the burst, plus at most one token per whole second the
/// test has taken (a busy machine may be slow enough for the bucket to refill a little).
async fn until_limited(mut make: impl FnMut(u64) -> reqwest::RequestBuilder) -> Limited {
    let start = Instant::now();
    let mut passed = 0;
    loop {
        let response = make(passed).send().await.unwrap();
        let refilled = start.elapsed().as_secs();
        if response.status() == 429 {
            assert!(
                (BURST..=BURST + refilled).contains(&passed),
                "429 after {passed} requests, with a burst of {BURST} and {refilled} s passed"
            );
            let retry_after = assert_limited(response).await;
            return Limited {
                passed,
                retry_after,
                start,
            };
        }
        assert!(
            response.status().is_success(),
            "request {passed}: {}",
            response.status()
        );
        passed += 1;
        assert!(
            passed <= BURST + refilled,
            "{passed} requests passed, with a burst of {BURST} and {refilled} s passed"
        );
    }
}

/// Asserts that a bucket `until_limited` emptied is still empty: `response` is a 429, unless
/// the machine was so slow that a second has passed and a token may have come back.
async fn assert_still_limited(limited: &Limited, response: reqwest::Response) {
    if response.status() == 429 || limited.start.elapsed() < Duration::from_secs(1) {
        assert_limited(response).await;
    }
}

/// Asserts a 429 `rate_limited` answer with a `Retry-After` of whole seconds, at least 1.
async fn assert_limited(response: reqwest::Response) -> u64 {
    let retry_after = response
        .headers()
        .get("retry-after")
        .expect("a 429 says when to retry")
        .to_str()
        .unwrap()
        .to_owned();
    assert_error(response, 429, "rate_limited").await;
    let seconds: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {retry_after:?}"));
    assert!(seconds >= 1, "Retry-After: {seconds}");
    seconds
}

both!(after_the_burst_one_client_on_one_session_gets_429_with_retry_after);
async fn after_the_burst_one_client_on_one_session_gets_429_with_retry_after() {
    let app = rate_limited(&[]).await;
    let limited = until_limited(|_| list(&app, "s")).await;
    assert!(
        limited.retry_after <= BURST,
        "at one token a second the next one is at most a second away, not {} s",
        limited.retry_after
    );

    // Waiting as told is enough for the next request to pass.
    tokio::time::sleep(Duration::from_secs(limited.retry_after) + Duration::from_millis(100)).await;
    assert_eq!(list(&app, "s").send().await.unwrap().status(), 200);
}

both!(a_rate_limited_write_writes_nothing);
async fn a_rate_limited_write_writes_nothing() {
    let app = rate_limited(&[]).await;
    let limited = until_limited(|n| {
        app.client
            .post(app.session_url("s"))
            .header("content-type", "application/json")
            .body(format!("[{n}]"))
    })
    .await;
    // The directory "s" and one file per write that passed: the refused one left nothing.
    let tree = app.tree();
    assert_eq!(tree.len(), 1 + limited.passed as usize, "{tree:?}");
    assert!(tree[1..].iter().all(|p| p.ends_with(".json")), "{tree:?}");
}

both!(clients_share_the_bucket_of_the_session_they_write_to);
async fn clients_share_the_bucket_of_the_session_they_write_to() {
    let app = rate_limited(&[("SNAPKEEP_TRUSTED_PROXIES", "127.0.0.1")]).await;
    // Every request from another client (named by the trusted proxy), all on session "s".
    let limited = until_limited(|n| list_via(&app, "s", &format!("203.0.113.{}", n + 1))).await;

    // A client that has sent nothing yet is still refused on "s"…
    let newcomer = list_via(&app, "s", "198.51.100.1").send().await.unwrap();
    assert_still_limited(&limited, newcomer).await;
    // …while another session is open to it, and to a client that was refused on "s".
    let fresh = list_via(&app, "t", "198.51.100.2").send().await.unwrap();
    assert_eq!(fresh.status(), 200);
    let refused_before = list_via(&app, "t", "198.51.100.1").send().await.unwrap();
    assert_eq!(refused_before.status(), 200);
}

both!(one_client_shares_its_bucket_across_sessions);
async fn one_client_shares_its_bucket_across_sessions() {
    let app = rate_limited(&[("SNAPKEEP_TRUSTED_PROXIES", "127.0.0.1")]).await;
    // Every request on another session, all from client 203.0.113.7.
    let limited = until_limited(|n| list_via(&app, &format!("s{n}"), "203.0.113.7")).await;

    let again = list_via(&app, "fresh", "203.0.113.7").send().await.unwrap();
    assert_still_limited(&limited, again).await;
    // The client's bucket is its own: another client is not affected, on any session.
    let other = list_via(&app, "fresh", "203.0.113.8").send().await.unwrap();
    assert_eq!(other.status(), 200);
    let other = list_via(&app, "s0", "203.0.113.8").send().await.unwrap();
    assert_eq!(other.status(), 200);
}

both!(forwarded_for_from_an_untrusted_peer_gives_no_fresh_bucket);
async fn forwarded_for_from_an_untrusted_peer_gives_no_fresh_bucket() {
    // No trusted proxies at all, and trusted proxies that do not include the peer (127.0.0.1).
    for trusted in [None, Some("10.0.0.0/8, 192.168.0.1")] {
        let extra: Vec<(&str, &str)> = trusted
            .map(|t| ("SNAPKEEP_TRUSTED_PROXIES", t))
            .into_iter()
            .collect();
        let app = rate_limited(&extra).await;
        // A spoofed client address and another session on every request: still one client.
        let limited =
            until_limited(|n| list_via(&app, &format!("s{n}"), &format!("203.0.113.{}", n + 1)))
                .await;
        let spoofed = list_via(&app, "fresh", "198.51.100.99")
            .send()
            .await
            .unwrap();
        assert_still_limited(&limited, spoofed).await;
        let plain = list(&app, "fresh2").send().await.unwrap();
        assert_still_limited(&limited, plain).await;
    }
}

both!(behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client);
async fn behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
    let app = rate_limited(&[("SNAPKEEP_TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8")]).await;
    // The client prepends a spoofed address of its own choice; the proxies append the real
    // client (203.0.113.9) and an inner proxy (10.0.0.x). Only 203.0.113.9 counts.
    let limited = until_limited(|n| {
        let hops = format!("192.0.2.{}, 203.0.113.9, 10.0.0.{}", n + 1, n + 1);
        list_via(&app, &format!("s{n}"), &hops)
    })
    .await;
    // The same client, with its hops split over two X-Forwarded-For header lines.
    let split = list(&app, "fresh")
        .header("x-forwarded-for", "192.0.2.200")
        .header("x-forwarded-for", "203.0.113.9, 10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_still_limited(&limited, split).await;

    let another = list_via(&app, "fresh", "203.0.113.9, 198.51.100.4, 10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(another.status(), 200, "198.51.100.4 is another client");
}

both!(health_readiness_and_status_are_not_limited);
async fn health_readiness_and_status_are_not_limited() {
    let app = rate_limited(&[]).await;
    for _ in 0..10 {
        for path in ["/healthz", "/readyz", BASE] {
            assert_eq!(app.get(path).await.status(), 200, "{path}");
        }
    }
    // None of those took a token: the whole burst is still there.
    until_limited(|n| list(&app, &format!("s{n}"))).await;
    // And while the client is limited, they still answer.
    for path in ["/healthz", "/readyz", BASE] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
}

both!(without_a_rate_limit_nothing_is_limited);
async fn without_a_rate_limit_nothing_is_limited() {
    let app = TestApp::with(&[("SNAPKEEP_FSYNC", "false")]).await;
    for n in 0..50 {
        assert_eq!(list(&app, "s").send().await.unwrap().status(), 200, "{n}");
    }
}

both!(the_status_route_advertises_the_limits);
async fn the_status_route_advertises_the_limits() {
    let app = TestApp::spawn().await;
    let status = json(app.get(BASE).await).await;
    assert_eq!(
        status["limits"],
        json!({
            "requestsPerSecond": null,
            "burst": null,
            "maxSessionBytes": null,
            "maxSessions": null,
            "maxTotalBytes": null,
        })
    );

    let app = TestApp::with(&[
        ("SNAPKEEP_RATE_LIMIT", "5"),
        ("SNAPKEEP_RATE_BURST", "20"),
        ("SNAPKEEP_MAX_SESSION_BYTES", "1000"),
        ("SNAPKEEP_MAX_SESSIONS", "3"),
        ("SNAPKEEP_MAX_TOTAL_BYTES", "5000"),
    ])
    .await;
    let status = json(app.get(BASE).await).await;
    assert_eq!(
        status["limits"],
        json!({
            "requestsPerSecond": 5,
            "burst": 20,
            "maxSessionBytes": 1000,
            "maxSessions": 3,
            "maxTotalBytes": 5000,
        })
    );

    let app = TestApp::with(&[("SNAPKEEP_RATE_LIMIT", "7")]).await;
    let limits = &json(app.get(BASE).await).await["limits"];
    assert_eq!(limits["requestsPerSecond"], 7);
    assert_eq!(
        limits["burst"], 7,
        "the burst defaults to one second's worth"
    );
    assert!(limits["maxTotalBytes"].is_null());
}

// Quotas.

/// A JSON document of exactly `len` bytes (at least 3), different for every `n`.
fn doc(n: u32, len: usize) -> String {
    let text = format!("\"{n:0width$}\"", width = len - 2);
    assert_eq!(text.len(), len);
    text
}

/// What a session's reader sees: its listing and the bytes of its latest snapshot.
async fn seen(app: &TestApp, session: &str) -> (Vec<String>, Vec<u8>) {
    let listed = app.listed(session).await;
    let latest = app.get(&format!("{BASE}/{session}/latest")).await;
    let bytes = match latest.status().as_u16() {
        200 => latest.bytes().await.unwrap().to_vec(),
        404 => Vec::new(),
        other => panic!("latest of {session}: {other}"),
    };
    (listed, bytes)
}

/// Asserts a 507 `insufficient_storage` whose sentence names `variable`.
async fn assert_over_quota(response: reqwest::Response, variable: &str) {
    let answer = assert_error(response, 507, "insufficient_storage").await;
    let sentence = answer["error"].as_str().unwrap();
    assert!(sentence.contains(variable), "{sentence}");
}

/// POSTs `body` to `session` and asserts it is refused by the quota `variable`, with nothing
/// changed on disk or in what `watched` sessions show.
async fn assert_refused(
    app: &TestApp,
    session: &str,
    body: &str,
    variable: &str,
    watched: &[&str],
) {
    let tree = app.tree();
    let mut before = Vec::new();
    for s in watched {
        before.push(seen(app, s).await);
    }
    assert_over_quota(app.post(session, body.to_owned()).await, variable).await;
    assert_eq!(app.tree(), tree, "a refused write changes nothing on disk");
    for (s, before) in watched.iter().zip(before) {
        assert_eq!(
            seen(app, s).await,
            before,
            "session {s} reads back as before"
        );
    }
}

both!(a_write_past_the_session_byte_quota_is_507_and_keeps_the_data);
async fn a_write_past_the_session_byte_quota_is_507_and_keeps_the_data() {
    let app = TestApp::with(&[
        ("SNAPKEEP_MAX_SESSION_BYTES", "24"),
        ("SNAPKEEP_FSYNC", "false"),
    ])
    .await;
    app.save("s", &doc(1, 12)).await;
    app.save("s", &doc(2, 12)).await; // exactly at the quota: fine
    let (listed, latest) = seen(&app, "s").await;
    assert_eq!(
        (listed.len(), latest.as_slice()),
        (2, doc(2, 12).as_bytes())
    );

    assert_refused(&app, "s", "1", "SNAPKEEP_MAX_SESSION_BYTES", &["s"]).await;
    let patch = app
        .client
        .patch(app.session_url("s"))
        .header("content-type", "application/merge-patch+json")
        .body("{\"more\":true}")
        .send()
        .await
        .unwrap();
    assert_over_quota(patch, "SNAPKEEP_MAX_SESSION_BYTES").await;
    assert_eq!(seen(&app, "s").await, (listed.clone(), latest));

    // Saving the latest again writes nothing, so it is no growth.
    let again = app.post("s", doc(2, 12)).await;
    assert_eq!(again.status(), 200);
    assert_eq!(json(again).await["deduplicated"], true);
    // The quota is per session: another one has its own 24 bytes.
    app.save("t", &doc(3, 12)).await;
    app.save("t", &doc(4, 12)).await;
    assert_eq!(app.listed("s").await, listed);
}

both!(a_first_snapshot_larger_than_the_session_quota_creates_nothing);
async fn a_first_snapshot_larger_than_the_session_quota_creates_nothing() {
    let app = TestApp::with(&[("SNAPKEEP_MAX_SESSION_BYTES", "10")]).await;
    assert_refused(&app, "s", &doc(1, 11), "SNAPKEEP_MAX_SESSION_BYTES", &["s"]).await;
    assert!(app.tree().is_empty(), "{:?}", app.tree());
    app.save("s", &doc(1, 10)).await;
}

both!(a_session_at_its_byte_quota_keeps_rotating);
async fn a_session_at_its_byte_quota_keeps_rotating() {
    let app = TestApp::with(&[
        ("SNAPKEEP_RETAIN_LAST", "1"),
        ("SNAPKEEP_MAX_SESSION_BYTES", "13"),
        ("SNAPKEEP_FSYNC", "false"),
    ])
    .await;
    let mut previous = app.save("s", &doc(0, 12)).await;
    for n in 1..=8 {
        let response = app.post("s", doc(n, 12)).await;
        assert_eq!(response.status(), 201, "write {n}");
        let answer = json(response).await;
        assert_eq!(answer["pruned"], json!([previous]), "write {n}");
        previous = answer["id"].as_str().unwrap().to_owned();
        assert_eq!(
            seen(&app, "s").await,
            (vec![previous.clone()], doc(n, 12).into_bytes())
        );
    }
    // Still a quota: a larger document does not fit even with the old one pruned.
    assert_refused(
        &app,
        "s",
        &doc(99, 14),
        "SNAPKEEP_MAX_SESSION_BYTES",
        &["s"],
    )
    .await;
}

#[tokio::test]
async fn the_session_count_quota_refuses_only_new_sessions() {
    let app = TestApp::with(&[("SNAPKEEP_MAX_SESSIONS", "2"), ("SNAPKEEP_FSYNC", "false")]).await;
    app.save("a", &doc(1, 5)).await;
    app.save("b", &doc(2, 5)).await;

    assert_refused(
        &app,
        "c",
        &doc(3, 5),
        "SNAPKEEP_MAX_SESSIONS",
        &["a", "b", "c"],
    )
    .await;
    assert!(!app.session_dir("c").exists());
    // Reading a session that has nothing is no new session.
    assert!(app.listed("c").await.is_empty());
    // The sessions that exist keep writing.
    app.save("a", &doc(4, 5)).await;
    app.save("b", &doc(5, 50)).await;
    assert_refused(&app, "c", &doc(6, 5), "SNAPKEEP_MAX_SESSIONS", &["a", "b"]).await;
}

both!(the_total_quota_refuses_growth_only);
async fn the_total_quota_refuses_growth_only() {
    let app = TestApp::with(&[
        ("SNAPKEEP_MAX_TOTAL_BYTES", "36"),
        ("SNAPKEEP_RETAIN_LAST", "1"),
        ("SNAPKEEP_FSYNC", "false"),
    ])
    .await;
    for (n, s) in ["a", "b", "c"].into_iter().enumerate() {
        app.save(s, &doc(n as u32, 12)).await;
    }
    let all = ["a", "b", "c", "d"];
    // 36 of 36 bytes: no new session fits, and no existing one may grow, by even one byte.
    assert_refused(&app, "d", "1", "SNAPKEEP_MAX_TOTAL_BYTES", &all).await;
    assert_refused(&app, "a", &doc(10, 13), "SNAPKEEP_MAX_TOTAL_BYTES", &all).await;
    // A write that replaces as much as it adds (retention prunes the old one) is no growth.
    app.save("a", &doc(11, 12)).await;
    // Nor is one that shrinks the session.
    app.save("a", &doc(12, 5)).await;
    // 29 of 36 now: 7 bytes are free, and a new session may take them, but not 8.
    assert_refused(&app, "d", &doc(13, 8), "SNAPKEEP_MAX_TOTAL_BYTES", &all).await;
    app.save("d", &doc(14, 7)).await;
    assert_refused(&app, "b", &doc(15, 13), "SNAPKEEP_MAX_TOTAL_BYTES", &all).await;
}

#[tokio::test]
async fn a_write_that_frees_space_passes_even_when_the_total_is_already_over() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    seed(&data, "s", "20200101T000000.000001Z", &doc(1, 40));
    seed(&data, "s", "20200101T000000.000002Z", &doc(2, 40));
    let app = TestApp::with_dir(
        temp,
        data,
        &[
            ("SNAPKEEP_MAX_TOTAL_BYTES", "30"),
            ("SNAPKEEP_RETAIN_LAST", "1"),
        ],
    )
    .await;
    // 80 bytes on disk, 30 allowed: writing 20 and pruning 80 shrinks, so it goes through.
    app.save("s", &doc(3, 20)).await;
    assert_eq!(app.listed("s").await.len(), 1);
    assert_refused(&app, "t", &doc(4, 11), "SNAPKEEP_MAX_TOTAL_BYTES", &["s"]).await;
    app.save("t", &doc(5, 10)).await;
}

/// Writes a valid snapshot file for `session` into a data directory before the server starts;
/// returns its id.
fn seed(data: &Path, session: &str, time: &str, content: &str) -> String {
    let id = format!("{time}-{}", &sha256_hex(content.as_bytes())[..16]);
    let dir = data.join(session);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{id}.json")), content).unwrap();
    id
}

/// A data directory holding session "old" with two snapshots of 20 bytes (40 in all), plus
/// files that are not snapshots and must not count: notes beside the snapshots, and a
/// directory named like a session that holds no snapshot.
fn seeded() -> (tempfile::TempDir, std::path::PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    seed(&data, "old", "20200101T000000.000001Z", &doc(1, 20));
    seed(&data, "old", "20200101T000000.000002Z", &doc(2, 20));
    std::fs::write(data.join("old").join("notes.txt"), "x".repeat(1000)).unwrap();
    std::fs::create_dir_all(data.join("empty")).unwrap();
    std::fs::write(data.join("empty").join("README"), "x".repeat(1000)).unwrap();
    std::fs::write(data.join("README.md"), "x".repeat(1000)).unwrap();
    (temp, data)
}

#[tokio::test]
async fn quotas_count_the_snapshots_on_disk_at_start() {
    let (temp, data) = seeded();
    let app = TestApp::with_dir(temp, data, &[("SNAPKEEP_MAX_SESSION_BYTES", "50")]).await;
    assert_refused(
        &app,
        "old",
        &doc(3, 11),
        "SNAPKEEP_MAX_SESSION_BYTES",
        &["old"],
    )
    .await;
    app.save("old", &doc(4, 10)).await;
    app.save("new", &doc(5, 50)).await;

    let (temp, data) = seeded();
    let app = TestApp::with_dir(temp, data, &[("SNAPKEEP_MAX_SESSIONS", "2")]).await;
    // "old" is one session; "empty" holds no snapshot and is none.
    app.save("new", &doc(3, 5)).await;
    assert_refused(
        &app,
        "newer",
        &doc(4, 5),
        "SNAPKEEP_MAX_SESSIONS",
        &["old", "new"],
    )
    .await;
    assert_refused(
        &app,
        "empty",
        &doc(5, 5),
        "SNAPKEEP_MAX_SESSIONS",
        &["old", "new"],
    )
    .await;
    app.save("old", &doc(6, 5)).await;

    let (temp, data) = seeded();
    let app = TestApp::with_dir(temp, data, &[("SNAPKEEP_MAX_TOTAL_BYTES", "52")]).await;
    assert_refused(
        &app,
        "new",
        &doc(3, 13),
        "SNAPKEEP_MAX_TOTAL_BYTES",
        &["old"],
    )
    .await;
    assert_refused(
        &app,
        "old",
        &doc(4, 13),
        "SNAPKEEP_MAX_TOTAL_BYTES",
        &["old"],
    )
    .await;
    app.save("new", &doc(5, 12)).await;
}

both!(deleting_a_snapshot_frees_quota_at_once);
async fn deleting_a_snapshot_frees_quota_at_once() {
    let app = TestApp::with(&[
        ("SNAPKEEP_MAX_SESSION_BYTES", "24"),
        ("SNAPKEEP_MAX_SESSIONS", "2"),
        ("SNAPKEEP_MAX_TOTAL_BYTES", "36"),
        ("SNAPKEEP_FSYNC", "false"),
    ])
    .await;
    let a1 = app.save("a", &doc(1, 12)).await;
    app.save("a", &doc(2, 12)).await;
    let b1 = app.save("b", &doc(3, 12)).await;

    // Session "a" is full; deleting its older snapshot makes room in it.
    assert_refused(&app, "a", "1", "SNAPKEEP_MAX_SESSION_BYTES", &["a", "b"]).await;
    assert_eq!(app.delete(&format!("{BASE}/a/{a1}")).await.status(), 204);
    app.save("a", &doc(4, 12)).await;

    // 36 of 36 bytes: deleting b's only snapshot frees its bytes and its session.
    assert_refused(&app, "b", "1", "SNAPKEEP_MAX_TOTAL_BYTES", &["a", "b"]).await;
    assert_refused(&app, "c", "1", "SNAPKEEP_MAX_SESSIONS", &["a", "b"]).await;
    assert_eq!(app.delete(&format!("{BASE}/b/{b1}")).await.status(), 204);
    app.save("c", &doc(5, 12)).await;
}

both!(deleting_a_session_frees_its_session_at_once);
async fn deleting_a_session_frees_its_session_at_once() {
    let app = TestApp::with(&[("SNAPKEEP_MAX_SESSIONS", "2"), ("SNAPKEEP_FSYNC", "false")]).await;
    app.save("a", &doc(1, 12)).await;
    app.save("b", &doc(2, 12)).await;
    assert_refused(&app, "c", "1", "SNAPKEEP_MAX_SESSIONS", &["a", "b"]).await;

    assert_eq!(app.delete(&format!("{BASE}/b")).await.status(), 204);
    let response = app.post("c", doc(3, 12)).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

both!(deleting_a_session_frees_its_bytes_at_once);
async fn deleting_a_session_frees_its_bytes_at_once() {
    let app = TestApp::with(&[
        ("SNAPKEEP_MAX_TOTAL_BYTES", "36"),
        ("SNAPKEEP_FSYNC", "false"),
    ])
    .await;
    app.save("a", &doc(1, 12)).await;
    app.save("a", &doc(2, 12)).await;
    app.save("b", &doc(3, 12)).await;
    assert_refused(&app, "c", "1", "SNAPKEEP_MAX_TOTAL_BYTES", &["a", "b"]).await;

    assert_eq!(app.delete(&format!("{BASE}/a")).await.status(), 204);
    let response = app.post("c", doc(4, 24)).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

both!(a_session_deleted_before_a_restart_is_free_after_it);
async fn a_session_deleted_before_a_restart_is_free_after_it() {
    let vars = [
        ("SNAPKEEP_MAX_SESSIONS", "2"),
        ("SNAPKEEP_MAX_TOTAL_BYTES", "36"),
        ("SNAPKEEP_FSYNC", "false"),
    ];
    let app = TestApp::with(&vars).await;
    app.save("a", &doc(1, 12)).await;
    app.save("a", &doc(2, 12)).await;
    app.save("b", &doc(3, 12)).await;
    assert_eq!(app.delete(&format!("{BASE}/a")).await.status(), 204);
    let stopped = app.stop().await;

    let app = TestApp::restart(stopped, &vars).await;
    app.save("c", &doc(4, 24)).await;
    assert_refused(&app, "d", "1", "SNAPKEEP_MAX_SESSIONS", &["b", "c"]).await;
}

both!(
    concurrent_writers_cannot_squeeze_past_the_quotas,
    flavor = "multi_thread",
    worker_threads = 4
);
async fn concurrent_writers_cannot_squeeze_past_the_quotas() {
    for (variable, limit, fits) in [
        ("SNAPKEEP_MAX_TOTAL_BYTES", "60", 5),
        ("SNAPKEEP_MAX_SESSIONS", "3", 3),
    ] {
        let app = TestApp::with(&[(variable, limit), ("SNAPKEEP_FSYNC", "false")]).await;
        let writers: Vec<_> = (0..20)
            .map(|n| {
                let request = app
                    .client
                    .post(app.session_url(&format!("s{n}")))
                    .header("content-type", "application/json")
                    .body(doc(n, 12));
                tokio::spawn(async move {
                    let response = request.send().await.unwrap();
                    let status = response.status().as_u16();
                    (status, json(response).await)
                })
            })
            .collect();
        let mut created = 0;
        for writer in writers {
            let (status, answer) = writer.await.unwrap();
            match status {
                201 => created += 1,
                507 => {
                    assert_eq!(answer["code"], "insufficient_storage");
                    assert!(
                        answer["error"].as_str().unwrap().contains(variable),
                        "{answer}"
                    );
                }
                other => panic!("unexpected {other}: {answer}"),
            }
        }
        assert_eq!(created, fits, "{variable}={limit}");
        assert_eq!(app.snapshots_stored().len(), fits, "{:?}", app.tree());
    }
}

both!(requests_without_credentials_do_not_drain_a_sessions_bucket);
/// Without a token, nobody can use up a session's requests: the session's bucket is charged
/// only once the credentials have passed.
async fn requests_without_credentials_do_not_drain_a_sessions_bucket() {
    let key = "signing-key-0123456789abcdef";
    let app = TestApp::with(&[
        ("SNAPKEEP_SIGNING_KEY", key),
        ("SNAPKEEP_RATE_LIMIT", "1"),
        ("SNAPKEEP_RATE_BURST", "3"),
        ("SNAPKEEP_TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let session = snapkeep::store::name::SessionId::parse("victim").unwrap();
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
    let token = snapkeep::auth::mint(key.as_bytes(), &session, expires);
    let attack = |n: u8| {
        app.client
            .post(app.session_url("victim"))
            .header("x-forwarded-for", format!("198.51.100.{n}"))
            .body("{}")
            .send()
    };
    for n in 1..=6 {
        assert_eq!(attack(n).await.unwrap().status(), 401);
    }
    let owner = app
        .client
        .post(app.session_url("victim"))
        .header("x-forwarded-for", "203.0.113.7")
        .bearer_auth(&token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(owner.status(), 201, "the owner still gets in");
}
