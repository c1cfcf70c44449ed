//! The decode stage: a small pool of openh264 decoders shared by all cameras.
//!
//! Why a pool and not one decoder per camera: a 1080p openh264 decoder holds
//! ~26 MB. Because rtsnap only ever feeds self-contained IDR access units
//! (SPS and PPS included), any decoder can decode any camera's keyframe: the
//! SPS resets it. So one decoder serves every camera of one resolution in
//! turn (8 cameras x a still every 5 s is ~2% of a core). Switching a decoder
//! to another resolution costs a re-allocation (~50 ms at 1080p), so the pool
//! grows by one decoder per resolution in use, up to its limit, and waits for
//! the decoder of the right size rather than create a second one of it.
//!
//! Decoding blocks; callers run [`DecoderPool::decode`] on a blocking thread.

use std::sync::{Condvar, Mutex};

use openh264::decoder::{DecodedYUV, Decoder};
use openh264::formats::YUVSource;

/// A decoded picture: 8-bit 4:2:0 planes, borrowed from the decoder.
#[derive(Clone, Copy)]
pub struct Yuv420<'a> {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Luma plane, `y_stride * height` bytes.
    pub y: &'a [u8],
    /// Cb plane, `uv_stride * (height + 1) / 2` bytes.
    pub u: &'a [u8],
    /// Cr plane, same layout as `u`.
    pub v: &'a [u8],
    /// Bytes per luma row.
    pub y_stride: usize,
    /// Bytes per chroma row.
    pub uv_stride: usize,
    /// Samples use 0-255 (`true`) or the limited 16-235/240 range (`false`).
    pub full_range: bool,
}

impl<'a> Yuv420<'a> {
    fn from_decoded(pic: &'a DecodedYUV<'a>, full_range: bool) -> Self {
        let (width, height) = pic.dimensions();
        let (y_stride, uv_stride, _) = pic.strides();
        Yuv420 {
            width,
            height,
            y: pic.y(),
            u: pic.u(),
            v: pic.v(),
            y_stride,
            uv_stride,
            full_range,
        }
    }
}

/// Why a keyframe could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// openh264 rejected the bitstream.
    #[error("the H.264 decoder rejected the keyframe: {0}")]
    Rejected(String),
    /// The decoder consumed the data but produced no picture.
    #[error("the keyframe decoded to no picture (incomplete access unit)")]
    NoPicture,
    /// openh264 could not be initialised.
    #[error("cannot create an H.264 decoder: {0}")]
    Init(String),
}

struct Pooled {
    decoder: Decoder,
    /// Size of the last picture it decoded.
    dims: Option<(usize, usize)>,
}

struct State {
    idle: Vec<Pooled>,
    /// The sizes the lent-out decoders were lent for.
    busy: Vec<Option<(usize, usize)>>,
    /// Decoders in existence, idle or lent out.
    total: usize,
}

/// A bounded pool of openh264 decoders.
pub struct DecoderPool {
    state: Mutex<State>,
    returned: Condvar,
    max: usize,
}

impl DecoderPool {
    /// A pool that holds at most `max` decoders (at least one).
    pub fn new(max: usize) -> DecoderPool {
        DecoderPool {
            state: Mutex::new(State {
                idle: Vec::new(),
                busy: Vec::new(),
                total: 0,
            }),
            returned: Condvar::new(),
            max: max.max(1),
        }
    }

    /// Decoders created so far and not dropped.
    pub fn decoders(&self) -> usize {
        self.state.lock().unwrap().total
    }

    /// Decodes one IDR access unit and hands the picture to `f`, which must
    /// finish with it before the decoder goes back to the pool (the planes
    /// belong to the decoder). `dims` is the expected size, used to pick a
    /// decoder already set up for it; `full_range` comes from the SPS.
    ///
    /// Blocks while all decoders are busy. A decoder that fails is dropped,
    /// not returned, so a corrupt stream cannot poison another camera's decode.
    pub fn decode<R>(
        &self,
        annexb: &[u8],
        dims: Option<(usize, usize)>,
        full_range: bool,
        f: impl FnOnce(Yuv420<'_>) -> R,
    ) -> Result<R, DecodeError> {
        let mut pooled = self.checkout(dims)?;
        let result = match pooled.decoder.decode(annexb) {
            Ok(Some(pic)) => {
                let yuv = Yuv420::from_decoded(&pic, full_range);
                let d = (yuv.width, yuv.height);
                let r = f(yuv);
                pooled.dims = Some(d);
                Ok(r)
            }
            Ok(None) => Err(DecodeError::NoPicture),
            Err(e) => Err(DecodeError::Rejected(e.to_string())),
        };
        self.checkin(pooled, dims, result.is_ok());
        result
    }

    fn checkout(&self, dims: Option<(usize, usize)>) -> Result<Pooled, DecodeError> {
        let mut st = self.state.lock().unwrap();
        loop {
            // 1. An idle decoder already set up for this size.
            if let Some(i) = st.idle.iter().position(|p| p.dims == dims) {
                st.busy.push(dims);
                return Ok(st.idle.swap_remove(i));
            }
            // 2. The decoder for this size is busy: wait for it.
            let size_is_busy = dims.is_some() && st.busy.contains(&dims);
            // 3. A new size (or never seen): one more decoder, if allowed.
            if !size_is_busy && st.total < self.max {
                st.total += 1;
                st.busy.push(dims);
                drop(st);
                return match Decoder::new() {
                    Ok(decoder) => Ok(Pooled {
                        decoder,
                        dims: None,
                    }),
                    Err(e) => {
                        let mut st = self.state.lock().unwrap();
                        st.total -= 1;
                        remove_one(&mut st.busy, &dims);
                        drop(st);
                        self.returned.notify_all();
                        Err(DecodeError::Init(e.to_string()))
                    }
                };
            }
            // 4. At the limit: re-purpose any idle decoder.
            if !size_is_busy {
                if let Some(p) = st.idle.pop() {
                    st.busy.push(dims);
                    return Ok(p);
                }
            }
            st = self.returned.wait(st).unwrap();
        }
    }

    fn checkin(&self, pooled: Pooled, lent_for: Option<(usize, usize)>, healthy: bool) {
        let mut st = self.state.lock().unwrap();
        remove_one(&mut st.busy, &lent_for);
        if healthy {
            st.idle.push(pooled);
        } else {
            st.total -= 1;
            drop(pooled);
        }
        drop(st);
        // Waiters wait for different sizes: wake them all to re-check.
        self.returned.notify_all();
    }
}

fn remove_one<T: PartialEq>(v: &mut Vec<T>, x: &T) {
    if let Some(i) = v.iter().position(|y| y == x) {
        v.swap_remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Pool growth without decoding anything: check out and return by hand.
    #[test]
    fn grows_per_resolution_not_per_request() {
        let pool = Arc::new(DecoderPool::new(2));
        let hd = Some((1920, 1080));
        let sub = Some((640, 360));
        let a = pool.checkout(hd).unwrap();
        // A second 1080p request waits for the first decoder instead of
        // creating another: it gets it once it is returned.
        let p2 = pool.clone();
        let waiter = std::thread::spawn(move || {
            let d = p2.checkout(hd).unwrap();
            p2.checkin(d, hd, true);
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(pool.decoders(), 1);
        // Another size gets its own decoder.
        let b = pool.checkout(sub).unwrap();
        assert_eq!(pool.decoders(), 2);
        pool.checkin(a, hd, true);
        waiter.join().unwrap();
        pool.checkin(b, sub, true);
        // At the limit, a third size re-purposes an idle decoder.
        let c = pool.checkout(Some((1280, 720))).unwrap();
        assert_eq!(pool.decoders(), 2);
        pool.checkin(c, Some((1280, 720)), false);
        assert_eq!(pool.decoders(), 1, "a failed decoder is dropped");
    }
}
