//! Typed configuration: one TOML file becomes one [`Config`].
//!
//! The file is parsed in two steps. Serde first reads it into `Raw*` structs that
//! mirror the file (with `deny_unknown_fields`, and with spans kept for the
//! fields later checks talk about); then [`Config::from_toml`] validates and
//! expands it into the types the daemon uses. Every refusal names the file, the
//! line and a fix, because a daemon that dies at boot on a Pi in a closet is
//! only debugged through that one message.
//!
//! Secrets (RTSP passwords) are read from the environment or a file at load
//! time and kept in [`Secret`], whose `Debug` and `Display` never show them.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::redact::{RedactedUrl, UrlSecret};

/// Default interval between stills of one camera.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Default JPEG quality (1-100).
pub const DEFAULT_QUALITY: u8 = 80;
/// Default deadline for each network step (connect, DESCRIBE, SETUP, PLAY, each read).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A string that must never be printed: RTSP passwords, API tokens.
///
/// `Debug` and `Display` print `***`; the value is only reachable through
/// [`Secret::expose`], which makes every use easy to audit.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call only where the value goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// RTSP credentials of one camera. `Debug` redacts the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// User name sent in RTSP Basic or Digest authentication.
    pub username: String,
    /// The password; see [`Secret`].
    pub password: Secret,
    /// Where the password came from (`env NVR_PASSWORD`, `file /etc/...`), for
    /// error messages that tell the user what to check without showing it.
    pub source: String,
    /// Whether the password may be sent to a camera that only offers HTTP
    /// Basic authentication, i.e. in clear text (`allow_basic_auth`, default
    /// true, with a warning). When false, such a camera is refused before
    /// the password is handed to the RTSP client; see
    /// [`crate::source::auth_probe`].
    pub allow_basic_auth: bool,
}

impl Credentials {
    /// Credentials that may be sent with Basic authentication too (with a
    /// warning), as by default.
    pub fn new(username: impl Into<String>, password: Secret, source: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password,
            source: source.into(),
            allow_basic_auth: true,
        }
    }
}

/// One camera: one persistent RTSP session and one stream of stills.
///
/// `Debug` shows the URL through [`RedactedUrl`], so a camera whose URL
/// carries credentials (`allow_url_credentials`) can be debug-printed.
#[derive(Clone)]
pub struct CameraConfig {
    /// Unique name; names files (`<name>.jpg`), keys and log lines.
    pub name: String,
    /// The RTSP URL; without credentials unless the configuration opted in
    /// with `allow_url_credentials`. Show it only through [`RedactedUrl`].
    pub url: Url,
    /// Credentials, if the camera needs them.
    pub credentials: Option<Credentials>,
    /// Time between stills.
    pub interval: Duration,
    /// How RTP travels: TCP interleaved (default), UDP, or TCP falling back to UDP.
    pub transport: RtspTransport,
}

impl fmt::Debug for CameraConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CameraConfig")
            .field("name", &self.name)
            .field("url", &RedactedUrl(&self.url))
            .field("credentials", &self.credentials)
            .field("interval", &self.interval)
            .field("transport", &self.transport)
            .finish()
    }
}

/// `transport = "tcp" | "udp" | "auto"` of a camera or `[nvr]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RtspTransport {
    /// RTP interleaved on the RTSP TCP connection: survives NAT and loss
    /// turns into delay, never into holes.
    #[default]
    Tcp,
    /// RTP over UDP, for cameras and relays that serve nothing else. A
    /// keyframe with a lost packet is never used.
    Udp,
    /// TCP, and UDP when the camera refuses TCP (RTSP 461 or 400 to SETUP).
    Auto,
}

impl RtspTransport {
    /// The name used in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
            RtspTransport::Auto => "auto",
        }
    }
}

impl std::str::FromStr for RtspTransport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(RtspTransport::Tcp),
            "udp" => Ok(RtspTransport::Udp),
            "auto" => Ok(RtspTransport::Auto),
            other => Err(format!("unknown transport \"{other}\"")),
        }
    }
}

impl fmt::Display for RtspTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[sink.dir]` table: stills written to a folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirSinkConfig {
    /// The folder; created if missing.
    pub path: PathBuf,
    /// Stills kept per camera under `<path>/<camera>/`; 0 keeps only `<camera>.jpg`.
    pub history: usize,
}

/// The `[sink.cloudflare_kv]` table: stills pushed to Cloudflare Workers KV.
#[derive(Clone, Debug, PartialEq)]
pub struct KvSinkConfig {
    /// Cloudflare account id.
    pub account_id: String,
    /// Workers KV namespace id.
    pub namespace_id: String,
    /// API token with "Workers KV Storage: Edit".
    pub api_token: Secret,
    /// Where the token came from (`api_token_env CF_API_TOKEN`), for messages.
    pub token_source: String,
    /// REST API base, `https://api.cloudflare.com/client/v4` unless a test or
    /// proxy says otherwise.
    pub api_base: Url,
    /// Keep `history/<camera>/<time>` keys for this long (>= 60 s); none if unset.
    pub history_ttl: Option<Duration>,
    /// Upload an unchanged scene at least this often, so ages stay honest.
    pub max_quiet: Duration,
    /// Least time between two uploads of one camera; every still if unset.
    pub upload_interval: Option<Duration>,
    /// Scene change (mean luma difference per cell, 0-255) that counts as changed.
    pub change_threshold: f64,
}

/// Where stills go besides the in-memory store, which always exists.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SinksConfig {
    /// `[sink.dir]`, if configured.
    pub dir: Option<DirSinkConfig>,
    /// `[sink.cloudflare_kv]`, if configured.
    pub cloudflare_kv: Option<KvSinkConfig>,
}

/// The `[http]` table: the built-in viewer, status, metrics and health endpoints.
///
/// On a loopback address no authentication is required; on any other address
/// [`Config::from_toml`] refuses the file unless a bearer token or a password
/// hash is configured. When authentication is configured it applies to every
/// request, loopback included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address and port to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// `Authorization: Bearer <token>` accepted, if configured.
    pub bearer_token: Option<Secret>,
    /// Where the token came from (`bearer_token_env RTSNAP_HTTP_TOKEN`), for messages.
    pub token_source: String,
    /// HTTP Basic authentication against an argon2id hash, if configured.
    pub basic: Option<BasicAuth>,
    /// `Host` names served besides the loopback ones (`hosts = [...]`),
    /// lower case, each `name` (any port) or `name:port`. Without
    /// authentication only loopback names and these are served, so a web
    /// page cannot reach the viewer through DNS rebinding; with
    /// authentication the check applies only when this list is non-empty.
    pub hosts: Vec<String>,
    /// Open connections at most (`max_connections`); when full, the one
    /// idle the longest is closed for a new one, so the server keeps a
    /// bounded number of file descriptors and keeps answering.
    pub max_connections: usize,
    /// Longest time from the first byte of a request head to its end
    /// (`header_timeout`): a client that trickles its headers is cut off.
    pub header_timeout: Duration,
    /// Longest time a connection may sit with no request in progress and
    /// no bytes moving (`idle_timeout`), before its first request and
    /// between keep-alive requests.
    pub idle_timeout: Duration,
}

/// Default `[http] max_connections`: far below the usual 1024 file
/// descriptors, which the cameras' sockets and the sinks share.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 256;
/// Default `[http] header_timeout`.
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `[http] idle_timeout`: longer than the viewer page's refresh, so
/// an open page keeps its connection.
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl HttpConfig {
    /// A server on `listen` without authentication (meant for loopback),
    /// with default limits.
    pub fn open(listen: SocketAddr) -> Self {
        HttpConfig {
            listen,
            bearer_token: None,
            token_source: String::new(),
            basic: None,
            hosts: Vec::new(),
            max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HTTP_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
        }
    }

    /// True when requests must authenticate.
    pub fn requires_auth(&self) -> bool {
        self.bearer_token.is_some() || self.basic.is_some()
    }
}

/// Basic authentication: one user, one argon2id password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuth {
    /// The user name (`rtsnap` unless `username` is set).
    pub username: String,
    /// The PHC string, `$argon2id$v=19$m=...,t=...,p=...$salt$hash`.
    pub password_hash: String,
}

/// The user name for basic authentication when `[http] username` is not set.
pub const DEFAULT_HTTP_USER: &str = "rtsnap";

/// The whole configuration of a daemon.
#[derive(Clone, Debug)]
pub struct Config {
    /// Every camera, `[[camera]]` entries first, then those expanded from `[nvr]`.
    pub cameras: Vec<CameraConfig>,
    /// JPEG quality, 1-100.
    pub quality: u8,
    /// Deadline for each network step and each read.
    pub timeout: Duration,
    /// Decoders in the shared pool; defaults to the number of CPU cores, at most 8.
    pub decoders: usize,
    /// Largest access unit (one picture) kept from a camera, in bytes; a
    /// bigger one is dropped and counted. Bounds memory whatever a camera
    /// sends.
    pub max_access_unit: usize,
    /// Sinks.
    pub sinks: SinksConfig,
    /// The HTTP server (`[http]`); none when the table is absent.
    pub http: Option<HttpConfig>,
}

impl Config {
    /// A configuration with the given cameras and defaults for everything else.
    pub fn with_cameras(cameras: Vec<CameraConfig>) -> Config {
        Config {
            cameras,
            quality: DEFAULT_QUALITY,
            timeout: DEFAULT_TIMEOUT,
            decoders: default_decoders(),
            max_access_unit: DEFAULT_MAX_ACCESS_UNIT,
            sinks: SinksConfig::default(),
            http: None,
        }
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: None,
            message: format!("cannot read the configuration file: {e}"),
            help: "check the path given to --config".into(),
        })?;
        Config::from_toml(path, &text)
    }

    /// Validates configuration text; `file` is only used in messages and to
    /// resolve relative paths.
    pub fn from_toml(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let ctx = Ctx { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
        let base = file.parent().unwrap_or(Path::new("."));

        let interval = match &raw.interval {
            Some(s) => ctx.duration(s, "interval")?,
            None => DEFAULT_INTERVAL,
        };
        let quality = match &raw.quality {
            Some(q) if !(1..=100).contains(q.get_ref()) => {
                return Err(ctx.err(
                    q.span(),
                    format!("quality = {} is out of range", q.get_ref()),
                    "use a JPEG quality between 1 and 100 (80 is a good default)",
                ))
            }
            Some(q) => *q.get_ref() as u8,
            None => DEFAULT_QUALITY,
        };
        let timeout = match &raw.timeout {
            Some(s) => ctx.duration(s, "timeout")?,
            None => DEFAULT_TIMEOUT,
        };
        let decoders = match &raw.decoders {
            Some(d) if *d.get_ref() == 0 || *d.get_ref() > 64 => {
                return Err(ctx.err(
                    d.span(),
                    "decoders must be between 1 and 64",
                    "leave it out to use one decoder per CPU core",
                ))
            }
            Some(d) => *d.get_ref() as usize,
            None => default_decoders(),
        };

        let allow_basic_auth = raw.allow_basic_auth.unwrap_or(true);
        let max_access_unit = match &raw.max_access_unit {
            Some(v) => ctx.size(v, "max_access_unit", 64 * 1024..=256 * 1024 * 1024)?,
            None => DEFAULT_MAX_ACCESS_UNIT,
        };

        let mut cameras = Vec::new();
        let mut names: Vec<(String, Range<usize>)> = Vec::new();
        for cam in &raw.camera {
            let name = ctx.name(&cam.name)?;
            let url = ctx.url(&cam.url, cam.allow_url_credentials.unwrap_or(false))?;
            let credentials = ctx.credentials(
                cam.username.as_ref(),
                cam.password_env.as_ref(),
                cam.password_file.as_ref(),
                base,
                cam.name.span(),
                cam.allow_basic_auth.unwrap_or(allow_basic_auth),
            )?;
            let interval = match &cam.interval {
                Some(s) => ctx.duration(s, "interval")?,
                None => interval,
            };
            let transport = ctx.transport(cam.transport.as_ref())?;
            names.push((name.clone(), cam.name.span()));
            cameras.push(CameraConfig {
                name,
                url,
                credentials,
                interval,
                transport,
            });
        }
        if let Some(nvr) = &raw.nvr {
            let channels = *nvr.channels.get_ref();
            if channels == 0 || channels > 256 {
                return Err(ctx.err(
                    nvr.channels.span(),
                    "channels must be between 1 and 256",
                    "set it to the number of camera channels your NVR has",
                ));
            }
            if !nvr.url.get_ref().contains("{channel}") {
                return Err(ctx.err(
                    nvr.url.span(),
                    "the [nvr] url has no {channel} placeholder",
                    "write the URL of channel N with {channel} in place of N, \
                     e.g. rtsp://192.168.1.20:554/unicast/c{channel}/s0/live",
                ));
            }
            let name_template = nvr
                .name
                .as_ref()
                .map(|n| (n.get_ref().clone(), n.span()))
                .unwrap_or_else(|| ("ch{channel}".to_owned(), nvr.url.span()));
            if !name_template.0.contains("{channel}") {
                return Err(ctx.err(
                    name_template.1,
                    "the [nvr] name has no {channel} placeholder, so every channel would get the same name",
                    "use e.g. name = \"ch{channel}\"",
                ));
            }
            let credentials = ctx.credentials(
                nvr.username.as_ref(),
                nvr.password_env.as_ref(),
                nvr.password_file.as_ref(),
                base,
                nvr.url.span(),
                nvr.allow_basic_auth.unwrap_or(allow_basic_auth),
            )?;
            let nvr_interval = match &nvr.interval {
                Some(s) => ctx.duration(s, "interval")?,
                None => interval,
            };
            let transport = ctx.transport(nvr.transport.as_ref())?;
            let first = nvr.first_channel.unwrap_or(1);
            let Some(end) = first.checked_add(channels) else {
                return Err(ctx.err(
                    nvr.channels.span(),
                    format!("first_channel {first} plus {channels} channels is out of range"),
                    "channel numbers are small: first_channel is usually 1 (or 0)",
                ));
            };
            for ch in first..end {
                let n = ch.to_string();
                let url_text = nvr.url.get_ref().replace("{channel}", &n);
                let url = ctx.url(
                    &Spanned::new(nvr.url.span(), url_text),
                    nvr.allow_url_credentials.unwrap_or(false),
                )?;
                let name = ctx.name(&Spanned::new(
                    name_template.1.clone(),
                    name_template.0.replace("{channel}", &n),
                ))?;
                names.push((name.clone(), name_template.1.clone()));
                cameras.push(CameraConfig {
                    name,
                    url,
                    credentials: credentials.clone(),
                    interval: nvr_interval,
                    transport,
                });
            }
        }
        for (i, (name, span)) in names.iter().enumerate() {
            if let Some((_, first)) = names[..i].iter().find(|(n, _)| n == name) {
                return Err(ctx.err(
                    span.clone(),
                    format!(
                        "duplicate camera name \"{name}\" (first used on line {})",
                        ctx.line_of(first.start)
                    ),
                    "camera names name files and keys, so each must be unique: rename one of them",
                ));
            }
        }
        if cameras.is_empty() {
            return Err(ConfigError {
                file: file.to_owned(),
                line: None,
                message: "no cameras are configured".into(),
                help: "add a [[camera]] table with name and url, or an [nvr] table \
                       (see examples/rtsnap.toml)"
                    .into(),
            });
        }

        let mut sinks = SinksConfig::default();
        if let Some(sink) = &raw.sink {
            if let Some(dir) = &sink.dir {
                let path = PathBuf::from(dir.path.get_ref());
                let path = if path.is_relative() {
                    base.join(path)
                } else {
                    path
                };
                let history = match &dir.history {
                    Some(h) if *h.get_ref() > 100_000 => {
                        return Err(ctx.err(
                            h.span(),
                            "history is too large",
                            "keep at most 100000 stills per camera",
                        ))
                    }
                    Some(h) => *h.get_ref() as usize,
                    None => 0,
                };
                sinks.dir = Some(DirSinkConfig { path, history });
            }
            if let Some(kv) = &sink.cloudflare_kv {
                sinks.cloudflare_kv = Some(ctx.kv_sink(kv, base)?);
            }
        }

        let http = raw.http.as_ref().map(|h| ctx.http(h, base)).transpose()?;

        Ok(Config {
            cameras,
            quality,
            timeout,
            decoders,
            max_access_unit,
            sinks,
            http,
        })
    }
}

/// The default `max_access_unit`: a 4K IDR of a busy scene is ~2 MB, so
/// this never drops a real picture and bounds what a broken one costs.
pub const DEFAULT_MAX_ACCESS_UNIT: usize = 8 * 1024 * 1024;

/// Parses `8MiB`, `512KiB`, `2MB`, `1048576`.
pub fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1024,
        "m" | "mib" | "mb" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The number of decoders used when the file does not say: one per core,
/// since decoding is CPU-bound and a decoder is ~26 MB at 1080p.
pub fn default_decoders() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}

/// A configuration that cannot be used, with where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message)?,
            None => write!(f, "{}: {}", self.file.display(), self.message)?,
        }
        write!(f, "\n  help: {}", self.help)
    }
}

impl std::error::Error for ConfigError {}

/// Parses durations such as `5s`, `1m 30s`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("a zero duration is not allowed".into());
    }
    Ok(d)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interval: Option<Spanned<String>>,
    quality: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
    decoders: Option<Spanned<i64>>,
    max_access_unit: Option<Spanned<String>>,
    allow_basic_auth: Option<bool>,
    #[serde(default)]
    camera: Vec<RawCamera>,
    nvr: Option<RawNvr>,
    sink: Option<RawSinks>,
    http: Option<RawHttp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Spanned<String>,
    bearer_token_env: Option<Spanned<String>>,
    bearer_token_file: Option<Spanned<String>>,
    password_hash: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    hosts: Option<Vec<Spanned<String>>>,
    max_connections: Option<Spanned<i64>>,
    header_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCamera {
    name: Spanned<String>,
    url: Spanned<String>,
    username: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    transport: Option<Spanned<String>>,
    allow_basic_auth: Option<bool>,
    allow_url_credentials: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNvr {
    url: Spanned<String>,
    channels: Spanned<u32>,
    first_channel: Option<u32>,
    name: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    transport: Option<Spanned<String>>,
    allow_basic_auth: Option<bool>,
    allow_url_credentials: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSinks {
    dir: Option<RawDirSink>,
    cloudflare_kv: Option<RawKvSink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKvSink {
    account_id: Spanned<String>,
    namespace_id: Spanned<String>,
    api_token_env: Option<Spanned<String>>,
    api_token_file: Option<Spanned<String>>,
    api_base: Option<Spanned<String>>,
    history_ttl: Option<Spanned<String>>,
    max_quiet: Option<Spanned<String>>,
    upload_interval: Option<Spanned<String>>,
    change_threshold: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirSink {
    path: Spanned<String>,
    history: Option<Spanned<u32>>,
}

/// The file being validated, for turning byte spans into lines.
struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn transport(&self, v: Option<&Spanned<String>>) -> Result<RtspTransport, ConfigError> {
        let Some(v) = v else {
            return Ok(RtspTransport::default());
        };
        v.get_ref().parse().map_err(|e: String| {
            self.err(
                v.span(),
                e,
                "use transport = \"tcp\" (the default), \"udp\" for cameras that only serve UDP, \
                 or \"auto\" (TCP, UDP when the camera refuses TCP)",
            )
        })
    }

    /// A byte size such as `8MiB`, `512KiB` or `1048576`, within `range`.
    fn size(
        &self,
        v: &Spanned<String>,
        key: &str,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, ConfigError> {
        let help = "write a size such as \"8MiB\", \"512KiB\" or a number of bytes";
        let bytes = parse_size(v.get_ref()).ok_or_else(|| {
            self.err(
                v.span(),
                format!("{key} = \"{}\" is not a size", v.get_ref()),
                help,
            )
        })?;
        if !range.contains(&bytes) {
            return Err(self.err(
                v.span(),
                format!("{key} = \"{}\" is out of range", v.get_ref()),
                "use between 64KiB and 256MiB (the default, 8MiB, holds any 4K keyframe)",
            ));
        }
        Ok(bytes)
    }

    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text[..offset].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn err(&self, span: Range<usize>, message: impl Into<String>, help: &str) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: Some(self.line_of(span.start)),
            message: message.into(),
            help: help.into(),
        }
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim().to_owned();
        let help = if message.starts_with("unknown field") {
            "remove or correct the key; examples/rtsnap.toml lists every valid key"
        } else if message.starts_with("missing field") {
            "add the missing key; examples/rtsnap.toml shows every table with its keys"
        } else if message.contains("invalid type") {
            "check the value's type: durations and names are quoted strings, counts are bare numbers"
        } else {
            "fix the TOML syntax at that line"
        };
        ConfigError {
            file: self.file.to_owned(),
            line: e.span().map(|s| self.line_of(s.start)),
            message,
            help: help.into(),
        }
    }

    fn duration(&self, s: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        parse_duration(s.get_ref()).map_err(|e| {
            self.err(
                s.span(),
                format!("{key} = \"{}\" is not a valid duration: {e}", s.get_ref()),
                "write a duration with a unit, such as \"5s\", \"500ms\" or \"1m 30s\"",
            )
        })
    }

    fn kv_sink(&self, kv: &RawKvSink, base: &Path) -> Result<KvSinkConfig, ConfigError> {
        let id = |s: &Spanned<String>, what: &str| {
            let v = s.get_ref();
            if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_alphanumeric()) {
                Err(self.err(
                    s.span(),
                    format!("{what} \"{v}\" does not look like a Cloudflare id"),
                    "copy it from the Cloudflare dashboard (a 32-character hex string)",
                ))
            } else {
                Ok(v.clone())
            }
        };
        let secret = self.secret(
            kv.api_token_env.as_ref(),
            kv.api_token_file.as_ref(),
            base,
            "api_token",
        )?;
        let Some((api_token, token_source)) = secret else {
            return Err(self.err(
                kv.account_id.span(),
                "[sink.cloudflare_kv] has no API token",
                "set api_token_env = \"CF_API_TOKEN\" (or api_token_file) to a token with \
                 Workers KV Storage: Edit",
            ));
        };
        let api_base = match &kv.api_base {
            Some(u) => {
                let url = Url::parse(u.get_ref()).map_err(|e| {
                    self.err(
                        u.span(),
                        format!("api_base is not a URL: {e}"),
                        "leave it out to use Cloudflare's API",
                    )
                })?;
                if !matches!(url.scheme(), "https" | "http") {
                    return Err(self.err(
                        u.span(),
                        "api_base must be an http(s) URL",
                        "leave it out to use Cloudflare's API",
                    ));
                }
                url
            }
            None => Url::parse("https://api.cloudflare.com/client/v4").expect("valid URL"),
        };
        let history_ttl = match &kv.history_ttl {
            Some(t) => {
                let d = self.duration(t, "history_ttl")?;
                if d < Duration::from_secs(60) {
                    return Err(self.err(
                        t.span(),
                        "history_ttl is shorter than 60 s",
                        "Workers KV refuses expirations under 60 s; use e.g. \"1d\"",
                    ));
                }
                Some(d)
            }
            None => None,
        };
        let change_threshold = match &kv.change_threshold {
            Some(t) if !(0.0..=255.0).contains(t.get_ref()) => {
                return Err(self.err(
                    t.span(),
                    "change_threshold must be between 0 and 255",
                    "2.0 skips noise but not a parcel on the porch; 0 uploads every still",
                ))
            }
            Some(t) => *t.get_ref(),
            None => 2.0,
        };
        Ok(KvSinkConfig {
            account_id: id(&kv.account_id, "account_id")?,
            namespace_id: id(&kv.namespace_id, "namespace_id")?,
            api_token,
            token_source,
            api_base,
            history_ttl,
            max_quiet: match &kv.max_quiet {
                Some(d) => self.duration(d, "max_quiet")?,
                None => Duration::from_secs(60),
            },
            upload_interval: kv
                .upload_interval
                .as_ref()
                .map(|d| self.duration(d, "upload_interval"))
                .transpose()?,
            change_threshold,
        })
    }

    fn http(&self, h: &RawHttp, base: &Path) -> Result<HttpConfig, ConfigError> {
        let listen: SocketAddr = h.listen.get_ref().trim().parse().map_err(|_| {
            self.err(
                h.listen.span(),
                format!(
                    "listen = \"{}\" is not an address and port",
                    h.listen.get_ref()
                ),
                "write an IP address and a port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
            )
        })?;
        const TOKEN_HELP: &str = "make a long random token (e.g. `openssl rand -hex 32`) and keep \
                                  it there; Prometheus sends it with `authorization: {credentials: ...}`";
        let (bearer_token, token_source) = match (&h.bearer_token_env, &h.bearer_token_file) {
            (Some(_), Some(f)) => {
                return Err(self.err(
                    f.span(),
                    "both bearer_token_env and bearer_token_file are set",
                    "keep one of them",
                ))
            }
            (Some(var), None) => match std::env::var(var.get_ref()) {
                Ok(t) => (
                    Some((Secret::new(t.trim()), var.span())),
                    format!("bearer_token_env {}", var.get_ref()),
                ),
                Err(_) => {
                    return Err(self.err(
                        var.span(),
                        format!("environment variable {} is not set", var.get_ref()),
                        "export the token there before starting rtsnap (for systemd: put \
                         it in /etc/rtsnap/env, which the unit reads as EnvironmentFile=)",
                    ))
                }
            },
            (None, Some(f)) => {
                let path = base.join(f.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(t) => (
                        Some((Secret::new(t.trim()), f.span())),
                        format!("bearer_token_file {}", f.get_ref()),
                    ),
                    Err(e) => {
                        return Err(self.err(
                            f.span(),
                            format!("cannot read bearer_token_file {}: {e}", path.display()),
                            "check the path and that the rtsnap user may read it",
                        ))
                    }
                }
            }
            (None, None) => (None, String::new()),
        };
        if let Some((token, span)) = &bearer_token {
            if token.expose().len() < 16 || token.expose().chars().any(|c| c.is_whitespace()) {
                return Err(self.err(
                    span.clone(),
                    format!(
                        "the bearer token from {token_source} is too short (under 16 characters) \
                         or contains spaces"
                    ),
                    TOKEN_HELP,
                ));
            }
        }
        let basic = match (&h.password_hash, &h.username) {
            (Some(hash), user) => {
                let phc = hash.get_ref().trim();
                let ok = argon2::PasswordHash::new(phc)
                    .is_ok_and(|p| p.algorithm.as_str() == "argon2id" && p.hash.is_some());
                if !ok {
                    return Err(self.err(
                        hash.span(),
                        "password_hash is not an argon2id PHC string",
                        "make one with `rtsnap hash-password` (it reads the password from stdin) \
                         and paste the whole $argon2id$... line in single quotes",
                    ));
                }
                let username = match user {
                    Some(u) if u.get_ref().is_empty() || u.get_ref().contains(':') => {
                        return Err(self.err(
                            u.span(),
                            "username must be non-empty and must not contain ':'",
                            "leave it out to use the user name \"rtsnap\"",
                        ))
                    }
                    Some(u) => u.get_ref().clone(),
                    None => DEFAULT_HTTP_USER.to_owned(),
                };
                Some(BasicAuth {
                    username,
                    password_hash: phc.to_owned(),
                })
            }
            (None, Some(u)) => {
                return Err(self.err(
                    u.span(),
                    "username is set but password_hash is not",
                    "add password_hash = '$argon2id$...' (make it with `rtsnap hash-password`)",
                ))
            }
            (None, None) => None,
        };
        let mut hosts = Vec::new();
        for host in h.hosts.iter().flatten() {
            hosts.push(
                crate::http::host::normalize_config_host(host.get_ref()).ok_or_else(|| {
                    self.err(
                        host.span(),
                        format!("hosts entry \"{}\" is not a host name", host.get_ref()),
                        "write the name the browser shows, without scheme or path, e.g. \
                         \"rtsnap.lan\", \"cams.example.org:8443\" or \"192.168.1.20\"",
                    )
                })?,
            );
        }
        let max_connections = match &h.max_connections {
            Some(n) if !(1..=65_536).contains(n.get_ref()) => {
                return Err(self.err(
                    n.span(),
                    format!("max_connections = {} is out of range", n.get_ref()),
                    "use 1 to 65536; keep it well below the process's file limit \
                     (LimitNOFILE=, 1024 by default), e.g. the default 256",
                ))
            }
            Some(n) => *n.get_ref() as usize,
            None => DEFAULT_HTTP_MAX_CONNECTIONS,
        };
        let timeout = |v: &Option<Spanned<String>>, key: &str, default: Duration| match v {
            None => Ok(default),
            Some(s) => {
                let d = self.duration(s, key)?;
                if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                    return Err(self.err(
                        s.span(),
                        format!("{key} = \"{}\" is out of range", s.get_ref()),
                        "use 100ms to 1h",
                    ));
                }
                Ok(d)
            }
        };
        let header_timeout = timeout(
            &h.header_timeout,
            "header_timeout",
            DEFAULT_HTTP_HEADER_TIMEOUT,
        )?;
        let idle_timeout = timeout(&h.idle_timeout, "idle_timeout", DEFAULT_HTTP_IDLE_TIMEOUT)?;
        let http = HttpConfig {
            listen,
            bearer_token: bearer_token.map(|(t, _)| t),
            token_source,
            basic,
            hosts,
            max_connections,
            header_timeout,
            idle_timeout,
        };
        if !listen.ip().is_loopback() && !http.requires_auth() {
            return Err(self.err(
                h.listen.span(),
                format!(
                    "listen = \"{listen}\" is reachable from other machines, but no authentication \
                     is configured"
                ),
                "listen on 127.0.0.1 (e.g. behind a reverse proxy), or set \
                 bearer_token_env = \"RTSNAP_HTTP_TOKEN\" (or bearer_token_file), or \
                 password_hash = '$argon2id$...' from `rtsnap hash-password` for browser logins",
            ));
        }
        Ok(http)
    }

    fn name(&self, s: &Spanned<String>) -> Result<String, ConfigError> {
        let name = s.get_ref();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !name.starts_with('.');
        if !ok {
            return Err(self.err(
                s.span(),
                format!("camera name \"{name}\" is not usable"),
                "names become file names and keys: use 1-64 characters of a-z, A-Z, 0-9, '-', '_' \
                 or '.', not starting with '.'",
            ));
        }
        Ok(name.clone())
    }

    /// A camera URL. Credentials in it are refused: `user:password@` always
    /// (username and password_file do the same, without the leak), a
    /// password in the query or a path segment unless `allow_url_credentials`.
    fn url(&self, s: &Spanned<String>, allow_url_credentials: bool) -> Result<Url, ConfigError> {
        let url = Url::parse(s.get_ref()).map_err(|e| {
            self.err(
                s.span(),
                format!("url is not a valid URL: {e}"),
                "write it like rtsp://192.168.1.20:554/path",
            )
        })?;
        if url.scheme() != "rtsp" {
            return Err(self.err(
                s.span(),
                format!("url scheme \"{}\" is not supported", url.scheme()),
                "rtsnap speaks plain RTSP over TCP: use an rtsp:// URL",
            ));
        }
        const USERINFO_HELP: &str = "remove them from the URL and set username plus \
            password_env or password_file, so the password never lands in logs";
        const URL_SECRET_HELP: &str = "remove it from the URL and set username plus \
            password_file (or password_env): rtsnap sends the password with digest \
            authentication when the camera offers it, and never shows it. If this camera accepts \
            credentials only in the URL, set allow_url_credentials = true for it: rtsnap then \
            masks them in every log, error and status line, but they still cross the network in \
            clear text";
        match crate::redact::url_secret(&url) {
            None => {}
            Some(UrlSecret::UserInfo) => {
                let message = "url contains credentials (user:password@)";
                return Err(self.err(s.span(), message, USERINFO_HELP));
            }
            Some(_) if allow_url_credentials => {}
            Some(found) => {
                let message = format!("url contains {found}");
                return Err(self.err(s.span(), message, URL_SECRET_HELP));
            }
        }
        if url.host_str().is_none() {
            return Err(self.err(
                s.span(),
                "url has no host",
                "write it like rtsp://192.168.1.20:554/path",
            ));
        }
        Ok(url)
    }

    /// Reads a secret named by `<what>_env` or `<what>_file` (one of them,
    /// or neither); returns it with where it came from, e.g.
    /// `password_env NVR_PASSWORD`, for messages that must not show it.
    fn secret(
        &self,
        env: Option<&Spanned<String>>,
        file: Option<&Spanned<String>>,
        base: &Path,
        what: &str,
    ) -> Result<Option<(Secret, String)>, ConfigError> {
        match (env, file) {
            (Some(_), Some(f)) => Err(self.err(
                f.span(),
                format!("both {what}_env and {what}_file are set"),
                "keep one of them",
            )),
            (Some(var), None) => match std::env::var(var.get_ref()) {
                Ok(v) if !v.trim().is_empty() => Ok(Some((
                    Secret::new(v.trim_end_matches(['\r', '\n'])),
                    format!("{what}_env {}", var.get_ref()),
                ))),
                _ => Err(self.err(
                    var.span(),
                    format!("environment variable {} is not set", var.get_ref()),
                    &format!(
                        "export it before starting rtsnap (for systemd: an EnvironmentFile=), \
                         or use {what}_file"
                    ),
                )),
            },
            (None, Some(f)) => {
                let path = base.join(f.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(v) => Ok(Some((
                        Secret::new(v.trim_end_matches(['\r', '\n'])),
                        format!("{what}_file {}", f.get_ref()),
                    ))),
                    Err(e) => Err(self.err(
                        f.span(),
                        format!("cannot read {what}_file {}: {e}", path.display()),
                        "check the path and that the rtsnap user may read it",
                    )),
                }
            }
            (None, None) => Ok(None),
        }
    }

    fn credentials(
        &self,
        username: Option<&Spanned<String>>,
        password_env: Option<&Spanned<String>>,
        password_file: Option<&Spanned<String>>,
        base: &Path,
        at: Range<usize>,
        allow_basic_auth: bool,
    ) -> Result<Option<Credentials>, ConfigError> {
        let (password, source) = self
            .secret(password_env, password_file, base, "password")?
            .map_or((None, String::new()), |(p, src)| (Some(p), src));
        match (username, password) {
            (Some(u), Some(password)) => Ok(Some(Credentials {
                username: u.get_ref().clone(),
                password,
                source,
                allow_basic_auth,
            })),
            (Some(u), None) => Ok(Some(Credentials {
                username: u.get_ref().clone(),
                password: Secret::new(""),
                source: "no password configured".into(),
                allow_basic_auth,
            })),
            (None, Some(_)) => Err(self.err(
                at,
                "a password is configured without a username",
                "add username = \"...\"",
            )),
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("rtsnap.toml"), text)
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("hunter2"));
        let c = Credentials::new("admin", s, "env X");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn http_hosts_and_connection_limits() {
        let cam =
            "[[camera]]\nname = \"a\"\nurl = \"rtsp://h/\"\n[http]\nlisten = \"127.0.0.1:8080\"\n";
        let h = parse(cam).unwrap().http.unwrap();
        assert!(h.hosts.is_empty());
        assert_eq!(h.max_connections, DEFAULT_HTTP_MAX_CONNECTIONS);
        assert_eq!(h.header_timeout, DEFAULT_HTTP_HEADER_TIMEOUT);
        assert_eq!(h.idle_timeout, DEFAULT_HTTP_IDLE_TIMEOUT);
        let h = parse(&format!(
            "{cam}hosts = [\"Cams.LAN\", \"rtsnap.example.org:8443\"]\nmax_connections = 64\n\
             header_timeout = \"2s\"\nidle_timeout = \"500ms\"\n"
        ))
        .unwrap()
        .http
        .unwrap();
        assert_eq!(h.hosts, ["cams.lan", "rtsnap.example.org:8443"]);
        assert_eq!(h.max_connections, 64);
        assert_eq!(h.header_timeout, Duration::from_secs(2));
        assert_eq!(h.idle_timeout, Duration::from_millis(500));
        for (extra, words) in [
            ("hosts = [\"http://cams.lan/\"]", "not a host name"),
            ("max_connections = 0", "out of range"),
            ("header_timeout = \"10\"", "not a valid duration"),
            ("idle_timeout = \"2h\"", "out of range"),
        ] {
            let e = parse(&format!("{cam}{extra}\n")).unwrap_err();
            assert_eq!(e.line, Some(6), "{e}");
            assert!(e.message.contains(words), "{extra}: {e}");
        }
    }

    #[test]
    fn http_needs_auth_off_loopback() {
        let cam = "[[camera]]\nname = \"a\"\nurl = \"rtsp://h/\"\n";
        let c = parse(&format!("{cam}[http]\nlisten = \"127.0.0.1:8080\"\n")).unwrap();
        let h = c.http.unwrap();
        assert_eq!(h.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(!h.requires_auth());
        assert!(parse(cam).unwrap().http.is_none());

        let e = parse(&format!("{cam}[http]\nlisten = \"0.0.0.0:8080\"\n")).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("no authentication"), "{e}");
        assert!(e.help.contains("bearer_token_env"), "{e}");

        let e = parse(&format!("{cam}[http]\nlisten = \"localhost\"\n")).unwrap_err();
        assert!(e.message.contains("not an address"), "{e}");

        let e = parse(&format!(
            "{cam}[http]\nlisten = \"0.0.0.0:8080\"\npassword_hash = \"hunter2\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("argon2id"), "{e}");
    }

    #[test]
    fn nvr_template_expands() {
        let c = parse(
            r#"
interval = "4s"
[nvr]
url = "rtsp://10.0.0.2:554/unicast/c{channel}/s0/live"
channels = 3
"#,
        )
        .unwrap();
        let names: Vec<_> = c.cameras.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ch1", "ch2", "ch3"]);
        assert_eq!(c.cameras[2].url.path(), "/unicast/c3/s0/live");
        assert_eq!(c.cameras[0].interval, Duration::from_secs(4));
        assert_eq!(c.quality, 80);
    }

    /// Found while writing the config fuzz target
    /// (fuzz/artifacts/config/crash-nvr-first-channel-overflow.toml): this
    /// overflowed (a panic with overflow checks, silently no cameras without).
    #[test]
    fn nvr_channel_range_overflow_is_an_error() {
        let e = parse(
            "[nvr]\nurl = \"rtsp://h/{channel}\"\nchannels = 2\nfirst_channel = 4294967295\n",
        )
        .unwrap_err();
        assert!(e.message.contains("out of range"), "{e}");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("quality = 80\n[[camera]]\nname = \"a\"\nurl = \"rtsp://h/\"\ncolour = 1\n")
            .unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("unknown field"), "{e}");

        let e = parse("[[camera]]\nname = \"a\"\nurl = \"rtsp://h/\"\ninterval = \"5 parsecs\"\n")
            .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");

        let e = parse(
            "[[camera]]\nname = \"a\"\nurl = \"rtsp://h/1\"\n[[camera]]\nname = \"a\"\nurl = \"rtsp://h/2\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("duplicate camera name"), "{e}");

        let e = parse("[[camera]]\nname = \"a\"\nurl = \"rtsp://admin:pw@h/1\"\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("credentials"), "{e}");
        assert!(!e.to_string().contains("pw@"), "{e}");
    }
}
