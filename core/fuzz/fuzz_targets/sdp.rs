//! SDP parser: any text gives media sections or a typed error, and so does asking a
//! section for its video geometry, frame rate or audio format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcm_core::st2110::sdp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(media) = sdp::parse(text) {
        for m in media {
            let _ = m.video_geometry();
            let _ = m.frame_rate();
        }
    }
});
