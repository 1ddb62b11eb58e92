//! The change feed: who wants to hear of a session's changes, and what its state is now.
//!
//! The feed is state-based: each subscribed session has a `watch` channel holding the session's
//! current latest snapshot (and what the last change removed). A subscriber that reads slowly
//! never falls behind a queue: it wakes to the current state, whatever happened meanwhile, so
//! it holds no memory of its own beyond one clone of that state. A session's channel lives while
//! someone subscribes to it (the map holds it weakly), as mini-redis keeps its pub/sub senders.
//!
//! The store publishes after each of its own commits. Changes it did not make (another
//! instance on the same bucket, the CLI, a file edited by hand) are found by revalidating the
//! subscribed sessions about once a second (`Store::revalidate_feeds`).
//!
//! Besides, every change of any session goes to the operator's feed (`GET {base}/_events`), a
//! bounded broadcast: a receiver that lags learns that it missed some, and reloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{broadcast, watch};

use super::SnapshotInfo;
use super::name::{SessionId, SnapshotId};

/// A session's latest snapshot, as the feed announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    pub info: SnapshotInfo,
    /// The full SHA-256 of its content.
    pub sha256: String,
}

/// A session as its feed knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The latest snapshot; `None`: the session has none.
    pub latest: Option<Latest>,
    /// What the last change removed (pruned or deleted), newest change only.
    pub removed: Vec<SnapshotId>,
    /// Goes up by one with each change published.
    pub changes: u64,
}

/// One change, for the operator's feed.
#[derive(Debug, Clone)]
pub struct Notice {
    pub session: SessionId,
    pub state: State,
}

/// How many changes the operator's feed holds for a slow reader before it says it lagged.
const ALL_CAPACITY: usize = 256;

#[derive(Debug)]
pub struct Feed {
    sessions: Mutex<Registry>,
    all: broadcast::Sender<Notice>,
}

#[derive(Debug, Default)]
struct Registry {
    channels: HashMap<SessionId, Weak<Channel>>,
    /// Entries alive at the last sweep; the next sweep runs when the map has doubled.
    live_at_sweep: usize,
}

#[derive(Debug)]
struct Channel {
    sender: watch::Sender<State>,
}

/// One subscriber's view of a session: `current()` reads the state now, `next()` waits for the
/// next change.
#[derive(Debug)]
pub struct Subscription {
    receiver: watch::Receiver<State>,
    _channel: Arc<Channel>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            sessions: Mutex::default(),
            all: broadcast::channel(ALL_CAPACITY).0,
        }
    }
}

impl Feed {
    /// Subscribes to `session`. `current` is its state as read just now, for a session that
    /// has no channel yet (a channel that exists is current already).
    pub fn subscribe(&self, session: &SessionId, current: State) -> Subscription {
        let mut registry = self.lock();
        if let Some(channel) = registry.channels.get(session).and_then(Weak::upgrade) {
            return Subscription {
                receiver: channel.sender.subscribe(),
                _channel: channel,
            };
        }
        let (sender, receiver) = watch::channel(current);
        let channel = Arc::new(Channel { sender });
        registry
            .channels
            .insert(session.clone(), Arc::downgrade(&channel));
        if registry.channels.len() > 2 * registry.live_at_sweep.max(32) {
            registry.channels.retain(|_, weak| weak.strong_count() > 0);
            registry.live_at_sweep = registry.channels.len();
        }
        Subscription {
            receiver,
            _channel: channel,
        }
    }

    /// The operator's feed of every session's changes.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Notice> {
        self.all.subscribe()
    }

    /// Whether anyone listens to `session` (or to every session): only then is a change worth
    /// the reads that describe it.
    pub fn wanted(&self, session: &SessionId) -> bool {
        self.all.receiver_count() > 0 || self.channel(session).is_some()
    }

    /// The sessions someone subscribes to, with the latest id each was last told of.
    pub fn subscribed(&self) -> Vec<(SessionId, Option<SnapshotId>)> {
        let registry = self.lock();
        registry
            .channels
            .iter()
            .filter_map(|(session, weak)| {
                let channel = weak.upgrade()?;
                let latest = channel
                    .sender
                    .borrow()
                    .latest
                    .as_ref()
                    .map(|l| l.info.id.clone());
                Some((session.clone(), latest))
            })
            .collect()
    }

    /// The latest that the feed of `session` announces now, if it has a channel.
    pub fn announced(&self, session: &SessionId) -> Option<Latest> {
        self.channel(session)?.sender.borrow().latest.clone()
    }

    /// Announces that `session`'s latest is now `latest`, and that `removed` went away.
    pub fn publish(&self, session: &SessionId, latest: Option<Latest>, removed: Vec<SnapshotId>) {
        let mut published = None;
        if let Some(channel) = self.channel(session) {
            channel.sender.send_modify(|state| {
                state.latest = latest.clone();
                state.removed = removed.clone();
                state.changes += 1;
                published = Some(state.clone());
            });
        }
        if self.all.receiver_count() > 0 {
            let state = published.unwrap_or(State {
                latest,
                removed,
                changes: 0,
            });
            let session = session.clone();
            let _ = self.all.send(Notice { session, state });
        }
    }

    fn channel(&self, session: &SessionId) -> Option<Arc<Channel>> {
        self.lock().channels.get(session).and_then(Weak::upgrade)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Subscription {
    /// Waits for a change after the state last read, and reads it. `None`: the feed is gone.
    pub async fn next(&mut self) -> Option<State> {
        self.receiver.changed().await.ok()?;
        Some(self.receiver.borrow_and_update().clone())
    }

    /// The state now, marking it seen.
    pub fn current(&mut self) -> State {
        self.receiver.borrow_and_update().clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn session(name: &str) -> SessionId {
        SessionId::parse(name).unwrap()
    }

    fn latest(id: &str) -> Latest {
        Latest {
            info: SnapshotInfo {
                id: SnapshotId::parse(id).unwrap(),
                bytes: 2,
            },
            sha256: "0123456789abcdef".repeat(4),
        }
    }

    const A: &str = "20261204T100000.000000Z-0123456789abcdef";
    const B: &str = "20261204T110000.000000Z-0123456789abcdef";

    #[tokio::test]
    async fn a_slow_subscriber_wakes_to_the_current_state_only() {
        let feed = Feed::default();
        let mut sub = feed.subscribe(&session("s"), State::default());
        assert_eq!(sub.current().latest, None);
        feed.publish(&session("s"), Some(latest(A)), vec![]);
        feed.publish(
            &session("s"),
            Some(latest(B)),
            vec![SnapshotId::parse(A).unwrap()],
        );
        let state = tokio::time::timeout(Duration::from_secs(1), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.latest, Some(latest(B)));
        assert_eq!(state.changes, 2);
        let quiet = tokio::time::timeout(Duration::from_millis(50), sub.next()).await;
        assert!(quiet.is_err(), "nothing new");
    }

    #[tokio::test]
    async fn a_channel_lives_while_someone_subscribes() {
        let feed = Feed::default();
        let s = session("s");
        assert!(!feed.wanted(&s));
        let first = feed.subscribe(&s, State::default());
        feed.publish(&s, Some(latest(A)), vec![]);
        let mut second = feed.subscribe(&s, State::default());
        assert_eq!(
            second.current().latest,
            Some(latest(A)),
            "joins the channel as it is"
        );
        assert_eq!(feed.subscribed().len(), 1);
        drop((first, second));
        assert!(!feed.wanted(&s));
        assert!(feed.subscribed().is_empty());
    }

    #[tokio::test]
    async fn the_operators_feed_hears_every_session() {
        let feed = Feed::default();
        let mut all = feed.subscribe_all();
        feed.publish(&session("a"), Some(latest(A)), vec![]);
        feed.publish(&session("b"), None, vec![SnapshotId::parse(B).unwrap()]);
        assert_eq!(all.recv().await.unwrap().session, session("a"));
        let notice = all.recv().await.unwrap();
        assert_eq!((notice.session, notice.state.latest), (session("b"), None));
    }
}
