//! Drives the fixture server with the `retina` RTSP client, which is what
//! rtsnap itself uses, to prove the server is good enough for it: frames
//! arrive without loss, keyframes are flagged, live pacing runs at ~25 fps,
//! and dropping a session sends TEARDOWN.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use retina::client::{
    Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, VideoFrame};
use rtsnap::fixture::{FixtureStream, Pacing, ServerBuilder};

const CHANNEL: &str = "/unicast/c1/s0/live";

async fn open(url: &str) -> Demuxed {
    let mut session = Session::describe(url.parse().expect("url"), SessionOptions::default())
        .await
        .expect("DESCRIBE");
    assert_eq!(session.streams().len(), 1);
    assert_eq!(session.streams()[0].encoding_name(), "h264");
    session
        .setup(
            0,
            SetupOptions::default()
                .transport(Transport::Tcp(TcpTransportOptions::default()))
                .frame_format(FrameFormat::SIMPLE),
        )
        .await
        .expect("SETUP");
    session
        .play(PlayOptions::default())
        .await
        .expect("PLAY")
        .demuxed()
        .expect("demuxed")
}

async fn next_frame(d: &mut Demuxed) -> VideoFrame {
    loop {
        match d.next().await {
            Some(Ok(CodecItem::VideoFrame(f))) => return f,
            Some(Ok(_)) => continue, // RTCP sender reports
            Some(Err(e)) => panic!("stream error: {e}"),
            None => panic!("stream ended"),
        }
    }
}

/// Receives until `min_frames` frames and `min_keys` keyframes have arrived.
/// Checks zero loss and strictly increasing timestamps (no B-frames).
async fn receive(d: &mut Demuxed, min_frames: usize, min_keys: usize) -> (usize, usize) {
    let (mut frames, mut keys) = (0, 0);
    let mut last_ts: Option<i64> = None;
    while frames < min_frames || keys < min_keys {
        let f = next_frame(d).await;
        assert_eq!(f.loss(), 0, "frame {frames} reports loss");
        let ts = f.timestamp().timestamp();
        if let Some(prev) = last_ts {
            assert!(ts > prev, "timestamp went from {prev} to {ts}");
        }
        last_ts = Some(ts);
        if f.is_random_access_point() {
            keys += 1;
            // SIMPLE format: Annex B with SPS/PPS prepended to key frames.
            assert!(f.data().starts_with(&[0, 0, 0, 1]));
        }
        frames += 1;
    }
    (frames, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retina_live_frames_rate_and_teardown() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let server = common::start(&[CHANNEL], Pacing::Live).await;
        let mut d = open(&server.url(CHANNEL)).await;
        let (frames, keys) = receive(&mut d, 60, 2).await;
        assert!(frames >= 60 && keys >= 2);

        // Live pacing: ~25 fps.
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < Duration::from_secs(2) {
            let f = next_frame(&mut d).await;
            assert_eq!(f.loss(), 0);
            n += 1;
        }
        assert!((35..=60).contains(&n), "{n} frames in 2 s");
        assert_eq!(server.stats().sessions_active, 1);

        drop(d);
        let teardown = common::wait_until(Duration::from_secs(2), || {
            server.stats().teardowns_received == 1
        })
        .await;
        assert!(
            teardown,
            "no TEARDOWN after dropping the session: {:?}",
            server.stats()
        );
        assert!(
            common::wait_until(Duration::from_secs(2), || server.stats().sessions_active
                == 0)
            .await
        );
        server.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retina_fast_pacing_loops_without_loss() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let server = common::start(&[CHANNEL], Pacing::Fast).await;
        let mut d = open(&server.url(CHANNEL)).await;
        let start = Instant::now();
        // 150 frames per loop: three passes, timestamps keep rising across loops.
        let first = next_frame(&mut d).await;
        assert!(
            first.is_random_access_point(),
            "fast pacing starts at frame 0"
        );
        let (frames, keys) = receive(&mut d, 450, 9).await;
        assert!(frames >= 450 && keys >= 9);
        // Much faster than real time (18 s of video).
        assert!(
            start.elapsed() < Duration::from_secs(9),
            "took {:?}",
            start.elapsed()
        );
        drop(d);
        server.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_on_one_channel_and_eight_channels() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let paths: Vec<String> = (1..=8).map(|c| format!("/unicast/c{c}/s0/live")).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let server = common::start(&refs, Pacing::Live).await;
        let mut urls: Vec<String> = paths.iter().map(|p| server.url(p)).collect();
        urls.push(server.url(&paths[0])); // second session on channel 1
        let tasks: Vec<_> = urls
            .into_iter()
            .map(|url| {
                tokio::spawn(async move {
                    let mut d = open(&url).await;
                    receive(&mut d, 30, 0).await
                })
            })
            .collect();
        for t in tasks {
            let (frames, _) = t.await.expect("session task");
            assert!(frames >= 30);
        }
        let stats = server.stats();
        assert_eq!(stats.sessions_opened, 9);
        assert_eq!(stats.frames_dropped, 0, "{stats:?}");
        server.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// The colleague's B-frame fixture: non-monotonic pts must survive to retina
/// (frames in decode order, timestamps jumping back and forth) without loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retina_bframes_fixture() {
    let Some(stream) = common::main_fixture("cam720p-main-bframes") else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(20), async {
        let server = ServerBuilder::new()
            .channel(CHANNEL, Arc::clone(&stream))
            .pacing(Pacing::Fast)
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut d = open(&server.url(CHANNEL)).await;
        let aus = stream.access_units();
        let mut first_ts = None;
        for (i, au) in aus.iter().enumerate().take(100) {
            let f = next_frame(&mut d).await;
            assert_eq!(f.loss(), 0);
            assert_eq!(f.is_random_access_point(), au.is_idr, "frame {i}");
            let ts = f.timestamp().timestamp();
            let base = *first_ts.get_or_insert(ts - au.pts as i64);
            assert_eq!(ts - base, au.pts as i64, "frame {i} timestamp");
        }
        server.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[test]
fn main_fixtures_load() {
    for name in ["cam1080p-high", "cam720p-main-bframes", "sub360p-baseline"] {
        let Some(s) = common::main_fixture(name) else {
            continue;
        };
        let s: &FixtureStream = &s;
        assert!(s.access_units().len() >= 100, "{name}");
        assert_eq!(s.keyframe_indices().next(), Some(0), "{name}");
        assert!(s.width().is_some() && s.height().is_some());
        assert_eq!(
            s.loop_duration_90k(),
            s.access_units().len() as u64 * 3600,
            "{name}"
        );
    }
}
