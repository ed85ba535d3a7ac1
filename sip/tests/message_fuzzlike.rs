//! Property-style robustness test that runs in `cargo test`: random bytes and
//! mutated valid messages (fixed seeds, so failures reproduce) must never make
//! the parser, the typed header views, validation, serialization or the stream
//! framer panic, and parse output stays bounded by the input.

use bytes::Bytes;
use dialin_sip::header::HeaderName;
use dialin_sip::message::{reject_unparsable, Limits, Message};
use dialin_sip::transport::{response_target, stamp_received, StreamFramer, Transport};
use dialin_sip::validate::{check_request, check_response, ValidationPolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;

const INVITE: &str = "INVITE sip:+15551234567@gw.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK776asdhds;rport, SIP/2.0/TCP p.example.com;branch=z9hG4bKx\r\n\
Max-Forwards: 70\r\n\
To: \"Bob \\\"B\\\"\" <sip:bob@example.com>\r\n\
f: Alice <sip:alice%20x@example.com>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
m: <sip:alice@192.0.2.1?Route=%3Csip:x%3E>;expires=60, <tel:+1-201-555-0123>\r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
Supported: timer, 100rel\r\n\
Require: timer\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Accept: application/sdp, */*\r\n\
Authorization: Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"sip:x\", response=\"0\"\r\n\
X-Folded: first\r\n second\r\n\
c: application/sdp\r\n\
l: 31\r\n\r\nv=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n";

fn seeds() -> Vec<Vec<u8>> {
    let mut out = vec![INVITE.as_bytes().to_vec()];
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance/rfc4475"
    );
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "dat") {
                    if let Ok(b) = std::fs::read(e.path()) {
                        out.push(b);
                    }
                }
            }
        }
        Err(_) => {
            if std::env::var("DIALIN_STRICT_TESTS").as_deref() == Ok("1") {
                panic!("RFC 4475 corpus missing at {dir}");
            }
            eprintln!("note: RFC 4475 corpus not found, mutating the built-in message only");
        }
    }
    out
}

/// Runs everything a received message goes through; panics only on a bug.
fn exercise(raw: &[u8], rng: &mut StdRng) {
    let limits = Limits {
        max_message_size: 16 * 1024,
        ..Limits::default()
    };
    let bytes = Bytes::copy_from_slice(raw);
    let source: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
    match Message::parse(bytes.clone(), &limits) {
        Err(e) => {
            let _ = e.status();
            if let Some(resp) = reject_unparsable(&bytes, &e) {
                let _ = resp.to_bytes();
            }
        }
        Ok(mut m) => {
            let h = m.headers();
            assert!(h.len() <= limits.max_headers);
            let value_bytes: usize = h
                .iter()
                .map(|x| x.value.len() + x.name.as_str().len())
                .sum();
            assert!(
                value_bytes + m.body().len() <= raw.len() + 64 * h.len(),
                "output grew past input"
            );
            let _ = h.via();
            if let Ok(v) = h.top_via() {
                let _ = response_target(&v, source, Transport::Udp);
            }
            let _ = (
                h.from(),
                h.to(),
                h.call_id(),
                h.cseq(),
                h.contacts(),
                h.max_forwards(),
            );
            let _ = (
                h.content_type(),
                h.content_length(),
                h.routes(),
                h.record_routes(),
            );
            let _ = (
                h.supported(),
                h.require(),
                h.proxy_require(),
                h.allow(),
                h.accept(),
            );
            let _ = (h.session_expires(), h.authorization(), h.www_authenticate());
            let _ = h.get(&HeaderName::from_str_name("X-Folded"));
            match &mut m {
                Message::Request(r) => {
                    let _ = check_request(r, &ValidationPolicy::default());
                    stamp_received(r, source);
                    if let Some(sip) = r.uri.as_sip() {
                        let _ = sip.user_unescaped();
                    }
                }
                Message::Response(r) => {
                    let _ = check_response(r);
                }
            }
            let out = m.to_bytes();
            assert!(
                out.len() <= raw.len() + 48 * (m.headers().len() + 2) + 64,
                "serialized output grew unboundedly"
            );
            // What we emit must parse again.
            let _ = Message::parse(out, &Limits::default());
        }
    }
    // The same octets as a stream, cut at random points.
    let mut f = StreamFramer::new(limits.clone());
    let mut rest = raw;
    while !rest.is_empty() {
        let n = rng.gen_range(1..=rest.len());
        let (a, b) = rest.split_at(n);
        f.push(a);
        rest = b;
        while let Ok(Some(frame)) = f.pop() {
            assert!(frame.len() <= limits.max_message_size);
            let _ = Message::parse(frame, &limits);
        }
    }
    assert!(f.buffered() <= raw.len());
}

const SPICE: &[&[u8]] = &[
    b":",
    b";",
    b",",
    b"\"",
    b"\\",
    b"<",
    b">",
    b"\r\n",
    b"\r\n ",
    b" ",
    b"%",
    b"%0",
    b"[",
    b"]",
    b"@",
    b"?",
    b"=",
    b"\r\n\r\n",
    b"\0",
    b"\xff",
    b"SIP/2.0",
    b"Content-Length: 99999\r\n",
    b"l: 0\r\n",
    b"Via: ",
    b"sip:",
    b"tel:",
    b"99999999999999999999",
    b"-1",
    b"\t",
];

fn mutate(seed: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.gen_range(1..6) {
        let len = v.len();
        let pos = if len == 0 { 0 } else { rng.gen_range(0..len) };
        match rng.gen_range(0..6) {
            0 if len > 0 => {
                if let Some(b) = v.get_mut(pos) {
                    *b = rng.gen();
                }
            }
            1 => {
                let s = SPICE[rng.gen_range(0..SPICE.len())];
                v.splice(pos..pos, s.iter().copied());
            }
            2 if len > 0 => {
                let end = (pos + rng.gen_range(1..64)).min(len);
                v.drain(pos..end);
            }
            3 if len > 0 => {
                let end = (pos + rng.gen_range(1..128)).min(len);
                let chunk: Vec<u8> = v.get(pos..end).map(|c| c.to_vec()).unwrap_or_default();
                v.splice(pos..pos, chunk);
            }
            4 => v.truncate(pos),
            _ => {
                let s = SPICE[rng.gen_range(0..SPICE.len())];
                let end = (pos + s.len()).min(len);
                v.splice(pos..end, s.iter().copied());
            }
        }
    }
    v
}

#[test]
fn random_bytes_never_panic_the_parser_or_framer() {
    let mut rng = StdRng::seed_from_u64(0x5151_0001);
    for _ in 0..20_000 {
        let len = rng.gen_range(0..600);
        let mut v: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // Half of them look like the start of a SIP message, to get past the start line.
        if rng.gen_bool(0.5) {
            let prefix: &[u8] = if rng.gen_bool(0.5) {
                b"INVITE sip:a@b SIP/2.0\r\n"
            } else {
                b"SIP/2.0 200 OK\r\n"
            };
            v.splice(0..0, prefix.iter().copied());
        }
        exercise(&v, &mut rng);
    }
}

#[test]
fn mutated_valid_messages_never_panic_and_stay_bounded() {
    let seeds = seeds();
    let mut rng = StdRng::seed_from_u64(0x5151_0002);
    for i in 0..20_000 {
        let seed = &seeds[i % seeds.len()];
        let m = mutate(seed, &mut rng);
        exercise(&m, &mut rng);
    }
}

#[test]
fn valid_messages_survive_a_serialize_parse_round_trip() {
    for seed in seeds() {
        let Ok(m) = Message::parse(Bytes::from(seed), &Limits::default()) else {
            continue;
        };
        let again = Message::parse(m.to_bytes(), &Limits::default()).expect("our output parses");
        assert_eq!(
            again.headers().len(),
            m.headers().len() + usize::from(m.headers().content_length() == Ok(None))
        );
        assert_eq!(again.body(), m.body());
    }
}
