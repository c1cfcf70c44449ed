//! The camera-facing H.264 path: arbitrary RTP payloads (with arbitrary
//! timestamps, marker bits and loss counts) through rtsnap's depacketizer,
//! and every intra unit it yields through the open-GOP relabelling. Never a
//! panic, and no unit larger than the access-unit cap plus its parameter
//! sets: this is where a hostile camera's bytes first land.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtsnap::source::rtp_h264::{Depacketizer, Unit};

/// Small, so the fuzzer reaches the oversized path quickly.
const CAP: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first bytes pick an fmtp (none, or one with parameter sets and a
    // trailing ';'); then packets: [len, flags, ts] + payload.
    let fmtp = (data.first().copied().unwrap_or(0) & 1 == 1).then_some(
        "packetization-mode=1;profile-level-id=42C01E;sprop-parameter-sets=Z0LAHtkAoC/5YQAAAwABAAADADIPFi5I,aMuMsg==;",
    );
    let mut d = Depacketizer::new(fmtp, CAP);
    let mut rest = data.get(1..).unwrap_or_default();
    let mut ts = 0u32;
    while rest.len() >= 3 {
        let (len, flags, step) = (usize::from(rest[0]), rest[1], rest[2]);
        rest = &rest[3..];
        let payload = &rest[..len.min(rest.len())];
        rest = &rest[payload.len()..];
        ts = ts.wrapping_add(u32::from(step & 0x0f) * 3600);
        d.push(ts, flags & 1 == 1, u16::from(flags >> 6), payload);
        while let Some(unit) = d.pull() {
            if let Unit::Key(k) = unit {
                // Parameter sets are prepended, each at most 4 KiB.
                assert!(k.data.len() <= CAP + 2 * (4096 + 4), "unit of {} bytes", k.data.len());
                let _ = k.startable();
            }
        }
    }
});
