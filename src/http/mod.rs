//! The built-in HTTP server: a viewer page, the latest stills, status JSON,
//! Prometheus metrics and a health check, all served from memory.
//!
//! It runs on the daemon's tokio runtime when the configuration has an
//! `[http]` table, one module per concern:
//!
//! * [`viewer`]: `/`, a grid of every camera's latest still that keeps itself fresh;
//! * [`snapshot`]: `/snapshot/<camera>.jpg`, with `ETag`, `Last-Modified` and `?max_age=`;
//! * [`status`]: `/api/status` (JSON) and `/healthz`;
//! * [`metrics`]: `/metrics`, Prometheus text format;
//! * [`auth`]: bearer token and argon2id basic authentication, with
//!   bounded argon2 waiting and per-client backoff;
//! * [`host`]: the `Host` check against DNS rebinding;
//! * [`server`]: the accept loop and connections, with a connection cap,
//!   header and idle timeouts.
//!
//! Nothing here reads a file or prints a secret: camera URLs carry no
//! credentials (the configuration refuses them) and are not served anyway.

pub mod auth;
pub mod host;
pub mod metrics;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod viewer;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::sink::SinkStatus;
use crate::source::CameraStatus;
use crate::Store;

/// What the handlers read: the store and every task's status feed.
pub struct HttpState {
    /// The latest stills.
    pub store: Store,
    /// Each camera's status feed and still interval, in configuration order.
    pub cameras: Vec<(watch::Receiver<CameraStatus>, Duration)>,
    /// Each sink's status feed.
    pub sinks: Vec<watch::Receiver<SinkStatus>>,
    /// Authentication, if any.
    pub auth: auth::Auth,
    /// Which `Host` names are served.
    pub hosts: host::HostPolicy,
    /// The open connections and their limits.
    pub connections: Arc<server::Connections>,
}

impl HttpState {
    /// The state for a server configured by `config`.
    pub fn new(
        store: Store,
        cameras: Vec<(watch::Receiver<CameraStatus>, Duration)>,
        sinks: Vec<watch::Receiver<SinkStatus>>,
        config: &crate::config::HttpConfig,
    ) -> Self {
        HttpState {
            store,
            cameras,
            sinks,
            auth: auth::Auth::new(config),
            hosts: host::HostPolicy::new(config),
            connections: Arc::new(server::Connections::new(server::Limits::new(config))),
        }
    }

    /// A consistent copy of every camera's status, with its interval.
    pub fn camera_status(&self) -> Vec<(CameraStatus, Duration)> {
        self.cameras
            .iter()
            .map(|(rx, interval)| (rx.borrow().clone(), *interval))
            .collect()
    }

    /// A copy of every sink's status.
    pub fn sink_status(&self) -> Vec<SinkStatus> {
        self.sinks.iter().map(|rx| rx.borrow().clone()).collect()
    }
}

/// The routes, with authentication and common headers applied.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/", get(viewer::page))
        .route("/snapshot/{file}", get(snapshot::still))
        .route("/api/status", get(status::json))
        .route("/healthz", get(status::healthz))
        .route("/metrics", get(metrics::prometheus))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found\n") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        // Outside authentication: a misdirected request learns nothing,
        // not even whether credentials are needed.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            host::check,
        ))
        .layer(axum::middleware::map_response(common_headers))
        .with_state(state)
}

async fn common_headers(mut r: axum::response::Response) -> axum::response::Response {
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// Serves on `listener` (already bound, so a taken port was reported at
/// start) until `shutdown` becomes true, within the configured connection
/// limits (see [`server`]).
pub async fn serve(
    listener: std::net::TcpListener,
    state: HttpState,
    shutdown: watch::Receiver<bool>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("the HTTP server cannot use its socket: {e}");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("HTTP server listening on http://{addr}/");
    }
    let connections = state.connections.clone();
    let app = router(Arc::new(state));
    server::run(listener, app, connections, shutdown).await;
}

/// Milliseconds since the Unix epoch, for JSON.
pub(crate) fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
