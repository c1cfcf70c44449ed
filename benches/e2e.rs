//! End-to-end benchmark: rtsnap against the two usual ffmpeg set-ups, on the
//! same live-paced fixture cameras on 127.0.0.1.
//!
//! ```text
//! cargo bench --bench e2e [-- --channels N --seconds S --interval S --fixture NAME --skip-ffmpeg]
//! ```
//!
//! Defaults: 8 channels of `cam1080p-day` (1920x1080 High, GOP 2 s, IDRs
//! ~90 KB: the workload the performance targets are stated for; `--fixture
//! cam1080p-high` is the heavy, noisy variant), a still every 5 s per
//! camera, 60 s per side. One `rtsnap fixture-server` child
//! serves all sides; each side is measured on its own, one after the other:
//!
//! - **rtsnap**: `rtsnap run` with an `[nvr]` config and a `[sink.dir]` with
//!   history, as one child process;
//! - **ffmpeg (b)**: one persistent ffmpeg per camera, decoding keyframes only
//!   (`-skip_frame nokey`) and rewriting `camN.jpg` every interval;
//! - **ffmpeg (a)**: one `ffmpeg -frames:v 1` process per still, every
//!   interval per camera (cameras staggered), as cron-style scripts do.
//!
//! Every process is reaped with `wait4`, whose rusage gives its CPU time
//! (user + system) and peak RSS, so each side is charged for exactly its own
//! processes (the fixture server's CPU is reported apart). Stills are counted
//! from the files, and "still age" is sampled every second per camera as
//! `now - mtime(<camera>.jpg)`: how old the picture a reader would get is.
//!
//! The table goes to stdout and the numbers to `<target>/bench-e2e.json`.
//! `RTSNAP_BIN=path` measures that rtsnap binary instead of the one cargo
//! built beside this bench (see `scripts/bench`).
//! Absolute numbers depend on the machine and on whatever else runs on it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// The fixture `rtsnap fixture-server` serves on every channel.
const SERVER_FIXTURE: &str = "cam1080p-high";
/// The fixture measured unless `--fixture` says otherwise.
const DEFAULT_FIXTURE: &str = "cam1080p-day";
/// How long a side may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long per-still ffmpeg processes may run on after the side's time.
const PER_STILL_GRACE: Duration = Duration::from_secs(20);
const MIB: f64 = 1024.0 * 1024.0;

// ---------------------------------------------------------------- options

struct Options {
    channels: u32,
    seconds: u64,
    interval: u64,
    skip_ffmpeg: bool,
    fixture: String,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut o = Options {
            channels: 8,
            seconds: 60,
            interval: 5,
            skip_ffmpeg: false,
            fixture: DEFAULT_FIXTURE.into(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            let number = |name: &str, v: String| -> Result<u64, String> {
                v.parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("{name} wants a positive whole number, not {v:?}"))
            };
            match a.as_str() {
                "--bench" => {} // cargo passes it to every bench binary
                "--channels" => {
                    let n = number("--channels", value("--channels")?)?;
                    o.channels = u32::try_from(n)
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or("--channels must be 1-64 (the fixture server's limit)")?;
                }
                "--seconds" => o.seconds = number("--seconds", value("--seconds")?)?,
                "--interval" => o.interval = number("--interval", value("--interval")?)?,
                "--skip-ffmpeg" => o.skip_ffmpeg = true,
                "--fixture" => o.fixture = value("--fixture")?,
                "-h" | "--help" => {
                    println!(
                        "cargo bench --bench e2e [-- --channels N (8) --seconds S (60) \
                         --interval S (5) --fixture NAME (cam1080p-day) --skip-ffmpeg]"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown option {other:?} (try --help)")),
            }
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------- processes

/// How a reaped child ended and what it cost, from `wait4`.
#[derive(Clone, Copy, Debug)]
struct Exit {
    /// Raw wait status.
    status: i32,
    cpu_s: f64,
    max_rss_bytes: u64,
    wall: Duration,
}

impl Exit {
    fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }
}

/// A child process reaped with `wait4`. Killed and reaped when dropped.
struct Proc {
    pid: libc::pid_t,
    started: Instant,
    exit: Option<Exit>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> std::io::Result<Proc> {
        let started = Instant::now();
        let child = cmd.spawn()?;
        // Dropping `Child` neither waits for nor kills the process; from here
        // on it is ours to reap with wait4.
        let pid = child.id() as libc::pid_t;
        Ok(Proc {
            pid,
            started,
            exit: None,
        })
    }

    fn signal(&self, sig: libc::c_int) {
        if self.exit.is_none() {
            // SAFETY: plain syscall on our own unreaped child's pid.
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// Reaps the child if it has exited (or waits for it when `block`).
    fn reap(&mut self, block: bool) -> Option<Exit> {
        if self.exit.is_some() {
            return self.exit;
        }
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 fills it in.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if block { 0 } else { libc::WNOHANG };
        // SAFETY: pid is our child; both pointers are valid for the call.
        let r = unsafe { libc::wait4(self.pid, &mut status, flags, &mut ru) };
        if r == self.pid {
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            self.exit = Some(Exit {
                status,
                cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
                max_rss_bytes: ru.ru_maxrss.max(0) as u64 * 1024,
                wall: self.started.elapsed(),
            });
        } else if r < 0 {
            panic!(
                "wait4({}) failed: {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
        self.exit
    }

    /// SIGTERM, then up to `grace` for it to exit, then SIGKILL.
    /// Returns the exit and whether it had to be killed.
    fn stop(&mut self, grace: Duration) -> (Exit, bool) {
        self.signal(libc::SIGTERM);
        if let Some(e) = self.wait_for(grace) {
            return (e, false);
        }
        self.signal(libc::SIGKILL);
        (self.reap(true).expect("a blocking wait4 reaps"), true)
    }

    /// Waits up to `limit` for the child to exit on its own.
    fn wait_for(&mut self, limit: Duration) -> Option<Exit> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.reap(false) {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.signal(libc::SIGKILL);
            self.reap(true);
        }
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (comm, utime + stime in seconds) of a /proc stat file.
fn proc_stat_cpu(path: &Path) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    // Fields after the comm start at field 3 (state); utime and stime are 14, 15.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some((comm, ticks as f64 / clock_ticks()))
}

fn proc_cpu(pid: libc::pid_t) -> Option<f64> {
    proc_stat_cpu(Path::new(&format!("/proc/{pid}/stat"))).map(|(_, s)| s)
}

/// CPU seconds per thread name, summed over the threads of that name.
fn thread_cpu(pid: libc::pid_t) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        if let Some((comm, s)) = proc_stat_cpu(&e.path().join("stat")) {
            *out.entry(comm).or_insert(0.0) += s;
        }
    }
    out
}

/// Selected `/proc/PID/status` fields, in bytes (or a count for Threads).
fn proc_status(pid: libc::pid_t) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if !["VmHWM", "VmRSS", "RssAnon", "RssFile", "Threads"].contains(&k) {
            continue;
        }
        let mut parts = v.split_whitespace();
        if let Some(n) = parts.next().and_then(|n| n.parse::<u64>().ok()) {
            let scale = if parts.next() == Some("kB") { 1024 } else { 1 };
            out.insert(k.to_string(), n * scale);
        }
    }
    out
}

// ---------------------------------------------------------------- helpers

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

fn secs_since(t: SystemTime, since: SystemTime) -> f64 {
    match t.duration_since(since) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The capture time in a dir-sink history name, `20261125T141500.123Z.jpg`.
fn history_capture_time(name: &str) -> Option<SystemTime> {
    let s = name.strip_suffix(".jpg")?;
    if s.len() < 15 || !s.is_ascii() {
        return None;
    }
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..]
    );
    humantime::parse_rfc3339(&rfc).ok()
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// A minimal JSON writer: this file only needs objects of numbers and strings.
#[derive(Default)]
struct Json(Vec<(String, String)>);

impl Json {
    fn num(&mut self, k: &str, v: Option<f64>) -> &mut Self {
        let v = match v {
            Some(v) if v.is_finite() => format!("{v}"),
            _ => "null".into(),
        };
        self.0.push((k.into(), v));
        self
    }
    fn str(&mut self, k: &str, v: &str) -> &mut Self {
        let mut s = String::from("\"");
        for c in v.chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(s, "\\u{:04x}", c as u32);
                }
                c => s.push(c),
            }
        }
        s.push('"');
        self.0.push((k.into(), s));
        self
    }
    fn raw(&mut self, k: &str, v: String) -> &mut Self {
        self.0.push((k.into(), v));
        self
    }
    fn render(&self, indent: usize) -> String {
        let pad = " ".repeat(indent + 2);
        let body: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{pad}\"{k}\": {v}"))
            .collect();
        format!("{{\n{}\n{}}}", body.join(",\n"), " ".repeat(indent))
    }
}

// ---------------------------------------------------------------- set-up

/// What the fixture is, from its `.pts` sidecar header and key flags.
struct FixtureInfo {
    name: String,
    width: u32,
    height: u32,
    profile: String,
    fps: f64,
    gop_s: f64,
}

impl FixtureInfo {
    fn load(dir: &Path, name: &str) -> Result<FixtureInfo, String> {
        let path = dir.join(format!("{name}.pts"));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let header = text.lines().next().unwrap_or_default();
        let field = |k: &str| {
            header
                .split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{k}=")).map(str::to_owned))
        };
        let fps = field("fps")
            .and_then(|f| {
                let (n, d) = f.split_once('/')?;
                Some(n.parse::<f64>().ok()? / d.parse::<f64>().ok()?)
            })
            .unwrap_or(25.0);
        let keys: Vec<usize> = text
            .lines()
            .skip(1)
            .enumerate()
            .filter(|(_, l)| l.split_whitespace().nth(1) == Some("1"))
            .map(|(i, _)| i)
            .collect();
        let gop_frames = keys.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        Ok(FixtureInfo {
            name: name.into(),
            width: field("width").and_then(|v| v.parse().ok()).unwrap_or(0),
            height: field("height").and_then(|v| v.parse().ok()).unwrap_or(0),
            profile: field("profile").unwrap_or_else(|| "?".into()),
            fps,
            gop_s: gop_frames as f64 / fps,
        })
    }

    fn describe(&self) -> String {
        format!(
            "{}x{} {}, {:.0} fps, GOP {} s",
            self.width, self.height, self.profile, self.fps, self.gop_s
        )
    }
}

/// The `rtsnap` binary to measure: `$RTSNAP_BIN` if set (scripts/bench sets
/// it to a plain `cargo build --release` binary), else the one beside this
/// bench's `deps/` folder, built if missing. The latter is what `cargo bench`
/// built, with the features that dev-dependencies turn on in shared crates
/// (e.g. tokio's test-util).
fn rtsnap_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("RTSNAP_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("RTSNAP_BIN={} is not a file", bin.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this bench: {e}"))?;
    // <target>/release/deps/e2e-<hash> -> <target>/release/rtsnap
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("this bench is not in <target>/<profile>/deps/")?;
    let bin = profile_dir.join("rtsnap");
    if !bin.exists() {
        println!(
            "{} is missing: running `cargo build --release --bin rtsnap` first",
            bin.display()
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--bin", "rtsnap"])
            .current_dir(MANIFEST_DIR)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() || !bin.exists() {
            return Err(format!(
                "cargo build failed ({status}); no {}",
                bin.display()
            ));
        }
    }
    Ok(bin)
}

fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.to_owned())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The fixture server as a child process, serving `fixture` on N channels.
struct Server {
    proc: Proc,
    addr: SocketAddr,
    channels: u32,
}

impl Server {
    fn start(bin: &Path, opts: &Options, work: &Path) -> Result<Server, String> {
        // The server always serves `cam1080p-high.h264` from --fixtures; for
        // another fixture, a folder of links gives it that name.
        let fixtures = if opts.fixture == SERVER_FIXTURE {
            Path::new(MANIFEST_DIR).join("fixtures")
        } else {
            let dir = work.join("fixtures");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            for ext in ["h264", "pts"] {
                let src = Path::new(MANIFEST_DIR)
                    .join("fixtures")
                    .join(format!("{}.{ext}", opts.fixture));
                if !src.exists() {
                    return Err(format!("no fixture {}", src.display()));
                }
                std::os::unix::fs::symlink(&src, dir.join(format!("{SERVER_FIXTURE}.{ext}")))
                    .map_err(|e| e.to_string())?;
            }
            dir
        };
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log =
            std::fs::File::create(work.join("fixture-server.log")).map_err(|e| e.to_string())?;
        let mut proc = Proc::spawn(
            Command::new(bin)
                .arg("fixture-server")
                .args(["--listen", &addr.to_string()])
                .args(["--channels", &opts.channels.to_string()])
                .arg("--fixtures")
                .arg(&fixtures)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if proc.reap(false).is_some() || Instant::now() > deadline {
                return Err(format!(
                    "the fixture server did not come up on {addr}; see {}",
                    work.join("fixture-server.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Server {
            proc,
            addr,
            channels: opts.channels,
        })
    }

    fn url(&self, channel: u32) -> String {
        format!("rtsp://{}/unicast/c{channel}/s0/live", self.addr)
    }

    fn cpu(&self) -> f64 {
        proc_cpu(self.proc.pid).unwrap_or(f64::NAN)
    }
}

// ---------------------------------------------------------------- results

/// One side's measurements.
#[derive(Default)]
struct Side {
    label: String,
    processes: usize,
    cpu_s: f64,
    /// Peak RSS of each process.
    rss_bytes: Vec<f64>,
    stills: usize,
    failures: usize,
    /// Seconds from start to each camera's first still (file written).
    first_still_s: Vec<f64>,
    /// Every 1 s sample of every camera's still age.
    ages_s: Vec<f64>,
    /// Per-still wall times (only for one process per still).
    walls_s: Vec<f64>,
    /// Per-still CPU (only for one process per still).
    cpu_per_process_s: Vec<f64>,
    fixture_server_cpu_s: f64,
    killed: usize,
    extra: Json,
}

impl Side {
    fn cpu_per_still(&self) -> Option<f64> {
        (self.stills > 0).then(|| self.cpu_s / self.stills as f64)
    }

    fn rss_total(&self) -> f64 {
        self.rss_bytes.iter().sum()
    }

    fn to_json(&self) -> String {
        let mut j = Json::default();
        j.str("label", &self.label)
            .num("processes", Some(self.processes as f64))
            .num("cpu_s", Some(self.cpu_s))
            .num("cpu_s_per_still", self.cpu_per_still())
            .num("peak_rss_total_mib", Some(self.rss_total() / MIB))
            .num(
                "peak_rss_median_mib",
                median(&self.rss_bytes).map(|b| b / MIB),
            )
            .num("peak_rss_max_mib", max(&self.rss_bytes).map(|b| b / MIB))
            .num("stills", Some(self.stills as f64))
            .num("failures", Some(self.failures as f64))
            .num("killed", Some(self.killed as f64))
            .num("first_still_median_s", median(&self.first_still_s))
            .num("first_still_max_s", max(&self.first_still_s))
            .num("still_age_median_s", median(&self.ages_s))
            .num("still_age_max_s", max(&self.ages_s))
            .num("still_age_samples", Some(self.ages_s.len() as f64))
            .num("wall_median_s", median(&self.walls_s))
            .num("wall_max_s", max(&self.walls_s))
            .num("cpu_per_process_median_s", median(&self.cpu_per_process_s))
            .num("fixture_server_cpu_s", Some(self.fixture_server_cpu_s));
        for (k, v) in &self.extra.0 {
            j.raw(k, v.clone());
        }
        j.render(4)
    }
}

// ---------------------------------------------------------------- rtsnap

fn run_rtsnap(bin: &Path, server: &Server, opts: &Options, work: &Path) -> Result<Side, String> {
    let dir = work.join("rtsnap");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = work.join("rtsnap.toml");
    let template = format!("rtsp://{}/unicast/c{{channel}}/s0/live", server.addr);
    let text = format!(
        "interval = \"{}s\"\n\n[nvr]\nurl = \"{template}\"\nchannels = {}\nname = \"cam{{channel}}\"\n\n\
         [sink.dir]\npath = \"{}\"\nhistory = 1000\n",
        opts.interval,
        server.channels,
        dir.display()
    );
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let log_path = work.join("rtsnap.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let cameras: Vec<String> = (1..=server.channels).map(|c| format!("cam{c}")).collect();

    let server_cpu0 = server.cpu();
    let started = SystemTime::now();
    let mut proc = Proc::spawn(
        Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            // debug logs one line per still with its decode and encode times
            .env("RUST_LOG", "info,rtsnap=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    )
    .map_err(|e| format!("cannot start rtsnap: {e}"))?;

    let mut side = Side {
        label: "rtsnap".into(),
        processes: 1,
        ..Side::default()
    };
    let end = proc.started + Duration::from_secs(opts.seconds);
    let mut tick = proc.started;
    let mut capture_ages = Vec::new();
    let (proc_cpu_before_term, status_before_term, threads_before_term) = loop {
        tick += Duration::from_secs(1);
        let now = Instant::now();
        if tick > end {
            // Last look at the process before it is asked to stop.
            std::thread::sleep(end.saturating_duration_since(now));
            break (
                proc_cpu(proc.pid),
                proc_status(proc.pid),
                thread_cpu(proc.pid),
            );
        }
        std::thread::sleep(tick.saturating_duration_since(now));
        if proc.reap(false).is_some() {
            return Err(format!("rtsnap exited early; see {}", log_path.display()));
        }
        let now = SystemTime::now();
        for cam in &cameras {
            if let Some(t) = mtime(&dir.join(format!("{cam}.jpg"))) {
                side.ages_s.push(secs_since(now, t));
            }
            // The same, counted from when the keyframe arrived (history name).
            let newest = std::fs::read_dir(dir.join(cam)).ok().and_then(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".jpg"))
                    .max()
            });
            if let Some(t) = newest.as_deref().and_then(history_capture_time) {
                capture_ages.push(secs_since(now, t));
            }
        }
    };
    let (exit, killed) = proc.stop(STOP_GRACE);
    side.fixture_server_cpu_s = server.cpu() - server_cpu0;
    side.killed = usize::from(killed);
    side.failures = usize::from(!exit.success());
    side.cpu_s = exit.cpu_s;
    side.rss_bytes.push(exit.max_rss_bytes as f64);

    // Stills and first stills from the history folders; and how old each
    // still's picture was when it was written (file time - keyframe arrival
    // in its name): the age of what a reader gets the moment it is served.
    let mut capture_first = Vec::new();
    let mut publish_ages = Vec::new();
    for cam in &cameras {
        let mut files: Vec<(String, Option<SystemTime>)> = std::fs::read_dir(dir.join(cam))
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        (name, e.metadata().and_then(|m| m.modified()).ok())
                    })
                    .filter(|(n, _)| n.ends_with(".jpg"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        side.stills += files.len();
        for (name, written) in &files {
            if let (Some(w), Some(c)) = (written, history_capture_time(name)) {
                publish_ages.push(secs_since(*w, c));
            }
        }
        if let Some((name, written)) = files.first() {
            if let Some(t) = written {
                side.first_still_s.push(secs_since(*t, started));
            }
            if let Some(t) = history_capture_time(name) {
                capture_first.push(secs_since(t, started));
            }
        }
    }

    // Decode and encode times from the debug log, and any warnings.
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let field = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split(|c: char| c.is_whitespace())
            .next()?
            .parse::<f64>()
            .ok()
    };
    let (mut dec, mut enc) = (Vec::new(), Vec::new());
    let mut warnings = Vec::new();
    for line in log_text.lines() {
        if let (Some(d), Some(e)) = (field(line, "decode_ms="), field(line, "encode_ms=")) {
            dec.push(d);
            enc.push(e);
        }
        if line.contains(" WARN ") || line.contains(" ERROR ") {
            warnings.push(line.to_string());
        }
    }
    let threads: Vec<String> = threads_before_term
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v:.2}"))
        .collect();
    side.extra
        .num("cpu_s_before_sigterm", proc_cpu_before_term)
        .num(
            "vm_hwm_before_sigterm_mib",
            status_before_term.get("VmHWM").map(|&b| b as f64 / MIB),
        )
        .num(
            "vm_rss_before_sigterm_mib",
            status_before_term.get("VmRSS").map(|&b| b as f64 / MIB),
        )
        .num(
            "rss_anon_before_sigterm_mib",
            status_before_term.get("RssAnon").map(|&b| b as f64 / MIB),
        )
        .num(
            "rss_file_before_sigterm_mib",
            status_before_term.get("RssFile").map(|&b| b as f64 / MIB),
        )
        .num(
            "threads_before_sigterm",
            status_before_term.get("Threads").map(|&n| n as f64),
        )
        .raw(
            "cpu_s_by_thread_name",
            format!("{{ {} }}", threads.join(", ")),
        )
        .num("decode_ms_median", median(&dec))
        .num("decode_ms_max", max(&dec))
        .num("encode_ms_median", median(&enc))
        .num("encode_ms_max", max(&enc))
        .num("first_capture_median_s", median(&capture_first))
        .num("capture_age_median_s", median(&capture_ages))
        .num("capture_age_max_s", max(&capture_ages))
        .num("publish_age_median_s", median(&publish_ages))
        .num("publish_age_max_s", max(&publish_ages))
        .num("warnings_logged", Some(warnings.len() as f64));
    for w in warnings.iter().take(5) {
        println!("  rtsnap logged: {w}");
    }
    Ok(side)
}

// ---------------------------------------------------------------- ffmpeg (b)

fn run_ffmpeg_persistent(server: &Server, opts: &Options, work: &Path) -> Result<Side, String> {
    let dir = work.join("ffmpeg-b");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let server_cpu0 = server.cpu();
    let started = SystemTime::now();
    let t0 = Instant::now();
    let mut procs = Vec::new();
    let mut files = Vec::new();
    for c in 1..=server.channels {
        let out = dir.join(format!("cam{c}.jpg"));
        let log = std::fs::File::create(work.join(format!("ffmpeg-b-cam{c}.log")))
            .map_err(|e| e.to_string())?;
        let p = Proc::spawn(
            Command::new("ffmpeg")
                .args(["-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp"])
                .args(["-skip_frame", "nokey", "-i", &server.url(c)])
                .args(["-vf", &format!("fps=1/{}", opts.interval)])
                .args(["-update", "1", "-q:v", "2", "-y"])
                .arg(&out)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )
        .map_err(|e| format!("cannot start ffmpeg: {e}"))?;
        procs.push(p);
        files.push(out);
    }

    let mut side = Side {
        label: format!("ffmpeg (b) nokey x{}", server.channels),
        processes: procs.len(),
        ..Side::default()
    };
    // Count rewrites of each file by polling its mtime; sample ages each 1 s.
    let mut last: Vec<Option<SystemTime>> = vec![None; files.len()];
    let end = t0 + Duration::from_secs(opts.seconds);
    let poll = Duration::from_millis(200);
    let mut tick = t0;
    let mut n = 0u64;
    while tick + poll <= end {
        tick += poll;
        n += 1;
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let now = SystemTime::now();
        for (f, last) in files.iter().zip(&mut last) {
            let Some(m) = mtime(f) else { continue };
            if *last != Some(m) {
                if last.is_none() {
                    side.first_still_s.push(secs_since(m, started));
                }
                side.stills += 1;
                *last = Some(m);
            }
            if n.is_multiple_of(5) {
                side.ages_s.push(secs_since(now, m));
            }
        }
    }
    for p in &mut procs {
        p.signal(libc::SIGTERM);
    }
    for p in &mut procs {
        let exit = match p.wait_for(STOP_GRACE) {
            Some(e) => e,
            None => {
                side.killed += 1;
                p.stop(Duration::ZERO).0
            }
        };
        side.cpu_s += exit.cpu_s;
        side.rss_bytes.push(exit.max_rss_bytes as f64);
        // ffmpeg exits 255 after SIGTERM; a signal death or other code is odd.
        if !(libc::WIFEXITED(exit.status) && matches!(libc::WEXITSTATUS(exit.status), 0 | 255)) {
            side.failures += 1;
        }
    }
    side.fixture_server_cpu_s = server.cpu() - server_cpu0;
    Ok(side)
}

// ---------------------------------------------------------------- ffmpeg (a)

fn run_ffmpeg_per_still(server: &Server, opts: &Options, work: &Path) -> Result<Side, String> {
    let dir = work.join("ffmpeg-a");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let server_cpu0 = server.cpu();
    let t0 = Instant::now();
    let interval = Duration::from_secs(opts.interval);
    let channels = server.channels;
    // Camera c's stills are due at (c-1)/N of an interval, then every interval.
    let mut next_due: Vec<Instant> = (0..channels)
        .map(|i| t0 + interval * i / channels)
        .collect();
    let mut running: Vec<(u32, PathBuf, Proc)> = Vec::new();
    let mut last_done: Vec<Option<Instant>> = vec![None; channels as usize];
    let mut side = Side {
        label: "ffmpeg (a) per still".into(),
        ..Side::default()
    };
    let end = t0 + Duration::from_secs(opts.seconds);
    let hard_end = end + PER_STILL_GRACE;
    let mut seq = 0u64;
    let mut next_sample = t0 + Duration::from_secs(1);
    let log = work.join("ffmpeg-a.log");
    loop {
        let now = Instant::now();
        if now < end {
            for (c, due) in next_due.iter_mut().enumerate() {
                if now >= *due {
                    *due += interval;
                    seq += 1;
                    let out = dir.join(format!("cam{}-{seq:05}.jpg", c + 1));
                    let log = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .map_err(|e| e.to_string())?;
                    let p = Proc::spawn(
                        Command::new("ffmpeg")
                            .args(["-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp"])
                            .args(["-i", &server.url(c as u32 + 1)])
                            .args(["-frames:v", "1", "-q:v", "2", "-y"])
                            .arg(&out)
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(log),
                    )
                    .map_err(|e| format!("cannot start ffmpeg: {e}"))?;
                    side.processes += 1;
                    running.push((c as u32, out, p));
                }
            }
        } else if running.is_empty() {
            break;
        }
        if now >= hard_end {
            for (_, _, p) in &mut running {
                p.stop(Duration::ZERO);
                side.killed += 1;
                side.failures += 1;
            }
            running.clear();
            break;
        }
        // Reap whatever finished.
        let mut i = 0;
        while i < running.len() {
            if let Some(exit) = running[i].2.reap(false) {
                let (c, out, _) = running.swap_remove(i);
                side.cpu_s += exit.cpu_s;
                side.rss_bytes.push(exit.max_rss_bytes as f64);
                side.cpu_per_process_s.push(exit.cpu_s);
                let ok = exit.success() && std::fs::metadata(&out).is_ok_and(|m| m.len() > 0);
                if ok {
                    side.stills += 1;
                    side.walls_s.push(exit.wall.as_secs_f64());
                    if last_done[c as usize].is_none() {
                        // Cameras start staggered: count from this process's start.
                        side.first_still_s.push(exit.wall.as_secs_f64());
                    }
                    last_done[c as usize] = Some(Instant::now());
                } else {
                    side.failures += 1;
                }
            } else {
                i += 1;
            }
        }
        if now >= next_sample && now < end {
            next_sample += Duration::from_secs(1);
            for t in last_done.iter().flatten() {
                side.ages_s.push((now - *t).as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    side.fixture_server_cpu_s = server.cpu() - server_cpu0;
    Ok(side)
}

// ---------------------------------------------------------------- report

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = humantime::format_rfc3339_seconds(SystemTime::now());
    format!("{cpu}, {cores} cores, {date}")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn ffmpeg_version() -> Option<String> {
    let out = Command::new("ffmpeg")
        .arg("-version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| text.lines().next().unwrap_or("ffmpeg").to_string())
}

fn row(s: &Side) -> String {
    let rss = match s.rss_bytes.len() {
        0 => "-".into(),
        1 => format!("{:.0} MiB total", s.rss_total() / MIB),
        _ if s.label.contains("(a)") => format!(
            "{:.0} MiB each (max {:.0})",
            median(&s.rss_bytes).unwrap_or(0.0) / MIB,
            max(&s.rss_bytes).unwrap_or(0.0) / MIB
        ),
        _ => format!(
            "{:.0} MiB ({:.0} each)",
            s.rss_total() / MIB,
            median(&s.rss_bytes).unwrap_or(0.0) / MIB
        ),
    };
    let stills = if s.failures > 0 {
        format!("{} ({} failed)", s.stills, s.failures)
    } else {
        s.stills.to_string()
    };
    let mut line = format!(
        "{:<24} {:>7.2}  {:>11}  {:<22} {:>12}  {:>9}  {:>5} / {:<5}",
        s.label,
        s.cpu_s,
        fmt_opt(s.cpu_per_still(), 3),
        rss,
        stills,
        format!("{} s", fmt_opt(median(&s.first_still_s), 2)),
        fmt_opt(median(&s.ages_s), 1),
        format!("{} s", fmt_opt(max(&s.ages_s), 1)),
    );
    if !s.walls_s.is_empty() {
        let _ = write!(
            line,
            "  wall med {} s, CPU med {} s",
            fmt_opt(median(&s.walls_s), 1),
            fmt_opt(median(&s.cpu_per_process_s), 2)
        );
    }
    line
}

fn ratio(a: &Side, b: Option<&Side>) -> Option<f64> {
    Some(a.cpu_per_still()? / b?.cpu_per_still()?)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("e2e benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let opts = Options::parse()?;
    let fixtures = Path::new(MANIFEST_DIR).join("fixtures");
    let info = FixtureInfo::load(&fixtures, &opts.fixture)?;
    let bin = rtsnap_binary()?;
    let ffmpeg = if opts.skip_ffmpeg {
        None
    } else {
        ffmpeg_version()
    };
    let work = tempfile::Builder::new()
        .prefix("rtsnap-e2e-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary folder: {e}"))?;
    let work_path = work.path().to_owned();
    let load_before = loadavg();

    let title = format!(
        "rtsnap e2e benchmark: {} x {} ({}), a still every {} s, {} s per side",
        opts.channels,
        info.name,
        info.describe(),
        opts.interval,
        opts.seconds
    );
    println!("{title}");
    println!("machine: {}", machine());
    println!("load average before: {load_before}");
    println!("rtsnap binary: {}", bin.display());

    let server = Server::start(&bin, &opts, &work_path)?;
    println!(
        "fixture server: {} channel(s) at {}",
        opts.channels,
        server.url(1)
    );
    println!("running rtsnap for {} s ...", opts.seconds);
    let rtsnap = run_rtsnap(&bin, &server, &opts, &work_path)?;
    let (mut b, mut a) = (None, None);
    match &ffmpeg {
        Some(_) => {
            std::thread::sleep(Duration::from_secs(2));
            println!(
                "running ffmpeg (b), one persistent process per camera, for {} s ...",
                opts.seconds
            );
            b = Some(run_ffmpeg_persistent(&server, &opts, &work_path)?);
            std::thread::sleep(Duration::from_secs(2));
            println!(
                "running ffmpeg (a), one process per still, for {} s ...",
                opts.seconds
            );
            a = Some(run_ffmpeg_per_still(&server, &opts, &work_path)?);
        }
        None if opts.skip_ffmpeg => println!("ffmpeg baselines skipped (--skip-ffmpeg)"),
        None => println!("ffmpeg is not installed: the ffmpeg baselines were skipped"),
    }
    let load_after = loadavg();

    println!();
    println!("{title}");
    println!("machine: {}", machine());
    println!(
        "{:<24} {:>7}  {:>11}  {:<22} {:>12}  {:>9}  still age med/max",
        "", "CPU-s", "CPU-s/still", "peak RSS", "stills", "1st still"
    );
    for s in std::iter::once(&rtsnap).chain(b.iter()).chain(a.iter()) {
        println!("{}", row(s));
    }
    let ratio_b = ratio(&rtsnap, b.as_ref());
    let ratio_a = ratio(&rtsnap, a.as_ref());
    let rss_mib = rtsnap.rss_total() / MIB;
    let r = &rtsnap.extra;
    let extra = |k: &str| r.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let extra_num = |k: &str| extra(k).and_then(|v| v.parse::<f64>().ok());
    // The performance issue's targets, each with its measured value.
    let gop = info.gop_s;
    println!("targets (met / NOT met):");
    let target = |what: &str, value: Option<f64>, decimals: usize, limit: f64, limit_text: &str| {
        let verdict = match value {
            Some(v) if v <= limit => "met",
            Some(_) => "NOT met",
            None => "not measured",
        };
        println!(
            "  {verdict:<12} {what} = {} (target <= {limit_text})",
            fmt_opt(value, decimals)
        );
    };
    if ffmpeg.is_some() {
        target("CPU per still, rtsnap/(b)", ratio_b, 3, 1.0 / 3.0, "1/3");
        target(
            "CPU per still, rtsnap/(a)",
            ratio_a,
            3,
            1.0 / 14.0,
            "1/14 = 0.071",
        );
    } else {
        println!("  (no ffmpeg: CPU ratios not measured)");
    }
    target("rtsnap peak RSS, MiB", Some(rss_mib), 0, 64.0, "64");
    target(
        "first still after start, median s",
        median(&rtsnap.first_still_s),
        2,
        gop + 0.1,
        &format!("keyframe interval + 0.1 = {:.1}", gop + 0.1),
    );
    target(
        "picture age when a still is published, max s",
        extra_num("publish_age_max_s"),
        2,
        gop,
        &format!("keyframe interval = {gop:.1}"),
    );
    let get = |k: &str| extra(k).unwrap_or_else(|| "-".into());
    let short = |k: &str| {
        get(k)
            .parse::<f64>()
            .map_or("-".to_string(), |v| format!("{v:.1}"))
    };
    println!(
        "rtsnap: decode {} ms, encode {} ms median per still; CPU by thread {}; RSS anon {} MiB, file {} MiB",
        short("decode_ms_median"),
        short("encode_ms_median"),
        get("cpu_s_by_thread_name"),
        short("rss_anon_before_sigterm_mib"),
        short("rss_file_before_sigterm_mib"),
    );
    println!(
        "fixture server CPU-s per side: rtsnap {:.2}{}{}; load average before {load_before}, after {load_after}",
        rtsnap.fixture_server_cpu_s,
        b.as_ref()
            .map_or(String::new(), |s| format!(", (b) {:.2}", s.fixture_server_cpu_s)),
        a.as_ref()
            .map_or(String::new(), |s| format!(", (a) {:.2}", s.fixture_server_cpu_s)),
    );
    println!(
        "still age = now - mtime(<camera>.jpg), sampled every 1 s per camera (rtsnap counted from keyframe arrival: {} / {} s); \
         picture age when published = mtime - keyframe arrival, per still (rtsnap: {} / {} s); \
         1st still = median over cameras of the time from start (for (a): from its process's start) to the first file",
        short("capture_age_median_s"),
        short("capture_age_max_s"),
        short("publish_age_median_s"),
        short("publish_age_max_s")
    );

    let mut j = Json::default();
    j.str("benchmark", "rtsnap e2e")
        .str("title", &title)
        .str("machine", &machine())
        .str("fixture", &info.name)
        .str("fixture_description", &info.describe())
        .num("channels", Some(opts.channels as f64))
        .num("interval_s", Some(opts.interval as f64))
        .num("seconds_per_side", Some(opts.seconds as f64))
        .str("ffmpeg", ffmpeg.as_deref().unwrap_or("skipped"))
        .str("load_average_before", &load_before)
        .str("load_average_after", &load_after)
        .raw("rtsnap", rtsnap.to_json())
        .raw("ffmpeg_b", b.as_ref().map_or("null".into(), Side::to_json))
        .raw("ffmpeg_a", a.as_ref().map_or("null".into(), Side::to_json))
        .num("ratio_cpu_per_still_rtsnap_over_b", ratio_b)
        .num("ratio_cpu_per_still_rtsnap_over_a", ratio_a)
        .num("rtsnap_peak_rss_mib", Some(rss_mib));
    let json_path = target_dir()
        .unwrap_or_else(|| Path::new(MANIFEST_DIR).join("target"))
        .join("bench-e2e.json");
    std::fs::write(&json_path, j.render(0) + "\n")
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    println!("numbers: {}", json_path.display());

    drop(server);
    if std::env::var_os("RTSNAP_E2E_KEEP").is_some() {
        println!("kept {}", work.keep().display());
    }
    Ok(())
}
