//! Fuzzes the SDP parser: any UTF-8 body must parse or fail with an `SdpError`, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = dialin_sip::sdp::SessionDescription::parse(s);
    }
});
