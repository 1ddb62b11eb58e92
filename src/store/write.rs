//! The write procedure, run while holding the session's lock: dedup against the latest, choose
//! the id, check the quotas, write durably, prune.

use std::io;
use std::sync::Arc;

use time::OffsetDateTime;

use super::disk::Disk;
use super::name::{SessionId, SnapshotId, sha256_hex};
use super::retain::{self, Retention};
use super::usage::{Change, Usage};
use super::{Quotas, Saved, SnapshotInfo, StoreError, newest};

/// What a write must respect besides the session's lock.
pub(super) struct Rules {
    pub retention: Retention,
    pub quotas: Quotas,
    pub usage: Arc<Usage>,
}

/// Saves `content` as the newest of `entries` (the session's snapshots, read under its lock):
/// dedup against the latest, choose the id, check quotas, write, prune.
pub(super) fn save_locked(
    disk: &Disk,
    session: &SessionId,
    content: &[u8],
    entries: &[SnapshotInfo],
    rules: &Rules,
) -> Result<Saved, StoreError> {
    let sha256 = sha256_hex(content);
    let newest = newest(entries);
    // The id carries a digest prefix, so the file is only read when a match is likely.
    if let Some(newest) = newest
        && newest.id.digest_matches(&sha256)
        && disk.read(session, &newest.id)? == content
    {
        // Nothing new to write, but the session is in use: the idle-session sweep looks at
        // this time, so an app that keeps saving the same state keeps its backup.
        if let Err(err) = disk.touch(session, &newest.id) {
            tracing::debug!(%session, error = %err, "could not touch a deduplicated snapshot");
        }
        return Ok(Saved {
            info: newest.clone(),
            sha256,
            deduplicated: true,
            pruned: Vec::new(),
        });
    }
    let previous = newest.map(|e| &e.id);
    let id = SnapshotId::next(OffsetDateTime::now_utc(), previous, &sha256).ok_or_else(|| {
        io::Error::other(format!("no snapshot id exists after {}", previous.unwrap()))
    })?;
    let info = SnapshotInfo {
        id,
        bytes: content.len() as u64,
    };
    let mut ids: Vec<SnapshotId> = entries.iter().map(|e| e.id.clone()).collect();
    ids.push(info.id.clone());
    let to_prune = retain::to_prune(&ids, &rules.retention);

    let change = planned_change(entries, &info, &to_prune);
    rules
        .usage
        .admit(&rules.quotas, &change)
        .map_err(|over| StoreError::OverQuota(over.0))?;
    if let Err(err) = disk.write(session, &info.id, content) {
        rules.usage.undo(&change);
        return Err(err.into());
    }
    let pruned = to_prune
        .into_iter()
        .filter(|old| match disk.remove(session, old) {
            Ok(()) => true,
            // Someone removed it by hand meanwhile: it is gone, which is what was wanted.
            Err(err) if err.kind() == io::ErrorKind::NotFound => true,
            Err(err) => {
                tracing::warn!(%session, snapshot = %old, error = %err, "could not prune snapshot");
                // The quota counts already let go of it; it is still there.
                if let Some(kept) = entries.iter().find(|e| &e.id == old) {
                    rules.usage.keep(kept.bytes);
                }
                false
            }
        })
        .collect();
    Ok(Saved {
        info,
        sha256,
        deduplicated: false,
        pruned,
    })
}

/// What writing `new` and pruning `to_prune` does to the counts the quotas look at.
fn planned_change(entries: &[SnapshotInfo], new: &SnapshotInfo, to_prune: &[SnapshotId]) -> Change {
    let removed: u64 = entries
        .iter()
        .filter(|e| to_prune.contains(&e.id))
        .map(|e| e.bytes)
        .sum();
    let before: u64 = entries.iter().map(|e| e.bytes).sum();
    Change {
        added: new.bytes,
        removed,
        new_session: entries.is_empty(),
        session_bytes: (before + new.bytes).saturating_sub(removed),
    }
}
