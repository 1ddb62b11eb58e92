//! One async lock per session, so that writes (and deletes) to one session are serialized while
//! different sessions proceed in parallel.
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
    pub async fn lock(&self, session: &SessionId) -> OwnedMutexGuard<()> {
        self.mutex_for(session).lock_owned().await
    }

    fn mutex_for(&self, session: &SessionId) -> Arc<AsyncMutex<()>> {
        let mut registry = self.map.lock().expect("lock registry poisoned");
        if let Some(existing) = registry.locks.get(session).and_then(Weak::upgrade) {
            return existing;
        }
        let mutex = Arc::new(AsyncMutex::new(()));
        registry
            .locks
            .insert(session.clone(), Arc::downgrade(&mutex));
        if registry.locks.len() > 2 * registry.live_at_sweep.max(32) {
            registry.locks.retain(|_, weak| weak.strong_count() > 0);
            registry.live_at_sweep = registry.locks.len();
        }
        mutex
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

    #[tokio::test]
    async fn same_session_waits_other_sessions_do_not() {
        let locks = SessionLocks::default();
        let held = locks.lock(&session(1)).await;
        let other = tokio::time::timeout(Duration::from_secs(5), locks.lock(&session(2))).await;
        assert!(other.is_ok(), "another session must not wait");
        let same = tokio::time::timeout(Duration::from_millis(50), locks.lock(&session(1))).await;
        assert!(same.is_err(), "the same session must wait");
        drop(held);
        let _again = locks.lock(&session(1)).await;
    }

    #[tokio::test]
    async fn released_sessions_are_swept_away() {
        let locks = SessionLocks::default();
        for n in 0..10_000 {
            drop(locks.lock(&session(n)).await);
        }
        assert!(
            locks.entries() <= 65,
            "registry kept {} entries",
            locks.entries()
        );
    }
}
