//! The change feed, `GET {base}/{session}/events`, read as a browser's `EventSource` would:
//! what a write, a delete and a reconnect send, how soon, the access rules, and the stream cap.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{BASE, TestApp, assert_error, json};

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// A feed being read.
pub struct Feed {
    response: reqwest::Response,
    buffer: String,
}

impl Feed {
    /// Opens the session's feed (with `Last-Event-ID`, when given) and checks its headers.
    pub async fn open(app: &TestApp, session: &str, last: Option<&str>) -> Feed {
        let mut request = app.client.get(app.url(&format!("{BASE}/{session}/events")));
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Feed {
            response,
            buffer: String::new(),
        }
    }

    /// The next event within `within`, or `None`. Comment lines (keep-alives) are skipped.
    pub async fn next(&mut self, within: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
}

fn parse(block: &str) -> Option<Sse> {
    let (mut event, mut id, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            event = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim());
        }
    }
    Some(Sse {
        event: event?,
        id: id.filter(|id| !id.is_empty()),
        data: serde_json::from_str(&data).unwrap(),
    })
}

const SOON: Duration = Duration::from_secs(2);
const QUIET: Duration = Duration::from_millis(300);

both!(a_write_is_an_event_within_a_second);
async fn a_write_is_an_event_within_a_second() {
    let app = TestApp::spawn().await;
    let mut feed = Feed::open(&app, "s", None).await;
    assert_eq!(
        feed.next(QUIET).await,
        None,
        "an empty session says nothing"
    );
    let started = Instant::now();
    let saved = json(app.post("s", "[1]").await).await;
    let event = feed.next(SOON).await.expect("an event");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(event.event, "snapshot");
    assert_eq!(event.id.as_deref(), saved["id"].as_str());
    assert_eq!(event.data["id"], saved["id"]);
    assert_eq!(event.data["sha256"], saved["sha256"]);
    assert_eq!(event.data["bytes"], 3);
    assert_eq!(event.data["createdAt"], saved["createdAt"]);
    // A save of the same content changes nothing, and says nothing.
    assert_eq!(json(app.post("s", "[1]").await).await["deduplicated"], true);
    assert_eq!(feed.next(QUIET).await, None);
}

both!(a_reconnect_catches_up_with_last_event_id);
async fn a_reconnect_catches_up_with_last_event_id() {
    let app = TestApp::spawn().await;
    let first = app.save("s", "[1]").await;
    let second = app.save("s", "[2]").await;
    // A first connect gets the latest at once; one that has it, nothing.
    let mut fresh = Feed::open(&app, "s", None).await;
    assert_eq!(
        fresh.next(SOON).await.unwrap().id.as_deref(),
        Some(second.as_str())
    );
    let mut current = Feed::open(&app, "s", Some(&second)).await;
    assert_eq!(current.next(QUIET).await, None);
    // One that missed a write gets the latest, not a log of what it missed.
    let mut behind = Feed::open(&app, "s", Some(&first)).await;
    let caught = behind.next(SOON).await.unwrap();
    assert_eq!(
        (caught.event.as_str(), caught.id.as_deref()),
        ("snapshot", Some(second.as_str()))
    );
    assert_eq!(behind.next(QUIET).await, None);
}

both!(deletes_are_deleted_events_with_the_latest_after_them);
async fn deletes_are_deleted_events_with_the_latest_after_them() {
    let app = TestApp::with(&[("SNAPKEEP_RETAIN_LAST", "2")]).await;
    let first = app.save("s", "[1]").await;
    let mut feed = Feed::open(&app, "s", Some(&first)).await;
    let second = app.save("s", "[2]").await;
    assert_eq!(feed.next(SOON).await.unwrap().event, "snapshot");
    // Retention's pruning is a snapshot and the ids it removed.
    let third = app.save("s", "[3]").await;
    let pruning = feed.next(SOON).await.unwrap();
    assert_eq!(
        (pruning.event.as_str(), pruning.id.as_deref()),
        ("snapshot", Some(third.as_str()))
    );

    // The newest deleted: the latest goes back.
    assert_eq!(app.delete(&format!("{BASE}/s/{third}")).await.status(), 204);
    let back = loop {
        let event = feed.next(SOON).await.expect("an event");
        if event.data["ids"] == serde_json::json!([third]) {
            break event;
        }
    };
    assert_eq!(back.event, "deleted");
    assert_eq!(back.data["latest"]["id"], second.as_str());

    // The session deleted: no latest.
    assert_eq!(app.delete(&format!("{BASE}/s")).await.status(), 204);
    let gone = feed.next(SOON).await.unwrap();
    assert_eq!(gone.event, "deleted");
    assert_eq!(gone.data["latest"], Value::Null);
    assert_eq!(gone.data["ids"], serde_json::json!([second]));
    // Reconnecting with an id of a session that is gone says so.
    let mut late = Feed::open(&app, "s", Some(&second)).await;
    let news = late.next(SOON).await.unwrap();
    assert_eq!(
        (news.event.as_str(), &news.data["latest"]),
        ("deleted", &Value::Null)
    );
}

both!(a_feed_needs_what_reading_the_session_needs);
async fn a_feed_needs_what_reading_the_session_needs() {
    const TOKEN: &str = "operator-token-0123456789";
    let app = TestApp::with(&[("SNAPKEEP_TOKEN", TOKEN)]).await;
    let refused = app.get(&format!("{BASE}/s/events")).await;
    assert_error(refused, 401, "unauthorized").await;
    let allowed = app
        .client
        .get(app.url(&format!("{BASE}/s/events")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let everything = app.get(&format!("{BASE}/_events")).await;
    assert_error(everything, 401, "unauthorized").await;
}

both!(streams_have_a_cap_of_their_own_and_leave_the_connection_cap_alone);
async fn streams_have_a_cap_of_their_own_and_leave_the_connection_cap_alone() {
    let app = TestApp::with(&[
        ("SNAPKEEP_MAX_STREAMS", "3"),
        ("SNAPKEEP_MAX_CONNECTIONS", "2"),
    ])
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        // Each on a connection of its own.
        let client = reqwest::Client::new();
        let response = client
            .get(app.url(&format!("{BASE}/s/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        open.push((client, response));
    }
    let refused = reqwest::Client::new()
        .get(app.url(&format!("{BASE}/s/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["retry-after"], "10");
    assert_error(refused, 503, "too_many_streams").await;
    // Three streams on a server of two connections, and requests are still answered.
    let answered = tokio::time::timeout(SOON, app.get(&format!("{BASE}/s"))).await;
    assert_eq!(answered.expect("no connection place left").status(), 200);
    // A stream that ends gives its place back.
    open.pop();
    let again = tokio::time::timeout(SOON, async {
        loop {
            let response = reqwest::Client::new()
                .get(app.url(&format!("{BASE}/s/events")))
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(again.is_ok(), "the place never came back");
}

both!(the_operators_feed_hears_every_session);
async fn the_operators_feed_hears_every_session() {
    let app = TestApp::spawn().await;
    let response = app.get(&format!("{BASE}/_events")).await;
    assert_eq!(response.status(), 200);
    let mut feed = Feed {
        response,
        buffer: String::new(),
    };
    let a = app.save("a", "[1]").await;
    let b = app.save("b", "[2]").await;
    let first = feed.next(SOON).await.unwrap();
    assert_eq!(
        (first.event.as_str(), &first.data["session"]),
        ("snapshot", &Value::from("a"))
    );
    assert_eq!(first.data["id"], a.as_str());
    let second = feed.next(SOON).await.unwrap();
    assert_eq!(
        (&second.data["session"], &second.data["id"]),
        (&Value::from("b"), &Value::from(b.as_str()))
    );
}

both!(a_write_through_another_server_on_the_same_store_reaches_the_feed);
/// Two servers on one data directory, or one bucket: a subscriber of one hears of a write
/// through the other within two seconds (the subscribed sessions are read again every second).
async fn a_write_through_another_server_on_the_same_store_reaches_the_feed() {
    let one = TestApp::spawn().await;
    let other = one.beside(&[]).await;
    let mut feed = Feed::open(&one, "shared", None).await;
    let started = Instant::now();
    let id = other.save("shared", "[\"from the other\"]").await;
    let event = feed
        .next(Duration::from_secs(3))
        .await
        .expect("the other's write");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(event.id.as_deref(), Some(id.as_str()));
}
