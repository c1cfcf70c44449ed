//! [`supervise_sink`]: a sink task that dies is restarted, and says so.
//!
//! Before this, a panic in the runner (an overflowing `Retry-After`) ended
//! the sink's task silently: uploads stopped for good while `/api/status`
//! still showed the sink's last, healthy counters. Now the death is caught,
//! logged, counted (`restarts`, `rtsnap_sink_restarts_total`) and shown
//! (`state: restarting`, `last_restart`), and the loop starts again after a
//! backoff, so a sink that panics on every still cannot spin a core.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::SystemTime;

use futures::FutureExt as _;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::error;

use super::retry::system_after;
use super::{drive, Sink, SinkExit, SinkLimits, SinkRestart, SinkState, SinkStatus};
use crate::Store;

/// The longest panic message kept in status; the rest is in the log.
const MESSAGE_MAX: usize = 300;

/// Drives one sink like [`run_sink`](super::run_sink) until `shutdown`
/// becomes true, restarting its loop (with backoff, see [`SinkLimits`]) when
/// it panics or returns on its own. What the daemon runs for every sink.
pub async fn supervise_sink(
    sink: Arc<dyn Sink>,
    store: Store,
    shutdown: watch::Receiver<bool>,
    status: watch::Sender<SinkStatus>,
    limits: SinkLimits,
) {
    let name = sink.name().to_owned();
    let (rx, tx) = (shutdown.clone(), status.clone());
    supervise(
        &name,
        move || drive(sink.clone(), store.clone(), rx.clone(), tx.clone(), limits),
        shutdown,
        status,
        limits,
    )
    .await
}

/// The supervision loop around any `run`, so tests can hand it loops that
/// misbehave in ways the real one cannot (returning early).
pub(crate) async fn supervise<F, Fut>(
    name: &str,
    mut run: F,
    mut shutdown: watch::Receiver<bool>,
    status: watch::Sender<SinkStatus>,
    limits: SinkLimits,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut delay = limits.restart_min;
    loop {
        let started = Instant::now();
        status.send_modify(|s| s.state = SinkState::Running);
        // The loop's state (pending stills) is lost with it; the store keeps
        // every camera's newest still, which the next loop picks up.
        let outcome = AssertUnwindSafe(run()).catch_unwind().await;
        if *shutdown.borrow() {
            // Asked to stop (a panic in the final flush has nothing left to
            // restart for).
            break;
        }
        let cause = match outcome {
            Ok(()) => SinkExit::Returned,
            Err(payload) => SinkExit::Panicked(panic_message(&*payload)),
        };
        if started.elapsed() >= limits.restart_max {
            delay = limits.restart_min; // it worked for a good while
        }
        let wait = delay.min(limits.restart_max);
        let now = SystemTime::now();
        error!(sink = name, restart_in = ?wait, "sink task {cause}; restarting it");
        status.send_modify(|s| {
            s.restarts += 1;
            s.last_restart = Some(SinkRestart { at: now, cause });
            s.state = SinkState::Restarting {
                until: system_after(now, wait),
            };
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = crate::stopping(&mut shutdown) => break,
        }
        delay = delay.saturating_mul(2).min(limits.restart_max);
    }
    status.send_modify(|s| s.state = SinkState::Stopped);
}

/// A panic payload's message (`panic!` gives `&str` or `String`), shortened.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    let msg = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    match msg.char_indices().nth(MESSAGE_MAX) {
        Some((cut, _)) => format!("{}...", &msg[..cut]),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_returns_is_restarted_with_growing_backoff() {
        let runs = Arc::new(AtomicU32::new(0));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tx, rx) = watch::channel(SinkStatus::default());
        let r = runs.clone();
        let task = tokio::spawn(async move {
            supervise(
                "early",
                move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    async {}
                },
                stop_rx,
                tx,
                SinkLimits::default(),
            )
            .await
        });
        // Deaths at 0, 1, 3, 7, 15, 31 s: restarts wait 1, 2, 4, 8, 16, 32 s.
        tokio::time::sleep(Duration::from_millis(31_500)).await;
        let st = rx.borrow().clone();
        assert_eq!(runs.load(Ordering::SeqCst), 6, "{st:?}");
        assert_eq!(st.restarts, 6);
        assert_eq!(
            st.last_restart.as_ref().map(|r| &r.cause),
            Some(&SinkExit::Returned)
        );
        assert!(matches!(st.state, SinkState::Restarting { .. }), "{st:?}");
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(rx.borrow().state, SinkState::Stopped);
        assert_eq!(runs.load(Ordering::SeqCst), 6, "no restart once stopping");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_caught_and_its_message_kept() {
        let runs = Arc::new(AtomicU32::new(0));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tx, rx) = watch::channel(SinkStatus::default());
        let r = runs.clone();
        let srx = stop_rx.clone();
        let task = tokio::spawn(async move {
            supervise(
                "panicky",
                move || {
                    let n = r.fetch_add(1, Ordering::SeqCst);
                    let mut srx = srx.clone();
                    async move {
                        if n == 0 {
                            panic!("overflow when adding duration to instant");
                        }
                        crate::stopping(&mut srx).await;
                    }
                },
                stop_rx,
                tx,
                SinkLimits::default(),
            )
            .await
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        let st = rx.borrow().clone();
        assert_eq!(st.restarts, 1);
        assert_eq!(st.state, SinkState::Running, "running again: {st:?}");
        assert_eq!(
            st.last_restart.unwrap().cause,
            SinkExit::Panicked("overflow when adding duration to instant".into())
        );
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn long_panic_messages_are_cut_on_a_char_boundary() {
        let long: Box<dyn Any + Send> = Box::new("é".repeat(1000));
        let m = panic_message(&*long);
        assert_eq!(m.chars().count(), MESSAGE_MAX + 3);
        let none: Box<dyn Any + Send> = Box::new(42u8);
        assert_eq!(panic_message(&*none), "a panic without a message");
    }
}
