//! `TestApp`: the real server on `127.0.0.1:0` over a temp data directory (or a prefix of its own
//! in a real S3-compatible server), plus a real HTTP client and a raw TCP client for requests an
//! HTTP library would tidy up (`..`, huge lengths).
//!
//! The conformance suite: a test marked `both!(name)` runs once per backend, as `name::dir` and
//! `name::s3`, with every `TestApp` it spawns on that backend. Such a test talks to the server
//! only (no look at the data directory), which is what makes it hold for both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use snapkeep::config::Config;
use snapkeep::http::App;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const BASE: &str = "/api/backup";

/// Where a `TestApp` keeps its snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Dir,
    S3,
}

tokio::task_local! {
    /// The backend of the `both!` test running in this task (unset: the directory).
    pub static BACKEND: Backend;
}

/// The backend the test running in this task uses.
pub fn backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(Backend::Dir)
}

/// Runs the async test fn `$name` once per backend, as the tests `$name::dir` and `$name::s3`
/// (skipped, visibly, where no S3 server can be started). Written above the fn, in place of
/// `#[tokio::test]`; a runtime flavor can follow the name.
macro_rules! both {
    ($name:ident $(, $($flavor:tt)*)?) => {
        mod $name {
            #[tokio::test$(($($flavor)*))?]
            async fn dir() {
                crate::helpers::BACKEND
                    .scope(crate::helpers::Backend::Dir, super::$name())
                    .await
            }

            #[tokio::test$(($($flavor)*))?]
            async fn s3() {
                if crate::support::s3::moto().is_none() {
                    return;
                }
                crate::helpers::BACKEND
                    .scope(crate::helpers::Backend::S3, super::$name())
                    .await
            }
        }
    };
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// The data directory the server was given (inside `_temp`).
    pub data_dir: PathBuf,
    /// On S3: the server's prefix in the test bucket.
    pub prefix: Option<String>,
    /// The server's own state (its store, say).
    pub state: snapkeep::http::AppState,
    _temp: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// A server with the default settings (fsync on, as in production).
    pub async fn spawn() -> Self {
        Self::with(&[]).await
    }

    /// A server with extra `SNAPKEEP_*` settings.
    pub async fn with(vars: &[(&str, &str)]) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        Self::with_dir(temp, data_dir, vars).await
    }

    /// A server over `data_dir`, which the test may have seeded before the start. In a
    /// `both!` test on S3, the server keeps its snapshots under a new prefix of the test
    /// bucket instead (and `data_dir` is unused).
    pub async fn with_dir(temp: TempDir, data_dir: PathBuf, vars: &[(&str, &str)]) -> Self {
        let prefix = (backend() == Backend::S3).then(|| uuid::Uuid::new_v4().to_string());
        Self::start(temp, data_dir, prefix, vars)
            .await
            .prepared()
            .await
    }

    /// A server with extra settings, as soon as it answers: start-up may still be preparing
    /// the store (counting it, or waiting for a bucket that does not answer).
    pub async fn starting(vars: &[(&str, &str)]) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        Self::start(temp, data_dir, None, vars).await
    }

    /// A second server on this one's store (its data directory, or its prefix in the bucket),
    /// running beside it.
    pub async fn beside(&self, vars: &[(&str, &str)]) -> Self {
        let temp = tempfile::tempdir().unwrap();
        Self::start(temp, self.data_dir.clone(), self.prefix.clone(), vars)
            .await
            .prepared()
            .await
    }

    /// A new server over what a stopped one kept.
    pub async fn restart(stopped: Stopped, vars: &[(&str, &str)]) -> Self {
        Self::start(stopped.temp, stopped.data_dir, stopped.prefix, vars)
            .await
            .prepared()
            .await
    }

    /// Waits until start-up has prepared the store (removed a crash's temp files, counted):
    /// tests that look at the directory or the counts start once that is done.
    async fn prepared(self) -> Self {
        while self.state.store.preparing() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self
    }

    async fn start(
        temp: TempDir,
        data_dir: PathBuf,
        prefix: Option<String>,
        vars: &[(&str, &str)],
    ) -> Self {
        let mut pairs = vec![(
            "SNAPKEEP_DATA_DIR".to_string(),
            data_dir.display().to_string(),
        )];
        if let Some(prefix) = &prefix {
            let moto = crate::support::s3::moto().expect("both! checked for an S3 server");
            pairs.extend(moto.vars(prefix));
        }
        pairs.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (config, _) = Config::from_vars(pairs).expect("test config is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = rx.await;
        };
        let state = App::new(config);
        let task = tokio::spawn(snapkeep::server::serve(listener, state.clone(), shutdown));
        let app = Self {
            addr,
            client: reqwest::Client::new(),
            data_dir,
            prefix,
            state,
            _temp: temp,
            shutdown: Some(tx),
            task: Some(task),
        };
        // The server answers once it has created the data directory. The probe's connection is
        // closed, so it holds no connection slot afterwards.
        let probe = app
            .client
            .get(app.url("/healthz"))
            .header("connection", "close");
        assert_eq!(probe.send().await.unwrap().status(), 200);
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn session_url(&self, session: &str) -> String {
        self.url(&format!("{BASE}/{session}"))
    }

    /// POSTs `body` as `application/json`.
    pub async fn post(&self, session: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.session_url(session))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs `body` and returns the new snapshot's id, asserting it was created.
    pub async fn save(&self, session: &str, body: &str) -> String {
        let response = self.post(session, body.to_owned()).await;
        assert_eq!(response.status(), 201, "saving {body}");
        json(response).await["id"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).send().await.unwrap()
    }

    /// The ids listed by `GET {base}/{session}`, newest first.
    pub async fn listed(&self, session: &str) -> Vec<String> {
        let body = json(self.get(&format!("{BASE}/{session}")).await).await;
        body["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn session_dir(&self, session: &str) -> PathBuf {
        self.data_dir.join(session)
    }

    /// Everything stored, as sorted relative paths: every file and directory under the data
    /// directory, or every object under the server's prefix in the bucket.
    pub fn tree(&self) -> Vec<String> {
        let Some(prefix) = &self.prefix else {
            return tree(&self.data_dir);
        };
        let moto = crate::support::s3::moto().expect("a prefix is only made with moto");
        let mut keys: Vec<String> = moto
            .keys(&format!("{prefix}/"))
            .iter()
            .map(|key| key[prefix.len() + 1..].to_owned())
            .collect();
        keys.sort();
        keys
    }

    /// Every snapshot stored, as relative paths (`<session>/<id>.json`), by their names.
    pub fn snapshots_stored(&self) -> Vec<String> {
        let is_snapshot = |path: &String| {
            let name = path.rsplit('/').next().unwrap_or_default();
            name.strip_suffix(".json")
                .is_some_and(|id| snapkeep::store::name::SnapshotId::parse(id).is_ok())
        };
        self.tree().into_iter().filter(is_snapshot).collect()
    }

    /// Sends `request` as raw bytes and returns the status and body of the answer. The
    /// connection is closed by the request's `Connection: close`.
    pub async fn raw(&self, request: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        read_response(&mut stream).await
    }

    /// Stops the server gracefully, waits for it, and hands back what it kept, so that another
    /// server can be started over the same data ([`TestApp::restart`]).
    pub async fn stop(mut self) -> Stopped {
        self.shutdown.take().unwrap().send(()).unwrap();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
        let temp = std::mem::replace(&mut self._temp, tempfile::tempdir().unwrap());
        Stopped {
            temp,
            data_dir: self.data_dir.clone(),
            prefix: self.prefix.take(),
        }
    }
}

/// What a stopped `TestApp` kept: its data directory, or its prefix in the bucket.
pub struct Stopped {
    pub temp: TempDir,
    pub data_dir: PathBuf,
    prefix: Option<String>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Reads one HTTP response: the status code and everything after the headers up to EOF.
pub async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    // A reset after the answer (the server did not read the rest of our body) is fine.
    if let Ok(Err(err)) = read {
        assert!(!buf.is_empty(), "no answer: {err}");
    }
    parse_answer(&buf)
}

/// The status code and body of a raw HTTP answer.
pub fn parse_answer(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

pub async fn json(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"))
}

/// Asserts an error answer: its status, its `code`, and a non-empty sentence.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body = json(response).await;
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|s| s.len() > 10),
        "{body}"
    );
    body
}

pub fn tree(root: &Path) -> Vec<String> {
    let mut paths: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            e.path().strip_prefix(root).unwrap().display().to_string()
        })
        .collect();
    paths.sort();
    paths
}
