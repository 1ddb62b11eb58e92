//! One async mutex per session, which every change of the session holds in this process: the
//! writers of one session queue here, waiting without a thread each, while different sessions
//! proceed in parallel. Correctness does not rest on it (the backend's transaction is atomic
//! against every writer, in this process or another); it only spares the backend's lock (or
//! bucket) the writers that would each wait on it.
//!
//! The registry holds `Weak` references: a session's mutex lives only while someone holds or
//! waits for it, and dead entries are swept out as the map grows, so memory follows the number
//! of sessions in use right now, not the number ever seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::name::SessionId;

#[derive(Debug, Default)]
pub struct SessionLocks {
    // A std Mutex: it is held only for a map lookup, never across an await.
    map: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    locks: HashMap<SessionId, Weak<AsyncMutex<()>>>,
    /// Entries alive at the last sweep; the next sweep runs when the map has doubled.
    live_at_sweep: usize,
}

impl SessionLocks {
    /// Waits until this task is the only one working on `session`.
    pub async fn write(&self, session: &SessionId) -> OwnedMutexGuard<()> {
        self.lock_for(session).lock_owned().await
    }

    fn lock_for(&self, session: &SessionId) -> Arc<AsyncMutex<()>> {
        let mut registry = self.map.lock().expect("lock registry poisoned");
        if let Some(existing) = registry.locks.get(session).and_then(Weak::upgrade) {
            return existing;
        }
        let lock = Arc::new(AsyncMutex::new(()));
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
        drop(held);
        let _again = tokio::time::timeout(SURELY, locks.write(&session(1)))
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
