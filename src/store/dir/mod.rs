//! The directory backend, the embedded default: snapshots as plain files,
//! `<data dir>/<session>/<id>.json`, holding exactly the bytes that were sent.
//!
//! What the seam's words mean here:
//! - **The truth** is the directory. Files added, edited or deleted by hand are seen on the next
//!   request; nothing else is kept beside them.
//! - **A transaction** holds the session's lock across processes (`flock` on its directory, see
//!   `flock.rs`) from the listing its decision is made on to its last rename or removal, so it
//!   never has to be decided twice. A write is a temp file, `fsync`, rename, `fsync` of the
//!   directory (`atomic.rs`); a refused write leaves nothing, not even a new directory.
//! - **Last used** (for `SNAPKEEP_SESSION_TTL`) is the session directory's modification time,
//!   which every write changes and a save of unchanged content sets: no snapshot file is ever
//!   touched for it.
//! - **The latest kept in memory** is each session's small newest snapshot, dropped when inotify
//!   reports any change to its directory or file (`latest.rs`, `watch.rs`).
//! - **Sweep**: temp files a crash left, removed at start before any write (`disk.rs`).
//! - **Count** (quotas) and **verify** walk the tree (`verify.rs`); **probe** lists the data
//!   directory, or creates and removes a file in it.

mod atomic;
mod disk;
mod flock;
mod latest;
mod verify;
mod watch;

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use time::OffsetDateTime;

use self::disk::Disk;
use self::flock::SessionLock;
use self::latest::LatestCache;
use super::name::{SessionId, SnapshotId, sha256_hex, sha256_hex_of};
use super::seam::{Content, Done, Need, Plan, View};
use super::spool::Spool;
use super::{
    Counts, Expected, Opened, Report, SessionSummary, Snapshot, SnapshotBody, SnapshotInfo,
    StoreError, Which, blocking, newest,
};

pub(crate) use self::disk::no_session;

/// Snapshots up to this size are read whole in one go; larger ones are streamed.
const READ_WHOLE_UP_TO: u64 = 256 * 1024;

#[derive(Debug)]
pub struct Dir {
    disk: Arc<Disk>,
    /// Each session's newest small snapshot, kept while inotify reports no change to it.
    latest: Arc<LatestCache>,
}

impl Dir {
    /// The data directory `root`; nothing is touched until [`Dir::create`].
    pub fn new(root: PathBuf, fsync: bool) -> Self {
        Self {
            disk: Arc::new(Disk::new(root, fsync)),
            latest: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        self.disk.root()
    }

    pub fn latest_reads_from_memory(&self) -> u64 {
        self.latest.hits()
    }

    pub async fn transact<R, F>(
        &self,
        session: &SessionId,
        _need: Need,
        mut decide: F,
    ) -> Result<Done<R>, StoreError>
    where
        F: FnMut(&dyn View) -> Result<(Plan, R), StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (disk, session) = (self.disk.clone(), session.clone());
        blocking(move || {
            let lock = match flock::exclusive(&disk.session_dir(&session)) {
                Ok(lock) => lock,
                Err(err) if err.kind() == io::ErrorKind::NotADirectory => {
                    return blocked(&session, decide);
                }
                Err(err) => return Err(err.into()),
            };
            let view = DirView::list(&disk, &session)?;
            let (mut wrote, done) = (false, decide(&view));
            let done = done.and_then(|(plan, outcome)| {
                wrote = plan.write.is_some();
                let not_removed = apply(&disk, &session, &lock, plan)?;
                Ok(Done {
                    outcome,
                    not_removed,
                })
            });
            if lock.created && !(wrote && done.is_ok()) {
                // A refused or failed first write leaves no directory behind.
                let _ = std::fs::remove_dir(disk.session_dir(&session));
            }
            done
        })
        .await
    }

    pub async fn list(&self, session: &SessionId) -> Result<Vec<SnapshotInfo>, StoreError> {
        let (disk, session) = (self.disk.clone(), session.clone());
        blocking(move || {
            let _lock = flock::shared(&disk.session_dir(&session))?;
            Ok(disk.entries(&session)?)
        })
        .await
    }

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
        let (disk, session) = (self.disk.clone(), session.clone());
        let kept = self.latest.clone();
        blocking(move || {
            // Held until the file is open: an open file stays readable even if a later write
            // prunes it.
            let lock = flock::shared(&disk.session_dir(&session))?;
            // For the latest, the watches that let it be kept in memory once read.
            let (mut file, mut info, ticket) = match which {
                Which::Id(id) => {
                    let (file, bytes) = disk.open(&session, &id).map_err(not_found)?;
                    (file, SnapshotInfo { id, bytes }, None)
                }
                Which::Latest => {
                    lock.as_ref().ok_or(StoreError::NotFound)?;
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
            drop(lock);
            if unless.is_some_and(|tags| tags.matches(Some(&info.id))) {
                return Ok(Opened::Unchanged(info));
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
            Ok(Opened::Snapshot(Snapshot { info, intact, body }))
        })
        .await
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

    pub async fn sessions(&self) -> Result<Vec<SessionSummary>, StoreError> {
        let disk = self.disk.clone();
        blocking(move || {
            let mut summaries = Vec::new();
            for session in disk.sessions()? {
                let entries = disk.entries(&session)?;
                summaries.push(SessionSummary {
                    snapshots: entries.len(),
                    bytes: entries.iter().map(|e| e.bytes).sum(),
                    newest: newest(&entries).cloned(),
                    session,
                });
            }
            Ok(summaries)
        })
        .await
    }

    pub async fn count(&self) -> Result<Counts, StoreError> {
        let disk = self.disk.clone();
        blocking(move || Ok(disk.count()?)).await
    }

    /// Creates the data directory if needed and proves it can be listed (and, with `writes`,
    /// written). What is wrong is said in one sentence that names the directory and the fix.
    pub async fn create(&self, writes: bool) -> Result<(), StoreError> {
        let disk = self.disk.clone();
        blocking(move || {
            let root = disk.root();
            disk.create().map_err(|err| unusable(root, &err))?;
            if writes {
                disk.probe_writable().map_err(|err| unusable(root, &err))?;
            }
            Ok(())
        })
        .await
    }

    /// Removes the temp files of a crashed run. Only while nothing writes: it cannot tell a
    /// crash's temp file from one being written.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let disk = self.disk.clone();
        blocking(move || Ok(disk.remove_leftovers()?)).await
    }

    pub async fn probe(&self, writable: bool) -> Result<(), StoreError> {
        let disk = self.disk.clone();
        blocking(move || match writable {
            true => Ok(disk.probe_writable()?),
            false => Ok(disk.probe_readable()?),
        })
        .await
    }

    pub async fn verify(&self) -> Result<Report, StoreError> {
        let disk = self.disk.clone();
        blocking(move || Ok(verify::verify(disk.root())?)).await
    }

    pub async fn spool(&self) -> Result<Spool, StoreError> {
        let disk = self.disk.clone();
        let fsync = disk.fsync();
        let (path, file) = blocking(move || Ok(disk.create_upload()?)).await?;
        Ok(Spool::named(path, file, fsync))
    }
}

/// A session's directory as listed under its lock.
struct DirView<'a> {
    disk: &'a Disk,
    session: &'a SessionId,
    ids: Vec<SnapshotId>,
}

impl<'a> DirView<'a> {
    /// Names only: a decision `stat`s just the snapshots it prunes (and all of them only when
    /// `SNAPKEEP_MAX_SESSION_BYTES` needs the session's total).
    fn list(disk: &'a Disk, session: &'a SessionId) -> Result<Self, StoreError> {
        let ids = disk.ids(session)?;
        Ok(Self { disk, session, ids })
    }
}

impl View for DirView<'_> {
    fn ids(&self) -> &[SnapshotId] {
        &self.ids
    }

    fn size(&self, id: &SnapshotId) -> Result<u64, StoreError> {
        Ok(self.disk.size(self.session, id)?)
    }

    fn holds(&self, id: &SnapshotId, sha256: &str) -> Result<bool, StoreError> {
        match self.disk.open(self.session, id) {
            Ok((file, _)) => Ok(sha256_hex_of(file)? == sha256),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    fn latest_content(&self) -> Result<Bytes, StoreError> {
        let newest = self.ids.iter().max().ok_or(StoreError::NotFound)?;
        Ok(self.disk.read(self.session, newest)?.into())
    }

    fn last_used(&self) -> Option<OffsetDateTime> {
        let modified =
            std::fs::metadata(self.disk.session_dir(self.session)).and_then(|meta| meta.modified());
        modified.ok().map(OffsetDateTime::from)
    }
}

/// A session with no snapshots and no directory to hold any.
struct NoSnapshots;

impl View for NoSnapshots {
    fn ids(&self) -> &[SnapshotId] {
        &[]
    }

    fn size(&self, _: &SnapshotId) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn holds(&self, _: &SnapshotId, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn latest_content(&self) -> Result<Bytes, StoreError> {
        Err(StoreError::NotFound)
    }

    fn last_used(&self) -> Option<OffsetDateTime> {
        None
    }
}

/// Commits `plan` in the session's locked directory: the new snapshot, then the removals (a
/// removal that fails is logged and reported, not an error: the snapshot is written), then the
/// mark of use, then the directory itself when the session goes.
fn apply(
    disk: &Disk,
    session: &SessionId,
    lock: &SessionLock,
    plan: Plan,
) -> Result<Vec<SnapshotId>, StoreError> {
    if let Some(new) = &plan.write {
        if lock.created {
            disk.sync_new_session()?;
        }
        match &new.content {
            Content::Bytes(bytes) => disk.write(session, &new.id, bytes)?,
            Content::Upload(upload) => {
                let path = upload.path().expect("the directory's uploads have a name");
                disk.install(session, &new.id, path)?;
            }
        }
    }
    let mut not_removed = Vec::new();
    for old in plan.remove {
        match disk.remove(session, &old) {
            Ok(()) => {}
            // Someone removed it by hand meanwhile: it is gone, which is what was wanted.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(%session, snapshot = %old, error = %err, "could not remove snapshot");
                not_removed.push(old);
            }
        }
    }
    if plan.mark_used
        && let Err(err) = mark_used(lock.dir())
    {
        tracing::debug!(%session, error = %err, "could not mark the session as used");
    }
    if plan.drop_session {
        disk.remove_session(session)?;
    }
    Ok(not_removed)
}

/// A transaction on a session whose name is taken by a file snapkeep did not make: it has no
/// snapshots, so a decision may find nothing to do (a delete), but it cannot write.
fn blocked<R>(
    session: &SessionId,
    mut decide: impl FnMut(&dyn View) -> Result<(Plan, R), StoreError>,
) -> Result<Done<R>, StoreError> {
    let (plan, outcome) = decide(&NoSnapshots)?;
    match plan.write {
        Some(_) => {
            tracing::debug!(%session, "a file that is not a directory has the session's name");
            Err(StoreError::SessionBlocked)
        }
        None => Ok(Done {
            outcome,
            not_removed: Vec::new(),
        }),
    }
}

/// Sets the session directory's modification time to now: the session was used.
fn mark_used(dir: &File) -> io::Result<()> {
    dir.set_modified(SystemTime::now())
}

/// Why the data directory `root` cannot be used, for a person, from what the system said.
fn unusable(root: &Path, err: &io::Error) -> StoreError {
    use std::os::unix::fs::MetadataExt;
    let shown = root.display();
    let why = match err.kind() {
        io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => {
            let file = root.ancestors().find(|p| p.is_file()).unwrap_or(root);
            match file == root {
                true => format!("{shown} is a file, not a directory"),
                false => format!(
                    "{shown} cannot be a directory: {} is a file",
                    file.display()
                ),
            }
        }
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            // The user this process runs as (a container's, say) and the directory's owner.
            let me = std::fs::metadata("/proc/self").ok();
            let (uid, gid) = me.map_or((0, 0), |m| (m.uid(), m.gid()));
            let owner = std::fs::metadata(root).map_or(String::new(), |m| {
                format!(", and belongs to uid {}", m.uid())
            });
            format!(
                "{shown} is not writable by this process (uid {uid}, gid {gid}){owner}: give it to \
                 that user (for a bind mount: chown -R {uid}:{gid} <the host directory>), mount \
                 a volume instead, or set SNAPKEEP_READ_ONLY=true to serve it read-only ({err})"
            )
        }
        _ => format!("{shown}: {err}"),
    };
    StoreError::Io(io::Error::other(why))
}

fn not_found(err: io::Error) -> StoreError {
    match no_session(&err) {
        true => StoreError::NotFound,
        false => err.into(),
    }
}
