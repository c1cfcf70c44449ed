//! Our own H.264 RTP depacketizer (RFC 6184), keyframes only.
//!
//! retina's depacketizer is thorough but strict in ways real cameras break,
//! and it has no bound of its own:
//!
//! * **Joining a running stream.** A live555 camera that someone else is
//!   already watching starts our session at whatever packet is next, usually
//!   the middle of an FU-A. retina ends the stream there ("FU-A has start bit
//!   unset while no frag in progress"); we drop continuation fragments until a
//!   NAL starts and mark that access unit incomplete, so it is never decoded.
//! * **Memory.** An access unit that never ends (no marker, same timestamp,
//!   an RTCP report every second keeping the session "alive") grew retina's
//!   buffers without limit. Here one access unit is capped
//!   ([`Depacketizer::new`]'s `max_access_unit`); past it the unit is dropped
//!   and counted, and nothing is buffered until the next one starts.
//! * **Work.** rtsnap only ever decodes keyframes, so only an access unit
//!   whose first slice is intra is assembled; P- and B-frames are counted
//!   (for fps and bitrate) and never copied.
//! * **Parameter sets.** SPS/PPS come in band or from the SDP's
//!   `sprop-parameter-sets`, parsed here tolerantly (a trailing `;`, as VLC
//!   writes, is not an error). Every keyframe handed out carries them, in
//!   Annex B, which is what openh264 takes.
//!
//! Packet loss (a gap in RTP sequence numbers, which retina reports per
//! packet) marks the access unit in progress as damaged: a keyframe with
//! holes is never handed out, it would smear.

use base64::Engine as _;

use crate::keyframe::nal_type;

/// NAL types of RTP payload structures (RFC 6184 section 5.2).
mod payload_type {
    pub const STAP_A: u8 = 24;
    pub const FU_A: u8 = 28;
}

/// SEI, access unit delimiter: kept with a keyframe, small.
const NAL_SEI: u8 = 6;
const NAL_AUD: u8 = 9;

/// Parameter sets larger than this are garbage, not H.264.
const MAX_PARAMETER_SET: usize = 4096;

/// What kind of intra picture a keyframe is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// An IDR picture: any decoder starts here.
    Idr,
    /// A non-IDR picture whose slices are all intra (open GOP, recovery
    /// point): complete by itself, but it does not reset the decoder.
    Intra,
}

/// One complete intra access unit in Annex B, parameter sets first.
#[derive(Debug)]
pub struct KeyAccessUnit {
    /// Annex B bytes (4-byte start codes): SPS, PPS, then the picture.
    pub data: Vec<u8>,
    /// IDR or another intra picture.
    pub kind: KeyKind,
    /// RTP timestamp (90 kHz).
    pub rtp_timestamp: u32,
    /// The SPS or PPS changed since the previous keyframe.
    pub new_parameters: bool,
}

impl KeyAccessUnit {
    /// The unit as one a decoder can start on: an IDR as it is; a
    /// recovery-point I picture relabelled as IDR (see
    /// [`open_gop`](super::open_gop)), or why that cannot be done.
    pub fn startable(mut self) -> Result<KeyAccessUnit, super::open_gop::NotRewritable> {
        if self.kind == KeyKind::Intra {
            self.data = super::open_gop::as_idr(&self.data)?;
        }
        Ok(self)
    }
}

/// What one finished access unit was.
#[derive(Debug)]
pub enum Unit {
    /// A complete keyframe.
    Key(KeyAccessUnit),
    /// A picture that is not a keyframe: counted, never kept.
    Other {
        /// Payload bytes received for it.
        bytes: usize,
    },
    /// An access unit with lost packets or a missing start; thrown away.
    Damaged {
        /// It would have been a keyframe.
        keyframe: bool,
        /// Payload bytes received for it.
        bytes: usize,
    },
    /// An access unit larger than the cap; thrown away.
    Oversized {
        /// Bytes received before it was dropped.
        bytes: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// No slice seen yet: small NALs (SPS, PPS, SEI) are kept.
    Unknown,
    /// The first slice is intra: assemble.
    Key(KeyKind),
    /// The first slice is inter: count bytes, keep nothing.
    Skip,
}

/// The access unit being received.
struct Current {
    timestamp: u32,
    class: Class,
    /// NALs in Annex B, for Unknown and Key units.
    buf: Vec<u8>,
    /// The NAL being reassembled from FU-A fragments (header included).
    fu: Option<Vec<u8>>,
    /// The fragments of `fu` belong to a picture that is skipped: only
    /// counted, not copied.
    fu_skip: bool,
    bytes: usize,
    damaged: bool,
    oversized: bool,
    has_sps: bool,
    has_pps: bool,
}

impl Current {
    fn new(timestamp: u32) -> Self {
        Current {
            timestamp,
            class: Class::Unknown,
            buf: Vec::new(),
            fu: None,
            fu_skip: false,
            bytes: 0,
            damaged: false,
            oversized: false,
            has_sps: false,
            has_pps: false,
        }
    }
}

/// Turns a video stream's RTP packets into keyframes; see the module doc.
pub struct Depacketizer {
    max_access_unit: usize,
    current: Option<Current>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    params_changed: bool,
    done: std::collections::VecDeque<Unit>,
}

impl Depacketizer {
    /// A depacketizer for a stream whose SDP `fmtp` is `fmtp` (may be
    /// absent or broken: in-band parameter sets work too). An access unit
    /// over `max_access_unit` bytes is dropped.
    pub fn new(fmtp: Option<&str>, max_access_unit: usize) -> Self {
        let mut d = Depacketizer {
            max_access_unit,
            current: None,
            sps: None,
            pps: None,
            params_changed: false,
            done: Default::default(),
        };
        for nal in fmtp.map(sprop_parameter_sets).unwrap_or_default() {
            d.remember_parameter_set(&nal);
        }
        d.params_changed = false;
        d
    }

    /// The SPS in force, if any (header byte included).
    pub fn sps(&self) -> Option<&[u8]> {
        self.sps.as_deref()
    }

    /// Feeds one RTP packet. `loss` is how many packets were lost just
    /// before it. Finished access units are returned by [`Self::pull`].
    pub fn push(&mut self, timestamp: u32, mark: bool, loss: u16, payload: &[u8]) {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.timestamp != timestamp)
        {
            // A new timestamp ends the previous unit even without a marker.
            self.finish();
        }
        let cur = self.current.get_or_insert_with(|| Current::new(timestamp));
        cur.bytes += payload.len();
        if loss > 0 {
            cur.damaged = true;
            cur.fu = None;
        }
        let Some(&header) = payload.first() else {
            cur.damaged = true;
            return self.end_if(mark);
        };
        match header & 0x1f {
            1..=23 => self.nal(payload),
            payload_type::STAP_A => {
                let mut rest = &payload[1..];
                while rest.len() >= 2 {
                    let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                    if len == 0 || rest.len() < 2 + len {
                        self.current.as_mut().expect("set").damaged = true;
                        break;
                    }
                    let nal = &rest[2..2 + len];
                    self.nal(nal);
                    rest = &rest[2 + len..];
                }
            }
            payload_type::FU_A => self.fragment(header, &payload[1..]),
            // STAP-B, MTAP and FU-B belong to interleaved mode, which no
            // camera uses with RTSP; 0 and 30-31 are reserved.
            _ => self.current.as_mut().expect("set").damaged = true,
        }
        self.end_if(mark);
    }

    /// The next finished access unit, if any.
    pub fn pull(&mut self) -> Option<Unit> {
        self.done.pop_front()
    }

    fn end_if(&mut self, mark: bool) {
        if mark {
            self.finish();
        }
    }

    fn fragment(&mut self, indicator: u8, rest: &[u8]) {
        let cur = self.current.as_mut().expect("set");
        let Some((&fu_header, data)) = rest.split_first() else {
            cur.damaged = true;
            return;
        };
        let (start, end) = (fu_header & 0x80 != 0, fu_header & 0x40 != 0);
        if start {
            if cur.fu.is_some() {
                // The previous NAL never got its end fragment.
                cur.damaged = true;
            }
            let nal_header = (indicator & 0xe0) | (fu_header & 0x1f);
            let t = nal_header & 0x1f;
            if cur.class == Class::Unknown
                && (t == nal_type::SLICE_IDR || t == nal_type::SLICE_NON_IDR)
            {
                let mut prefix = Vec::with_capacity(1 + data.len().min(16));
                prefix.push(nal_header);
                prefix.extend_from_slice(&data[..data.len().min(16)]);
                classify(cur, t, &prefix);
            }
            cur.fu_skip = cur.class == Class::Skip || cur.oversized;
            let mut nal = Vec::new();
            nal.push(nal_header);
            if !cur.fu_skip {
                nal.reserve(data.len() * 8);
                nal.extend_from_slice(data);
            }
            cur.fu = Some(nal);
        } else {
            let Some(nal) = cur.fu.as_mut() else {
                // A continuation without its start: we joined mid-NAL (a
                // live555 camera someone else watches) or lost the start.
                cur.damaged = true;
                return;
            };
            if !cur.fu_skip {
                nal.extend_from_slice(data);
            }
        }
        let len = cur.fu.as_ref().map_or(0, Vec::len);
        if len + cur.buf.len() > self.max_access_unit {
            overflow(cur, &mut self.done);
            return;
        }
        if end {
            let nal = cur.fu.take().expect("set above");
            self.nal(&nal);
        }
    }

    /// One whole NAL unit of the current access unit.
    fn nal(&mut self, nal: &[u8]) {
        let Some(&header) = nal.first() else { return };
        let t = header & 0x1f;
        if t == nal_type::SPS || t == nal_type::PPS {
            self.remember_parameter_set(nal);
        }
        let cur = self.current.as_mut().expect("set");
        if cur.oversized {
            return;
        }
        match t {
            nal_type::SLICE_IDR | nal_type::SLICE_NON_IDR if cur.class == Class::Unknown => {
                classify(cur, t, nal);
            }
            nal_type::SLICE_NON_IDR if cur.class == Class::Key(KeyKind::Idr) => {
                // An IDR unit with a non-IDR slice is not a clean IDR.
                cur.damaged = true;
            }
            nal_type::SLICE_NON_IDR if cur.class == Class::Key(KeyKind::Intra) => {
                if !slice_is_intra(nal) {
                    cur.class = Class::Skip;
                    cur.buf = Vec::new();
                }
            }
            _ => {}
        }
        if cur.class == Class::Skip {
            return;
        }
        let keep = match t {
            nal_type::SPS => {
                cur.has_sps = true;
                true
            }
            nal_type::PPS => {
                cur.has_pps = true;
                true
            }
            nal_type::SLICE_IDR | nal_type::SLICE_NON_IDR => true,
            NAL_SEI | NAL_AUD => cur.class == Class::Unknown || matches!(cur.class, Class::Key(_)),
            _ => false,
        };
        if !keep {
            return;
        }
        if cur.buf.len() + nal.len() + 4 > self.max_access_unit {
            overflow(cur, &mut self.done);
            return;
        }
        cur.buf.extend_from_slice(&[0, 0, 0, 1]);
        cur.buf.extend_from_slice(nal);
    }

    fn remember_parameter_set(&mut self, nal: &[u8]) {
        if nal.len() > MAX_PARAMETER_SET {
            return;
        }
        let slot = if nal[0] & 0x1f == nal_type::SPS {
            &mut self.sps
        } else {
            &mut self.pps
        };
        if slot.as_deref() != Some(nal) {
            *slot = Some(nal.to_vec());
            self.params_changed = true;
        }
    }

    /// Ends the current access unit and queues what it was.
    fn finish(&mut self) {
        let Some(mut cur) = self.current.take() else {
            return;
        };
        if cur.fu.is_some() {
            // The last NAL never got its end fragment.
            cur.damaged = true;
        }
        let unit = if cur.oversized {
            // Reported when it overflowed; the rest was only counted.
            Unit::Other { bytes: cur.bytes }
        } else {
            match cur.class {
                Class::Unknown | Class::Skip if cur.damaged => Unit::Damaged {
                    keyframe: false,
                    bytes: cur.bytes,
                },
                Class::Unknown | Class::Skip => Unit::Other { bytes: cur.bytes },
                Class::Key(_) if cur.damaged => Unit::Damaged {
                    keyframe: true,
                    bytes: cur.bytes,
                },
                Class::Key(kind) => match self.with_parameter_sets(&cur) {
                    Some(data) => {
                        let new_parameters = std::mem::take(&mut self.params_changed);
                        Unit::Key(KeyAccessUnit {
                            data,
                            kind,
                            rtp_timestamp: cur.timestamp,
                            new_parameters,
                        })
                    }
                    // No SPS/PPS known at all yet: nothing can decode it.
                    None => Unit::Damaged {
                        keyframe: true,
                        bytes: cur.bytes,
                    },
                },
            }
        };
        // Bounded: at most a couple of units finish per packet.
        if self.done.len() < 16 {
            self.done.push_back(unit);
        }
    }

    /// The unit's bytes with the SPS and PPS in force put first when the
    /// unit does not carry them itself.
    fn with_parameter_sets(&self, cur: &Current) -> Option<Vec<u8>> {
        if cur.has_sps && cur.has_pps {
            return Some(cur.buf.clone());
        }
        let (sps, pps) = (self.sps.as_ref()?, self.pps.as_ref()?);
        let mut out = Vec::with_capacity(cur.buf.len() + sps.len() + pps.len() + 8);
        if !cur.has_sps {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(sps);
        }
        if !cur.has_pps {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(pps);
        }
        out.extend_from_slice(&cur.buf);
        Some(out)
    }
}

/// Decides from the first slice of a unit whether it is assembled.
fn classify(cur: &mut Current, t: u8, slice: &[u8]) {
    cur.class = match (t, slice_is_intra(slice)) {
        (nal_type::SLICE_IDR, _) => Class::Key(KeyKind::Idr),
        (_, true) => Class::Key(KeyKind::Intra),
        _ => Class::Skip,
    };
    if cur.class == Class::Skip {
        cur.buf = Vec::new();
    }
}

/// The parameter sets of an H.264 `fmtp` value (`packetization-mode=1;
/// sprop-parameter-sets=Z0..,aM..;profile-level-id=..`), decoded. Tolerant:
/// empty parts (a trailing `;`), keys without values and bad base64 are
/// skipped rather than failing the whole list.
pub fn sprop_parameter_sets(fmtp: &str) -> Vec<Vec<u8>> {
    fmtp.split(';')
        .filter_map(|p| p.trim().split_once('='))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("sprop-parameter-sets"))
        .flat_map(|(_, v)| v.split(','))
        .filter_map(|b64| {
            let b64 = b64.trim();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
                .ok()
        })
        .filter(|nal| {
            nal.first()
                .is_some_and(|h| matches!(h & 0x1f, nal_type::SPS | nal_type::PPS))
        })
        .collect()
}

/// True if a slice NAL's `slice_type` is I or SI (ITU-T H.264 7.3.3:
/// `first_mb_in_slice` ue(v), then `slice_type` ue(v)). Emulation
/// prevention bytes cannot occur in the first few bytes that matter here
/// unless they hold long runs of zeros, which these two fields do not.
pub fn slice_is_intra(nal: &[u8]) -> bool {
    let mut bits = super::bits::Reader::new(nal.get(1..).unwrap_or_default());
    let Some(_first_mb) = bits.ue() else {
        return false;
    };
    matches!(bits.ue(), Some(2 | 4 | 7 | 9))
}

/// The current unit crossed `max_access_unit`: everything kept is freed and
/// the rest of the unit is only counted. Reported at once, not when the unit
/// ends, because a hostile camera may never end it.
fn overflow(cur: &mut Current, done: &mut std::collections::VecDeque<Unit>) {
    cur.oversized = true;
    cur.fu = None;
    cur.buf = Vec::new();
    done.push_back(Unit::Oversized { bytes: cur.bytes });
    cur.bytes = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    // first_mb 0 ("1"), slice_type 7 ("0001000"): I; 5 ("00110"): P.
    const IDR: &[u8] = &[0x65, 0b1000_1000, 0x00, 0x11, 0x22];
    const P: &[u8] = &[0x41, 0b1001_1000, 0x33];
    const NON_IDR_I: &[u8] = &[0x21, 0b1000_1000, 0x44];

    fn fu(nal: &[u8], pieces: usize) -> Vec<Vec<u8>> {
        let body = &nal[1..];
        let chunk = body.len().div_ceil(pieces);
        body.chunks(chunk)
            .enumerate()
            .map(|(i, c)| {
                let mut h = nal[0] & 0x1f;
                if i == 0 {
                    h |= 0x80;
                }
                if (i + 1) * chunk >= body.len() {
                    h |= 0x40;
                }
                let mut p = vec![(nal[0] & 0xe0) | 28, h];
                p.extend_from_slice(c);
                p
            })
            .collect()
    }

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&[0, 0, 0, 1][..], n].concat())
            .collect()
    }

    fn units(d: &mut Depacketizer) -> Vec<Unit> {
        std::iter::from_fn(|| d.pull()).collect()
    }

    #[test]
    fn single_nals_and_sprop_make_a_keyframe() {
        let fmtp = format!(
            "packetization-mode=1;sprop-parameter-sets={},{};",
            base64::engine::general_purpose::STANDARD.encode(SPS),
            base64::engine::general_purpose::STANDARD.encode(PPS)
        );
        let mut d = Depacketizer::new(Some(&fmtp), 1 << 20);
        d.push(1000, true, 0, IDR);
        d.push(4000, true, 0, P);
        let u = units(&mut d);
        let Unit::Key(k) = &u[0] else { panic!("{u:?}") };
        assert_eq!(k.data, annexb(&[SPS, PPS, IDR]));
        assert_eq!(k.kind, KeyKind::Idr);
        assert!(matches!(u[1], Unit::Other { bytes: 3 }));
    }

    #[test]
    fn stap_a_and_fu_a_reassemble() {
        let mut d = Depacketizer::new(None, 1 << 20);
        let mut stap = vec![24u8];
        for n in [SPS, PPS] {
            stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
            stap.extend_from_slice(n);
        }
        d.push(1, false, 0, &stap);
        let big: Vec<u8> = IDR.iter().copied().chain(0..200u8).collect();
        for p in fu(&big, 5) {
            d.push(1, false, 0, &p);
        }
        d.push(2, true, 0, P); // new timestamp ends the first unit
        let u = units(&mut d);
        let Unit::Key(k) = &u[0] else { panic!("{u:?}") };
        assert_eq!(k.data, annexb(&[SPS, PPS, &big]));
        assert!(k.new_parameters);
    }

    #[test]
    fn joining_mid_fragment_is_damage_not_an_error() {
        let mut d = Depacketizer::new(None, 1 << 20);
        let big: Vec<u8> = IDR.iter().copied().chain(0..200u8).collect();
        let frags = fu(&big, 4);
        // Joined at the second fragment of an IDR.
        for p in &frags[1..] {
            d.push(1, false, 0, p);
        }
        d.push(1, true, 0, &[]);
        // The next keyframe is whole.
        d.push(2, false, 0, SPS);
        d.push(2, false, 0, PPS);
        for p in &frags {
            d.push(2, false, 0, p);
        }
        d.push(3, true, 0, P);
        let u = units(&mut d);
        assert!(matches!(u[0], Unit::Damaged { .. }), "{u:?}");
        assert!(matches!(u[1], Unit::Key(_)), "{u:?}");
    }

    #[test]
    fn loss_damages_the_unit() {
        let mut d = Depacketizer::new(None, 1 << 20);
        d.push(1, false, 0, SPS);
        d.push(1, false, 0, PPS);
        d.push(1, true, 2, IDR);
        assert!(matches!(
            units(&mut d)[..],
            [Unit::Damaged { keyframe: true, .. }]
        ));
    }

    #[test]
    fn a_unit_that_never_ends_is_capped() {
        let mut d = Depacketizer::new(None, 10_000);
        d.push(1, false, 0, SPS);
        d.push(1, false, 0, &[0x65, 0x80 | 5, 0x88]); // FU start is not this
        let start = [28u8, 0x80 | 5, 0x88, 1, 2, 3];
        d.push(7, false, 0, &start);
        for _ in 0..10_000 {
            d.push(7, false, 0, &[28, 5, 9, 9, 9, 9, 9, 9, 9, 9]);
            let held = d.current.as_ref().map_or(0, |c| {
                c.buf.capacity() + c.fu.as_ref().map_or(0, Vec::capacity)
            });
            assert!(held <= 40_000, "holding {held} bytes");
        }
        d.push(8, true, 0, P);
        let u = units(&mut d);
        assert!(
            u.iter().any(|u| matches!(u, Unit::Oversized { .. })),
            "{u:?}"
        );
    }

    #[test]
    fn p_frames_are_not_copied() {
        let mut d = Depacketizer::new(None, 1 << 20);
        d.push(1, false, 0, P);
        for _ in 0..100 {
            d.push(1, false, 0, &[0x41, 0x11, 0x22, 0x33]);
        }
        assert!(d.current.as_ref().unwrap().buf.is_empty());
        let big: Vec<u8> = P.iter().copied().chain(0..200u8).collect();
        let frags = fu(&big, 4);
        for p in &frags[..3] {
            d.push(2, false, 0, p);
        }
        assert_eq!(d.current.as_ref().unwrap().fu.as_ref().unwrap().len(), 1);
        d.push(2, true, 0, &frags[3]);
        assert!(matches!(
            units(&mut d)[..],
            [Unit::Other { .. }, Unit::Other { .. }]
        ));
    }

    #[test]
    fn intra_non_idr_pictures_are_recognised() {
        let mut d = Depacketizer::new(None, 1 << 20);
        d.push(1, false, 0, SPS);
        d.push(1, false, 0, PPS);
        d.push(1, true, 0, NON_IDR_I);
        let u = units(&mut d);
        assert!(
            matches!(&u[0], Unit::Key(k) if k.kind == KeyKind::Intra),
            "{u:?}"
        );
        assert!(!slice_is_intra(P));
        assert!(slice_is_intra(IDR));
    }

    #[test]
    fn sprop_parsing_is_tolerant() {
        let sps = base64::engine::general_purpose::STANDARD.encode(SPS);
        for fmtp in [
            format!("sprop-parameter-sets={sps};"),
            format!(" packetization-mode=1; ; sprop-parameter-sets={sps},!!;profile-level-id"),
        ] {
            assert_eq!(sprop_parameter_sets(&fmtp), vec![SPS.to_vec()], "{fmtp}");
        }
        assert!(sprop_parameter_sets("").is_empty());
    }
}
