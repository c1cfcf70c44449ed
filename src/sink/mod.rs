//! The sink stage: where stills go after the in-memory [`Store`](crate::Store).
//!
//! Each sink implements [`Sink`] and is driven by its own task
//! ([`supervise_sink`], which runs [`run_sink`]'s loop), which subscribes to
//! the store. The task, not the sink, owns the policy every sink shares:
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
//! * **Delays are bounded.** A delay a sink (or the server behind it) asks
//!   for is clamped to [`SinkLimits::max_delay`] (at most
//!   [`MAX_SERVER_DELAY`], 1 h) and all time arithmetic is checked: a hostile
//!   `Retry-After` cannot panic the task or park it for ever.
//! * **A dead task is restarted, visibly.** If the loop panics (or returns
//!   while rtsnap is not shutting down), [`supervise_sink`] records it in
//!   [`SinkStatus`] (`state`, `restarts`, `last_restart`) and restarts it
//!   with backoff; the fresh loop picks up every camera's newest still from
//!   the store.
//! * **Shutdown flushes.** On shutdown the task makes one last attempt at
//!   whatever is pending, then returns.

pub mod cloudflare_kv;
pub mod dir;
mod retry;
mod supervise;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{Snapshot, Store};

pub use cloudflare_kv::CloudflareKvSink;
pub use dir::DirSink;
pub use retry::{
    clamp_delay, parse_retry_after, RetryAfter, DEFAULT_RETRY_AFTER, MAX_SERVER_DELAY,
};
pub use supervise::supervise_sink;

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
    /// Clamped like every sink-given delay, to [`SinkLimits::max_delay`].
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
    /// The runner waits at most [`SinkLimits::max_delay`], whatever it says.
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
    /// Whether its task is running, waiting to be restarted, or stopped.
    pub state: SinkState,
    /// Stills stored.
    pub writes: u64,
    /// Failed attempts.
    pub errors: u64,
    /// Stills deliberately not stored (unchanged scene, upload interval).
    pub skipped: u64,
    /// Cameras whose last attempt failed, with the error and the next try.
    pub failing: BTreeMap<String, SinkFailure>,
    /// Times the sink's task died and was restarted.
    pub restarts: u64,
    /// The most recent death, if any: a sink that keeps dying must not look
    /// healthy between deaths.
    pub last_restart: Option<SinkRestart>,
}

/// One camera's failing still.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkFailure {
    /// What failed and what to check.
    pub error: String,
    /// When the still is tried again (the wall-clock form of the runner's
    /// backoff or of the server's clamped `Retry-After`).
    pub retry_at: SystemTime,
}

/// The life of a sink's task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SinkState {
    /// Taking stills from the store.
    #[default]
    Running,
    /// The task died ([`SinkStatus::last_restart`] says how) and starts
    /// again at `until`.
    Restarting {
        /// When the new task starts.
        until: SystemTime,
    },
    /// rtsnap shut the task down.
    Stopped,
}

impl SinkState {
    /// A short machine word for status pages.
    pub fn word(&self) -> &'static str {
        match self {
            SinkState::Running => "running",
            SinkState::Restarting { .. } => "restarting",
            SinkState::Stopped => "stopped",
        }
    }
}

/// A sink task's death, as recorded in [`SinkStatus::last_restart`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkRestart {
    /// When the task died.
    pub at: SystemTime,
    /// How.
    pub cause: SinkExit,
}

/// How a sink task ended without being asked to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinkExit {
    /// It panicked; the panic's message (shortened).
    #[error("panicked: {0}")]
    Panicked(String),
    /// It returned although rtsnap was not shutting down.
    #[error("returned although rtsnap was not shutting down")]
    Returned,
}

impl SinkExit {
    /// A short machine word for status pages.
    pub fn word(&self) -> &'static str {
        match self {
            SinkExit::Panicked(_) => "panicked",
            SinkExit::Returned => "returned",
        }
    }
}

/// Bounds the runner keeps whatever a sink or its server asks for, and the
/// supervisor's restart backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkLimits {
    /// The longest wait a sink can cause (`SinkError::retry_after`,
    /// `Sink::pacing`); never more than [`MAX_SERVER_DELAY`] even if set
    /// higher. Lower it to make a test's server "recover" sooner.
    pub max_delay: Duration,
    /// The wait before restarting a task that died; doubled after each death
    /// up to `restart_max`, and back to this after a run of `restart_max`.
    pub restart_min: Duration,
    /// The longest wait before a restart.
    pub restart_max: Duration,
}

impl Default for SinkLimits {
    fn default() -> Self {
        SinkLimits {
            max_delay: MAX_SERVER_DELAY,
            restart_min: Duration::from_secs(1),
            restart_max: Duration::from_secs(60),
        }
    }
}

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

struct Pending {
    snapshot: Snapshot,
    /// Consecutive failures; 0 means not failing.
    failures: u32,
    not_before: Instant,
}

/// Drives one sink until `shutdown` becomes true, then flushes once, with
/// [`SinkLimits::default`]. Not supervised: a panic ends it (and the task it
/// runs in); [`supervise_sink`] is what the daemon runs.
pub async fn run_sink(
    sink: Arc<dyn Sink>,
    store: Store,
    shutdown: watch::Receiver<bool>,
    status: watch::Sender<SinkStatus>,
) {
    drive(sink, store, shutdown, status.clone(), SinkLimits::default()).await;
    status.send_modify(|s| s.state = SinkState::Stopped);
}

/// The runner's loop; returns when `shutdown` becomes true.
pub(crate) async fn drive(
    sink: Arc<dyn Sink>,
    store: Store,
    mut shutdown: watch::Receiver<bool>,
    status: watch::Sender<SinkStatus>,
    limits: SinkLimits,
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
                write_due(&*sink, &mut pending, &status, &limits).await;
                return;
            }
        }
        if Instant::now() >= next_write && write_due(&*sink, &mut pending, &status, &limits).await {
            let pacing = clamp_delay(sink.pacing(), limits.max_delay);
            next_write = retry::instant_after(Instant::now(), pacing);
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
    limits: &SinkLimits,
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
    // Counted from the batch, not from `failed`: a sink that names a camera
    // twice or one it was not given must not skew (or underflow) counters.
    let (mut accepted, mut errors) = (0u64, 0u64);
    for s in &batch {
        let camera = &s.camera;
        let Some(e) = failed.get(camera) else {
            // Stored. (No newer still can have arrived during the write:
            // this task alone fills `pending`.)
            accepted += 1;
            pending.remove(camera);
            if status.set_failing(camera, None) {
                info!(camera = %camera, sink = sink.name(), "sink write recovered");
            }
            continue;
        };
        errors += 1;
        let p = pending.get_mut(camera).expect("batch comes from pending");
        p.failures = p.failures.saturating_add(1);
        let backoff = match e.retry_after {
            Some(asked) => clamp_delay(asked, limits.max_delay),
            None => RETRY_MIN
                .saturating_mul(1 << (p.failures - 1).min(5))
                .min(RETRY_MAX),
        };
        p.not_before = retry::instant_after(Instant::now(), backoff);
        let failure = SinkFailure {
            error: e.message.clone(),
            retry_at: retry::system_after(SystemTime::now(), backoff),
        };
        // One line per change of error, not one per retry.
        if status.set_failing(camera, Some(failure)) {
            warn!(camera = %camera, sink = sink.name(), retry_in = ?backoff, "{}", e.message);
        }
    }
    // Stills the sink skipped on purpose were accepted but not written.
    let skipped_total = sink.skipped();
    let skipped_now = skipped_total.saturating_sub(status.borrow().skipped);
    status.send_modify(|s| {
        s.skipped = skipped_total;
        s.writes += accepted.saturating_sub(skipped_now);
        s.errors += errors;
    });
    true
}

/// Updates a camera's failure entry.
trait FailingExt {
    /// Sets (or with `None` clears) the entry; true when its error text
    /// changed, which is when the change is worth a log line.
    fn set_failing(&self, camera: &str, failure: Option<SinkFailure>) -> bool;
}

impl FailingExt for watch::Sender<SinkStatus> {
    fn set_failing(&self, camera: &str, failure: Option<SinkFailure>) -> bool {
        let changed = self.borrow().failing.get(camera).map(|f| &f.error)
            != failure.as_ref().map(|f| &f.error);
        if !changed && failure.is_none() {
            return false;
        }
        self.send_modify(|s| match failure {
            Some(f) => {
                s.failing.insert(camera.to_owned(), f);
            }
            None => {
                s.failing.remove(camera);
            }
        });
        changed
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
            st.failing.get("a").map(|f| f.error.as_str()),
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

    /// Asks for `Duration::MAX` (what `Retry-After: 18446744073709551615`
    /// used to become) until `healed`, then stores.
    struct Greedy {
        healed: std::sync::atomic::AtomicBool,
        calls: std::sync::atomic::AtomicU32,
    }

    impl Sink for Greedy {
        fn name(&self) -> &str {
            "greedy"
        }
        fn pacing(&self) -> Duration {
            Duration::MAX
        }
        fn write<'a>(&'a self, batch: &'a [Snapshot]) -> BoxFuture<'a, Vec<(Arc<str>, SinkError)>> {
            use std::sync::atomic::Ordering;
            self.calls.fetch_add(1, Ordering::SeqCst);
            let healed = self.healed.load(Ordering::SeqCst);
            Box::pin(async move {
                if healed {
                    return Vec::new();
                }
                batch
                    .iter()
                    .map(|s| {
                        let e = SinkError {
                            message: "come back never".into(),
                            retry_after: Some(Duration::MAX),
                        };
                        (s.camera.clone(), e)
                    })
                    .collect()
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_retry_after_is_clamped_to_an_hour_without_panic() {
        use std::sync::atomic::Ordering;
        let sink = Arc::new(Greedy {
            healed: false.into(),
            calls: 0.into(),
        });
        let store = Store::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (status_tx, status_rx) = watch::channel(SinkStatus::default());
        let task = tokio::spawn(run_sink(sink.clone(), store.clone(), stop_rx, status_tx));
        store.publish(snap("a", 1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = SystemTime::now();
        let st = status_rx.borrow().clone();
        let f = &st.failing["a"];
        let wait = f.retry_at.duration_since(before).unwrap_or_default();
        assert!(
            wait > MAX_SERVER_DELAY - Duration::from_secs(5) && wait <= MAX_SERVER_DELAY,
            "retry in {wait:?}"
        );
        assert_eq!(sink.calls.load(Ordering::SeqCst), 1);
        // Newer stills wait too: the delay is for the destination.
        store.publish(snap("a", 2));
        tokio::time::sleep(Duration::from_secs(3000)).await;
        assert_eq!(sink.calls.load(Ordering::SeqCst), 1);
        sink.healed.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(601)).await;
        assert_eq!(sink.calls.load(Ordering::SeqCst), 2, "retried after 1 h");
        let st = status_rx.borrow().clone();
        assert!(st.failing.is_empty(), "{st:?}");
        assert_eq!(st.writes, 1);
        stop_tx.send(true).unwrap();
        task.await.expect("the runner did not panic");
        assert_eq!(status_rx.borrow().state, SinkState::Stopped);
    }
}
