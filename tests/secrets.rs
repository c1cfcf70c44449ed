//! Secrets stay secret: credentials in camera URLs are refused (or, opted
//! in, masked everywhere), a camera that asks for Basic authentication gets
//! the password only when allowed and is named in the log and status, and no
//! password reaches the logs, even at RUST_LOG=trace, nor Debug output.
//!
//! Real sockets on 127.0.0.1: the fixture server (which can demand Basic), a
//! hostile RTSP server written here that answers everything with
//! `401 WWW-Authenticate: Basic` and records every byte it receives, and the
//! real `rtsnap` binary. Every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use rtsnap::fixture::{AuthScheme, FixtureServer, ServerBuilder};
use rtsnap::redact::RedactedUrl;
use rtsnap::{CameraConfig, CameraState, CameraStatus, Config, Credentials, Daemon, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_rtsnap");
const PASSWORD: &str = "Pa55-w0rd-7Hx2q";
const URL_SECRET: &str = "UrlS3cret-k9Zp";

/// Every form of the password that must never be seen: as is, and as a
/// Basic authorization (`base64(user:password)`).
fn forms(user: &str, password: &str) -> [String; 2] {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    [password.to_owned(), b64]
}

fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "{what} contains the secret {s:?}:\n{}",
            grep(text, s)
        );
    }
}

fn parse(text: &str) -> Result<Config, rtsnap::ConfigError> {
    Config::from_toml(Path::new("rtsnap.toml"), text)
}

// ---------------------------------------------------------------------------
// Configuration and command line
// ---------------------------------------------------------------------------

#[test]
fn config_refuses_each_url_shape_without_echoing_the_secret() {
    let s = "Hunt3r-2q";
    // (url, what the message must name)
    let shapes = [
        (
            format!("rtsp://h:554/cam/realmonitor?channel=1&subtype=0&user=admin&password={s}"),
            "query (key \"password\")",
        ),
        (
            format!("rtsp://h:554/user=admin&password={s}&channel=1&stream=0.sdp?"),
            "path (key \"password\")",
        ),
        (
            format!("rtsp://h:554/user=admin_password={s}_channel=1_stream=0.sdp?real_stream"),
            "path (key \"password\")",
        ),
        (
            format!("rtsp://h/videostream.cgi?loginuse=admin&loginpas={s}"),
            "query (key \"loginpas\")",
        ),
        (
            format!("rtsp://h/live?usr=admin&pwd={s}"),
            "query (key \"pwd\")",
        ),
        (
            format!("rtsp://h/Streaming/Channels/101?auth={s}"),
            "query (key \"auth\")",
        ),
        (
            format!("rtsp://relay/cam1?token={s}"),
            "query (key \"token\")",
        ),
        (format!("rtsp://h/live;passwd={s}"), "path (key \"passwd\")"),
    ];
    for (url, named) in &shapes {
        let e = parse(&format!("[[camera]]\nname = \"a\"\nurl = \"{url}\"\n")).unwrap_err();
        let shown = e.to_string();
        assert_eq!(e.line, Some(3), "{shown}");
        assert!(e.message.contains(named), "{url}: {shown}");
        assert!(e.help.contains("password_file"), "{shown}");
        assert!(e.help.contains("allow_url_credentials = true"), "{shown}");
        assert!(e.help.contains("digest"), "{shown}");
        assert_no_secret("the error", &shown, &[s.to_owned()]);
    }
    // user:password@ is refused even with the opt-in.
    let e = parse(&format!(
        "[[camera]]\nname = \"a\"\nurl = \"rtsp://admin:{s}@h/\"\nallow_url_credentials = true\n"
    ))
    .unwrap_err();
    assert!(e.message.contains("user:password@"), "{e}");
    assert_no_secret("the error", &e.to_string(), &[s.to_owned()]);
    // The [nvr] template too, on its own line.
    let e = parse(&format!(
        "quality = 80\n[nvr]\nurl = \"rtsp://n/user=admin&password={s}&channel={{channel}}&stream=0.sdp\"\nchannels = 4\n"
    ))
    .unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("path (key \"password\")"), "{e}");
    assert_no_secret("the error", &e.to_string(), &[s.to_owned()]);

    // Plain stream URLs of common cameras are not mistaken for credentials.
    for url in [
        "rtsp://h:554/Streaming/Channels/101?transportmode=unicast",
        "rtsp://h:554/cam/realmonitor?channel=1&subtype=0&unicast=true&proto=Onvif",
        "rtsp://h:554/user=admin&password=&channel=1&stream=0.sdp?",
        "rtsp://h/h264Preview_01_main",
    ] {
        parse(&format!("[[camera]]\nname = \"a\"\nurl = \"{url}\"\n"))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn opted_in_url_credentials_are_masked_in_debug_and_display() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), format!("{PASSWORD}\n")).unwrap();
    let c = Config::from_toml(
        &dir.path().join("rtsnap.toml"),
        &format!(
            "allow_basic_auth = false\n\
             [[camera]]\nname = \"xm\"\nurl = \"rtsp://h/user=admin&password={URL_SECRET}&channel=1&stream=0.sdp\"\n\
             allow_url_credentials = true\n\
             [[camera]]\nname = \"door\"\nurl = \"rtsp://h/ch1\"\nusername = \"admin\"\npassword_file = \"pw\"\n\
             allow_basic_auth = true\n\
             [nvr]\nurl = \"rtsp://n/c{{channel}}?pwd={URL_SECRET}\"\nchannels = 2\nallow_url_credentials = true\n\
             username = \"admin\"\npassword_file = \"pw\"\n"
        ),
    )
    .unwrap();
    let secrets = [URL_SECRET.to_owned(), PASSWORD.to_owned()];
    assert_no_secret("Debug of Config", &format!("{c:?}"), &secrets);
    assert_no_secret("Debug of Config", &format!("{c:#?}"), &secrets);
    for cam in &c.cameras {
        assert_no_secret("RedactedUrl", &RedactedUrl(&cam.url).to_string(), &secrets);
    }
    assert_eq!(
        RedactedUrl(&c.cameras[0].url).to_string(),
        "rtsp://h/user=admin&password=***&channel=1&stream=0.sdp"
    );
    // The URL itself still carries it: that is what the camera needs.
    assert!(c.cameras[0].url.as_str().contains(URL_SECRET));
    // allow_basic_auth: top-level default, per-camera override, [nvr].
    let basic: Vec<_> = c
        .cameras
        .iter()
        .map(|c| c.credentials.as_ref().map(|c| c.allow_basic_auth))
        .collect();
    assert_eq!(basic, [None, Some(true), Some(false), Some(false)]);
}

async fn rtsnap(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let child = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("RUST_LOG")
            .envs(envs)
            .output()
            .unwrap()
    });
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("rtsnap took over 60 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_refuses_url_credentials_and_never_echoes_them() {
    let s = "Cl1-s3cret-Qw";
    let url = format!("rtsp://127.0.0.1:9/user=admin&password={s}&channel=1&stream=0.sdp");
    let o = rtsnap(&["probe", &url], &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("path (key \"password\")") && err.contains("--allow-url-credentials"),
        "{}",
        text(&o)
    );
    assert_no_secret("stderr", &text(&o), &[s.to_owned()]);

    // A URL that does not even parse is not echoed with its password.
    let o = rtsnap(
        &[
            "snap",
            &format!("rtsp://h:99999/live?password={s}"),
            "-o",
            "/dev/null",
        ],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("password=***"),
        "{}",
        text(&o)
    );
    assert_no_secret("stderr", &text(&o), &[s.to_owned()]);

    // Opted in, the error about the unreachable camera shows it masked.
    let o = rtsnap(
        &[
            "snap",
            &url,
            "--allow-url-credentials",
            "--timeout",
            "2s",
            "-o",
            "/dev/null",
        ],
        &[("RUST_LOG", "trace")],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("password=***"),
        "{}",
        text(&o)
    );
    assert_no_secret("output", &text(&o), &[s.to_owned()]);
}

// ---------------------------------------------------------------------------
// A hostile server that only offers Basic
// ---------------------------------------------------------------------------

/// Answers every RTSP request with `401` and `WWW-Authenticate: Basic`, and
/// keeps every byte it received. Per connection at most 64 KiB and 10 s.
struct Hostile {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    async fn start() -> Hostile {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(Self::serve(sock, rec.clone()));
            }
        });
        Hostile {
            addr,
            received,
            task,
        }
    }

    async fn serve(mut sock: tokio::net::TcpStream, rec: Arc<Mutex<Vec<u8>>>) {
        let work = async {
            let mut pending = Vec::new();
            let mut buf = [0u8; 4096];
            let mut total = 0;
            while total < 64 * 1024 {
                let n = match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                total += n;
                rec.lock().unwrap().extend_from_slice(&buf[..n]);
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head: Vec<u8> = pending.drain(..end + 4).collect();
                    let head = String::from_utf8_lossy(&head);
                    let cseq = head
                        .lines()
                        .find_map(|l| l.strip_prefix("CSeq:"))
                        .map_or("0", str::trim)
                        .to_owned();
                    let reply = format!(
                        "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\n\
                         WWW-Authenticate: Basic realm=\"hostile\"\r\n\r\n"
                    );
                    if sock.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
    }

    fn url(&self) -> String {
        format!("rtsp://{}/ch1", self.addr)
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }

    fn describes(&self) -> usize {
        self.received().matches("DESCRIBE ").count()
    }

    fn got_authorization(&self) -> bool {
        self.received()
            .to_ascii_lowercase()
            .contains("\nauthorization:")
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn camera(name: &str, url: &str, allow_basic_auth: bool) -> CameraConfig {
    CameraConfig {
        name: name.into(),
        url: url.parse().unwrap(),
        credentials: Some(Credentials {
            allow_basic_auth,
            ..Credentials::new(
                "admin",
                Secret::new(PASSWORD),
                "password_file /etc/rtsnap/pw",
            )
        }),
        interval: Duration::from_secs(1),
        transport: Default::default(),
    }
}

fn status(d: &Daemon, name: &str) -> CameraStatus {
    d.status().into_iter().find(|s| &*s.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_basic_auth_false_never_sends_the_password() {
    let hostile = Hostile::start().await;
    let mut config = Config::with_cameras(vec![camera("cam", &hostile.url(), false)]);
    config.timeout = Duration::from_secs(3);
    assert_no_secret(
        "Debug of Config",
        &format!("{config:?}"),
        &forms("admin", PASSWORD),
    );
    let d = Daemon::start(config);
    // The refusal is a configuration matter, re-checked only every 5
    // minutes: one unauthenticated DESCRIBE, then nothing.
    let ok = wait_until(Duration::from_secs(15), || {
        hostile.describes() >= 1 && status(&d, "cam").last_error.is_some()
    })
    .await;
    let s = status(&d, "cam");
    assert!(ok, "{s:?}\nreceived:\n{}", hostile.received());
    let err = s.last_error.clone().unwrap();
    assert!(
        err.contains("Basic authentication only") && err.contains("allow_basic_auth = false"),
        "{err}"
    );
    assert!(
        matches!(&s.state, CameraState::BackingOff { error, .. } if *error == err),
        "{s:?}"
    );
    assert!(s.warnings.is_empty(), "nothing was sent: {s:?}");
    d.shutdown().await;
    assert!(
        !hostile.got_authorization(),
        "the server got an Authorization header:\n{}",
        hostile.received()
    );
    assert_no_secret(
        "what the server received",
        &hostile.received(),
        &forms("admin", PASSWORD),
    );
}

/// The control for the test above: by default the same server does get the
/// password (so the recording would see it), and the status says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_basic_is_sent_and_flagged_in_status() {
    let hostile = Hostile::start().await;
    let mut config = Config::with_cameras(vec![camera("cam", &hostile.url(), true)]);
    config.timeout = Duration::from_secs(3);
    let d = Daemon::start(config);
    let ok = wait_until(Duration::from_secs(15), || {
        hostile.got_authorization() && status(&d, "cam").last_error.is_some()
    })
    .await;
    let s = status(&d, "cam");
    assert!(ok, "{s:?}\nreceived:\n{}", hostile.received());
    let [_, b64] = forms("admin", PASSWORD);
    assert!(
        hostile.received().contains(&format!("Basic {b64}")),
        "{}",
        hostile.received()
    );
    assert_eq!(
        s.warnings,
        [rtsnap::source::CredentialWarning::BasicAuth],
        "{s:?}"
    );
    assert!(
        s.warnings[0].to_string().contains("clear text")
            && s.warnings[0].to_string().contains("digest"),
        "{}",
        s.warnings[0]
    );
    assert_no_secret("status", &format!("{s:?}"), &forms("admin", PASSWORD));
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snap_with_basic_refused_sends_nothing_and_says_why() {
    let hostile = Hostile::start().await;
    let o = rtsnap(
        &[
            "snap",
            &hostile.url(),
            "-u",
            "admin",
            "--password-env",
            "CAM_PW",
            "--allow-basic-auth=false",
            "-o",
            "/dev/null",
        ],
        &[("CAM_PW", PASSWORD), ("RUST_LOG", "trace")],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Basic authentication only"), "{}", text(&o));
    assert!(hostile.describes() >= 1, "{}", hostile.received());
    assert!(!hostile.got_authorization(), "{}", hostile.received());
    assert_no_secret("output", &text(&o), &forms("admin", PASSWORD));
}

// ---------------------------------------------------------------------------
// The real daemon against a camera that demands Basic, at RUST_LOG=trace
// ---------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 GET on loopback; the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.take(4 * 1024 * 1024).read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.lines()
        .next()?
        .contains(" 200 ")
        .then(|| body.to_owned())
}

async fn basic_camera() -> FixtureServer {
    ServerBuilder::new()
        .channel("/ch1", load(SUB))
        .credentials("admin", PASSWORD, AuthScheme::Basic)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_at_trace_warns_once_and_never_logs_a_secret() {
    let basic = basic_camera().await;
    let open = serve(&[SUB]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
    let port = free_port();
    let config = dir.path().join("rtsnap.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\ntimeout = \"3s\"\n\
             [[camera]]\nname = \"door\"\nurl = \"{}\"\nusername = \"admin\"\npassword_file = \"pw\"\n\
             [[camera]]\nname = \"xm\"\nurl = \"{}?user=admin&password={URL_SECRET}\"\nallow_url_credentials = true\n\
             [sink.dir]\npath = \"out\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n",
            basic.url("/ch1"),
            open.url("/ch1"),
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let child = Killed(child);

    let status_json = || -> Option<serde_json::Value> {
        serde_json::from_str(&http_get(port, "/api/status")?).ok()
    };
    let camera = |v: &serde_json::Value, name: &str| -> serde_json::Value {
        v["cameras"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == name).cloned())
            .unwrap_or_default()
    };
    // Both cameras make stills, then door's session is cut so it dials
    // (and is challenged with Basic) again.
    let both = |v: &serde_json::Value| {
        camera(v, "door")["stills"].as_u64() >= Some(1)
            && camera(v, "xm")["stills"].as_u64() >= Some(1)
    };
    let logged = |what: &str| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        format!(
            "{what}; warnings and errors logged:\n{}",
            grep(&log, "WARN") + "\n" + &grep(&log, "ERROR")
        )
    };
    let mut first = None;
    wait_until(Duration::from_secs(30), || {
        first = status_json().filter(|v| both(v));
        first.is_some()
    })
    .await;
    let first = first.unwrap_or_else(|| panic!("{}", logged("no stills from both cameras")));
    basic.faults().drop_connections(None);
    let mut again = None;
    wait_until(Duration::from_secs(30), || {
        again = status_json().filter(|v| {
            let d = camera(v, "door");
            d["reconnects"].as_u64() >= Some(1) && d["state"] == "streaming"
        });
        again.is_some()
    })
    .await;
    let again = again.unwrap_or_else(|| panic!("{}", logged("door did not reconnect")));
    let metrics = http_get(port, "/metrics").unwrap_or_default();

    unsafe { libc::kill(pid, libc::SIGTERM) };
    let mut child = child;
    let mut exit = None;
    for _ in 0..400 {
        exit = child.0.try_wait().unwrap();
        if exit.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stderr = std::fs::read_to_string(&log).unwrap();
    let exit = exit.unwrap_or_else(|| panic!("rtsnap did not stop within 20 s of SIGTERM"));
    assert!(exit.success(), "{exit:?}\n{}", grep(&stderr, "ERROR"));

    let door = camera(&again, "door");
    let warnings: Vec<&str> = door["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert_eq!(warnings.len(), 1, "{door}");
    assert!(
        warnings[0].contains("clear text") && warnings[0].contains("digest"),
        "{door}"
    );
    let xm = camera(&first, "xm");
    assert!(
        xm["warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("allow_url_credentials"),
        "{xm}"
    );

    let told = stderr.matches("asks for Basic authentication only").count();
    assert_eq!(
        told,
        1,
        "the Basic warning must be logged once per camera:\n{}",
        grep(&stderr, "Basic")
    );
    assert!(
        stderr.contains("password=***"),
        "the masked URL is logged:\n{}",
        grep(&stderr, "streaming from")
    );
    // The log is long at trace (retina, hyper, tokio): it holds everything
    // but the secrets.
    assert!(
        stderr.lines().count() > 100,
        "{} lines",
        stderr.lines().count()
    );
    let mut secrets = forms("admin", PASSWORD).to_vec();
    secrets.push(URL_SECRET.to_owned());
    assert_no_secret("the trace log", &stderr, &secrets);
    assert_no_secret("/api/status", &again.to_string(), &secrets);
    assert_no_secret("/metrics", &metrics, &secrets);
    eprintln!(
        "trace log: {} lines, {} bytes; Basic warning logged {told} time(s) over {} sessions",
        stderr.lines().count(),
        stderr.len(),
        door["reconnects"].as_u64().unwrap_or(0) + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snap_at_trace_warns_about_basic_and_logs_no_password() {
    let basic = basic_camera().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("still.jpg");
    let o = rtsnap(
        &[
            "snap",
            &basic.url("/ch1"),
            "-u",
            "admin",
            "--password-env",
            "CAM_PW",
            "-o",
            out.to_str().unwrap(),
        ],
        &[("CAM_PW", PASSWORD), ("RUST_LOG", "trace")],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::metadata(&out).unwrap().len() > 1000);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.matches("asks for Basic authentication only").count(),
        1,
        "{}",
        grep(&err, "Basic")
    );
    assert_no_secret("output", &text(&o), &forms("admin", PASSWORD));
}

/// Lines of `text` containing `needle`, for assertion messages that would
/// otherwise print megabytes of trace.
fn grep(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| l.contains(needle))
        .take(20)
        .collect::<Vec<_>>()
        .join("\n")
}
