//! The write procedure, run while holding the session's lock: dedup against the latest, choose
//! the id, check the quotas, write durably, prune.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;

use super::disk::Disk;
use super::name::{SessionId, SnapshotId, sha256_hex, sha256_hex_of};
use super::retain::{self, Retention};
use super::spool::Spooled;
use super::usage::{Change, Usage};
use super::{Quotas, Saved, SnapshotInfo, StoreError};

/// What a write must respect besides the session's lock.
pub(super) struct Rules {
    pub retention: Retention,
    pub quotas: Quotas,
    pub usage: Arc<Usage>,
}

/// A new snapshot's content: in memory (the request's own buffer, never copied), or a
/// finished upload in a temp file.
pub(crate) enum Content {
    Bytes(Bytes),
    Spooled(Spooled),
}

impl Content {
    fn len(&self) -> u64 {
        match self {
            Content::Bytes(bytes) => bytes.len() as u64,
            Content::Spooled(upload) => upload.bytes,
        }
    }

    fn sha256(&self) -> String {
        match self {
            Content::Bytes(bytes) => sha256_hex(bytes),
            Content::Spooled(upload) => upload.sha256.clone(),
        }
    }

    /// Whether `id`'s file holds exactly this content (for an upload: the same SHA-256).
    fn equals(&self, disk: &Disk, session: &SessionId, id: &SnapshotId) -> io::Result<bool> {
        match self {
            Content::Bytes(bytes) => Ok(disk.read(session, id)? == *bytes),
            Content::Spooled(upload) => {
                let (file, _) = disk.open(session, id)?;
                Ok(sha256_hex_of(file)? == upload.sha256)
            }
        }
    }

    fn write(&self, disk: &Disk, session: &SessionId, id: &SnapshotId) -> io::Result<()> {
        match self {
            Content::Bytes(bytes) => disk.write(session, id, bytes),
            Content::Spooled(upload) => disk.install(session, id, upload.path()),
        }
    }
}

/// Saves `content` as the newest of the session's snapshots `ids` (listed under its lock):
/// dedup against the latest, choose the id, check quotas, write, prune.
pub(super) fn save_locked(
    disk: &Disk,
    session: &SessionId,
    content: &Content,
    ids: &[SnapshotId],
    rules: &Rules,
) -> Result<Saved, StoreError> {
    let sha256 = content.sha256();
    let newest = ids.iter().max();
    // The id carries a digest prefix, so the file is only read when a match is likely.
    if let Some(newest) = newest
        && newest.digest_matches(&sha256)
        && content.equals(disk, session, newest)?
    {
        // Nothing new to write, but the session is in use: the idle-session sweep looks at
        // this time, so an app that keeps saving the same state keeps its backup.
        if let Err(err) = disk.touch(session, newest) {
            tracing::debug!(%session, error = %err, "could not touch a deduplicated snapshot");
        }
        return Ok(Saved {
            info: SnapshotInfo {
                id: newest.clone(),
                bytes: content.len(),
            },
            sha256,
            deduplicated: true,
            pruned: Vec::new(),
        });
    }
    let id = SnapshotId::next(OffsetDateTime::now_utc(), newest, &sha256).ok_or_else(|| {
        io::Error::other(format!("no snapshot id exists after {}", newest.unwrap()))
    })?;
    let info = SnapshotInfo {
        id,
        bytes: content.len(),
    };
    let mut all = ids.to_vec();
    all.push(info.id.clone());
    let to_prune = retain::to_prune(&all, &rules.retention);

    // The counts need the sizes of the snapshots about to be pruned; the session's total,
    // which takes a `stat` of every snapshot, only the session quota needs.
    let pruned_sizes = sizes(disk, session, &to_prune)?;
    let session_before = match rules.quotas.session_bytes {
        Some(_) => Some(sizes(disk, session, ids)?.iter().sum()),
        None => None,
    };
    let change = planned_change(
        ids.is_empty(),
        &info,
        pruned_sizes.iter().sum(),
        session_before,
    );
    rules
        .usage
        .admit(&rules.quotas, &change)
        .map_err(|over| StoreError::OverQuota(over.0))?;
    if let Err(err) = content.write(disk, session, &info.id) {
        rules.usage.undo(&change);
        return Err(err.into());
    }
    let pruned = to_prune
        .into_iter()
        .zip(pruned_sizes)
        .filter(|(old, bytes)| match disk.remove(session, old) {
            Ok(()) => true,
            // Someone removed it by hand meanwhile: it is gone, which is what was wanted.
            Err(err) if err.kind() == io::ErrorKind::NotFound => true,
            Err(err) => {
                tracing::warn!(%session, snapshot = %old, error = %err, "could not prune snapshot");
                // The quota counts already let go of it; it is still there.
                rules.usage.keep(*bytes);
                false
            }
        })
        .map(|(old, _)| old)
        .collect();
    Ok(Saved {
        info,
        sha256,
        deduplicated: false,
        pruned,
    })
}

fn sizes(disk: &Disk, session: &SessionId, ids: &[SnapshotId]) -> io::Result<Vec<u64>> {
    ids.iter().map(|id| disk.size(session, id)).collect()
}

/// What writing `new` and pruning `removed` bytes does to the counts the quotas look at;
/// `session_before` is the session's total before the write, when the session quota is on.
fn planned_change(
    new_session: bool,
    new: &SnapshotInfo,
    removed: u64,
    session_before: Option<u64>,
) -> Change {
    Change {
        added: new.bytes,
        removed,
        new_session,
        session_bytes: session_before.map_or(0, |b| (b + new.bytes).saturating_sub(removed)),
    }
}
