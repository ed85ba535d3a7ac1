//! Fuzzes the SIP message parser, the typed header views, validation,
//! serialization and the stream framer with arbitrary octets.
#![no_main]

use bytes::Bytes;
use dialin_sip::message::{reject_unparsable, Limits, Message};
use dialin_sip::transport::{response_target, stamp_received, StreamFramer, Transport};
use dialin_sip::validate::{check_request, check_response, ValidationPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let raw = Bytes::copy_from_slice(data);
    let source = std::net::SocketAddr::from(([127, 0, 0, 1], 5060));
    match Message::parse(raw.clone(), &limits) {
        Err(e) => {
            let _ = reject_unparsable(&raw, &e).map(|r| r.to_bytes());
        }
        Ok(mut m) => {
            let h = m.headers();
            let _ = (h.via(), h.from(), h.to(), h.call_id(), h.cseq(), h.contacts());
            let _ = (h.max_forwards(), h.content_type(), h.content_length(), h.routes());
            let _ = (h.record_routes(), h.require(), h.accept(), h.session_expires());
            if let Ok(v) = h.top_via() {
                let _ = response_target(&v, source, Transport::Udp);
            }
            match &mut m {
                Message::Request(r) => {
                    let _ = check_request(r, &ValidationPolicy::default());
                    stamp_received(r, source);
                }
                Message::Response(r) => {
                    let _ = check_response(r);
                }
            }
            let _ = Message::parse(m.to_bytes(), &limits);
        }
    }
    // The same octets as a stream split in two.
    let mut f = StreamFramer::new(limits.clone());
    let cut = data.first().map(|b| *b as usize % (data.len() + 1)).unwrap_or(0);
    f.push(data.get(..cut).unwrap_or(&[]));
    while let Ok(Some(frame)) = f.pop() {
        let _ = Message::parse(frame, &limits);
    }
    f.push(data.get(cut..).unwrap_or(&[]));
    while let Ok(Some(frame)) = f.pop() {
        let _ = Message::parse(frame, &limits);
    }
});
