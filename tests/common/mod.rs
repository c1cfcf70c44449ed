//! Helpers shared by the integration tests: fixtures, reference images,
//! PSNR, and waiting with deadlines (every wait here is bounded).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rtsnap::fixture::{FixtureServer, FixtureStream, Pacing, ServerBuilder};

pub const FULLHD: &str = "cam1080p-high";
pub const HD_BFRAMES: &str = "cam720p-main-bframes";
pub const SUB: &str = "sub360p-baseline";

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn load(name: &str) -> Arc<FixtureStream> {
    Arc::new(
        FixtureStream::load(&fixtures_dir().join(format!("{name}.h264")))
            .unwrap_or_else(|e| panic!("loading fixture {name}: {e}")),
    )
}

/// A live-paced fixture server on 127.0.0.1 with one channel per entry of
/// `names`, at `/ch1`, `/ch2`, ..., each offset so they are not in lockstep.
pub async fn serve(names: &[&str]) -> FixtureServer {
    let mut b = ServerBuilder::new().pacing(Pacing::Live);
    for (i, name) in names.iter().enumerate() {
        b = b.channel_with_offset(
            &format!("/ch{}", i + 1),
            load(name),
            Duration::from_millis(370 * i as u64),
        );
    }
    b.bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// The fixture a still of this size must come from.
pub fn fixture_for(width: u32, height: u32) -> &'static str {
    match (width, height) {
        (1920, 1080) => FULLHD,
        (1280, 720) => HD_BFRAMES,
        (640, 360) => SUB,
        other => panic!("no fixture has size {other:?}"),
    }
}

/// The ffmpeg reference decodes of every keyframe of `name`.
pub fn references(name: &str) -> Vec<(PathBuf, image::RgbImage)> {
    let mut v: Vec<_> = std::fs::read_dir(fixtures_dir().join("ref"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
        })
        .map(|p| {
            let img = image::open(&p).unwrap().into_rgb8();
            (p, img)
        })
        .collect();
    assert!(!v.is_empty(), "no reference images for {name}");
    // By decode-order frame index (`<name>-<index>.png`), not by string.
    v.sort_by_key(|(p, _)| {
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        stem.rsplit('-').next().unwrap().parse::<usize>().unwrap()
    });
    v
}

/// Peak signal-to-noise ratio over all RGB samples, in dB.
pub fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions(), "sizes differ");
    psnr_of(
        a.as_raw().iter().map(|&v| v as f64),
        b.as_raw().iter().map(|&v| v as f64),
    )
}

fn psnr_of(a: impl Iterator<Item = f64>, b: impl Iterator<Item = f64>) -> f64 {
    let (mut se, mut n) = (0.0, 0usize);
    for (x, y) in a.zip(b) {
        se += (x - y) * (x - y);
        n += 1;
    }
    if se == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / (se / n as f64)).log10()
}

fn luma(i: &image::RgbImage) -> impl Iterator<Item = f64> + '_ {
    i.pixels()
        .map(|p| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64)
}

/// RGB averaged over 2x2 blocks: the resolution of 4:2:0 chroma.
fn binned(i: &image::RgbImage) -> image::RgbImage {
    image::RgbImage::from_fn(i.width() / 2, i.height() / 2, |x, y| {
        let mut s = [0u32; 3];
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let p = i.get_pixel(2 * x + dx, 2 * y + dy);
            for c in 0..3 {
                s[c] += p[c] as u32;
            }
        }
        image::Rgb(s.map(|v| ((v + 2) / 4) as u8))
    })
}

/// How closely a still matches a reference decode.
#[derive(Clone, Copy, Debug)]
pub struct Match {
    /// PSNR of luma (BT.601 Y), full resolution.
    pub luma: f64,
    /// PSNR of RGB averaged over 2x2 blocks, i.e. at chroma resolution.
    pub colour: f64,
    /// PSNR of RGB at full resolution (reported, not asserted).
    pub rgb: f64,
}

impl Match {
    /// The bar a still must clear. Luma carries the picture and exposes any
    /// range error (washed-out stills score ~28 dB); colour is compared at
    /// the chroma resolution, so it measures colour (matrix, range, planes)
    /// rather than which chroma upsampling filter the reference used
    /// (ffmpeg's bicubic vs the JPEG decoder's triangle filter differ by
    /// 1-2 dB on the test pattern's sharp saturated edges).
    pub fn good(&self) -> bool {
        self.luma >= 35.0 && self.colour >= 33.0
    }
}

/// Compares a still with a reference decode.
pub fn compare(img: &image::RgbImage, reference: &image::RgbImage) -> Match {
    assert_eq!(img.dimensions(), reference.dimensions(), "sizes differ");
    Match {
        luma: psnr_of(luma(img), luma(reference)),
        colour: psnr(&binned(img), &binned(reference)),
        rgb: psnr(img, reference),
    }
}

/// The best match of `jpeg` against every keyframe reference of its
/// fixture (a still must be *one* of the keyframes), and which one it was.
pub fn best_match(jpeg: &[u8]) -> (Match, PathBuf) {
    let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .expect("still is not a valid JPEG")
        .into_rgb8();
    let name = fixture_for(img.width(), img.height());
    references(name)
        .into_iter()
        .map(|(p, r)| (compare(&img, &r), p))
        .max_by(|a, b| a.0.luma.total_cmp(&b.0.luma))
        .unwrap()
}

/// Panics unless `jpeg` matches one keyframe of its fixture.
pub fn assert_matches_reference(jpeg: &[u8], what: &str) {
    let (m, r) = best_match(jpeg);
    assert!(m.good(), "{what}: {m:?} against {}", r.display());
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `limit`.
pub async fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// True when a tool is on PATH. In CI every tool the tests use must be
/// there, so a missing one fails the test instead of skipping it.
pub fn have(tool: &str) -> bool {
    let ok = std::process::Command::new(tool)
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !ok && std::env::var_os("CI").is_some() {
        panic!("{tool} is not installed, but CI must run this test (.ci/run installs it)");
    }
    if !ok {
        eprintln!("skipping: {tool} is not installed");
    }
    ok
}

/// A server on 127.0.0.1 serving the 360p fixture on each of `paths`,
/// staggered, with the given pacing.
pub async fn start(paths: &[&str], pacing: Pacing) -> FixtureServer {
    let stream = load(SUB);
    let mut b = ServerBuilder::new().pacing(pacing);
    for (i, p) in paths.iter().enumerate() {
        b = b.channel_with_offset(p, stream.clone(), Duration::from_millis(370 * i as u64));
    }
    b.bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// A committed fixture by name (kept as `Option` for the server tests' style).
pub fn main_fixture(name: &str) -> Option<Arc<FixtureStream>> {
    Some(load(name))
}

/// Polls `f` every 20 ms until it returns true or `limit` passes.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// A finished process's status and output, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Kills the child on drop, so a failing assertion leaves no process behind.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` to exit, killing it (and failing) after `limit`.
pub fn wait_bounded(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("child process took over {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Runs Debian's headless Chromium once with a fresh profile, bounded in
/// time, and returns its stdout (e.g. the DOM for `--dump-dom`). The flags
/// keep it from reaching for the network.
pub fn chromium(args: &[&str]) -> String {
    use std::process::{Command, Stdio};
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(90));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM of `url` after 8 s of the page's virtual time (its scripts ran,
/// its images loaded), from headless Chromium on a blocking thread.
pub async fn dump_dom(url: &str) -> String {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        chromium(&["--virtual-time-budget=8000", "--dump-dom", &url])
    })
    .await
    .unwrap()
}

/// Screenshots `url` (1280x900) with headless Chromium into
/// `target/test-artifacts/<name>`, kept as a test artifact, and returns the
/// path. Any earlier file of that name is removed first.
pub fn screenshot(url: &str, name: &str) -> PathBuf {
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(name);
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    chromium(&[
        "--window-size=1280,900",
        "--virtual-time-budget=8000",
        &arg,
        url,
    ]);
    shot
}
