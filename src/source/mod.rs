//! The source stage: one task per camera owns its RTSP session, forever.
//!
//! [`run_camera`] connects, reads every frame the camera sends (reading must
//! never pause: the camera's TCP buffer and retina's keepalives depend on
//! it), keeps only the newest complete IDR access unit, and hands the first
//! keyframe that arrives once a still is due to the pipeline on a blocking
//! thread. While the still is being made the task goes on reading. When
//! anything fails it backs off and reconnects; it only returns on shutdown.
//!
//! The task alone writes its camera's [`CameraStatus`], so status is always
//! consistent without locks.

pub mod auth_probe;
pub mod backoff;
mod bits;
pub mod open_gop;
pub mod rtp_h264;
pub mod session;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::FutureExt;
use retina::client::SessionGroup;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::CameraConfig;
use crate::decode::DecoderPool;
use crate::http::metrics::DurationHistogram;
use crate::keyframe::Keyframe;
use crate::pipeline::{make_still, EncodedStill, StillError, VideoCodec};
use crate::redact::RedactedUrl;
use crate::{Snapshot, Store};
pub use auth_probe::CredentialWarning;
pub use backoff::RetryClass;
use backoff::{LogGate, Phase, RetryPolicy, Say};
use rtp_h264::{KeyKind, Unit};
pub use session::SourceError;

/// What a camera is doing right now.
#[derive(Clone, Debug, PartialEq)]
pub enum CameraState {
    /// Opening the RTSP session.
    Connecting,
    /// Playing; stills are being made.
    Streaming,
    /// Waiting before the next connection attempt.
    BackingOff {
        /// When the next attempt starts.
        until: SystemTime,
        /// Why the last attempt ended.
        error: String,
        /// The kind of failure, which decided the wait.
        class: RetryClass,
    },
    /// The stream cannot be decoded by rtsnap (e.g. H.265); re-checked slowly.
    Unsupported {
        /// Why, and what to change.
        why: String,
    },
    /// The daemon is shutting down.
    Stopped,
}

/// A camera's state and counters, as reported to library users.
#[derive(Clone, Debug)]
pub struct CameraStatus {
    /// The camera's name.
    pub name: Arc<str>,
    /// Current state.
    pub state: CameraState,
    /// Stills produced.
    pub stills: u64,
    /// Complete keyframes received.
    pub keyframes_seen: u64,
    /// Keyframes decoded into stills.
    pub keyframes_decoded: u64,
    /// Keyframes thrown away: lost packets, or a decode/encode error.
    pub keyframes_skipped: u64,
    /// Access units dropped because they exceeded `max_access_unit`.
    pub oversized: u64,
    /// Sessions opened after the first.
    pub reconnects: u64,
    /// The last error, kept after recovery for diagnosis.
    pub last_error: Option<String>,
    /// Resolution of the stream.
    pub dims: Option<(u32, u32)>,
    /// Measured time between keyframes.
    pub keyframe_interval: Option<Duration>,
    /// Frames per second received, measured over the last few seconds.
    pub fps: Option<f64>,
    /// Bits per second received, measured over the last few seconds.
    pub bitrate: Option<f64>,
    /// Bytes of video received in this process's lifetime.
    pub bytes_received: u64,
    /// Capture time of the newest still.
    pub last_still_at: Option<SystemTime>,
    /// Time spent decoding keyframes into stills.
    pub decode_seconds: DurationHistogram,
    /// Time spent encoding stills to JPEG.
    pub encode_seconds: DurationHistogram,
    /// How this camera's credentials travel, when that is a risk (Basic
    /// authentication, credentials in the URL).
    pub warnings: Vec<CredentialWarning>,
}

impl CameraStatus {
    fn new(name: Arc<str>) -> Self {
        CameraStatus {
            name,
            state: CameraState::Connecting,
            stills: 0,
            keyframes_seen: 0,
            keyframes_decoded: 0,
            keyframes_skipped: 0,
            oversized: 0,
            reconnects: 0,
            last_error: None,
            dims: None,
            keyframe_interval: None,
            fps: None,
            bitrate: None,
            bytes_received: 0,
            last_still_at: None,
            decode_seconds: DurationHistogram::default(),
            encode_seconds: DurationHistogram::default(),
            warnings: Vec::new(),
        }
    }
}

/// Everything one camera task needs.
pub struct CameraTask {
    /// The camera.
    pub config: CameraConfig,
    /// Deadline for each network step and read.
    pub timeout: Duration,
    /// JPEG quality.
    pub quality: u8,
    /// Largest access unit kept, in bytes.
    pub max_access_unit: usize,
    /// Shared decoders.
    pub pool: Arc<DecoderPool>,
    /// Where stills are published.
    pub store: Store,
    /// Becomes true on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// The camera's position in the configuration: it sets the camera's
    /// phase in the retry grid, so the channels of an NVR that went away
    /// redial one after another, not all in the same instant.
    pub index: usize,
}

/// Starts a camera task; returns its status feed and handle.
pub fn spawn_camera(task: CameraTask) -> (watch::Receiver<CameraStatus>, JoinHandle<()>) {
    let name: Arc<str> = task.config.name.as_str().into();
    let (tx, rx) = watch::channel(CameraStatus::new(name.clone()));
    let span = tracing::info_span!("camera", name = %name);
    let handle = tokio::spawn(tracing::Instrument::instrument(run_camera(task, tx), span));
    (rx, handle)
}

/// The wall clock as time since the Unix epoch, where the retry grid is
/// anchored (see [`backoff`]).
fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// A camera's whole life: connect, stream, back off, repeat until shutdown.
async fn run_camera(mut task: CameraTask, status: watch::Sender<CameraStatus>) {
    let name: Arc<str> = task.config.name.as_str().into();
    let group = Arc::new(SessionGroup::default().named(task.config.name.clone()));
    let mut policy = RetryPolicy::new(Phase::of_index(task.index));
    let mut log_gate = LogGate::default();
    let mut stills: u64 = 0;
    let mut sessions: u64 = 0;
    let mut shutdown = task.shutdown.clone();
    let mut told_basic = false;
    let basic_auth = AtomicBool::new(false);
    if crate::redact::url_secret(&task.config.url).is_some() {
        let w = CredentialWarning::UrlCredentials;
        warn!("{w}");
        status.send_modify(|s| s.warnings.push(w));
    }
    'outer: loop {
        // Never hold two sessions to one channel: wait (bounded) until the
        // previous one is known torn down or expired.
        let stale = group.stale_sessions();
        if stale.num_sessions > 0 {
            let _ = tokio::time::timeout(task.timeout, group.await_stale_sessions(&stale)).await;
        }
        status.send_modify(|s| s.state = CameraState::Connecting);
        debug!(url = %RedactedUrl(&task.config.url), "connecting");
        let dial = session::Dial {
            url: &task.config.url,
            creds: task.config.credentials.as_ref(),
            group: group.clone(),
            timeout: task.timeout,
            transport: task.config.transport,
            max_access_unit: task.max_access_unit,
            basic_auth: &basic_auth,
        };
        let opened = tokio::select! {
            r = session::open(&dial) => r,
            _ = crate::stopping(&mut shutdown) => break 'outer,
        };
        // Said once per camera; the status shows it while it holds.
        let basic = basic_auth.swap(false, Ordering::Relaxed);
        if basic && !told_basic {
            told_basic = true;
            warn!("{}", CredentialWarning::BasicAuth);
        }
        if basic || opened.is_ok() {
            status.send_modify(|s| {
                s.warnings.retain(|w| *w != CredentialWarning::BasicAuth);
                if basic {
                    s.warnings.push(CredentialWarning::BasicAuth);
                }
            });
        }
        let result = match opened {
            Ok(opened) => {
                if sessions > 0 {
                    status.send_modify(|s| s.reconnects += 1);
                }
                sessions += 1;
                policy.opened();
                let failed = log_gate.opened();
                status.send_modify(|s| {
                    s.state = CameraState::Streaming;
                    if opened.dims.is_some() {
                        s.dims = opened.dims;
                    }
                });
                info!(
                    codec = opened.codec.as_deref().unwrap_or("?"),
                    transport = opened.transport.as_str(),
                    failed_attempts = failed.unwrap_or(0),
                    "streaming from {}",
                    RedactedUrl(&task.config.url)
                );
                stream(&mut task, &name, opened, &status, &mut stills).await
            }
            Err(e) => Err(e),
        };
        let error = match result {
            Ok(()) => break 'outer,
            Err(e) => e,
        };
        let class = error.retry_class();
        let wait = policy.next(class, wall_clock());
        let message = error.to_string();
        let next = class.next_step(wait);
        let retry = class.as_str();
        match log_gate.failure(&message, std::time::Instant::now()) {
            Say::First => warn!(retry, "{message}; {next}"),
            Say::Again { times } => {
                warn!(
                    retry,
                    "{message} (again, {times} times since last logged); {next}"
                )
            }
            Say::Quiet => debug!(retry, "{message}; {next}"),
        }
        status.send_modify(|s| {
            s.state = match &error {
                SourceError::Unsupported(why) => CameraState::Unsupported { why: why.clone() },
                _ => CameraState::BackingOff {
                    until: SystemTime::now() + wait,
                    error: message.clone(),
                    class,
                },
            };
            s.last_error = Some(message);
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = crate::stopping(&mut shutdown) => break 'outer,
        }
    }
    status.send_modify(|s| s.state = CameraState::Stopped);
    // The session was dropped above, which started a TEARDOWN in the
    // background; give it a moment so the server frees the channel now
    // rather than at its session timeout.
    let _ = tokio::time::timeout(Duration::from_secs(2), group.await_teardown()).await;
    debug!("stopped");
}

/// A still being made on a blocking thread.
struct InFlight {
    handle: JoinHandle<Result<EncodedStill, StillError>>,
    captured_at: SystemTime,
}

/// Frame and byte counts since the last status update, so the hot path
/// touches only local integers and status is published about once a second.
struct Rates {
    since: Instant,
    frames: u64,
    bytes: u64,
}

impl Rates {
    const PERIOD: Duration = Duration::from_secs(2);

    fn new() -> Self {
        Rates {
            since: Instant::now(),
            frames: 0,
            bytes: 0,
        }
    }

    fn count(&mut self, bytes: usize, status: &watch::Sender<CameraStatus>) {
        self.frames += 1;
        self.bytes += bytes as u64;
        let elapsed = self.since.elapsed();
        if elapsed >= Self::PERIOD {
            let secs = elapsed.as_secs_f64();
            let (frames, bytes) = (self.frames, self.bytes);
            status.send_modify(|s| {
                s.fps = Some(frames as f64 / secs);
                s.bitrate = Some(bytes as f64 * 8.0 / secs);
                s.bytes_received += bytes;
            });
            *self = Rates::new();
        }
    }
}

/// How long the reader lets frames collect in the socket before draining
/// them in one go. Waking once per RTP packet (~350/s for a 4 Mbit/s camera)
/// costs more CPU than the depacketizing itself on a small machine; waking
/// ten times a second costs almost nothing, and the kernel buffers 100 ms of
/// video (~50 KB) easily. It delays a keyframe by at most this much (but
/// not the first one of a session, so the first still is not delayed).
const READ_BATCH: Duration = Duration::from_millis(100);

/// The next read time on a grid of [`READ_BATCH`] ticks shared by every
/// camera task in the process. All cameras then drain their sockets at the
/// same instant, so the runtime's thread wakes once per tick for all of
/// them, not once per camera: with 8 cameras that is 10 wake-ups a second
/// instead of 80, and a context switch costs more than draining a socket.
fn next_read_tick(now: Instant) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    // Only a paused test clock of another runtime can be behind the epoch.
    let Some(since) = now.checked_duration_since(epoch) else {
        return now + READ_BATCH;
    };
    let ticks = since.as_nanos() / READ_BATCH.as_nanos() + 1;
    epoch + READ_BATCH * u32::try_from(ticks).unwrap_or(u32::MAX)
}

/// Waits until `not_before`, then returns the first access unit the stream
/// finishes (within `timeout`) and every one already buffered after it,
/// and why the stream ended if it did (after the units, which still count).
async fn read_batch(
    opened: &mut session::Opened,
    not_before: Instant,
    timeout: Duration,
) -> (Vec<Unit>, Option<ReadEnd>) {
    tokio::time::sleep_until(not_before).await;
    let mut units = Vec::new();
    let end = |next: Option<Result<Unit, retina::Error>>| match next {
        None => Some(ReadEnd::Ended),
        Some(Err(e)) => Some(ReadEnd::Error(e)),
        Some(Ok(_)) => None,
    };
    // Only finished video access units count as "the camera sends
    // something": RTCP reports alone, or a picture that never ends, are
    // silence (and the picture is capped by the depacketizer meanwhile).
    match tokio::time::timeout(timeout, opened.next()).await {
        Err(_) => return (units, Some(ReadEnd::Silent)),
        Ok(Some(Ok(unit))) => units.push(unit),
        Ok(other) => return (units, end(other)),
    }
    // Bounded: a batch never holds more than a few seconds of video.
    while units.len() < 256 {
        match opened.next().now_or_never() {
            None => break,
            Some(Some(Ok(unit))) => units.push(unit),
            Some(other) => return (units, end(other)),
        }
    }
    (units, None)
}

/// Why reading stopped.
enum ReadEnd {
    Silent,
    Ended,
    Error(retina::Error),
}

/// What one session has seen so far: the newest keyframe and the measured
/// keyframe interval. Fed every access unit; owned by the camera task.
///
/// Every time here is our own clock (arrival), never the camera's RTP
/// timestamps: a camera that claims keyframes 59 s apart cannot stretch the
/// watchdog.
struct Watch {
    codec: VideoCodec,
    latest: Option<Keyframe>,
    /// When `latest` was read off the socket.
    latest_at: Instant,
    kf_seq: u64,
    last_kf_at: Instant,
    kf_interval: Option<Duration>,
    rates: Rates,
    /// Inspect the SPS of the first keyframe and after every parameter change.
    check_sps: bool,
    /// Said once per session: keyframes that are intra but not IDR.
    told_intra: bool,
    /// Why the last non-IDR intra picture could not be relabelled as IDR.
    refused_intra: Option<open_gop::NotRewritable>,
}

impl Watch {
    /// The watchdog never waits longer than this for a keyframe, whatever
    /// interval the camera seems to use.
    const WATCHDOG_CEILING: Duration = Duration::from_secs(30);
    const WATCHDOG_FLOOR: Duration = Duration::from_secs(10);

    fn new(opened: &session::Opened) -> Self {
        Watch {
            codec: opened.video_codec,
            latest: None,
            latest_at: Instant::now(),
            kf_seq: 0,
            last_kf_at: Instant::now(),
            kf_interval: None,
            rates: Rates::new(),
            check_sps: opened.video_codec == VideoCodec::H264,
            told_intra: false,
            refused_intra: None,
        }
    }

    /// A camera that sends no usable keyframe for this long is redialed:
    /// twice the measured interval, within fixed bounds.
    fn watchdog(&self) -> Duration {
        self.kf_interval
            .map_or(Self::WATCHDOG_FLOOR, |i| i * 2)
            .clamp(Self::WATCHDOG_FLOOR, Self::WATCHDOG_CEILING)
    }

    fn on_unit(
        &mut self,
        unit: Unit,
        status: &watch::Sender<CameraStatus>,
    ) -> Result<(), SourceError> {
        let key = match unit {
            Unit::Other { bytes } => {
                self.rates.count(bytes, status);
                return Ok(());
            }
            Unit::Damaged { keyframe, bytes } => {
                self.rates.count(bytes, status);
                if keyframe {
                    // Never decode a keyframe with holes: it would smear.
                    debug!("keyframe skipped: packets lost or incomplete");
                    status.send_modify(|s| {
                        s.keyframes_seen += 1;
                        s.keyframes_skipped += 1;
                    });
                }
                return Ok(());
            }
            Unit::Oversized { bytes } => {
                self.rates.count(bytes, status);
                let limit = bytes;
                warn!(
                    "an access unit exceeded max_access_unit after {limit} bytes and was dropped; \
                     raise max_access_unit if this camera really sends pictures that large"
                );
                status.send_modify(|s| s.oversized += 1);
                return Ok(());
            }
            Unit::Key(k) => k,
        };
        self.rates.count(key.data.len(), status);
        let key = if key.kind == KeyKind::Intra {
            // A non-IDR intra picture (open GOP, recovery point): openh264
            // cannot start on one as sent, so it is relabelled as IDR.
            match key.startable() {
                Ok(k) => {
                    if !self.told_intra {
                        self.told_intra = true;
                        info!(
                            "the camera sends open-GOP intra pictures (not IDR); rtsnap relabels \
                             them as IDR keyframes to decode them"
                        );
                    }
                    k
                }
                Err(e) => {
                    if self.refused_intra.is_none() {
                        info!(
                            "the camera sends intra pictures that are not IDR and cannot be \
                             used ({e}); rtsnap makes stills from IDR keyframes only"
                        );
                    }
                    self.refused_intra = Some(e);
                    return Ok(());
                }
            }
        } else {
            key
        };
        if key.new_parameters {
            self.check_sps = self.codec == VideoCodec::H264;
        }
        let now = Instant::now();
        if self.kf_seq > 0 {
            self.kf_interval = Some(now - self.last_kf_at);
        }
        self.last_kf_at = now;
        let kf_interval = self.kf_interval;
        status.send_modify(|s| {
            s.keyframes_seen += 1;
            s.keyframe_interval = kf_interval;
        });
        if self.check_sps {
            // Streams openh264 can never decode (interlaced, High 10,
            // 4:2:2): say so once, as a state, instead of failing every
            // still.
            match crate::keyframe::inspect(&key.data) {
                Ok(info) => {
                    status.send_modify(|s| s.dims = Some((info.width, info.height)));
                }
                Err(
                    e @ (crate::keyframe::KeyframeError::Interlaced
                    | crate::keyframe::KeyframeError::UnsupportedProfile(_)),
                ) => return Err(SourceError::Unsupported(e.to_string())),
                Err(_) => {}
            }
            self.check_sps = false;
        }
        self.kf_seq += 1;
        self.latest_at = now;
        self.latest = Some(Keyframe {
            data: Bytes::from(key.data),
            received_at: SystemTime::now(),
            seq: self.kf_seq,
        });
        Ok(())
    }
}

/// The reason a session that never sent a usable keyframe is redialed.
fn no_keyframe_message(seen: &Watch, watchdog: Duration) -> String {
    if let Some(why) = &seen.refused_intra {
        format!(
            "no usable keyframe for {}s: the camera sends intra pictures that are not IDR and \
             cannot be used ({why}); set its GOP/keyframe mode so it sends IDR frames (e.g. turn \
             off \"smart codec\" or intra refresh); reconnecting",
            watchdog.as_secs()
        )
    } else {
        format!(
            "no keyframe for {}s although the connection is open; reconnecting",
            watchdog.as_secs()
        )
    }
}

/// Reads one playing session until it fails or shutdown. Returns `Ok` only
/// on shutdown, after finishing the still in flight.
async fn stream(
    task: &mut CameraTask,
    name: &Arc<str>,
    mut opened: session::Opened,
    status: &watch::Sender<CameraStatus>,
    stills: &mut u64,
) -> Result<(), SourceError> {
    let interval = task.config.interval;
    let codec = opened.video_codec;
    let mut shutdown = task.shutdown.clone();
    if let Some(e) = opened
        .sdp_sps
        .as_deref()
        .and_then(|sps| crate::keyframe::parse_sps(sps).ok())
        .and_then(|info| info.unsupported())
    {
        // The SDP already says openh264 cannot decode this stream.
        return Err(SourceError::Unsupported(e.to_string()));
    }
    let mut seen = Watch::new(&opened);
    let mut last_used: u64 = 0;
    let mut next_due = Instant::now();
    let mut next_read = Instant::now();
    let mut in_flight: Option<InFlight> = None;

    loop {
        let watchdog = seen.watchdog();
        tokio::select! {
            biased;
            _ = crate::stopping(&mut shutdown) => {
                if let Some(f) = in_flight.take() {
                    finish(task, name, f, status, stills).await;
                }
                return Ok(());
            }
            r = async { (&mut in_flight.as_mut().expect("guarded").handle).await }, if in_flight.is_some() => {
                let f = in_flight.take().expect("guarded");
                publish(task, name, r, f.captured_at, status, stills);
            }
            _ = tokio::time::sleep_until(seen.last_kf_at + watchdog) => {
                return Err(SourceError::Stalled(no_keyframe_message(&seen, watchdog)));
            }
            (units, end) = read_batch(&mut opened, next_read, task.timeout) => {
                for unit in units {
                    seen.on_unit(unit, status)?;
                }
                match end {
                    None => {}
                    Some(ReadEnd::Silent) => return Err(SourceError::Stalled(format!(
                        "the camera sent no complete picture for {}s; reconnecting", task.timeout.as_secs()
                    ))),
                    Some(ReadEnd::Ended) => return Err(SourceError::Other("the camera ended the stream".into())),
                    Some(ReadEnd::Error(e)) => return Err(SourceError::from_retina(&e, task.config.credentials.as_ref())),
                }
                // Until the first keyframe, read as frames come: the first
                // still should follow the first keyframe without delay.
                if seen.kf_seq > 0 {
                    next_read = next_read_tick(Instant::now());
                }
            }
        }
        // A still is made from the first keyframe that arrives once the
        // still is due, not from the newest one at hand then, which may be
        // almost a keyframe interval old: so a still's picture is never
        // older than one read batch plus decoding when it is published.
        // Keyframes that are not due are never decoded.
        let now = Instant::now();
        if in_flight.is_none() && seen.latest_at >= next_due {
            if let Some(kf) = seen.latest.as_ref().filter(|k| k.seq > last_used) {
                // The cadence starts at this camera's first still, so cameras
                // that connected together do not all decode at the same
                // moment; later stills keep to it without drifting.
                next_due = if last_used == 0 || next_due + interval <= now {
                    now + interval
                } else {
                    next_due + interval
                };
                last_used = kf.seq;
                let pool = task.pool.clone();
                let data = kf.data.clone();
                let quality = task.quality;
                in_flight = Some(InFlight {
                    handle: tokio::task::spawn_blocking(move || {
                        make_still(&pool, codec, data, quality)
                    }),
                    captured_at: kf.received_at,
                });
            }
        }
    }
}

async fn finish(
    task: &CameraTask,
    name: &Arc<str>,
    f: InFlight,
    status: &watch::Sender<CameraStatus>,
    stills: &mut u64,
) {
    let r = f.handle.await;
    publish(task, name, r, f.captured_at, status, stills);
}

fn publish(
    task: &CameraTask,
    name: &Arc<str>,
    r: Result<Result<EncodedStill, StillError>, tokio::task::JoinError>,
    captured_at: SystemTime,
    status: &watch::Sender<CameraStatus>,
    stills: &mut u64,
) {
    match r {
        Ok(Ok(still)) => {
            *stills += 1;
            debug!(
                width = still.width,
                height = still.height,
                bytes = still.jpeg.len(),
                decode_ms = still.decode_time.as_secs_f64() * 1e3,
                encode_ms = still.encode_time.as_secs_f64() * 1e3,
                "still"
            );
            if *stills == 1 {
                info!("first still: {}x{}", still.width, still.height);
            }
            let dims = (still.width, still.height);
            let (decode_time, encode_time) = (still.decode_time, still.encode_time);
            // Status first, so whoever sees the still also sees it counted.
            status.send_modify(|s| {
                s.stills = *stills;
                s.keyframes_decoded += 1;
                s.dims = Some(dims);
                s.last_still_at = Some(captured_at);
                s.decode_seconds.observe(decode_time);
                s.encode_seconds.observe(encode_time);
            });
            task.store.publish(Snapshot {
                camera: name.clone(),
                captured_at,
                width: still.width,
                height: still.height,
                jpeg: still.jpeg,
                seq: *stills,
                fingerprint: still.fingerprint,
                interval: task.config.interval,
            });
        }
        Ok(Err(e)) => {
            let message = format!("keyframe skipped, previous still kept: {e}");
            warn!("{message}");
            status.send_modify(|s| {
                s.keyframes_skipped += 1;
                s.last_error = Some(message);
            });
        }
        Err(e) => warn!("still task failed: {e}"),
    }
}
