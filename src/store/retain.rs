//! Which snapshots a retention policy keeps: a pure function of the session's snapshot ids.
//! Time enters only through the ids themselves (their creation times), never through a clock,
//! so the rule is deterministic and tested without a disk.

use std::num::NonZeroUsize;

use super::name::SnapshotId;

/// How much history each session keeps. A snapshot kept by any rule stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest `last` snapshots are kept (`SNAPKEEP_RETAIN_LAST`). Never zero, so the newest
    /// snapshot always survives.
    pub last: NonZeroUsize,
    /// The newest snapshot of each of the last N hours, days, … that have one (restic's
    /// `--keep-hourly` and friends); 0: the tier is off.
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
    pub yearly: usize,
    /// Every snapshot younger than this, measured back from the session's newest snapshot (not
    /// from now, so a session that stops syncing is not wiped).
    pub within: Option<std::time::Duration>,
}

impl Retention {
    /// Only the newest `last` snapshots, no tiers.
    pub fn last(last: NonZeroUsize) -> Self {
        Self {
            last,
            hourly: 0,
            daily: 0,
            weekly: 0,
            monthly: 0,
            yearly: 0,
            within: None,
        }
    }
}

/// The ids to delete from `ids` (in any order) under `policy`, oldest first.
pub fn to_prune(ids: &[SnapshotId], policy: &Retention) -> Vec<SnapshotId> {
    let mut sorted: Vec<&SnapshotId> = ids.iter().collect();
    sorted.sort_unstable_by(|a, b| b.cmp(a)); // newest first
    sorted.dedup();
    let mut pruned: Vec<SnapshotId> = sorted
        .into_iter()
        .skip(policy.last.get())
        .cloned()
        .collect();
    pruned.reverse();
    pruned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(second: u32) -> SnapshotId {
        SnapshotId::parse(&format!(
            "20261123T1853{second:02}.000000Z-0123456789abcdef"
        ))
        .unwrap()
    }

    fn keep(n: usize) -> Retention {
        Retention::last(NonZeroUsize::new(n).unwrap())
    }

    #[test]
    fn keeps_the_newest_n_and_prunes_the_rest_oldest_first() {
        let ids: Vec<_> = (0..5).map(id).collect();
        assert_eq!(to_prune(&ids, &keep(2)), vec![id(0), id(1), id(2)]);
    }

    #[test]
    fn input_order_does_not_matter() {
        let ids = vec![id(3), id(0), id(4), id(1), id(2)];
        assert_eq!(to_prune(&ids, &keep(3)), vec![id(0), id(1)]);
    }

    #[test]
    fn nothing_is_pruned_at_or_under_the_limit() {
        let ids: Vec<_> = (0..3).map(id).collect();
        assert!(to_prune(&ids, &keep(3)).is_empty());
        assert!(to_prune(&ids, &keep(10)).is_empty());
        assert!(to_prune(&[], &keep(1)).is_empty());
    }

    #[test]
    fn the_newest_always_survives() {
        let ids: Vec<_> = (0..7).map(id).collect();
        let pruned = to_prune(&ids, &keep(1));
        assert_eq!(pruned.len(), 6);
        assert!(!pruned.contains(&id(6)));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A set of distinct ids, in random order.
    fn ids() -> impl Strategy<Value = Vec<SnapshotId>> {
        prop::collection::btree_set((0u32..1_000_000, "[0-9a-f]{16}"), 0..80).prop_map(|set| {
            set.into_iter()
                .map(|(n, digest)| {
                    let (day, rest) = (n / 86_400 % 28 + 1, n % 86_400);
                    let text = format!(
                        "202611{day:02}T{:02}{:02}{:02}.000000Z-{digest}",
                        rest / 3600,
                        rest / 60 % 60,
                        rest % 60
                    );
                    SnapshotId::parse(&text).unwrap()
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .rev()
                .collect()
        })
    }

    proptest! {
        #[test]
        fn keeps_exactly_the_newest_n(ids in ids(), n in 1usize..20) {
            let policy = Retention::last(NonZeroUsize::new(n).unwrap());
            let pruned = to_prune(&ids, &policy);
            let mut sorted = ids.clone();
            sorted.sort();
            let kept: Vec<_> = sorted.iter().filter(|id| !pruned.contains(id)).collect();

            prop_assert_eq!(kept.len(), ids.len().min(n));
            prop_assert_eq!(pruned.len() + kept.len(), ids.len());
            if let Some(newest) = sorted.last() {
                prop_assert!(!pruned.contains(newest), "the newest is never pruned");
            }
            // Everything pruned is older than everything kept, and listed oldest first.
            if let (Some(last_pruned), Some(first_kept)) = (pruned.last(), kept.first()) {
                prop_assert!(last_pruned < *first_kept);
            }
            prop_assert!(pruned.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
