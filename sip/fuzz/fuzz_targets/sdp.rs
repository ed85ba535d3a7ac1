//! Fuzzes the SDP parser with arbitrary UTF-8 text (placeholder target; the SDP
//! module provides `SessionDescription::parse(&str)`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = dialin_sip::sdp::SessionDescription::parse(text);
    }
});
