//! Fuzzes the compound RTCP parser (RFC 3550 §6.1, §A.2): framing check, then every
//! packet, report block, SDES CNAME and BYE source read out.
#![no_main]

use dialin_media::rtcp::{is_rtcp, Compound, RtcpPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = is_rtcp(data);
    let Ok(compound) = Compound::parse(data) else { return };
    for item in compound {
        let Ok(packet) = item else { continue };
        match packet {
            RtcpPacket::SenderReport(sr) => {
                assert_eq!(sr.reports.iter().count(), sr.reports.len());
                let _ = sr.info.ntp_time.middle_32();
            }
            RtcpPacket::ReceiverReport(rr) => {
                assert_eq!(rr.reports.iter().count(), rr.reports.len());
            }
            RtcpPacket::Sdes(sdes) => {
                for (_, cname) in sdes.cnames() {
                    assert!(cname.len() <= 255);
                }
            }
            RtcpPacket::Bye(bye) => {
                let _ = bye.sources().count();
            }
            RtcpPacket::Other { body, .. } => {
                let _ = body.len();
            }
        }
    }
});
