//! Interop with an independent RTSP server: GStreamer's gst-rtsp-server
//! (tests/support/gst_rtsp_server.py) serving the 1080p fixture on 8 mounts
//! like a live NVR, on 127.0.0.1. rtsnap must work against it exactly as
//! against its own fixture server.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rtsnap");
const PYTHON: &str = "/usr/bin/python3";

/// The GStreamer server; killed on drop so a failing test leaves nothing behind.
struct Gst {
    child: Child,
    base: String,
}

impl Drop for Gst {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have_gst() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!("GStreamer's RTSP server is not installed, but CI must run the interop tests");
    }
    if !ok {
        eprintln!(
            "skipping: GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0) missing"
        );
    }
    ok
}

fn start_gst(channels: u32, auth: Option<(&str, &str)>) -> Gst {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/gst_rtsp_server.py");
    let fixture = fixtures_dir().join(format!("{FULLHD}.h264"));
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script)
        .args(["--port", "0", "--address", "127.0.0.1", "--channels"])
        .arg(channels.to_string())
        .arg("--fixture")
        .arg(fixture)
        .stdout(Stdio::piped());
    if let Some((u, p)) = auth {
        cmd.args(["--user", u, "--password", p]);
    }
    let mut child = cmd.spawn().expect("starting the GStreamer RTSP server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("GStreamer server did not print READY within 20 s");
    let base = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Gst { child, base }
}

fn run_bin(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(40))
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("rtsnap did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn run_keeps_eight_stills_fresh_against_gstreamer() {
    if !have_gst() {
        return;
    }
    let gst = start_gst(8, None);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stills");
    let config = dir.path().join("rtsnap.toml");
    std::fs::write(
        &config,
        format!(
            "interval = \"2s\"\n[nvr]\nurl = \"{}/unicast/c{{channel}}/s0/live\"\nchannels = 8\n\
             name = \"ch{{channel}}\"\n[sink.dir]\npath = \"{}\"\n",
            gst.base,
            out.display()
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

    // Each file must be written, then rewritten: fresh at the interval.
    let started = std::time::Instant::now();
    let mut first: Vec<Option<SystemTime>> = vec![None; 8];
    let mut refreshed = [false; 8];
    while refreshed.iter().any(|r| !r) {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "not every still was refreshed: first {first:?}, refreshed {refreshed:?}"
        );
        for i in 0..8 {
            let path = out.join(format!("ch{}.jpg", i + 1));
            let Ok(m) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
                continue;
            };
            match first[i] {
                None => first[i] = Some(m),
                Some(f) if m > f => refreshed[i] = true,
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 1..=8 {
        let jpeg = std::fs::read(out.join(format!("ch{i}.jpg"))).unwrap();
        assert_matches_reference(&jpeg, &format!("ch{i}"));
    }

    // SIGTERM: clean exit, quickly.
    let stop = std::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let o = wait_output(child, Duration::from_secs(10));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stop.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        stop.elapsed()
    );
    let log = String::from_utf8_lossy(&o.stderr);
    for i in 1..=8 {
        assert!(
            log.contains(&format!("name=ch{i}")),
            "no log line for ch{i}:\n{log}"
        );
    }
}

#[test]
fn snap_gets_a_correct_still_from_gstreamer() {
    if !have_gst() {
        return;
    }
    let gst = start_gst(2, None);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap.jpg");
    let o = run_bin(
        &[
            "snap",
            &format!("{}/ch2", gst.base),
            "-o",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_matches_reference(&std::fs::read(&out).unwrap(), "snap");
}

#[test]
fn gstreamer_basic_auth_right_and_wrong_password() {
    if !have_gst() {
        return;
    }
    let password = "correct-horse-7731";
    let gst = start_gst(1, Some(("viewer", password)));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.jpg");
    let url = format!("{}/ch1", gst.base);
    let args = [
        "snap",
        &url,
        "-o",
        out.to_str().unwrap(),
        "-u",
        "viewer",
        "--password-env",
        "CAM_PW",
    ];

    let wrong = "wrong-horse-0000";
    let o = run_bin(&args, &[("CAM_PW", wrong)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("401") && err.contains("CAM_PW"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains(wrong), "password leaked: {}", text(&o));

    let o = run_bin(&args, &[("CAM_PW", password)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(password));
    assert_matches_reference(&std::fs::read(&out).unwrap(), "authenticated snap");
}
