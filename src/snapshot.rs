//! [`Snapshot`]: one JPEG still of one camera, the unit every sink receives.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// One still: a complete JPEG plus what a viewer needs to know about it.
///
/// Cloning is cheap (the name and the JPEG are reference-counted), so the same
/// still can go to every sink without copying the image.
#[derive(Clone)]
pub struct Snapshot {
    /// The camera's configured name.
    pub camera: Arc<str>,
    /// Wall-clock time the keyframe behind this still finished arriving.
    pub captured_at: SystemTime,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The JPEG file, complete (JFIF, baseline).
    pub jpeg: Bytes,
    /// Increases by one with every still of this camera, so consumers can tell
    /// a new still from one they already have without comparing bytes.
    pub seq: u64,
    /// A tiny luma thumbnail (see [`crate::pipeline::Fingerprint`]) to tell
    /// cheaply whether the scene changed; `None` for MJPEG pass-through.
    pub fingerprint: Option<crate::pipeline::Fingerprint>,
    /// The camera's still interval, for viewers that flag stale stills.
    pub interval: std::time::Duration,
}

impl Snapshot {
    /// How long ago the still was captured (zero if the clock went backwards).
    pub fn age(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.captured_at)
            .unwrap_or_default()
    }

    /// Decodes the JPEG into RGB pixels, for library users who want to look
    /// at the image rather than store it.
    pub fn to_rgb(&self) -> Result<image::RgbImage, image::ImageError> {
        Ok(image::load_from_memory_with_format(&self.jpeg, image::ImageFormat::Jpeg)?.into_rgb8())
    }

    /// Capture time as an RFC 3339 UTC string with milliseconds.
    pub fn captured_at_rfc3339(&self) -> String {
        humantime::format_rfc3339_millis(self.captured_at).to_string()
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("camera", &self.camera)
            .field("captured_at", &self.captured_at_rfc3339())
            .field("width", &self.width)
            .field("height", &self.height)
            .field("jpeg_bytes", &self.jpeg.len())
            .field("seq", &self.seq)
            .finish()
    }
}

/// A tiny still for unit tests of the store and sinks.
#[cfg(test)]
pub(crate) fn test_still(camera: &str, seq: u64) -> Snapshot {
    Snapshot {
        camera: camera.into(),
        captured_at: SystemTime::now(),
        width: 1,
        height: 1,
        jpeg: Bytes::from_static(b"x"),
        seq,
        fingerprint: None,
        interval: Duration::from_secs(5),
    }
}
