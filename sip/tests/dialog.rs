//! Dialog and endpoint behaviour (RFC 3261 §9, §12–§15, RFC 4028), driven
//! through the sans-IO `Endpoint` with raw SIP text and a simulated clock.

use bytes::Bytes;
use dialin_sip::dialog::OfferKind;
use dialin_sip::endpoint::{CallKey, EndReason, Endpoint, EndpointConfig, Event};
use dialin_sip::header::HeaderName;
use dialin_sip::message::{Limits, Message, Method, Response, StatusCode, Text};
use dialin_sip::transport::{ListenAddr, Transport};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PEER: &str = "127.0.0.1:5070";
const SDP: &str = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

struct Harness {
    ep: Endpoint,
    now: Instant,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(EndpointConfig::default())
    }
    fn with(mut config: EndpointConfig) -> Harness {
        config.local_addrs = vec![ListenAddr {
            transport: Transport::Udp,
            addr: "127.0.0.1:5060".parse().unwrap(),
        }];
        Harness {
            ep: Endpoint::new(config),
            now: Instant::now(),
        }
    }
    fn peer() -> SocketAddr {
        PEER.parse().unwrap()
    }
    fn send(&mut self, raw: &str) {
        let raw = raw.replace("\r\n", "\n").replace('\n', "\r\n");
        self.ep.handle_datagram(
            Bytes::from(raw),
            Harness::peer(),
            Transport::Udp,
            None,
            self.now,
        );
    }
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.ep.handle_timeout(self.now);
    }
    /// Advances to each due timer until `d` has passed.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.ep.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.ep.handle_timeout(self.now);
        }
        self.now = end;
    }
    fn sent(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(t) = self.ep.poll_transmit() {
            assert_eq!(
                t.target.addr,
                Harness::peer(),
                "everything goes back to the peer"
            );
            out.push(Message::parse(t.bytes, &Limits::default()).expect("we send parsable SIP"));
        }
        out
    }
    fn responses(&mut self) -> Vec<Response> {
        self.sent()
            .into_iter()
            .filter_map(|m| {
                if let Message::Response(r) = m {
                    Some(r)
                } else {
                    None
                }
            })
            .collect()
    }
    fn statuses(&mut self) -> Vec<u16> {
        self.responses().iter().map(|r| r.status.0).collect()
    }
    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ep.poll_event()).collect()
    }
    fn incoming_call(&mut self) -> CallKey {
        self.events()
            .into_iter()
            .find_map(|e| {
                if let Event::IncomingCall { key, .. } = e {
                    Some(key)
                } else {
                    None
                }
            })
            .expect("an IncomingCall event")
    }
    /// INVITE → answer → ACK; returns the key and our To tag.
    fn established(&mut self, extra: &str) -> (CallKey, String) {
        self.send(&invite("z9hG4bKinv1", "c1", extra, SDP));
        let key = self.incoming_call();
        self.ep
            .answer(
                key,
                Some(Bytes::from_static(b"v=0\r\n")),
                Vec::new(),
                self.now,
            )
            .unwrap();
        let ok = self
            .responses()
            .into_iter()
            .find(|r| r.status == StatusCode::OK)
            .expect("200");
        let tag = ok.headers.to().unwrap().tag().unwrap().to_owned();
        self.send(&in_dialog("ACK", 1, "z9hG4bKack1", "c1", &tag, "", ""));
        assert!(matches!(self.events().as_slice(), [Event::Acked { .. }]));
        (key, tag)
    }
}

fn invite(branch: &str, call_id: &str, extra: &str, body: &str) -> String {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\n".to_owned()
    };
    format!(
        "INVITE sip:1000@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\n\
         From: \"A\" <sip:a@127.0.0.1>;tag=caller\nTo: <sip:1000@127.0.0.1>\nCall-ID: {call_id}\nCSeq: 1 INVITE\n\
         Contact: <sip:a@127.0.0.1:5070>\nMax-Forwards: 70\n{extra}{ct}Content-Length: {}\n\n{body}",
        body.len()
    )
}

fn in_dialog(
    method: &str,
    cseq: u32,
    branch: &str,
    call_id: &str,
    to_tag: &str,
    extra: &str,
    body: &str,
) -> String {
    format!(
        "{method} sip:a@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\n\
         From: \"A\" <sip:a@127.0.0.1>;tag=caller\nTo: <sip:1000@127.0.0.1>;tag={to_tag}\nCall-ID: {call_id}\n\
         CSeq: {cseq} {method}\nMax-Forwards: 70\n{extra}Content-Length: {}\n\n{body}",
        body.len()
    )
}

#[test]
fn invite_gets_100_trying_at_once_and_an_incoming_call_event() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK1", "c1", "", SDP));
    assert_eq!(h.statuses(), vec![100]);
    let ev = h.events();
    let Some(Event::IncomingCall { request, .. }) = ev.first() else {
        panic!("{ev:?}")
    };
    assert_eq!(request.body.as_ref(), SDP.as_bytes());
}

#[test]
fn retransmitted_invite_is_absorbed_with_the_last_response() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK1", "c1", "", SDP));
    let key = h.incoming_call();
    h.sent();
    h.send(&invite("z9hG4bK1", "c1", "", SDP));
    assert_eq!(h.statuses(), vec![100]);
    assert!(h.events().is_empty(), "no second call");
    h.ep.ringing(key, h.now).unwrap();
    h.sent();
    h.send(&invite("z9hG4bK1", "c1", "", SDP));
    assert_eq!(h.statuses(), vec![180]);
}

#[test]
fn answer_carries_contact_allow_supported_record_route_and_sdp() {
    let mut h = Harness::new();
    h.send(&invite(
        "z9hG4bK1",
        "c1",
        "Record-Route: <sip:proxy.example;lr>\n",
        SDP,
    ));
    let key = h.incoming_call();
    h.sent();
    h.ep.answer(
        key,
        Some(Bytes::from_static(b"v=0\r\n")),
        vec![(
            HeaderName::Other(Text::from_static("X-Test")),
            Text::from_static("1"),
        )],
        h.now,
    )
    .unwrap();
    let r = h.responses().pop().unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.to().unwrap().tag().is_some());
    assert_eq!(
        r.headers.get(&HeaderName::Contact).map(|t| t.as_str()),
        Some("<sip:127.0.0.1:5060>")
    );
    assert!(r.headers.get(&HeaderName::Allow).is_some());
    assert!(r.headers.get(&HeaderName::Supported).is_some());
    assert_eq!(
        r.headers.get(&HeaderName::RecordRoute).map(|t| t.as_str()),
        Some("<sip:proxy.example;lr>")
    );
    assert_eq!(
        r.headers.content_type().unwrap().unwrap().subtype.as_str(),
        "sdp"
    );
    assert_eq!(r.body.as_ref(), b"v=0\r\n");
    assert!(r
        .headers
        .get(&HeaderName::Other(Text::from_static("X-Test")))
        .is_some());
}

#[test]
fn unacked_2xx_is_retransmitted_t1_to_t2_then_ack_timeout_sends_bye() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK1", "c1", "", SDP));
    let key = h.incoming_call();
    h.ep.answer(key, Some(Bytes::from_static(b"v=0\r\n")), Vec::new(), h.now)
        .unwrap();
    h.sent();
    let start = h.now;
    let mut retransmits = Vec::new();
    let mut bye_at = None;
    while let Some(t) = h.ep.poll_timeout() {
        if t > start + Duration::from_secs(40) {
            break;
        }
        h.now = t;
        h.ep.handle_timeout(t);
        for m in h.sent() {
            match m {
                Message::Response(r) if r.status == StatusCode::OK => retransmits.push(t - start),
                Message::Request(r) if r.method == Method::Bye && bye_at.is_none() => {
                    bye_at = Some(t - start)
                }
                _ => {}
            }
        }
    }
    let ms = |n| Duration::from_millis(n);
    assert_eq!(
        &retransmits[..6],
        &[ms(500), ms(1500), ms(3500), ms(7500), ms(11500), ms(15500)]
    );
    assert_eq!(bye_at, Some(Duration::from_secs(32)));
    let ev = h.events();
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::AckTimeout { key: k } if *k == key)));
}

#[test]
fn offerless_invite_gets_our_offer_and_the_ack_body_is_delivered() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK1", "c1", "", ""));
    let key = h.incoming_call();
    h.ep.answer(
        key,
        Some(Bytes::from_static(b"v=0 offer\r\n")),
        Vec::new(),
        h.now,
    )
    .unwrap();
    let tag = h
        .responses()
        .pop()
        .unwrap()
        .headers
        .to()
        .unwrap()
        .tag()
        .unwrap()
        .to_owned();
    h.send(&in_dialog(
        "ACK",
        1,
        "z9hG4bKa",
        "c1",
        &tag,
        "Content-Type: application/sdp\n",
        SDP,
    ));
    let ev = h.events();
    let Some(Event::Acked { body: Some(b), .. }) = ev.first() else {
        panic!("{ev:?}")
    };
    assert_eq!(b.as_ref(), SDP.as_bytes());
}

#[test]
fn cancel_before_answer_gets_200_and_the_invite_487() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bKc", "c1", "", SDP));
    let key = h.incoming_call();
    h.sent();
    h.send(
        "CANCEL sip:1000@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKc;rport\n\
         From: \"A\" <sip:a@127.0.0.1>;tag=caller\nTo: <sip:1000@127.0.0.1>\nCall-ID: c1\nCSeq: 1 CANCEL\nMax-Forwards: 70\n\n",
    );
    let rs = h.responses();
    assert_eq!(
        rs.iter().map(|r| r.status.0).collect::<Vec<_>>(),
        vec![200, 487]
    );
    assert_eq!(rs[1].headers.cseq().unwrap().method, Method::Invite);
    let ev = h.events();
    assert!(matches!(
        ev.as_slice(),
        [
            Event::Cancelled { .. },
            Event::CallEnded {
                reason: EndReason::Cancelled,
                ..
            }
        ]
    ));
    assert!(
        h.ep.answer(key, None, Vec::new(), h.now).is_err(),
        "a cancelled call cannot be answered"
    );
    // The 487 is retransmitted until the ACK, which stops it.
    h.advance(Duration::from_millis(500));
    assert_eq!(h.statuses(), vec![487]);
    let tag = rs[1].headers.to().unwrap().tag().unwrap().to_owned();
    h.send(&format!(
        "ACK sip:1000@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKc;rport\n\
         From: \"A\" <sip:a@127.0.0.1>;tag=caller\nTo: <sip:1000@127.0.0.1>;tag={tag}\nCall-ID: c1\nCSeq: 1 ACK\nMax-Forwards: 70\n\n"
    ));
    h.run_for(Duration::from_secs(10));
    assert!(h.statuses().is_empty());
}

#[test]
fn cancel_matching_no_transaction_gets_481() {
    let mut h = Harness::new();
    h.send(
        "CANCEL sip:1000@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnone\n\
         From: <sip:a@127.0.0.1>;tag=x\nTo: <sip:1000@127.0.0.1>\nCall-ID: zz\nCSeq: 1 CANCEL\nMax-Forwards: 70\n\n",
    );
    assert_eq!(h.statuses(), vec![481]);
}

#[test]
fn reject_sends_the_status_with_extra_headers_and_ends_the_call() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK1", "c1", "", SDP));
    let key = h.incoming_call();
    h.sent();
    let challenge = Text::from_static("Digest realm=\"dialin\", nonce=\"n\"");
    h.ep.reject(
        key,
        StatusCode::UNAUTHORIZED,
        None,
        vec![(HeaderName::WwwAuthenticate, challenge.clone())],
        h.now,
    )
    .unwrap();
    let r = h.responses().pop().unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers.www_authenticate(), Some(&challenge));
    assert!(matches!(
        h.events().as_slice(),
        [Event::CallEnded {
            reason: EndReason::Rejected(StatusCode::UNAUTHORIZED),
            ..
        }]
    ));
}

#[test]
fn caller_bye_is_answered_200_and_reported() {
    let mut h = Harness::new();
    let (key, tag) = h.established("");
    h.send(&in_dialog("BYE", 2, "z9hG4bKbye", "c1", &tag, "", ""));
    assert_eq!(h.statuses(), vec![200]);
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [Event::Bye { key: k }, Event::CallEnded { reason: EndReason::RemoteBye, .. }] if *k == key)
    );
    // The BYE retransmission is absorbed by its transaction.
    h.send(&in_dialog("BYE", 2, "z9hG4bKbye", "c1", &tag, "", ""));
    assert_eq!(h.statuses(), vec![200]);
    assert!(h.events().is_empty());
}

#[test]
fn requests_for_unknown_dialogs_get_481() {
    let mut h = Harness::new();
    h.send(&in_dialog("BYE", 2, "z9hG4bKx", "nope", "nobody", "", ""));
    assert_eq!(h.statuses(), vec![481]);
    h.send(&in_dialog(
        "INVITE",
        2,
        "z9hG4bKy",
        "nope",
        "nobody",
        "Contact: <sip:a@127.0.0.1>\n",
        "",
    ));
    assert_eq!(h.statuses(), vec![100, 481]);
}

#[test]
fn info_in_dialog_is_answered_and_delivered_with_its_content_type() {
    let mut h = Harness::new();
    let (key, tag) = h.established("");
    let body = "Signal=5\r\nDuration=160\r\n";
    h.send(&in_dialog(
        "INFO",
        2,
        "z9hG4bKi",
        "c1",
        &tag,
        "Content-Type: application/dtmf-relay\n",
        body,
    ));
    assert_eq!(h.statuses(), vec![200]);
    let ev = h.events();
    let Some(Event::Info {
        key: k,
        content_type: Some(ct),
        body: b,
    }) = ev.first()
    else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (*k, ct.as_str(), b.as_ref()),
        (key, "application/dtmf-relay", body.as_bytes())
    );
}

#[test]
fn reinvite_offer_goes_to_the_tu_and_its_answer_is_sent() {
    let mut h = Harness::new();
    let (key, tag) = h.established("");
    h.send(&in_dialog(
        "INVITE",
        2,
        "z9hG4bKr",
        "c1",
        &tag,
        "Contact: <sip:a@127.0.0.1:5070>\nContent-Type: application/sdp\n",
        SDP,
    ));
    assert_eq!(h.statuses(), vec![100]);
    let ev = h.events();
    assert!(matches!(
        ev.as_slice(),
        [Event::ReInvite {
            kind: OfferKind::Invite,
            ..
        }]
    ));
    h.ep.respond_reinvite(key, Ok(Bytes::from_static(b"v=0 answer\r\n")), h.now)
        .unwrap();
    let r = h.responses().pop().unwrap();
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::OK, &b"v=0 answer\r\n"[..])
    );
}

#[test]
fn second_offer_while_one_is_pending_gets_491() {
    let mut h = Harness::new();
    let (_key, tag) = h.established("");
    let extra = "Contact: <sip:a@127.0.0.1:5070>\nContent-Type: application/sdp\n";
    h.send(&in_dialog("INVITE", 2, "z9hG4bKr1", "c1", &tag, extra, SDP));
    h.sent();
    h.send(&in_dialog("UPDATE", 3, "z9hG4bKu1", "c1", &tag, extra, SDP));
    assert_eq!(h.statuses(), vec![491]);
}

#[test]
fn out_of_order_cseq_in_dialog_gets_500() {
    let mut h = Harness::new();
    let (_key, tag) = h.established("");
    h.send(&in_dialog("INFO", 5, "z9hG4bKi1", "c1", &tag, "", ""));
    h.send(&in_dialog("INFO", 4, "z9hG4bKi2", "c1", &tag, "", ""));
    assert_eq!(h.statuses(), vec![200, 500]);
}

#[test]
fn hangup_sends_bye_with_route_set_remote_target_and_next_cseq() {
    let mut h = Harness::new();
    let (key, tag) = h.established("Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\n");
    h.ep.hangup(key, h.now).unwrap();
    let sent = h.sent();
    let Some(Message::Request(bye)) = sent.first() else {
        panic!("{sent:?}")
    };
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.uri.as_str(), "sip:a@127.0.0.1:5070");
    let routes: Vec<String> = bye
        .headers
        .values(&HeaderName::Route)
        .map(|t| t.to_string())
        .collect();
    assert_eq!(routes, vec!["<sip:p1.example;lr>", "<sip:p2.example;lr>"]);
    assert_eq!(bye.headers.from().unwrap().tag(), Some(tag.as_str()));
    assert_eq!(bye.headers.to().unwrap().tag(), Some("caller"));
    assert_eq!(bye.headers.cseq().unwrap().seq, 1);
    // The BYE's 200 ends the call.
    let via = bye.headers.get(&HeaderName::Via).unwrap().to_string();
    h.send(&format!(
        "SIP/2.0 200 OK\nVia: {via}\nFrom: {}\nTo: {}\nCall-ID: c1\nCSeq: 1 BYE\nContent-Length: 0\n\n",
        bye.headers.get(&HeaderName::From).unwrap(),
        bye.headers.get(&HeaderName::To).unwrap()
    ));
    let ev = h.events();
    assert!(
        matches!(
            ev.as_slice(),
            [Event::CallEnded {
                reason: EndReason::LocalHangup,
                ..
            }]
        ),
        "{ev:?}"
    );
}

#[test]
fn unanswered_bye_is_retransmitted_and_times_out_after_64_t1() {
    let mut h = Harness::new();
    let (key, _tag) = h.established("");
    h.ep.hangup(key, h.now).unwrap();
    h.sent();
    h.run_for(Duration::from_secs(33));
    let byes = h.sent().len();
    assert!(byes >= 9, "BYE retransmitted by Timer E ({byes})");
    assert!(matches!(
        h.events().as_slice(),
        [Event::CallEnded {
            reason: EndReason::ByeTimedOut,
            ..
        }]
    ));
}

#[test]
fn hangup_before_ack_waits_for_the_ack_then_sends_bye() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK1", "c1", "", SDP));
    let key = h.incoming_call();
    h.ep.answer(key, None, Vec::new(), h.now).unwrap();
    let tag = h
        .responses()
        .pop()
        .unwrap()
        .headers
        .to()
        .unwrap()
        .tag()
        .unwrap()
        .to_owned();
    h.ep.hangup(key, h.now).unwrap();
    assert!(h.sent().is_empty(), "no BYE before the ACK (RFC 3261 §15)");
    h.send(&in_dialog("ACK", 1, "z9hG4bKa", "c1", &tag, "", ""));
    let sent = h.sent();
    assert!(matches!(sent.first(), Some(Message::Request(r)) if r.method == Method::Bye));
}

#[test]
fn hangup_before_answer_rejects_with_480() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK1", "c1", "", SDP));
    let key = h.incoming_call();
    h.sent();
    h.ep.hangup(key, h.now).unwrap();
    assert_eq!(h.statuses(), vec![480]);
}

#[test]
fn session_timer_is_granted_with_refresher_and_expiry_sends_bye() {
    let mut h = Harness::new();
    h.send(&invite(
        "z9hG4bK1",
        "c1",
        "Supported: timer\nSession-Expires: 120\n",
        SDP,
    ));
    let key = h.incoming_call();
    h.ep.answer(key, Some(Bytes::from_static(b"v=0\r\n")), Vec::new(), h.now)
        .unwrap();
    let ok = h.responses().pop().unwrap();
    assert_eq!(
        ok.headers
            .get(&HeaderName::SessionExpires)
            .map(|t| t.as_str()),
        Some("120;refresher=uac")
    );
    assert_eq!(ok.headers.require(), vec![Text::from_static("timer")]);
    let tag = ok.headers.to().unwrap().tag().unwrap().to_owned();
    h.send(&in_dialog("ACK", 1, "z9hG4bKa", "c1", &tag, "", ""));
    h.events();
    // RFC 4028 §10: BYE at expiry minus min(32 s, interval/3) = 120 - 32 = 88 s.
    h.run_for(Duration::from_secs(87));
    assert!(h.sent().is_empty());
    h.run_for(Duration::from_secs(2));
    assert!(matches!(h.sent().first(), Some(Message::Request(r)) if r.method == Method::Bye));
    assert!(h
        .events()
        .iter()
        .any(|e| matches!(e, Event::SessionExpired { .. })));
}

#[test]
fn refresh_without_sdp_is_answered_with_our_last_sdp_and_restarts_the_timer() {
    let mut h = Harness::new();
    h.send(&invite(
        "z9hG4bK1",
        "c1",
        "Supported: timer\nSession-Expires: 120\n",
        SDP,
    ));
    let key = h.incoming_call();
    h.ep.answer(
        key,
        Some(Bytes::from_static(b"v=0 ours\r\n")),
        Vec::new(),
        h.now,
    )
    .unwrap();
    let tag = h
        .responses()
        .pop()
        .unwrap()
        .headers
        .to()
        .unwrap()
        .tag()
        .unwrap()
        .to_owned();
    h.send(&in_dialog("ACK", 1, "z9hG4bKa", "c1", &tag, "", ""));
    h.run_for(Duration::from_secs(60));
    h.send(&in_dialog(
        "UPDATE",
        2,
        "z9hG4bKu",
        "c1",
        &tag,
        "Session-Expires: 120;refresher=uac\n",
        "",
    ));
    let r = h.responses().pop().unwrap();
    assert_eq!((r.status, r.body.is_empty()), (StatusCode::OK, true));
    h.send(&in_dialog(
        "INVITE",
        3,
        "z9hG4bKr",
        "c1",
        &tag,
        "Contact: <sip:a@127.0.0.1:5070>\n",
        "",
    ));
    let r = h.responses().pop().unwrap();
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::OK, &b"v=0 ours\r\n"[..])
    );
    h.send(&in_dialog("ACK", 3, "z9hG4bKa3", "c1", &tag, "", ""));
    h.run_for(Duration::from_secs(87));
    assert!(
        h.sent()
            .iter()
            .all(|m| !matches!(m, Message::Request(r) if r.method == Method::Bye)),
        "refreshed"
    );
    assert!(!h
        .events()
        .iter()
        .any(|e| matches!(e, Event::SessionExpired { .. })));
}

#[test]
fn session_expires_below_min_se_gets_422_with_min_se() {
    let mut h = Harness::new();
    h.send(&invite(
        "z9hG4bK1",
        "c1",
        "Supported: timer\nSession-Expires: 30\n",
        SDP,
    ));
    let rs = h.responses();
    let r = rs.last().unwrap();
    assert_eq!(r.status, StatusCode::SESSION_INTERVAL_TOO_SMALL);
    assert_eq!(
        r.headers.get(&HeaderName::MinSe).map(|t| t.as_str()),
        Some("90")
    );
    assert!(h.events().is_empty());
}

#[test]
fn options_out_of_dialog_is_answered_with_allow_accept_supported() {
    let mut h = Harness::new();
    h.send(
        "OPTIONS sip:127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKo\n\
         From: <sip:lb@127.0.0.1>;tag=o1\nTo: <sip:127.0.0.1>\nCall-ID: o1\nCSeq: 1 OPTIONS\nMax-Forwards: 70\n\n",
    );
    let r = h.responses().pop().unwrap();
    assert_eq!(r.status, StatusCode::OK);
    for n in [HeaderName::Allow, HeaderName::Accept, HeaderName::Supported] {
        assert!(r.headers.get(&n).is_some(), "{n:?}");
    }
}

#[test]
fn register_gets_405_and_unknown_methods_get_501() {
    let mut h = Harness::new();
    h.send(
        "REGISTER sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKreg\n\
         From: <sip:a@127.0.0.1>;tag=r1\nTo: <sip:a@127.0.0.1>\nCall-ID: r1\nCSeq: 1 REGISTER\nMax-Forwards: 70\n\n",
    );
    let r = h.responses().pop().unwrap();
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers.get(&HeaderName::Allow).is_some());
    h.send(
        "FOO sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKfoo\n\
         From: <sip:a@127.0.0.1>;tag=r1\nTo: <sip:a@127.0.0.1>\nCall-ID: r2\nCSeq: 1 FOO\nMax-Forwards: 70\n\n",
    );
    assert_eq!(h.statuses(), vec![501]);
}

#[test]
fn invalid_requests_are_rejected_by_validation() {
    let mut h = Harness::new();
    // Unknown required extension → 420 with Unsupported.
    h.send(&invite("z9hG4bK1", "c1", "Require: 100rel\n", SDP));
    let r = h.responses().pop().unwrap();
    assert_eq!(r.status, StatusCode::BAD_EXTENSION);
    assert_eq!(
        r.headers.get(&HeaderName::Unsupported).map(|t| t.as_str()),
        Some("100rel")
    );
    // Unparsable version → 505.
    h.send("INVITE sip:1000@127.0.0.1 SIP/7.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK2\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@x>\nCall-ID: v\nCSeq: 1 INVITE\n\n");
    assert_eq!(h.statuses(), vec![505]);
    assert!(h.events().is_empty());
}

#[test]
fn calls_over_the_limit_get_503_with_retry_after() {
    let mut h = Harness::with(EndpointConfig {
        max_calls: 1,
        ..Default::default()
    });
    h.send(&invite("z9hG4bK1", "c1", "", SDP));
    h.incoming_call();
    h.sent();
    h.send(&invite("z9hG4bK2", "c2", "", SDP));
    let r = h.responses().pop().unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.get(&HeaderName::RetryAfter).is_some());
}

#[test]
fn stray_ack_and_stray_response_are_absorbed() {
    let mut h = Harness::new();
    h.send(&in_dialog("ACK", 1, "z9hG4bKs", "stray", "t", "", ""));
    h.send("SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnotours\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@x>;tag=2\nCall-ID: s\nCSeq: 1 BYE\n\n");
    assert!(h.sent().is_empty());
    assert!(h.events().is_empty());
}

#[test]
fn rfc2543_invite_retransmission_without_cookie_is_absorbed() {
    let mut h = Harness::new();
    h.send(&invite("oldstyle", "c1", "", SDP));
    h.incoming_call();
    h.sent();
    h.send(&invite("oldstyle", "c1", "", SDP));
    assert_eq!(h.statuses(), vec![100]);
    assert!(h.events().is_empty());
}

#[test]
fn commands_for_unknown_calls_are_refused() {
    let mut h = Harness::new();
    assert!(h.ep.answer(CallKey(999), None, Vec::new(), h.now).is_err());
    assert!(h.ep.hangup(CallKey(999), h.now).is_err());
}

#[test]
fn as_refresher_we_send_a_reinvite_at_half_interval_and_ack_its_2xx() {
    let mut h = Harness::new();
    h.send(&invite(
        "z9hG4bK1",
        "c1",
        "Supported: timer\nSession-Expires: 120;refresher=uas\n",
        SDP,
    ));
    let key = h.incoming_call();
    h.ep.answer(
        key,
        Some(Bytes::from_static(b"v=0 ours\r\n")),
        Vec::new(),
        h.now,
    )
    .unwrap();
    let ok = h.responses().pop().unwrap();
    assert_eq!(
        ok.headers
            .get(&HeaderName::SessionExpires)
            .map(|t| t.as_str()),
        Some("120;refresher=uas")
    );
    let tag = ok.headers.to().unwrap().tag().unwrap().to_owned();
    h.send(&in_dialog("ACK", 1, "z9hG4bKa", "c1", &tag, "", ""));
    h.events();
    h.run_for(Duration::from_secs(59));
    assert!(h.sent().is_empty());
    h.run_for(Duration::from_secs(2));
    let sent = h.sent();
    let Some(Message::Request(reinvite)) = sent.first() else {
        panic!("{sent:?}")
    };
    assert_eq!(reinvite.method, Method::Invite);
    assert_eq!(reinvite.body.as_ref(), b"v=0 ours\r\n");
    assert_eq!(
        reinvite
            .headers
            .get(&HeaderName::SessionExpires)
            .map(|t| t.as_str()),
        Some("120;refresher=uas")
    );
    let cseq = reinvite.headers.cseq().unwrap().seq;
    h.send(&format!(
        "SIP/2.0 200 OK\nVia: {}\nFrom: {}\nTo: {}\nCall-ID: c1\nCSeq: {cseq} INVITE\nContact: <sip:a@127.0.0.1:5070>\nContent-Length: 0\n\n",
        reinvite.headers.get(&HeaderName::Via).unwrap(),
        reinvite.headers.get(&HeaderName::From).unwrap(),
        reinvite.headers.get(&HeaderName::To).unwrap()
    ));
    let sent = h.sent();
    let Some(Message::Request(ack)) = sent.first() else {
        panic!("{sent:?}")
    };
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.headers.cseq().unwrap().seq, cseq);
    assert_ne!(
        ack.headers.top_via().unwrap().branch(),
        reinvite.headers.top_via().unwrap().branch()
    );
    // The refresh restarted the timer: nothing more for another 59 s, and no expiry.
    h.run_for(Duration::from_secs(59));
    assert!(h
        .sent()
        .iter()
        .all(|m| !matches!(m, Message::Request(r) if r.method == Method::Bye)));
    assert!(h.events().is_empty());
}

#[test]
fn failed_refresh_ends_the_call_with_bye() {
    let mut h = Harness::new();
    h.send(&invite(
        "z9hG4bK1",
        "c1",
        "Supported: timer\nSession-Expires: 120;refresher=uas\n",
        SDP,
    ));
    let key = h.incoming_call();
    h.ep.answer(key, Some(Bytes::from_static(b"v=0\r\n")), Vec::new(), h.now)
        .unwrap();
    let tag = h
        .responses()
        .pop()
        .unwrap()
        .headers
        .to()
        .unwrap()
        .tag()
        .unwrap()
        .to_owned();
    h.send(&in_dialog("ACK", 1, "z9hG4bKa", "c1", &tag, "", ""));
    h.events();
    h.run_for(Duration::from_secs(61));
    h.sent();
    // Nobody answers the refresh: Timer B, then BYE.
    h.run_for(Duration::from_secs(33));
    let sent = h.sent();
    assert!(sent
        .iter()
        .any(|m| matches!(m, Message::Request(r) if r.method == Method::Bye)));
    assert!(h
        .events()
        .iter()
        .any(|e| matches!(e, Event::SessionExpired { .. })));
}

#[test]
fn call_never_answered_by_the_gateway_is_refused_with_480_after_the_answer_timeout() {
    let mut h = Harness::with(EndpointConfig {
        answer_timeout: Duration::from_secs(60),
        ..Default::default()
    });
    h.send(&invite("z9hG4bK1", "c1", "", SDP));
    let key = h.incoming_call();
    h.sent();
    h.run_for(Duration::from_secs(59));
    assert!(h.sent().is_empty());
    h.run_for(Duration::from_millis(1200));
    assert_eq!(
        h.statuses(),
        vec![480],
        "sent at 60 s, first Timer G retransmission not yet due"
    );
    assert!(
        matches!(h.events().as_slice(), [Event::CallEnded { key: k, reason: EndReason::Unanswered }] if *k == key)
    );
}

// ---- liberal acceptance (RFC 4475, RFC 2543 peers, broken Via) ----

#[test]
fn request_with_a_malformed_top_via_gets_400_at_its_source() {
    // RFC 4475 §3.1.2.1 badinv01: `Via: SIP/2.0/UDP 192.0.2.15;;,;,,` cannot be routed,
    // but the source address can still hear why its request failed.
    let mut h = Harness::new();
    let bad_via = "Via: SIP/2.0/UDP 192.0.2.15;;,;,,";
    let raw = invite("z9hG4bK1", "c1", "", SDP).replace(
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport",
        bad_via,
    );
    h.send(&raw);
    // `sent` checks that everything goes back to the source.
    let r = h.responses();
    assert_eq!(
        r.iter().map(|r| r.status.0).collect::<Vec<_>>(),
        vec![400],
        "one final answer, no 100 Trying: no transaction was made"
    );
    assert_eq!(
        r[0].headers.get(&HeaderName::Via).map(|t| t.as_str()),
        bad_via.strip_prefix("Via: "),
        "the Via is copied as received"
    );
    assert!(r[0].headers.to().unwrap().tag().is_some());
    assert!(h.events().is_empty(), "no call");
}

#[test]
fn ack_with_a_malformed_via_is_not_answered() {
    let mut h = Harness::new();
    let raw = in_dialog("ACK", 1, "z9hG4bKa", "c1", "x", "", "").replace(
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa;rport",
        "Via: SIP/2.0/UDP 192.0.2.15;;,;,,",
    );
    h.send(&raw);
    assert!(
        h.sent().is_empty(),
        "RFC 3261 §17.2.1: an ACK gets no response"
    );
}

#[test]
fn request_whose_via_cannot_be_routed_is_answered_at_its_source() {
    // Transports we do not run (RFC 4475 transports.dat lists such Via values), no rport.
    for via in [
        "Via: SIP/2.0/SCTP sbc.example.com;branch=z9hG4bKsctp",
        "Via: SIP/2.0/UNKNOWN 192.0.2.7:5999;branch=z9hG4bKunknown",
    ] {
        let mut h = Harness::new();
        let raw = in_dialog("OPTIONS", 1, "z9hG4bKo", "o1", "", "", "")
            .replace(";tag=\n", "\n")
            .replace("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKo;rport", via);
        h.send(&raw);
        assert_eq!(h.statuses(), vec![200], "{via}");
    }
}

#[test]
fn rfc2543_invite_without_contact_is_answered_and_its_dialog_targets_the_from_uri() {
    // RFC 4475 §3.4.1 inv2543: RFC 2543 did not require Contact; accept it for backward
    // compatibility.
    let mut h = Harness::new();
    let raw = invite("z9hG4bK1", "c1", "", SDP).replace("Contact: <sip:a@127.0.0.1:5070>\n", "");
    h.send(&raw);
    assert_eq!(h.statuses(), vec![100]);
    let key = h.incoming_call();
    h.ep.answer(key, Some(Bytes::from_static(b"v=0\r\n")), Vec::new(), h.now)
        .expect("a dialog can be made without Contact");
    let ok = h.responses().pop().expect("200");
    assert_eq!(ok.status, StatusCode::OK);
    let tag = ok.headers.to().unwrap().tag().unwrap().to_owned();
    h.send(&in_dialog("ACK", 1, "z9hG4bKack1", "c1", &tag, "", ""));
    assert!(matches!(h.events().as_slice(), [Event::Acked { .. }]));
    h.ep.hangup(key, h.now).unwrap();
    let bye = h
        .sent()
        .into_iter()
        .find_map(|m| match m {
            Message::Request(r) if r.method == Method::Bye => Some(r),
            _ => None,
        })
        .expect("BYE");
    assert_eq!(bye.uri.as_str(), "sip:a@127.0.0.1");
}

#[test]
fn invite_with_an_unreadable_contact_is_still_refused() {
    let mut h = Harness::new();
    for (n, contact) in ["Contact: <sip:a@127.0.0.1:5070\n", "Contact: *\n"]
        .into_iter()
        .enumerate()
    {
        let raw = invite(&format!("z9hG4bK{n}"), &format!("c{n}"), "", SDP)
            .replace("Contact: <sip:a@127.0.0.1:5070>\n", contact);
        h.send(&raw);
        assert_eq!(h.statuses(), vec![100, 400], "{contact}");
    }
    assert!(h.events().is_empty());
}
