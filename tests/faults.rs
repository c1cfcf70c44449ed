//! Faults, one camera at a time: each must give a clear message for that
//! camera and heal, while every other camera keeps working. All on
//! 127.0.0.1 (or in a private mount namespace), every wait bounded.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rtsnap");

fn can_unshare() -> bool {
    let ok = Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!("CI runs as root and must be able to create a mount namespace (unshare -m)");
    }
    if !ok {
        eprintln!("skipping: cannot create a mount namespace here (needs root)");
    }
    ok
}

async fn wait_file(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    wait_for(limit, what, || f().then_some(())).await
}

/// A full disk: the stills folder is a 128 KiB tmpfs, private to the
/// daemon. The 360p camera's stills (~40 KB) fit; the 1080p camera's
/// (190-330 KB) never do. The 1080p camera gets one clear "disk is full"
/// message and keeps being retried; the 360p camera keeps updating; once the
/// disk grows, the 1080p still lands and the recovery is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_one_camera_and_heals() {
    if !can_unshare() {
        return;
    }
    let server = serve(&[FULLHD, SUB]).await;
    let dir = tempfile::tempdir().unwrap();
    let stills = dir.path().join("stills");
    std::fs::create_dir(&stills).unwrap();
    let config = dir.path().join("rtsnap.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\n\
             [[camera]]\nname = \"big\"\nurl = \"{}\"\n\
             [[camera]]\nname = \"small\"\nurl = \"{}\"\n\
             [sink.dir]\npath = \"{}\"\n",
            server.url("/ch1"),
            server.url("/ch2"),
            stills.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let script = format!(
        "mount -t tmpfs -o size=128k rtsnap-test {s} && exec {BIN} run --config {c}",
        s = stills.display(),
        c = config.display()
    );
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let daemon = Killed(child);
    // The daemon's view of the folder, through its mount namespace.
    let inside = PathBuf::from(format!("/proc/{}/root", daemon.0.id()))
        .join(stills.strip_prefix("/").unwrap());
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    wait_file(Duration::from_secs(20), "the disk-full message", || {
        read_log().contains("disk is full")
    })
    .await;
    let small = inside.join("small.jpg");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !small.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no small.jpg; log:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = std::fs::metadata(&small).unwrap().modified().unwrap();
    wait_file(Duration::from_secs(20), "small.jpg to be refreshed", || {
        std::fs::metadata(&small)
            .and_then(|m| m.modified())
            .is_ok_and(|m| m > first)
    })
    .await;
    assert!(!inside.join("big.jpg").exists());
    let log_now = read_log();
    let full_lines: Vec<&str> = log_now
        .lines()
        .filter(|l| l.contains("disk is full"))
        .collect();
    assert_eq!(
        full_lines.len(),
        1,
        "one message, not one per retry:\n{log_now}"
    );
    assert!(full_lines[0].contains("camera=big"), "{}", full_lines[0]);
    assert!(
        full_lines[0].contains("No space left on device"),
        "{}",
        full_lines[0]
    );

    // Free space: grow the file system from inside the daemon's namespace.
    let grown = Command::new("nsenter")
        .args([
            "-t",
            &daemon.0.id().to_string(),
            "-m",
            "mount",
            "-o",
            "remount,size=4m",
        ])
        .arg(&stills)
        .status()
        .unwrap();
    assert!(grown.success());
    wait_file(
        Duration::from_secs(40),
        "big.jpg after the disk grew",
        || inside.join("big.jpg").exists(),
    )
    .await;
    let jpeg = std::fs::read(inside.join("big.jpg")).unwrap();
    assert_matches_reference(&jpeg, "big");
    wait_file(Duration::from_secs(5), "the recovery message", || {
        read_log().contains("sink write recovered")
    })
    .await;
}
