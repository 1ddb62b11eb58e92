//! Each session's newest small snapshot, kept in memory for the hot read path: with it,
//! `GET {base}/{session}/latest` costs one map lookup and one empty read of the kernel's change
//! queue, instead of a directory listing, an open, a read and a SHA-256 on the blocking pool.
//!
//! It stays right when files are added, removed or edited by hand while the server runs. Before
//! a latest is read from disk, the session directory and then the file are watched
//! ([`Watches`]); the first change to either ends the watch and drops the entry. An entry is
//! kept only if its watches are still unbroken once it has been read ([`Ticket`]), so a change
//! made during the read is not missed either. The data directory itself is watched for being
//! moved or removed (an operator swapping in a copy), which drops every entry. Every lookup
//! first takes in the changes the
//! kernel has queued, and the kernel queues a change before the system call that made it
//! returns: whatever was done to the disk before a read began is seen by that read.
//!
//! Where there are no watches (not Linux, or the kernel's limit is reached), nothing is kept.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::watch::{Ended, Kind, Watch, Watches};
use crate::store::SnapshotInfo;
use crate::store::name::SessionId;

/// Only snapshots up to this size are kept.
pub const KEEP_UP_TO: u64 = 64 * 1024;

/// All entries together stay under this many bytes of snapshot content.
const BUDGET: usize = 8 * 1024 * 1024;

/// At most this many sessions are kept, so at most twice as many watches are held (the
/// kernel's limit is per user, and on older systems 8192).
const MAX_ENTRIES: usize = 2048;

/// One session's newest snapshot as it was read.
#[derive(Debug)]
pub struct Entry {
    pub info: SnapshotInfo,
    pub content: Bytes,
}

/// The entries, by session. A std `Mutex`: it is held for a map lookup and a read of the
/// change queue, never across an await.
#[derive(Debug, Default)]
pub struct LatestCache {
    state: Mutex<State>,
    watches: Watches,
    /// Reads answered from an entry.
    hits: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<SessionId, Kept>,
    /// Content bytes of all entries.
    bytes: usize,
    /// Every watch something holds. The kernel has one watch per file or directory, so the
    /// reads of one session share them: they are counted, and a record stays until its last
    /// holder lets go, ended or not.
    watched: HashMap<Watch, Watched>,
    /// The data directory's own watch (moved or removed), while it has not ended.
    root: Option<Watch>,
}

#[derive(Debug)]
struct Watched {
    session: SessionId,
    /// Tickets and entries holding it.
    holders: usize,
    /// It saw a change (or may have: the queue overflowed); the kernel has let go of it.
    ended: bool,
}

#[derive(Debug)]
struct Kept {
    entry: Arc<Entry>,
    pair: Pair,
}

/// A session directory's watch, and its latest file's once that is placed.
#[derive(Debug, Clone, Copy)]
struct Pair {
    dir: Watch,
    file: Option<Watch>,
}

/// The watches placed before a read of a session's latest: what is read is kept only if
/// neither has ended by then ([`Ticket::keep`]). Dropped unused, it lets go of them.
#[derive(Debug)]
pub struct Ticket {
    cache: Arc<LatestCache>,
    session: SessionId,
    /// The data directory's watch when the ticket was made: it must still be on.
    root: Watch,
    pair: Pair,
    /// Still this ticket's to let go of, not handed to a kept entry.
    held: bool,
}

impl LatestCache {
    /// The entry kept for `session`, if nothing has changed in its directory or file since
    /// it was read.
    pub fn get(&self, session: &SessionId) -> Option<Arc<Entry>> {
        let mut state = self.lock();
        self.take_changes(&mut state);
        let entry = state.entries.get(session)?.entry.clone();
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry)
    }

    /// Reads answered from an entry so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Starts watching a session's directory, before it is listed; `None`: it cannot be
    /// watched, and what is read will not be kept.
    pub fn watch(self: &Arc<Self>, session: &SessionId, dir: &Path) -> Option<Ticket> {
        let root = self.watch_root(dir.parent()?)?;
        let dir = self.add(session, dir, Kind::Dir)?;
        Some(Ticket {
            cache: self.clone(),
            session: session.clone(),
            root,
            pair: Pair { dir, file: None },
            held: true,
        })
    }

    /// The data directory's watch, placed if it is not on.
    fn watch_root(&self, root: &Path) -> Option<Watch> {
        let mut state = self.lock();
        self.take_changes(&mut state);
        if state.root.is_none() {
            state.root = self.watches.add(root, Kind::Place);
        }
        state.root
    }

    /// Places (or shares) the watch of `path` and holds it. Under the lock, so that nothing
    /// can let go of the kernel's watch between its placing and its holding.
    fn add(&self, session: &SessionId, path: &Path, kind: Kind) -> Option<Watch> {
        let mut state = self.lock();
        let watch = self.watches.add(path, kind)?;
        let watched = state.watched.entry(watch).or_insert_with(|| Watched {
            session: session.clone(),
            holders: 0,
            ended: false,
        });
        watched.holders += 1;
        Some(watch)
    }

    /// Drops the entries whose directory or file has changed since they were read.
    fn take_changes(&self, state: &mut State) {
        let ended = self.watches.ended();
        self.forget_changed(state, ended);
    }

    fn forget_changed(&self, state: &mut State, ended: Ended) {
        match ended {
            Ended::These(watches) => {
                for watch in watches {
                    if state.root == Some(watch) {
                        // The data directory was moved or removed: whatever is read now
                        // comes from wherever its path leads.
                        state.root = None;
                        self.end_all(state);
                        continue;
                    }
                    let Some(watched) = state.watched.get_mut(&watch) else {
                        continue; // let go of already
                    };
                    watched.ended = true;
                    let session = watched.session.clone();
                    if let Some(old) = state.entries.remove(&session) {
                        self.drop_kept(state, old);
                    }
                }
            }
            Ended::Any => {
                if let Some(root) = state.root.take() {
                    self.watches.remove(root);
                }
                self.end_all(state);
            }
        }
    }

    /// Drops every entry and ends every watch, so that no ticket held now keeps anything.
    fn end_all(&self, state: &mut State) {
        for (_, old) in std::mem::take(&mut state.entries) {
            self.drop_kept(state, old);
        }
        for (watch, watched) in &mut state.watched {
            if !watched.ended {
                self.watches.remove(*watch);
                watched.ended = true;
            }
        }
    }

    fn drop_kept(&self, state: &mut State, old: Kept) {
        state.bytes -= old.entry.content.len();
        self.let_go(state, old.pair);
    }

    /// Lets go of a pair of watches; one that nothing else holds is forgotten, and ended if
    /// it is not yet.
    fn let_go(&self, state: &mut State, pair: Pair) {
        for watch in [Some(pair.dir), pair.file].into_iter().flatten() {
            let Some(watched) = state.watched.get_mut(&watch) else {
                continue; // not reached: a record stays while it is held
            };
            watched.holders -= 1;
            if watched.holders == 0 {
                if !watched.ended {
                    self.watches.remove(watch);
                }
                state.watched.remove(&watch);
            }
        }
    }

    /// Nothing under this lock panics; were it poisoned all the same, reads would go on rather
    /// than each of them failing.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Ticket {
    /// Also watches the latest's file, before it is read: a write through another name (a
    /// hard link) changes no directory, only the file. Without this watch nothing is kept.
    pub fn watch_file(&mut self, file: &Path) {
        self.pair.file = self.cache.add(&self.session, file, Kind::File);
    }

    /// Keeps `entry` as the session's latest, if both watches are unbroken, it is small
    /// enough, and room can be made.
    pub fn keep(mut self, entry: Entry) {
        let (cache, session) = (self.cache.clone(), &self.session);
        let size = entry.content.len();
        let mut state = cache.lock();
        cache.take_changes(&mut state);
        let unbroken = |watch| {
            let watched = state.watched.get(&watch);
            watched.is_some_and(|w| !w.ended && &w.session == session)
        };
        let whole = self.pair.file.is_some_and(unbroken)
            && unbroken(self.pair.dir)
            && state.root == Some(self.root);
        if !whole || size as u64 > KEEP_UP_TO {
            drop(state);
            return; // and dropping the ticket lets go of its watches
        }
        if let Some(old) = state.entries.remove(session) {
            cache.drop_kept(&mut state, old);
        }
        while state.bytes + size > BUDGET || state.entries.len() >= MAX_ENTRIES {
            let Some(victim) = state.entries.keys().next().cloned() else {
                break;
            };
            let old = state
                .entries
                .remove(&victim)
                .expect("the key was just seen");
            cache.drop_kept(&mut state, old);
        }
        state.bytes += size;
        let kept = Kept {
            entry: Arc::new(entry),
            pair: self.pair,
        };
        state.entries.insert(session.clone(), kept);
        // The entry holds the watches now.
        self.held = false;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.held {
            let mut state = self.cache.lock();
            self.cache.let_go(&mut state, self.pair);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use crate::store::name::SnapshotId;

    const ID: &str = "20261124T040000.000000Z-0123456789abcdef";

    /// A session directory holding one snapshot file.
    struct Session {
        id: SessionId,
        dir: PathBuf,
        file: PathBuf,
    }

    fn session(root: &Path, name: &str) -> Session {
        let dir = root.join(name);
        fs::create_dir(&dir).unwrap();
        let file = dir.join(format!("{ID}.json"));
        fs::write(&file, "{}").unwrap();
        let id = SessionId::parse(name).unwrap();
        Session { id, dir, file }
    }

    fn entry_of(size: usize) -> Entry {
        Entry {
            info: SnapshotInfo {
                id: SnapshotId::parse(ID).unwrap(),
                bytes: size as u64,
            },
            content: Bytes::from(vec![b' '; size]),
        }
    }

    /// A data directory with one session "s", and a cache.
    fn one_session() -> (tempfile::TempDir, Arc<LatestCache>, Session) {
        let root = tempfile::tempdir().unwrap();
        let s = session(root.path(), "s");
        (root, Arc::new(LatestCache::default()), s)
    }

    /// Watches, "reads", and keeps: what the store does on a read from disk.
    fn read(cache: &Arc<LatestCache>, s: &Session, size: usize) {
        ticket_for(cache, s).keep(entry_of(size));
    }

    fn ticket_for(cache: &Arc<LatestCache>, s: &Session) -> Ticket {
        let mut ticket = cache.watch(&s.id, &s.dir).unwrap();
        ticket.watch_file(&s.file);
        ticket
    }

    /// The watches held, the data directory's aside: as recorded, and as the kernel has them.
    fn watches(cache: &LatestCache) -> (usize, usize) {
        let root = usize::from(cache.lock().root.is_some());
        (
            cache.lock().watched.len(),
            cache.watches.in_kernel().saturating_sub(root),
        )
    }

    fn len(cache: &LatestCache, s: &Session) -> Option<usize> {
        cache.get(&s.id).map(|e| e.content.len())
    }

    #[test]
    fn any_change_in_the_directory_or_to_the_file_drops_the_entry() {
        let root = tempfile::tempdir().unwrap();
        let cache = Arc::new(LatestCache::default());
        type Change = (&'static str, fn(&Session));
        let changes: [Change; 6] = [
            ("a file added", |s| {
                fs::write(s.dir.join("new.json"), "1").unwrap();
            }),
            ("a file renamed over it", |s| {
                let outside = s.dir.parent().unwrap().join(format!("{}.new", s.id));
                fs::write(&outside, "[2]").unwrap();
                fs::rename(&outside, &s.file).unwrap();
            }),
            ("the file touched", |s| {
                let file = fs::File::options().write(true).open(&s.file).unwrap();
                file.set_modified(std::time::UNIX_EPOCH).unwrap();
            }),
            ("the file removed", |s| fs::remove_file(&s.file).unwrap()),
            ("the file written in place", |s| {
                fs::write(&s.file, "{\"x\":1}").unwrap()
            }),
            ("the directory removed", |s| {
                fs::remove_dir_all(&s.dir).unwrap()
            }),
        ];
        for (i, (what, change)) in changes.iter().enumerate() {
            let s = session(root.path(), &format!("s{i}"));
            read(&cache, &s, 10);
            assert!(cache.get(&s.id).is_some(), "kept before: {what}");
            change(&s);
            assert!(cache.get(&s.id).is_none(), "dropped: {what}");
        }
        assert_eq!(watches(&cache), (0, 0), "no watch left behind");
        assert_eq!(cache.hits(), changes.len() as u64);
    }

    #[test]
    fn a_write_through_another_name_of_the_file_drops_the_entry() {
        let (root, cache, s) = one_session();
        let other = root.path().join("elsewhere.json");
        fs::hard_link(&s.file, &other).unwrap();
        read(&cache, &s, 10);
        assert!(cache.get(&s.id).is_some());
        fs::write(&other, "[]").unwrap(); // the session directory itself sees nothing
        assert!(cache.get(&s.id).is_none());
    }

    #[test]
    fn reads_of_a_kept_session_share_its_watches() {
        let (_root, cache, s) = one_session();
        read(&cache, &s, 10);
        read(&cache, &s, 20); // the same two watches, from the kernel
        read(&cache, &s, KEEP_UP_TO as usize + 1); // not kept: lets go of its share only
        assert_eq!(len(&cache, &s), Some(20));
        assert_eq!(watches(&cache), (2, 2));
        fs::write(s.dir.join("new.json"), "1").unwrap();
        assert!(cache.get(&s.id).is_none(), "still watched");
        assert_eq!(watches(&cache), (0, 0));
    }

    #[test]
    fn a_directory_removed_and_made_again_is_watched_anew() {
        let (root, cache, s) = one_session();
        read(&cache, &s, 10);
        fs::remove_dir_all(&s.dir).unwrap();
        let s = session(root.path(), "s");
        assert!(cache.get(&s.id).is_none());
        read(&cache, &s, 20);
        assert_eq!(len(&cache, &s), Some(20));
        fs::write(&s.file, "[3]").unwrap();
        assert!(cache.get(&s.id).is_none());
        assert_eq!(watches(&cache), (0, 0));
    }

    #[test]
    fn moving_the_data_directory_away_drops_everything() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("data");
        fs::create_dir(&root).unwrap();
        let cache = Arc::new(LatestCache::default());
        let (a, b) = (session(&root, "a"), session(&root, "b"));
        read(&cache, &a, 10);
        let before = ticket_for(&cache, &b);
        fs::rename(&root, parent.path().join("data.old")).unwrap();
        // A copy put in its place, with the same names.
        fs::create_dir(&root).unwrap();
        let (a, b) = (session(&root, "a"), session(&root, "b"));
        assert!(
            cache.get(&a.id).is_none(),
            "an entry from the old directory"
        );
        before.keep(entry_of(10));
        assert!(cache.get(&b.id).is_none(), "a ticket from before the move");
        read(&cache, &b, 20);
        assert_eq!(len(&cache, &b), Some(20), "the new directory's are kept");
        fs::rename(&root, parent.path().join("data.older")).unwrap();
        assert!(cache.get(&b.id).is_none(), "and watched too");
        assert_eq!(watches(&cache).0, 0);
    }

    #[test]
    fn after_a_lost_change_no_ticket_from_before_keeps_and_later_ones_are_watched() {
        let (_root, cache, s) = one_session();
        read(&cache, &s, 10);
        let before = ticket_for(&cache, &s);
        // What a full kernel queue (IN_Q_OVERFLOW) leads to.
        let mut state = cache.lock();
        cache.forget_changed(&mut state, Ended::Any);
        drop(state);
        assert!(cache.get(&s.id).is_none(), "everything dropped");
        assert_eq!(watches(&cache), (2, 0), "the outstanding ticket's, ended");

        read(&cache, &s, 20);
        assert_eq!(len(&cache, &s), Some(20), "a ticket from after is kept");
        before.keep(entry_of(30));
        assert_eq!(len(&cache, &s), Some(20), "one from before is not");
        assert_eq!(watches(&cache), (2, 2));
        fs::write(s.dir.join("new.json"), "1").unwrap();
        assert!(
            cache.get(&s.id).is_none(),
            "and what was kept is still watched"
        );
        assert_eq!(watches(&cache), (0, 0));
    }

    #[test]
    fn a_change_during_the_read_keeps_nothing() {
        let (_root, cache, s) = one_session();
        let ticket = ticket_for(&cache, &s);
        fs::write(s.dir.join("newer.json"), "1").unwrap();
        ticket.keep(entry_of(10));
        assert!(cache.get(&s.id).is_none());

        // The file written during the read, too (a write through another name, which only
        // the file's watch sees, is the hard-link test's).
        let ticket = ticket_for(&cache, &s);
        fs::write(&s.file, "[1]").unwrap();
        ticket.keep(entry_of(10));
        assert!(cache.get(&s.id).is_none());
        assert_eq!(watches(&cache), (0, 0));
    }

    #[test]
    fn a_file_that_cannot_be_watched_keeps_nothing() {
        let (_root, cache, s) = one_session();
        let mut ticket = cache.watch(&s.id, &s.dir).unwrap();
        ticket.watch_file(&s.dir.join("gone.json"));
        ticket.keep(entry_of(10));
        assert!(cache.get(&s.id).is_none());
        assert_eq!(watches(&cache), (0, 0));
    }

    #[test]
    fn the_budget_bounds_what_is_kept_and_its_watches() {
        let root = tempfile::tempdir().unwrap();
        let cache = Arc::new(LatestCache::default());
        let sessions: Vec<Session> = (0..200)
            .map(|i| session(root.path(), &format!("s{i}")))
            .collect();
        for s in &sessions {
            read(&cache, s, KEEP_UP_TO as usize);
        }
        let kept = cache.lock().entries.len();
        assert_eq!(kept, BUDGET / KEEP_UP_TO as usize);
        assert_eq!(cache.lock().bytes, kept * KEEP_UP_TO as usize);
        assert_eq!(
            watches(&cache),
            (2 * kept, 2 * kept),
            "evicted ones unwatched"
        );

        // Too large to keep at all; the smaller one it would replace stays.
        let last = &sessions[199];
        assert!(cache.get(&last.id).is_some(), "the last one kept is there");
        read(&cache, last, KEEP_UP_TO as usize + 1);
        assert_eq!(
            cache.get(&last.id).map(|e| e.content.len()),
            Some(KEEP_UP_TO as usize)
        );
        read(&cache, last, 10);
        assert_eq!(cache.get(&last.id).map(|e| e.content.len()), Some(10));
        let total: usize = cache
            .lock()
            .entries
            .values()
            .map(|k| k.entry.content.len())
            .sum();
        assert_eq!(cache.lock().bytes, total);
    }

    #[test]
    fn so_many_sessions_are_kept_at_most() {
        let root = tempfile::tempdir().unwrap();
        let cache = Arc::new(LatestCache::default());
        for i in 0..MAX_ENTRIES + 10 {
            read(&cache, &session(root.path(), &format!("s{i}")), 1);
        }
        assert_eq!(cache.lock().entries.len(), MAX_ENTRIES);
        assert_eq!(cache.lock().watched.len(), 2 * MAX_ENTRIES);
    }
}
