//! The RTSP fixture server's request parser: arbitrary client bytes give a
//! message, "need more bytes" or an error, never a panic, and never claim to
//! have consumed more bytes than they were given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtsnap::fixture::rtsp::parse_message;

fuzz_target!(|data: &[u8]| {
    // Parse the buffer as the connection task does: message after message.
    let mut rest = data;
    while let Ok(Some((_msg, n))) = parse_message(rest) {
        assert!(n <= rest.len(), "consumed {n} of {} bytes", rest.len());
        assert!(n > 0, "a message of zero bytes would loop forever");
        rest = &rest[n..];
    }
});
