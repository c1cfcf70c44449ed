//! The `rtsnap` command: a thin shell over the library.
//!
//! Each subcommand parses its arguments, calls one library entry point and
//! turns the outcome into output and an exit status: 0 on success, 1 with one
//! `error:` sentence on stderr otherwise (2 for bad usage, from clap).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rtsnap::config::parse_duration;
use rtsnap::redact::{LogScrubber, RedactedUrl, UrlSecret};
use rtsnap::{Config, Credentials, Daemon, Secret};
use tracing_subscriber::EnvFilter;
use url::Url;

#[derive(Parser)]
#[command(
    name = "rtsnap",
    version,
    about = "JPEG stills from RTSP cameras and NVRs: persistent sessions, keyframes only, no ffmpeg",
    long_about = "rtsnap keeps one RTSP session open per camera, decodes only the keyframes it \
                  needs with openh264 and writes JPEG stills every few seconds: to a folder, to \
                  memory for a web viewer, or to your own sink.\n\n\
                  Start with `rtsnap demo` to see it work against a built-in test server, \
                  `rtsnap probe URL` to look at a camera, then `rtsnap run --config rtsnap.toml`.\n\n\
                  Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more detail."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: keep every configured camera's still fresh until SIGINT/SIGTERM.
    Run {
        /// The configuration file (see examples/rtsnap.toml).
        #[arg(short, long, value_name = "FILE", default_value = "rtsnap.toml")]
        config: PathBuf,
        /// Only check the configuration and exit.
        #[arg(long)]
        check: bool,
    },
    /// Take one still from an RTSP URL, write it and exit.
    Snap {
        #[command(flatten)]
        camera: CameraArgs,
        /// Where to write the JPEG.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// JPEG quality, 1-100.
        #[arg(short, long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=100))]
        quality: u8,
    },
    /// Show a stream's codec, profile, resolution, frame rate and measured keyframe interval.
    Probe {
        #[command(flatten)]
        camera: CameraArgs,
        /// How long to watch the stream.
        #[arg(short, long, default_value = "6s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Start a built-in 8-channel test RTSP server on 127.0.0.1 and run the daemon against it.
    Demo {
        /// Folder for the stills.
        #[arg(short, long, value_name = "DIR", default_value = "rtsnap-demo")]
        out: PathBuf,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(short, long, value_name = "SECS")]
        duration: Option<u64>,
        /// Number of camera channels to simulate.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
        channels: u32,
        /// Time between stills of each camera.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        interval: Duration,
        /// Folder holding the recorded fixture streams.
        #[arg(long, value_name = "DIR", env = "RTSNAP_FIXTURES")]
        fixtures: Option<PathBuf>,
        /// Address of the viewer (port 0 picks a free one). Loopback only:
        /// the demo has no authentication.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// Read a password from stdin and print its argon2id hash, for `[http] password_hash`.
    #[command(name = "hash-password")]
    HashPassword,
    /// Serve the recorded test streams over RTSP, to try rtsnap, ffmpeg or VLC without a camera.
    #[command(name = "fixture-server")]
    FixtureServer {
        /// Address to listen on. Keep it on loopback unless you mean to share it.
        #[arg(long, default_value = "127.0.0.1:8554")]
        listen: std::net::SocketAddr,
        /// Number of channels (all serve the 1080p fixture, staggered).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
        channels: u32,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(short, long, value_name = "SECS")]
        duration: Option<u64>,
        /// Folder holding the recorded fixture streams.
        #[arg(long, value_name = "DIR", env = "RTSNAP_FIXTURES")]
        fixtures: Option<PathBuf>,
    },
}

#[derive(Args)]
struct CameraArgs {
    /// The camera's RTSP URL, without credentials (rtsp://host:554/path).
    url: String,
    /// User name for the camera.
    #[arg(short, long)]
    username: Option<String>,
    /// Name of the environment variable holding the password.
    #[arg(long, value_name = "VAR", requires = "username")]
    password_env: Option<String>,
    /// Deadline for each network step and for the first keyframe.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// How RTP travels: tcp (interleaved), udp, or auto (UDP when the camera refuses TCP).
    #[arg(long, default_value = "tcp", value_name = "tcp|udp|auto")]
    transport: rtsnap::config::RtspTransport,
    /// Send the password to a camera that offers only Basic authentication
    /// (clear text; a warning is printed). `false` refuses such a camera.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    allow_basic_auth: bool,
    /// Accept a password inside the URL (query or XMEye-style path), for
    /// cameras that take it nowhere else. It is masked in all output but
    /// crosses the network in clear text, and stays in your shell history.
    #[arg(long)]
    allow_url_credentials: bool,
}

impl CameraArgs {
    fn resolve(&self) -> Result<(Url, Option<Credentials>), String> {
        let url = Url::parse(&self.url).map_err(|e| {
            format!(
                "\"{}\" is not a URL: {e}",
                rtsnap::redact::redact_text(&self.url)
            )
        })?;
        if url.scheme() != "rtsp" {
            return Err(format!(
                "only rtsp:// URLs are supported, not {}://",
                url.scheme()
            ));
        }
        match rtsnap::redact::url_secret(&url) {
            None => {}
            Some(UrlSecret::UserInfo) => {
                return Err(
                    "the URL contains credentials; pass --username and --password-env \
                     instead, so the password stays out of shell history and logs"
                        .into(),
                )
            }
            Some(_) if self.allow_url_credentials => {}
            Some(found) => {
                return Err(format!(
                    "the URL contains {found}; remove it and pass --username and --password-env \
                     instead (rtsnap sends the password with digest authentication when the \
                     camera offers it, and it stays out of shell history and logs). If the camera \
                     accepts credentials only in the URL, add --allow-url-credentials: rtsnap \
                     then masks them in its output, but they cross the network in clear text"
                ))
            }
        }
        let creds = match (&self.username, &self.password_env) {
            (Some(u), Some(var)) => {
                let p = std::env::var(var)
                    .map_err(|_| format!("environment variable {var} is not set"))?;
                Some(Credentials::new(
                    u.clone(),
                    Secret::new(p),
                    format!("the password in ${var}"),
                ))
            }
            (Some(u), None) => Some(Credentials::new(
                u.clone(),
                Secret::new(""),
                "--password-env (none was given)",
            )),
            _ => None,
        };
        let creds = creds.map(|c| Credentials {
            allow_basic_auth: self.allow_basic_auth,
            ..c
        });
        Ok((url, creds))
    }
}

/// Masks secrets in every log line (see [`LogScrubber`]); the commands
/// register the passwords and tokens they load.
static SCRUBBER: std::sync::LazyLock<LogScrubber> = std::sync::LazyLock::new(LogScrubber::new);

/// Registers a camera's password (and its Basic form) with [`SCRUBBER`].
fn scrub_credentials(creds: Option<&Credentials>) {
    if let Some(c) = creds {
        SCRUBBER.add_credentials(&c.username, c.password.expose());
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::Snap { .. } | Command::Probe { .. });
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(if quiet { "warn" } else { "info" })),
        )
        .with_writer(SCRUBBER.clone())
        // Colour only on a terminal; journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One thread for all the network I/O is plenty (and cheapest on a Pi);
    // decoding and file writes run on tokio's blocking threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Decodes and file writes: a few threads are plenty, and every extra
        // thread that ever allocates gets its own malloc arena (RSS).
        .max_blocking_threads(4)
        .build()
        .expect("cannot start the tokio runtime");
    match rt.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {}", SCRUBBER.scrub(&message));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<(), String> {
    match command {
        Command::Run { config, check } => run(&config, check).await,
        Command::Snap {
            camera,
            output,
            quality,
        } => snap(&camera, &output, quality).await,
        Command::Probe { camera, duration } => probe(&camera, duration).await,
        Command::Demo {
            out,
            duration,
            channels,
            interval,
            fixtures,
            listen,
        } => demo(&out, duration, channels, interval, fixtures, listen).await,
        Command::HashPassword => hash_password(),
        Command::FixtureServer {
            listen,
            channels,
            duration,
            fixtures,
        } => fixture_server(listen, channels, duration, fixtures).await,
    }
}

async fn run(path: &Path, check: bool) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    for cam in &config.cameras {
        scrub_credentials(cam.credentials.as_ref());
    }
    if let Some(kv) = &config.sinks.cloudflare_kv {
        SCRUBBER.add(kv.api_token.expose());
    }
    if let Some(token) = config.http.as_ref().and_then(|h| h.bearer_token.as_ref()) {
        SCRUBBER.add(token.expose());
    }
    if check {
        println!("{}: OK, {} camera(s)", path.display(), config.cameras.len());
        return Ok(());
    }
    tracing::info!(
        cameras = config.cameras.len(),
        "rtsnap {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let daemon = Daemon::try_start(config, Vec::new()).map_err(|e| e.to_string())?;
    wait_for_signal(None).await;
    tracing::info!("shutting down");
    daemon.shutdown().await;
    Ok(())
}

/// Waits for SIGINT or SIGTERM (systemd's stop), or for `limit`.
async fn wait_for_signal(limit: Option<Duration>) {
    let limit = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("cannot listen for SIGTERM");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = limit => {}
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = limit => {}
    }
}

/// Reads one password (the first line of stdin) and prints its PHC string.
fn hash_password() -> Result<(), String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        eprintln!("password (input is shown; pipe it in to keep it off the screen):");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = Secret::new(line.trim_end_matches(['\r', '\n']));
    if password.expose().is_empty() {
        return Err("the password is empty; write it on stdin, e.g. \
                    `printf %s 'long passphrase' | rtsnap hash-password`"
            .into());
    }
    let phc = rtsnap::http::auth::hash_password(&password)?;
    println!("{phc}");
    Ok(())
}

async fn snap(camera: &CameraArgs, output: &Path, quality: u8) -> Result<(), String> {
    let (url, creds) = camera.resolve()?;
    scrub_credentials(creds.as_ref());
    let still = rtsnap::snap::snap(
        &url,
        creds.as_ref(),
        camera.transport,
        camera.timeout,
        quality,
    )
    .await
    .map_err(|e| format!("{}: {e}", RedactedUrl(&url)))?;
    write_atomically(output, &still.jpeg)
        .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
    println!(
        "{}: {}x{}, {} bytes",
        output.display(),
        still.width,
        still.height,
        still.jpeg.len()
    );
    Ok(())
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the output path has no file name"))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

async fn probe(camera: &CameraArgs, duration: Duration) -> Result<(), String> {
    let (url, creds) = camera.resolve()?;
    scrub_credentials(creds.as_ref());
    let r = rtsnap::probe::probe(
        &url,
        creds.as_ref(),
        camera.transport,
        camera.timeout,
        duration,
    )
    .await
    .map_err(|e| format!("{}: {e}", RedactedUrl(&url)))?;
    let opt = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    println!("url:                {}", RedactedUrl(&url));
    match r.video_codec {
        rtsnap::pipeline::VideoCodec::H264 => println!(
            "codec:              H.264 {}",
            opt(r.codec.clone().map(|c| format!("({c})")))
        ),
        rtsnap::pipeline::VideoCodec::Mjpeg => {
            println!("codec:              MJPEG (frames are passed through as stills)")
        }
    }
    println!("profile:            {}", opt(r.profile.map(str::to_owned)));
    println!(
        "resolution:         {}",
        opt(r.dims.map(|(w, h)| format!("{w}x{h}")))
    );
    println!(
        "frame rate:         {} measured, {} declared",
        opt(r.measured_fps.map(|f| format!("{f:.2} fps"))),
        opt(r.declared_fps.map(|f| format!("{f:.2} fps")))
    );
    println!(
        "keyframe interval:  {}",
        opt(r
            .keyframe_interval
            .map(|d| format!("{:.2} s", d.as_secs_f64())))
    );
    println!(
        "bitrate:            {}",
        opt(r.bitrate.map(|b| format!("{:.0} kbit/s", b / 1000.0)))
    );
    if let Some(s) = r.sps {
        println!(
            "scan, range:        {}, {} range",
            if s.interlaced {
                "interlaced (not decodable by rtsnap)"
            } else {
                "progressive"
            },
            if s.full_range { "full" } else { "limited" }
        );
        if let Some(e) = s.unsupported() {
            println!("decodable:          no: {e}");
        }
    }
    if r.intra_non_idr > 0 && r.keyframes == 0 {
        println!(
            "keyframes:          none usable: {} intra pictures that are not IDR (open GOP or \
             recovery points); set the camera to send IDR keyframes",
            r.intra_non_idr
        );
    } else if r.intra_non_idr > 0 {
        println!(
            "keyframes:          {} of them open-GOP I pictures (not IDR), relabelled as IDR",
            r.intra_non_idr
        );
    }
    println!(
        "observed:           {} frames, {} keyframes in {:.1} s",
        r.frames,
        r.keyframes,
        r.observed.as_secs_f64()
    );
    Ok(())
}

#[cfg(feature = "fixture")]
async fn demo(
    out: &Path,
    duration: Option<u64>,
    channels: u32,
    interval: Duration,
    fixtures: Option<PathBuf>,
    listen: std::net::SocketAddr,
) -> Result<(), String> {
    use rtsnap::fixture::demo::{start_demo_server, DEMO_PATH_TEMPLATE};

    let fixtures = fixtures.unwrap_or_else(rtsnap::fixture::default_dir);
    let server = start_demo_server(&fixtures, channels)
        .await
        .map_err(|e| format!("cannot start the fixture server: {e}"))?;
    let template = server.url(DEMO_PATH_TEMPLATE);
    let text = format!(
        "interval = \"{}s\"\n[nvr]\nurl = \"{template}\"\nchannels = {channels}\nname = \"ch{{channel}}\"\n\
         [sink.dir]\npath = \"{}\"\nhistory = 10\n[http]\nlisten = \"{listen}\"\n",
        interval.as_secs_f64(),
        out.display()
    );
    let config = Config::from_toml(Path::new("(demo)"), &text).map_err(|e| e.to_string())?;
    println!("rtsnap demo: {channels} cameras served by the built-in fixture server at {template}");
    println!(
        "stills go to {}/ch1.jpg .. ch{channels}.jpg, refreshed every {:.0}s (history in {}/chN/)",
        out.display(),
        interval.as_secs_f64(),
        out.display()
    );
    match duration {
        Some(d) => println!("running for {d}s"),
        None => println!("press Ctrl-C to stop"),
    }
    let daemon = Daemon::try_start(config, Vec::new()).map_err(|e| e.to_string())?;
    if let Some(addr) = daemon.http_addr() {
        println!("viewer: http://{addr}/");
    }
    wait_for_signal(duration.map(Duration::from_secs)).await;
    let status = daemon.status();
    daemon.shutdown().await;
    server.shutdown().await;

    println!("\n{:<6} {:>7} {:>11}  file", "camera", "stills", "size");
    let mut missing = Vec::new();
    for s in &status {
        let file = out.join(format!("{}.jpg", s.name));
        println!(
            "{:<6} {:>7} {:>11}  {}",
            s.name,
            s.stills,
            s.dims.map_or("-".into(), |(w, h)| format!("{w}x{h}")),
            file.display()
        );
        if s.stills == 0 || !file.exists() {
            missing.push(s.name.to_string());
        }
    }
    if missing.is_empty() {
        println!("\nopen {} to look at them", out.display());
        Ok(())
    } else {
        Err(format!(
            "no still from {} (run with RUST_LOG=debug to see why)",
            missing.join(", ")
        ))
    }
}

#[cfg(feature = "fixture")]
async fn fixture_server(
    listen: std::net::SocketAddr,
    channels: u32,
    duration: Option<u64>,
    fixtures: Option<PathBuf>,
) -> Result<(), String> {
    use rtsnap::fixture::demo::{serve_demo, DEMO_PATH_TEMPLATE};
    let fixtures = fixtures.unwrap_or_else(rtsnap::fixture::default_dir);
    let server = serve_demo(&fixtures, channels, listen)
        .await
        .map_err(|e| format!("cannot start the fixture server: {e}"))?;
    println!(
        "serving {channels} channels at {}",
        server.url(DEMO_PATH_TEMPLATE)
    );
    wait_for_signal(duration.map(Duration::from_secs)).await;
    server.shutdown().await;
    Ok(())
}

#[cfg(not(feature = "fixture"))]
async fn fixture_server(
    _: std::net::SocketAddr,
    _: u32,
    _: Option<u64>,
    _: Option<PathBuf>,
) -> Result<(), String> {
    Err("this build has no fixture server; rebuild with the default `fixture` feature".into())
}

#[cfg(not(feature = "fixture"))]
async fn demo(
    _: &Path,
    _: Option<u64>,
    _: u32,
    _: Duration,
    _: Option<PathBuf>,
    _: std::net::SocketAddr,
) -> Result<(), String> {
    Err("this build has no fixture server; rebuild with the default `fixture` feature".into())
}
