//! Fuzzes SRTP/SRTCP unprotect (RFC 3711 §3.3, §3.4) with a fixed key: arbitrary
//! datagrams must be rejected with an `SrtpError`, never panic. Forging a tag is out
//! of the fuzzer's reach, so the target also walks the authenticated path: each
//! datagram that parses as RTP (or is long enough for RTCP) is protected and must
//! unprotect back to the same octets.
//!
//! First octet: bit 0 picks the profile (80- or 32-bit tag). The rest is a sequence of
//! datagrams, each a length octet then that many octets.
#![no_main]

use dialin_media::rtp::Packet;
use dialin_media::srtp::{MasterKey, SrtpContext, SrtpProfile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((first, mut rest)) = data.split_first() else { return };
    let profile = if first & 1 == 0 {
        SrtpProfile::AesCm128HmacSha1_80
    } else {
        SrtpProfile::AesCm128HmacSha1_32
    };
    let key = MasterKey::new([0x2b; 16], [0x7e; 14]);
    let mut rx = SrtpContext::new(profile, &key);
    let mut buf = [0u8; 512];
    while let [len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(take);
        rest = next;

        // Forged packets: as SRTP and as SRTCP.
        buf[..datagram.len()].copy_from_slice(datagram);
        let _ = rx.unprotect_rtp(&mut buf[..datagram.len()]);
        buf[..datagram.len()].copy_from_slice(datagram);
        let _ = rx.unprotect_rtcp(&mut buf[..datagram.len()]);

        // Genuine packets: protect then unprotect must round-trip.
        if Packet::parse(datagram).is_ok() {
            buf[..datagram.len()].copy_from_slice(datagram);
            // Fresh contexts on both sides: a sender and receiver that saw different
            // histories may legitimately disagree on the rollover counter.
            let mut tx = SrtpContext::new(profile, &key);
            let n = tx.protect_rtp(&mut buf, datagram.len()).expect("a parsed RTP packet can be protected");
            let mut check = SrtpContext::new(profile, &key);
            let m = check.unprotect_rtp(&mut buf[..n]).expect("a protected packet authenticates");
            assert_eq!(&buf[..m], datagram);
        }
        if datagram.len() >= 8 {
            buf[..datagram.len()].copy_from_slice(datagram);
            let mut tx = SrtpContext::new(profile, &key);
            if let Ok(n) = tx.protect_rtcp(&mut buf, datagram.len()) {
                let mut check = SrtpContext::new(profile, &key);
                let m = check.unprotect_rtcp(&mut buf[..n]).expect("a protected RTCP packet authenticates");
                assert_eq!(&buf[..m], datagram);
            }
        }
    }
});
