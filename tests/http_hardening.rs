//! The HTTP server under hostile clients, on loopback, against the real
//! daemon (in process) and the real `rtsnap run` binary (for its file
//! descriptors): the `Host` check against DNS rebinding, a thousand idle
//! sockets, slow-loris headers, idle keep-alive connections, EMFILE, and a
//! flood of wrong passwords. Every wait is bounded; the figures a test
//! measures are printed (run with `--nocapture` to see them).
//!
//! Clients that must count as different machines bind different loopback
//! addresses (127.0.0.2, 127.0.1.x...): Linux routes all of 127.0.0.0/8 to
//! the loopback interface.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::Killed;
use rtsnap::{Config, Daemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_rtsnap");
const NOWHERE: &str = "rtsp://127.0.0.1:9/x";
const LIMIT: Duration = Duration::from_secs(10);

fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// A daemon with one unreachable camera and `[http]` on an ephemeral port.
fn start_daemon(http_extra: &str) -> (Daemon, SocketAddr) {
    let text = format!(
        "timeout = \"3s\"\n[[camera]]\nname = \"cam\"\nurl = \"{NOWHERE}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n{http_extra}\n"
    );
    let config = Config::from_toml(Path::new("test.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let daemon = Daemon::try_start(config, Vec::new()).unwrap();
    let addr = daemon.http_addr().unwrap();
    (daemon, addr)
}

/// One HTTP response, read to the end of its connection.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

fn parse(bytes: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

async fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(LIMIT, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// Sends `request` from `from` on a fresh connection and reads the reply.
async fn send_from(from: IpAddr, addr: SocketAddr, request: &str) -> std::io::Result<Reply> {
    let mut s = connect_from(from, addr).await?;
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("read timed out"))??;
    Ok(parse(&buf))
}

/// GET `path` with this `Host` (and extra header lines), `Connection: close`.
fn get(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

fn basic(user: &str, password: &str) -> String {
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {v}\r\n")
}

/// The value of an unlabelled metric.
async fn metric(addr: SocketAddr, name: &str, extra: &str) -> f64 {
    let r = send_from(localhost(), addr, &get("/metrics", "127.0.0.1", extra))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_host_is_misdirected_loopback_and_listed_hosts_are_served() {
    let (daemon, addr) = start_daemon("hosts = [\"Cams.LAN\", \"viewer.example.org:8443\"]");
    let port = addr.port();
    let status = |host: String| async move {
        send_from(localhost(), addr, &get("/api/status", &host, ""))
            .await
            .unwrap()
    };
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".into(),
        format!("localhost:{port}"),
        "localhost".into(),
        format!("[::1]:{port}"),
        "[::1]".into(),
        "cams.lan".into(),
        format!("CAMS.lan:{port}"),
        "viewer.example.org:8443".into(),
    ] {
        let r = status(host.clone()).await;
        assert_eq!(r.status, 200, "Host: {host}: {r:?}");
    }
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        "viewer.example.org".into(),
        format!("viewer.example.org:{port}"),
    ] {
        let r = status(host.clone()).await;
        assert_eq!(r.status, 421, "Host: {host}: {r:?}");
        assert!(r.body.contains("[http] hosts"), "{r:?}");
        assert!(!r.body.contains("\"cameras\""), "{r:?}");
    }
    // Every route is guarded, and an absolute URI's authority counts too.
    for path in ["/", "/metrics", "/healthz", "/snapshot/cam.jpg", "/nope"] {
        let r = send_from(localhost(), addr, &get(path, "evil.example", ""))
            .await
            .unwrap();
        assert_eq!(r.status, 421, "{path}: {r:?}");
    }
    let r = send_from(
        localhost(),
        addr,
        "GET http://evil.example/api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 421, "{r:?}");
    // HTTP/1.0 without a Host header.
    let r = send_from(localhost(), addr, "GET /api/status HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    daemon.shutdown().await;

    // Without `hosts`, only loopback names.
    let (daemon, addr) = start_daemon("");
    let r = send_from(localhost(), addr, &get("/api/status", "cams.lan", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 421, "{r:?}");
    daemon.shutdown().await;

    // With authentication and no `hosts`, any name: credentials guard it.
    std::env::set_var("RTSNAP_HARDENING_TOKEN", "hardening-token-0123456789");
    let (daemon, addr) = start_daemon("bearer_token_env = \"RTSNAP_HARDENING_TOKEN\"");
    let auth = "Authorization: Bearer hardening-token-0123456789\r\n";
    let r = send_from(localhost(), addr, &get("/api/status", "cams.lan", auth))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let r = send_from(localhost(), addr, &get("/api/status", "cams.lan", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    daemon.shutdown().await;
    // ... and with `hosts` set, the list again, before authentication.
    let (daemon, addr) =
        start_daemon("bearer_token_env = \"RTSNAP_HARDENING_TOKEN\"\nhosts = [\"cams.lan\"]");
    for (host, want) in [("cams.lan", 200), ("localhost", 200), ("evil.example", 421)] {
        let r = send_from(localhost(), addr, &get("/api/status", host, auth))
            .await
            .unwrap();
        assert_eq!(r.status, want, "{host}: {r:?}");
    }
    daemon.shutdown().await;
}

/// Raises this process's soft RLIMIT_NOFILE to at least `want` (within
/// the hard limit), for the client side of the socket tests, which run in
/// parallel in this one process (the soft limit is often 1024).
fn raise_nofile(want: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        if l.rlim_cur < want as libc::rlim_t {
            l.rlim_cur = l.rlim_max.min(want as libc::rlim_t);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
        }
    }
    assert!(
        l.rlim_cur >= want as libc::rlim_t,
        "this test needs {want} file descriptors, the hard limit is {}",
        l.rlim_max
    );
}

/// `rtsnap run` with `http_extra` in `[http]`, its soft and hard
/// RLIMIT_NOFILE set to `nofile` (systemd's default is 1024), its stderr
/// collected; returns the child, its HTTP address and the log lines.
fn start_binary(
    dir: &Path,
    camera_url: &str,
    http_extra: &str,
    nofile: u64,
) -> (Killed, SocketAddr, Arc<Mutex<Vec<String>>>) {
    use std::os::unix::process::CommandExt;
    let config = dir.join("rtsnap.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\ntimeout = \"3s\"\n[[camera]]\nname = \"cam\"\n\
             url = \"{camera_url}\"\n[http]\nlisten = \"127.0.0.1:0\"\n{http_extra}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(move || {
            let l = libc::rlimit {
                rlim_cur: nofile as libc::rlim_t,
                rlim_max: nofile as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Killed(child);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.trim_end_matches('/').to_owned());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no address from rtsnap: {:?}", lines.lock().unwrap()));
    (child, addr.parse().unwrap(), lines)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Opens `n` connections that never send a byte, bounded in time.
async fn idle_sockets(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let s = tokio::time::timeout(LIMIT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("idle socket {i} did not connect"))
            .unwrap();
        v.push(s);
    }
    v
}

/// A fresh `GET /api/status`, timed; retries once on a reset (the server
/// may close a connection it had just accepted to make room).
async fn timed_status(addr: SocketAddr) -> (Reply, Duration) {
    let t = Instant::now();
    let r = match send_from(localhost(), addr, &get("/api/status", "127.0.0.1", "")).await {
        Ok(r) => r,
        Err(_) => send_from(localhost(), addr, &get("/api/status", "127.0.0.1", ""))
            .await
            .unwrap(),
    };
    (r, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_idle_sockets_leave_room_and_descriptors() {
    const IDLE: usize = 1100;
    raise_nofile(8192);
    let dir = tempfile::tempdir().unwrap();
    // The setting: systemd's default 1024 descriptors, the default
    // cap, and a real camera (the fixture server) that must keep working.
    let server = common::start(&["/a"], rtsnap::fixture::Pacing::Live).await;
    let (child, addr, lines) = start_binary(dir.path(), &server.url("/a"), "", 1024);
    let pid = child.0.id();
    wait_camera(addr, "a first still", |c| c["stills"].as_u64() >= Some(1)).await;
    let (r, _) = timed_status(addr).await;
    assert_eq!(r.status, 200, "{r:?}");
    let baseline = open_fds(pid);

    let t = Instant::now();
    let idle = idle_sockets(addr, IDLE).await;
    let opened_in = t.elapsed();
    let (r, fresh) = timed_status(addr).await;
    assert_eq!(r.status, 200, "{r:?}");
    // Every idle socket is accepted in turn: the newest kept, the oldest closed.
    let mut open = 0.0;
    let mut evicted = 0.0;
    for _ in 0..100 {
        evicted = metric(addr, "rtsnap_http_connections_evicted_total", "").await;
        open = metric(addr, "rtsnap_http_connections", "").await;
        if evicted >= (IDLE - 256) as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fds = open_fds(pid);
    let (r2, fresh2) = timed_status(addr).await;
    assert_eq!(r2.status, 200, "{r2:?}");
    println!(
        "{IDLE} idle sockets opened in {opened_in:?}; a fresh request answered in {fresh:?} \
         (again after the count: {fresh2:?}); server: {open} connections open, {evicted} \
         evicted, {fds} descriptors (baseline {baseline})"
    );
    assert!(open <= 256.0, "{open} connections open");
    assert!(evicted >= (IDLE - 256) as f64, "{evicted} evicted");
    assert!(
        fds <= baseline + 256 + 8,
        "{fds} descriptors open (baseline {baseline})"
    );
    assert!(fresh < LIMIT && fresh2 < LIMIT);
    // With the idle sockets still open, the camera's session is cut: it must
    // reconnect (it failed with EMFILE before the cap) and make stills.
    let before = camera_json(addr).await["stills"].as_u64().unwrap();
    server.faults().drop_connections(Some("/a"));
    let t = Instant::now();
    wait_camera(addr, "a reconnect and a new still", |c| {
        c["reconnects"].as_u64() >= Some(1)
            && c["state"] == "streaming"
            && c["stills"].as_u64() > Some(before)
    })
    .await;
    println!(
        "the camera reconnected and made a still {:?} after its session was cut",
        t.elapsed()
    );
    let log = lines.lock().unwrap().join("\n");
    assert!(!log.contains("Too many open files"), "{log}");
    drop(idle);
    drop(child);
    server.shutdown().await;
}

/// The one camera's entry of `/api/status`.
async fn camera_json(addr: SocketAddr) -> serde_json::Value {
    let r = send_from(localhost(), addr, &get("/api/status", "127.0.0.1", ""))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    doc["cameras"][0].clone()
}

/// Polls `/api/status` every 200 ms, for at most 30 s, until `ok`.
async fn wait_camera(addr: SocketAddr, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = camera_json(addr).await;
        if ok(&c) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {c}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_server_backs_off_and_keeps_answering() {
    const IDLE: usize = 400;
    raise_nofile(8192);
    let dir = tempfile::tempdir().unwrap();
    // A cap above the process's descriptor limit: accept hits EMFILE.
    let (child, addr, lines) = start_binary(dir.path(), NOWHERE, "max_connections = 1000", 160);
    let t = Instant::now();
    let idle = idle_sockets(addr, IDLE).await;
    let (r, fresh) = timed_status(addr).await;
    assert_eq!(r.status, 200, "{r:?}");
    // Let the loop sit at the limit for a while: it must neither spin nor stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (r, fresh2) = timed_status(addr).await;
    assert_eq!(r.status, 200, "{r:?}");
    let errors = metric(addr, "rtsnap_http_accept_errors_total", "").await;
    let elapsed = t.elapsed().as_secs_f64();
    let log = lines.lock().unwrap().clone();
    let warnings = log
        .iter()
        .filter(|l| l.contains("cannot accept a connection"))
        .count();
    println!(
        "{IDLE} idle sockets against 160 descriptors: a fresh request answered in {fresh:?} \
         and {fresh2:?}; {errors} accept errors and {warnings} warnings in {elapsed:.1} s"
    );
    assert!(errors >= 1.0, "the limit was never reached");
    assert!(
        log.iter()
            .any(|l| l.contains("max_connections = 1000 is over half")),
        "no warning about the cap at start: {log:?}"
    );
    // At most one error per 10 ms back-off, plus one per idle socket freed.
    assert!(
        errors <= elapsed * 100.0 + IDLE as f64,
        "{errors} accept errors in {elapsed} s: spinning"
    );
    assert!(
        (1..=(elapsed / 10.0) as usize + 2).contains(&warnings),
        "{warnings} warnings: {log:?}"
    );
    drop(idle);
    drop(child);
}

/// Reads until the peer closes (or `limit`); how long that took, or `None`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    while t.elapsed() < limit {
        match tokio::time::timeout(limit - t.elapsed(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_closed() {
    let (daemon, addr) = start_daemon("header_timeout = \"1s\"\nidle_timeout = \"3s\"");

    // Slow-loris: a header line every 200 ms keeps bytes moving (so the idle
    // timer never fires) but the head never ends.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    s.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(LIMIT, rd.read(&mut buf)).await;
    let slow = t.elapsed();
    trickle.abort();
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "slow-loris not closed within {LIMIT:?}: {closed:?}"
    );
    assert!(slow >= Duration::from_millis(900), "closed early: {slow:?}");

    // A connection that never sends a byte.
    let mut quiet = TcpStream::connect(addr).await.unwrap();
    let silent = closed_within(&mut quiet, Duration::from_secs(15))
        .await
        .expect("a silent connection was not closed");
    assert!(silent >= Duration::from_millis(2800), "{silent:?}");

    // Keep-alive: two requests on one connection, then silence.
    let mut ka = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        ka.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = tokio::time::timeout(LIMIT, ka.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed mid-response");
            got.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&got);
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
        // The body is short; let it arrive before the next request.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = tokio::time::timeout(Duration::from_millis(50), ka.read(&mut buf)).await;
    }
    let keep_alive = closed_within(&mut ka, Duration::from_secs(15))
        .await
        .expect("an idle keep-alive connection was not closed");
    assert!(keep_alive >= Duration::from_millis(2500), "{keep_alive:?}");

    let header_timeouts = metric(addr, "rtsnap_http_header_timeouts_total", "").await;
    let idle_timeouts = metric(addr, "rtsnap_http_idle_timeouts_total", "").await;
    println!(
        "header_timeout 1 s: slow-loris closed after {slow:?}; idle_timeout 3 s: silent \
         socket closed after {silent:?}, idle keep-alive after {keep_alive:?}"
    );
    assert_eq!(header_timeouts, 1.0);
    assert_eq!(idle_timeouts, 2.0);
    daemon.shutdown().await;
}

/// `n` concurrent basic-auth requests with a wrong password, from the given
/// addresses in turn; each reply's status and latency.
async fn flood(addr: SocketAddr, from: Vec<IpAddr>, n: usize) -> Vec<(u16, Option<u64>, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let ip = from[i % from.len()];
            tokio::spawn(async move {
                let t = Instant::now();
                let r = send_from(
                    ip,
                    addr,
                    &get(
                        "/api/status",
                        "127.0.0.1",
                        &basic("viewer", &format!("guess{i}")),
                    ),
                )
                .await
                .unwrap();
                let retry = r.header("retry-after").map(|v| v.parse().unwrap());
                (r.status, retry, t.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_does_not_stall_a_real_login() {
    const PASSWORD: &str = "correct horse battery";
    // 400 client and 400 server sockets, beside the other tests' thousands.
    raise_nofile(8192);
    let hash = rtsnap::http::auth::hash_password(&rtsnap::Secret::new(PASSWORD)).unwrap();
    // A cap above the flood, so that only authentication is measured here.
    let (daemon, addr) = start_daemon(&format!(
        "password_hash = '{hash}'\nusername = \"viewer\"\nmax_connections = 2000"
    ));
    let ip = |a: u8, b: u8, c: u8| IpAddr::from([127, a, b, c]);

    // One argon2 verification, unloaded, from an address of its own.
    let t = Instant::now();
    let r = send_from(
        ip(0, 0, 9),
        addr,
        &get("/", "127.0.0.1", &basic("viewer", "nope")),
    )
    .await
    .unwrap();
    let one = t.elapsed();
    assert_eq!(r.status, 401, "{r:?}");

    // 400 concurrent wrong passwords from one address, and a real login
    // from another while they are in flight.
    let attacker = tokio::spawn(flood(addr, vec![ip(0, 0, 2)], 400));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t = Instant::now();
    let real = send_from(
        localhost(),
        addr,
        &get("/api/status", "127.0.0.1", &basic("viewer", PASSWORD)),
    )
    .await
    .unwrap();
    let real_one_ip = t.elapsed();
    assert_eq!(real.status, 200, "{real:?}");
    let replies = attacker.await.unwrap();
    let denied = replies.iter().filter(|r| r.0 == 401).count();
    let throttled: Vec<_> = replies.iter().filter(|r| r.0 == 429).collect();
    let slowest = replies.iter().map(|r| r.2).max().unwrap();
    assert_eq!(denied + throttled.len(), 400, "{replies:?}");
    assert!(throttled.iter().all(|r| r.1.is_some_and(|s| s >= 1)));
    // A few free failures, then at most one more per back-off step.
    assert!((1..=8).contains(&denied), "{denied} verified");

    // 400 from 200 addresses (two each): the global bound answers 503 at
    // once; a real login from yet another address retries after Retry-After.
    // A fresh daemon: the first one remembers the real login's header.
    daemon.shutdown().await;
    let (daemon, addr) = start_daemon(&format!(
        "password_hash = '{hash}'\nusername = \"viewer\"\nmax_connections = 2000"
    ));
    let from: Vec<_> = (1..=200).map(|i| ip(0, 1, i)).collect();
    let attacker = tokio::spawn(flood(addr, from, 400));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t = Instant::now();
    let mut tries = 0;
    let real_many = loop {
        tries += 1;
        let r = send_from(
            ip(0, 0, 7),
            addr,
            &get("/api/status", "127.0.0.1", &basic("viewer", PASSWORD)),
        )
        .await
        .unwrap();
        match r.status {
            200 => break t.elapsed(),
            503 if tries < 10 => {
                let wait = r.header("retry-after").unwrap().parse::<u64>().unwrap();
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            _ => panic!("try {tries}: {r:?}"),
        }
    };
    let replies = attacker.await.unwrap();
    let count = |s: u16| replies.iter().filter(|r| r.0 == s).count();
    let slowest_many = replies.iter().map(|r| r.2).max().unwrap();
    println!(
        "one argon2 verification: {one:?}; 400 wrong passwords from one address: real login \
         in {real_one_ip:?}, {denied} verified, {} answered 429, slowest {slowest:?}; from 200 \
         addresses: real login in {real_many:?} ({tries} tries), {} verified, {} answered \
         503, {} 429, slowest {slowest_many:?}",
        throttled.len(),
        count(401),
        count(503),
        count(429),
    );
    assert_eq!(count(401) + count(503) + count(429), 400, "{replies:?}");
    assert!(
        count(503) > 0,
        "the global bound never engaged: {replies:?}"
    );
    // Before the bound, 400 queued verifications delayed a login by 13.6 s.
    assert!(real_one_ip < Duration::from_secs(3), "{real_one_ip:?}");
    assert!(real_many < LIMIT, "{real_many:?}");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_back_off_per_client() {
    const PASSWORD: &str = "tr0ub4dor&3";
    let hash = rtsnap::http::auth::hash_password(&rtsnap::Secret::new(PASSWORD)).unwrap();
    let (daemon, addr) = start_daemon(&format!("password_hash = '{hash}'"));
    let (a, b) = (IpAddr::from([127, 0, 0, 5]), IpAddr::from([127, 0, 0, 6]));
    let login = |from: IpAddr, pw: &'static str| async move {
        send_from(
            from,
            addr,
            &get("/api/status", "127.0.0.1", &basic("rtsnap", pw)),
        )
        .await
        .unwrap()
    };
    for i in 0..rtsnap::http::auth::FREE_FAILURES {
        let r = login(a, "wrong").await;
        assert_eq!(r.status, 401, "failure {i}: {r:?}");
    }
    // Now even the right password waits, and is not verified.
    let r = login(a, PASSWORD).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    // Another client is not held back by a's failures.
    let r = login(b, "wrong").await;
    assert_eq!(r.status, 401, "{r:?}");
    // After the wait a may try again; one more failure doubles the wait.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = login(a, "wrong").await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = login(a, "wrong").await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("2"), "{r:?}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = login(a, PASSWORD).await;
    assert_eq!(r.status, 200, "{r:?}");
    // The success forgot a's failures.
    let r = login(a, "wrong").await;
    assert_eq!(r.status, 401, "{r:?}");
    let throttled = metric(
        addr,
        "rtsnap_http_login_throttled_total",
        &basic("rtsnap", PASSWORD),
    )
    .await;
    assert_eq!(throttled, 2.0);
    daemon.shutdown().await;
}
