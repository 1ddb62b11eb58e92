//! The snapshot store: save, list, read and delete snapshots of a session, with deduplication
//! and retention. It speaks of sessions, snapshot ids and bytes, and knows nothing of HTTP.
//!
//! Everything that touches the filesystem is in `disk.rs`; this module holds the rules around it
//! (per-session serialization, id choice, dedup, rotation), so that another backend, such as an
//! object store, would replace `disk` and leave these rules and every caller as they are.

mod atomic;
mod disk;
mod locks;
pub mod name;
pub mod retain;

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::io::AsyncRead;

use self::disk::Disk;
use self::locks::SessionLocks;
use self::name::{SessionId, SnapshotId, sha256_hex};
use self::retain::Retention;

/// What can go wrong in the store. Callers map these to their own answers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such snapshot")]
    NotFound,
    /// The disk or a filesystem quota is full (`ENOSPC`, `EDQUOT`).
    #[error("no space left for the snapshot: {0}")]
    StorageFull(io::Error),
    #[error(transparent)]
    Io(io::Error),
}

impl From<io::Error> for StoreError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Self::StorageFull(err),
            _ => Self::Io(err),
        }
    }
}

/// One snapshot's id and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: SnapshotId,
    pub bytes: u64,
}

/// The outcome of [`Store::save`].
#[derive(Debug, Clone)]
pub struct Saved {
    pub info: SnapshotInfo,
    /// Full lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// True when the content equalled the latest snapshot and nothing was written.
    pub deduplicated: bool,
    /// Snapshots removed by retention after this write, oldest first.
    pub pruned: Vec<SnapshotId>,
}

/// A snapshot's content, read as a stream so a large one is never held whole in memory.
pub type SnapshotBody = Pin<Box<dyn AsyncRead + Send + Sync>>;

/// An opened snapshot.
pub struct Snapshot {
    pub info: SnapshotInfo,
    pub body: SnapshotBody,
}

/// Which snapshot of a session to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    Latest,
    Id(SnapshotId),
}

#[derive(Debug)]
pub struct Store {
    disk: Arc<Disk>,
    retention: Retention,
    locks: SessionLocks,
}

impl Store {
    /// A store over the data directory `root`. Nothing is touched until [`Store::prepare`].
    pub fn new(root: PathBuf, fsync: bool, retention: Retention) -> Self {
        Self {
            disk: Arc::new(Disk::new(root, fsync)),
            retention,
            locks: SessionLocks::default(),
        }
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Creates the data directory if needed and removes temp files of a crashed run; returns
    /// how many were removed. Call once before serving.
    pub async fn prepare(&self) -> Result<usize, StoreError> {
        let disk = self.disk.clone();
        blocking(move || Ok(disk.prepare()?)).await
    }

    /// Whether a new file can be created in the data directory right now.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let disk = self.disk.clone();
        blocking(move || Ok(disk.probe_writable()?)).await
    }

    /// Saves `content` as the session's newest snapshot, unless it equals the latest one, then
    /// applies retention. Durable before it returns (when fsync is on).
    pub async fn save(&self, session: &SessionId, content: Bytes) -> Result<Saved, StoreError> {
        let guard = self.locks.lock(session).await;
        let (disk, session, retention) = (self.disk.clone(), session.clone(), self.retention);
        // The guard moves into the blocking task: if the client goes away and this future is
        // dropped, the lock is still held until the write has really finished.
        blocking(move || {
            let _guard = guard;
            save_locked(&disk, &session, &content, retention)
        })
        .await
    }

    /// The session's snapshots, newest first; an unknown session has none.
    pub async fn list(&self, session: &SessionId) -> Result<Vec<SnapshotInfo>, StoreError> {
        let (disk, session) = (self.disk.clone(), session.clone());
        blocking(move || {
            let mut entries = disk.entries(&session)?;
            entries.sort_unstable_by(|a, b| b.id.cmp(&a.id));
            Ok(entries)
        })
        .await
    }

    /// Opens one snapshot for streaming.
    pub async fn open(&self, session: &SessionId, which: Which) -> Result<Snapshot, StoreError> {
        let (disk, session) = (self.disk.clone(), session.clone());
        let (file, info) = blocking(move || {
            let id = match which {
                Which::Id(id) => id,
                Which::Latest => latest(&disk, &session)?.ok_or(StoreError::NotFound)?.id,
            };
            let (file, bytes) = disk.open(&session, &id).map_err(not_found)?;
            Ok((file, SnapshotInfo { id, bytes }))
        })
        .await?;
        let body = Box::pin(tokio::fs::File::from_std(file));
        Ok(Snapshot { info, body })
    }

    /// Deletes one snapshot.
    pub async fn delete(&self, session: &SessionId, id: &SnapshotId) -> Result<(), StoreError> {
        let guard = self.locks.lock(session).await;
        let (disk, session, id) = (self.disk.clone(), session.clone(), id.clone());
        blocking(move || {
            let _guard = guard;
            disk.remove(&session, &id).map_err(not_found)
        })
        .await
    }

    /// Deletes every snapshot of the session; an unknown session is not an error.
    pub async fn delete_session(&self, session: &SessionId) -> Result<(), StoreError> {
        let guard = self.locks.lock(session).await;
        let (disk, session) = (self.disk.clone(), session.clone());
        blocking(move || {
            let _guard = guard;
            Ok(disk.remove_session(&session)?)
        })
        .await
    }
}

/// The body of [`Store::save`], run while holding the session's lock.
fn save_locked(
    disk: &Disk,
    session: &SessionId,
    content: &[u8],
    retention: Retention,
) -> Result<Saved, StoreError> {
    let sha256 = sha256_hex(content);
    let entries = disk.entries(session)?;
    let newest = entries.iter().max_by(|a, b| a.id.cmp(&b.id));
    // The id carries a digest prefix, so the file is only read when a match is likely.
    if let Some(newest) = newest
        && newest.id.digest_matches(&sha256)
        && disk.read(session, &newest.id)? == content
    {
        return Ok(Saved {
            info: newest.clone(),
            sha256,
            deduplicated: true,
            pruned: Vec::new(),
        });
    }
    let id = SnapshotId::next(OffsetDateTime::now_utc(), newest.map(|e| &e.id), &sha256);
    disk.write(session, &id, content)?;
    let mut ids: Vec<SnapshotId> = entries.into_iter().map(|e| e.id).collect();
    ids.push(id.clone());
    let pruned = retain::to_prune(&ids, &retention)
        .into_iter()
        .filter(|old| match disk.remove(session, old) {
            Ok(()) => true,
            // Someone removed it by hand meanwhile: it is gone, which is what was wanted.
            Err(err) if err.kind() == io::ErrorKind::NotFound => true,
            Err(err) => {
                tracing::warn!(%session, snapshot = %old, error = %err, "could not prune snapshot");
                false
            }
        })
        .collect();
    Ok(Saved {
        info: SnapshotInfo {
            id,
            bytes: content.len() as u64,
        },
        sha256,
        deduplicated: false,
        pruned,
    })
}

fn latest(disk: &Disk, session: &SessionId) -> Result<Option<SnapshotInfo>, StoreError> {
    Ok(disk
        .entries(session)?
        .into_iter()
        .max_by(|a, b| a.id.cmp(&b.id)))
}

fn not_found(err: io::Error) -> StoreError {
    match err.kind() {
        io::ErrorKind::NotFound => StoreError::NotFound,
        _ => err.into(),
    }
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}
