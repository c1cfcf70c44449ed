//! The encode stage: a decoded 4:2:0 picture becomes a baseline JPEG.
//!
//! The decoder already gives us Y, Cb and Cr planes, which is exactly what a
//! JPEG stores, so there is no RGB step: the planes go straight into the JPEG
//! encoder, subsampled 4:2:0 like the source, so no chroma detail is invented
//! or lost. Two encoders are built in:
//!
//! * libjpeg-turbo (cargo feature `turbojpeg`), fed the planes directly; the
//!   fastest by far (a few ms at 1080p, SIMD on x86 and ARM);
//! * `jpeg-encoder`, pure Rust (AVX2 when the CPU has it), which needs no C
//!   toolchain beyond what openh264 already needs. Used without the feature.
//!
//! One thing does need converting: JPEG (JFIF) means *full-range* samples
//! (0-255), while most H.264 streams are *limited-range* (luma 16-235, chroma
//! 16-240). Copying limited-range planes into a JPEG would wash the picture
//! out (grey blacks, dull colours). The range is expanded with a lookup table
//! per plane while the rows are handed to the encoder; streams that signal
//! full range in their SPS are copied as they are.

use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, SamplingFactor};

use crate::decode::Yuv420;

/// Why a picture could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// JPEG cannot hold pictures wider or taller than 65535 pixels.
    #[error("picture of {0}x{1} is too large for JPEG")]
    TooLarge(usize, usize),
    /// The planes are smaller than width, height and stride imply.
    #[error("decoded planes are smaller than their size says")]
    ShortPlanes,
    /// The encoder failed.
    #[error("JPEG encoder failed: {0}")]
    Encoder(String),
}

/// Encodes `pic` as a JPEG of the given quality (1-100), 4:2:0, with the
/// fastest encoder this build has.
pub fn encode_jpeg(pic: &Yuv420<'_>, quality: u8) -> Result<Vec<u8>, EncodeError> {
    #[cfg(feature = "turbojpeg")]
    return encode_jpeg_turbo(pic, quality);
    #[cfg(not(feature = "turbojpeg"))]
    return encode_jpeg_rust(pic, quality);
}

fn check(pic: &Yuv420<'_>) -> Result<(), EncodeError> {
    let (w, h) = (pic.width, pic.height);
    if w == 0 || h == 0 || w > u16::MAX as usize || h > u16::MAX as usize {
        return Err(EncodeError::TooLarge(w, h));
    }
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    if pic.y_stride < w
        || pic.uv_stride < cw
        || pic.y.len() < pic.y_stride * (h - 1) + w
        || pic.u.len() < pic.uv_stride * (ch - 1) + cw
        || pic.v.len() < pic.uv_stride * (ch - 1) + cw
    {
        return Err(EncodeError::ShortPlanes);
    }
    Ok(())
}

/// Encodes with libjpeg-turbo. Limited-range planes are first expanded into
/// scratch planes (about 1 ms at 1080p); full-range ones go in as they are.
#[cfg(feature = "turbojpeg")]
pub fn encode_jpeg_turbo(pic: &Yuv420<'_>, quality: u8) -> Result<Vec<u8>, EncodeError> {
    use std::sync::Mutex;
    check(pic)?;
    let (w, h) = (pic.width, pic.height);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    type State = (turbojpeg::Compressor, [Vec<u8>; 3]);
    // Compressors with their scratch planes (3 MB at 1080p), reused: as
    // many exist as stills were ever encoded at once, which the decoder
    // pool bounds. (Per-thread state would keep one per blocking thread.)
    static IDLE: Mutex<Vec<State>> = Mutex::new(Vec::new());
    let err = |e: turbojpeg::Error| EncodeError::Encoder(e.to_string());
    let taken = IDLE.lock().unwrap().pop();
    let mut state = match taken {
        Some(s) => s,
        None => (
            turbojpeg::Compressor::new().map_err(err)?,
            Default::default(),
        ),
    };
    let result = (|| {
        let (compressor, scratch) = &mut state;
        compressor
            .set_quality(quality.clamp(1, 100) as i32)
            .map_err(err)?;
        // libjpeg-turbo wants the luma plane padded to whole chroma samples
        // (even width and height); odd sizes and limited range go through
        // scratch planes, the common case (even, full range) goes in as is.
        let (y, u, v, ys, cs) = if pic.full_range && w % 2 == 0 && h % 2 == 0 {
            (pic.y, pic.u, pic.v, pic.y_stride, pic.uv_stride)
        } else {
            let luts = RangeLuts::new(pic.full_range);
            let [sy, su, sv] = scratch;
            expand(pic.y, pic.y_stride, w, h, 2 * cw, 2 * ch, &luts.luma, sy);
            expand(pic.u, pic.uv_stride, cw, ch, cw, ch, &luts.chroma, su);
            expand(pic.v, pic.uv_stride, cw, ch, cw, ch, &luts.chroma, sv);
            (&sy[..], &su[..], &sv[..], 2 * cw, cw)
        };
        let image = turbojpeg::YuvPlanesImage {
            y_plane: y,
            u_plane: u,
            v_plane: v,
            width: w,
            height: h,
            y_stride: ys,
            u_stride: cs,
            v_stride: cs,
            subsamp: turbojpeg::Subsamp::Sub2x2,
        };
        Ok(compressor
            .compress_yuv_planes_to_owned(&image)
            .map_err(err)?
            .to_vec())
    })();
    IDLE.lock().unwrap().push(state);
    result
}

/// Copies a `w` x `h` plane through `lut` into a packed `pw` x `ph` buffer,
/// repeating the last column and row into the padding.
#[cfg(feature = "turbojpeg")]
#[allow(clippy::too_many_arguments)]
fn expand(
    src: &[u8],
    stride: usize,
    w: usize,
    h: usize,
    pw: usize,
    ph: usize,
    lut: &[u8; 256],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.reserve(pw * ph);
    for row in 0..ph {
        let line = &src[row.min(h - 1) * stride..][..w];
        out.extend(line.iter().map(|&s| lut[s as usize]));
        let last = lut[line[w - 1] as usize];
        out.extend(std::iter::repeat_n(last, pw - w));
    }
}

/// Encodes with the pure-Rust `jpeg-encoder`, feeding it rows straight from
/// the planes (range-expanded on the fly).
pub fn encode_jpeg_rust(pic: &Yuv420<'_>, quality: u8) -> Result<Vec<u8>, EncodeError> {
    check(pic)?;
    let (w, h) = (pic.width, pic.height);
    let src = Planes {
        pic,
        luts: RangeLuts::new(pic.full_range),
    };
    // A 1080p still at q80 is 150-400 kB; start with a guess to avoid regrowth.
    let mut out = Vec::with_capacity(w * h / 6);
    let mut enc = Encoder::new(&mut out, quality.clamp(1, 100));
    enc.set_sampling_factor(SamplingFactor::R_4_2_0);
    enc.encode_image(src)
        .map_err(|e| EncodeError::Encoder(e.to_string()))?;
    Ok(out)
}

/// Per-plane maps from the stream's sample range to JPEG's full range.
struct RangeLuts {
    luma: [u8; 256],
    chroma: [u8; 256],
}

impl RangeLuts {
    fn new(full_range: bool) -> Self {
        let mut luma = [0u8; 256];
        let mut chroma = [0u8; 256];
        for i in 0..256 {
            if full_range {
                luma[i] = i as u8;
                chroma[i] = i as u8;
            } else {
                // BT.601 limited range: Y 16..235 -> 0..255, C 16..240 -> 0..255
                // around 128. Rounded, clamped (sensors do overshoot).
                let y = (i as f32 - 16.0) * 255.0 / 219.0;
                let c = (i as f32 - 128.0) * 255.0 / 224.0 + 128.0;
                luma[i] = y.round().clamp(0.0, 255.0) as u8;
                chroma[i] = c.round().clamp(0.0, 255.0) as u8;
            }
        }
        RangeLuts { luma, chroma }
    }
}

/// Feeds the encoder rows straight from the decoder's planes.
struct Planes<'p, 'a> {
    pic: &'p Yuv420<'a>,
    luts: RangeLuts,
}

impl ImageBuffer for Planes<'_, '_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.pic.width as u16
    }

    fn height(&self) -> u16 {
        self.pic.height as u16
    }

    fn fill_buffers(&self, row: u16, buffers: &mut [Vec<u8>; 4]) {
        let p = self.pic;
        let w = p.width;
        let row = row as usize;
        let y = &p.y[row * p.y_stride..][..w];
        buffers[0].extend(y.iter().map(|&s| self.luts.luma[s as usize]));
        // The encoder wants full-resolution chroma rows and subsamples them
        // itself; repeating each sample makes its 2x2 average exact.
        let crow = row / 2;
        let cw = w.div_ceil(2);
        for (plane, buf) in [(p.u, 1), (p.v, 2)] {
            let c = &plane[crow * p.uv_stride..][..cw];
            let out = &mut buffers[buf];
            out.reserve(w);
            for &s in c {
                let m = self.luts.chroma[s as usize];
                out.push(m);
                out.push(m);
            }
            out.truncate(out.len() - (2 * cw - w));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flat limited-range picture must come out as the matching full-range
    /// colour: the test that catches washed-out stills.
    #[test]
    fn limited_range_is_expanded() {
        let (w, h) = (33, 17); // odd sizes exercise the edge handling
        let y = vec![16u8; w * h]; // limited-range black
        let c = vec![128u8; w.div_ceil(2) * h.div_ceil(2)];
        let pic = Yuv420 {
            width: w,
            height: h,
            y: &y,
            u: &c,
            v: &c,
            y_stride: w,
            uv_stride: w.div_ceil(2),
            full_range: false,
        };
        let jpeg = encode_jpeg(&pic, 90).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap().into_rgb8();
        assert_eq!((img.width(), img.height()), (33, 17));
        for p in img.pixels() {
            assert!(p.0.iter().all(|&v| v <= 2), "black came out as {:?}", p.0);
        }
        let full = Yuv420 {
            full_range: true,
            ..pic
        };
        let img = image::load_from_memory(&encode_jpeg(&full, 90).unwrap())
            .unwrap()
            .into_rgb8();
        assert!(img
            .pixels()
            .all(|p| p.0.iter().all(|&v| (14..=18).contains(&v))));
    }
}
