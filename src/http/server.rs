//! The HTTP server's own accept loop and connections (hyper's HTTP/1),
//! built so that no client can make it stop answering or take the
//! process's file descriptors.
//!
//! `axum::serve` accepts without limit and never times a connection out:
//! 1,100 idle sockets once took every descriptor, the server logged
//! `Too many open files` and stopped answering, and a camera's reconnect
//! failed with EMFILE. Here:
//!
//! * at most `max_connections` are open; a new connection beyond that
//!   closes the one idle the longest (no request in its handler), and only
//!   when every one is busy is the new one refused, at once, with a 503;
//! * a request head must arrive within `header_timeout` of its first byte
//!   (slow-loris), and a connection with no request in progress and no
//!   bytes moving is closed after `idle_timeout` (before its first request,
//!   between keep-alive requests, or when a client stops reading);
//! * an accept error never ends the loop: a per-connection one is skipped;
//!   anything else (EMFILE, ENFILE, ENOBUFS...) is logged at most once per
//!   [`WARN_EVERY`], and the loop waits [`ACCEPT_BACKOFF`] before trying
//!   again, after closing the longest-idle connection when descriptors ran
//!   out, so that the next client can be answered.
//!
//! The timers are ours, not hyper's (its header timer also runs between
//! keep-alive requests, which would make the two timeouts one).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower_service::Service;

use crate::config::HttpConfig;

/// The least time between two warnings about accept errors.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The wait after an accept error that is not about one connection.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The wait after an accept error when a connection was closed to free a
/// descriptor: enough for its task to close it.
const EVICTED_BACKOFF: Duration = Duration::from_millis(10);

/// How long a connection may take to finish its request at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The answer to a connection over the limit when every open one is busy.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 38\r\nConnection: close\r\n\r\n\
too many connections; try again soon\r\n";

/// The connection limits, from `[http]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// From a request head's first byte to its end.
    pub header_timeout: Duration,
    /// With no request in progress and no bytes moving.
    pub idle_timeout: Duration,
}

impl Limits {
    /// From the `[http]` table.
    pub fn new(config: &HttpConfig) -> Self {
        Limits {
            max_connections: config.max_connections,
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
        }
    }
}

/// Why connections ended or were turned away, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Idle connections closed to make room for a new one (or a descriptor).
    pub evicted: AtomicU64,
    /// New connections refused because every open one was busy.
    pub refused: AtomicU64,
    /// Connections closed because a request head took over `header_timeout`.
    pub header_timeouts: AtomicU64,
    /// Connections closed after `idle_timeout`.
    pub idle_timeouts: AtomicU64,
    /// Accept errors other than a client giving up (EMFILE and the like).
    pub accept_errors: AtomicU64,
}

/// One open connection, as the accept loop and the timers see it.
#[derive(Debug)]
struct Conn {
    id: u64,
    /// Requests in their handler.
    in_flight: AtomicU32,
    /// Milliseconds (on the server's clock) of the last byte read or written.
    last_io: AtomicU64,
    /// Milliseconds + 1 when the current request head began; 0 when none is
    /// being read.
    head_since: AtomicU64,
    /// Told to close (to make room).
    evict: Notify,
    /// Told that a request head began: the header deadline may be sooner.
    rearm: Notify,
}

/// The open connections and the server's counters; shared by the accept
/// loop, every connection and `/metrics`.
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    epoch: Instant,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// For `/metrics`.
    pub counters: Counters,
}

impl Connections {
    /// An empty table with these limits.
    pub fn new(limits: Limits) -> Self {
        Connections {
            limits,
            epoch: Instant::now(),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap().len()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Registers a new connection, closing the longest-idle one if the
    /// table is full; `None` when it is full of busy ones.
    fn admit(&self) -> Option<Arc<Conn>> {
        let mut open = self.open.lock().unwrap();
        if open.len() >= self.limits.max_connections {
            if !Self::evict_idlest(&mut open) {
                return None;
            }
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            in_flight: AtomicU32::new(0),
            last_io: AtomicU64::new(self.now_ms()),
            head_since: AtomicU64::new(0),
            evict: Notify::new(),
            rearm: Notify::new(),
        });
        open.insert(id, conn.clone());
        Some(conn)
    }

    /// Closes the connection idle the longest, if any is idle.
    fn evict_idlest(open: &mut HashMap<u64, Arc<Conn>>) -> bool {
        let victim = open
            .values()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|c| c.last_io.load(Ordering::Relaxed))
            .map(|c| c.id);
        match victim.and_then(|id| open.remove(&id)) {
            Some(c) => {
                // A stored permit: the task sees it even if not waiting yet.
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// When `conn` must be closed if nothing happens first, and why.
    fn deadline(&self, conn: &Conn) -> (u64, Expiry) {
        let now = self.now_ms();
        let idle = self.limits.idle_timeout.as_millis() as u64;
        if conn.in_flight.load(Ordering::Acquire) > 0 {
            return (now + idle, Expiry::Recheck);
        }
        let idle_at = conn.last_io.load(Ordering::Relaxed) + idle;
        match conn.head_since.load(Ordering::Relaxed) {
            0 => (idle_at, Expiry::Idle),
            since => {
                let head_at = since - 1 + self.limits.header_timeout.as_millis() as u64;
                if head_at <= idle_at {
                    (head_at, Expiry::Header)
                } else {
                    (idle_at, Expiry::Idle)
                }
            }
        }
    }
}

/// What a connection's deadline stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// A request is in its handler: look again later.
    Recheck,
    /// Nothing moved for `idle_timeout`.
    Idle,
    /// The request head took `header_timeout`.
    Header,
}

/// Serves `app` on `listener` until `shutdown` becomes true, within
/// `conns`'s limits; see the module documentation.
pub async fn run(
    listener: TcpListener,
    app: Router,
    conns: Arc<Connections>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Some(limit) = open_files_limit() {
        if conns.limits.max_connections as u64 * 2 > limit {
            tracing::warn!(
                "[http] max_connections = {} is over half of this process's file limit ({limit}), \
                 which the cameras and sinks share: lower it, or raise LimitNOFILE= in the \
                 systemd unit",
                conns.limits.max_connections
            );
        }
    }
    let mut warned: Option<Instant> = None;
    let mut suppressed = 0u64;
    loop {
        let accepted = tokio::select! {
            () = crate::stopping(&mut shutdown) => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if about_one_connection(&e) => continue,
            Err(e) => {
                conns.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    let more = if suppressed > 0 {
                        format!(" ({suppressed} more since the last warning)")
                    } else {
                        String::new()
                    };
                    tracing::warn!(
                        "the HTTP server cannot accept a connection: {e}{more}; retrying \
                         (max_connections = {} in [http] should stay well below the file limit)",
                        conns.limits.max_connections
                    );
                    warned = Some(Instant::now());
                    suppressed = 0;
                } else {
                    suppressed += 1;
                }
                let freed = out_of_descriptors(&e)
                    && Connections::evict_idlest(&mut conns.open.lock().unwrap());
                if freed {
                    conns.counters.evicted.fetch_add(1, Ordering::Relaxed);
                }
                let pause = if freed {
                    EVICTED_BACKOFF
                } else {
                    ACCEPT_BACKOFF
                };
                tokio::select! {
                    () = crate::stopping(&mut shutdown) => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        match conns.admit() {
            Some(conn) => {
                conns.counters.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(
                    stream,
                    peer,
                    conn,
                    conns.clone(),
                    app.clone(),
                    shutdown.clone(),
                ));
            }
            None => {
                conns.counters.refused.fetch_add(1, Ordering::Relaxed);
                // A fresh socket's send buffer is empty: this does not block.
                let _ = stream.try_write(REFUSED);
            }
        }
    }
    drop(listener);
    // Let the connections finish (each has SHUTDOWN_GRACE), bounded.
    let deadline = Instant::now() + SHUTDOWN_GRACE + Duration::from_millis(500);
    while conns.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The soft limit on open files (Linux's `/proc/self/limits`), if known
/// and finite.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Accept errors that concern only the connection being accepted.
fn about_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// EMFILE (24) or ENFILE (23): the same numbers on Linux, the BSDs and macOS.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Removes the connection from the table when its task ends.
struct Registered(Arc<Connections>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.open.lock().unwrap().remove(&self.1);
    }
}

/// A request in its handler; ends with the handler, even if cancelled.
struct InFlight {
    conn: Arc<Conn>,
    conns: Arc<Connections>,
}

impl InFlight {
    fn new(conn: Arc<Conn>, conns: Arc<Connections>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.head_since.store(0, Ordering::Relaxed);
        InFlight { conn, conns }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn
            .last_io
            .store(self.conns.now_ms(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    conns: Arc<Connections>,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let _registered = Registered(conns.clone(), conn.id);
    let io = TokioIo::new(Tracked {
        io: stream,
        conn: conn.clone(),
        conns: conns.clone(),
    });
    let (svc_conn, svc_conns) = (conn.clone(), conns.clone());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let busy = InFlight::new(svc_conn.clone(), svc_conns.clone());
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move {
            let r: Result<_, Infallible> = app.call(req.map(axum::body::Body::new)).await;
            drop(busy);
            r
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(served);
    loop {
        let at = conns.epoch + Duration::from_millis(conns.deadline(&conn).0);
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("HTTP connection from {peer}: {e}");
                }
                return;
            }
            () = conn.evict.notified() => return,
            () = crate::stopping(&mut shutdown) => {
                served.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, served.as_mut()).await;
                return;
            }
            () = conn.rearm.notified() => continue,
            () = tokio::time::sleep_until(at) => {
                // Something may have moved meanwhile: only a deadline that
                // still stands closes the connection.
                let (at, why) = conns.deadline(&conn);
                if at > conns.now_ms() {
                    continue;
                }
                match why {
                    Expiry::Recheck => continue,
                    Expiry::Idle => conns.counters.idle_timeouts.fetch_add(1, Ordering::Relaxed),
                    Expiry::Header => conns.counters.header_timeouts.fetch_add(1, Ordering::Relaxed),
                };
                return;
            }
        }
    }
}

/// The socket, noting when bytes move and when a request head begins.
struct Tracked {
    io: TcpStream,
    conn: Arc<Conn>,
    conns: Arc<Connections>,
}

impl Tracked {
    fn moved(&self, read: bool) {
        let now = self.conns.now_ms();
        self.conn.last_io.store(now, Ordering::Relaxed);
        if read
            && self.conn.in_flight.load(Ordering::Acquire) == 0
            && self
                .conn
                .head_since
                .compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.conn.rearm.notify_one();
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved(true);
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved(false);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved(false);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits {
            max_connections: max,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn full_table_evicts_the_idlest_and_refuses_when_all_busy() {
        let conns = Connections::new(limits(3));
        let a = conns.admit().unwrap();
        let b = conns.admit().unwrap();
        let c = conns.admit().unwrap();
        a.last_io.store(50, Ordering::Relaxed);
        b.last_io.store(10, Ordering::Relaxed);
        c.last_io.store(30, Ordering::Relaxed);
        b.in_flight.store(1, Ordering::Relaxed);
        // b has been quiet longest but is busy: c, quiet since 30, goes.
        let d = conns.admit().unwrap();
        assert_eq!(conns.open(), 3);
        assert!(!conns.open.lock().unwrap().contains_key(&c.id));
        assert_eq!(conns.counters.evicted.load(Ordering::Relaxed), 1);
        for x in [&a, &d] {
            x.in_flight.store(1, Ordering::Relaxed);
        }
        assert!(conns.admit().is_none(), "every open connection is busy");
        assert_eq!(conns.open(), 3);
    }

    #[tokio::test]
    async fn deadlines() {
        let conns = Connections::new(limits(3));
        let a = conns.admit().unwrap();
        a.last_io.store(1_000, Ordering::Relaxed);
        assert_eq!(conns.deadline(&a), (61_000, Expiry::Idle));
        a.head_since.store(1_001, Ordering::Relaxed);
        assert_eq!(conns.deadline(&a), (11_000, Expiry::Header));
        a.in_flight.store(1, Ordering::Relaxed);
        assert_eq!(conns.deadline(&a).1, Expiry::Recheck);
    }
}
