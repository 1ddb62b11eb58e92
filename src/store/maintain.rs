//! The operator's side of the store, for the command line and the background sweep: what
//! sessions there are, pruning under the retention policy, restoring an old snapshot, removing
//! idle sessions, verifying the whole tree. Every change goes through the same per-session
//! lock and durable write as the server's own.

use std::time::Duration;

use time::OffsetDateTime;

use super::name::{SessionId, SnapshotId, sha256_hex};
use super::retain::{self, Decision};
use super::verify::{self, Report};
use super::{Precondition, Saved, SnapshotInfo, Store, StoreError, blocking, newest};

/// One session at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub session: SessionId,
    pub snapshots: usize,
    pub bytes: u64,
    pub newest: Option<SnapshotInfo>,
}

impl Store {
    /// Every session directory, with its snapshot count, bytes and newest snapshot.
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

    /// Applies the retention policy to `session` (or only says what it would do), and returns
    /// the decision for each snapshot, newest first.
    pub async fn prune(
        &self,
        session: &SessionId,
        dry_run: bool,
    ) -> Result<Vec<Decision>, StoreError> {
        let pass = self.enter().await?;
        let guard = self.locks.write(session).await;
        let (disk, session, retention) = (self.disk.clone(), session.clone(), self.retention);
        let usage = self.usage.clone();
        blocking(move || {
            let _held = (pass, guard);
            let entries = disk.entries(&session)?;
            let ids: Vec<SnapshotId> = entries.iter().map(|e| e.id.clone()).collect();
            let decisions = retain::plan(&ids, &retention);
            if !dry_run {
                for decision in decisions.iter().filter(|d| d.kept_by.is_empty()) {
                    disk.remove(&session, &decision.id).or_else(ignore_gone)?;
                    let bytes = entries
                        .iter()
                        .find(|e| e.id == decision.id)
                        .map_or(0, |e| e.bytes);
                    usage.remove(bytes, 0);
                }
            }
            Ok(decisions)
        })
        .await
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
        let (disk, session_owned, wanted) = (self.disk.clone(), session.clone(), id.clone());
        let content = blocking(move || match disk.read(&session_owned, &wanted) {
            Ok(bytes) => Ok(bytes),
            Err(err) if super::disk::no_session(&err) => Err(StoreError::NotFound),
            Err(err) => Err(err.into()),
        })
        .await?;
        let intact = id.digest_matches(&sha256_hex(&content));
        if !intact && !force {
            return Err(StoreError::Damaged);
        }
        let saved = self
            .save(session, content.into(), Precondition::default())
            .await?;
        Ok((saved, intact))
    }

    /// Removes every session idle for longer than `ttl` at `now`: its newest snapshot was
    /// neither written nor saved again unchanged since. Each is checked again under its lock,
    /// so a session written meanwhile stays.
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
            let pass = self.enter().await?;
            let guard = self.locks.write(&summary.session).await;
            let (disk, session, usage) = (
                self.disk.clone(),
                summary.session.clone(),
                self.usage.clone(),
            );
            let gone = blocking(move || {
                let _held = (pass, guard);
                let entries = disk.entries(&session)?;
                let Some(newest) = newest(&entries) else {
                    return Ok(false);
                };
                let touched = disk
                    .modified(&session, &newest.id)
                    .map(OffsetDateTime::from);
                let last_used =
                    touched.map_or(newest.id.created_at(), |t| t.max(newest.id.created_at()));
                if last_used >= cutoff {
                    return Ok(false);
                }
                disk.remove_session(&session)?;
                usage.remove(entries.iter().map(|e| e.bytes).sum(), 1);
                Ok(true)
            })
            .await?;
            if gone {
                removed.push(summary.session);
            }
        }
        Ok(removed)
    }

    /// Walks the whole data directory and checks every snapshot against its digest.
    pub async fn verify(&self) -> Result<Report, StoreError> {
        let disk = self.disk.clone();
        blocking(move || Ok(verify::verify(disk.root())?)).await
    }
}

fn ignore_gone(err: std::io::Error) -> Result<(), std::io::Error> {
    match err.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(err),
    }
}
