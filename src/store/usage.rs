//! What the data directory holds, for quotas: snapshot bytes and sessions. Counted from disk at
//! start (and again once a minute, so files added or removed by hand are noticed), and kept
//! current by every write and delete in between, so no request walks the tree.
//!
//! [`admit`] is the rule, a pure function; [`Usage`] holds the counts.

use std::sync::Mutex;

use super::Quotas;

/// Snapshot bytes and sessions (directories holding at least one snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub bytes: u64,
    pub sessions: u64,
}

/// What one write does to the counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    pub added: u64,
    /// Bytes that retention will prune right after the write.
    pub removed: u64,
    /// The write gives a session its first snapshot.
    pub new_session: bool,
    /// The session's bytes after the write and its pruning (worked out only when the session
    /// quota is on; 0 otherwise).
    pub session_bytes: u64,
}

/// Which quota a write would pass, as a sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OverQuota(pub String);

/// Whether `change` fits in `quotas` when the directory holds `counts`.
pub fn admit(quotas: &Quotas, counts: Counts, change: &Change) -> Result<(), OverQuota> {
    let over = |what: &str, limit: u64, variable: &str| {
        Err(OverQuota(format!(
            "This snapshot would take {what} past its limit of {limit} (SNAPKEEP_{variable}); \
             the snapshots already kept are intact."
        )))
    };
    if let Some(limit) = quotas.session_bytes
        && change.session_bytes > limit
    {
        return over("the session's snapshots", limit, "MAX_SESSION_BYTES");
    }
    if let Some(limit) = quotas.sessions
        && change.new_session
        && counts.sessions >= limit
    {
        return over("the number of sessions", limit, "MAX_SESSIONS");
    }
    let total_after = (counts.bytes + change.added).saturating_sub(change.removed);
    if let Some(limit) = quotas.total_bytes
        && total_after > limit
        && change.added > change.removed
    {
        return over("all snapshots together", limit, "MAX_TOTAL_BYTES");
    }
    Ok(())
}

/// The current counts, shared by all requests.
#[derive(Debug, Default)]
pub struct Usage {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    counts: Counts,
    /// Bumped by every booking, so a recount can tell whether one happened while it scanned.
    generation: u64,
}

impl Usage {
    pub fn get(&self) -> Counts {
        self.lock().counts
    }

    /// The generation to pass to [`Usage::set_if_unchanged`] once a scan of the disk is done.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Installs `counts` from a scan of the disk that started at `generation`, unless a write
    /// or delete was booked meanwhile (then the scan may have missed it, and the next recount
    /// tries again). Returns whether it did.
    pub fn set_if_unchanged(&self, generation: u64, counts: Counts) -> bool {
        let mut state = self.lock();
        let unchanged = state.generation == generation;
        if unchanged {
            state.counts = counts;
        }
        unchanged
    }

    /// Checks `change` against `quotas` and, when it fits, books it: one critical section, so
    /// two sessions writing at once cannot both squeeze under the total.
    pub fn admit(&self, quotas: &Quotas, change: &Change) -> Result<(), OverQuota> {
        let mut state = self.lock();
        admit(quotas, state.counts, change)?;
        state.book(|c| {
            c.bytes = (c.bytes + change.added).saturating_sub(change.removed);
            c.sessions += u64::from(change.new_session);
        });
        Ok(())
    }

    /// Books bytes removed by a delete, and sessions that are gone.
    pub fn remove(&self, bytes: u64, sessions: u64) {
        self.lock().book(|c| {
            c.bytes = c.bytes.saturating_sub(bytes);
            c.sessions = c.sessions.saturating_sub(sessions);
        });
    }

    /// Books bytes again that an admitted change meant to remove but could not.
    pub fn keep(&self, bytes: u64) {
        self.lock().book(|c| c.bytes += bytes);
    }

    /// Takes back an admitted change whose write failed.
    pub fn undo(&self, change: &Change) {
        self.lock().book(|c| {
            c.bytes = (c.bytes + change.removed).saturating_sub(change.added);
            c.sessions = c.sessions.saturating_sub(u64::from(change.new_session));
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("usage lock poisoned")
    }
}

impl State {
    fn book(&mut self, change: impl FnOnce(&mut Counts)) {
        change(&mut self.counts);
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(session_bytes: Option<u64>, sessions: Option<u64>, total: Option<u64>) -> Quotas {
        Quotas {
            session_bytes,
            sessions,
            total_bytes: total,
        }
    }

    #[test]
    fn no_quotas_admit_anything() {
        let change = Change {
            added: u64::MAX / 2,
            new_session: true,
            session_bytes: u64::MAX / 2,
            ..Default::default()
        };
        assert_eq!(
            admit(
                &Quotas::default(),
                Counts {
                    bytes: 1,
                    sessions: 1 << 40
                },
                &change
            ),
            Ok(())
        );
    }

    #[test]
    fn the_session_quota_counts_what_is_left_after_pruning() {
        let q = quotas(Some(100), None, None);
        let fits = Change {
            added: 60,
            removed: 50,
            session_bytes: 100,
            ..Default::default()
        };
        assert_eq!(admit(&q, Counts::default(), &fits), Ok(()));
        let over = Change {
            session_bytes: 101,
            ..fits
        };
        let err = admit(&q, Counts::default(), &over).unwrap_err();
        assert!(err.0.contains("SNAPKEEP_MAX_SESSION_BYTES"), "{err}");
    }

    #[test]
    fn the_session_count_limits_only_new_sessions() {
        let q = quotas(None, Some(2), None);
        let full = Counts {
            bytes: 0,
            sessions: 2,
        };
        let new = Change {
            added: 1,
            new_session: true,
            session_bytes: 1,
            ..Default::default()
        };
        assert!(
            admit(&q, full, &new)
                .unwrap_err()
                .0
                .contains("MAX_SESSIONS")
        );
        let existing = Change {
            new_session: false,
            ..new
        };
        assert_eq!(admit(&q, full, &existing), Ok(()));
        assert_eq!(
            admit(
                &q,
                Counts {
                    bytes: 0,
                    sessions: 1
                },
                &new
            ),
            Ok(())
        );
    }

    #[test]
    fn the_total_counts_the_net_change_and_never_blocks_shrinking() {
        let q = quotas(None, None, Some(1000));
        let counts = Counts {
            bytes: 990,
            sessions: 1,
        };
        let grow = Change {
            added: 20,
            removed: 5,
            session_bytes: 20,
            ..Default::default()
        };
        assert!(
            admit(&q, counts, &grow)
                .unwrap_err()
                .0
                .contains("MAX_TOTAL_BYTES")
        );
        let net_ten = Change {
            added: 20,
            removed: 10,
            session_bytes: 20,
            ..Default::default()
        };
        assert_eq!(admit(&q, counts, &net_ten), Ok(()));
        // Over the limit already (files copied in by hand): a write that frees space still goes.
        let over = Counts {
            bytes: 5000,
            sessions: 1,
        };
        let shrink = Change {
            added: 10,
            removed: 30,
            session_bytes: 10,
            ..Default::default()
        };
        assert_eq!(admit(&q, over, &shrink), Ok(()));
    }

    #[test]
    fn admitted_changes_are_booked_and_can_be_undone() {
        let usage = Usage::default();
        let q = quotas(None, Some(1), Some(100));
        let first = Change {
            added: 60,
            new_session: true,
            session_bytes: 60,
            ..Default::default()
        };
        usage.admit(&q, &first).unwrap();
        assert_eq!(
            usage.get(),
            Counts {
                bytes: 60,
                sessions: 1
            }
        );
        let second = Change {
            added: 60,
            new_session: false,
            session_bytes: 120,
            ..Default::default()
        };
        assert!(usage.admit(&q, &second).is_err());
        assert_eq!(
            usage.get(),
            Counts {
                bytes: 60,
                sessions: 1
            },
            "a refusal books nothing"
        );
        usage.undo(&first);
        assert_eq!(usage.get(), Counts::default());
    }

    #[test]
    fn a_recount_that_raced_a_booking_is_not_installed() {
        let usage = Usage::default();
        let scan_started = usage.generation();
        usage.keep(10); // a write booked while the disk was being scanned
        let stale_scan = Counts {
            bytes: 0,
            sessions: 0,
        };
        assert!(!usage.set_if_unchanged(scan_started, stale_scan));
        assert_eq!(usage.get().bytes, 10);
        let fresh_scan = Counts {
            bytes: 10,
            sessions: 1,
        };
        assert!(usage.set_if_unchanged(usage.generation(), fresh_scan));
        assert_eq!(usage.get(), fresh_scan);
    }
}
