//! One still, once: what `rtsnap snap` does.
//!
//! Opens a session, waits for the first keyframe that makes a still (within
//! the timeout, skipping unusable ones), and tears the session down. Useful to test a camera URL and credentials
//! before writing a config, and for scripts that want one picture.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use url::Url;

use crate::config::{Credentials, RtspTransport};
use crate::decode::DecoderPool;
use crate::keyframe::KeyframeError;
use crate::pipeline::{make_still, StillError};
use crate::source::rtp_h264::Unit;
use crate::source::session::{open_once, SourceError};
use crate::Snapshot;

/// Why no still was made.
#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    /// The camera could not be reached or streamed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The keyframe could not be turned into a still.
    #[error(transparent)]
    Still(#[from] StillError),
    /// Only intra pictures that are not IDR came, and they cannot be
    /// relabelled as IDR.
    #[error(
        "the camera sends intra pictures that are not IDR and cannot be used ({0}); \
         set it to send IDR keyframes (turn off \"smart codec\" or intra refresh)"
    )]
    NoIdr(#[from] crate::source::open_gop::NotRewritable),
}

/// Connects to `url` and returns one still made from the first keyframe
/// that makes one. A keyframe that cannot be used (lost packets, no
/// SPS/PPS yet, a decode error) is skipped and the next one awaited, until
/// `timeout` (which also bounds each network step) runs out; then the
/// reason the last keyframe failed is returned, if one arrived at all.
pub async fn snap(
    url: &Url,
    creds: Option<&Credentials>,
    transport: RtspTransport,
    timeout: Duration,
    quality: u8,
) -> Result<Snapshot, SnapError> {
    let (opened, group) = open_once(url, creds, transport, timeout).await;
    let mut opened = opened?;
    let deadline = tokio::time::Instant::now() + timeout;
    let codec = opened.video_codec;
    let pool = Arc::new(DecoderPool::new(1));
    let mut last_failure: Option<SnapError> = None;
    let result: Result<_, SnapError> = loop {
        let unit = match tokio::time::timeout_at(deadline, opened.next()).await {
            Err(_) => {
                break Err(match last_failure.take() {
                    Some(e) => e,
                    None => SourceError::Stalled(format!(
                        "no complete keyframe arrived within {}s",
                        timeout.as_secs()
                    ))
                    .into(),
                })
            }
            Ok(None) => break Err(SourceError::Other("the camera ended the stream".into()).into()),
            Ok(Some(Err(e))) => break Err(SourceError::from_retina(&e, creds).into()),
            Ok(Some(Ok(unit))) => unit,
        };
        let Unit::Key(key) = unit else { continue };
        // An open-GOP I picture is relabelled as IDR; one that cannot be
        // is skipped like any unusable keyframe.
        let key = match key.startable() {
            Ok(k) => k,
            Err(e) => {
                last_failure = Some(e.into());
                continue;
            }
        };
        let captured_at = SystemTime::now();
        let pool = pool.clone();
        // Decode while the session stays open, so a bad keyframe costs one
        // keyframe interval, not a new connection.
        let made =
            tokio::task::spawn_blocking(move || make_still(&pool, codec, key.data.into(), quality))
                .await
                .expect("still task panicked");
        match made {
            Ok(still) => break Ok((still, captured_at)),
            Err(e @ StillError::Keyframe(KeyframeError::Interlaced))
            | Err(e @ StillError::Keyframe(KeyframeError::UnsupportedProfile(_))) => {
                break Err(e.into())
            }
            Err(e) => {
                tracing::debug!("keyframe skipped, waiting for the next: {e}");
                last_failure = Some(e.into());
            }
        }
    };
    drop(opened);
    // Let the TEARDOWN go out before the caller's runtime may end.
    let _ = tokio::time::timeout(Duration::from_secs(2), group.await_teardown()).await;
    let (still, captured_at) = result?;
    Ok(Snapshot {
        camera: url.path().trim_matches('/').replace('/', "_").into(),
        captured_at,
        width: still.width,
        height: still.height,
        jpeg: still.jpeg,
        seq: 1,
        fingerprint: still.fingerprint,
        interval: Duration::ZERO,
    })
}
