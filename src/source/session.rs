//! Opening one RTSP session with retina, with a deadline on every step, and
//! turning whatever goes wrong into one sentence a user can act on.
//!
//! retina has no timeouts of its own on connect, DESCRIBE, SETUP or PLAY, so
//! each is wrapped in [`tokio::time::timeout`]. Transport is TCP interleaved
//! by default; `transport = "udp"` or `"auto"` (UDP when the camera refuses
//! TCP) for cameras and relays that serve UDP only. H.264 packets are
//! depacketized by [`super::rtp_h264`], our own keyframe-only depacketizer
//! that tolerates joining mid-stream and bounds memory; MJPEG goes through
//! retina's demuxer (each frame is a JPEG already).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use retina::client::{
    Credentials as RtspCredentials, Demuxed, PacketItem, PlayOptions, Playing, Session,
    SessionGroup, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
    UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use url::Url;

use super::auth_probe::{self, Challenge, ProbeError};
use super::backoff::RetryClass;
use super::rtp_h264::{self, KeyAccessUnit, KeyKind, Unit};
use crate::config::{Credentials, RtspTransport};
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
    #[error("{message}")]
    Status {
        /// The RTSP status code.
        code: u16,
        /// What it means for this camera and what to do, for the user.
        message: String,
    },
    /// The stream cannot be handled by rtsnap; retrying soon will not help.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The camera is connected but sends nothing.
    #[error("{0}")]
    Stalled(String),
    /// SETUP over TCP was refused (RTSP 461, or 400 from some relays).
    #[error(
        "the camera refuses RTSP over TCP (RTSP {status} to SETUP): set transport = \"udp\" or \"auto\" for this camera"
    )]
    TcpRefused {
        /// The status it answered.
        status: u16,
    },
    /// The camera offers only Basic authentication and the camera's
    /// `allow_basic_auth = false`: the password was not sent.
    #[error(
        "the camera asks for Basic authentication only, which would send the password in clear \
         text, and allow_basic_auth = false for it, so rtsnap did not send it: set the camera's \
         RTSP authentication to digest (or set allow_basic_auth = true to accept the risk)"
    )]
    BasicAuthRefused,
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

    /// What kind of failure this is, which decides how soon the camera is
    /// redialed (see [`super::backoff`]).
    pub fn retry_class(&self) -> RetryClass {
        match self {
            SourceError::Timeout { .. } | SourceError::Stalled(_) => RetryClass::Away,
            SourceError::Status { code, message } => match code {
                401 | 403 => RetryClass::Auth,
                453 => RetryClass::Busy,
                _ if says_busy(message) => RetryClass::Busy,
                // 404 and 5xx included: an NVR that is booting answers
                // those until its channels are up.
                _ => RetryClass::Away,
            },
            // Only a change of configuration helps; `auto` never gets here.
            SourceError::Unsupported(_)
            | SourceError::TcpRefused { .. }
            | SourceError::BasicAuthRefused => RetryClass::Unsupported,
            SourceError::Other(message) if says_busy(message) => RetryClass::Busy,
            // Refused, reset, unreachable, the stream ended.
            SourceError::Other(_) => RetryClass::Away,
        }
    }

    /// Maps a retina error to a message. retina's own text is thorough but
    /// multi-line (connection and message context); we keep its first line
    /// and add advice for the statuses cameras and NVRs commonly send.
    pub(crate) fn from_retina(e: &retina::Error, creds: Option<&Credentials>) -> SourceError {
        // retina's text may quote a URL or a Content-Base that carries
        // credentials (allow_url_credentials): mask them.
        let text = crate::redact::redact_text(&e.to_string());
        let first = text.lines().next().unwrap_or_default().to_owned();
        match e.status_code() {
            Some(s) => status_error(s, &first, creds),
            // Some cameras answer an error without a CSeq header; retina
            // then reports a framing error. Recover the status from the
            // reason phrase it quotes, so the user sees "404", not framing.
            None => match reason_without_cseq(&text).and_then(status_of_reason) {
                Some(s) => status_error(s, &first, creds),
                None => SourceError::Other(first),
            },
        }
    }
}

/// The message for an RTSP error status, with advice for those cameras and
/// NVRs commonly send.
fn status_error(status: u16, first: &str, creds: Option<&Credentials>) -> SourceError {
    let message = match status {
        401 => match creds {
            Some(c) => format!(
                "RTSP 401 Unauthorized: check username \"{}\" and {}",
                c.username, c.source
            ),
            None => "RTSP 401 Unauthorized: the camera wants a login; set username and \
                     password_env (or password_file)"
                .into(),
        },
        403 => "RTSP 403 Forbidden: the user may not view this stream, or the NVR's limit of \
                viewers is reached; close other viewers or raise the limit"
            .into(),
        404 => "RTSP 404 Not Found: the camera has no stream at this URL path; check the path \
                (and the channel number)"
            .into(),
        453 => "RTSP 453 Not Enough Bandwidth: the camera or NVR refuses another session; close \
                other viewers or use the substream"
            .into(),
        461 => {
            return SourceError::TcpRefused { status };
        }
        s => format!("RTSP {s}: {first}"),
    };
    SourceError::Status {
        code: status,
        message,
    }
}

/// Whether a server's own words (a non-standard reason phrase some cameras
/// send with 503 or 400) say it is at its limit of sessions or viewers.
fn says_busy(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    ["too many", "session limit", "max session"]
        .iter()
        .any(|p| text.contains(p))
}

/// The reason phrase of a response retina rejected for lacking a CSeq.
fn reason_without_cseq(text: &str) -> Option<&str> {
    let end = text.find(" response with no/unparseable cseq")?;
    let start = text[..end].rfind("got ")? + 4;
    Some(&text[start..end])
}

/// The status a standard reason phrase stands for.
fn status_of_reason(reason: &str) -> Option<u16> {
    Some(match reason.trim().to_ascii_lowercase().as_str() {
        "bad request" => 400,
        "unauthorized" => 401,
        "forbidden" => 403,
        "not found" => 404,
        "method not allowed" => 405,
        "not enough bandwidth" => 453,
        "session not found" => 454,
        "unsupported transport" => 461,
        "internal server error" => 500,
        "service unavailable" => 503,
        _ => return None,
    })
}

/// A playing session and what we know about its video stream.
pub struct Opened {
    reader: Reader,
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
    /// The transport in use (`auto` resolved).
    pub transport: RtspTransport,
    /// The SPS the SDP declares (H.264), to check before any keyframe.
    pub sdp_sps: Option<Vec<u8>>,
}

/// Where access units come from.
enum Reader {
    /// H.264: raw RTP packets into our depacketizer.
    H264 {
        session: Session<Playing>,
        depacketizer: rtp_h264::Depacketizer,
    },
    /// MJPEG: retina's demuxer; every frame is a keyframe.
    Demuxed(Demuxed),
}

impl Opened {
    /// The next finished access unit of the video stream. RTCP and other
    /// streams' packets are consumed without returning, so a camera that
    /// keeps the session alive with RTCP alone looks silent here. Cancel
    /// safe: a packet is in the depacketizer before the next await.
    pub async fn next(&mut self) -> Option<Result<Unit, retina::Error>> {
        let stream_index = self.stream_index;
        match &mut self.reader {
            Reader::H264 {
                session,
                depacketizer,
            } => loop {
                if let Some(u) = depacketizer.pull() {
                    return Some(Ok(u));
                }
                match session.next().await? {
                    Err(e) => return Some(Err(e)),
                    Ok(PacketItem::Rtp(pkt)) if pkt.stream_id() == stream_index => {
                        depacketizer.push(
                            pkt.timestamp().timestamp() as u32,
                            pkt.mark(),
                            pkt.loss(),
                            pkt.payload(),
                        );
                    }
                    Ok(_) => {}
                }
            },
            Reader::Demuxed(d) => loop {
                match d.next().await? {
                    Err(e) => return Some(Err(e)),
                    Ok(CodecItem::VideoFrame(f)) if f.stream_id() == stream_index => {
                        let bytes = f.data().len();
                        return Some(Ok(if f.loss() > 0 {
                            Unit::Damaged {
                                keyframe: true,
                                bytes,
                            }
                        } else {
                            Unit::Key(KeyAccessUnit {
                                rtp_timestamp: f.timestamp().timestamp() as u32,
                                new_parameters: f.has_new_parameters(),
                                kind: KeyKind::Idr,
                                data: f.into_data(),
                            })
                        }));
                    }
                    Ok(_) => {}
                }
            },
        }
    }
}

/// Where and how to open a session.
pub struct Dial<'a> {
    /// The camera's URL, without credentials.
    pub url: &'a Url,
    /// Its credentials, if any.
    pub creds: Option<&'a Credentials>,
    /// The camera's session group (stale-session tracking, TEARDOWN).
    pub group: Arc<SessionGroup>,
    /// Deadline for each step.
    pub timeout: Duration,
    /// TCP, UDP or TCP falling back to UDP.
    pub transport: RtspTransport,
    /// Largest access unit kept, in bytes.
    pub max_access_unit: usize,
    /// Set to true when the camera asked for Basic authentication only and
    /// the password was handed to retina anyway (`allow_basic_auth`), so
    /// the caller can warn, whether or not the session then opened. Never
    /// reset here.
    pub basic_auth: &'a AtomicBool,
}

/// One session for a one-shot command (`snap`, `probe`): its own session
/// group (returned, so the caller can wait for the TEARDOWN), the default
/// access-unit cap, and the Basic-auth warning logged here.
pub async fn open_once(
    url: &Url,
    creds: Option<&Credentials>,
    transport: RtspTransport,
    timeout: Duration,
) -> (Result<Opened, SourceError>, Arc<SessionGroup>) {
    let group = Arc::new(SessionGroup::default());
    let basic_auth = AtomicBool::new(false);
    let dial = Dial {
        url,
        creds,
        group: group.clone(),
        timeout,
        transport,
        max_access_unit: crate::config::DEFAULT_MAX_ACCESS_UNIT,
        basic_auth: &basic_auth,
    };
    let opened = open(&dial).await;
    if basic_auth.load(Ordering::Relaxed) {
        tracing::warn!("{}", super::CredentialWarning::BasicAuth);
    }
    (opened, group)
}

fn host_of(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("?"),
        url.port().unwrap_or(554)
    )
}

/// DESCRIBE, pick the video stream, SETUP, PLAY. With `auto`, a camera
/// that refuses TCP is asked again for UDP in the same session. With
/// credentials, the camera's challenge is read first ([`auth_probe`]), so a
/// Basic-only camera is refused or flagged before retina gets the password.
pub async fn open(dial: &Dial<'_>) -> Result<Opened, SourceError> {
    if let Some(creds) = dial.creds {
        match auth_probe::challenge(dial.url, dial.timeout).await {
            Ok(Challenge::Basic) if !creds.allow_basic_auth => {
                return Err(SourceError::BasicAuthRefused)
            }
            Ok(Challenge::Basic) => dial.basic_auth.store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(ProbeError::Timeout) => {
                return Err(SourceError::Timeout {
                    step: "connect and DESCRIBE",
                    host: host_of(dial.url),
                    after: dial.timeout,
                })
            }
            // retina dials next and reports the failure in its own words.
            Err(ProbeError::Io(_)) => {}
        }
    }
    let (url, creds, timeout) = (dial.url, dial.creds, dial.timeout);
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
        .session_group(dial.group.clone())
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
    let fmtp = fmtp_of(session.sdp(), i);
    // `auto` asks for TCP and, when the camera refuses it, for UDP in the
    // same session: a second DESCRIBE right away can meet a server still
    // tearing down the first (GStreamer answers 503 then).
    let tries: &[RtspTransport] = match dial.transport {
        RtspTransport::Auto => &[RtspTransport::Tcp, RtspTransport::Udp],
        RtspTransport::Tcp => &[RtspTransport::Tcp],
        RtspTransport::Udp => &[RtspTransport::Udp],
    };
    let mut transport = tries[0];
    for (n, &t) in tries.iter().enumerate() {
        transport = t;
        let rtp_transport = match t {
            RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
            _ => Transport::Tcp(TcpTransportOptions::default()),
        };
        let result = tokio::time::timeout(
            timeout,
            session.setup(
                i,
                SetupOptions::default()
                    .transport(rtp_transport)
                    .frame_format(FrameFormat::SIMPLE),
            ),
        )
        .await
        .map_err(|_| to("SETUP"))?
        .map_err(|e| match (t, e.status_code()) {
            // Relays that only do UDP answer a TCP SETUP with 400 or 461.
            (RtspTransport::Tcp, Some(status @ (400 | 461))) => SourceError::TcpRefused { status },
            _ => SourceError::from_retina(&e, creds),
        });
        match result {
            Ok(()) => break,
            Err(SourceError::TcpRefused { .. }) if n + 1 < tries.len() => continue,
            Err(e) => return Err(e),
        }
    }
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
    let (reader, sdp_sps) = match video_codec {
        VideoCodec::H264 => {
            let depacketizer = rtp_h264::Depacketizer::new(fmtp.as_deref(), dial.max_access_unit);
            let sps = depacketizer.sps().map(<[u8]>::to_vec);
            (
                Reader::H264 {
                    session: playing,
                    depacketizer,
                },
                sps,
            )
        }
        VideoCodec::Mjpeg => (
            Reader::Demuxed(
                playing
                    .demuxed()
                    .map_err(|e| SourceError::from_retina(&e, creds))?,
            ),
            None,
        ),
    };
    Ok(Opened {
        reader,
        stream_index: i,
        video_codec,
        dims,
        codec,
        frame_rate: frame_rate.or(params_rate),
        transport,
        sdp_sps,
    })
}

/// The `a=fmtp` value of the `index`th media section of an SDP, for that
/// section's first payload type.
fn fmtp_of(sdp: &[u8], index: usize) -> Option<String> {
    let text = String::from_utf8_lossy(sdp);
    let mut media = None::<usize>;
    let mut payload_type = None::<String>;
    for line in text.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            media = Some(media.map_or(0, |n| n + 1));
            payload_type = m.split_whitespace().nth(3).map(str::to_owned);
            continue;
        }
        if media != Some(index) {
            continue;
        }
        if let Some(rest) = line.strip_prefix("a=fmtp:") {
            let (pt, value) = rest.split_once(' ')?;
            if Some(pt) == payload_type.as_deref() {
                return Some(value.to_owned());
            }
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmtp_of_the_right_media_section() {
        let sdp = b"v=0\r\nm=audio 0 RTP/AVP 97\r\na=fmtp:97 config=11\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0I=,aM4=;\r\n";
        assert_eq!(fmtp_of(sdp, 0).as_deref(), Some("config=11"));
        assert_eq!(
            fmtp_of(sdp, 1).as_deref(),
            Some("packetization-mode=1;sprop-parameter-sets=Z0I=,aM4=;")
        );
        assert_eq!(fmtp_of(sdp, 2), None);
    }

    #[test]
    fn status_from_a_response_without_cseq() {
        let text = "RTSP framing error: Expected response to DESCRIBE CSeq 1, got Not Found \
                    response with no/unparseable cseq\n\nconn: ...";
        assert_eq!(reason_without_cseq(text), Some("Not Found"));
        assert_eq!(status_of_reason("Not Found"), Some(404));
        assert!(matches!(
            status_error(404, "", None),
            SourceError::Status { code: 404, message } if message.starts_with("RTSP 404")
        ));
        assert!(matches!(
            status_error(461, "", None),
            SourceError::TcpRefused { status: 461 }
        ));
    }

    #[test]
    fn every_failure_has_its_retry_class() {
        let class = |code| status_error(code, "", None).retry_class();
        assert_eq!(class(401), RetryClass::Auth);
        assert_eq!(class(403), RetryClass::Auth);
        assert_eq!(class(453), RetryClass::Busy);
        assert_eq!(class(404), RetryClass::Away);
        assert_eq!(class(500), RetryClass::Away);
        assert_eq!(class(503), RetryClass::Away);
        assert_eq!(class(461), RetryClass::Unsupported);
        let e = status_error(401, "", None);
        assert!(matches!(&e, SourceError::Status { code: 401, .. }));
        assert!(
            e.to_string().contains("set username and password_env"),
            "{e}"
        );
        // A server's own words for "full" count as busy, whatever the code.
        let full = status_error(503, "503 Too Many Users response to DESCRIBE", None);
        assert_eq!(full.retry_class(), RetryClass::Busy);
        let other = SourceError::Other(
            "RTSP framing error: Expected response to DESCRIBE CSeq 1, got Too many users \
             response with no/unparseable cseq"
                .into(),
        );
        assert_eq!(other.retry_class(), RetryClass::Busy);
        let away = [
            SourceError::Other("Unable to connect to RTSP server: Connection refused".into()),
            SourceError::Other("the camera ended the stream".into()),
            SourceError::Stalled("the camera sent no complete picture for 10s".into()),
            SourceError::Timeout {
                step: "connect and DESCRIBE",
                host: "192.0.2.1:554".into(),
                after: Duration::from_secs(10),
            },
        ];
        for e in away {
            assert_eq!(e.retry_class(), RetryClass::Away, "{e}");
        }
        assert_eq!(
            SourceError::BasicAuthRefused.retry_class(),
            RetryClass::Unsupported
        );
        assert_eq!(
            SourceError::Unsupported("H.265".into()).retry_class(),
            RetryClass::Unsupported
        );
    }
}
