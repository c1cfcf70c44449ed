//! Checks the fixture against ffprobe/ffmpeg, the reference RTSP clients:
//! stream parameters are read correctly, a frame decodes to JPEG, and the
//! UDP-first default falls back to TCP after our 461. Skips (with a message)
//! when the tools are not installed, except in CI, where that is a failure.

mod common;

use common::have;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rtsnap::fixture::Pacing;

const CHANNEL: &str = "/unicast/c1/s0/live";

/// Runs a command off the async runtime, killing it after `limit`.
async fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning tool");
        let deadline = Instant::now() + limit;
        while child.try_wait().expect("waiting for tool").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("collecting tool output")
    })
    .await
    .expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_reports_h264_and_size() {
    if !have("ffprobe") {
        return;
    }
    let server = common::start(&[CHANNEL], Pacing::Live).await;
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-rtsp_transport",
        "tcp",
        "-show_streams",
        "-of",
        "json",
    ])
    .arg(server.url(CHANNEL));
    let out = run_bounded(cmd, Duration::from_secs(20)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"codec_name\": \"h264\""), "{stdout}");
    assert!(stdout.contains("\"width\": 640"), "{stdout}");
    assert!(stdout.contains("\"height\": 360"), "{stdout}");
    server.shutdown().await;
}

async fn ffmpeg_jpeg(transport: Option<&str>, name: &str) {
    let server = common::start(&[CHANNEL], Pacing::Live).await;
    let out_path =
        std::env::temp_dir().join(format!("fixture-dev-{}-{name}.jpg", std::process::id()));
    let _ = std::fs::remove_file(&out_path);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error"]);
    if let Some(t) = transport {
        cmd.args(["-rtsp_transport", t]);
    }
    cmd.arg("-i")
        .arg(server.url(CHANNEL))
        .args(["-frames:v", "1", "-y"])
        .arg(&out_path);
    let out = run_bounded(cmd, Duration::from_secs(20)).await;
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jpeg = std::fs::read(&out_path).expect("reading ffmpeg's JPEG");
    assert!(
        jpeg.starts_with(&[0xff, 0xd8]) && jpeg.len() > 1000,
        "not a JPEG"
    );
    let _ = std::fs::remove_file(&out_path);
    // ffmpeg sends TEARDOWN when it exits cleanly.
    assert!(
        common::wait_until(Duration::from_secs(2), || server.stats().teardowns_received
            >= 1)
        .await,
        "{:?}",
        server.stats()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_writes_jpeg_over_tcp() {
    if have("ffmpeg") {
        ffmpeg_jpeg(Some("tcp"), "tcp").await;
    }
}

/// Without `-rtsp_transport`, ffmpeg asks for UDP first; the 461 must make
/// it retry with interleaved TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_falls_back_from_udp_to_tcp() {
    if have("ffmpeg") {
        ffmpeg_jpeg(None, "fallback").await;
    }
}
