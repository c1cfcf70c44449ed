//! The sink stage: where stills go after the in-memory [`Store`](crate::Store).
//!
//! Each sink implements [`Sink`] and is driven by its own task
//! ([`run_sink`]), which subscribes to the store. The task, not the sink,
//! owns the policy every sink shares:
//!
//! * **Latest wins.** At most one pending still per camera. A newer still
//!   replaces a pending one, so a slow or failing sink never makes a queue
//!   grow and never writes an old still over a newer one.
//! * **Batches.** Every still that is due goes to the sink in one call, so a
//!   sink with a bulk API (Cloudflare KV) makes one request per round.
//! * **Failures are per camera and retried.** A still that fails (disk full,
//!   permission denied, HTTP 429) stays pending and is retried with backoff,
//!   or after the sink's own `retry_after`. The failure is logged once with
//!   its reason and again when it heals. Other cameras and sinks go on.
//! * **Shutdown flushes.** On shutdown the task makes one last attempt at
//!   whatever is pending, then returns.

pub mod cloudflare_kv;
pub mod dir;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{Snapshot, Store};

pub use cloudflare_kv::CloudflareKvSink;
pub use dir::DirSink;

/// A destination for stills.
pub trait Sink: Send + Sync + 'static {
    /// A short name for logs and status, e.g. `dir`.
    fn name(&self) -> &str;

    /// Stores a batch of stills, at most one per camera, and returns the
    /// failures, by camera. Stills not named in the result were stored. A
    /// failed still is retried later (with that camera's newest still); the
    /// error's message should say what the user can do about it.
    ///
    /// Never called concurrently for one sink.
    fn write<'a>(&'a self, batch: &'a [Snapshot]) -> BoxFuture<'a, Vec<(Arc<str>, SinkError)>>;

    /// Least time between two `write` calls; stills arriving meanwhile wait
    /// and go in the next batch. Zero (the default) writes as stills come.
    fn pacing(&self) -> Duration {
        Duration::ZERO
    }

    /// Stills the sink chose not to store (e.g. an unchanged scene), so far.
    fn skipped(&self) -> u64 {
        0
    }
}

/// A failed write, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// What failed and what to check.
    pub message: String,
    /// When the destination said when to come back (HTTP `retry-after`).
    pub retry_after: Option<Duration>,
}

impl SinkError {
    /// An error with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        SinkError {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// What a sink has done, for status pages and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkStatus {
    /// The sink's name.
    pub name: String,
    /// Stills stored.
    pub writes: u64,
    /// Failed attempts.
    pub errors: u64,
    /// Stills deliberately not stored (unchanged scene, upload interval).
    pub skipped: u64,
    /// Cameras whose last attempt failed, with the error.
    pub failing: BTreeMap<String, String>,
}

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

struct Pending {
    snapshot: Snapshot,
    /// Consecutive failures; 0 means not failing.
    failures: u32,
    not_before: Instant,
}

/// Drives one sink until `shutdown` becomes true, then flushes once.
pub async fn run_sink(
    sink: Arc<dyn Sink>,
    store: Store,
    mut shutdown: watch::Receiver<bool>,
    status: watch::Sender<SinkStatus>,
) {
    status.send_modify(|s| s.name = sink.name().to_owned());
    let mut sub = store.subscribe();
    let mut pending: HashMap<Arc<str>, Pending> = HashMap::new();
    let mut next_write = Instant::now();
    loop {
        let next_retry = pending.values().map(|p| p.not_before.max(next_write)).min();
        tokio::select! {
            fresh = sub.next() => {
                for s in fresh {
                    let camera = s.camera.clone();
                    match pending.get_mut(&camera) {
                        // Keep the failure count and retry time: a newer
                        // still does not make a failing disk work again.
                        Some(p) => p.snapshot = s,
                        None => {
                            pending.insert(camera, Pending { snapshot: s, failures: 0, not_before: Instant::now() });
                        }
                    }
                }
            }
            _ = sleep_until_opt(next_retry) => {}
            _ = crate::stopping(&mut shutdown) => {
                for p in pending.values_mut() { p.not_before = Instant::now(); }
                write_due(&*sink, &mut pending, &status).await;
                return;
            }
        }
        if Instant::now() >= next_write && write_due(&*sink, &mut pending, &status).await {
            next_write = Instant::now() + sink.pacing();
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Writes every due still in one batch; false when nothing was due.
async fn write_due(
    sink: &dyn Sink,
    pending: &mut HashMap<Arc<str>, Pending>,
    status: &watch::Sender<SinkStatus>,
) -> bool {
    let now = Instant::now();
    let batch: Vec<Snapshot> = pending
        .values()
        .filter(|p| p.not_before <= now)
        .map(|p| p.snapshot.clone())
        .collect();
    if batch.is_empty() {
        return false;
    }
    let failed: HashMap<Arc<str>, SinkError> = sink.write(&batch).await.into_iter().collect();
    for s in &batch {
        let camera = &s.camera;
        let Some(e) = failed.get(camera) else {
            // Stored. (No newer still can have arrived during the write:
            // this task alone fills `pending`.)
            pending.remove(camera);
            let healed = status.send_modify_if_changed(camera, None);
            if healed {
                info!(camera = %camera, sink = sink.name(), "sink write recovered");
            }
            continue;
        };
        let p = pending.get_mut(camera).expect("batch comes from pending");
        p.failures += 1;
        let backoff = e.retry_after.unwrap_or_else(|| {
            RETRY_MIN
                .saturating_mul(1 << (p.failures - 1).min(5))
                .min(RETRY_MAX)
        });
        p.not_before = Instant::now() + backoff;
        // One line per change of error, not one per retry.
        if status.send_modify_if_changed(camera, Some(&e.message)) {
            warn!(camera = %camera, sink = sink.name(), retry_in = ?backoff, "{}", e.message);
        }
    }
    // Stills the sink skipped on purpose were accepted but not written.
    let skipped_total = sink.skipped();
    let skipped_now = skipped_total.saturating_sub(status.borrow().skipped);
    let accepted = (batch.len() - failed.len()) as u64;
    status.send_modify(|s| {
        s.skipped = skipped_total;
        s.writes += accepted.saturating_sub(skipped_now);
        s.errors += failed.len() as u64;
    });
    true
}

/// Updates a camera's failure entry; true when it changed.
trait FailingExt {
    fn send_modify_if_changed(&self, camera: &str, error: Option<&str>) -> bool;
}

impl FailingExt for watch::Sender<SinkStatus> {
    fn send_modify_if_changed(&self, camera: &str, error: Option<&str>) -> bool {
        let current = self.borrow().failing.get(camera).cloned();
        if current.as_deref() == error {
            return false;
        }
        self.send_modify(|s| match error {
            Some(e) => {
                s.failing.insert(camera.to_owned(), e.to_owned());
            }
            None => {
                s.failing.remove(camera);
            }
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fails every still of the cameras in `broken`; records what it stored.
    struct Flaky {
        broken: Mutex<Vec<&'static str>>,
        stored: Mutex<Vec<(String, u64)>>,
    }

    impl Sink for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn write<'a>(&'a self, batch: &'a [Snapshot]) -> BoxFuture<'a, Vec<(Arc<str>, SinkError)>> {
            Box::pin(async move {
                let broken = self.broken.lock().unwrap().clone();
                let mut failed = Vec::new();
                for s in batch {
                    if broken.contains(&&*s.camera) {
                        failed.push((s.camera.clone(), SinkError::new("disk is full")));
                    } else {
                        self.stored
                            .lock()
                            .unwrap()
                            .push((s.camera.to_string(), s.seq));
                    }
                }
                failed
            })
        }
    }

    use crate::snapshot::test_still as snap;

    #[tokio::test(start_paused = true)]
    async fn one_failing_camera_does_not_stop_the_others_and_heals() {
        let sink = Arc::new(Flaky {
            broken: Mutex::new(vec!["a"]),
            stored: Mutex::new(Vec::new()),
        });
        let store = Store::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (status_tx, status_rx) = watch::channel(SinkStatus::default());
        let task = tokio::spawn(run_sink(sink.clone(), store.clone(), stop_rx, status_tx));
        for seq in 1..=5 {
            store.publish(snap("a", seq));
            store.publish(snap("b", seq));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let b: Vec<u64> = sink.stored.lock().unwrap().iter().map(|s| s.1).collect();
        assert_eq!(b, [1, 2, 3, 4, 5], "b is stored every time");
        let st = status_rx.borrow().clone();
        assert_eq!(
            st.failing.get("a").map(String::as_str),
            Some("disk is full")
        );
        assert!(st.errors >= 2 && st.errors <= 4, "retries back off: {st:?}");

        // The disk is freed: a's newest still (never an older one) lands.
        sink.broken.lock().unwrap().clear();
        tokio::time::sleep(Duration::from_secs(31)).await;
        let stored = sink.stored.lock().unwrap().clone();
        assert!(stored.contains(&("a".to_string(), 5)), "{stored:?}");
        assert!(!stored.iter().any(|(c, s)| c == "a" && *s < 5));
        assert!(status_rx.borrow().failing.is_empty());
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
