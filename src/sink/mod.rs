//! The sink stage: where stills go after the in-memory [`Store`](crate::Store).
//!
//! Each sink implements [`Sink`] and is driven by its own task
//! ([`run_sink`]), which subscribes to the store. The task, not the sink,
//! owns the policy every sink shares:
//!
//! * **Latest wins.** At most one pending still per camera. A newer still
//!   replaces a pending one, so a slow or failing sink never makes a queue
//!   grow and never writes an old still over a newer one.
//! * **Failures are per camera and retried.** A write that fails (disk full,
//!   permission denied) is logged once with the reason, retried with backoff,
//!   and logged again when it recovers. Other cameras and other sinks go on.
//! * **Shutdown flushes.** On shutdown the task makes one last attempt at
//!   whatever is pending, then returns.

pub mod dir;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{Snapshot, Store};

pub use dir::DirSink;

/// A destination for stills.
///
/// `write` receives every camera's newest still (latest wins); it is never
/// called concurrently for one sink.
pub trait Sink: Send + Sync + 'static {
    /// A short name for logs and status, e.g. `dir`.
    fn name(&self) -> &str;

    /// Stores one still. An error is retried later with the newest still of
    /// that camera; its message should say what the user can do about it.
    fn write<'a>(&'a self, snapshot: &'a Snapshot) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// A failed write, in words a user can act on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// What failed and what to check.
    pub message: String,
}

impl SinkError {
    /// An error with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        SinkError {
            message: message.into(),
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

/// Drives one sink until `shutdown` becomes true, then flushes once.
pub async fn run_sink(sink: Arc<dyn Sink>, store: Store, mut shutdown: watch::Receiver<bool>) {
    let mut sub = store.subscribe();
    let mut pending: HashMap<Arc<str>, Pending> = HashMap::new();
    let mut failing: HashMap<Arc<str>, String> = HashMap::new();
    loop {
        let next_retry = pending.values().map(|p| p.not_before).min();
        tokio::select! {
            fresh = sub.next() => {
                for s in fresh {
                    let failures = pending.get(&s.camera).map_or(0, |p| p.failures);
                    let not_before = pending.get(&s.camera).map_or(Instant::now(), |p| p.not_before);
                    pending.insert(s.camera.clone(), Pending { snapshot: s, failures, not_before });
                }
            }
            _ = sleep_until_opt(next_retry) => {}
            _ = crate::stopping(&mut shutdown) => {
                for p in pending.values_mut() { p.not_before = Instant::now(); }
                write_due(&*sink, &mut pending, &mut failing).await;
                return;
            }
        }
        write_due(&*sink, &mut pending, &mut failing).await;
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn write_due(
    sink: &dyn Sink,
    pending: &mut HashMap<Arc<str>, Pending>,
    failing: &mut HashMap<Arc<str>, String>,
) {
    let now = Instant::now();
    let due: Vec<Arc<str>> = pending
        .iter()
        .filter(|(_, p)| p.not_before <= now)
        .map(|(c, _)| c.clone())
        .collect();
    for camera in due {
        let p = pending.get_mut(&camera).expect("due camera is pending");
        match sink.write(&p.snapshot).await {
            Ok(()) => {
                if failing.remove(&camera).is_some() {
                    info!(camera = %camera, sink = sink.name(), "sink write recovered");
                }
                pending.remove(&camera);
            }
            Err(e) => {
                p.failures += 1;
                let backoff = RETRY_MIN
                    .saturating_mul(1 << (p.failures - 1).min(5))
                    .min(RETRY_MAX);
                p.not_before = Instant::now() + backoff;
                // One line per change of error, not one per retry.
                if failing.get(&camera) != Some(&e.message) {
                    warn!(camera = %camera, sink = sink.name(), retry_in = ?backoff, "{}", e.message);
                    failing.insert(camera.clone(), e.message);
                }
            }
        }
    }
}
