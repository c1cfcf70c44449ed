//! The `rtsnap` binary as a user runs it: snap, probe, run --check, demo.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rtsnap");

async fn rtsnap(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let child = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    });
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("rtsnap took over 60 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snap_writes_a_correct_still() {
    let server = serve(&[HD_BFRAMES]).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("still.jpg");
    let o = rtsnap(&["snap", &server.url("/ch1"), "-o", out.to_str().unwrap()]).await;
    assert!(o.status.success(), "{}", text(&o));
    let jpeg = std::fs::read(&out).unwrap();
    assert_matches_reference(&jpeg, "snap");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1280x720"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snap_failures_are_one_clear_sentence() {
    let server = serve(&[SUB]).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.jpg");
    let out = out.to_str().unwrap();

    let o = rtsnap(&["snap", &server.url("/nope"), "-o", out]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error: ") && err.contains("404"),
        "{}",
        text(&o)
    );
    assert_eq!(err.trim().lines().count(), 1, "{}", text(&o));

    // Nobody listens on this port (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = rtsnap(&[
        "snap",
        &format!("rtsp://127.0.0.1:{port}/x"),
        "-o",
        out,
        "--timeout",
        "3s",
    ])
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    let o = rtsnap(&["snap", "rtsp://admin:secret@127.0.0.1/x", "-o", out]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--password-env") && !err.contains("secret"),
        "{}",
        text(&o)
    );
    assert!(!std::path::Path::new(out).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_the_stream() {
    let server = serve(&[FULLHD]).await;
    let o = rtsnap(&["probe", &server.url("/ch1"), "--duration", "5s"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("profile:            High"), "{out}");
    assert!(out.contains("1920x1080"), "{out}");
    // Measured on arrival (our clock), so within a read batch of the GOP's 2 s.
    let interval: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("keyframe interval:"))
        .and_then(|v| v.trim().strip_suffix(" s"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no keyframe interval: {out}"));
    assert!((1.8..=2.2).contains(&interval), "{out}");
    assert!(out.contains("25.0"), "{out}");
}

#[tokio::test]
async fn config_errors_name_file_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[[camera]]\nname = \"a\"\nurl = \"rtsp://h/\"\nfps = 3\n", 4, "unknown field"),
        ("interval = \"fast\"\n[[camera]]\nname = \"a\"\nurl = \"rtsp://h/\"\n", 1, "not a valid duration"),
        (
            "[[camera]]\nname = \"a\"\nurl = \"rtsp://h/1\"\n\n[[camera]]\nname = \"a\"\nurl = \"rtsp://h/2\"\n",
            6,
            "duplicate camera name",
        ),
        ("[[camera]]\nname = \"a\"\nurl = \"rtsp://u:hunter2@h/1\"\n", 3, "credentials"),
        (
            "[[camera]]\nname = \"a\"\nurl = \"rtsp://h/1\"\nusername = \"u\"\npassword_env = \"RTSNAP_TEST_UNSET_VAR\"\n",
            5,
            "is not set",
        ),
    ];
    for (i, (toml, line, msg)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let o = rtsnap(&["run", "--config", path.to_str().unwrap()]).await;
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("c{i}.toml:{line}: ")),
            "case {i}: {}",
            text(&o)
        );
        assert!(err.contains(msg), "case {i}: {}", text(&o));
        assert!(err.contains("help: "), "case {i}: {}", text(&o));
        assert!(!err.contains("hunter2"), "case {i}: {}", text(&o));
    }
    let o = rtsnap(&[
        "run",
        "--check",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rtsnap.toml"),
    ])
    .await;
    // The example needs NVR_PASSWORD; without it, the error says so.
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("NVR_PASSWORD") || o.status.success(),
        "{}",
        text(&o)
    );
}

#[test]
fn example_config_is_valid() {
    std::env::set_var("NVR_PASSWORD", "example");
    let c = rtsnap::Config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/rtsnap.toml"
    )))
    .unwrap();
    assert_eq!(c.cameras.len(), 9);
    assert_eq!(c.cameras[0].interval, Duration::from_secs(3));
    assert_eq!(c.cameras[8].name, "ch8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_writes_eight_fresh_stills() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let started = std::time::SystemTime::now();
    let o = rtsnap(&["demo", "--duration", "12", "--out", out.to_str().unwrap()]).await;
    assert!(o.status.success(), "{}", text(&o));
    for i in 1..=8 {
        let path = out.join(format!("ch{i}.jpg"));
        let jpeg = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), text(&o)));
        assert_matches_reference(&jpeg, &format!("ch{i}"));
        // Written by this run, and refreshed: the history holds each still.
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(modified > started, "ch{i}.jpg predates the demo");
        let history = std::fs::read_dir(out.join(format!("ch{i}")))
            .unwrap()
            .count();
        assert!(
            history >= 2,
            "ch{i}: only {history} still(s) in 12 s\n{}",
            text(&o)
        );
    }
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("open "),
        "{}",
        text(&o)
    );
}
