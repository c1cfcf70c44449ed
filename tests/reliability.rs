//! The daemon under faults injected by the fixture server: each fault gives
//! that camera a clear state and heals, and never touches the other cameras.
//! Library-level, on 127.0.0.1; every wait is bounded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rtsnap::fixture::{AuthScheme, FixtureServer, Pacing, ServerBuilder};
use rtsnap::{CameraConfig, CameraState, CameraStatus, Config, Credentials, Daemon, Secret};

fn camera(server: &FixtureServer, name: &str, path: &str, interval_ms: u64) -> CameraConfig {
    CameraConfig {
        name: name.into(),
        url: server.url(path).parse().unwrap(),
        credentials: None,
        interval: Duration::from_millis(interval_ms),
        transport: Default::default(),
    }
}

fn start(cameras: Vec<CameraConfig>, timeout: Duration) -> Daemon {
    let mut config = Config::with_cameras(cameras);
    config.timeout = timeout;
    Daemon::start(config)
}

fn status(d: &Daemon, name: &str) -> CameraStatus {
    d.status().into_iter().find(|s| &*s.name == name).unwrap()
}

/// Waits until camera `name`'s status satisfies `f`.
async fn until(
    d: &Daemon,
    name: &str,
    limit: Duration,
    what: &str,
    f: impl Fn(&CameraStatus) -> bool,
) -> CameraStatus {
    wait_for(limit, &format!("{name}: {what}"), || {
        let s = status(d, name);
        f(&s).then_some(s)
    })
    .await
}

/// Waits for `n` more stills of camera `name` than it has now.
async fn more_stills(d: &Daemon, name: &str, n: u64, limit: Duration) -> CameraStatus {
    let base = status(d, name).stills;
    until(d, name, limit, &format!("{n} more stills"), |s| {
        s.stills >= base + n
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_and_back_stills_resume_within_10s() {
    let server = serve(&[SUB]).await;
    let d = start(
        vec![camera(&server, "cam", "/ch1", 1000)],
        Duration::from_secs(3),
    );
    more_stills(&d, "cam", 1, Duration::from_secs(10)).await;

    server.go_down().await;
    let s = until(&d, "cam", Duration::from_secs(10), "backing off", |s| {
        matches!(s.state, CameraState::BackingOff { .. })
    })
    .await;
    let CameraState::BackingOff { error, .. } = &s.state else {
        unreachable!()
    };
    assert!(!error.is_empty());
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.come_back().await.unwrap();
    let back = tokio::time::Instant::now();
    more_stills(&d, "cam", 1, Duration::from_secs(10)).await;
    assert!(back.elapsed() <= Duration::from_secs(10));
    let s = status(&d, "cam");
    assert_eq!(s.state, CameraState::Streaming);
    assert!(s.reconnects >= 1, "{s:?}");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connection_is_noticed_and_redialed() {
    let server = serve(&[SUB, SUB]).await;
    let d = start(
        vec![
            camera(&server, "stuck", "/ch1", 1000),
            camera(&server, "fine", "/ch2", 1000),
        ],
        Duration::from_secs(2),
    );
    more_stills(&d, "stuck", 1, Duration::from_secs(10)).await;
    server.faults().stall(Some("/ch1"), true);
    let s = until(&d, "stuck", Duration::from_secs(10), "read timeout", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("sent no complete picture for 2s"))
    })
    .await;
    assert_eq!(s.reconnects, 0);
    more_stills(&d, "fine", 2, Duration::from_secs(10)).await;
    server.faults().stall(Some("/ch1"), false);
    more_stills(&d, "stuck", 1, Duration::from_secs(15)).await;
    assert!(status(&d, "stuck").reconnects >= 1);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_watchdog_fires_when_only_p_frames_come() {
    let server = serve(&[SUB]).await;
    let d = start(
        vec![camera(&server, "cam", "/ch1", 1000)],
        Duration::from_secs(5),
    );
    more_stills(&d, "cam", 1, Duration::from_secs(10)).await;
    server.faults().withhold_keyframes(Some("/ch1"), true);
    // Keyframes every 2 s, so the watchdog is max(2 x 2 s, 10 s) = 10 s.
    until(&d, "cam", Duration::from_secs(20), "watchdog", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("no keyframe for 10s"))
    })
    .await;
    server.faults().withhold_keyframes(Some("/ch1"), false);
    more_stills(&d, "cam", 1, Duration::from_secs(15)).await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_clear_state_and_never_leaks() {
    let password = "s3cret-Pa55word-918273";
    let server = ServerBuilder::new()
        .channel("/ch1", load(SUB))
        .credentials("admin", "the-right-one", AuthScheme::Digest)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut cam = camera(&server, "door", "/ch1", 1000);
    cam.credentials = Some(Credentials {
        username: "admin".into(),
        password: Secret::new(password),
        source: "password_env NVR_PASSWORD".into(),
        allow_basic_auth: true,
    });
    let config = Config::with_cameras(vec![cam]);
    assert!(!format!("{config:?}").contains(password));
    let d = Daemon::start(config);
    let s = until(&d, "door", Duration::from_secs(10), "401", |s| {
        s.last_error.is_some()
    })
    .await;
    let err = s.last_error.clone().unwrap();
    assert_eq!(
        err,
        "RTSP 401 Unauthorized: check username \"admin\" and password_env NVR_PASSWORD"
    );
    assert!(matches!(s.state, CameraState::BackingOff { .. }), "{s:?}");
    assert!(!format!("{s:?}").contains(password));
    assert!(!format!("{:?}", d.status()).contains(password));
    assert!(server.stats().auth_failures >= 1);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_password_works_with_basic_and_digest() {
    for scheme in [AuthScheme::Basic, AuthScheme::Digest] {
        let server = ServerBuilder::new()
            .channel("/ch1", load(SUB))
            .credentials("admin", "pw-ok", scheme)
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut cam = camera(&server, "door", "/ch1", 1000);
        cam.credentials = Some(Credentials {
            username: "admin".into(),
            password: Secret::new("pw-ok"),
            source: "test".into(),
            allow_basic_auth: true,
        });
        let d = Daemon::start(Config::with_cameras(vec![cam]));
        more_stills(&d, "door", 1, Duration::from_secs(10)).await;
        d.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_too_many_sessions_back_off_and_say_so() {
    let server = serve(&[SUB, SUB]).await;
    let d = start(
        vec![
            camera(&server, "typo", "/nope", 1000),
            camera(&server, "busy", "/ch2", 1000),
        ],
        Duration::from_secs(3),
    );
    server
        .faults()
        .refuse(Some("/ch2"), Some((453, "Not Enough Bandwidth")));
    let s = until(&d, "typo", Duration::from_secs(10), "404", |s| {
        s.last_error.is_some()
    })
    .await;
    assert!(s.last_error.unwrap().starts_with("RTSP 404 Not Found: "));
    let s = until(&d, "busy", Duration::from_secs(10), "453", |s| {
        s.last_error.is_some()
    })
    .await;
    let e = s.last_error.unwrap();
    assert!(
        e.contains("453") && e.contains("refuses another session"),
        "{e}"
    );
    server.faults().refuse(Some("/ch2"), None);
    more_stills(&d, "busy", 1, Duration::from_secs(15)).await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_channel_of_eight_the_others_keep_their_interval() {
    let server = serve(&[SUB; 8]).await;
    let mut cams: Vec<CameraConfig> = (1..=8)
        .map(|i| camera(&server, &format!("ch{i}"), &format!("/ch{i}"), 2000))
        .collect();
    cams[2].url = server.url("/missing").parse().unwrap();
    let d = start(cams, Duration::from_secs(3));
    // Let everyone settle, then count stills over 8 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before: Vec<u64> = d.status().iter().map(|s| s.stills).collect();
    tokio::time::sleep(Duration::from_secs(8)).await;
    for (i, s) in d.status().iter().enumerate() {
        let got = s.stills - before[i];
        if i == 2 {
            assert_eq!(s.stills, 0);
            assert!(matches!(s.state, CameraState::BackingOff { .. }), "{s:?}");
        } else {
            // One still per 2 s interval: 4 in 8 s, give or take one.
            assert!((3..=5).contains(&got), "{}: {got} stills in 8 s", s.name);
        }
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_keyframes_are_skipped_and_the_previous_still_stays() {
    let server = serve(&[SUB, SUB]).await;
    let d = start(
        vec![
            camera(&server, "bad", "/ch1", 500),
            camera(&server, "good", "/ch2", 500),
        ],
        Duration::from_secs(5),
    );
    more_stills(&d, "bad", 1, Duration::from_secs(10)).await;
    server.faults().corrupt_keyframes(Some("/ch1"), true);
    // Drain what is already on the wire, then take a baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = d.store().latest("bad").unwrap();
    let base = status(&d, "bad");
    let s = until(
        &d,
        "bad",
        Duration::from_secs(10),
        "two skipped keyframes",
        |s| s.keyframes_skipped >= base.keyframes_skipped + 2,
    )
    .await;
    assert!(s
        .last_error
        .unwrap()
        .contains("keyframe skipped, previous still kept"));
    let still = d.store().latest("bad").unwrap();
    assert_eq!(still.seq, kept.seq, "a damaged still was published");
    assert_eq!(still.jpeg, kept.jpeg);
    more_stills(&d, "good", 2, Duration::from_secs(10)).await;
    server.faults().corrupt_keyframes(Some("/ch1"), false);
    more_stills(&d, "bad", 1, Duration::from_secs(10)).await;
    assert_matches_reference(&d.store().latest("bad").unwrap().jpeg, "healed");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframes_with_lost_packets_are_never_decoded() {
    let server = serve(&[SUB]).await;
    let d = start(
        vec![camera(&server, "lossy", "/ch1", 500)],
        Duration::from_secs(5),
    );
    more_stills(&d, "lossy", 1, Duration::from_secs(10)).await;
    server.faults().lose_keyframe_packets(Some("/ch1"), true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = status(&d, "lossy");
    let s = until(
        &d,
        "lossy",
        Duration::from_secs(10),
        "two lossy keyframes",
        |s| s.keyframes_skipped >= base.keyframes_skipped + 2,
    )
    .await;
    assert_eq!(
        s.stills, base.stills,
        "a still was made from a damaged keyframe"
    );
    assert_eq!(s.keyframes_decoded, base.keyframes_decoded);
    server.faults().lose_keyframe_packets(Some("/ch1"), false);
    more_stills(&d, "lossy", 1, Duration::from_secs(10)).await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_change_mid_stream_gives_stills_of_the_new_size() {
    let server = ServerBuilder::new()
        .pacing(Pacing::Live)
        .channel_playlist("/ch1", vec![load(SUB), load(HD_BFRAMES)])
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let d = start(
        vec![camera(&server, "cam", "/ch1", 1000)],
        Duration::from_secs(5),
    );
    let mut sub = d.store().subscribe();
    let mut sizes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while !sizes.contains(&(1280, 720)) {
        let batch = tokio::time::timeout_at(deadline, sub.next())
            .await
            .expect("no 720p still");
        for s in batch {
            assert_matches_reference(&s.jpeg, "still");
            if sizes.last() != Some(&(s.width, s.height)) {
                sizes.push((s.width, s.height));
            }
        }
    }
    assert_eq!(sizes, [(640, 360), (1280, 720)]);
    assert_eq!(status(&d, "cam").dims, Some((1280, 720)));
    assert_eq!(status(&d, "cam").reconnects, 0);
    d.shutdown().await;
}

/// Serves `fixture` next to a working camera and returns the reason the
/// fixture's camera is unsupported, after checking it made no still and
/// decoded nothing, the other camera keeps working, and the unsupported one
/// is re-checked slowly, not in a loop.
async fn unsupported_beside_a_working_camera(fixture: &str) -> String {
    let server = ServerBuilder::new()
        .channel(
            "/bad",
            Arc::new(rtsnap::fixture::FixtureStream::load(&fixtures_dir().join(fixture)).unwrap()),
        )
        .channel("/p", load(SUB))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let d = start(
        vec![
            camera(&server, "bad", "/bad", 1000),
            camera(&server, "good", "/p", 1000),
        ],
        Duration::from_secs(5),
    );
    let s = until(&d, "bad", Duration::from_secs(10), "unsupported", |s| {
        matches!(s.state, CameraState::Unsupported { .. })
    })
    .await;
    let CameraState::Unsupported { why } = &s.state else {
        unreachable!()
    };
    assert_eq!((s.stills, s.keyframes_decoded), (0, 0), "{s:?}");
    more_stills(&d, "good", 2, Duration::from_secs(10)).await;
    let opened = server.stats().sessions_opened;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server.stats().sessions_opened, opened);
    d.shutdown().await;
    why.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interlaced_stream_is_unsupported_with_a_reason() {
    let why = unsupported_beside_a_working_camera("interlaced576i.h264").await;
    assert!(
        why.contains("interlaced") && why.contains("progressive"),
        "{why}"
    );
}

/// A 10-bit (High 10) camera is named "unsupported" from its SPS at
/// setup, once, with the profile and bit depth, instead of one raw decoder
/// error per keyframe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high10_stream_is_unsupported_by_name() {
    let why = unsupported_beside_a_working_camera("high10-360p.h264").await;
    assert!(why.contains("High 10") && why.contains("10-bit"), "{why}");
    assert!(!why.contains("Native"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_reboot_drops_connection_and_it_comes_back() {
    let server = serve(&[SUB]).await;
    let d = start(
        vec![camera(&server, "cam", "/ch1", 1000)],
        Duration::from_secs(5),
    );
    more_stills(&d, "cam", 1, Duration::from_secs(10)).await;
    server.faults().drop_connections(None);
    until(&d, "cam", Duration::from_secs(10), "reconnect", |s| {
        s.reconnects >= 1
    })
    .await;
    more_stills(&d, "cam", 1, Duration::from_secs(10)).await;
    d.shutdown().await;
}
