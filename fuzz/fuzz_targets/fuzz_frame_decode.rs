//! The frame decoder is total and the format has one spelling: any input decodes to a frame or a
//! typed error without panicking, and a frame that decodes re-encodes to the same bytes.
//!
//! The first input byte picks how the rest is used: as raw bytes, or as a payload behind a valid
//! header (so that the fuzzer reaches every payload parser instead of stopping at the magic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sellsync_sync::frame::{DEFAULT_MAX_FRAME, Frame, MAGIC, PROTOCOL_VERSION, frame_len};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let input = if mode & 0x80 == 0 {
        rest.to_vec()
    } else {
        let mut v = MAGIC.to_vec();
        v.push(PROTOCOL_VERSION);
        v.push(mode & 0x0f);
        v.extend_from_slice(&(rest.len() as u32).to_be_bytes());
        v.extend_from_slice(rest);
        v
    };
    let _ = frame_len(&input, DEFAULT_MAX_FRAME);
    if let Ok(frame) = Frame::decode(&input, DEFAULT_MAX_FRAME) {
        let again = frame.encode(DEFAULT_MAX_FRAME).expect("a decoded frame re-encodes");
        assert_eq!(again, input, "a decoded frame re-encodes to the same bytes");
    }
});
