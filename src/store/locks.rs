//! One async read-write lock per session. Writes and deletes take it exclusively, so they are
//! serialized per session while different sessions proceed in parallel. Listing and reading the
//! latest take it shared: a directory listing taken while a write renames in the new snapshot
//! and prunes the old one may show neither (readdir promises nothing about entries changed
//! during the scan), so readers must not overlap a write.
//!
//! The registry holds `Weak` references: a session's mutex lives only while someone holds or
//! waits for it, and dead entries are swept out as the map grows, so memory follows the number
//! of sessions in use right now, not the number ever seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use super::name::SessionId;

#[derive(Debug, Default)]
pub struct SessionLocks {
    // A std Mutex: it is held only for a map lookup, never across an await.
    map: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    locks: HashMap<SessionId, Weak<RwLock<()>>>,
    /// Entries alive at the last sweep; the next sweep runs when the map has doubled.
    live_at_sweep: usize,
}

impl SessionLocks {
    /// Waits until this task is the only one working on `session`.
    pub async fn write(&self, session: &SessionId) -> OwnedRwLockWriteGuard<()> {
        self.lock_for(session).write_owned().await
    }

    /// Waits until no one is writing to `session`; other readers may read at the same time.
    pub async fn read(&self, session: &SessionId) -> OwnedRwLockReadGuard<()> {
        self.lock_for(session).read_owned().await
    }

    fn lock_for(&self, session: &SessionId) -> Arc<RwLock<()>> {
        let mut registry = self.map.lock().expect("lock registry poisoned");
        if let Some(existing) = registry.locks.get(session).and_then(Weak::upgrade) {
            return existing;
        }
        let lock = Arc::new(RwLock::new(()));
        registry
            .locks
            .insert(session.clone(), Arc::downgrade(&lock));
        if registry.locks.len() > 2 * registry.live_at_sweep.max(32) {
            registry.locks.retain(|_, weak| weak.strong_count() > 0);
            registry.live_at_sweep = registry.locks.len();
        }
        lock
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.map.lock().unwrap().locks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn session(n: usize) -> SessionId {
        SessionId::parse(&format!("s{n}")).unwrap()
    }

    const SOON: Duration = Duration::from_millis(50);
    const SURELY: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_writer_excludes_its_session_only() {
        let locks = SessionLocks::default();
        let held = locks.write(&session(1)).await;
        let other = tokio::time::timeout(SURELY, locks.write(&session(2))).await;
        assert!(other.is_ok(), "another session must not wait");
        assert!(
            tokio::time::timeout(SOON, locks.write(&session(1)))
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(SOON, locks.read(&session(1)))
                .await
                .is_err()
        );
        drop(held);
        let _again = tokio::time::timeout(SURELY, locks.write(&session(1)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn readers_share_but_exclude_writers() {
        let locks = SessionLocks::default();
        let first = locks.read(&session(1)).await;
        let second = tokio::time::timeout(SURELY, locks.read(&session(1))).await;
        assert!(second.is_ok(), "readers do not wait for each other");
        assert!(
            tokio::time::timeout(SOON, locks.write(&session(1)))
                .await
                .is_err()
        );
        drop((first, second));
        let _writer = tokio::time::timeout(SURELY, locks.write(&session(1)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn released_sessions_are_swept_away() {
        let locks = SessionLocks::default();
        for n in 0..10_000 {
            drop(locks.write(&session(n)).await);
        }
        assert!(
            locks.entries() <= 65,
            "registry kept {} entries",
            locks.entries()
        );
    }
}
