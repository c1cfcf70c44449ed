//! The fixture server's fault injection, checked with the client rtsnap
//! uses (retina) and, where retina hides the wire, raw RTSP over TCP:
//! refused DESCRIBE, stalls that keep answering keepalives, withheld,
//! corrupted and lossy keyframes, dropped connections, a server that goes
//! down and comes back, authentication, and a mid-stream resolution change.
//! Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions,
    Transport,
};
use retina::codec::{CodecItem, FrameFormat, VideoFrame};
use rtsnap::decode::DecoderPool;
use rtsnap::fixture::{AuthScheme, FixtureServer, Pacing, ServerBuilder};
use rtsnap::keyframe::{inspect, nal_units};
use rtsnap::pipeline::keyframe_to_jpeg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

const CAM: &str = "/cam/live";
const OTHER: &str = "/cam2/live";
/// Upper bound for each whole test.
const TEST_LIMIT: Duration = Duration::from_secs(30);

async fn server(paths: &[&str], pacing: Pacing) -> FixtureServer {
    common::start(paths, pacing).await
}

async fn try_open(url: &str, creds: Option<(&str, &str)>) -> Result<Demuxed, retina::Error> {
    let options = SessionOptions::default().creds(creds.map(|(u, p)| Credentials {
        username: u.into(),
        password: p.into(),
    }));
    let mut session = Session::describe(url.parse().expect("url"), options).await?;
    session
        .setup(
            0,
            SetupOptions::default()
                .transport(Transport::Tcp(TcpTransportOptions::default()))
                .frame_format(FrameFormat::SIMPLE),
        )
        .await?;
    session.play(PlayOptions::default()).await?.demuxed()
}

async fn open(url: &str) -> Demuxed {
    timeout(Duration::from_secs(5), try_open(url, None))
        .await
        .expect("opening the session timed out")
        .expect("opening the session")
}

/// What came of waiting for a video frame.
enum Next {
    Frame(Box<VideoFrame>),
    /// The stream ended or failed (the message says which).
    End(String),
    Timeout,
}

async fn next(d: &mut Demuxed, limit: Duration) -> Next {
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, d.next()).await {
            Err(_) => return Next::Timeout,
            Ok(None) => return Next::End("stream ended".into()),
            Ok(Some(Err(e))) => return Next::End(e.to_string()),
            Ok(Some(Ok(CodecItem::VideoFrame(f)))) => return Next::Frame(Box::new(f)),
            Ok(Some(Ok(_))) => continue, // RTCP sender reports
        }
    }
}

async fn frame(d: &mut Demuxed) -> VideoFrame {
    match next(d, Duration::from_secs(3)).await {
        Next::Frame(f) => *f,
        Next::End(e) => panic!("stream ended: {e}"),
        Next::Timeout => panic!("no frame within 3 s"),
    }
}

/// Reads until `limit` passes with no frame, so frames sent before a fault
/// took effect are out of the way; panics if that takes over `bound`.
async fn drain(d: &mut Demuxed, quiet: Duration, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        assert!(Instant::now() < deadline, "still receiving after {bound:?}");
        match next(d, quiet).await {
            Next::Frame(_) => continue,
            Next::Timeout => return,
            Next::End(e) => panic!("stream ended while draining: {e}"),
        }
    }
}

/// The IDR slice NAL of an Annex B access unit.
fn idr_nal(annexb: &[u8]) -> Vec<u8> {
    nal_units(annexb)
        .find(|n| n[0] & 0x1f == 5)
        .expect("no IDR slice")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_describe_with_status_then_recover() {
    timeout(TEST_LIMIT, async {
        let server = server(&[CAM, OTHER], Pacing::Live).await;
        let faults = server.faults();
        faults.refuse(Some(CAM), Some((453, "Not Enough Bandwidth")));
        let e = try_open(&server.url(CAM), None)
            .await
            .err()
            .expect("DESCRIBE should be refused");
        assert_eq!(e.status_code(), Some(453), "{e}");
        // Other channels are unaffected; a refusal for all applies to them.
        drop(open(&server.url(OTHER)).await);
        faults.refuse(None, Some((403, "Forbidden")));
        let e = try_open(&server.url(OTHER), None).await.err().unwrap();
        assert_eq!(e.status_code(), Some(403), "{e}");
        // The path-specific status wins over the default.
        let e = try_open(&server.url(CAM), None).await.err().unwrap();
        assert_eq!(e.status_code(), Some(453), "{e}");
        faults.refuse(None, None);
        let mut d = open(&server.url(CAM)).await;
        frame(&mut d).await;
        faults.refuse(Some(CAM), Some((500, "Internal Server Error")));
        let e = try_open(&server.url(CAM), None).await.err().unwrap();
        assert_eq!(e.status_code(), Some(500), "{e}");
        // Existing sessions keep streaming.
        frame(&mut d).await;
    })
    .await
    .expect("test timed out");
}

/// Minimal raw RTSP client: reads responses, counting interleaved frames.
struct Raw {
    sock: TcpStream,
    buf: Vec<u8>,
    interleaved: usize,
    cseq: u32,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            sock: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
            interleaved: 0,
            cseq: 0,
        }
    }

    /// Consumes whole interleaved frames and at most one response.
    fn parse(&mut self) -> Option<String> {
        loop {
            if self.buf.first() == Some(&b'$') {
                if self.buf.len() < 4 {
                    return None;
                }
                let len = 4 + u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
                if self.buf.len() < len {
                    return None;
                }
                self.buf.drain(..len);
                self.interleaved += 1;
                continue;
            }
            let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")?;
            let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            let body = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.parse::<usize>().unwrap());
            if self.buf.len() < end + 4 + body {
                return None;
            }
            self.buf.drain(..end + 4 + body);
            return Some(head);
        }
    }

    /// Reads for up to `limit`; returns a response if one completed.
    async fn pump(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(r) = self.parse() {
                return Some(r);
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.sock.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) => panic!("connection closed"),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => panic!("read: {e}"),
            }
        }
    }

    async fn request(&mut self, method: &str, uri: &str, extra: &str) -> String {
        self.cseq += 1;
        let req = format!(
            "{method} {uri} RTSP/1.0\r\nCSeq: {}\r\n{extra}\r\n",
            self.cseq
        );
        self.sock.write_all(req.as_bytes()).await.unwrap();
        self.pump(Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("no answer to {method}"))
    }
}

fn session_of(resp: &str) -> String {
    resp.lines()
        .find_map(|l| l.strip_prefix("Session: "))
        .expect("Session header")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_stops_rtp_but_answers_requests() {
    timeout(TEST_LIMIT, async {
        let server = server(&[CAM], Pacing::Live).await;
        let faults = server.faults();
        let url = server.url(CAM);

        // A raw session, to see the wire and send a keepalive on it.
        let mut raw = Raw::connect(server.local_addr()).await;
        assert!(raw.request("DESCRIBE", &url, "").await.contains(" 200 "));
        let setup = raw
            .request(
                "SETUP",
                &format!("{url}/trackID=0"),
                "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
            )
            .await;
        let id = session_of(&setup);
        assert!(raw
            .request("PLAY", &url, &format!("Session: {id}\r\n"))
            .await
            .contains(" 200 "));
        let mut d = open(&url).await;
        frame(&mut d).await;
        raw.pump(Duration::from_millis(300)).await;
        assert!(raw.interleaved > 0, "raw session got no RTP");

        faults.stall(Some(CAM), true);
        drain(&mut d, Duration::from_millis(300), Duration::from_secs(2)).await;
        // Nothing for a full second, yet the connection stays open.
        assert!(matches!(
            next(&mut d, Duration::from_secs(1)).await,
            Next::Timeout
        ));
        raw.pump(Duration::from_millis(300)).await;
        raw.interleaved = 0;
        assert_eq!(raw.pump(Duration::from_secs(1)).await, None);
        assert_eq!(raw.interleaved, 0, "RTP sent while stalled");
        let r = raw
            .request("OPTIONS", &url, &format!("Session: {id}\r\n"))
            .await;
        assert!(r.starts_with("RTSP/1.0 200 OK"), "{r}");
        let r = raw
            .request("GET_PARAMETER", &url, &format!("Session: {id}\r\n"))
            .await;
        assert!(r.starts_with("RTSP/1.0 200 OK"), "{r}");
        assert_eq!(raw.interleaved, 0, "RTP sent while stalled");
        assert_eq!(server.stats().sessions_active, 2);

        // Resumes at the live position: the RTP clock jumped with the wall
        // clock, and nothing counts as lost.
        let before = Instant::now();
        faults.stall(Some(CAM), false);
        let f = frame(&mut d).await;
        assert!(before.elapsed() < Duration::from_millis(500));
        assert_eq!(f.loss(), 0);
        raw.pump(Duration::from_millis(300)).await;
        assert!(raw.interleaved > 0, "raw session did not resume");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_resumes_at_live_position() {
    timeout(TEST_LIMIT, async {
        let server = server(&[CAM], Pacing::Live).await;
        let mut d = open(&server.url(CAM)).await;
        let first = frame(&mut d).await.timestamp().elapsed_secs();
        server.faults().stall(None, true);
        drain(&mut d, Duration::from_millis(300), Duration::from_secs(2)).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        server.faults().stall(None, false);
        let f = frame(&mut d).await;
        let gap = f.timestamp().elapsed_secs() - first;
        assert!(
            gap > 1.2,
            "RTP time advanced only {gap:.2}s over a >1.3 s stall"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_keyframes_never_arrive_while_frames_flow() {
    timeout(TEST_LIMIT, async {
        let server = server(&[CAM], Pacing::Live).await;
        let mut d = open(&server.url(CAM)).await;
        frame(&mut d).await;
        server.faults().withhold_keyframes(Some(CAM), true);
        // Frames already on their way when the fault was set.
        let settle = Instant::now() + Duration::from_millis(200);
        while Instant::now() < settle {
            frame(&mut d).await;
        }
        let end = Instant::now() + Duration::from_secs(3);
        let mut frames = 0;
        while Instant::now() < end {
            let f = frame(&mut d).await;
            assert!(!f.is_random_access_point(), "keyframe while withheld");
            assert_eq!(f.loss(), 0);
            frames += 1;
        }
        // 3 s at 25 fps covers 1-2 keyframe times (2 s GOP) of this stream.
        assert!(frames >= 50, "only {frames} frames in 3 s");
        server.faults().withhold_keyframes(Some(CAM), false);
        let deadline = Instant::now() + Duration::from_secs(3);
        while !frame(&mut d).await.is_random_access_point() {
            assert!(Instant::now() < deadline, "no keyframe after clearing");
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_keyframes_are_complete_but_wrong() {
    timeout(TEST_LIMIT, async {
        let stream = common::load(common::SUB);
        let originals: Vec<Vec<u8>> = stream
            .access_units()
            .iter()
            .filter(|a| a.is_idr)
            .map(|a| idr_nal(&a.data))
            .collect();
        let server = ServerBuilder::new()
            .channel(CAM, Arc::clone(&stream))
            .pacing(Pacing::Fast)
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        server.faults().corrupt_keyframes(Some(CAM), true);
        let pool = DecoderPool::new(1);
        let mut d = open(&server.url(CAM)).await;
        let mut corrupted = 0;
        while corrupted < 3 {
            let f = frame(&mut d).await;
            assert_eq!(f.loss(), 0);
            if !f.is_random_access_point() {
                continue;
            }
            let got = idr_nal(f.data());
            assert!(!originals.contains(&got), "keyframe not corrupted");
            // Same size and slice header as one of the originals.
            assert!(originals
                .iter()
                .any(|o| o.len() == got.len() && o[..9] == got[..9]));
            // Structure intact: SPS/PPS parse, it is an IDR access unit.
            assert_eq!(inspect(f.data()).expect("inspect").width, 640);
            let r = keyframe_to_jpeg(&pool, f.data(), 80);
            eprintln!(
                "decoding a corrupted keyframe: {:?}",
                r.as_ref().map(|s| s.jpeg.len())
            );
            if let Ok(still) = r {
                // openh264 concealed the damage; the picture must still be wrong.
                let (m, _) = common::best_match(&still.jpeg);
                assert!(
                    !m.good(),
                    "corrupted keyframe decoded to a good still: {m:?}"
                );
            }
            corrupted += 1;
        }
        server.faults().corrupt_keyframes(None, false);
        // Fast pacing: keyframes corrupted before the switch may be buffered.
        for _ in 0..2000 {
            let f = frame(&mut d).await;
            if !f.is_random_access_point() || !originals.contains(&idr_nal(f.data())) {
                continue;
            }
            let still = keyframe_to_jpeg(&pool, f.data(), 80).expect("clean keyframe decodes");
            common::assert_matches_reference(&still.jpeg, "clean keyframe after corruption");
            return;
        }
        panic!("no clean keyframe after clearing");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_keyframe_packets_show_as_loss() {
    timeout(TEST_LIMIT, async {
        let server = server(&[CAM], Pacing::Fast).await;
        server.faults().lose_keyframe_packets(Some(CAM), true);
        let mut d = open(&server.url(CAM)).await;
        let (mut keys, mut frames) = (0, 0);
        while keys < 4 {
            let f = frame(&mut d).await;
            frames += 1;
            if f.is_random_access_point() {
                assert!(f.loss() > 0, "keyframe {keys} arrived without loss");
                keys += 1;
            } else {
                assert_eq!(f.loss(), 0, "frame {frames}");
            }
            assert!(frames < 1000);
        }
        server.faults().lose_keyframe_packets(Some(CAM), false);
        // Buffered lossy keyframes first, then clean ones.
        for _ in 0..1000 {
            let f = frame(&mut d).await;
            if f.is_random_access_point() && f.loss() == 0 {
                return;
            }
        }
        panic!("no clean keyframe after clearing");
    })
    .await
    .expect("test timed out");
}

/// A packet lost from the middle of a keyframe: retina drops the whole
/// access unit and reports the loss on the next frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_mid_keyframe_packets_hide_the_keyframe() {
    timeout(TEST_LIMIT, async {
        let server = server(&[CAM], Pacing::Fast).await;
        server.faults().lose_keyframe_packets_mid(None, true);
        let mut d = open(&server.url(CAM)).await;
        let mut lossy = 0;
        // 300 frames: six GOPs of the 360p fixture.
        for i in 0..300 {
            let f = frame(&mut d).await;
            assert!(!f.is_random_access_point(), "frame {i}: keyframe survived");
            if f.loss() > 0 {
                lossy += 1;
            }
        }
        assert!(lossy >= 5, "{lossy} frames reported loss");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_end_sessions_and_new_ones_work() {
    timeout(TEST_LIMIT, async {
        let server = server(&[CAM, OTHER], Pacing::Live).await;
        let mut a = open(&server.url(CAM)).await;
        let mut b = open(&server.url(OTHER)).await;
        frame(&mut a).await;
        frame(&mut b).await;
        let before = Instant::now();
        server.faults().drop_connections(Some(CAM));
        loop {
            match next(&mut a, Duration::from_secs(2)).await {
                Next::Frame(_) => continue,
                Next::End(e) => {
                    eprintln!("retina after drop_connections: {e}");
                    break;
                }
                Next::Timeout => panic!("session survived drop_connections"),
            }
        }
        assert!(
            before.elapsed() < Duration::from_secs(1),
            "{:?}",
            before.elapsed()
        );
        // The other channel's session is untouched.
        drain_some(&mut b, 10).await;
        let mut a = open(&server.url(CAM)).await;
        drain_some(&mut a, 10).await;
        server.faults().drop_connections(None);
        for d in [&mut a, &mut b] {
            loop {
                match next(d, Duration::from_secs(2)).await {
                    Next::Frame(_) => continue,
                    Next::End(_) => break,
                    Next::Timeout => panic!("session survived drop_connections(None)"),
                }
            }
        }
        let mut c = open(&server.url(OTHER)).await;
        drain_some(&mut c, 5).await;
        assert_eq!(server.stats().sessions_active, 1);
    })
    .await
    .expect("test timed out");
}

async fn drain_some(d: &mut Demuxed, n: usize) {
    for _ in 0..n {
        frame(d).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_down_refuses_connects_and_come_back_serves_on_the_same_port() {
    timeout(TEST_LIMIT, async {
        let server = server(&[CAM], Pacing::Live).await;
        let addr = server.local_addr();
        let mut d = open(&server.url(CAM)).await;
        frame(&mut d).await;
        server.go_down().await;
        assert!(!server.is_up());
        loop {
            match next(&mut d, Duration::from_secs(2)).await {
                Next::Frame(_) => continue,
                Next::End(e) => {
                    eprintln!("retina after go_down: {e}");
                    break;
                }
                Next::Timeout => panic!("session survived go_down"),
            }
        }
        let e = TcpStream::connect(addr)
            .await
            .expect_err("connect while down");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        let e = try_open(&server.url(CAM), None).await.err().unwrap();
        eprintln!("retina DESCRIBE while down: {e}");
        assert_eq!(server.stats().sessions_active, 0);

        server.come_back().await.expect("come back");
        assert!(server.is_up());
        assert_eq!(server.local_addr(), addr);
        let mut d = open(&server.url(CAM)).await;
        drain_some(&mut d, 5).await;
        // Idempotent both ways.
        server.come_back().await.unwrap();
        server.go_down().await;
        server.go_down().await;
        server.come_back().await.unwrap();
        let mut d = open(&server.url(CAM)).await;
        drain_some(&mut d, 5).await;
        server.shutdown().await;
    })
    .await
    .expect("test timed out");
}

async fn check_credentials(scheme: AuthScheme) {
    let server = ServerBuilder::new()
        .channel(CAM, common::load(common::SUB))
        .pacing(Pacing::Live)
        .credentials("admin", "s3cret:x", scheme)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = server.url(CAM);
    let e = try_open(&url, None).await.err().expect("no creds");
    assert_eq!(e.status_code(), Some(401), "{e}");
    assert_eq!(server.stats().auth_failures, 0);
    let e = try_open(&url, Some(("admin", "wrong")))
        .await
        .err()
        .expect("bad");
    assert_eq!(e.status_code(), Some(401), "{e}");
    assert_eq!(server.stats().auth_failures, 1);
    let e = try_open(&url, Some(("root", "s3cret:x")))
        .await
        .err()
        .expect("bad");
    assert_eq!(e.status_code(), Some(401), "{e}");
    assert_eq!(server.stats().auth_failures, 2);

    let mut d = timeout(
        Duration::from_secs(5),
        try_open(&url, Some(("admin", "s3cret:x"))),
    )
    .await
    .unwrap()
    .expect("right password");
    drain_some(&mut d, 10).await;
    let stats = server.stats();
    assert_eq!(stats.auth_failures, 2, "{stats:?}");
    assert_eq!(stats.auth_challenges, 4, "{stats:?}");
    assert_eq!(stats.sessions_opened, 1);
    // retina's TEARDOWN carries credentials too.
    drop(d);
    assert!(
        common::wait_until(Duration::from_secs(3), || server.stats().teardowns_received
            == 1)
        .await,
        "{:?}",
        server.stats()
    );
    assert_eq!(server.stats().auth_failures, 2);

    // OPTIONS needs no credentials; anything else does.
    let mut raw = Raw::connect(server.local_addr()).await;
    assert!(raw.request("OPTIONS", &url, "").await.contains(" 200 "));
    let r = raw.request("DESCRIBE", &url, "").await;
    assert!(r.starts_with("RTSP/1.0 401 Unauthorized"), "{r}");
    let challenge = r
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .expect("challenge");
    match scheme {
        AuthScheme::Basic => assert!(challenge.starts_with("Basic realm=\""), "{challenge}"),
        AuthScheme::Digest => {
            assert!(challenge.starts_with("Digest realm=\""), "{challenge}");
            assert!(challenge.contains("nonce=\""), "{challenge}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials() {
    timeout(TEST_LIMIT, check_credentials(AuthScheme::Basic))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_credentials() {
    timeout(TEST_LIMIT, check_credentials(AuthScheme::Digest))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlist_changes_resolution_in_band() {
    timeout(TEST_LIMIT, async {
        let sub = common::load(common::SUB);
        let hd = common::load(common::HD_BFRAMES);
        let server = ServerBuilder::new()
            .channel_playlist(CAM, vec![Arc::clone(&sub), Arc::clone(&hd)])
            .pacing(Pacing::Fast)
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut d = open(&server.url(CAM)).await;
        // 360p, 720p, then 360p again (the list loops).
        let total = sub.access_units().len() + hd.access_units().len() + 10;
        let mut widths = Vec::new();
        let mut switches = Vec::new();
        let mut max_ts = i64::MIN;
        for i in 0..total {
            let f = frame(&mut d).await;
            assert_eq!(f.loss(), 0);
            let ts = f.timestamp().timestamp();
            if f.has_new_parameters() {
                switches.push(i);
                // A new stream starts later than everything before it.
                assert!(ts > max_ts, "frame {i}: timestamp {ts} <= {max_ts}");
            }
            max_ts = max_ts.max(ts);
            if f.is_random_access_point() {
                let w = inspect(f.data()).expect("keyframe").width;
                if widths.last() != Some(&w) {
                    widths.push(w);
                }
            }
        }
        assert_eq!(widths, [640, 1280, 640]);
        assert_eq!(
            switches,
            [
                sub.access_units().len(),
                sub.access_units().len() + hd.access_units().len()
            ]
        );
    })
    .await
    .expect("test timed out");
}
