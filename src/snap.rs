//! One still, once: what `rtsnap snap` does.
//!
//! Opens a session, waits for the first complete keyframe, makes the still
//! and tears the session down. Useful to test a camera URL and credentials
//! before writing a config, and for scripts that want one picture.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use retina::client::SessionGroup;
use retina::codec::CodecItem;
use url::Url;

use crate::config::Credentials;
use crate::decode::DecoderPool;
use crate::pipeline::{make_still, StillError};
use crate::source::session::{open, SourceError};
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
}

/// Connects to `url` and returns one still made from the first complete
/// keyframe. `timeout` bounds each network step and the wait for a keyframe.
pub async fn snap(
    url: &Url,
    creds: Option<&Credentials>,
    timeout: Duration,
    quality: u8,
) -> Result<Snapshot, SnapError> {
    let group = Arc::new(SessionGroup::default());
    let mut opened = open(url, creds, group.clone(), timeout).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let keyframe = loop {
        let item = match tokio::time::timeout_at(deadline, opened.demuxed.next()).await {
            Err(_) => {
                return Err(SourceError::Stalled(format!(
                    "no complete keyframe arrived within {}s",
                    timeout.as_secs()
                ))
                .into())
            }
            Ok(None) => return Err(SourceError::Other("the camera ended the stream".into()).into()),
            Ok(Some(Err(e))) => return Err(SourceError::from_retina(&e, creds).into()),
            Ok(Some(Ok(item))) => item,
        };
        if let CodecItem::VideoFrame(f) = item {
            if f.stream_id() == opened.stream_index && f.is_random_access_point() && f.loss() == 0 {
                break f.into_data();
            }
        }
    };
    let captured_at = SystemTime::now();
    let codec = opened.video_codec;
    drop(opened);
    let still = tokio::task::spawn_blocking(move || {
        make_still(&DecoderPool::new(1), codec, keyframe.into(), quality)
    })
    .await
    .expect("still task panicked")?;
    // Let the TEARDOWN go out before the caller's runtime may end.
    let _ = tokio::time::timeout(Duration::from_secs(2), group.await_teardown()).await;
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
