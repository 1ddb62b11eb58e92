//! An object store that is down, stalls or fails: every request gets `503 storage_unavailable`
//! with `Retry-After` (never a `500`, never a `201` for a snapshot that is not stored), and the
//! server recovers by itself when the store is back. The store is moto's server behind a TCP
//! proxy of the test's own, which can refuse, stall or fail every connection on demand.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{BASE, TestApp, assert_error, json};
use crate::support::s3;

/// What the proxy does with the connections it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards them to moto.
    Up,
    /// Closes them at once (and the ones it was forwarding).
    Down,
    /// Accepts them and never answers.
    Stall,
    /// Answers every request `500`.
    Fail,
}

struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    async fn start(target: &str, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, modes) = watch::channel(mode);
        let target = target.trim_start_matches("http://").to_owned();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let (target, mut modes) = (target.clone(), modes.clone());
                let mode = *modes.borrow_and_update();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(client, &target, mode) => {}
                        // A change of mode ends the connections of the one before.
                        _ = modes.changed() => {}
                    }
                });
            }
        });
        Self { addr, mode: sender }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn serve(mut client: TcpStream, target: &str, mode: Mode) {
    match mode {
        Mode::Up => {
            let mut upstream = TcpStream::connect(target).await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
        Mode::Down => drop(client),
        Mode::Stall => tokio::time::sleep(Duration::from_secs(600)).await,
        Mode::Fail => {
            let mut buf = vec![0; 64 * 1024];
            while client.read(&mut buf).await.is_ok_and(|n| n > 0) {
                let answer = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
                if client.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A server on a new prefix of moto's bucket, reached through a proxy in `mode`; `None` without
/// moto (skipped, visibly).
async fn behind_proxy(mode: Mode, vars: &[(&str, &str)]) -> Option<(TestApp, Proxy)> {
    let moto = s3::moto()?;
    let proxy = Proxy::start(&moto.endpoint, mode).await;
    let mut settings = moto.vars(&uuid::Uuid::new_v4().to_string());
    for (name, value) in &mut settings {
        if name == "AWS_ENDPOINT_URL" {
            *value = proxy.endpoint();
        }
    }
    let mut all: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    all.push(("SNAPKEEP_STORAGE_TIMEOUT", "1s"));
    all.extend_from_slice(vars);
    Some((TestApp::starting(&all).await, proxy))
}

/// Asserts a `503 storage_unavailable` with a `Retry-After`.
async fn assert_unavailable(response: reqwest::Response) {
    assert!(
        response.headers().contains_key("retry-after"),
        "{:?}",
        response.headers()
    );
    assert_error(response, 503, "storage_unavailable").await;
}

/// Polls `/readyz` until it answers `status` (at most 20 s).
async fn until_ready(app: &TestApp, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.get("/readyz").await.status() != status {
        assert!(Instant::now() < deadline, "/readyz never answered {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_bucket_down_at_start_is_no_crash_and_is_used_once_it_is_up() {
    let Some((app, proxy)) = behind_proxy(Mode::Down, &[]).await else {
        return;
    };
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert_unavailable(app.post("s", "[1]").await).await;
    assert_unavailable(app.get(&format!("{BASE}/s/latest")).await).await;
    assert_unavailable(app.get(&format!("{BASE}/s")).await).await;

    proxy.set(Mode::Up);
    until_ready(&app, 200).await;
    let id = app.save("s", "[1]").await;
    assert_eq!(app.listed("s").await, vec![id]);
}

#[tokio::test]
async fn a_bucket_that_stalls_gets_503_within_the_timeout_and_nothing_is_acknowledged() {
    let Some((app, proxy)) = behind_proxy(Mode::Up, &[]).await else {
        return;
    };
    until_ready(&app, 200).await;
    let first = app.save("s", "[1]").await;

    proxy.set(Mode::Stall);
    let started = Instant::now();
    assert_unavailable(app.post("s", "[2]").await).await;
    assert_unavailable(app.get(&format!("{BASE}/s/latest")).await).await;
    // One second per try, two retries, and their pauses: well under ten.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.get("/readyz").await.status(), 503);

    proxy.set(Mode::Up);
    until_ready(&app, 200).await;
    assert_eq!(
        app.listed("s").await,
        vec![first],
        "the refused write is not there"
    );
    let latest = app.get(&format!("{BASE}/s/latest")).await;
    assert_eq!(latest.text().await.unwrap(), "[1]");
}

#[tokio::test]
async fn a_bucket_answering_errors_gets_503_never_500() {
    let Some((app, proxy)) = behind_proxy(Mode::Up, &[]).await else {
        return;
    };
    until_ready(&app, 200).await;
    let first = app.save("s", "[1]").await;

    proxy.set(Mode::Fail);
    assert_unavailable(app.post("s", "[2]").await).await;
    let patch = app
        .client
        .patch(app.session_url("s"))
        .header("content-type", "application/merge-patch+json")
        .body("{\"a\":1}")
        .send()
        .await
        .unwrap();
    assert_unavailable(patch).await;
    assert_unavailable(app.delete(&format!("{BASE}/s/{first}")).await).await;
    assert_unavailable(app.delete(&format!("{BASE}/s")).await).await;
    assert_unavailable(app.get(&format!("{BASE}/_sessions")).await).await;

    proxy.set(Mode::Up);
    assert_eq!(app.listed("s").await, vec![first.clone()]);
    let second = json(app.post("s", "[2]").await).await;
    assert_eq!(second["deduplicated"], false);
    assert_eq!(app.listed("s").await.len(), 2);
}
