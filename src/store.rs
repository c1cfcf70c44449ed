//! The latest-still store: the newest [`Snapshot`] of every camera, in memory.
//!
//! Every still the pipeline produces is published here first; sinks, the
//! viewer and library users read from it. It holds exactly one still per
//! camera, so memory is bounded no matter how slow a consumer is. That is the
//! back-pressure policy of the whole daemon: *latest wins*. A consumer that
//! falls behind skips the stills it missed instead of queueing them, which is
//! what anyone looking at a camera wants.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::Snapshot;

/// Shared handle to the store; clone freely.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    latest: RwLock<HashMap<Arc<str>, Snapshot>>,
    /// Bumped on every publish; subscribers wait on it.
    generation: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store {
            inner: Arc::new(Inner {
                latest: RwLock::new(HashMap::new()),
                generation: watch::Sender::new(0),
            }),
        }
    }

    /// The newest still of `camera`, if it has produced one.
    pub fn latest(&self, camera: &str) -> Option<Snapshot> {
        self.inner.latest.read().unwrap().get(camera).cloned()
    }

    /// The newest still of every camera that has one, sorted by camera name.
    pub fn all(&self) -> Vec<Snapshot> {
        let mut v: Vec<Snapshot> = self
            .inner
            .latest
            .read()
            .unwrap()
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.camera.cmp(&b.camera));
        v
    }

    /// Replaces the camera's still. A still older than the stored one (by
    /// `seq`) is ignored, so a late writer can never roll the store back.
    pub fn publish(&self, snapshot: Snapshot) {
        {
            let mut map = self.inner.latest.write().unwrap();
            if let Some(old) = map.get(&snapshot.camera) {
                if old.seq >= snapshot.seq {
                    return;
                }
            }
            map.insert(snapshot.camera.clone(), snapshot);
        }
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// A subscription that yields every camera's newest still each time
    /// something changed; see [`Subscription::next`].
    pub fn subscribe(&self) -> Subscription {
        let mut rx = self.inner.generation.subscribe();
        rx.mark_changed();
        Subscription {
            store: self.clone(),
            rx,
            seen: HashMap::new(),
        }
    }
}

/// Receives stills as they are published, newest only.
pub struct Subscription {
    store: Store,
    rx: watch::Receiver<u64>,
    seen: HashMap<Arc<str>, u64>,
}

impl Subscription {
    /// Waits until at least one camera has a still this subscription has not
    /// returned yet, then returns those stills (one per camera, the newest).
    ///
    /// Stills published and replaced in between are skipped: latest wins.
    pub async fn next(&mut self) -> Vec<Snapshot> {
        loop {
            // The sender lives in `self.store`, so this never fails.
            let _ = self.rx.changed().await;
            let fresh: Vec<Snapshot> = self
                .store
                .all()
                .into_iter()
                .filter(|s| self.seen.get(&s.camera).is_none_or(|&seq| seq < s.seq))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            for s in &fresh {
                self.seen.insert(s.camera.clone(), s.seq);
            }
            return fresh;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::snapshot::test_still as snap;

    #[tokio::test]
    async fn latest_wins_and_never_rolls_back() {
        let store = Store::new();
        let mut sub = store.subscribe();
        store.publish(snap("a", 1));
        store.publish(snap("a", 2));
        store.publish(snap("b", 1));
        store.publish(snap("a", 1)); // late, ignored
        let got = sub.next().await;
        let seqs: Vec<_> = got.iter().map(|s| (s.camera.to_string(), s.seq)).collect();
        assert_eq!(seqs, [("a".to_string(), 2), ("b".to_string(), 1)]);
        assert_eq!(store.latest("a").unwrap().seq, 2);
        store.publish(snap("b", 2));
        let got = sub.next().await;
        assert_eq!(got.len(), 1);
        assert_eq!(&*got[0].camera, "b");
    }
}
