//! Cost of answering an INVITE's SDP: parse the offer, negotiate, write the answer.
//! Runs once per call setup, not per packet; measured to keep it negligible.

use std::net::{IpAddr, Ipv4Addr};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dialin_sip::sdp::{negotiate, AnswerPolicy, LocalMedia, SessionDescription};

const OFFER: &str = "v=0\r
o=alice 2436 1892 IN IP4 192.168.1.20\r
s=Talk\r
c=IN IP4 192.168.1.20\r
t=0 0\r
m=audio 7078 RTP/SAVP 96 9 0 8 101 100\r
a=rtpmap:96 opus/48000/2\r
a=fmtp:96 useinbandfec=1\r
a=rtpmap:101 telephone-event/48000\r
a=rtpmap:100 telephone-event/8000\r
a=ptime:20\r
a=rtcp-mux\r
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r
m=video 9078 RTP/AVP 96\r
a=rtpmap:96 VP8/90000\r
";

fn bench(c: &mut Criterion) {
    let policy = AnswerPolicy::default();
    let local = LocalMedia {
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        port: 20_000,
        session_id: 1,
        version: 1,
        username: "dialin".into(),
    };
    c.bench_function("sdp_parse_offer", |b| {
        b.iter(|| SessionDescription::parse(black_box(OFFER)))
    });
    c.bench_function("sdp_parse_negotiate_answer", |b| {
        b.iter(|| {
            let offer = SessionDescription::parse(black_box(OFFER)).ok()?;
            let n = negotiate(&offer, &policy).ok()?;
            Some(n.answer_sdp(&local))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
