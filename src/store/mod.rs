//! The snapshot store: save, list, read and delete snapshots of a session, with deduplication,
//! retention and quotas. It speaks of sessions, snapshot ids and bytes, and knows nothing of
//! HTTP.
//!
//! # Layout
//! - [`Store`] (this file, and `maintain.rs` for the operator's side): the one interface that
//!   HTTP and the CLI use. Every change of a session is one transaction on the backend.
//! - `seam.rs`: what a backend must do, and the `Backend` enum that picks one.
//! - `plan.rs`: what each change does, decided against one observed state: preconditions,
//!   dedup, ids, retention, quota booking. Pure, like `name.rs`, `retain.rs`,
//!   `precondition.rs` and `usage.rs`'s rule.
//! - `dir/`: the directory backend (the default); `s3/`: the S3-compatible one.
//! - `locks.rs`: writers of one session queue in this process before they reach the backend.
//! - `feed.rs`: the change feed, fed by every commit and by revalidating subscribed sessions.
//! - `spool.rs`: large uploads on their way in.

mod dir;
pub mod feed;
mod locks;
mod maintain;
pub mod name;
mod plan;
mod precondition;
pub mod retain;
mod s3;
mod seam;
mod spool;
mod usage;

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::io::AsyncRead;

use self::feed::{Feed, Latest, Subscription};
use self::locks::SessionLocks;
use self::name::{SessionId, SnapshotId, sha256_hex};
use self::plan::{Removed, Rules, SaveOutcome};
use self::retain::Retention;
use self::seam::{Backend, Content, Done, Need, Plan, View};
use self::usage::Usage;

pub use self::maintain::{Report, SessionSummary};
pub use self::precondition::{Expected, Precondition};
pub use self::s3::Settings as S3Settings;
pub use self::spool::{Spool, SpoolError, Spooled};
pub use self::usage::Counts;

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
    /// A patch cannot apply because the latest snapshot is not valid JSON (edited by hand,
    /// say).
    #[error("the latest snapshot is not valid JSON: {0}")]
    LatestNotJson(serde_json::Error),
    /// The disk or a filesystem quota is full (`ENOSPC`, `EDQUOT`).
    #[error("no space left for the snapshot: {0}")]
    StorageFull(io::Error),
    /// The object store is down, slow, or answering errors; trying again later may work.
    #[error("the object store is unavailable: {0}")]
    Unavailable(String),
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

/// Where the snapshots live (`SNAPKEEP_STORAGE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A data directory, with fsync on or off.
    Dir { root: PathBuf, fsync: bool },
    /// An S3-compatible bucket.
    S3(S3Settings),
}

/// Limits on what the store may hold, counted in snapshot bytes; `None`: no limit.
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

/// A snapshot's content: a small one whole (read in one go), a large one as a stream, so it is
/// never held whole in memory.
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
    /// False when the content no longer matches the digest in its id: it was edited or
    /// corrupted where it is stored.
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
    backend: Arc<Backend>,
    retention: Retention,
    quotas: Quotas,
    /// Bytes and sessions stored: for the quotas, and for whoever reports on the store.
    usage: Arc<Usage>,
    locks: SessionLocks,
    /// Who is told of each session's changes.
    feed: Feed,
    patching: tokio::sync::Semaphore,
    /// Every write and delete holds a permit while it runs; [`Store::close`] takes them all.
    gate: Arc<tokio::sync::Semaphore>,
    /// All of the gate's permits while start-up prepares the directory ([`Store::hold_writes`]).
    held: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl Store {
    /// A store over `storage`. Nothing is touched until [`Store::create`] (a bucket is not even
    /// reached: an unreachable one makes requests fail, not the start).
    pub fn new(storage: &Storage, retention: Retention, quotas: Quotas) -> Self {
        let backend = match storage {
            Storage::Dir { root, fsync } => Backend::Dir(dir::Dir::new(root.clone(), *fsync)),
            Storage::S3(settings) => Backend::S3(s3::S3::new(settings)),
        };
        Self {
            backend: Arc::new(backend),
            retention,
            quotas,
            usage: Arc::default(),
            locks: SessionLocks::default(),
            feed: Feed::default(),
            patching: tokio::sync::Semaphore::new(PATCHES_AT_ONCE),
            gate: Arc::new(tokio::sync::Semaphore::new(GATE_CAPACITY as usize)),
            held: std::sync::Mutex::default(),
        }
    }

    /// Where the snapshots are: a path, or an `s3://` URL.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Snapshot bytes and sessions, as counted at start and kept current since.
    pub fn counts(&self) -> Counts {
        self.usage.get()
    }

    /// Reads of a session's latest snapshot answered from memory rather than from storage.
    pub fn latest_reads_from_memory(&self) -> u64 {
        self.backend.latest_reads_from_memory()
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

    /// A pass through the stop gate, held for the whole of one write or delete. While start-up
    /// prepares a data directory, writes wait (it takes a moment, on local disk); a bucket that
    /// has not been counted yet is one that did not answer, so they are turned away.
    async fn enter(&self) -> Result<tokio::sync::OwnedSemaphorePermit, StoreError> {
        if matches!(*self.backend, Backend::S3(_)) && self.preparing() {
            return Err(StoreError::Unavailable(
                "the bucket has not answered since the start".into(),
            ));
        }
        self.gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::ShuttingDown)
    }

    /// Creates the data directory if needed and proves it can be listed, and with `writes`
    /// written (nothing for a bucket). Call before serving.
    pub async fn create(&self, writes: bool) -> Result<(), StoreError> {
        self.backend.create(writes).await
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

    /// Removes what crashed writes left and counts what the store holds, then lets the writes
    /// held by [`Store::hold_writes`] go: neither step can race a write. Returns how many
    /// leftovers were removed. Reads are served meanwhile. On failure writes stay held;
    /// [`Store::refuse_writes`] turns them away.
    pub async fn prepare(&self) -> Result<usize, StoreError> {
        let removed = self.backend.sweep(true).await?;
        self.recount().await?;
        self.held_permits().take();
        Ok(removed)
    }

    /// Removes what killed writes left in a bucket, once it is old enough to be no write in
    /// progress (nothing for a data directory, whose leftovers start-up removes). Returns how
    /// many.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        self.backend.sweep(false).await
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

    /// Counts the snapshot bytes and sessions again, so what was added or removed by hand (or
    /// by another instance) is noticed. A count that overlapped a write or delete of this
    /// process is dropped (it may have missed it); the next one, a minute later, tries again.
    pub async fn recount(&self) -> Result<(), StoreError> {
        let generation = self.usage.generation();
        let counts = self.backend.count().await?;
        if !self.usage.set_if_unchanged(generation, counts) {
            tracing::debug!("writes during the recount; keeping the booked counts");
        }
        Ok(())
    }

    /// Whether the store can be read right now (for a read-only server, which must not write
    /// even a probe).
    pub async fn check_readable(&self) -> Result<(), StoreError> {
        self.backend.probe(false).await
    }

    /// Whether something new can be created in the store right now.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        self.backend.probe(true).await
    }

    /// Saves `content` as the session's newest snapshot, unless it equals the latest one, then
    /// applies retention. Durable before it returns (when fsync is on). `precondition` is
    /// checked against the latest snapshot in the same transaction as the write.
    pub async fn save(
        &self,
        session: &SessionId,
        content: Bytes,
        precondition: Precondition,
    ) -> Result<Saved, StoreError> {
        self.save_content(session, Content::Bytes(content), None, precondition)
            .await
    }

    /// Saves a finished upload (see [`Store::spool`]) like [`Store::save`], never reading it
    /// into memory.
    pub async fn save_spooled(
        &self,
        session: &SessionId,
        upload: Spooled,
        precondition: Precondition,
    ) -> Result<Saved, StoreError> {
        let sha256 = Some(upload.sha256.clone());
        let content = Content::Upload(Arc::new(upload));
        self.save_content(session, content, sha256, precondition)
            .await
    }

    async fn save_content(
        &self,
        session: &SessionId,
        content: Content,
        mut sha256: Option<String>,
        precondition: Precondition,
    ) -> Result<Saved, StoreError> {
        let rules = self.rules();
        let done = self
            .transact(session, Need::default(), move |view| {
                // Hashed where the decision runs (off the async threads, for a directory).
                let sha256 = sha256.get_or_insert_with(|| match &content {
                    Content::Bytes(bytes) => sha256_hex(bytes),
                    Content::Upload(upload) => upload.sha256.clone(),
                });
                let body = (content.clone(), sha256.clone());
                plan::save(view, body, &precondition, &rules, OffsetDateTime::now_utc())
            })
            .await?;
        Ok(self.announce_saved(session, saved(done)))
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
        let rules = self.rules();
        let need = Need {
            latest_content: true,
        };
        let done = self
            .transact(session, need, move |view| {
                let content = patched(view, &precondition, &patch, max_bytes)?;
                let sha256 = sha256_hex(&content);
                let body = (Content::Bytes(content), sha256);
                plan::save(view, body, &precondition, &rules, OffsetDateTime::now_utc())
            })
            .await?;
        Ok(self.announce_saved(session, saved(done)))
    }

    /// The session's snapshots, newest first; an unknown session has none.
    pub async fn list(&self, session: &SessionId) -> Result<Vec<SnapshotInfo>, StoreError> {
        let mut entries = self.backend.list(session).await?;
        entries.sort_unstable_by(|a, b| b.id.cmp(&a.id));
        Ok(entries)
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
        let opened = self.backend.open(session, which, unless).await?;
        if let Opened::Snapshot(snapshot) = &opened
            && !snapshot.intact
        {
            let id = &snapshot.info.id;
            tracing::warn!(%session, snapshot = %id, "snapshot content does not match its digest");
        }
        Ok(opened)
    }

    /// Deletes one snapshot. `precondition` is checked against that snapshot's own id.
    pub async fn delete(
        &self,
        session: &SessionId,
        id: &SnapshotId,
        precondition: Precondition,
    ) -> Result<(), StoreError> {
        let target = id.clone();
        let done = self
            .transact(session, Need::default(), move |view| {
                plan::delete(view, &target, &precondition)
            })
            .await?;
        self.removed(done)?;
        self.announce_removed(session, vec![id.clone()]).await;
        Ok(())
    }

    /// Deletes every snapshot of the session; an unknown session is not an error.
    /// `precondition` is checked against the latest snapshot.
    pub async fn delete_session(
        &self,
        session: &SessionId,
        precondition: Precondition,
    ) -> Result<(), StoreError> {
        let done = self
            .transact(session, Need::default(), move |view| {
                let ids = view.ids().to_vec();
                plan::delete_session(view, &precondition)
                    .map(|(plan, removed)| (plan, (removed, ids)))
            })
            .await?;
        let (removed, ids) = done.outcome;
        self.removed(Done {
            outcome: removed,
            not_removed: done.not_removed,
        })?;
        self.announce_removed(session, ids).await;
        Ok(())
    }

    /// Subscribes to the session's changes (see `feed.rs`); the subscription's state starts as
    /// the session is now.
    pub async fn subscribe(&self, session: &SessionId) -> Result<Subscription, StoreError> {
        let latest = self.latest_now(session).await?;
        let current = feed::State {
            latest,
            ..feed::State::default()
        };
        Ok(self.feed.subscribe(session, current))
    }

    /// Every session's changes, for the operator's feed.
    pub fn subscribe_all(&self) -> tokio::sync::broadcast::Receiver<feed::Notice> {
        self.feed.subscribe_all()
    }

    /// Reads each subscribed session's latest again and announces what changed: writes through
    /// other instances, the CLI, or by hand. Run about once a second.
    pub async fn revalidate_feeds(&self) {
        for (session, announced) in self.feed.subscribed() {
            let newest = match self.backend.list(&session).await {
                Ok(infos) => infos.into_iter().map(|info| info.id).max(),
                Err(err) => {
                    tracing::debug!(%session, error = %err, "could not revalidate a feed");
                    continue;
                }
            };
            if newest != announced
                && let Ok(latest) = self.latest_now(&session).await
            {
                self.feed.publish(&session, latest, Vec::new());
            }
        }
    }

    /// The session's latest with its SHA-256 (read and hashed, unless the feed already
    /// announces that very snapshot).
    async fn latest_now(&self, session: &SessionId) -> Result<Option<Latest>, StoreError> {
        let Some(newest) = self.list(session).await?.into_iter().next() else {
            return Ok(None);
        };
        if let Some(known) = self.feed.announced(session)
            && known.info == newest
        {
            return Ok(Some(known));
        }
        let which = Which::Id(newest.id.clone());
        let Opened::Snapshot(snapshot) = self.backend.open(session, which, None).await? else {
            unreachable!("without an If-None-Match, a snapshot is always read");
        };
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut reader = snapshot.body.into_reader();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let read = tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await?;
            if read == 0 {
                break;
            }
            sha2::Digest::update(&mut hasher, &buf[..read]);
        }
        let sha256 = name::hex(&sha2::Digest::finalize(hasher));
        Ok(Some(Latest {
            info: snapshot.info,
            sha256,
        }))
    }

    /// Tells the feed of a save that wrote something.
    fn announce_saved(&self, session: &SessionId, saved: Saved) -> Saved {
        if !saved.deduplicated {
            let latest = Latest {
                info: saved.info.clone(),
                sha256: saved.sha256.clone(),
            };
            self.feed
                .publish(session, Some(latest), saved.pruned.clone());
        }
        saved
    }

    /// Tells the feed that snapshots of `session` went away (when anyone listens): the latest
    /// is read again.
    async fn announce_removed(&self, session: &SessionId, removed: Vec<SnapshotId>) {
        if !self.feed.wanted(session) {
            return;
        }
        match self.latest_now(session).await {
            Ok(latest) => self.feed.publish(session, latest, removed),
            Err(err) => tracing::debug!(%session, error = %err, "could not announce a removal"),
        }
    }

    fn rules(&self) -> Rules {
        Rules {
            retention: self.retention,
            quotas: self.quotas,
            usage: self.usage.clone(),
        }
    }

    /// Books what a committed removal took away; a snapshot it could not remove is an error
    /// (the next recount books whatever did go).
    fn removed(&self, done: Done<Removed>) -> Result<(), StoreError> {
        if let Some(stuck) = done.not_removed.first() {
            return Err(StoreError::Io(io::Error::other(format!(
                "could not remove snapshot {stuck}"
            ))));
        }
        self.usage.remove(done.outcome.bytes, done.outcome.sessions);
        Ok(())
    }

    /// Runs one transaction on `session` (see `seam.rs`). Writers of one session in this
    /// process queue here first, which is cheaper than each of them waiting on the backend.
    /// The transaction runs to its end in a task of its own, holding its pass through the stop
    /// gate, even if the request that started it goes away: a change is either made whole, or
    /// never made.
    async fn transact<R, F>(
        &self,
        session: &SessionId,
        need: Need,
        decide: F,
    ) -> Result<Done<R>, StoreError>
    where
        F: FnMut(&dyn View) -> Result<(Plan, R), StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let pass = self.enter().await?;
        let guard = self.locks.write(session).await;
        let (backend, session) = (self.backend.clone(), session.clone());
        let task = tokio::spawn(async move {
            let _held = (pass, guard);
            backend.transact(&session, need, decide).await
        });
        match task.await {
            Ok(result) => result,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
}

/// The patched document: `patch` applied to the latest snapshot (or to `{}`), if
/// `precondition` holds and the result fits in `max_bytes`.
fn patched(
    view: &dyn View,
    precondition: &Precondition,
    patch: &serde_json::Value,
    max_bytes: usize,
) -> Result<Bytes, StoreError> {
    let mut document = match plan::check(view, precondition)? {
        Some(_) => {
            serde_json::from_slice(&view.latest_content()?).map_err(StoreError::LatestNotJson)?
        }
        None => serde_json::Value::Object(Default::default()),
    };
    crate::merge_patch::apply(&mut document, patch);
    let bytes = serde_json::to_vec(&document).expect("a Value always serializes");
    match bytes.len() <= max_bytes {
        true => Ok(bytes.into()),
        false => Err(StoreError::TooLarge { limit: max_bytes }),
    }
}

/// A committed save's answer, its quota booking settled: a snapshot it meant to prune that is
/// still there is neither reported pruned nor let go of in the counts.
fn saved(done: Done<SaveOutcome>) -> Saved {
    let SaveOutcome {
        mut saved,
        booking,
        pruned_bytes,
    } = done.outcome;
    let still_there = saved
        .pruned
        .iter()
        .zip(&pruned_bytes)
        .filter(|(id, _)| done.not_removed.contains(id))
        .map(|(_, bytes)| bytes)
        .sum();
    saved.pruned.retain(|id| !done.not_removed.contains(id));
    if let Some(booking) = booking {
        booking.commit(still_there);
    }
    saved
}

fn newest(entries: &[SnapshotInfo]) -> Option<&SnapshotInfo> {
    entries.iter().max_by(|a, b| a.id.cmp(&b.id))
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
