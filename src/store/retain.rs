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

/// A rule that keeps a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The session's newest snapshot, which nothing ever removes.
    Newest,
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Within,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Newest => "newest",
            Reason::Last => "last",
            Reason::Hourly => "hourly",
            Reason::Daily => "daily",
            Reason::Weekly => "weekly",
            Reason::Monthly => "monthly",
            Reason::Yearly => "yearly",
            Reason::Within => "within",
        }
    }
}

/// What the policy does with one snapshot: the rules that keep it (none: it is pruned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: SnapshotId,
    pub kept_by: Vec<Reason>,
}

/// The decision for every snapshot in `ids` (any order, duplicates ignored), newest first.
///
/// restic's semantics: walking from the newest, a tier (hourly, daily, …) keeps a snapshot
/// when it is the newest of a period (hour, day, ISO week, month, year) that no kept snapshot
/// of that tier has covered yet, until the tier has kept its N; the oldest snapshot is kept
/// too while a tier has counts left. `within` keeps everything created strictly within that
/// long of the session's newest snapshot. Periods are in UTC (restic uses local time).
pub fn plan(ids: &[SnapshotId], policy: &Retention) -> Vec<Decision> {
    let mut sorted: Vec<&SnapshotId> = ids.iter().collect();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    let Some(newest) = sorted.first().map(|id| id.created_at()) else {
        return Vec::new();
    };
    let within_from = policy
        .within
        .and_then(|d| time::Duration::try_from(d).ok())
        .map(|d| {
            newest
                .checked_sub(d)
                .unwrap_or(time::PrimitiveDateTime::MIN.assume_utc())
        });
    let mut tiers = [
        Tier::new(Reason::Hourly, policy.hourly),
        Tier::new(Reason::Daily, policy.daily),
        Tier::new(Reason::Weekly, policy.weekly),
        Tier::new(Reason::Monthly, policy.monthly),
        Tier::new(Reason::Yearly, policy.yearly),
    ];
    let oldest = sorted.len() - 1;
    sorted
        .into_iter()
        .enumerate()
        .map(|(rank, id)| {
            let created = id.created_at();
            let mut kept_by = Vec::new();
            if rank == 0 {
                kept_by.push(Reason::Newest);
            }
            if rank < policy.last.get() {
                kept_by.push(Reason::Last);
            }
            let is_oldest = rank == oldest;
            kept_by.extend(
                tiers
                    .iter_mut()
                    .filter_map(|tier| tier.keeps(created, is_oldest)),
            );
            // Strictly within, as restic counts it.
            if within_from.is_some_and(|from| created > from) {
                kept_by.push(Reason::Within);
            }
            Decision {
                id: id.clone(),
                kept_by,
            }
        })
        .collect()
}

/// The ids to delete from `ids` (in any order) under `policy`, oldest first.
pub fn to_prune(ids: &[SnapshotId], policy: &Retention) -> Vec<SnapshotId> {
    let mut pruned: Vec<SnapshotId> = plan(ids, policy)
        .into_iter()
        .filter(|decision| decision.kept_by.is_empty())
        .map(|decision| decision.id)
        .collect();
    pruned.reverse();
    pruned
}

/// One periodic tier while walking from the newest snapshot to the oldest.
struct Tier {
    reason: Reason,
    left: usize,
    last_period: Option<(i32, u32)>,
}

impl Tier {
    fn new(reason: Reason, count: usize) -> Self {
        Self {
            reason,
            left: count,
            last_period: None,
        }
    }

    /// Whether this tier keeps a snapshot created at `t` (called newest first). As in restic,
    /// the oldest snapshot is also kept while the tier has counts left, even in a period
    /// already covered: that keeps the longest history the counts allow.
    fn keeps(&mut self, t: time::OffsetDateTime, is_oldest: bool) -> Option<Reason> {
        let period = self.period(t);
        if self.left == 0 || (self.last_period == Some(period) && !is_oldest) {
            return None;
        }
        self.last_period = Some(period);
        self.left -= 1;
        Some(self.reason)
    }

    /// The period `t` falls in, as (year, index within the year), in UTC.
    fn period(&self, t: time::OffsetDateTime) -> (i32, u32) {
        let day = u32::from(t.ordinal());
        match self.reason {
            Reason::Hourly => (t.year(), day * 24 + u32::from(t.hour())),
            Reason::Daily => (t.year(), day),
            Reason::Weekly => {
                let (year, week, _) = t.to_iso_week_date();
                (year, u32::from(week))
            }
            Reason::Monthly => (t.year(), u32::from(u8::from(t.month()))),
            _ => (t.year(), 0),
        }
    }
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

    fn tiered() -> impl Strategy<Value = Retention> {
        (
            1usize..6,
            0usize..4,
            0usize..4,
            0usize..4,
            0usize..4,
            0usize..4,
            prop::option::of(0u64..3_000_000),
        )
            .prop_map(
                |(last, hourly, daily, weekly, monthly, yearly, within)| Retention {
                    last: NonZeroUsize::new(last).unwrap(),
                    hourly,
                    daily,
                    weekly,
                    monthly,
                    yearly,
                    within: within.map(std::time::Duration::from_secs),
                },
            )
    }

    proptest! {
        #[test]
        fn tiers_keep_the_newest_and_only_ever_add(ids in ids(), policy in tiered()) {
            let decisions = plan(&ids, &policy);
            prop_assert_eq!(decisions.len(), ids.len());
            if let Some(first) = decisions.first() {
                prop_assert!(first.kept_by.contains(&Reason::Newest));
                prop_assert_eq!(&first.id, ids.iter().max().unwrap());
            }
            // Everything `last` alone keeps is still kept with the tiers on top.
            let last_only = to_prune(&ids, &Retention::last(policy.last));
            let with_tiers = to_prune(&ids, &policy);
            prop_assert!(with_tiers.iter().all(|id| last_only.contains(id)));
            // A tier never keeps more snapshots than its count.
            for (reason, n) in [(Reason::Hourly, policy.hourly), (Reason::Daily, policy.daily),
                (Reason::Weekly, policy.weekly), (Reason::Monthly, policy.monthly),
                (Reason::Yearly, policy.yearly)] {
                let count = decisions.iter().filter(|d| d.kept_by.contains(&reason)).count();
                prop_assert!(count <= n, "{:?} kept {} > {}", reason, count, n);
            }
        }

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

#[cfg(test)]
mod tiers {
    use super::*;
    use time::macros::datetime;
    use time::{Duration, OffsetDateTime};

    fn at(t: OffsetDateTime) -> SnapshotId {
        let digest = format!("{:064x}", t.unix_timestamp_nanos());
        SnapshotId::next(t, None, &digest).unwrap()
    }

    fn policy(last: usize) -> Retention {
        Retention::last(NonZeroUsize::new(last).unwrap())
    }

    /// The snapshots kept, oldest first, as their times.
    fn kept(ids: &[SnapshotId], policy: &Retention) -> Vec<OffsetDateTime> {
        let mut kept: Vec<_> = plan(ids, policy)
            .into_iter()
            .filter(|d| !d.kept_by.is_empty())
            .map(|d| d.id.created_at())
            .collect();
        kept.reverse();
        kept
    }

    /// Every `step` from `start`, `n` times.
    fn series(start: OffsetDateTime, step: Duration, n: i32) -> Vec<SnapshotId> {
        (0..n).map(|i| at(start + step * i)).collect()
    }

    #[test]
    fn hourly_keeps_the_newest_of_each_of_the_last_n_hours() {
        // Every 10 minutes from 10:00 to 14:50.
        let ids = series(datetime!(2026-11-23 10:00 UTC), Duration::minutes(10), 30);
        let p = Retention {
            hourly: 3,
            ..policy(1)
        };
        assert_eq!(
            kept(&ids, &p),
            vec![
                datetime!(2026-11-23 12:50 UTC),
                datetime!(2026-11-23 13:50 UTC),
                datetime!(2026-11-23 14:50 UTC),
            ]
        );
    }

    #[test]
    fn periods_without_snapshots_do_not_count() {
        // Snapshots on the 1st, 5th and 20th: daily=2 keeps the 20th and the 5th.
        let ids = vec![
            at(datetime!(2026-11-01 09:00 UTC)),
            at(datetime!(2026-11-05 09:00 UTC)),
            at(datetime!(2026-11-20 09:00 UTC)),
        ];
        let p = Retention {
            daily: 2,
            ..policy(1)
        };
        assert_eq!(
            kept(&ids, &p),
            vec![
                datetime!(2026-11-05 09:00 UTC),
                datetime!(2026-11-20 09:00 UTC)
            ]
        );
    }

    #[test]
    fn autosave_every_minute_with_a_week_of_dailies_and_a_year_of_monthlies() {
        // The README's recipe, over 400 days of one snapshot every 6 hours (a stand-in for
        // every minute: the tiers only look at the newest of each period).
        let start = datetime!(2025-10-20 00:00 UTC);
        let ids = series(start, Duration::hours(6), 400 * 4);
        let p = Retention {
            daily: 7,
            monthly: 12,
            ..policy(10)
        };
        let decisions = plan(&ids, &p);
        let count = |reason| {
            decisions
                .iter()
                .filter(|d| d.kept_by.contains(&reason))
                .count()
        };
        assert_eq!(count(Reason::Last), 10);
        assert_eq!(count(Reason::Daily), 7);
        assert_eq!(count(Reason::Monthly), 12);
        // The newest is 2026-11-23 18:00. `last` covers the newest 2.5 days, so dailies add
        // 4 more days (20th to 17th) and monthlies 11 more months (back to December 2025).
        let kept: Vec<_> = decisions.iter().filter(|d| !d.kept_by.is_empty()).collect();
        assert_eq!(kept.len(), 10 + 4 + 11);
        let oldest = kept.last().unwrap();
        assert_eq!(oldest.id.created_at(), datetime!(2025-12-31 18:00 UTC));
        assert_eq!(oldest.kept_by, vec![Reason::Monthly]);
    }

    #[test]
    fn weekly_uses_iso_weeks_and_yearly_years() {
        // 2026-01-01 is a Thursday in ISO week 1 of 2026; 2025-12-29 (Monday) is in it too.
        let ids = vec![
            at(datetime!(2025-12-28 12:00 UTC)), // Sunday, ISO week 52 of 2025
            at(datetime!(2025-12-29 12:00 UTC)), // Monday, ISO week 1 of 2026
            at(datetime!(2026-01-02 12:00 UTC)), // Friday, ISO week 1 of 2026
        ];
        let weekly = Retention {
            weekly: 5,
            ..policy(1)
        };
        assert_eq!(
            kept(&ids, &weekly),
            vec![
                datetime!(2025-12-28 12:00 UTC),
                datetime!(2026-01-02 12:00 UTC)
            ]
        );
        // 2026 and 2025 each keep their newest; the oldest (also 2025) stays too, because the
        // tier still has counts left when the walk reaches it (restic's rule).
        let yearly = Retention {
            yearly: 5,
            ..policy(1)
        };
        assert_eq!(
            kept(&ids, &yearly),
            vec![
                datetime!(2025-12-28 12:00 UTC),
                datetime!(2025-12-29 12:00 UTC),
                datetime!(2026-01-02 12:00 UTC)
            ]
        );
    }

    #[test]
    fn a_tier_with_counts_left_also_keeps_the_oldest_snapshot_as_restic_does() {
        let ids = vec![
            at(datetime!(2026-11-01 09:00 UTC)),
            at(datetime!(2026-11-01 10:00 UTC)),
            at(datetime!(2026-11-02 09:00 UTC)),
            at(datetime!(2026-11-02 10:00 UTC)),
        ];
        let p = Retention {
            daily: 7,
            ..policy(1)
        };
        assert_eq!(
            kept(&ids, &p),
            vec![
                datetime!(2026-11-01 09:00 UTC),
                datetime!(2026-11-01 10:00 UTC),
                datetime!(2026-11-02 10:00 UTC)
            ]
        );
        // With the tier used up before the walk gets there, the oldest goes like any other.
        let used_up = Retention {
            daily: 1,
            ..policy(1)
        };
        assert_eq!(kept(&ids, &used_up), vec![datetime!(2026-11-02 10:00 UTC)]);
    }

    #[test]
    fn within_counts_back_from_the_newest_snapshot_so_a_quiet_session_keeps_its_history() {
        // Daily snapshots for a month, then nothing for a year: `within 7d` still keeps the
        // last week of that month, measured from the session's newest snapshot, not from now.
        let ids = series(datetime!(2025-06-01 08:00 UTC), Duration::days(1), 30);
        let p = Retention {
            within: Some(std::time::Duration::from_secs(7 * 86_400)),
            ..policy(1)
        };
        let kept = kept(&ids, &p);
        // Strictly within 7 days of the newest (June 30): June 24 to 30; June 23 08:00 is
        // exactly 7 days older and, as in restic, not within.
        assert_eq!(kept.len(), 7);
        assert_eq!(kept[0], datetime!(2025-06-24 08:00 UTC));
    }

    #[test]
    fn the_rules_add_up_and_each_kept_snapshot_says_why() {
        let ids = series(datetime!(2026-11-20 00:00 UTC), Duration::hours(12), 6);
        let p = Retention {
            daily: 2,
            ..policy(2)
        };
        let reasons: Vec<Vec<Reason>> = plan(&ids, &p).into_iter().map(|d| d.kept_by).collect();
        assert_eq!(
            reasons,
            vec![
                vec![Reason::Newest, Reason::Last, Reason::Daily],
                vec![Reason::Last],
                vec![Reason::Daily],
                vec![],
                vec![],
                vec![],
            ]
        );
    }
}
