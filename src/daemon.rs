//! [`Daemon`]: every camera task and every sink task, started and stopped as one.
//!
//! Shutdown is explicit and bounded: [`Daemon::shutdown`] flips one `watch`
//! flag that every task selects on. Camera tasks finish the still they are
//! making, publish it, drop their session (retina sends TEARDOWN) and wait
//! briefly for the TEARDOWN; sink tasks flush what is pending. The whole
//! thing is given [`SHUTDOWN_GRACE`]; whatever is still running then is
//! aborted, so a hung camera cannot keep systemd waiting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::config::Config;
use crate::decode::DecoderPool;
use crate::sink::{supervise_sink, CloudflareKvSink, DirSink, Sink, SinkLimits, SinkStatus};
use crate::source::{spawn_camera, CameraStatus, CameraTask};
use crate::Store;

/// Time allowed for a clean shutdown before tasks are aborted.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// A running rtsnap: one task per camera, one per sink, one shared store.
pub struct Daemon {
    store: Store,
    shutdown: watch::Sender<bool>,
    cameras: Vec<(watch::Receiver<CameraStatus>, JoinHandle<()>)>,
    sinks: Vec<(watch::Receiver<SinkStatus>, JoinHandle<()>)>,
    http: Option<(SocketAddr, JoinHandle<()>)>,
    pool: Arc<DecoderPool>,
}

impl Daemon {
    /// Starts the cameras, the sinks and the HTTP server the configuration
    /// names. Must be called inside a tokio runtime.
    ///
    /// # Panics
    ///
    /// If the `[http]` address cannot be bound; [`Daemon::try_start`] returns
    /// that error instead.
    pub fn start(config: Config) -> Daemon {
        Daemon::start_with_sinks(config, Vec::new())
    }

    /// Like [`Daemon::start`], plus sinks of the caller's own.
    pub fn start_with_sinks(config: Config, extra_sinks: Vec<Arc<dyn Sink>>) -> Daemon {
        Daemon::try_start(config, extra_sinks)
            .unwrap_or_else(|e| panic!("cannot start the HTTP server: {e}"))
    }

    /// Like [`Daemon::start_with_sinks`], but a listen address that cannot
    /// be bound (in use, not permitted) is an error, not a panic. Nothing is
    /// left running when it fails.
    pub fn try_start(
        config: Config,
        extra_sinks: Vec<Arc<dyn Sink>>,
    ) -> Result<Daemon, std::io::Error> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        // Bind first: a taken port fails the start before any camera dials.
        let listener = match &config.http {
            Some(h) => {
                let l = std::net::TcpListener::bind(h.listen).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", h.listen))
                })?;
                let addr = l.local_addr()?;
                Some((l, addr))
            }
            None => None,
        };
        let store = Store::new();
        let pool = Arc::new(DecoderPool::new(config.decoders));
        let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
        if let Some(dir) = &config.sinks.dir {
            sinks.push(Arc::new(DirSink::new(dir)));
        }
        if let Some(kv) = &config.sinks.cloudflare_kv {
            sinks.push(Arc::new(CloudflareKvSink::new(kv)));
        }
        sinks.extend(extra_sinks);
        let sinks = sinks
            .into_iter()
            .map(|s| {
                let (tx, rx) = watch::channel(SinkStatus::default());
                let task = tokio::spawn(supervise_sink(
                    s,
                    store.clone(),
                    shutdown_rx.clone(),
                    tx,
                    SinkLimits::default(),
                ));
                (rx, task)
            })
            .collect::<Vec<_>>();
        let cameras = config
            .cameras
            .iter()
            .map(|c| {
                spawn_camera(CameraTask {
                    config: c.clone(),
                    timeout: config.timeout,
                    quality: config.quality,
                    max_access_unit: config.max_access_unit,
                    pool: pool.clone(),
                    store: store.clone(),
                    shutdown: shutdown_rx.clone(),
                })
            })
            .collect::<Vec<_>>();
        let http = match (listener, &config.http) {
            (Some((listener, addr)), Some(h)) => {
                let state = crate::http::HttpState::new(
                    store.clone(),
                    cameras
                        .iter()
                        .zip(&config.cameras)
                        .map(|((rx, _), c)| (rx.clone(), c.interval))
                        .collect(),
                    sinks.iter().map(|(rx, _)| rx.clone()).collect(),
                    h,
                );
                let task = tokio::spawn(crate::http::serve(listener, state, shutdown_rx.clone()));
                Some((addr, task))
            }
            _ => None,
        };
        Ok(Daemon {
            store,
            shutdown,
            cameras,
            sinks,
            http,
            pool,
        })
    }

    /// The address the HTTP server listens on (with the real port when the
    /// configuration asked for port 0), if it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(a, _)| *a)
    }

    /// The latest-still store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every camera's current status, in configuration order.
    pub fn status(&self) -> Vec<CameraStatus> {
        self.cameras
            .iter()
            .map(|(rx, _)| rx.borrow().clone())
            .collect()
    }

    /// Every sink's counters and failing cameras.
    pub fn sink_status(&self) -> Vec<SinkStatus> {
        self.sinks
            .iter()
            .map(|(rx, _)| rx.borrow().clone())
            .collect()
    }

    /// Decoders the shared pool holds right now.
    pub fn decoders(&self) -> usize {
        self.pool.decoders()
    }

    /// Stops everything: TEARDOWN sent on every session, stills in flight
    /// finished, sinks flushed; aborts what is left after [`SHUTDOWN_GRACE`].
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        // Cameras first, so their last stills reach the sinks.
        for (_, h) in self.cameras {
            wait_or_abort(h, deadline, "camera").await;
        }
        for (_, h) in self.sinks {
            wait_or_abort(h, deadline, "sink").await;
        }
        if let Some((_, h)) = self.http {
            // Idle keep-alive connections must not hold the shutdown up.
            let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
            wait_or_abort(
                h,
                deadline.min(soon).max(tokio::time::Instant::now()),
                "http",
            )
            .await;
        }
    }
}

async fn wait_or_abort(mut h: JoinHandle<()>, deadline: tokio::time::Instant, what: &str) {
    if tokio::time::timeout_at(deadline, &mut h).await.is_err() {
        warn!("a {what} task did not stop in time; aborting it");
        h.abort();
    }
}
