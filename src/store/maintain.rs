//! The operator's side of the store, for the command line and the background sweep: what
//! sessions there are, pruning under the retention policy, restoring an old snapshot, removing
//! idle sessions, verifying everything stored. Every change is a transaction like the server's
//! own writes, so the CLI may run beside a server (or several) on the same store.

use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use super::name::{SessionId, SnapshotId};
use super::retain::Decision;
use super::seam::Need;
use super::{Opened, Precondition, Saved, SnapshotInfo, Store, StoreError, Which, plan};

/// One session at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub session: SessionId,
    pub snapshots: usize,
    pub bytes: u64,
    pub newest: Option<SnapshotInfo>,
}

/// What a walk of everything stored found. Paths are relative to the data directory (or the
/// bucket's prefix).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Snapshots whose digest matches their id.
    pub good: usize,
    /// Snapshots whose content no longer matches the digest in their name.
    pub corrupt: Vec<PathBuf>,
    /// What a crashed or killed write left (removed by the server: a directory's at its next
    /// start, a bucket's once they are an hour old).
    pub temp: Vec<PathBuf>,
    /// Snapshots that a bucket's session head lists but that are not in the bucket.
    pub missing: Vec<PathBuf>,
    /// Files and directories snapkeep did not make (left alone, never served).
    pub stray: Vec<PathBuf>,
}

impl Report {
    /// Whether anything needs an operator: a corrupt or missing snapshot, or a crash's
    /// leftover. Stray files are reported but fine: the contract lets them live beside the
    /// snapshots.
    pub fn has_problems(&self) -> bool {
        !self.corrupt.is_empty() || !self.temp.is_empty() || !self.missing.is_empty()
    }
}

impl Store {
    /// Every session, sorted, with its count, bytes and newest snapshot.
    pub async fn sessions(&self) -> Result<Vec<SessionSummary>, StoreError> {
        self.backend.sessions().await
    }

    /// Applies the retention policy to `session` (or only says what it would do), and returns
    /// the decision for each snapshot, newest first.
    pub async fn prune(
        &self,
        session: &SessionId,
        dry_run: bool,
    ) -> Result<Vec<Decision>, StoreError> {
        let retention = self.retention;
        let done = self
            .transact(session, Need::default(), move |view| {
                plan::prune(view, &retention, dry_run)
            })
            .await?;
        let (decisions, removed) = done.outcome.clone();
        self.removed(super::seam::Done {
            outcome: removed,
            not_removed: done.not_removed,
        })?;
        if !dry_run {
            let gone = decisions
                .iter()
                .filter(|d| d.kept_by.is_empty())
                .map(|d| d.id.clone());
            self.announce_removed(session, gone.collect()).await;
        }
        Ok(decisions)
    }

    /// Makes snapshot `id` the session's latest again, as a new snapshot with the same bytes
    /// (deduplicated when it already is the latest). A snapshot that no longer matches its
    /// digest is refused ([`StoreError::Damaged`]) unless `force`: it would otherwise come back
    /// under a new, valid-looking id. Also says whether it was intact.
    pub async fn restore(
        &self,
        session: &SessionId,
        id: &SnapshotId,
        force: bool,
    ) -> Result<(Saved, bool), StoreError> {
        let which = Which::Id(id.clone());
        // Not through `Store::open`, which warns of damage: here the caller is told.
        let Opened::Snapshot(snapshot) = self.backend.open(session, which, None).await? else {
            unreachable!("without an If-None-Match, a snapshot is always read");
        };
        if !snapshot.intact && !force {
            return Err(StoreError::Damaged);
        }
        let mut content = Vec::with_capacity(snapshot.info.bytes as usize);
        snapshot
            .body
            .into_reader()
            .read_to_end(&mut content)
            .await?;
        let saved = self
            .save(session, content.into(), Precondition::default())
            .await?;
        Ok((saved, snapshot.intact))
    }

    /// Removes every session idle for longer than `ttl` at `now`: its newest snapshot was
    /// neither written nor saved again unchanged since. Each is decided again in its own
    /// transaction, so a session written meanwhile stays.
    pub async fn expire(
        &self,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionId>, StoreError> {
        let Some(cutoff) = time::Duration::try_from(ttl)
            .ok()
            .and_then(|ttl| now.checked_sub(ttl))
        else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for summary in self.sessions().await? {
            if summary.newest.is_none_or(|n| n.id.created_at() >= cutoff) {
                continue; // cheap first look: written recently, or empty
            }
            let done = self
                .transact(&summary.session, Need::default(), move |view| {
                    plan::expire(view, cutoff)
                })
                .await?;
            if let Some(gone) = done.outcome {
                self.removed(super::seam::Done {
                    outcome: gone,
                    not_removed: done.not_removed,
                })?;
                self.announce_removed(&summary.session, Vec::new()).await;
                removed.push(summary.session);
            }
        }
        Ok(removed)
    }

    /// Checks every snapshot stored against its digest, and reports what is not as snapkeep
    /// left it. Reads only; changes nothing.
    pub async fn verify(&self) -> Result<Report, StoreError> {
        self.backend.verify().await
    }
}
