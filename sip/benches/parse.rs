//! Parsing and serializing a typical trunk INVITE with an SDP offer: the cost
//! paid once per incoming call attempt and per in-dialog request.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dialin_sip::message::{Limits, Message, Response, StatusCode};
use dialin_sip::validate::{check_request, ValidationPolicy};

const INVITE: &str = "INVITE sip:+15551234567@gw.example.com:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK-524287-1---a5d3e1f0;rport\r\n\
Max-Forwards: 69\r\n\
Contact: <sip:+15557654321@203.0.113.7:5060;transport=udp>\r\n\
To: <sip:+15551234567@gw.example.com>\r\n\
From: \"Caller\" <sip:+15557654321@carrier.example.net>;tag=8a7f3c21\r\n\
Call-ID: 4f1e0b8c2d9a47e6b3c5a1d2e7f80912@203.0.113.7\r\n\
CSeq: 102 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK\r\n\
Supported: timer, 100rel, replaces\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
User-Agent: CarrierSBC/4.2\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 280\r\n\r\n\
v=0\r\n\
o=- 3912871234 3912871234 IN IP4 203.0.113.7\r\n\
s=-\r\n\
c=IN IP4 203.0.113.7\r\n\
t=0 0\r\n\
m=audio 31000 RTP/AVP 111 9 0 8 101\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn bench(c: &mut Criterion) {
    // Fit Content-Length to the body so the message is exact.
    let body_len = INVITE.split("\r\n\r\n").nth(1).map(str::len).unwrap_or(0);
    let text = INVITE.replace(
        "Content-Length: 280",
        &format!("Content-Length: {body_len}"),
    );
    let raw = Bytes::from(text);
    let limits = Limits::default();
    assert!(Message::parse(raw.clone(), &limits).is_ok());

    c.bench_function("parse_invite_with_sdp", |b| {
        b.iter(|| Message::parse(black_box(raw.clone()), &limits))
    });

    c.bench_function("parse_and_read_dialog_headers", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(raw.clone()), &limits).ok()?;
            let h = m.headers();
            let via = h.top_via().ok()?;
            let from = h.from().ok()?;
            let to = h.to().ok()?;
            let cseq = h.cseq().ok()?;
            let cid = h.call_id().ok()?.len();
            Some((
                via.branch().map(str::len),
                from.tag().map(str::len),
                to.tag().is_none(),
                cseq.seq,
                cid,
            ))
        })
    });

    let policy = ValidationPolicy::default();
    let Ok(Message::Request(req)) = Message::parse(raw.clone(), &limits) else {
        return;
    };
    c.bench_function("check_request_invite", |b| {
        b.iter(|| check_request(black_box(&req), &policy))
    });

    let mut out = BytesMut::with_capacity(2048);
    c.bench_function("build_and_write_200_ok", |b| {
        b.iter(|| {
            out.clear();
            let resp =
                Response::to_request(black_box(&req), StatusCode::OK, None).with_to_tag("as8d7f");
            resp.write_to(&mut out);
            out.len()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
