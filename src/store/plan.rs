//! What each change of a session does, decided against one observed state of it (a [`View`])
//! with no I/O of its own: the check of a conditional request, dedup against the latest, the
//! new id, retention's removals, and the quotas' booking. A backend commits the [`Plan`] made
//! here only if the state is still current, and otherwise asks again (see `seam.rs`), so every
//! function here may run more than once for one request.

use std::sync::Arc;

use time::OffsetDateTime;

use super::name::SnapshotId;
use super::retain::{self, Decision, Retention};
use super::seam::{Content, NewSnapshot, Plan, View};
use super::usage::{Change, Usage};
use super::{Precondition, Quotas, Saved, SnapshotInfo, StoreError};

/// What a write must respect.
#[derive(Debug, Clone)]
pub(super) struct Rules {
    pub retention: Retention,
    pub quotas: Quotas,
    pub usage: Arc<Usage>,
}

/// The quotas' booking of one write: taken back when dropped, unless the write committed.
#[derive(Debug)]
pub(super) struct Booking {
    usage: Arc<Usage>,
    change: Change,
    committed: bool,
}

impl Booking {
    /// The write is stored: the booking stands, except for the snapshots it meant to prune
    /// that are still there (`still_there` bytes).
    pub fn commit(mut self, still_there: u64) {
        self.committed = true;
        if still_there > 0 {
            self.usage.keep(still_there);
        }
    }
}

impl Drop for Booking {
    fn drop(&mut self) {
        if !self.committed {
            self.usage.undo(&self.change);
        }
    }
}

/// What a save decided, besides its plan.
#[derive(Debug)]
pub(super) struct SaveOutcome {
    pub saved: Saved,
    /// `None` for a deduplicated save, which books nothing.
    pub booking: Option<Booking>,
    /// The sizes of the snapshots pruned, in the order of `saved.pruned`.
    pub pruned_bytes: Vec<u64>,
}

/// Saves `content` (with SHA-256 `sha256`) as the session's newest snapshot, unless it equals
/// the latest one; then retention prunes. `precondition` is checked against the latest first.
pub(super) fn save(
    view: &dyn View,
    (content, sha256): (Content, String),
    precondition: &Precondition,
    rules: &Rules,
    now: OffsetDateTime,
) -> Result<(Plan, SaveOutcome), StoreError> {
    let newest = check(view, precondition)?;
    // The id carries a digest prefix, so the latest's content is only looked at when a match
    // is likely.
    if let Some(newest) = newest
        && newest.digest_matches(&sha256)
        && view.holds(newest, &sha256)?
    {
        let saved = Saved {
            info: SnapshotInfo {
                id: newest.clone(),
                bytes: content.len(),
            },
            sha256,
            deduplicated: true,
            pruned: Vec::new(),
        };
        let plan = Plan {
            mark_used: true,
            ..Plan::default()
        };
        let outcome = SaveOutcome {
            saved,
            booking: None,
            pruned_bytes: Vec::new(),
        };
        return Ok((plan, outcome));
    }
    let id = SnapshotId::next(now, newest, &sha256).ok_or_else(|| {
        StoreError::Io(std::io::Error::other(format!(
            "no snapshot id exists after {}",
            newest.expect("only a newest id can have no successor")
        )))
    })?;
    let info = SnapshotInfo {
        id: id.clone(),
        bytes: content.len(),
    };
    let mut all = view.ids().to_vec();
    all.push(id.clone());
    let pruned = retain::to_prune(&all, &rules.retention);
    let pruned_bytes = sizes(view, &pruned)?;
    // The session's total takes every snapshot's size: only the session quota needs it.
    let session_before = match rules.quotas.session_bytes {
        Some(_) => Some(sizes(view, view.ids())?.iter().sum()),
        None => None,
    };
    let change = planned_change(
        view.ids().is_empty(),
        &info,
        pruned_bytes.iter().sum(),
        session_before,
    );
    rules
        .usage
        .admit(&rules.quotas, &change)
        .map_err(|over| StoreError::OverQuota(over.0))?;
    let booking = Booking {
        usage: rules.usage.clone(),
        change,
        committed: false,
    };
    let plan = Plan {
        write: Some(NewSnapshot {
            id,
            sha256: sha256.clone(),
            content,
        }),
        remove: pruned.clone(),
        ..Plan::default()
    };
    let outcome = SaveOutcome {
        saved: Saved {
            info,
            sha256,
            deduplicated: false,
            pruned,
        },
        booking: Some(booking),
        pruned_bytes,
    };
    Ok((plan, outcome))
}

/// What a removal took away, to be booked once it is committed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Removed {
    pub bytes: u64,
    /// Sessions left with no snapshot.
    pub sessions: u64,
}

/// Deletes one snapshot. `precondition` is checked against that snapshot's own id, as RFC 9110
/// says for a `DELETE` of it.
pub(super) fn delete(
    view: &dyn View,
    id: &SnapshotId,
    precondition: &Precondition,
) -> Result<(Plan, Removed), StoreError> {
    let target = view.ids().iter().find(|known| *known == id);
    if !precondition.holds(target) {
        return Err(failed(view)?);
    }
    let Some(target) = target else {
        return Err(StoreError::NotFound);
    };
    let removed = Removed {
        bytes: view.size(target)?,
        sessions: u64::from(view.ids().len() == 1),
    };
    let plan = Plan {
        remove: vec![target.clone()],
        ..Plan::default()
    };
    Ok((plan, removed))
}

/// Deletes every snapshot of the session, and the session. `precondition` is checked against
/// the latest.
pub(super) fn delete_session(
    view: &dyn View,
    precondition: &Precondition,
) -> Result<(Plan, Removed), StoreError> {
    check(view, precondition)?;
    remove_all(view)
}

/// Applies the retention policy (or, with `dry_run`, only says what it would do): the decision
/// for each snapshot, newest first.
pub(super) fn prune(
    view: &dyn View,
    retention: &Retention,
    dry_run: bool,
) -> Result<(Plan, (Vec<Decision>, Removed)), StoreError> {
    let decisions = retain::plan(view.ids(), retention);
    let mut plan = Plan::default();
    if !dry_run {
        plan.remove = decisions
            .iter()
            .filter(|d| d.kept_by.is_empty())
            .map(|d| d.id.clone())
            .collect();
    }
    let removed = Removed {
        bytes: sizes(view, &plan.remove)?.iter().sum(),
        sessions: 0,
    };
    Ok((plan, (decisions, removed)))
}

/// Removes the session if it was last used before `cutoff`: its newest snapshot was neither
/// written nor saved again unchanged since. `None`: it stays.
pub(super) fn expire(
    view: &dyn View,
    cutoff: OffsetDateTime,
) -> Result<(Plan, Option<Removed>), StoreError> {
    let Some(newest) = view.ids().iter().max() else {
        return Ok((Plan::default(), None));
    };
    let written = newest.created_at();
    let last_used = view.last_used().map_or(written, |used| used.max(written));
    if last_used >= cutoff {
        return Ok((Plan::default(), None));
    }
    let (plan, removed) = remove_all(view)?;
    Ok((plan, Some(removed)))
}

/// The plan that removes the session and all its snapshots.
fn remove_all(view: &dyn View) -> Result<(Plan, Removed), StoreError> {
    let removed = Removed {
        bytes: sizes(view, view.ids())?.iter().sum(),
        sessions: u64::from(!view.ids().is_empty()),
    };
    let plan = Plan {
        remove: view.ids().to_vec(),
        drop_session: true,
        ..Plan::default()
    };
    Ok((plan, removed))
}

/// The session's newest id, if `precondition` holds against it; else the `412` to answer.
pub(super) fn check<'v>(
    view: &'v dyn View,
    precondition: &Precondition,
) -> Result<Option<&'v SnapshotId>, StoreError> {
    let newest = view.ids().iter().max();
    match precondition.holds(newest) {
        true => Ok(newest),
        false => Err(failed(view)?),
    }
}

/// A failed precondition, carrying the session's latest snapshot.
fn failed(view: &dyn View) -> Result<StoreError, StoreError> {
    let latest = match view.ids().iter().max() {
        Some(id) => Some(SnapshotInfo {
            id: id.clone(),
            bytes: view.size(id)?,
        }),
        None => None,
    };
    Ok(StoreError::PreconditionFailed { latest })
}

fn sizes(view: &dyn View, ids: &[SnapshotId]) -> Result<Vec<u64>, StoreError> {
    ids.iter().map(|id| view.size(id)).collect()
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::num::NonZeroUsize;

    use bytes::Bytes;
    use time::macros::datetime;

    use super::*;
    use crate::store::Expected;
    use crate::store::name::sha256_hex;

    /// A session held in memory: ids with their content.
    #[derive(Default)]
    struct Memory {
        ids: Vec<SnapshotId>,
        content: BTreeMap<SnapshotId, Bytes>,
        used: Option<OffsetDateTime>,
    }

    impl Memory {
        fn with(snapshots: &[(OffsetDateTime, &str)]) -> Self {
            let mut memory = Memory::default();
            for (at, text) in snapshots {
                let previous = memory.ids.iter().max();
                let id = SnapshotId::next(*at, previous, &sha256_hex(text.as_bytes())).unwrap();
                memory.ids.push(id.clone());
                memory.content.insert(id, Bytes::from(text.to_string()));
            }
            memory
        }
    }

    impl View for Memory {
        fn ids(&self) -> &[SnapshotId] {
            &self.ids
        }
        fn size(&self, id: &SnapshotId) -> Result<u64, StoreError> {
            Ok(self.content.get(id).map_or(0, |c| c.len() as u64))
        }
        fn holds(&self, id: &SnapshotId, sha256: &str) -> Result<bool, StoreError> {
            Ok(self
                .content
                .get(id)
                .is_some_and(|c| sha256_hex(c) == sha256))
        }
        fn latest_content(&self) -> Result<Bytes, StoreError> {
            let newest = self.ids.iter().max().ok_or(StoreError::NotFound)?;
            Ok(self.content[newest].clone())
        }
        fn last_used(&self) -> Option<OffsetDateTime> {
            self.used
        }
    }

    const NOW: OffsetDateTime = datetime!(2026-12-04 12:00 UTC);

    fn rules(last: usize) -> Rules {
        Rules {
            retention: Retention::last(NonZeroUsize::new(last).unwrap()),
            quotas: Quotas::default(),
            usage: Arc::default(),
        }
    }

    fn body(text: &str) -> (Content, String) {
        let bytes = Bytes::from(text.to_string());
        let sha = sha256_hex(&bytes);
        (Content::Bytes(bytes), sha)
    }

    fn if_match(id: &SnapshotId) -> Precondition {
        Precondition {
            if_match: Some(Expected::OneOf(vec![id.to_string()])),
            ..Precondition::default()
        }
    }

    #[test]
    fn a_save_writes_a_newer_id_and_prunes_past_keep_last() {
        let view = Memory::with(&[
            (datetime!(2026-12-04 10:00 UTC), "[1]"),
            (datetime!(2026-12-04 11:00 UTC), "[2]"),
        ]);
        let (plan, outcome) =
            save(&view, body("[3]"), &Precondition::default(), &rules(2), NOW).unwrap();
        let new = plan.write.unwrap();
        assert!(new.id > *view.ids.iter().max().unwrap());
        assert_eq!(plan.remove, vec![view.ids[0].clone()]);
        assert_eq!(outcome.saved.pruned, plan.remove);
        assert_eq!(outcome.pruned_bytes, vec![3]);
        assert!(!outcome.saved.deduplicated);
    }

    #[test]
    fn unchanged_content_writes_nothing_and_marks_the_session_used() {
        let view = Memory::with(&[(datetime!(2026-12-04 10:00 UTC), "[1]")]);
        let (plan, outcome) =
            save(&view, body("[1]"), &Precondition::default(), &rules(2), NOW).unwrap();
        assert!(plan.write.is_none() && plan.remove.is_empty() && plan.mark_used);
        assert!(outcome.saved.deduplicated && outcome.booking.is_none());
        assert_eq!(outcome.saved.info.id, view.ids[0]);
    }

    #[test]
    fn a_failed_precondition_names_the_latest_and_plans_nothing() {
        let view = Memory::with(&[
            (datetime!(2026-12-04 10:00 UTC), "[1]"),
            (datetime!(2026-12-04 11:00 UTC), "[22]"),
        ]);
        let stale = if_match(&view.ids[0]);
        match save(&view, body("[3]"), &stale, &rules(5), NOW) {
            Err(StoreError::PreconditionFailed { latest: Some(info) }) => {
                assert_eq!((info.id, info.bytes), (view.ids[1].clone(), 4));
            }
            other => panic!("{other:?}"),
        }
        let current = if_match(&view.ids[1]);
        assert!(save(&view, body("[3]"), &current, &rules(5), NOW).is_ok());
    }

    #[test]
    fn a_booking_is_taken_back_unless_its_write_commits() {
        let view = Memory::default();
        let rules = rules(5);
        let (_, outcome) = save(&view, body("[1]"), &Precondition::default(), &rules, NOW).unwrap();
        assert_eq!(rules.usage.get().bytes, 3);
        drop(outcome); // a lost race, or a failed commit
        assert_eq!(rules.usage.get().bytes, 0);
        let (_, outcome) = save(&view, body("[1]"), &Precondition::default(), &rules, NOW).unwrap();
        outcome.booking.unwrap().commit(0);
        assert_eq!(rules.usage.get().bytes, 3);
    }

    #[test]
    fn a_quota_refusal_plans_nothing() {
        let view = Memory::with(&[(datetime!(2026-12-04 10:00 UTC), "[1]")]);
        let mut rules = rules(5);
        rules.quotas.session_bytes = Some(5);
        let err = save(&view, body("[22]"), &Precondition::default(), &rules, NOW).unwrap_err();
        assert!(matches!(err, StoreError::OverQuota(_)), "{err:?}");
        assert_eq!(rules.usage.get().bytes, 0);
    }

    #[test]
    fn a_delete_checks_the_snapshot_it_deletes() {
        let view = Memory::with(&[
            (datetime!(2026-12-04 10:00 UTC), "[1]"),
            (datetime!(2026-12-04 11:00 UTC), "[2]"),
        ]);
        let (plan, removed) = delete(&view, &view.ids[0], &if_match(&view.ids[0])).unwrap();
        assert_eq!(plan.remove, vec![view.ids[0].clone()]);
        assert_eq!(
            removed,
            Removed {
                bytes: 3,
                sessions: 0
            }
        );
        let unknown = SnapshotId::parse("20261204T090000.000000Z-0123456789abcdef").unwrap();
        let err = delete(&view, &unknown, &Precondition::default()).unwrap_err();
        assert!(matches!(err, StoreError::NotFound));
        let err = delete(&view, &view.ids[0], &if_match(&view.ids[1])).unwrap_err();
        assert!(matches!(err, StoreError::PreconditionFailed { .. }));
    }

    #[test]
    fn expiry_counts_the_last_use_not_only_the_last_write() {
        let mut view = Memory::with(&[(datetime!(2026-12-01 10:00 UTC), "[1]")]);
        let cutoff = datetime!(2026-12-03 00:00 UTC);
        let (plan, removed) = expire(&view, cutoff).unwrap();
        assert!(plan.drop_session && removed.is_some());
        view.used = Some(datetime!(2026-12-03 08:00 UTC));
        let (plan, removed) = expire(&view, cutoff).unwrap();
        assert!(plan.remove.is_empty() && !plan.drop_session && removed.is_none());
    }
}
