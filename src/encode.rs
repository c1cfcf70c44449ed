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
//! out (grey blacks, dull colours). The range is expanded with a fixed-point
//! multiply per sample while the rows are handed to the encoder (written so
//! the compiler vectorises it: ~0.2 ms for a 1080p picture with AVX2, where
//! a lookup table, one load per byte, took ~1 ms); streams that signal full range in
//! their SPS are copied as they are.

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
            let (luma, chroma) = Range::of(pic.full_range);
            let [sy, su, sv] = scratch;
            expand(pic.y, pic.y_stride, w, h, 2 * cw, 2 * ch, luma, sy);
            expand(pic.u, pic.uv_stride, cw, ch, cw, ch, chroma, su);
            expand(pic.v, pic.uv_stride, cw, ch, cw, ch, chroma, sv);
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

/// Copies a `w` x `h` plane through `range` into a packed `pw` x `ph` buffer,
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
    range: Range,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize(pw * ph, 0);
    for (row, dst) in out.chunks_exact_mut(pw).enumerate() {
        let line = &src[row.min(h - 1) * stride..][..w];
        let (body, pad) = dst.split_at_mut(w);
        range.map(line, body);
        let last = body[w - 1];
        pad.fill(last);
    }
}

/// Encodes with the pure-Rust `jpeg-encoder`, feeding it rows straight from
/// the planes (range-expanded on the fly).
pub fn encode_jpeg_rust(pic: &Yuv420<'_>, quality: u8) -> Result<Vec<u8>, EncodeError> {
    check(pic)?;
    let (w, h) = (pic.width, pic.height);
    let src = Planes {
        pic,
        ranges: Range::of(pic.full_range),
    };
    // A 1080p still at q80 is 150-400 kB; start with a guess to avoid regrowth.
    let mut out = Vec::with_capacity(w * h / 6);
    let mut enc = Encoder::new(&mut out, quality.clamp(1, 100));
    enc.set_sampling_factor(SamplingFactor::R_4_2_0);
    enc.encode_image(src)
        .map_err(|e| EncodeError::Encoder(e.to_string()))?;
    Ok(out)
}

/// A map from the stream's sample range to JPEG's full range, as
/// `clamp((sample * mul + add) >> 16)`: fixed point with 16 fraction bits
/// (exact to within rounding for 8-bit samples), no table, so that a loop
/// over a row becomes SIMD code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    mul: i32,
    add: i32,
}

impl Range {
    /// Leaves full-range samples as they are.
    const IDENTITY: Range = Range {
        mul: 1 << 16,
        add: 0,
    };
    /// BT.601 limited-range luma, 16..235 -> 0..255 (255 / 219 = 1.16438).
    const LUMA: Range = Range {
        mul: 76_309,
        add: -16 * 76_309 + (1 << 15),
    };
    /// BT.601 limited-range chroma, 16..240 -> 0..255 around 128
    /// (255 / 224 = 1.13839).
    const CHROMA: Range = Range {
        mul: 74_605,
        add: -128 * 74_605 + (128 << 16) + (1 << 15),
    };

    /// (luma, chroma) maps for a stream of this range.
    fn of(full_range: bool) -> (Range, Range) {
        if full_range {
            (Range::IDENTITY, Range::IDENTITY)
        } else {
            (Range::LUMA, Range::CHROMA)
        }
    }

    /// One sample. Limited-range streams do overshoot (sensor noise), hence
    /// the clamp.
    #[inline(always)]
    fn apply(self, s: u8) -> u8 {
        ((s as i32 * self.mul + self.add) >> 16).clamp(0, 255) as u8
    }

    /// Maps `src` into `dst` (same length). The loop vectorises wherever
    /// the CPU multiplies 32-bit lanes: always on aarch64 (NEON), on x86_64
    /// only with SSE4.1/AVX2, which the baseline x86_64 target may not
    /// assume, hence the AVX2 copy picked at run time.
    fn map(self, src: &[u8], dst: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.map_avx2(src, dst) };
        }
        self.map_loop(src, dst)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn map_avx2(self, src: &[u8], dst: &mut [u8]) {
        self.map_loop(src, dst)
    }

    #[inline(always)]
    fn map_loop(self, src: &[u8], dst: &mut [u8]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = self.apply(s);
        }
    }
}

/// Feeds the encoder rows straight from the decoder's planes.
struct Planes<'p, 'a> {
    pic: &'p Yuv420<'a>,
    /// (luma, chroma)
    ranges: (Range, Range),
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
        let (luma, chroma) = self.ranges;
        let y = &p.y[row * p.y_stride..][..w];
        let start = buffers[0].len();
        buffers[0].resize(start + w, 0);
        luma.map(y, &mut buffers[0][start..]);
        // The encoder wants full-resolution chroma rows and subsamples them
        // itself; repeating each sample makes its 2x2 average exact.
        let crow = row / 2;
        let cw = w.div_ceil(2);
        for (plane, buf) in [(p.u, 1), (p.v, 2)] {
            let c = &plane[crow * p.uv_stride..][..cw];
            let out = &mut buffers[buf];
            out.reserve(w);
            for &s in c {
                let m = chroma.apply(s);
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

    /// The fixed-point maps agree with the exact formula (rounded, clamped)
    /// for every 8-bit sample.
    #[test]
    fn range_maps_match_the_exact_formula() {
        for i in 0..=255u8 {
            let exact = |v: f64| v.round().clamp(0.0, 255.0) as u8;
            let y = exact((i as f64 - 16.0) * 255.0 / 219.0);
            let c = exact((i as f64 - 128.0) * 255.0 / 224.0 + 128.0);
            assert_eq!(Range::LUMA.apply(i), y, "luma {i}");
            assert_eq!(Range::CHROMA.apply(i), c, "chroma {i}");
            assert_eq!(Range::IDENTITY.apply(i), i);
        }
        let src: Vec<u8> = (0..=255).collect();
        let mut dst = vec![0; 256];
        Range::LUMA.map(&src, &mut dst);
        assert_eq!(dst[16], 0);
        assert_eq!(dst[235], 255);
    }

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
        let full = Yuv420 {
            full_range: true,
            ..pic
        };
        // Both encoders, whichever one this build uses by default.
        type Encode = fn(&Yuv420<'_>, u8) -> Result<Vec<u8>, EncodeError>;
        for (name, encode) in [
            ("default", encode_jpeg as Encode),
            ("jpeg-encoder", encode_jpeg_rust as Encode),
        ] {
            let img = image::load_from_memory(&encode(&pic, 90).unwrap())
                .unwrap()
                .into_rgb8();
            assert_eq!((img.width(), img.height()), (33, 17), "{name}");
            for p in img.pixels() {
                assert!(
                    p.0.iter().all(|&v| v <= 2),
                    "{name}: black came out as {:?}",
                    p.0
                );
            }
            let img = image::load_from_memory(&encode(&full, 90).unwrap())
                .unwrap()
                .into_rgb8();
            assert!(
                img.pixels()
                    .all(|p| p.0.iter().all(|&v| (14..=18).contains(&v))),
                "{name}: full-range input was changed"
            );
        }
    }
}
