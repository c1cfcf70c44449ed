//! What `rtsnap probe` reports: codec, profile, size, frame rate and the
//! keyframe interval actually measured on the wire.
//!
//! The keyframe interval matters because a still can only be made from a
//! keyframe: it bounds how fresh a still can be and how soon the first one
//! arrives. Cameras often send a different GOP than their web UI claims.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use retina::client::SessionGroup;
use retina::codec::{CodecItem, ParametersRef};
use url::Url;

use crate::config::Credentials;
use crate::keyframe::{inspect, KeyframeInfo};
use crate::source::session::{h264_profile, open, SourceError};

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
    /// Keyframes received.
    pub keyframes: u64,
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
    timeout: Duration,
    duration: Duration,
) -> Result<ProbeReport, SourceError> {
    let group = Arc::new(SessionGroup::default());
    let mut opened = open(url, creds, group.clone(), timeout).await?;
    let start = tokio::time::Instant::now();
    let (mut frames, mut keyframes, mut bytes) = (0u64, 0u64, 0u64);
    let (mut first_ts, mut last_ts): (Option<f64>, f64) = (None, 0.0);
    let (mut first_kf, mut last_kf): (Option<f64>, f64) = (None, 0.0);
    let mut sps = None;
    let mut dims = opened.dims;
    while start.elapsed() < duration {
        let left = duration.saturating_sub(start.elapsed());
        let item = match tokio::time::timeout(left.min(timeout), opened.demuxed.next()).await {
            Err(_) if start.elapsed() >= duration => break,
            Err(_) => {
                return Err(SourceError::Stalled(format!(
                    "the camera sent nothing for {}s",
                    timeout.as_secs()
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(SourceError::from_retina(&e, creds)),
            Ok(Some(Ok(item))) => item,
        };
        let CodecItem::VideoFrame(f) = item else {
            continue;
        };
        if f.stream_id() != opened.stream_index {
            continue;
        }
        let ts = f.timestamp().elapsed_secs();
        frames += 1;
        bytes += f.data().len() as u64;
        first_ts.get_or_insert(ts);
        last_ts = last_ts.max(ts);
        if f.is_random_access_point() {
            keyframes += 1;
            first_kf.get_or_insert(ts);
            last_kf = ts;
            if sps.is_none() {
                sps = inspect(f.data()).ok();
            }
        }
    }
    if let Some(ParametersRef::Video(v)) =
        opened.demuxed.streams()[opened.stream_index].parameters()
    {
        dims = Some(v.pixel_dimensions());
    }
    let observed = start.elapsed();
    let span = first_ts.map(|f| last_ts - f).filter(|&s| s > 0.0);
    let report = ProbeReport {
        video_codec: opened.video_codec,
        profile: opened.codec.as_deref().and_then(h264_profile),
        codec: opened.codec.clone(),
        dims,
        declared_fps: opened.frame_rate,
        measured_fps: span.map(|s| (frames - 1) as f64 / s),
        keyframe_interval: first_kf
            .filter(|_| keyframes >= 2)
            .map(|f| Duration::from_secs_f64((last_kf - f) / (keyframes - 1) as f64)),
        frames,
        keyframes,
        bitrate: (observed.as_secs_f64() > 0.0)
            .then(|| bytes as f64 * 8.0 / observed.as_secs_f64()),
        sps,
        observed,
    };
    drop(opened);
    let _ = tokio::time::timeout(Duration::from_secs(2), group.await_teardown()).await;
    Ok(report)
}
