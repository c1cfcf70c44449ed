//! Cameras that misbehave on purpose: small RTSP servers on loopback, written
//! for these tests, each doing one thing a real camera or relay does wrong.
//!
//! - [`Play::Join`]: a live source another viewer is already watching
//!   (live555 with a shared source): our first RTP packet is the middle of a
//!   FU-A fragmented IDR.
//! - [`Play::SpropOnly`]: parameter sets only in the SDP, written with a
//!   trailing `;` in the fmtp line (VLC does this).
//! - [`Play::KeyframeBeforeParams`]: the first IDR comes before any SPS/PPS
//!   (and the SDP has none), so it cannot be decoded; the next one can.
//! - [`Play::Endless`]: two keyframes 59 s apart in RTP time (but 1 s apart
//!   in real time), then one access unit that never ends, kept "alive" by
//!   an RTCP sender report every second. Memory must stay bounded and the
//!   watchdog must go by our clock.
//! - [`Script::NotFoundWithoutCseq`]: a 404 with no `CSeq` header.
//!
//! Each server speaks RTSP over TCP (interleaved) only, counts its PLAYs,
//! and stops with the test.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use rtsnap::fixture::h264file::FixtureStream;
use rtsnap::fixture::rtp::{ntp_timestamp, Packetizer};
use rtsnap::fixture::rtsp::{parse_message, Message, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_rtsnap");

/// What a server streams after PLAY.
#[derive(Clone, Copy, Debug)]
enum Play {
    /// The fixture in a loop, the first `skip` RTP packets of the first
    /// (IDR) access unit never sent.
    Join { skip: usize },
    /// SPS/PPS stripped from every access unit; the SDP carries them, with a
    /// trailing `;`.
    SpropOnly,
    /// The first IDR without SPS/PPS, then the fixture as recorded.
    KeyframeBeforeParams,
    /// An open-GOP camera: its one IDR when the session starts, then only
    /// non-IDR I pictures with recovery-point SEIs (the fixture's access
    /// units after the first, in a loop).
    OpenGop,
    /// IDR at RTP time 0, IDR at RTP time 59 s one second later, then FU-A
    /// fragments of one IDR slice at `rate` bytes per second, forever.
    Endless { rate: usize },
}

#[derive(Clone, Copy, Debug)]
enum Script {
    Play(Play),
    /// DESCRIBE gets `RTSP/1.0 404 Not Found` without a `CSeq`.
    NotFoundWithoutCseq,
}

struct Hostile {
    addr: SocketAddr,
    plays: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    fn url(&self) -> String {
        format!("rtsp://{}/live", self.addr)
    }

    fn plays(&self) -> usize {
        self.plays.load(Ordering::SeqCst)
    }
}

async fn hostile(script: Script, stream: Arc<FixtureStream>) -> Hostile {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let plays = Arc::new(AtomicUsize::new(0));
    let counter = plays.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((sock, _)) = listener.accept().await {
            conns.spawn(connection(sock, script, stream.clone(), counter.clone()));
        }
    });
    Hostile { addr, plays, task }
}

/// One RTSP connection: requests are answered in order; after PLAY a player
/// task feeds the same socket through one writer, so responses to
/// keepalives interleave with RTP as on a real camera.
async fn connection(
    sock: TcpStream,
    script: Script,
    stream: Arc<FixtureStream>,
    plays: Arc<AtomicUsize>,
) {
    let (mut rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let mut player: Option<JoinHandle<()>> = None;
    let mut buf = BytesMut::with_capacity(8192);
    'conn: loop {
        loop {
            match parse_message(&buf) {
                Ok(Some((msg, used))) => {
                    let _ = buf.split_to(used);
                    let Message::Request(req) = msg else { continue };
                    let response = answer(&req, script, &stream);
                    if tx.send(Bytes::from(response)).await.is_err() {
                        break 'conn;
                    }
                    if let (Script::Play(play), "PLAY") = (script, req.method.as_str()) {
                        plays.fetch_add(1, Ordering::SeqCst);
                        if player.is_none() {
                            player = Some(tokio::spawn(run(play, stream.clone(), tx.clone())));
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => break 'conn,
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) if buf.len() > 1 << 20 => break,
            Ok(_) => {}
        }
    }
    if let Some(p) = player {
        p.abort();
    }
    writer.abort();
}

fn answer(req: &Request, script: Script, stream: &FixtureStream) -> String {
    let cseq = req.header("CSeq").unwrap_or("0");
    let ok = |extra: &str| format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}\r\n");
    match req.method.as_str() {
        "OPTIONS" => ok("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n"),
        "DESCRIBE" => {
            let Script::Play(play) = script else {
                return "RTSP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".into();
            };
            let sdp = sdp(play, stream);
            format!(
                "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Base: {}/\r\n\
                 Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                req.uri.trim_end_matches('/'),
                sdp.len()
            )
        }
        "SETUP" => ok(
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 5eed1e55;timeout=60\r\n",
        ),
        "PLAY" => ok("Session: 5eed1e55\r\nRange: npt=0.000-\r\n"),
        _ => ok("Session: 5eed1e55\r\n"),
    }
}

fn sdp(play: Play, stream: &FixtureStream) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let sps = stream.sps();
    let profile = format!("{:02X}{:02X}{:02X}", sps[1], sps[2], sps[3]);
    let sprop = format!(
        ";sprop-parameter-sets={},{}",
        b64.encode(sps),
        b64.encode(stream.pps())
    );
    let fmtp = match play {
        Play::KeyframeBeforeParams => format!("packetization-mode=1;profile-level-id={profile}"),
        Play::SpropOnly => format!("packetization-mode=1;profile-level-id={profile}{sprop};"),
        _ => format!("packetization-mode=1;profile-level-id={profile}{sprop}"),
    };
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=hostile\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 {fmtp}\r\na=control:track1\r\n"
    )
}

/// The NAL units of an Annex B access unit, without start codes.
fn nals(au: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= au.len() {
        if au[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let mut end = starts.get(k + 1).map_or(au.len(), |&n| n - 3);
            while end > s && au[end - 1] == 0 {
                end -= 1;
            }
            &au[s..end]
        })
        .collect()
}

/// `au` without its SPS (7) and PPS (8) NAL units.
fn without_parameter_sets(au: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(au.len());
    for nal in nals(au) {
        if !matches!(nal[0] & 0x1f, 7 | 8) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
    }
    out
}

/// Interleaved frames in `out` after the first `skip`; also checks that the
/// first one kept is a FU-A continuation (so the test joins mid-NAL).
fn skip_frames(out: &[u8], skip: usize) -> &[u8] {
    let mut at = 0;
    for _ in 0..skip {
        let len = usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]]));
        at += 4 + len;
    }
    let payload = &out[at + 4 + 12..];
    assert_eq!(payload[0] & 0x1f, 28, "frame {skip} is not FU-A");
    assert_eq!(payload[1] & 0x80, 0, "frame {skip} starts its NAL");
    &out[at..]
}

fn rtp(out: &mut BytesMut, seq: u16, ts: u32, marker: bool, payload: &[u8]) {
    out.put_u8(b'$');
    out.put_u8(0);
    out.put_u16((12 + payload.len()) as u16);
    out.put_u8(0x80);
    out.put_u8(96 | if marker { 0x80 } else { 0 });
    out.put_u16(seq);
    out.put_u32(ts);
    out.put_u32(0x4057_11e5);
    out.put_slice(payload);
}

async fn run(play: Play, stream: Arc<FixtureStream>, tx: mpsc::Sender<Bytes>) {
    let mut pk = Packetizer::new(0x4057_11e5, 1000, 1400);
    let aus = stream.access_units();
    let frame = Duration::from_micros(stream.frame_duration_90k() * 1_000_000 / 90_000);
    let start = tokio::time::Instant::now();
    if let Play::Endless { rate } = play {
        let mut out = BytesMut::new();
        pk.push_access_unit(&aus[0].data, 0, 0, &mut out);
        pk.push_sender_report(ntp_timestamp(std::time::SystemTime::now()), 0, 1, &mut out);
        if tx.send(out.freeze()).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let second = stream.keyframe_indices().nth(1).unwrap();
        let ts = 59 * 90_000;
        let mut out = BytesMut::new();
        pk.push_access_unit(&aus[second].data, ts, 0, &mut out);
        if tx.send(out.freeze()).await.is_err() {
            return;
        }
        // One IDR slice that never ends: a FU-A start, then continuations.
        let mut seq = pk.next_seq();
        let mut chunk = vec![0x7c, 0x85];
        chunk.extend((0..1398).map(|i| (i * 7 + 3) as u8 | 1));
        let mut out = BytesMut::new();
        rtp(&mut out, seq, ts, false, &chunk);
        seq = seq.wrapping_add(1);
        chunk[1] = 0x05;
        let tick = Duration::from_millis(10);
        let per_tick = (rate / 100 / 1400).max(1);
        let mut last_sr = Instant::now();
        let began = Instant::now();
        loop {
            for _ in 0..per_tick {
                rtp(&mut out, seq, ts, false, &chunk);
                seq = seq.wrapping_add(1);
            }
            if last_sr.elapsed() >= Duration::from_secs(1) {
                last_sr = Instant::now();
                let now = ts + (began.elapsed().as_millis() as u32) * 90;
                pk.push_sender_report(
                    ntp_timestamp(std::time::SystemTime::now()),
                    now,
                    1,
                    &mut out,
                );
            }
            if tx.send(out.split().freeze()).await.is_err() {
                return;
            }
            tokio::time::sleep(tick).await;
        }
    }
    let mut sent = 0u64;
    for round in 0u64.. {
        for (i, au) in aus.iter().enumerate() {
            if matches!(play, Play::OpenGop) && round > 0 && i == 0 {
                continue;
            }
            let ts = (round * stream.loop_duration_90k() + au.pts) as u32;
            let data = match play {
                Play::SpropOnly => without_parameter_sets(&au.data),
                Play::KeyframeBeforeParams if round == 0 && i == 0 => {
                    without_parameter_sets(&au.data)
                }
                _ => au.data.to_vec(),
            };
            let mut out = BytesMut::new();
            pk.push_access_unit(&data, ts, 0, &mut out);
            let out = match play {
                Play::Join { skip } if round == 0 && i == 0 => {
                    Bytes::copy_from_slice(skip_frames(&out, skip))
                }
                _ => out.freeze(),
            };
            if tx.send(out).await.is_err() {
                return;
            }
            if sent % 25 == 0 {
                let mut sr = BytesMut::new();
                pk.push_sender_report(ntp_timestamp(std::time::SystemTime::now()), ts, 1, &mut sr);
                if tx.send(sr.freeze()).await.is_err() {
                    return;
                }
            }
            sent += 1;
            tokio::time::sleep_until(start + frame * sent as u32).await;
        }
    }
}

fn camera(name: &str, url: &str) -> rtsnap::CameraConfig {
    rtsnap::CameraConfig {
        name: name.into(),
        url: url.parse().unwrap(),
        credentials: None,
        interval: Duration::from_secs(1),
        transport: Default::default(),
    }
}

fn status(d: &rtsnap::Daemon, name: &str) -> rtsnap::CameraStatus {
    d.status().into_iter().find(|s| &*s.name == name).unwrap()
}

/// `rtsnap snap` against `url`; returns (success, stderr).
fn snap(url: &str, out: &std::path::Path) -> (bool, String) {
    let child = Command::new(BIN)
        .args(["snap", url, "-o", out.to_str().unwrap(), "--timeout", "10s"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_bounded(child, Duration::from_secs(30));
    (o.status.success(), text(&o))
}

fn assert_jpeg(path: &std::path::Path, size: (u32, u32)) {
    let jpeg = std::fs::read(path).unwrap();
    let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((img.width(), img.height()), size);
}

/// Runs a daemon against `server` until 3 stills came on one connection
/// (the last matching a fixture reference), then `rtsnap snap` against it.
async fn three_stills_one_session_then_snap(server: &Hostile, what: &str) {
    let d = rtsnap::Daemon::start(rtsnap::Config::with_cameras(vec![camera(
        "cam",
        &server.url(),
    )]));
    let s = wait_for(Duration::from_secs(20), "3 stills", || {
        let s = status(&d, "cam");
        (s.stills >= 3).then_some(s)
    })
    .await;
    assert_eq!((s.reconnects, server.plays()), (0, 1), "{what}: {s:?}");
    assert_matches_reference(&d.store().latest("cam").unwrap().jpeg, what);
    d.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap.jpg");
    let (ok, log) = snap(&server.url(), &out);
    assert!(ok, "{what}: {log}");
    assert_jpeg(&out, (640, 360));
}

/// Joined in the middle of a fragmented IDR (as with live555's shared
/// sources): the broken first unit is dropped, the session stays up, and
/// the next IDR makes a still. `rtsnap snap` joins the same way and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_mid_fragment_the_session_stays_and_stills_come() {
    let server = hostile(Script::Play(Play::Join { skip: 5 }), load(SUB)).await;
    three_stills_one_session_then_snap(&server, "joined mid-FU-A").await;
}

/// Parameter sets only in the SDP, with a trailing `;` after them: harmless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_semicolon_in_fmtp_with_sdp_only_parameter_sets() {
    let server = hostile(Script::Play(Play::SpropOnly), load(SUB)).await;
    three_stills_one_session_then_snap(&server, "sprop-only, fmtp ending in ';'").await;
}

/// The first keyframe cannot be decoded (no SPS/PPS anywhere yet): `snap`
/// waits for the next one within its timeout instead of giving up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snap_waits_past_a_keyframe_it_cannot_use() {
    let server = hostile(Script::Play(Play::KeyframeBeforeParams), load(SUB)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap.jpg");
    let began = Instant::now();
    let (ok, log) = snap(&server.url(), &out);
    assert!(ok, "{log}");
    // The second IDR of the fixture is 2 s in: the first was really skipped.
    assert!(began.elapsed() >= Duration::from_millis(1800), "{log}");
    assert_jpeg(&out, (640, 360));
}

/// A 404 without `CSeq` is still reported as a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_without_cseq_says_404() {
    let server = hostile(Script::NotFoundWithoutCseq, load(SUB)).await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = snap(&server.url(), &dir.path().join("x.jpg"));
    assert!(!ok);
    assert!(log.contains("404"), "{log}");
    assert!(!log.contains("framing"), "{log}");
}

/// An open-GOP camera (one IDR per session, then non-IDR I pictures with
/// recovery points, as x264 `open-gop=1` writes them): the I pictures are
/// relabelled as IDR and decoded, so stills keep coming on one connection,
/// and the still matches ffmpeg's decode of that I picture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_gop_i_pictures_make_stills_without_redialing() {
    let path = fixtures_dir().join("opengop360p.h264");
    let stream = Arc::new(FixtureStream::load(&path).unwrap());
    let server = hostile(Script::Play(Play::OpenGop), stream).await;
    let d = rtsnap::Daemon::start(rtsnap::Config::with_cameras(vec![camera(
        "opengop",
        &server.url(),
    )]));
    // The only IDR comes first; stills 2 and 3 can only be I pictures. The
    // loop is 4 s, so 3 stills take over 8 s, longer than the 10 s watchdog
    // floor would allow if they did not count.
    let s = wait_for(Duration::from_secs(30), "3 stills", || {
        let s = status(&d, "opengop");
        (s.stills >= 3).then_some(s)
    })
    .await;
    assert_eq!((s.reconnects, server.plays()), (0, 1), "{s:?}");
    let jpeg = d.store().latest("opengop").unwrap().jpeg.clone();
    d.shutdown().await;

    // ffmpeg's decode of the stream's second I picture (the first non-IDR),
    // converted as the fixtures' reference PNGs are (fixtures/make-fixtures.sh).
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
        .arg(&path)
        .args([
            "-vf",
            "select='eq(pict_type,I)',scale=in_color_matrix=bt601:in_range=tv:out_range=pc:\
             flags=accurate_rnd+full_chroma_int+bitexact,format=rgb24",
            "-fps_mode",
            "passthrough",
        ])
        .arg(dir.path().join("i%d.png"))
        .output()
        .expect("ffmpeg (scripts/test installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference = image::open(dir.path().join("i2.png")).unwrap().into_rgb8();
    let still = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .unwrap()
        .into_rgb8();
    let m = compare(&still, &reference);
    assert!(m.good(), "relabelled I picture vs ffmpeg: {m:?}");
}

/// Peak resident memory of a running process, from /proc.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The camera sends one access unit that never ends (8 MB/s of FU-A
/// continuations, an RTCP report every second) after two keyframes 59 s
/// apart in RTP time. `rtsnap run` drops the unit at `max_access_unit`
/// (8 MiB), says so, redials on its own clock (not after 2 x 59 s), and its
/// peak RSS stays under [`RSS_BOUND_MIB`] for the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_access_unit_keeps_memory_bounded() {
    const RSS_BOUND_MIB: u64 = 64;
    const RUN: Duration = Duration::from_secs(30);
    let server = hostile(
        Script::Play(Play::Endless {
            rate: 8 * 1024 * 1024,
        }),
        load(SUB),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rtsnap.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\n[[camera]]\nname = \"endless\"\nurl = \"{}\"\n[sink.dir]\npath = \"{}\"\n",
            server.url(),
            dir.path().join("stills").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let began = Instant::now();
    let mut second_play = None;
    let mut peak = 0;
    while began.elapsed() < RUN {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = vm_hwm_kib(child.id());
        if second_play.is_none() && server.plays() >= 2 {
            second_play = Some(began.elapsed());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    eprintln!(
        "endless access unit: peak RSS {} MiB over {RUN:?}, {} PLAYs, second after {second_play:?}",
        peak / 1024,
        server.plays()
    );
    assert!(
        peak < RSS_BOUND_MIB * 1024,
        "peak RSS {} MiB >= {RSS_BOUND_MIB} MiB\n{log}",
        peak / 1024
    );
    assert!(log.contains("exceeded max_access_unit"), "{log}");
    // Keyframes 1 s apart on our clock: the watchdog fires after its 10 s
    // floor, not after twice the 59 s the camera's timestamps claim.
    let second = second_play.unwrap_or_else(|| panic!("never redialed\n{log}"));
    assert!(
        second < Duration::from_secs(25),
        "redialed after {second:?}\n{log}"
    );
    assert!(
        std::fs::metadata(dir.path().join("stills/endless.jpg")).is_ok(),
        "the first keyframe made no still\n{log}"
    );
}
