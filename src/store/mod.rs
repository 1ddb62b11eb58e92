//! The snapshot store: save, list, read and delete snapshots of a session, with deduplication
//! and retention. It speaks of sessions, snapshot ids and bytes, and knows nothing of HTTP.
//!
//! Everything that touches the filesystem is in `disk.rs`; this module holds the rules around it
//! (per-session serialization, id choice, dedup, rotation), so that another backend, such as an
//! object store, would replace `disk` and leave these rules and every caller as they are.

mod atomic;
mod disk;
mod latest;
mod locks;
mod maintain;
pub mod name;
mod precondition;
pub mod retain;
mod spool;
mod usage;
mod verify;
mod watch;
mod write;

use std::io::{self, Read, Seek};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;

use self::disk::Disk;
use self::latest::LatestCache;
use self::locks::SessionLocks;
use self::name::{SessionId, SnapshotId, sha256_hex, sha256_hex_of};
use self::retain::Retention;

pub use self::maintain::SessionSummary;
pub use self::precondition::{Expected, Precondition};
pub use self::spool::{Spool, Spooled};
pub use self::usage::Counts;
use self::usage::Usage;
pub use self::verify::Report;
use self::write::{Content, Rules, save_locked};

/// More writers than can ever be in flight: the stop gate's capacity.
const GATE_CAPACITY: u32 = 1 << 24;

/// How many `PATCH`es may hold a parsed document at once.
const PATCHES_AT_ONCE: usize = 2;

/// What can go wrong in the store. Callers map these to their own answers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such snapshot")]
    NotFound,
    /// A snapshot to restore no longer matches its digest (edited or corrupted).
    #[error(
        "the snapshot does not match its digest (edited or corrupted); restoring it would give \
         the damaged bytes a new, valid-looking id"
    )]
    Damaged,
    /// The server is stopping: no new write starts.
    #[error("the store is closed for writes: the server is stopping")]
    ShuttingDown,
    /// A conditional write's expectation did not hold; `latest` is the session's current one.
    #[error("the session's latest snapshot is not the one expected")]
    PreconditionFailed { latest: Option<SnapshotInfo> },
    /// The write would pass a quota; the sentence says which.
    #[error("{0}")]
    OverQuota(String),
    /// A patched document came out larger than the snapshot size limit.
    #[error("the result would be larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The session's name is taken in the data directory by a file snapkeep did not make.
    #[error("the session's name is taken by a file that is not a directory")]
    SessionBlocked,
    /// A patch cannot apply because the latest snapshot on disk is not valid JSON (edited by
    /// hand, say).
    #[error("the latest snapshot is not valid JSON: {0}")]
    LatestNotJson(serde_json::Error),
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
            io::ErrorKind::NotADirectory => Self::SessionBlocked,
            _ => Self::Io(err),
        }
    }
}

/// Limits on what the data directory may hold, counted in snapshot file bytes; `None`: no
/// limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    /// Bytes of one session's snapshots.
    pub session_bytes: Option<u64>,
    /// Number of sessions.
    pub sessions: Option<u64>,
    /// Bytes of all snapshots.
    pub total_bytes: Option<u64>,
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

/// Snapshots up to this size are read whole in one go; larger ones are streamed.
const READ_WHOLE_UP_TO: u64 = 256 * 1024;

/// A snapshot's content: a small one read whole (one trip to the blocking pool in all), a large
/// one as a stream, so it is never held whole in memory.
pub enum SnapshotBody {
    Whole(Bytes),
    Stream(Pin<Box<dyn AsyncRead + Send + Sync>>),
}

impl SnapshotBody {
    /// The content as one reader, however it was read.
    pub fn into_reader(self) -> Pin<Box<dyn AsyncRead + Send + Sync>> {
        match self {
            SnapshotBody::Whole(bytes) => Box::pin(std::io::Cursor::new(bytes)),
            SnapshotBody::Stream(stream) => stream,
        }
    }
}

/// An opened snapshot.
pub struct Snapshot {
    pub info: SnapshotInfo,
    /// False when the content no longer matches the digest in its id: the file was edited or
    /// corrupted on disk.
    pub intact: bool,
    pub body: SnapshotBody,
}

/// The outcome of [`Store::open`].
pub enum Opened {
    /// The reader already has this snapshot; nothing was read.
    Unchanged(SnapshotInfo),
    Snapshot(Snapshot),
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
    quotas: Quotas,
    /// Bytes and sessions on disk: for the quotas, and for whoever reports on the store.
    usage: Arc<Usage>,
    locks: SessionLocks,
    /// Each session's newest small snapshot, kept while inotify reports no change to it.
    latest: Arc<LatestCache>,
    patching: tokio::sync::Semaphore,
    /// Every write and delete holds a permit while it runs; [`Store::close`] takes them all.
    gate: Arc<tokio::sync::Semaphore>,
    /// All of the gate's permits while start-up prepares the directory ([`Store::hold_writes`]).
    held: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl Store {
    /// A store over the data directory `root`. Nothing is touched until [`Store::prepare`].
    pub fn new(root: PathBuf, fsync: bool, retention: Retention, quotas: Quotas) -> Self {
        Self {
            disk: Arc::new(Disk::new(root, fsync)),
            retention,
            quotas,
            usage: Arc::default(),
            locks: SessionLocks::default(),
            latest: Arc::default(),
            patching: tokio::sync::Semaphore::new(PATCHES_AT_ONCE),
            gate: Arc::new(tokio::sync::Semaphore::new(GATE_CAPACITY as usize)),
            held: std::sync::Mutex::default(),
        }
    }

    /// Snapshot bytes and sessions on disk, as counted at start and kept current since.
    pub fn counts(&self) -> Counts {
        self.usage.get()
    }

    /// Reads of a session's latest snapshot answered from memory (nothing in its directory or
    /// file changed since it was read) rather than from disk.
    pub fn latest_reads_from_memory(&self) -> u64 {
        self.latest.hits()
    }

    /// Waits for the writes and deletes in flight to finish, and lets no new one start (they
    /// get [`StoreError::ShuttingDown`]): what a stop does once its grace period is over, so
    /// that a snapshot is either written and answered or never written.
    pub async fn close(&self) {
        if let Ok(all) = self.gate.acquire_many(GATE_CAPACITY).await {
            all.forget();
        }
        self.gate.close();
    }

    /// A pass through the stop gate, held for the whole of one write or delete.
    async fn enter(&self) -> Result<tokio::sync::OwnedSemaphorePermit, StoreError> {
        self.gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::ShuttingDown)
    }

    /// Creates the data directory if needed and proves it can be listed. Call before serving.
    pub async fn create(&self) -> Result<(), StoreError> {
        let disk = self.disk.clone();
        blocking(move || Ok(disk.create()?)).await
    }

    /// Holds every write and delete back (reads go on) until [`Store::prepare`] succeeds: what
    /// start-up does before the first request can arrive.
    pub fn hold_writes(&self) {
        let all = self.gate.clone().try_acquire_many_owned(GATE_CAPACITY);
        *self.held_permits() = Some(all.expect("nothing writes before start-up"));
    }

    /// Whether writes are still held back for start-up's [`Store::prepare`].
    pub fn preparing(&self) -> bool {
        self.held_permits().is_some()
    }

    /// Removes the temp files of a crashed run and counts what the directory holds, then lets
    /// the writes held by [`Store::hold_writes`] go: neither step can race a write. Returns how
    /// many temp files were removed. Reads are served meanwhile. On failure writes stay held;
    /// [`Store::refuse_writes`] turns them away.
    pub async fn prepare(&self) -> Result<usize, StoreError> {
        let disk = self.disk.clone();
        let removed = blocking(move || Ok(disk.remove_leftovers()?)).await?;
        self.recount().await?;
        self.held_permits().take();
        Ok(removed)
    }

    /// Lets no write or delete start again, those waiting included ([`StoreError::ShuttingDown`]):
    /// for a server that cannot prepare its data directory and is about to stop.
    pub fn refuse_writes(&self) {
        self.gate.close();
        self.held_permits().take();
    }

    fn held_permits(&self) -> std::sync::MutexGuard<'_, Option<tokio::sync::OwnedSemaphorePermit>> {
        self.held.lock().expect("held permits lock poisoned")
    }

    /// Counts the snapshot bytes and sessions on disk again, so files added or removed by hand
    /// are noticed. A count that overlapped a write or delete is dropped (it may have missed
    /// it); the next one, a minute later, tries again.
    pub async fn recount(&self) -> Result<(), StoreError> {
        let (usage, disk) = (self.usage.clone(), self.disk.clone());
        blocking(move || {
            let generation = usage.generation();
            let counts = disk.count()?;
            if !usage.set_if_unchanged(generation, counts) {
                tracing::debug!("writes during the recount; keeping the booked counts");
            }
            Ok(())
        })
        .await
    }

    /// Whether the data directory can be read right now (for a read-only server, which must not
    /// write even a probe).
    pub async fn check_readable(&self) -> Result<(), StoreError> {
        let disk = self.disk.clone();
        blocking(move || Ok(disk.probe_readable()?)).await
    }

    /// Whether a new file can be created in the data directory right now.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let disk = self.disk.clone();
        blocking(move || Ok(disk.probe_writable()?)).await
    }

    /// Saves `content` as the session's newest snapshot, unless it equals the latest one, then
    /// applies retention. Durable before it returns (when fsync is on). `precondition` is
    /// checked against the latest snapshot in the same critical section as the write.
    pub async fn save(
        &self,
        session: &SessionId,
        content: Bytes,
        precondition: Precondition,
    ) -> Result<Saved, StoreError> {
        self.with_latest(session, precondition, move |_, _, _| {
            Ok(Content::Bytes(content))
        })
        .await
    }

    /// Saves a finished upload (see [`Store::spool`]) like [`Store::save`]: moved into place
    /// with a rename, never read into memory.
    pub async fn save_spooled(
        &self,
        session: &SessionId,
        upload: Spooled,
        precondition: Precondition,
    ) -> Result<Saved, StoreError> {
        self.with_latest(session, precondition, move |_, _, _| {
            Ok(Content::Spooled(upload))
        })
        .await
    }

    /// Applies the JSON merge patch `patch` (RFC 7396) to the latest snapshot (or to an empty
    /// document) and saves the result like [`Store::save`]. The result may be at most
    /// `max_bytes` long.
    pub async fn patch(
        &self,
        session: &SessionId,
        patch: serde_json::Value,
        precondition: Precondition,
        max_bytes: usize,
    ) -> Result<Saved, StoreError> {
        // A parsed document takes tens of times its size in memory (a 16 MiB array of small
        // numbers, ~900 MB): only a few patches may hold one at a time.
        let _permit = self.patching.acquire().await.expect("never closed");
        self.with_latest(session, precondition, move |disk, session, latest| {
            let mut document = match latest {
                Some(id) => serde_json::from_slice(&disk.read(session, id)?)
                    .map_err(StoreError::LatestNotJson)?,
                None => serde_json::Value::Object(Default::default()),
            };
            crate::merge_patch::apply(&mut document, &patch);
            let bytes = serde_json::to_vec(&document).expect("a Value always serializes");
            match bytes.len() <= max_bytes {
                true => Ok(Content::Bytes(bytes.into())),
                false => Err(StoreError::TooLarge { limit: max_bytes }),
            }
        })
        .await
    }

    /// The shared body of `save` and `patch`: under the session's lock, check `precondition`
    /// against the latest snapshot, let `make` produce the new content from it, then save.
    async fn with_latest<F>(
        &self,
        session: &SessionId,
        precondition: Precondition,
        make: F,
    ) -> Result<Saved, StoreError>
    where
        F: FnOnce(&Disk, &SessionId, Option<&SnapshotId>) -> Result<Content, StoreError>
            + Send
            + 'static,
    {
        let pass = self.enter().await?;
        let guard = self.locks.write(session).await;
        let (disk, session) = (self.disk.clone(), session.clone());
        let rules = Rules {
            retention: self.retention,
            quotas: self.quotas,
            usage: self.usage.clone(),
        };
        // The guard moves into the blocking task: if the client goes away and this future is
        // dropped, the lock is still held until the write has really finished.
        blocking(move || {
            let _held = (pass, guard);
            // Names only: a write `stat`s just the snapshots it prunes (and all of them only
            // when SNAPKEEP_MAX_SESSION_BYTES needs the session's total).
            let ids = disk.ids(&session)?;
            let newest = ids.iter().max();
            if !precondition.holds(newest) {
                // Rare enough to list again with sizes, in case the newest went meanwhile.
                let entries = disk.entries(&session)?;
                return Err(StoreError::PreconditionFailed {
                    latest: self::newest(&entries).cloned(),
                });
            }
            let content = make(&disk, &session, newest)?;
            save_locked(&disk, &session, &content, &ids, &rules)
        })
        .await
    }

    /// The session's snapshots, newest first; an unknown session has none.
    pub async fn list(&self, session: &SessionId) -> Result<Vec<SnapshotInfo>, StoreError> {
        let guard = self.locks.read(session).await;
        let (disk, session) = (self.disk.clone(), session.clone());
        blocking(move || {
            let _guard = guard;
            let mut entries = disk.entries(&session)?;
            entries.sort_unstable_by(|a, b| b.id.cmp(&a.id));
            Ok(entries)
        })
        .await
    }

    /// Opens one snapshot for streaming, after checking its content against its id's digest.
    ///
    /// When the reader already has it (its id is in `unless`, a request's `If-None-Match`), the
    /// content is neither read nor checked: [`Opened::Unchanged`].
    pub async fn open(
        &self,
        session: &SessionId,
        which: Which,
        unless: Option<Expected>,
    ) -> Result<Opened, StoreError> {
        if which == Which::Latest
            && let Some(opened) = self.open_kept_latest(session, unless.as_ref())
        {
            return Ok(opened);
        }
        // Shared with other readers; held until the file is open (an open file stays readable
        // even if a later write prunes it).
        let guard = self.locks.read(session).await;
        let (disk, session) = (self.disk.clone(), session.clone());
        let kept = self.latest.clone();
        let opened = blocking(move || {
            let _guard = guard;
            // For the latest, the watches that let it be kept in memory once read.
            let (mut file, mut info, ticket) = match which {
                Which::Id(id) => {
                    let (file, bytes) = disk.open(&session, &id).map_err(not_found)?;
                    (file, SnapshotInfo { id, bytes }, None)
                }
                Which::Latest => {
                    // Each watched before it is read: any change from here on ends the ticket.
                    let ticket = kept.watch(&session, &disk.session_dir(&session));
                    let id = disk.newest_id(&session)?.ok_or(StoreError::NotFound)?;
                    let (file, bytes) = disk.open(&session, &id).map_err(not_found)?;
                    // A large one is not kept: its ticket is let go at once. A small one's
                    // content is read after its file's watch, and kept only if it matches
                    // its digest, so what happened to the file since `open` does not matter.
                    let ticket = ticket.filter(|_| bytes <= latest::KEEP_UP_TO).map(|mut t| {
                        t.watch_file(&disk.snapshot_path(&session, &id));
                        t
                    });
                    (file, SnapshotInfo { id, bytes }, ticket)
                }
            };
            if unless.is_some_and(|tags| tags.matches(Some(&info.id))) {
                return Ok(Err(info));
            }
            // The content is checked against the digest in its id on every read, so nothing
            // edited or corrupted on disk is passed off as the snapshot that was saved. A
            // large file takes one extra sequential read for it (from the page cache, usually).
            let (intact, body) = if info.bytes <= READ_WHOLE_UP_TO {
                let mut bytes = Vec::with_capacity(info.bytes as usize);
                // Bounded: a file grown since its stat (edited in place) is read as it was.
                (&mut file).take(info.bytes).read_to_end(&mut bytes)?;
                info.bytes = bytes.len() as u64;
                let intact = info.id.digest_matches(&sha256_hex(&bytes));
                let bytes = Bytes::from(bytes);
                if let Some(ticket) = ticket
                    && intact
                {
                    let (info, content) = (info.clone(), bytes.clone());
                    ticket.keep(latest::Entry { info, content });
                }
                (intact, SnapshotBody::Whole(bytes))
            } else {
                let intact = info.id.digest_matches(&sha256_hex_of(&mut file)?);
                file.rewind()?;
                let stream = Box::pin(tokio::fs::File::from_std(file));
                (intact, SnapshotBody::Stream(stream))
            };
            if !intact {
                tracing::warn!(%session, snapshot = %info.id, "snapshot content does not match its digest");
            }
            Ok(Ok(Snapshot { info, intact, body }))
        })
        .await?;
        Ok(match opened {
            Err(unchanged) => Opened::Unchanged(unchanged),
            Ok(snapshot) => Opened::Snapshot(snapshot),
        })
    }

    /// The latest answered from memory, if it is kept: nothing in its directory or file has
    /// changed since it was read. Runs on the async thread: no lock, no listing, no `stat`.
    fn open_kept_latest(&self, session: &SessionId, unless: Option<&Expected>) -> Option<Opened> {
        let kept = self.latest.get(session)?;
        let info = kept.info.clone();
        Some(
            match unless.is_some_and(|tags| tags.matches(Some(&info.id))) {
                true => Opened::Unchanged(info),
                false => Opened::Snapshot(Snapshot {
                    info,
                    intact: true,
                    body: SnapshotBody::Whole(kept.content.clone()),
                }),
            },
        )
    }

    /// Deletes one snapshot. `precondition` is checked against that snapshot's own id.
    pub async fn delete(
        &self,
        session: &SessionId,
        id: &SnapshotId,
        precondition: Precondition,
    ) -> Result<(), StoreError> {
        let pass = self.enter().await?;
        let guard = self.locks.write(session).await;
        let (disk, session, id) = (self.disk.clone(), session.clone(), id.clone());
        let usage = self.usage.clone();
        blocking(move || {
            let _held = (pass, guard);
            let entries = disk.entries(&session)?;
            let target = entries.iter().find(|e| e.id == id);
            if !precondition.holds(target.map(|e| &e.id)) {
                let latest = newest(&entries).cloned();
                return Err(StoreError::PreconditionFailed { latest });
            }
            disk.remove(&session, &id).map_err(not_found)?;
            if let Some(target) = target {
                usage.remove(target.bytes, u64::from(entries.len() == 1));
            }
            Ok(())
        })
        .await
    }

    /// Deletes every snapshot of the session; an unknown session is not an error.
    /// `precondition` is checked against the latest snapshot.
    pub async fn delete_session(
        &self,
        session: &SessionId,
        precondition: Precondition,
    ) -> Result<(), StoreError> {
        let pass = self.enter().await?;
        let guard = self.locks.write(session).await;
        let (disk, session) = (self.disk.clone(), session.clone());
        let usage = self.usage.clone();
        blocking(move || {
            let _held = (pass, guard);
            let entries = disk.entries(&session)?;
            let latest = newest(&entries);
            if !precondition.holds(latest.map(|e| &e.id)) {
                return Err(StoreError::PreconditionFailed {
                    latest: latest.cloned(),
                });
            }
            disk.remove_session(&session)?;
            let bytes = entries.iter().map(|e| e.bytes).sum();
            usage.remove(bytes, u64::from(!entries.is_empty()));
            Ok(())
        })
        .await
    }
}

fn newest(entries: &[SnapshotInfo]) -> Option<&SnapshotInfo> {
    entries.iter().max_by(|a, b| a.id.cmp(&b.id))
}

fn not_found(err: io::Error) -> StoreError {
    match disk::no_session(&err) {
        true => StoreError::NotFound,
        false => err.into(),
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
