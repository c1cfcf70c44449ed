//! The keyframe stage: what the source keeps and the decoder gets.
//!
//! rtsnap never decodes a P- or B-frame. An IP camera sends an IDR access unit
//! every GOP (typically 1-4 s); it decodes on its own, without reference
//! frames, so the source keeps only the newest complete one and throws every
//! other frame away unread. This module holds that unit ([`Keyframe`]) and
//! inspects it *before* it reaches the decoder: it must carry an SPS, a PPS
//! and IDR slices, and its SPS tells the size, whether it is interlaced (which
//! openh264 refuses) and whether the camera sends full-range YUV (which the
//! JPEG stage needs to know to get colours right).

use std::time::SystemTime;

use bytes::Bytes;
use h264_reader::nal::sps::{ChromaFormat, FrameMbsFlags, SeqParameterSet};
use h264_reader::rbsp::{decode_nal, BitReader};

/// NAL unit types used here (ITU-T H.264 table 7-1).
pub(crate) mod nal_type {
    pub const SLICE_NON_IDR: u8 = 1;
    pub const SLICE_IDR: u8 = 5;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
}

/// One complete IDR access unit in Annex B form, SPS and PPS included.
#[derive(Clone, Debug)]
pub struct Keyframe {
    /// Annex B bytes: start codes, SPS, PPS, IDR slices.
    pub data: Bytes,
    /// Wall-clock time its last packet arrived: the still's capture time.
    pub received_at: SystemTime,
    /// Counts keyframes of one camera, so the scheduler can tell "newer than
    /// the last still" without comparing bytes.
    pub seq: u64,
}

/// What the SPS of a keyframe says, read without decoding a pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyframeInfo {
    /// Display width in pixels (after cropping).
    pub width: u32,
    /// Display height in pixels (after cropping).
    pub height: u32,
    /// `profile_idc` (66 Baseline, 77 Main, 100 High, ...).
    pub profile_idc: u8,
    /// Field-coded (interlaced) stream; openh264 cannot decode these.
    pub interlaced: bool,
    /// Bits per luma sample (8 for all but High 10 and up).
    pub bit_depth: u8,
    /// Chroma subsampling other than 4:2:0 (4:2:2, 4:4:4, monochrome), by name.
    pub chroma: Option<&'static str>,
    /// The VUI says samples use the full 0-255 range (common on IP cameras,
    /// "yuvj420p"); otherwise they are limited 16-235 as in broadcast video.
    pub full_range: bool,
}

/// Why an access unit cannot become a still.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyframeError {
    /// No SPS NAL in the access unit.
    #[error("the keyframe carries no SPS (sequence parameter set)")]
    NoSps,
    /// No PPS NAL in the access unit.
    #[error("the keyframe carries no PPS (picture parameter set)")]
    NoPps,
    /// No IDR slice, or a non-IDR slice mixed in.
    #[error("the access unit is not a complete IDR picture")]
    NotIdr,
    /// The SPS does not parse.
    #[error("the SPS is corrupt: {0}")]
    BadSps(String),
    /// An MJPEG frame that is not a readable JPEG.
    #[error("the MJPEG frame is not a valid JPEG (no SOI/SOF marker)")]
    BadJpeg,
    /// A profile openh264 does not decode (High 10, 4:2:2, 4:4:4).
    #[error(
        "the stream is H.264 {0}, which rtsnap's decoder (openh264) cannot decode; set the \
         camera to H.264 High/Main with 8-bit 4:2:0 (or use its substream)"
    )]
    UnsupportedProfile(String),
    /// Field coding, which openh264 does not implement.
    #[error(
        "the stream is interlaced (field-coded H.264), which rtsnap's decoder (openh264) cannot \
         decode; set the camera to progressive scan"
    )]
    Interlaced,
}

/// Splits Annex B bytes into NAL units (without start codes). Accepts 3- and
/// 4-byte start codes and ignores leading garbage and trailing zero bytes.
pub fn nal_units(annexb: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = find_start(annexb, 0).map(|(_, end)| end);
    std::iter::from_fn(move || {
        let start = pos?;
        let (nal_end, next) = match find_start(annexb, start) {
            Some((s, e)) => (s, Some(e)),
            None => (annexb.len(), None),
        };
        pos = next;
        let mut nal = &annexb[start..nal_end];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        Some(nal)
    })
    .filter(|n| !n.is_empty())
}

/// Finds the next `00 00 01` at or after `from`; returns (start of the start
/// code, including a preceding zero of a 4-byte code, and the index after it).
fn find_start(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 3 <= data.len() {
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            let s = if i > from && data[i - 1] == 0 {
                i - 1
            } else {
                i
            };
            return Some((s, i + 3));
        } else {
            i += 1;
        }
    }
    None
}

/// The NAL unit type of a NAL (low 5 bits of its first byte).
pub fn nal_unit_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Parses an SPS NAL (header byte included).
pub fn parse_sps(nal: &[u8]) -> Result<KeyframeInfo, KeyframeError> {
    let rbsp = decode_nal(nal).map_err(|e| KeyframeError::BadSps(e.to_string()))?;
    let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..]))
        .map_err(|e| KeyframeError::BadSps(format!("{e:?}")))?;
    let (width, height) = sps
        .pixel_dimensions()
        .map_err(|e| KeyframeError::BadSps(format!("{e:?}")))?;
    let full_range = sps
        .vui_parameters
        .as_ref()
        .and_then(|v| v.video_signal_type.as_ref())
        .is_some_and(|s| s.video_full_range_flag);
    let chroma = match sps.chroma_info.chroma_format {
        ChromaFormat::YUV420 => None,
        ChromaFormat::Monochrome => Some("4:0:0 (monochrome)"),
        ChromaFormat::YUV422 => Some("4:2:2"),
        ChromaFormat::YUV444 => Some("4:4:4"),
        ChromaFormat::Invalid(_) => Some("with an invalid chroma format"),
    };
    Ok(KeyframeInfo {
        width,
        height,
        profile_idc: u8::from(sps.profile_idc),
        interlaced: !matches!(sps.frame_mbs_flags, FrameMbsFlags::Frames),
        bit_depth: 8 + sps
            .chroma_info
            .bit_depth_luma_minus8
            .max(sps.chroma_info.bit_depth_chroma_minus8),
        chroma,
        full_range,
    })
}

impl KeyframeInfo {
    /// Why openh264 cannot decode this stream, if it cannot: read from the
    /// SPS once, so the camera gets one clear "unsupported" instead of a
    /// decoder error per keyframe.
    pub fn unsupported(&self) -> Option<KeyframeError> {
        if self.interlaced {
            return Some(KeyframeError::Interlaced);
        }
        if self.bit_depth > 8 || self.chroma.is_some() {
            let mut what = match self.profile_idc {
                110 => "High 10".to_owned(),
                122 => "High 4:2:2".to_owned(),
                244 => "High 4:4:4".to_owned(),
                p => format!("profile {p}"),
            };
            if self.bit_depth > 8 {
                what += &format!(", {}-bit", self.bit_depth);
            }
            if let Some(c) = self.chroma {
                what += &format!(", {c}");
            }
            return Some(KeyframeError::UnsupportedProfile(what));
        }
        None
    }
}

/// What the (first) SPS of an access unit says, without the checks of
/// [`inspect`]: for reports, which should name a profile rtsnap refuses.
pub fn parse_keyframe_sps(annexb: &[u8]) -> Result<KeyframeInfo, KeyframeError> {
    let sps = nal_units(annexb)
        .find(|n| nal_unit_type(n) == nal_type::SPS)
        .ok_or(KeyframeError::NoSps)?;
    parse_sps(sps)
}

/// Checks that `annexb` is a complete IDR access unit a decoder can start
/// from and returns what its SPS says.
pub fn inspect(annexb: &[u8]) -> Result<KeyframeInfo, KeyframeError> {
    let (mut sps, mut pps, mut idr, mut non_idr) = (None, false, false, false);
    for nal in nal_units(annexb) {
        match nal_unit_type(nal) {
            nal_type::SPS if sps.is_none() => sps = Some(nal),
            nal_type::PPS => pps = true,
            nal_type::SLICE_IDR => idr = true,
            nal_type::SLICE_NON_IDR => non_idr = true,
            _ => {}
        }
    }
    let info = parse_sps(sps.ok_or(KeyframeError::NoSps)?)?;
    if !pps {
        return Err(KeyframeError::NoPps);
    }
    if !idr || non_idr {
        return Err(KeyframeError::NotIdr);
    }
    if let Some(e) = info.unsupported() {
        return Err(e);
    }
    Ok(info)
}

/// Width and height of a JPEG file, read from its SOF marker; `None` if
/// `data` is not a JPEG. Used for MJPEG cameras, whose frames are stills
/// already and are passed through without decoding.
pub fn jpeg_dimensions(data: &[u8]) -> Option<(u32, u32)> {
    if data.get(..2)? != [0xff, 0xd8] {
        return None;
    }
    let mut i = 2;
    loop {
        // Markers may be preceded by any number of 0xff fill bytes.
        while *data.get(i)? == 0xff && *data.get(i + 1)? == 0xff {
            i += 1;
        }
        if *data.get(i)? != 0xff {
            return None;
        }
        let marker = *data.get(i + 1)?;
        let len = u16::from_be_bytes([*data.get(i + 2)?, *data.get(i + 3)?]) as usize;
        let is_sof = (0xc0..=0xcf).contains(&marker) && ![0xc4, 0xc8, 0xcc].contains(&marker);
        if is_sof {
            let h = u16::from_be_bytes([*data.get(i + 5)?, *data.get(i + 6)?]);
            let w = u16::from_be_bytes([*data.get(i + 7)?, *data.get(i + 8)?]);
            return (w > 0 && h > 0).then_some((w as u32, h as u32));
        }
        if marker == 0xda || len < 2 {
            return None; // start of scan before any SOF, or a broken length
        }
        i += 2 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let data = [
            0xff, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 0, 0, 3, 1, 0, 0,
        ];
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(
            nals,
            [&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 0, 0, 3, 1][..]]
        );
        assert_eq!(nal_units(&[]).count(), 0);
        assert_eq!(nal_units(&[0, 0, 1]).count(), 0);
    }

    #[test]
    fn reads_jpeg_size() {
        let img = image::RgbImage::new(37, 21);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&img)
            .unwrap();
        assert_eq!(jpeg_dimensions(&jpeg), Some((37, 21)));
        assert_eq!(jpeg_dimensions(&jpeg[..20]), None);
        assert_eq!(jpeg_dimensions(b"\xff\xd8\xff"), None);
        assert_eq!(jpeg_dimensions(b"GIF89a"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(inspect(b"not h264 at all"), Err(KeyframeError::NoSps));
        assert!(matches!(
            inspect(&[0, 0, 0, 1, 0x67, 0xff, 0xff]),
            Err(KeyframeError::BadSps(_))
        ));
    }
}
