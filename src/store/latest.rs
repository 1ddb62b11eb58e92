//! Each session's newest small snapshot, kept in memory for the hot read path: with it,
//! `GET {base}/{session}/latest` costs two `stat`s instead of a directory listing, an open, a
//! read and a SHA-256 on the blocking pool.
//!
//! It stays right when files are added, removed or edited by hand while the server runs. Every
//! read compares the session directory's and the snapshot file's [`Stamp`] (inode, size, and
//! modification and change times) with what they were when the entry was read from disk; any
//! difference sends the read down the ordinary path, which reads the directory afresh.
//!
//! One trap remains: a filesystem stamps times with a coarse clock, so a change made in the
//! same tick as an entry's read would leave every time as it was. An entry is therefore kept
//! only when it was read after the clock had clearly moved past its stamps ([`settled`]); any
//! later change then carries a later time. (A wall clock stepped back by more than that margin
//! could defeat this; the next change after the clock catches up is seen again.)
//!
//! The pieces here are pure: the store takes the stamps (see `Disk::stamp`) and decides.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::SnapshotInfo;
use super::name::SessionId;

/// Only snapshots up to this size are kept.
pub const KEEP_UP_TO: u64 = 64 * 1024;

/// All entries together stay under this many bytes of snapshot content.
const BUDGET: usize = 8 * 1024 * 1024;

/// How far the clock must be past a stamp before a read can be trusted to tell it from any
/// later change: local filesystems stamp with the kernel's tick (1-10 ms), so this leaves a
/// wide margin.
const FINE_MARGIN: Duration = Duration::from_millis(100);

/// The same for a filesystem whose times have no fraction of a second (whole seconds, or the
/// two seconds of FAT).
const COARSE_MARGIN: Duration = Duration::from_secs(3);

/// What `stat` says of a file or directory that changes whenever its content (a directory's:
/// its entries) or its inode does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    /// Modification and change times, in nanoseconds since the epoch.
    modified: i128,
    changed: i128,
}

impl Stamp {
    pub fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.size(),
            modified: nanos(meta.mtime(), meta.mtime_nsec()),
            changed: nanos(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

fn nanos(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// Whether content read at `read_at` (taken before the stamps were) is sure to be told apart
/// from any later change of these stamps: the clock had moved past each of their times by
/// more than the filesystem's granularity.
pub fn settled(stamps: &[Stamp], read_at: SystemTime) -> bool {
    let Ok(now) = read_at.duration_since(UNIX_EPOCH) else {
        return false;
    };
    let now = now.as_nanos() as i128;
    let times = || stamps.iter().flat_map(|s| [s.modified, s.changed]);
    let whole_seconds = times().any(|t| t % 1_000_000_000 == 0);
    let margin = if whole_seconds {
        COARSE_MARGIN
    } else {
        FINE_MARGIN
    };
    times().all(|t| now - t >= margin.as_nanos() as i128)
}

/// One session's newest snapshot as it was read, with the stamps that must still hold.
#[derive(Debug)]
pub struct Entry {
    pub info: SnapshotInfo,
    pub content: Bytes,
    /// The session directory's stamp when it was listed.
    pub dir: Stamp,
    /// The snapshot file's stamp when it was read.
    pub file: Stamp,
}

impl Entry {
    /// Whether the directory and the file are still as they were read (`None`: gone).
    pub fn holds(&self, dir: Option<Stamp>, file: Option<Stamp>) -> bool {
        dir == Some(self.dir) && file == Some(self.file)
    }
}

/// The entries, by session. A std `Mutex`: it is held for a map lookup, never across an await.
#[derive(Debug, Default)]
pub struct LatestCache {
    map: Mutex<Map>,
    /// Reads answered from an entry.
    hits: AtomicU64,
}

#[derive(Debug, Default)]
struct Map {
    entries: HashMap<SessionId, Arc<Entry>>,
    /// Content bytes of all entries.
    bytes: usize,
}

impl LatestCache {
    /// The entry kept for `session`, to be checked with [`Entry::holds`] before it is used.
    pub fn get(&self, session: &SessionId) -> Option<Arc<Entry>> {
        self.lock().entries.get(session).cloned()
    }

    /// Counts a read answered from an entry.
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads answered from an entry so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Keeps `entry` as the session's newest, in place of any older one. Makes room by dropping
    /// other sessions' entries when the budget is spent.
    pub fn keep(&self, session: &SessionId, entry: Entry) {
        let size = entry.content.len();
        if size as u64 > KEEP_UP_TO {
            return;
        }
        let mut map = self.lock();
        if let Some(old) = map.entries.remove(session) {
            map.bytes -= old.content.len();
        }
        while map.bytes + size > BUDGET {
            let Some(victim) = map.entries.keys().next().cloned() else {
                break;
            };
            let old = map.entries.remove(&victim).expect("the key was just seen");
            map.bytes -= old.content.len();
        }
        map.bytes += size;
        map.entries.insert(session.clone(), Arc::new(entry));
    }

    /// Drops `stale` (found not to hold), unless a newer entry has taken its place meanwhile.
    pub fn forget(&self, session: &SessionId, stale: &Arc<Entry>) {
        let mut map = self.lock();
        if map
            .entries
            .get(session)
            .is_some_and(|e| Arc::ptr_eq(e, stale))
        {
            map.entries.remove(session);
            map.bytes -= stale.content.len();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().expect("latest cache lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::name::SnapshotId;

    const SECOND: i128 = 1_000_000_000;

    fn stamp(modified: i128, changed: i128) -> Stamp {
        Stamp {
            dev: 1,
            ino: 2,
            len: 3,
            modified,
            changed,
        }
    }

    fn at(nanos: i128) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    }

    #[test]
    fn a_read_in_the_same_tick_as_a_change_is_not_settled() {
        let t = 1_700_000_000 * SECOND + 123_456_789;
        let dir = stamp(t, t);
        let file = stamp(t - SECOND, t - SECOND);
        assert!(!settled(&[dir, file], at(t)));
        assert!(
            !settled(&[dir, file], at(t + 4_000_000)),
            "one 4 ms tick later"
        );
        assert!(settled(&[dir, file], at(t + SECOND)));
    }

    #[test]
    fn every_time_counts_the_change_time_too() {
        let t = 1_700_000_000 * SECOND + 5;
        // Modified long ago, but its inode changed just now (a rename, a chmod, `touch -d`).
        let file = stamp(t - 3600 * SECOND, t);
        assert!(!settled(&[file], at(t + 50_000_000)));
        assert!(settled(&[file], at(t + 200_000_000)));
    }

    #[test]
    fn whole_second_times_need_a_wider_margin() {
        let t = 1_700_000_000 * SECOND; // no fraction: a whole-second (or FAT) filesystem
        let file = stamp(t, t);
        assert!(!settled(&[file], at(t + SECOND)));
        assert!(!settled(&[file], at(t + 2 * SECOND + SECOND / 2)));
        assert!(settled(&[file], at(t + 3 * SECOND)));
    }

    #[test]
    fn a_clock_behind_the_stamps_is_never_settled() {
        let t = 1_700_000_000 * SECOND + 7;
        assert!(!settled(&[stamp(t, t)], at(t - SECOND)));
    }

    #[test]
    fn an_entry_holds_only_while_both_stamps_are_unchanged() {
        let entry = entry_of(100);
        let (dir, file) = (entry.dir, entry.file);
        assert!(entry.holds(Some(dir), Some(file)));
        assert!(!entry.holds(None, Some(file)), "session directory gone");
        assert!(!entry.holds(Some(dir), None), "snapshot file gone");
        let touched = Stamp {
            changed: file.changed + 1,
            ..file
        };
        assert!(!entry.holds(Some(dir), Some(touched)));
        let replaced = Stamp {
            ino: file.ino + 1,
            ..file
        };
        assert!(!entry.holds(Some(dir), Some(replaced)));
        let listed = Stamp {
            modified: dir.modified + 1,
            ..dir
        };
        assert!(!entry.holds(Some(listed), Some(file)));
    }

    #[test]
    fn the_budget_bounds_what_is_kept_and_forget_spares_a_newer_entry() {
        let cache = LatestCache::default();
        let sessions: Vec<SessionId> = (0..200)
            .map(|i| SessionId::parse(&format!("s{i}")).unwrap())
            .collect();
        for session in &sessions {
            cache.keep(session, entry_of(KEEP_UP_TO as usize));
        }
        let kept = sessions.iter().filter(|s| cache.get(s).is_some()).count();
        assert_eq!(kept, BUDGET / KEEP_UP_TO as usize);
        assert_eq!(cache.lock().bytes, kept * KEEP_UP_TO as usize);

        // Too large to keep at all.
        cache.keep(&sessions[0], entry_of(KEEP_UP_TO as usize + 1));
        assert!(
            cache
                .get(&sessions[0])
                .is_none_or(|e| e.content.len() <= KEEP_UP_TO as usize)
        );

        let s = &sessions[199];
        let first = cache.get(s).expect("the last one kept is there");
        cache.keep(s, entry_of(10));
        cache.forget(s, &first);
        assert_eq!(
            cache.get(s).map(|e| e.content.len()),
            Some(10),
            "newer one stays"
        );
        let second = cache.get(s).unwrap();
        cache.forget(s, &second);
        assert!(cache.get(s).is_none());
        let total: usize = cache.lock().entries.values().map(|e| e.content.len()).sum();
        assert_eq!(cache.lock().bytes, total);
    }

    fn entry_of(size: usize) -> Entry {
        Entry {
            info: SnapshotInfo {
                id: SnapshotId::parse("20261124T040000.000000Z-0123456789abcdef").unwrap(),
                bytes: size as u64,
            },
            content: Bytes::from(vec![b' '; size]),
            dir: stamp(1, 2),
            file: stamp(3, 4),
        }
    }
}
