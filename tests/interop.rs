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
    let fixture = fixtures_dir().join(format!("{FULLHD}.h264"));
    start_gst_with(0, channels, &[fixture.to_str().unwrap()], auth)
}

/// `fixtures`: paths, or `mjpeg` for a live MJPEG source; channel i serves
/// fixture i mod n. `port` 0 picks a free one.
fn start_gst_with(port: u16, channels: u32, fixtures: &[&str], auth: Option<(&str, &str)>) -> Gst {
    start_gst_args(port, channels, fixtures, auth, &[])
}

/// As [`start_gst_with`], with extra arguments for the server script (e.g.
/// `--protocols udp`).
fn start_gst_args(
    port: u16,
    channels: u32,
    fixtures: &[&str],
    auth: Option<(&str, &str)>,
    extra: &[&str],
) -> Gst {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/gst_rtsp_server.py");
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script)
        .args([
            "--port",
            &port.to_string(),
            "--address",
            "127.0.0.1",
            "--channels",
        ])
        .arg(channels.to_string())
        .stdout(Stdio::piped());
    for f in fixtures {
        cmd.args(["--fixture", f]);
    }
    if let Some((u, p)) = auth {
        cmd.args(["--user", u, "--password", p]);
    }
    cmd.args(extra);
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
    wait_bounded(child, Duration::from_secs(40))
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
    let o = wait_bounded(child, Duration::from_secs(10));
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
    // GStreamer offers Basic only: said once, and refused on request.
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.matches("asks for Basic authentication only").count(),
        1,
        "{}",
        text(&o)
    );
    assert_matches_reference(&std::fs::read(&out).unwrap(), "authenticated snap");

    let refuse: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--allow-basic-auth=false"])
        .collect();
    let o = run_bin(&refuse, &[("CAM_PW", password)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("allow_basic_auth = false"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains(password));
}

/// A server that offers only UDP (GStreamer with `--protocols udp`, like
/// UDP-only cameras and relays): over TCP the SETUP is refused with 461 and
/// rtsnap says what to set; `--transport udp` and `auto` both get a correct
/// still.
#[test]
fn udp_only_server_tcp_is_refused_clearly_udp_and_auto_work() {
    if !have_gst() {
        return;
    }
    let sub = fixtures_dir().join(format!("{SUB}.h264"));
    // One mount per client: GStreamer answers 503 to a DESCRIBE while the
    // shared media of a client that just left is still being torn down.
    let gst = start_gst_args(
        0,
        3,
        &[sub.to_str().unwrap()],
        None,
        &["--protocols", "udp"],
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/ch1", gst.base);
    let out = dir.path().join("tcp.jpg");
    let o = run_bin(&["snap", &url, "-o", out.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refuses RTSP over TCP")
            && err.contains("461")
            && err.contains("transport = \"udp\" or \"auto\""),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    for (transport, channel) in [("udp", 2), ("auto", 3)] {
        let out = dir.path().join(format!("{transport}.jpg"));
        let o = run_bin(
            &[
                "snap",
                &format!("{}/ch{channel}", gst.base),
                "--transport",
                transport,
                "-o",
                out.to_str().unwrap(),
            ],
            &[],
        );
        assert!(o.status.success(), "--transport {transport}: {}", text(&o));
        let jpeg = std::fs::read(&out).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (640, 360), "{transport}");
    }
}

/// The daemon over UDP (and `auto` falling back to it) keeps a UDP-only
/// camera's stills coming, and says which transport it streams on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_streams_from_a_udp_only_server() {
    if !have_gst() {
        return;
    }
    let sub = fixtures_dir().join(format!("{SUB}.h264"));
    let gst = start_gst_args(
        0,
        3,
        &[sub.to_str().unwrap()],
        None,
        &["--protocols", "udp"],
    );
    let mut udp = library_camera("udp", format!("{}/ch1", gst.base));
    udp.transport = rtsnap::RtspTransport::Udp;
    let mut auto = library_camera("auto", format!("{}/ch2", gst.base));
    auto.transport = rtsnap::RtspTransport::Auto;
    let mut tcp = library_camera("tcp", format!("{}/ch3", gst.base));
    tcp.transport = rtsnap::RtspTransport::Tcp;
    let d = rtsnap::Daemon::start(rtsnap::Config::with_cameras(vec![udp, auto, tcp]));
    let status = |name: &str| d.status().into_iter().find(|s| &*s.name == name).unwrap();
    wait_for(
        Duration::from_secs(30),
        "3 stills each over udp and auto",
        || (status("udp").stills >= 3 && status("auto").stills >= 3).then_some(()),
    )
    .await;
    let tcp = status("tcp");
    assert_eq!(tcp.stills, 0, "{tcp:?}");
    let rtsnap::CameraState::BackingOff { error, .. } = &tcp.state else {
        panic!("tcp: {tcp:?}")
    };
    assert!(error.contains("refuses RTSP over TCP"), "{error}");
    for name in ["udp", "auto"] {
        let still = d.store().latest(name).unwrap();
        assert_eq!((still.width, still.height), (640, 360), "{name}");
    }
    d.shutdown().await;
}

fn library_camera(name: &str, url: String) -> rtsnap::CameraConfig {
    rtsnap::CameraConfig {
        name: name.into(),
        url: url.parse().unwrap(),
        credentials: None,
        interval: Duration::from_secs(1),
        transport: Default::default(),
    }
}

/// H.265 next to H.264 and MJPEG on one GStreamer server: the H.265 camera
/// is "unsupported" with advice and is not redialed in a loop; the MJPEG
/// camera's frames pass through without any decoder; H.264 just works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_is_unsupported_mjpeg_passes_through() {
    if !have_gst() {
        return;
    }
    let sub = fixtures_dir().join(format!("{SUB}.h264"));
    let hevc = fixtures_dir().join("hevc360p.h265");
    let gst = start_gst_with(
        0,
        3,
        &[sub.to_str().unwrap(), hevc.to_str().unwrap(), "mjpeg"],
        None,
    );
    let mut config = rtsnap::Config::with_cameras(vec![
        library_camera("avc", format!("{}/ch1", gst.base)),
        library_camera("hevc", format!("{}/ch2", gst.base)),
        library_camera("mjpeg", format!("{}/ch3", gst.base)),
    ]);
    config.decoders = 1;
    let d = rtsnap::Daemon::start(config);
    let status = |name: &str| d.status().into_iter().find(|s| &*s.name == name).unwrap();
    wait_for(Duration::from_secs(20), "stills from avc and mjpeg", || {
        (status("avc").stills >= 2 && status("mjpeg").stills >= 2).then_some(())
    })
    .await;
    let hevc = status("hevc");
    let rtsnap::CameraState::Unsupported { why } = &hevc.state else {
        panic!("hevc: {hevc:?}")
    };
    assert_eq!(
        why,
        "H.265; rtsnap decodes H.264, set the channel to H.264 or use its substream"
    );
    assert_eq!(hevc.reconnects, 0);
    let mjpeg = d.store().latest("mjpeg").unwrap();
    assert_eq!((mjpeg.width, mjpeg.height), (640, 360));
    assert!(mjpeg.to_rgb().is_ok());
    assert_matches_reference(&d.store().latest("avc").unwrap().jpeg, "avc");
    // Only the H.264 camera ever needed a decoder.
    assert_eq!(d.decoders(), 1);
    d.shutdown().await;
}

/// GStreamer's server is killed and started again on the same port (a
/// camera reboot): stills resume within 10 s of its return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_restart_stills_resume() {
    if !have_gst() {
        return;
    }
    let fixture = fixtures_dir().join(format!("{SUB}.h264"));
    let gst = start_gst_with(0, 1, &[fixture.to_str().unwrap()], None);
    let port: u16 = gst.base.rsplit(':').next().unwrap().parse().unwrap();
    let mut config =
        rtsnap::Config::with_cameras(vec![library_camera("cam", format!("{}/ch1", gst.base))]);
    config.timeout = Duration::from_secs(3);
    let d = rtsnap::Daemon::start(config);
    let stills = || d.status()[0].stills;
    wait_for(Duration::from_secs(15), "a first still", || {
        (stills() >= 1).then_some(())
    })
    .await;
    drop(gst); // killed
    wait_for(Duration::from_secs(15), "the camera to notice", || {
        matches!(d.status()[0].state, rtsnap::CameraState::BackingOff { .. }).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = stills();
    let _gst = start_gst_with(port, 1, &[fixture.to_str().unwrap()], None);
    let back = tokio::time::Instant::now();
    wait_for(Duration::from_secs(10), "stills after the restart", || {
        (stills() > before).then_some(())
    })
    .await;
    assert!(back.elapsed() <= Duration::from_secs(10));
    assert!(d.status()[0].reconnects >= 1);
    d.shutdown().await;
}

/// The daemon, with a known password the server rejects, runs for a while
/// and is stopped: the password appears nowhere in what it printed.
#[test]
fn daemon_never_prints_the_password() {
    if !have_gst() {
        return;
    }
    let password = "Zx81-never-print-me";
    let gst = start_gst(1, Some(("viewer", "the-right-one")));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rtsnap.toml");
    std::fs::write(
        &config,
        format!(
            "[[camera]]\nname = \"door\"\nurl = \"{}/ch1\"\nusername = \"viewer\"\n\
             password_env = \"DOOR_PASSWORD\"\n[sink.dir]\npath = \"{}\"\n",
            gst.base,
            dir.path().join("stills").display()
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .env("DOOR_PASSWORD", password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let o = wait_bounded(child, Duration::from_secs(10));
    let all = text(&o);
    assert!(
        all.contains(
            "RTSP 401 Unauthorized: check username \"viewer\" and password_env DOOR_PASSWORD"
        ),
        "{all}"
    );
    assert!(!all.contains(password), "password leaked:\n{all}");
}
