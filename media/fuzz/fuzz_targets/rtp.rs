//! Fuzzes the RTP parser (RFC 3550 §5.1, §5.3.1) and the receive-side accounting.
//!
//! The whole input is parsed as one packet; a parsed packet is written back with
//! [`Header::write`] and must parse to the same fields and payload. The input is also
//! split into length-prefixed datagrams fed to one [`RtpReceiver`] 20 ms apart, with
//! the sequence and timestamp unwrappers alongside, and a report block read at the end.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialin_media::rtp::{Extension, Header, Packet, RtpTimestamp, SeqUnwrapper, Ssrc, TimestampUnwrapper};
use dialin_media::stream::{RtpReceiver, SourcePolicy};
use libfuzzer_sys::fuzz_target;

fn roundtrip(p: &Packet<'_>) {
    let mut csrcs = [Ssrc(0); 15];
    let mut n = 0;
    for (slot, c) in csrcs.iter_mut().zip(p.csrcs()) {
        *slot = c;
        n += 1;
    }
    assert_eq!(n, p.csrc_count());
    let header = Header {
        marker: p.marker(),
        payload_type: p.payload_type(),
        seq: p.seq(),
        timestamp: p.timestamp(),
        ssrc: p.ssrc(),
        csrcs: &csrcs[..n],
        extension: p.extension().map(|e| Extension { profile: e.profile, data: e.data }),
    };
    let mut out = vec![0u8; header.wire_len() + p.payload().len()];
    let len = header.write(p.payload(), &mut out).expect("a parsed header can be written");
    let q = Packet::parse(&out[..len]).expect("a written packet parses");
    assert_eq!(q.header_len(), p.header_len());
    assert_eq!(q.payload(), p.payload());
    assert_eq!((q.marker(), q.payload_type(), q.seq(), q.timestamp(), q.ssrc()),
               (p.marker(), p.payload_type(), p.seq(), p.timestamp(), p.ssrc()));
    assert!(q.csrcs().eq(p.csrcs()));
    assert_eq!(q.extension(), p.extension());
    assert!(!q.has_padding());
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::parse(data) {
        assert_eq!(p.as_bytes(), data);
        assert!(p.header_len() + p.payload().len() + p.padding_len() == data.len());
        roundtrip(&p);
    }

    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let other = SocketAddr::from(([127, 0, 0, 2], 40000));
    let mut rx = RtpReceiver::new(peer, SourcePolicy::sdp_only(), 8000);
    let mut seqs = SeqUnwrapper::new();
    let mut stamps = TimestampUnwrapper::new();
    let t0 = Instant::now();
    let mut now = t0;
    let mut rest = data;
    while let [len, from, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(take);
        rest = next;
        now += Duration::from_millis(u64::from(from >> 1));
        let source = if from & 1 == 0 { peer } else { other };
        if let Ok(p) = Packet::parse(datagram) {
            let _ = rx.on_packet(source, &p, now);
            let _ = (seqs.unwrap(p.seq()), stamps.unwrap(RtpTimestamp(p.timestamp().0)));
        }
    }
    let _ = rx.stats().jitter_duration();
    let _ = (rx.stats().cumulative_lost(), rx.stats().expected(), rx.is_inactive(t0, Duration::from_secs(1), now));
    let ssrc = rx.ssrc().unwrap_or(Ssrc(0));
    let _ = rx.stats_mut().report_block(ssrc, now);
});
