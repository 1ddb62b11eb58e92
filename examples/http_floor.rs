//! The HTTP stack's own ceiling: the benchmark in `bench/` runs W1 and W3 against this too, so
//! that snapkeep's ratios can be read against what tokio, hyper and axum reach on the same
//! machine before snapkeep does anything.
//!
//! It answers the two routes of the hot path the way snapkeep does, from memory:
//! `GET /api/backup/{session}/latest` with one fixed ~4 KiB JSON document, and
//! `POST /api/backup/{session}` by reading the whole body and answering `201` with a short JSON.
//!
//! Given a data directory, a `POST` also does the rotating disk probe's durable write before
//! it answers, on tokio's blocking pool as snapkeep does: create a temp file in the session's
//! directory, write the body, fsync, rename, fsync the directory, then list it and delete all
//! but the newest 10 (the probe deletes by number without listing; snapkeep lists, as here). That is the ceiling for W1 of any server on this stack that makes each write
//! durable, with nothing of snapkeep's own (no checks, ids, locks, metrics or logs).
//!
//! ```sh
//! cargo run --release --example http_floor -- 127.0.0.1:8099
//! cargo run --release --example http_floor -- 127.0.0.1:8099 /tmp/http-disk
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path as UrlPath;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

/// Files kept per session, as snapkeep's default retention.
const KEEP: usize = 10;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8099".into());
    let disk = args
        .next()
        .map(|dir| Arc::new(Disk::new(PathBuf::from(dir))));
    let document = Bytes::from(format!("{{\"pad\":\"{}\"}}", "x".repeat(4085)));
    let app = Router::new()
        .route(
            "/api/backup/{session}/latest",
            get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document) }
            }),
        )
        .route(
            "/api/backup/{session}",
            post(move |UrlPath(session): UrlPath<String>, body: Bytes| {
                let disk = disk.clone();
                async move {
                    let answer = format!("{{\"bytes\":{}}}", body.len());
                    if let Some(disk) = disk {
                        let written =
                            tokio::task::spawn_blocking(move || disk.write(&session, &body));
                        if let Err(err) = written.await.expect("a write panicked") {
                            return (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
                                .into_response();
                        }
                    }
                    (
                        StatusCode::CREATED,
                        [(header::CONTENT_TYPE, "application/json")],
                        answer,
                    )
                        .into_response()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("cannot listen");
    println!("listening on {}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.expect("server failed");
}

/// The rotating disk probe's write, behind HTTP.
struct Disk {
    root: PathBuf,
    next: AtomicU64,
}

impl Disk {
    fn new(root: PathBuf) -> Self {
        Self {
            root,
            next: AtomicU64::new(0),
        }
    }

    fn write(&self, session: &str, body: &[u8]) -> io::Result<()> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(session);
        fs::create_dir_all(&dir)?;
        let temp = dir.join(format!(".{n}.json.tmp"));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(body)?;
        file.sync_all()?;
        drop(file);
        // Zero-padded, so that names sort in the order they were written.
        fs::rename(&temp, dir.join(format!("{n:020}.json")))?;
        File::open(&dir)?.sync_all()?;
        prune(&dir)
    }
}

/// Deletes all but the newest [`KEEP`] files of `dir` (another write may have done it first).
fn prune(dir: &Path) -> io::Result<()> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if !name.to_string_lossy().starts_with('.') {
            names.push(name);
        }
    }
    names.sort_unstable();
    for name in &names[..names.len().saturating_sub(KEEP)] {
        match fs::remove_file(dir.join(name)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    Ok(())
}
