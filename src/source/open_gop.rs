//! Recovery-point I pictures relabelled as IDR pictures, so a decoder can
//! start on them.
//!
//! Why: cameras in "open GOP" (and some "smart codec") modes send one IDR
//! when a session starts and after that only non-IDR I pictures with a
//! recovery-point SEI. openh264 will not start decoding on a non-IDR picture
//! (it reports lost references, although an I picture has none), so such a
//! camera gave one still per connection. Every macroblock of an I slice is
//! intra coded: the same slice data decodes to the same picture when the
//! slice is labelled IDR. Only the slice header differs (NAL type 5, an
//! `idr_pic_id`, IDR reference marking, `frame_num` 0), so [`as_idr`]
//! rewrites those fields and copies the slice data bit for bit.
//!
//! What it refuses (and rtsnap then says the camera needs IDR keyframes):
//! P/B slices (periodic intra refresh has no I picture at all), slice groups
//! (FMO, Baseline-only and unused by cameras), SI slices, and headers it
//! cannot parse.

use h264_reader::nal::pps::PicParameterSet;
use h264_reader::nal::sps::{FrameMbsFlags, PicOrderCntType, SeqParameterSet};
use h264_reader::rbsp::{decode_nal, BitReader};

use super::bits::{Reader, Writer};
use crate::keyframe::{nal_type, nal_unit_type, nal_units};

/// Why an intra access unit cannot be relabelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRewritable {
    /// No SPS/PPS precedes the first slice.
    #[error("no SPS/PPS before the picture")]
    NoParameterSets,
    /// A parameter set did not parse.
    #[error("unreadable parameter set: {0}")]
    BadParameterSet(String),
    /// The slice refers to a PPS other than the one in the unit.
    #[error("slice refers to PPS {0}, which the unit does not carry")]
    OtherPps(u32),
    /// Slice groups (FMO).
    #[error("slice groups (FMO)")]
    SliceGroups,
    /// A slice that is not an I slice.
    #[error("not every slice is an I slice")]
    NotIntra,
    /// The slice header ended early or holds impossible values.
    #[error("slice header unreadable")]
    BadHeader,
}

/// Rewrites an Annex B access unit of SPS, PPS and non-IDR I slices into an
/// IDR access unit (SPS, PPS, IDR slices; SEI and AUD dropped).
pub fn as_idr(annexb: &[u8]) -> Result<Vec<u8>, NotRewritable> {
    let mut sps: Option<SeqParameterSet> = None;
    let mut pps: Option<PicParameterSet> = None;
    let mut out = Vec::with_capacity(annexb.len() + 64);
    let mut slices = 0;
    for nal in nal_units(annexb) {
        match nal_unit_type(nal) {
            nal_type::SPS => {
                let rbsp = decode_nal(nal).map_err(|e| bad_ps(&e))?;
                sps = Some(
                    SeqParameterSet::from_bits(BitReader::new(&rbsp[..]))
                        .map_err(|e| bad_ps(&format!("{e:?}")))?,
                );
                push_nal(&mut out, nal);
            }
            nal_type::PPS => {
                let Some(s) = &sps else {
                    return Err(NotRewritable::NoParameterSets);
                };
                let mut ctx = h264_reader::Context::default();
                ctx.put_seq_param_set(s.clone());
                let rbsp = decode_nal(nal).map_err(|e| bad_ps(&e))?;
                pps = Some(
                    PicParameterSet::from_bits(&ctx, BitReader::new(&rbsp[..]))
                        .map_err(|e| bad_ps(&format!("{e:?}")))?,
                );
                push_nal(&mut out, nal);
            }
            nal_type::SLICE_NON_IDR => {
                let (Some(s), Some(p)) = (&sps, &pps) else {
                    return Err(NotRewritable::NoParameterSets);
                };
                let rewritten = rewrite_slice(nal, s, p)?;
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(&rewritten);
                slices += 1;
            }
            nal_type::SLICE_IDR => return Err(NotRewritable::BadHeader),
            _ => {}
        }
    }
    if slices == 0 {
        return Err(NotRewritable::NotIntra);
    }
    Ok(out)
}

fn bad_ps(e: &dyn std::fmt::Display) -> NotRewritable {
    NotRewritable::BadParameterSet(e.to_string())
}

fn push_nal(out: &mut Vec<u8>, nal: &[u8]) {
    out.extend_from_slice(&[0, 0, 0, 1]);
    out.extend_from_slice(nal);
}

/// One non-IDR I slice NAL (header byte included) as an IDR slice NAL, with
/// emulation prevention.
fn rewrite_slice(
    nal: &[u8],
    sps: &SeqParameterSet,
    pps: &PicParameterSet,
) -> Result<Vec<u8>, NotRewritable> {
    use NotRewritable::BadHeader;
    if pps.slice_groups.is_some() {
        return Err(NotRewritable::SliceGroups);
    }
    let nal_ref_idc = (nal[0] >> 5) & 3;
    let rbsp = decode_nal(nal).map_err(|_| BadHeader)?;
    let mut r = Reader::new(&rbsp);
    let mut w = Writer::default();

    let first_mb = r.ue().ok_or(BadHeader)?;
    w.ue(first_mb);
    let slice_type = r.ue().ok_or(BadHeader)?;
    if slice_type % 5 != 2 {
        return Err(NotRewritable::NotIntra);
    }
    w.ue(slice_type);
    let pps_id = r.ue().ok_or(BadHeader)?;
    if pps_id != u32::from(pps.pic_parameter_set_id.id()) {
        return Err(NotRewritable::OtherPps(pps_id));
    }
    w.ue(pps_id);
    if sps.chroma_info.separate_colour_plane_flag {
        w.u(r.u(2).ok_or(BadHeader)?, 2);
    }
    let frame_num_bits = u32::from(sps.log2_max_frame_num());
    r.u(frame_num_bits).ok_or(BadHeader)?;
    w.u(0, frame_num_bits); // IDR pictures have frame_num 0
    let mut field_pic = false;
    if !matches!(sps.frame_mbs_flags, FrameMbsFlags::Frames) {
        field_pic = r.u(1).ok_or(BadHeader)? == 1;
        w.u(u32::from(field_pic), 1);
        if field_pic {
            w.u(r.u(1).ok_or(BadHeader)?, 1);
        }
    }
    w.ue(0); // idr_pic_id
    match sps.pic_order_cnt {
        PicOrderCntType::TypeZero {
            log2_max_pic_order_cnt_lsb_minus4,
        } => {
            let bits = u32::from(log2_max_pic_order_cnt_lsb_minus4) + 4;
            w.u(r.u(bits).ok_or(BadHeader)?, bits);
            if pps.bottom_field_pic_order_in_frame_present_flag && !field_pic {
                w.se(r.se().ok_or(BadHeader)?);
            }
        }
        PicOrderCntType::TypeOne {
            delta_pic_order_always_zero_flag: false,
            ..
        } => {
            w.se(r.se().ok_or(BadHeader)?);
            if pps.bottom_field_pic_order_in_frame_present_flag && !field_pic {
                w.se(r.se().ok_or(BadHeader)?);
            }
        }
        _ => {}
    }
    if pps.redundant_pic_cnt_present_flag {
        w.ue(r.ue().ok_or(BadHeader)?);
    }
    // I slices carry no reference-list syntax. Reference marking: read the
    // non-IDR form, write the IDR form (no_output_of_prior_pics_flag 0,
    // long_term_reference_flag 0); the output is always a reference picture.
    if nal_ref_idc != 0 && r.u(1).ok_or(BadHeader)? == 1 {
        // adaptive_ref_pic_marking_mode_flag: skip the MMCO list.
        for _ in 0..64 {
            let op = r.ue().ok_or(BadHeader)?;
            match op {
                0 => break,
                1 | 2 | 4 | 6 => {
                    r.ue().ok_or(BadHeader)?;
                }
                3 => {
                    r.ue().ok_or(BadHeader)?;
                    r.ue().ok_or(BadHeader)?;
                }
                5 => {}
                _ => return Err(BadHeader),
            }
        }
    }
    w.u(0, 2);
    w.se(r.se().ok_or(BadHeader)?); // slice_qp_delta
    if pps.deblocking_filter_control_present_flag {
        let idc = r.ue().ok_or(BadHeader)?;
        w.ue(idc);
        if idc != 1 {
            w.se(r.se().ok_or(BadHeader)?);
            w.se(r.se().ok_or(BadHeader)?);
        }
    }
    // slice_data(): CABAC starts byte aligned with alignment one-bits.
    if pps.entropy_coding_mode_flag {
        while r.pos % 8 != 0 {
            r.u(1).ok_or(BadHeader)?;
        }
        while w.bits % 8 != 0 {
            w.u(1, 1);
        }
    }
    // Copy up to the rbsp_stop_one_bit, then write a fresh one and align.
    let stop = r.last_one_bit().ok_or(BadHeader)?;
    if stop < r.pos {
        return Err(BadHeader);
    }
    w.copy_bits(&rbsp, r.pos, stop);
    w.u(1, 1);
    while w.bits % 8 != 0 {
        w.u(0, 1);
    }
    let header = (if nal_ref_idc == 0 { 3 } else { nal_ref_idc } << 5) | nal_type::SLICE_IDR;
    let mut nal_out = Vec::with_capacity(w.out.len() + w.out.len() / 64 + 1);
    nal_out.push(header);
    add_emulation_prevention(&w.out, &mut nal_out);
    Ok(nal_out)
}

/// Appends `rbsp` to `out` with an emulation prevention byte (0x03) wherever
/// two zero bytes would be followed by a byte <= 3.
fn add_emulation_prevention(rbsp: &[u8], out: &mut Vec<u8>) {
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_prevention_is_added() {
        let mut out = Vec::new();
        add_emulation_prevention(&[0, 0, 1, 0, 0, 0, 0, 0, 4], &mut out);
        assert_eq!(out, [0, 0, 3, 1, 0, 0, 3, 0, 0, 3, 0, 4]);
    }

    #[test]
    fn refuses_units_without_parameter_sets_or_slices() {
        // A non-IDR slice with nothing before it.
        assert_eq!(
            as_idr(&[0, 0, 0, 1, 0x41, 0x88, 0x84]),
            Err(NotRewritable::NoParameterSets)
        );
        assert_eq!(
            as_idr(&[0, 0, 0, 1, 0x09, 0x10]),
            Err(NotRewritable::NotIntra)
        );
    }
}
