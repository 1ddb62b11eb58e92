//! Helpers shared by the test binaries: running the real `snapkeep` executable
//! (`tests/process.rs`, `tests/cli.rs`), seeding data directories with snapshot files as
//! snapkeep would have written them (also `tests/api`), and reading a session's ids over HTTP.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

pub mod s3;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use snapkeep::store::name::{SnapshotId, sha256_hex};
use time::OffsetDateTime;

pub const BIN: &str = env!("CARGO_BIN_EXE_snapkeep");
pub const BASE: &str = "/api/backup";

/// Says on the terminal that a test was skipped, and why: straight to stderr, because the test
/// harness captures what `print!` and `eprint!` write (and shows it only for failures), so a
/// skip would otherwise read as a pass.
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// The binary with a clean environment: only the given `SNAPKEEP_*` settings apply.
pub fn snapkeep(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.env_clear().envs(vars.iter().copied());
    command
}

/// A running `snapkeep` process on 127.0.0.1:0, with its log drained in the background;
/// killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(data: &Path, vars: &[(&str, &str)]) -> Self {
        let mut child = snapkeep(&[])
            .env("SNAPKEEP_DATA_DIR", data)
            .env("SNAPKEEP_LISTEN", "127.0.0.1:0")
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        // Keep reading so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split('/').next().unwrap().parse::<SocketAddr>();
                    let _ = tx.send(addr.unwrap());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock().unwrap()));
        Self { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    pub fn wait(&mut self) -> ExitStatus {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not exit within 10 s");
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until start-up has prepared the data directory (a crash's temp files removed,
    /// snapshots counted): reads are served before that, writes wait for it.
    pub fn wait_prepared(&self) {
        for _ in 0..400 {
            if self.log_text().contains("ready: writes are accepted") {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "the data directory was not ready within 10 s:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Places `content` in `data/<session>/` as snapkeep would have saved it at `at`, file and
/// session directory dated `at` as `cp -p` keeps them; returns its id.
pub fn seed(data: &Path, session: &str, at: OffsetDateTime, content: &str) -> String {
    let id = SnapshotId::next(at, None, &sha256_hex(content.as_bytes())).unwrap();
    let dir = data.join(session);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{id}.json"));
    std::fs::write(&path, content).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(at.into()).unwrap();
    std::fs::File::open(&dir)
        .unwrap()
        .set_modified(at.into())
        .unwrap();
    id.to_string()
}

/// The ids `GET {list_url}` lists, newest first.
pub async fn listed_ids(client: &reqwest::Client, list_url: &str) -> Vec<String> {
    let listed: serde_json::Value = client
        .get(list_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listed["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}
