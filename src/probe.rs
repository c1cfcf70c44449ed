//! What `rtsnap probe` reports: codec, profile, size, frame rate and the
//! keyframe interval actually measured on the wire.
//!
//! The keyframe interval matters because a still can only be made from a
//! keyframe: it bounds how fresh a still can be and how soon the first one
//! arrives. Cameras often send a different GOP than their web UI claims.

use std::time::Duration;

use url::Url;

use crate::config::{Credentials, RtspTransport};
use crate::keyframe::KeyframeInfo;
use crate::source::rtp_h264::{KeyKind, Unit};
use crate::source::session::{h264_profile, open_once, SourceError};

/// What was observed.
#[derive(Clone, Debug)]
pub struct ProbeReport {
    /// The video codec rtsnap will use.
    pub video_codec: crate::pipeline::VideoCodec,
    /// RFC 6381 codec string, e.g. `avc1.640028`.
    pub codec: Option<String>,
    /// H.264 profile name.
    pub profile: Option<&'static str>,
    /// Resolution.
    pub dims: Option<(u32, u32)>,
    /// Frame rate the stream declares.
    pub declared_fps: Option<f64>,
    /// Frame rate measured from timestamps.
    pub measured_fps: Option<f64>,
    /// Mean time between keyframes, if two or more were seen.
    pub keyframe_interval: Option<Duration>,
    /// Frames received.
    pub frames: u64,
    /// Keyframes received: IDR pictures, and open-GOP I pictures that can
    /// be relabelled as IDR.
    pub keyframes: u64,
    /// Of all keyframe candidates, intra pictures that are not IDR (open GOP,
    /// recovery points), usable or not.
    pub intra_non_idr: u64,
    /// Average bitrate in bits per second.
    pub bitrate: Option<f64>,
    /// What the first keyframe's SPS says.
    pub sps: Option<KeyframeInfo>,
    /// How long it was observed.
    pub observed: Duration,
}

/// Watches `url` for `duration` and reports.
pub async fn probe(
    url: &Url,
    creds: Option<&Credentials>,
    transport: RtspTransport,
    timeout: Duration,
    duration: Duration,
) -> Result<ProbeReport, SourceError> {
    let (opened, group) = open_once(url, creds, transport, timeout).await;
    let mut opened = opened?;
    let start = tokio::time::Instant::now();
    let (mut frames, mut keyframes, mut bytes, mut intra_non_idr) = (0u64, 0u64, 0u64, 0u64);
    let (mut first_frame, mut last_frame) = (None::<tokio::time::Instant>, start);
    let (mut first_kf, mut last_kf) = (None::<tokio::time::Instant>, start);
    let mut sps = opened
        .sdp_sps
        .as_deref()
        .and_then(|s| crate::keyframe::parse_sps(s).ok());
    let mut dims = opened.dims;
    while start.elapsed() < duration {
        let left = duration.saturating_sub(start.elapsed());
        let unit = match tokio::time::timeout(left.min(timeout), opened.next()).await {
            Err(_) if start.elapsed() >= duration => break,
            Err(_) => {
                return Err(SourceError::Stalled(format!(
                    "the camera sent no complete picture for {}s",
                    timeout.as_secs()
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(SourceError::from_retina(&e, creds)),
            Ok(Some(Ok(unit))) => unit,
        };
        let now = tokio::time::Instant::now();
        frames += 1;
        first_frame.get_or_insert(now);
        last_frame = now;
        match unit {
            Unit::Other { bytes: b }
            | Unit::Damaged { bytes: b, .. }
            | Unit::Oversized { bytes: b } => bytes += b as u64,
            Unit::Key(k) => {
                bytes += k.data.len() as u64;
                if k.kind != KeyKind::Idr {
                    intra_non_idr += 1;
                }
                // Open-GOP I pictures count when they can be relabelled as IDR.
                let Ok(k) = k.startable() else { continue };
                keyframes += 1;
                first_kf.get_or_insert(now);
                last_kf = now;
                if opened.video_codec == crate::pipeline::VideoCodec::H264 {
                    if let Ok(info) = crate::keyframe::parse_keyframe_sps(&k.data) {
                        dims = Some((info.width, info.height));
                        sps.get_or_insert(info);
                    }
                }
            }
        }
    }
    let observed = start.elapsed();
    let span = first_frame
        .map(|f| (last_frame - f).as_secs_f64())
        .filter(|&s| s > 0.0);
    let report = ProbeReport {
        video_codec: opened.video_codec,
        profile: opened.codec.as_deref().and_then(h264_profile),
        codec: opened.codec.clone(),
        dims,
        declared_fps: opened.frame_rate,
        measured_fps: span.map(|s| (frames - 1) as f64 / s),
        keyframe_interval: first_kf
            .filter(|_| keyframes >= 2)
            .map(|f| (last_kf - f) / (keyframes - 1) as u32),
        frames,
        keyframes,
        intra_non_idr,
        bitrate: (observed.as_secs_f64() > 0.0)
            .then(|| bytes as f64 * 8.0 / observed.as_secs_f64()),
        sps,
        observed,
    };
    drop(opened);
    let _ = tokio::time::timeout(Duration::from_secs(2), group.await_teardown()).await;
    Ok(report)
}
