//! Opening one RTSP session with retina, with a deadline on every step, and
//! turning whatever goes wrong into one sentence a user can act on.
//!
//! retina has no timeouts of its own on connect, DESCRIBE, SETUP or PLAY, so
//! each is wrapped in [`tokio::time::timeout`]. Transport is always TCP
//! interleaved (retina's UDP has no reorder buffer), frames come in
//! [`FrameFormat::SIMPLE`]: Annex B with SPS/PPS before every keyframe, which
//! openh264 takes as is.

use std::sync::Arc;
use std::time::Duration;

use retina::client::{
    Credentials as RtspCredentials, Demuxed, PlayOptions, Session, SessionGroup, SessionOptions,
    SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{FrameFormat, ParametersRef};
use url::Url;

use crate::config::Credentials;
use crate::pipeline::VideoCodec;

/// What went wrong with a camera's RTSP session, worded for its owner.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// No answer in time.
    #[error("no answer to {step} from {host} within {}s: check that the camera is on and reachable", .after.as_secs())]
    Timeout {
        /// The step that timed out (connect and DESCRIBE, SETUP, PLAY).
        step: &'static str,
        /// `host:port`.
        host: String,
        /// The deadline.
        after: Duration,
    },
    /// The server answered with an error status.
    #[error("{0}")]
    Status(String),
    /// The stream cannot be handled by rtsnap; retrying soon will not help.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The camera is connected but sends nothing.
    #[error("{0}")]
    Stalled(String),
    /// Any other RTSP, network or stream error.
    #[error("{0}")]
    Other(String),
}

impl SourceError {
    /// True when retrying quickly is pointless (the stream's codec, not the
    /// network, is the problem); the camera task then re-checks slowly.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, SourceError::Unsupported(_))
    }

    /// Maps a retina error to a message. retina's own text is thorough but
    /// multi-line (connection and message context); we keep its first line
    /// and add advice for the statuses cameras and NVRs commonly send.
    pub(crate) fn from_retina(e: &retina::Error, creds: Option<&Credentials>) -> SourceError {
        let first = e.to_string().lines().next().unwrap_or_default().to_owned();
        match e.status_code() {
            Some(401) => SourceError::Status(match creds {
                Some(c) => format!(
                    "RTSP 401 Unauthorized: check username \"{}\" and {}",
                    c.username, c.source
                ),
                None => "RTSP 401 Unauthorized: the camera wants a login; set username and \
                         password_env (or password_file)"
                    .into(),
            }),
            Some(403) => SourceError::Status(
                "RTSP 403 Forbidden: the user may not view this stream, or the NVR's limit of \
                 viewers is reached; close other viewers or raise the limit"
                    .into(),
            ),
            Some(404) => SourceError::Status(
                "RTSP 404 Not Found: the camera has no stream at this URL path; check the path \
                 (and the channel number)"
                    .into(),
            ),
            Some(453) => SourceError::Status(
                "RTSP 453 Not Enough Bandwidth: the camera or NVR refuses another session; close \
                 other viewers or use the substream"
                    .into(),
            ),
            Some(s) => SourceError::Status(format!("RTSP {s}: {first}")),
            None => SourceError::Other(first),
        }
    }
}

/// A playing session and what we know about its video stream.
pub struct Opened {
    /// The frame stream.
    pub demuxed: Demuxed,
    /// Index of the video stream that was set up.
    pub stream_index: usize,
    /// Its codec.
    pub video_codec: VideoCodec,
    /// Resolution from the SDP or first parameters, when known.
    pub dims: Option<(u32, u32)>,
    /// RFC 6381 codec string such as `avc1.640028`, when known.
    pub codec: Option<String>,
    /// Frame rate the stream declares, when it does.
    pub frame_rate: Option<f64>,
}

fn host_of(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("?"),
        url.port().unwrap_or(554)
    )
}

/// DESCRIBE, pick the H.264 video stream, SETUP over TCP, PLAY.
pub async fn open(
    url: &Url,
    creds: Option<&Credentials>,
    group: Arc<SessionGroup>,
    timeout: Duration,
) -> Result<Opened, SourceError> {
    let host = host_of(url);
    let to = |step| SourceError::Timeout {
        step,
        host: host.clone(),
        after: timeout,
    };
    let rtsp_creds = creds.map(|c| RtspCredentials {
        username: c.username.clone(),
        password: c.password.expose().to_owned(),
    });
    let options = SessionOptions::default()
        .creds(rtsp_creds)
        .session_group(group)
        .user_agent(format!("rtsnap/{}", env!("CARGO_PKG_VERSION")));
    let mut session = tokio::time::timeout(timeout, Session::describe(url.clone(), options))
        .await
        .map_err(|_| to("connect and DESCRIBE"))?
        .map_err(|e| SourceError::from_retina(&e, creds))?;

    let streams = session.streams();
    let video = |enc: &str| {
        streams
            .iter()
            .position(|s| s.media() == "video" && s.encoding_name().eq_ignore_ascii_case(enc))
    };
    // H.264 is decoded; MJPEG frames are stills already. Prefer H.264 when a
    // camera offers both.
    let chosen = video("h264")
        .map(|i| (i, VideoCodec::H264))
        .or_else(|| video("jpeg").map(|i| (i, VideoCodec::Mjpeg)));
    let Some((i, video_codec)) = chosen else {
        let found: Vec<String> = streams
            .iter()
            .filter(|s| s.media() == "video")
            .map(|s| s.encoding_name().to_uppercase())
            .collect();
        return Err(SourceError::Unsupported(if video("h265").is_some() {
            "H.265; rtsnap decodes H.264, set the channel to H.264 or use its substream".into()
        } else if found.is_empty() {
            "the stream has no video".into()
        } else {
            format!(
                "video codec {}; rtsnap handles H.264 and MJPEG, set the channel to H.264",
                found.join(", ")
            )
        }));
    };
    let frame_rate = streams[i].framerate().map(f64::from);
    tokio::time::timeout(
        timeout,
        session.setup(
            i,
            SetupOptions::default()
                .transport(Transport::Tcp(TcpTransportOptions::default()))
                .frame_format(FrameFormat::SIMPLE),
        ),
    )
    .await
    .map_err(|_| to("SETUP"))?
    .map_err(|e| SourceError::from_retina(&e, creds))?;
    let (dims, codec, params_rate) = match session.streams()[i].parameters() {
        Some(ParametersRef::Video(v)) => (
            Some(v.pixel_dimensions()),
            Some(v.rfc6381_codec().to_owned()),
            v.frame_rate().map(|(n, d)| d as f64 / n as f64),
        ),
        _ => (None, None, None),
    };
    let playing = tokio::time::timeout(timeout, session.play(PlayOptions::default()))
        .await
        .map_err(|_| to("PLAY"))?
        .map_err(|e| SourceError::from_retina(&e, creds))?;
    let demuxed = playing
        .demuxed()
        .map_err(|e| SourceError::from_retina(&e, creds))?;
    Ok(Opened {
        demuxed,
        stream_index: i,
        video_codec,
        dims,
        codec,
        frame_rate: frame_rate.or(params_rate),
    })
}

/// Turns an RFC 6381 H.264 codec string (`avc1.PPCCLL`) into a profile name.
pub fn h264_profile(codec: &str) -> Option<&'static str> {
    let hex = codec.strip_prefix("avc1.")?;
    let idc = u8::from_str_radix(hex.get(0..2)?, 16).ok()?;
    let constraints = u8::from_str_radix(hex.get(2..4)?, 16).ok()?;
    Some(match idc {
        66 if constraints & 0x40 != 0 => "Constrained Baseline",
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 => "High",
        110 => "High 10",
        122 => "High 4:2:2",
        244 => "High 4:4:4",
        _ => "other",
    })
}
