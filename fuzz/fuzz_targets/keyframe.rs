//! The keyframe/decode input path: bytes a camera could send as an "IDR access
//! unit" go through the NAL splitter, the SPS inspection and, when that
//! accepts them, openh264 and the JPEG encoder. None of it may panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rtsnap::decode::DecoderPool;
use rtsnap::keyframe;

/// One decoder, reused across inputs like the daemon reuses its pool (a
/// decoder that fails is dropped by the pool and a fresh one made).
static POOL: LazyLock<DecoderPool> = LazyLock::new(|| DecoderPool::new(1));

fuzz_target!(|data: &[u8]| {
    // The splitter must return in-bounds, non-empty NALs that tile the input.
    let mut total = 0usize;
    for nal in keyframe::nal_units(data) {
        assert!(!nal.is_empty());
        assert!(nal.len() <= data.len());
        let _ = keyframe::nal_unit_type(nal);
        total += nal.len();
    }
    assert!(total <= data.len());

    if keyframe::inspect(data).is_ok() {
        if let Ok(still) = rtsnap::pipeline::keyframe_to_jpeg(&POOL, data, 80) {
            assert!(still.width > 0 && still.height > 0);
            assert!(!still.jpeg.is_empty());
        }
    }
});
