//! The data directory's files: layout, listing, reading, writing, removing and cleaning up. All
//! of it is blocking (the backend runs it in `spawn_blocking`); the session lock is in
//! `flock.rs`, the durable write in `atomic.rs`.
//!
//! Layout: `<root>/<session>/<snapshot id>.json`. While a write is under way its bytes sit in
//! `<root>/<session>/.<snapshot id>.json.tmp` (or, for a large upload, in
//! `<root>/.snapkeep-upload-*.tmp`). Only names that parse as snapkeep's own are ever listed,
//! renamed or removed.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use walkdir::WalkDir;

use super::atomic;
use crate::store::name::{SessionId, SnapshotId};
use crate::store::{Counts, SnapshotInfo};

const SNAPSHOT_SUFFIX: &str = ".json";
const TEMP_SUFFIX: &str = ".json.tmp";
const PROBE_PREFIX: &str = ".snapkeep-probe-";
/// A large upload on its way in, at the top of the data directory (see [`Disk::create_upload`]).
const UPLOAD_PREFIX: &str = ".snapkeep-upload-";

#[derive(Debug)]
pub struct Disk {
    root: PathBuf,
    fsync: bool,
    probes: AtomicU64,
}

impl Disk {
    pub fn new(root: PathBuf, fsync: bool) -> Self {
        Self {
            root,
            fsync,
            probes: AtomicU64::new(0),
        }
    }

    /// Where a session's snapshots are (whether or not it exists).
    pub fn session_dir(&self, session: &SessionId) -> PathBuf {
        self.root.join(session.as_str())
    }

    /// Where a snapshot's file is (whether or not it exists).
    pub fn snapshot_path(&self, session: &SessionId, id: &SnapshotId) -> PathBuf {
        self.session_dir(session).join(snapshot_name(id))
    }

    /// The session's snapshots in no particular order; an unknown session has none, and so
    /// has a name taken by a file that is not a directory.
    pub fn entries(&self, session: &SessionId) -> io::Result<Vec<SnapshotInfo>> {
        let Some(dir) = self.read_session(session)? else {
            return Ok(Vec::new());
        };
        let mut entries = Vec::new();
        for item in dir {
            let item = item?;
            let Some(id) = item.file_name().to_str().and_then(parse_snapshot_name) else {
                continue;
            };
            // A snapshot deleted between read_dir and here is simply gone.
            match item.metadata() {
                Ok(meta) if meta.is_file() => entries.push(SnapshotInfo {
                    id,
                    bytes: meta.len(),
                }),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(entries)
    }

    /// The session's newest snapshot id, from the names alone (see [`Disk::ids`]); what
    /// every read of the latest asks, so nothing is collected on the way.
    pub fn newest_id(&self, session: &SessionId) -> io::Result<Option<SnapshotId>> {
        let mut newest: Option<SnapshotId> = None;
        self.each_id(session, |id| {
            if newest.as_ref().is_none_or(|n| id > *n) {
                newest = Some(id);
            }
        })?;
        Ok(newest)
    }

    /// The session's snapshot ids in no particular order, from the names alone.
    pub fn ids(&self, session: &SessionId) -> io::Result<Vec<SnapshotId>> {
        let mut ids = Vec::new();
        self.each_id(session, |id| ids.push(id))?;
        Ok(ids)
    }

    /// Calls `found` with each snapshot id of the session: `readdir` already says which
    /// entries are files, so no snapshot is `stat`ed. An unknown session has none.
    fn each_id(&self, session: &SessionId, mut found: impl FnMut(SnapshotId)) -> io::Result<()> {
        let Some(dir) = self.read_session(session)? else {
            return Ok(());
        };
        for item in dir {
            let item = item?;
            let Some(id) = item.file_name().to_str().and_then(parse_snapshot_name) else {
                continue;
            };
            if item.file_type().is_ok_and(|t| t.is_file()) {
                found(id);
            }
        }
        Ok(())
    }

    /// One snapshot's size; 0 when it is gone (removed by hand meanwhile).
    pub fn size(&self, session: &SessionId, id: &SnapshotId) -> io::Result<u64> {
        match fs::metadata(self.snapshot_path(session, id)) {
            Ok(meta) => Ok(meta.len()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(err) => Err(err),
        }
    }

    /// The session's directory listing; `None` when it has no directory.
    fn read_session(&self, session: &SessionId) -> io::Result<Option<fs::ReadDir>> {
        match fs::read_dir(self.session_dir(session)) {
            Err(err) if no_session(&err) => Ok(None),
            other => other.map(Some),
        }
    }

    /// Opens one snapshot for reading, with its length.
    pub fn open(&self, session: &SessionId, id: &SnapshotId) -> io::Result<(File, u64)> {
        let file = File::open(self.snapshot_path(session, id))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok((file, meta.len()))
    }

    pub fn read(&self, session: &SessionId, id: &SnapshotId) -> io::Result<Vec<u8>> {
        fs::read(self.snapshot_path(session, id))
    }

    /// Writes a new snapshot durably (see [`atomic`]) into the session's directory, which
    /// exists (the session's lock made it).
    pub fn write(&self, session: &SessionId, id: &SnapshotId, bytes: &[u8]) -> io::Result<()> {
        let temp_name = format!(".{id}{TEMP_SUFFIX}");
        let dir = self.session_dir(session);
        atomic::write(&dir, &snapshot_name(id), &temp_name, bytes, self.fsync)
    }

    /// Creates a file for a large upload to stream into, at the top of the data directory
    /// (its session directory may not exist yet, and a refused upload must not create it).
    pub fn create_upload(&self) -> io::Result<(PathBuf, File)> {
        let n = self.probes.fetch_add(1, Ordering::Relaxed);
        let path = self
            .root
            .join(format!("{UPLOAD_PREFIX}{}-{n}.tmp", std::process::id()));
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok((path, file))
    }

    /// Makes a finished upload (written and, with fsync on, synced) the snapshot `id`: one
    /// rename into the session's directory, then both directories are synced.
    pub fn install(&self, session: &SessionId, id: &SnapshotId, upload: &Path) -> io::Result<()> {
        let dir = self.session_dir(session);
        fs::rename(upload, dir.join(snapshot_name(id)))?;
        if self.fsync {
            atomic::sync_dir(&dir)?;
            atomic::sync_dir(&self.root)?;
        }
        Ok(())
    }

    /// Makes a session directory just created durable (its entry in the data directory).
    pub fn sync_new_session(&self) -> io::Result<()> {
        match self.fsync {
            true => atomic::sync_dir(&self.root),
            false => Ok(()),
        }
    }

    /// Whether fsync is on.
    pub fn fsync(&self) -> bool {
        self.fsync
    }

    pub fn remove(&self, session: &SessionId, id: &SnapshotId) -> io::Result<()> {
        fs::remove_file(self.snapshot_path(session, id))
    }

    /// Removes every snapshot (and leftover temp file) of the session, then its directory
    /// unless files snapkeep did not make are still in it. Unknown sessions are fine.
    pub fn remove_session(&self, session: &SessionId) -> io::Result<()> {
        let dir = self.session_dir(session);
        let Some(items) = self.read_session(session)? else {
            return Ok(());
        };
        for item in items {
            let item = item?;
            let name = item.file_name();
            let ours = name
                .to_str()
                .is_some_and(|n| parse_snapshot_name(n).is_some() || parse_temp_name(n).is_some());
            if ours && item.file_type()?.is_file() {
                ignore_not_found(fs::remove_file(item.path()))?;
            }
        }
        match fs::remove_dir(&dir) {
            Err(err) if err.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(()),
            other => ignore_not_found(other),
        }
    }

    /// Creates the data directory if needed, and proves it can be listed.
    pub fn create(&self) -> io::Result<()> {
        fs::create_dir_all(&self.root)?;
        self.probe_readable()
    }

    /// Removes temp files that a crashed run left behind; returns how many. Run it while no
    /// write is under way: it cannot tell a crash's temp file from one being written.
    pub fn remove_leftovers(&self) -> io::Result<usize> {
        let mut removed = 0;
        let walk = WalkDir::new(&self.root).min_depth(1).max_depth(2);
        for item in walk.into_iter().filter_map(Result::ok) {
            let name = item.file_name().to_str().unwrap_or_default();
            let leftover = match item.depth() {
                1 => is_top_level_temp(name),
                _ => parse_temp_name(name).is_some() && session_of(item.path()).is_some(),
            };
            if leftover && item.file_type().is_file() {
                ignore_not_found(fs::remove_file(item.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directories in the data directory named like sessions, sorted.
    pub fn sessions(&self) -> io::Result<Vec<SessionId>> {
        let mut sessions = Vec::new();
        for item in fs::read_dir(&self.root)? {
            let item = item?;
            let name = item.file_name();
            let Some(session) = name.to_str().and_then(|n| SessionId::parse(n).ok()) else {
                continue;
            };
            if item.file_type()?.is_dir() {
                sessions.push(session);
            }
        }
        sessions.sort();
        Ok(sessions)
    }

    /// Snapshot bytes and sessions (directories with at least one snapshot) in the whole tree.
    pub fn count(&self) -> io::Result<Counts> {
        let mut counts = Counts::default();
        for session in self.sessions()? {
            let entries = self.entries(&session)?;
            counts.bytes += entries.iter().map(|e| e.bytes).sum::<u64>();
            counts.sessions += u64::from(!entries.is_empty());
        }
        Ok(counts)
    }

    /// Proves the data directory can be listed.
    pub fn probe_readable(&self) -> io::Result<()> {
        fs::read_dir(&self.root).map(drop)
    }

    /// Proves the data directory accepts new files by creating and removing one.
    pub fn probe_writable(&self) -> io::Result<()> {
        let n = self.probes.fetch_add(1, Ordering::Relaxed);
        let path = self
            .root
            .join(format!("{PROBE_PREFIX}{}-{n}.tmp", std::process::id()));
        File::options().write(true).create_new(true).open(&path)?;
        fs::remove_file(&path)
    }
}

fn snapshot_name(id: &SnapshotId) -> String {
    format!("{id}{SNAPSHOT_SUFFIX}")
}

pub(super) fn parse_snapshot_name(name: &str) -> Option<SnapshotId> {
    SnapshotId::parse(name.strip_suffix(SNAPSHOT_SUFFIX)?).ok()
}

/// A readiness probe or an upload on its way in: temp files at the top of the data directory.
pub(super) fn is_top_level_temp(name: &str) -> bool {
    name.starts_with(PROBE_PREFIX) || name.starts_with(UPLOAD_PREFIX)
}

pub(super) fn parse_temp_name(name: &str) -> Option<SnapshotId> {
    SnapshotId::parse(name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?).ok()
}

/// The session a file at depth 2 belongs to, if its directory is named like one.
fn session_of(path: &Path) -> Option<SessionId> {
    let dir = path.parent()?.file_name()?.to_str()?;
    SessionId::parse(dir).ok()
}

/// Errors that mean "this session has no directory": it was never written, or its name is
/// taken by a file that is not one.
pub fn no_session(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn ignore_not_found(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "20261123T185337.123456Z-9f86d081884c7d65";

    #[test]
    fn only_snapkeep_names_count_as_snapshots_or_temps() {
        assert!(parse_snapshot_name(&format!("{ID}.json")).is_some());
        assert!(parse_temp_name(&format!(".{ID}.json.tmp")).is_some());
        for other in [ID, "notes.json", ".gitkeep", &format!("{ID}.json.bak")] {
            assert!(parse_snapshot_name(other).is_none(), "{other}");
            assert!(parse_temp_name(other).is_none(), "{other}");
        }
    }
}
