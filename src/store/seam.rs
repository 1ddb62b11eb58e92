//! The storage seam: what the store asks of a backend, and the one place that picks which
//! backend answers. Two implement it: [`Dir`] (the data directory, the embedded default) and
//! [`S3`] (an S3-compatible bucket).
//!
//! The shape is an object store's: snapshots are immutable objects, and every change of a
//! session is one transaction ([`Backend::transact`]). The backend shows the store one observed
//! state of the session (a [`View`]); the store decides, purely, what to do about it (a
//! [`Plan`]: the new snapshot, the snapshots to remove); the backend commits that plan only if
//! the state it showed is still the session's current one. When it is not, it shows the new
//! state and asks again, so a decision is never applied to a state it was not made against.
//! - Directory: the state is the session directory's listing, held still by a lock that other
//!   processes respect (`flock` on the directory) from the listing to the last rename.
//! - S3: the state is the session's head object; the commit is a conditional `PUT` of the head
//!   (`If-Match` its ETag, or `If-None-Match: *` for a new session).
//!
//! Reads (`list`, `open`), the operator's walks (`sessions`, `count`, `verify`), readiness
//! (`probe`), start-up's cleanup (`sweep`) and large uploads (`spool`) go through here too; what
//! each means on each backend is written on the backend's module.

use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;

use super::dir::Dir;
use super::name::{SessionId, SnapshotId};
use super::s3::S3;
use super::spool::{Spool, Spooled};
use super::{Counts, Expected, Opened, Report, SessionSummary, SnapshotInfo, StoreError, Which};

/// One observed state of a session, as a decision sees it. Reads beyond the list of ids (sizes,
/// digests, content) are made only when a decision asks for them.
pub(crate) trait View {
    /// The session's snapshots, in no particular order.
    fn ids(&self) -> &[SnapshotId];
    /// One snapshot's size; 0 when it is gone.
    fn size(&self, id: &SnapshotId) -> Result<u64, StoreError>;
    /// Whether snapshot `id` holds exactly the content whose SHA-256 is `sha256`.
    fn holds(&self, id: &SnapshotId, sha256: &str) -> Result<bool, StoreError>;
    /// The content of the session's newest snapshot (asked for with [`Need::latest_content`]).
    fn latest_content(&self) -> Result<Bytes, StoreError>;
    /// When the session was last used: written, or saved again unchanged.
    fn last_used(&self) -> Option<OffsetDateTime>;
}

/// What a decision will ask of its [`View`] that must be fetched before it runs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Need {
    pub latest_content: bool,
}

/// A new snapshot's content: in memory (the request's own buffer, never copied), or a finished
/// upload in a temp file.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    Bytes(Bytes),
    Upload(Arc<Spooled>),
}

impl Content {
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(bytes) => bytes.len() as u64,
            Content::Upload(upload) => upload.bytes,
        }
    }
}

/// What one transaction does to a session, decided against one observed state.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// A new snapshot, which becomes the session's newest.
    pub write: Option<NewSnapshot>,
    /// Snapshots to remove (retention's, or a delete's).
    pub remove: Vec<SnapshotId>,
    /// Record that the session was used now (a save that found the content unchanged).
    pub mark_used: bool,
    /// The session itself goes, once its snapshots are removed.
    pub drop_session: bool,
}

#[derive(Debug)]
pub(crate) struct NewSnapshot {
    pub id: SnapshotId,
    pub sha256: String,
    pub content: Content,
}

/// A committed transaction: what the decision returned, and the snapshots it meant to remove
/// that are still there (a removal that failed after the commit; retention tries again later).
#[derive(Debug)]
pub(crate) struct Done<R> {
    pub outcome: R,
    pub not_removed: Vec<SnapshotId>,
}

/// The backend a store runs on. An enum rather than a trait object: two backends, chosen once
/// at start, and the generic [`Backend::transact`] stays generic.
#[derive(Debug)]
pub(crate) enum Backend {
    Dir(Dir),
    S3(S3),
}

impl Backend {
    /// Runs `decide` against the session's current state and commits its plan atomically with
    /// respect to every other writer, in this process or another; on a lost race, runs it again
    /// against the new state. An error from `decide` ends the transaction with nothing changed.
    pub async fn transact<R, F>(
        &self,
        session: &SessionId,
        need: Need,
        decide: F,
    ) -> Result<Done<R>, StoreError>
    where
        F: FnMut(&dyn View) -> Result<(Plan, R), StoreError> + Send + 'static,
        R: Send + 'static,
    {
        match self {
            Backend::Dir(dir) => dir.transact(session, need, decide).await,
            Backend::S3(s3) => s3.transact(session, need, decide).await,
        }
    }

    /// The session's snapshots in no particular order; an unknown session has none.
    pub async fn list(&self, session: &SessionId) -> Result<Vec<SnapshotInfo>, StoreError> {
        match self {
            Backend::Dir(dir) => dir.list(session).await,
            Backend::S3(s3) => s3.list(session).await,
        }
    }

    /// Opens one snapshot, its content checked against its id's digest; nothing is read when
    /// its id is in `unless` (a request's `If-None-Match`).
    pub async fn open(
        &self,
        session: &SessionId,
        which: Which,
        unless: Option<Expected>,
    ) -> Result<Opened, StoreError> {
        match self {
            Backend::Dir(dir) => dir.open(session, which, unless).await,
            Backend::S3(s3) => s3.open(session, which, unless).await,
        }
    }

    /// Every session, sorted, with its count, bytes and newest.
    pub async fn sessions(&self) -> Result<Vec<SessionSummary>, StoreError> {
        match self {
            Backend::Dir(dir) => dir.sessions().await,
            Backend::S3(s3) => s3.sessions().await,
        }
    }

    /// Snapshot bytes and sessions, counted afresh (for the quotas).
    pub async fn count(&self) -> Result<Counts, StoreError> {
        match self {
            Backend::Dir(dir) => dir.count().await,
            Backend::S3(s3) => s3.count().await,
        }
    }

    /// Makes the store usable (the data directory created, and proved writable with `writes`;
    /// nothing for a bucket).
    pub async fn create(&self, writes: bool) -> Result<(), StoreError> {
        match self {
            Backend::Dir(dir) => dir.create(writes).await,
            Backend::S3(_) => Ok(()),
        }
    }

    /// Removes what crashed or killed writes left; returns how many. `at_start`: nothing else
    /// of this process writes yet, so the directory's temp files are surely a crash's; later,
    /// a bucket's objects that no head lists and that are old enough to be no write in
    /// progress.
    pub async fn sweep(&self, at_start: bool) -> Result<usize, StoreError> {
        match self {
            Backend::Dir(dir) if at_start => dir.sweep().await,
            Backend::S3(s3) if !at_start => s3.sweep().await,
            // A bucket's sweep is slow (every head is read) and safe beside writes: it runs
            // in the background, not before the first write.
            _ => Ok(0),
        }
    }

    /// Whether the store can be read (and, with `writable`, written) right now.
    pub async fn probe(&self, writable: bool) -> Result<(), StoreError> {
        match self {
            Backend::Dir(dir) => dir.probe(writable).await,
            Backend::S3(s3) => s3.probe(writable).await,
        }
    }

    /// Checks every snapshot against its digest, and reports what is not as snapkeep left it.
    pub async fn verify(&self) -> Result<Report, StoreError> {
        match self {
            Backend::Dir(dir) => dir.verify().await,
            Backend::S3(s3) => s3.verify().await,
        }
    }

    /// Starts a large upload: a temp file that the backend can later make a snapshot of.
    pub async fn spool(&self) -> Result<Spool, StoreError> {
        match self {
            Backend::Dir(dir) => dir.spool().await,
            Backend::S3(_) => Spool::anonymous().await,
        }
    }

    /// Reads of a session's latest snapshot answered from memory.
    pub fn latest_reads_from_memory(&self) -> u64 {
        match self {
            Backend::Dir(dir) => dir.latest_reads_from_memory(),
            Backend::S3(s3) => s3.latest_reads_from_memory(),
        }
    }

    /// Where the snapshots are, for logs and messages: a path or an `s3://` URL.
    pub fn location(&self) -> String {
        match self {
            Backend::Dir(dir) => dir.root().display().to_string(),
            Backend::S3(s3) => s3.url(),
        }
    }
}
