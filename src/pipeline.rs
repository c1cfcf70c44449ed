//! keyframe -> decode -> encode, as one blocking call.
//!
//! This is the CPU-heavy middle of rtsnap and the part the benchmarks time.
//! It runs on a blocking thread (see [`crate::source`]), so the camera's
//! RTSP reader never pauses while a still is being made.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::decode::{DecodeError, DecoderPool};
use crate::encode::{encode_jpeg, EncodeError};
use crate::keyframe::{inspect, jpeg_dimensions, KeyframeError};

/// What a camera sends, and so how a still is made from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264: keyframes are decoded and re-encoded as JPEG.
    H264,
    /// Motion JPEG: every frame already is a JPEG and passes through as is.
    Mjpeg,
}

/// A 32 x 18 grid of mean luma values: enough to tell whether a scene
/// changed (a parcel on the porch, lights on) and blind to sensor noise,
/// which averages out over each cell. Computed from the decoded picture for
/// free while it is in cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(pub std::sync::Arc<[u8]>);

impl Fingerprint {
    /// Grid columns.
    pub const COLS: usize = 32;
    /// Grid rows.
    pub const ROWS: usize = 18;

    /// Samples every 4th pixel of every 2nd row of each cell.
    pub fn of(pic: &crate::decode::Yuv420<'_>) -> Fingerprint {
        let mut cells = Vec::with_capacity(Self::COLS * Self::ROWS);
        for r in 0..Self::ROWS {
            let (y0, y1) = (
                r * pic.height / Self::ROWS,
                (r + 1) * pic.height / Self::ROWS,
            );
            for c in 0..Self::COLS {
                let (x0, x1) = (c * pic.width / Self::COLS, (c + 1) * pic.width / Self::COLS);
                let (mut sum, mut n) = (0u32, 0u32);
                for y in (y0..y1).step_by(2) {
                    let row = &pic.y[y * pic.y_stride..];
                    for x in (x0..x1).step_by(4) {
                        sum += row[x] as u32;
                        n += 1;
                    }
                }
                cells.push(sum.checked_div(n).unwrap_or(0) as u8);
            }
        }
        Fingerprint(cells.into())
    }

    /// Mean absolute difference per cell, 0-255.
    pub fn distance(&self, other: &Fingerprint) -> f64 {
        if self.0.len() != other.0.len() || self.0.is_empty() {
            return 255.0;
        }
        let sum: u32 = self
            .0
            .iter()
            .zip(other.0.iter())
            .map(|(a, b)| a.abs_diff(*b) as u32)
            .sum();
        sum as f64 / self.0.len() as f64
    }
}

/// A JPEG made from one keyframe, with what it cost.
#[derive(Clone, Debug)]
pub struct EncodedStill {
    /// The JPEG file.
    pub jpeg: Bytes,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Time spent in the H.264 decoder.
    pub decode_time: Duration,
    /// Time spent encoding the JPEG.
    pub encode_time: Duration,
    /// Scene fingerprint, when the picture was decoded here.
    pub fingerprint: Option<Fingerprint>,
}

/// Why a keyframe did not become a still. The camera keeps its previous still.
#[derive(Debug, thiserror::Error)]
pub enum StillError {
    /// The access unit is not a usable keyframe.
    #[error(transparent)]
    Keyframe(#[from] KeyframeError),
    /// The decoder failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The JPEG encoder failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Makes a still from one keyframe of a stream of `codec`.
pub fn make_still(
    pool: &DecoderPool,
    codec: VideoCodec,
    data: Bytes,
    quality: u8,
) -> Result<EncodedStill, StillError> {
    match codec {
        VideoCodec::H264 => keyframe_to_jpeg(pool, &data, quality),
        VideoCodec::Mjpeg => jpeg_passthrough(data),
    }
}

/// An MJPEG frame is already a still: check it and keep it, zero decoding.
pub fn jpeg_passthrough(jpeg: Bytes) -> Result<EncodedStill, StillError> {
    let (width, height) = jpeg_dimensions(&jpeg).ok_or(KeyframeError::BadJpeg)?;
    Ok(EncodedStill {
        jpeg,
        width,
        height,
        decode_time: Duration::ZERO,
        encode_time: Duration::ZERO,
        fingerprint: None,
    })
}

/// Turns one IDR access unit (Annex B, SPS/PPS included) into a JPEG.
pub fn keyframe_to_jpeg(
    pool: &DecoderPool,
    annexb: &[u8],
    quality: u8,
) -> Result<EncodedStill, StillError> {
    let info = inspect(annexb)?;
    let dims = (info.width as usize, info.height as usize);
    let started = Instant::now();
    let (jpeg, width, height, decode_time, fingerprint) =
        pool.decode(annexb, Some(dims), info.full_range, |pic| {
            let decode_time = started.elapsed();
            let fingerprint = Fingerprint::of(&pic);
            encode_jpeg(&pic, quality).map(|j| (j, pic.width, pic.height, decode_time, fingerprint))
        })??;
    Ok(EncodedStill {
        jpeg: Bytes::from(jpeg),
        width: width as u32,
        height: height as u32,
        decode_time,
        encode_time: started.elapsed() - decode_time,
        fingerprint: Some(fingerprint),
    })
}
