//! Interop with live555, the RTSP stack inside many IP cameras, joined the
//! way a camera's live source is: while another client already watches.
//!
//! tests/support/live555.sh downloads live555 (the `liblivemedia` sdist from
//! PyPI, pinned by version and sha256), builds it and
//! tests/support/live555_h264_server.cpp into `<target>/live555/` (cached).
//! That server serves the 1080p fixture live, looping, real-time paced, from
//! one shared source (`reuseFirstSource`): a client that joins mid-stream
//! starts at whatever RTP packet is next, usually inside an FU-A. retina
//! gave up there ("FU-A has start bit unset while no frag in progress", 0 of
//! 8 snaps); rtsnap's own depacketizer must not.
//!
//! Each test starts its own server and a watcher (ffmpeg copying the stream
//! to nowhere, over TCP), then joins after varied delays. Where the server
//! cannot be built, the tests skip with a message, except in CI (env `CI`),
//! where that is a failure.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rtsnap");
/// Snaps (and ffmpeg grabs) per test.
const ROUNDS: usize = 8;

/// The server binary, built once per test process by tests/support/live555.sh
/// into the target directory this test binary belongs to.
fn live555_server() -> Option<PathBuf> {
    static SERVER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = SERVER.get_or_init(|| {
        // BIN is <target>/<profile>/rtsnap.
        let target = Path::new(BIN).parent().and_then(Path::parent).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/live555.sh");
        let child = Command::new("bash")
            .arg(script)
            .env("CARGO_TARGET_DIR", target)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run bash: {e}"))?;
        // Download and build take ~25 s on 2 cores; a cached build returns at once.
        let o = wait_bounded(child, Duration::from_secs(600));
        let path = String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .map(PathBuf::from);
        match path {
            Some(p) if o.status.success() && p.is_file() => Ok(p),
            _ => Err(text(&o)),
        }
    });
    match built {
        Ok(p) => Some(p.clone()),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("CI must build the live555 server (tests/support/live555.sh):\n{why}")
        }
        Err(why) => {
            eprintln!("skipping: the live555 server could not be built:\n{why}");
            None
        }
    }
}

/// The running live555 server; killed on drop.
struct Live555 {
    _child: Killed,
    url: String,
}

fn start_live555(server: &Path) -> Live555 {
    let fixture = fixtures_dir().join(format!("{FULLHD}.h264"));
    let mut cmd = Command::new(server);
    cmd.arg("--fixture").arg(&fixture).args(["--fps", "25"]);
    // live555 drops an RTP-over-TCP packet that finds the client's socket
    // full, and writes a whole access unit at once: a 190 KB IDR through its
    // stock 100 KB send buffer loses its tail whenever the client is not
    // scheduled during that millisecond, which on a busy 2-core machine is
    // often (then neither rtsnap nor ffmpeg gets a clean keyframe). 2 MB,
    // like a camera sized for its own IDRs; RTSNAP_LIVE555_STOCK_SNDBUF=1
    // keeps live555's own, to measure that.
    if std::env::var_os("RTSNAP_LIVE555_STOCK_SNDBUF").is_none() {
        cmd.args(["--tcp-sndbuf", "2000000"]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the live555 server");
    let stdout = child.stdout.take().unwrap();
    let child = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("live555 server did not print READY within 10 s");
    let url = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(url.starts_with("rtsp://127.0.0.1:"), "{url}");
    Live555 { _child: child, url }
}

/// Another viewer that keeps the shared stream playing: ffmpeg over TCP,
/// copying (not decoding) the video to nowhere. Killed on drop; it is given
/// 2 s to start the stream.
fn start_watcher(url: &str) -> Killed {
    let child = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error"])
        .args(["-rtsp_transport", "tcp", "-i", url])
        .args(["-t", "300", "-c", "copy", "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the ffmpeg watcher");
    std::thread::sleep(Duration::from_secs(2));
    let mut w = Killed(child);
    assert!(
        w.0.try_wait().unwrap().is_none(),
        "the ffmpeg watcher exited"
    );
    w
}

/// Join delays (ms) varied over a 2 s GOP, from the clock; printed so a
/// failure can be retried with the same spread.
fn delays() -> Vec<u64> {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let d: Vec<u64> = (0..ROUNDS as u64)
        .map(|i| (seed / 1000 + i * 7919 * 97) % 1999)
        .collect();
    eprintln!("join delays (ms): {d:?}");
    d
}

/// Runs a process to its end, or kills it after `limit` (then `None`).
fn run_for(mut cmd: Command, limit: Duration) -> Option<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}

/// `rtsnap snap` into `out`: Ok with the JPEG, or Err with what it printed.
fn snap(url: &str, transport: &str, out: &Path) -> Result<Vec<u8>, String> {
    let _ = std::fs::remove_file(out);
    // Over UDP on this loopback, live555's IDR bursts (~130 datagrams at
    // once) overflow the client's default receive buffer now and then, and
    // snap waits for the next clean IDR: allow several GOPs (2 s each).
    let timeout = if transport == "udp" { "20s" } else { "10s" };
    let mut cmd = Command::new(BIN);
    cmd.args([
        "snap",
        url,
        "--transport",
        transport,
        "--timeout",
        timeout,
        "-o",
    ])
    .arg(out)
    .env_remove("RUST_LOG");
    let o = run_for(cmd, Duration::from_secs(30)).ok_or("rtsnap snap took over 30 s")?;
    if !o.status.success() {
        return Err(text(&o));
    }
    std::fs::read(out).map_err(|e| format!("{e}\n{}", text(&o)))
}

/// The yardstick: `ffmpeg -rtsp_transport tcp -frames:v 1`, the first
/// picture it decodes, as a JPEG.
fn ffmpeg_grab(url: &str, out: &Path) -> Option<Vec<u8>> {
    let _ = std::fs::remove_file(out);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error"])
        .args(["-rtsp_transport", "tcp", "-i", url])
        .args(["-frames:v", "1", "-update", "1", "-y"])
        .arg(out);
    let o = run_for(cmd, Duration::from_secs(30))?;
    if !o.status.success() {
        return None;
    }
    std::fs::read(out).ok()
}

/// Joins over TCP like any client (DESCRIBE, SETUP interleaved, PLAY) and
/// reports whether the first RTP packet is an FU-A fragment that is not a
/// NAL's start: proof the test joins where retina failed.
fn first_packet_is_mid_fu_a(url: &str) -> bool {
    let authority = url
        .strip_prefix("rtsp://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let s = TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut c = RawClient {
        w: s.try_clone().unwrap(),
        r: BufReader::new(s),
        early: Vec::new(),
    };
    let sdp = c.request(&format!(
        "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    ));
    let sdp = String::from_utf8(sdp.1).unwrap();
    let control = sdp
        .lines()
        .skip_while(|l| !l.starts_with("m=video"))
        .find_map(|l| l.strip_prefix("a=control:"))
        .unwrap()
        .trim()
        .to_owned();
    let (h, _) = c.request(&format!(
        "SETUP {url}/{control} RTSP/1.0\r\nCSeq: 2\r\n\
         Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    ));
    let session = header(&h, "Session")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    c.request(&format!(
        "PLAY {url}/ RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n"
    ));
    // Channel 0 is RTP; the RTCP sender report (channel 1) may come first.
    for _ in 0..100 {
        let (channel, frame) = match c.early.is_empty() {
            true => c.frame(),
            false => c.early.remove(0),
        };
        if channel != 0 {
            continue;
        }
        let payload = &frame[12 + 4 * (frame[0] & 0x0f) as usize..];
        return payload[0] & 0x1f == 28 && payload[1] & 0x80 == 0;
    }
    panic!("no RTP packet in 100 interleaved frames");
}

/// The few RTSP requests [`first_packet_is_mid_fu_a`] needs, over one
/// connection with a 5 s read timeout.
struct RawClient {
    w: TcpStream,
    r: BufReader<TcpStream>,
    /// Interleaved frames that came before a response (live555 may send
    /// an RTCP report, or RTP, ahead of its PLAY response).
    early: Vec<(u8, Vec<u8>)>,
}

impl RawClient {
    /// Sends `req`; returns the `200` response's header lines and body.
    fn request(&mut self, req: &str) -> (Vec<String>, Vec<u8>) {
        self.w.write_all(req.as_bytes()).unwrap();
        while self.r.fill_buf().unwrap().first() == Some(&b'$') {
            let f = self.frame();
            self.early.push(f);
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            assert!(self.r.read_line(&mut line).unwrap() > 0, "server closed");
            if line.trim().is_empty() {
                break;
            }
            headers.push(line.trim().to_owned());
        }
        assert!(headers[0].contains(" 200 "), "{headers:?}");
        let len = header(&headers, "Content-Length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).unwrap();
        (headers, body)
    }

    /// One interleaved frame: `$`, channel, 16-bit length, data.
    fn frame(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 4];
        self.r.read_exact(&mut head).unwrap();
        assert_eq!(head[0], b'$', "not an interleaved frame");
        let mut data = vec![0; u16::from_be_bytes([head[2], head[3]]) as usize];
        self.r.read_exact(&mut data).unwrap();
        (head[1], data)
    }
}

fn header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The keyframe references of the 1080p fixture, loaded once per test.
struct References(Vec<(PathBuf, image::RgbImage)>);

impl References {
    fn load() -> Self {
        References(references(FULLHD))
    }

    /// Whether `jpeg` is a correct picture of one of the fixture's keyframes.
    fn matches(&self, jpeg: &[u8]) -> Result<(), String> {
        let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
            .map_err(|e| format!("not a valid JPEG: {e}"))?
            .into_rgb8();
        if img.dimensions() != (1920, 1080) {
            return Err(format!("size {:?}", img.dimensions()));
        }
        let (m, p) = self
            .0
            .iter()
            .map(|(p, r)| (compare(&img, r), p))
            .max_by(|a, b| a.0.luma.total_cmp(&b.0.luma))
            .unwrap();
        if m.good() {
            Ok(())
        } else {
            Err(format!("{m:?} against {}", p.display()))
        }
    }
}

/// Eight rounds of "wait a varied time, join": rtsnap snap over `transport`,
/// and (over TCP) ffmpeg right after it as the yardstick. rtsnap must get 8
/// correct stills of 8; ffmpeg's count is printed, not asserted.
fn rounds(transport: &str, with_ffmpeg: bool) {
    let Some(server) = live555_server() else {
        return;
    };
    if !have("ffmpeg") {
        return;
    }
    let live = start_live555(&server);
    let _watcher = start_watcher(&live.url);
    let refs = References::load();
    let dir = tempfile::tempdir().unwrap();
    let (mut ok, mut failures) = (0, Vec::new());
    let (mut ff_valid, mut ff_correct) = (0, 0);
    for (i, delay) in delays().into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(delay));
        let started = Instant::now();
        match snap(&live.url, transport, &dir.path().join(format!("{i}.jpg")))
            .and_then(|jpeg| refs.matches(&jpeg))
        {
            Ok(()) => ok += 1,
            Err(e) => failures.push(format!("snap {i} (after {delay} ms): {e}")),
        }
        let took = started.elapsed();
        if with_ffmpeg {
            if let Some(jpeg) = ffmpeg_grab(&live.url, &dir.path().join(format!("ff{i}.jpg"))) {
                let valid =
                    image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).is_ok();
                ff_valid += valid as usize;
                match refs.matches(&jpeg) {
                    Ok(()) => ff_correct += 1,
                    Err(e) => eprintln!("round {i}: ffmpeg's picture is not a keyframe: {e}"),
                }
            }
        }
        eprintln!("round {i}: rtsnap snap {took:.2?}");
    }
    eprintln!("live555 over {transport}: rtsnap {ok} of {ROUNDS} correct stills");
    if with_ffmpeg {
        eprintln!(
            "live555 over tcp: ffmpeg -frames:v 1 {ff_valid} of {ROUNDS} valid JPEGs, \
             {ff_correct} of {ROUNDS} matching a keyframe reference"
        );
    }
    assert_eq!(
        ok,
        ROUNDS,
        "rtsnap failed against live555:\n{}",
        failures.join("\n")
    );
}

/// The precondition of the other tests: joining this server while another
/// client watches really does start inside an FU-A (at least once in 8).
#[test]
fn joining_the_shared_stream_starts_mid_fu_a() {
    let Some(server) = live555_server() else {
        return;
    };
    if !have("ffmpeg") {
        return;
    }
    let live = start_live555(&server);
    let _watcher = start_watcher(&live.url);
    let mut mid = 0;
    for delay in delays() {
        std::thread::sleep(Duration::from_millis(delay));
        mid += first_packet_is_mid_fu_a(&live.url) as usize;
    }
    eprintln!("{mid} of {ROUNDS} joins began inside an FU-A");
    assert!(
        mid >= 1,
        "no join began inside an FU-A: the test would prove nothing"
    );
}

/// 8 of 8 `rtsnap snap` over TCP (the default) joined mid-stream are correct
/// stills; ffmpeg, joined the same way, is reported next to it.
#[test]
fn snap_over_tcp_joined_mid_stream_eight_of_eight() {
    rounds("tcp", true);
}

/// The same over UDP: live555 adds the new destination to the shared
/// groupsock, so the first datagram is as arbitrary as over TCP.
#[test]
fn snap_over_udp_joined_mid_stream_eight_of_eight() {
    rounds("udp", false);
}

/// `rtsnap run` with two cameras on the shared stream (two more sessions
/// on live555's one source, over TCP), joined while ffmpeg watches: stills
/// keep coming for 20 s, every one a correct picture, no session restarted.
#[test]
fn daemon_keeps_stills_coming_from_the_shared_stream() {
    let Some(server) = live555_server() else {
        return;
    };
    if !have("ffmpeg") {
        return;
    }
    let live = start_live555(&server);
    let _watcher = start_watcher(&live.url);
    std::thread::sleep(Duration::from_millis(delays()[0]));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stills");
    let config = dir.path().join("rtsnap.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\n\
             [[camera]]\nname = \"a\"\nurl = \"{url}\"\ntransport = \"tcp\"\n\
             [[camera]]\nname = \"b\"\nurl = \"{url}\"\ntransport = \"tcp\"\n\
             [sink.dir]\npath = \"{}\"\n",
            out.display(),
            url = live.url,
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();

    // Every new version of each file, with when it appeared.
    let started = Instant::now();
    let names = ["a", "b"];
    let mut seen: Vec<Vec<(Instant, Vec<u8>)>> = vec![Vec::new(); 2];
    let mut last: Vec<Option<SystemTime>> = vec![None; 2];
    while started.elapsed() < Duration::from_secs(22) {
        for (i, name) in names.iter().enumerate() {
            let path = out.join(format!("{name}.jpg"));
            let Ok(m) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
                continue;
            };
            if last[i] != Some(m) {
                last[i] = Some(m);
                if let Ok(jpeg) = std::fs::read(&path) {
                    seen[i].push((Instant::now(), jpeg));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let o = wait_bounded(child, Duration::from_secs(10));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{}", text(&o));

    let refs = References::load();
    for (i, name) in names.iter().enumerate() {
        let stills = &seen[i];
        let first = stills
            .first()
            .unwrap_or_else(|| panic!("{name}: no still in 22 s\n{log}"))
            .0
            .duration_since(started);
        // GOP 2 s, interval 1 s: a still per keyframe. A gap of two whole
        // GOPs plus slack means the stream was lost.
        let gaps: Vec<Duration> = stills.windows(2).map(|w| w[1].0 - w[0].0).collect();
        let max_gap = gaps.iter().max().copied().unwrap_or_default();
        eprintln!(
            "daemon {name}: {} stills in 22 s, first after {first:.2?}, largest gap {max_gap:.2?}",
            stills.len()
        );
        assert!(
            first < Duration::from_secs(10),
            "{name}: first still after {first:?}"
        );
        assert!(
            max_gap < Duration::from_secs(5),
            "{name}: gaps {gaps:?}\n{log}"
        );
        assert!(
            stills.len() >= 6,
            "{name}: only {} stills\n{log}",
            stills.len()
        );
        for (k, (_, jpeg)) in stills.iter().enumerate() {
            if let Err(e) = refs.matches(jpeg) {
                panic!("{name} still {k}: {e}");
            }
        }
    }
    assert!(!log.contains("retrying"), "a session ended:\n{log}");
}
