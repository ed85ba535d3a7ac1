//! The endpoint's source filter: requests from sources the gateway refuses are answered
//! statelessly or dropped before any transaction, call or `100 Trying` exists.

use bytes::Bytes;
use dialin_sip::endpoint::{Endpoint, EndpointConfig, Event, SourceFilter, SourceVerdict};
use dialin_sip::message::{Limits, Message, StatusCode};
use dialin_sip::transport::{ListenAddr, Transport};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const SDP: &str = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn invite(branch: &str, call_id: &str) -> Bytes {
    let raw = format!(
        "INVITE sip:1000@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\n\
         From: \"A\" <sip:a@127.0.0.1>;tag=caller\nTo: <sip:1000@127.0.0.1>\nCall-ID: {call_id}\nCSeq: 1 INVITE\n\
         Contact: <sip:a@127.0.0.1:5070>\nMax-Forwards: 70\nContent-Type: application/sdp\nContent-Length: {}\n\n{SDP}",
        SDP.len()
    );
    Bytes::from(raw.replace('\n', "\r\n"))
}

fn ack(branch: &str, call_id: &str) -> Bytes {
    let raw = format!(
        "ACK sip:1000@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\n\
         From: \"A\" <sip:a@127.0.0.1>;tag=caller\nTo: <sip:1000@127.0.0.1>;tag=x\nCall-ID: {call_id}\nCSeq: 1 ACK\n\
         Max-Forwards: 70\nContent-Length: 0\n\n"
    );
    Bytes::from(raw.replace('\n', "\r\n"))
}

/// An endpoint whose filter allows only `allowed`, rejects others with 403 for the
/// first `rejects` requests, then drops; also counts how often it was asked.
fn endpoint(allowed: IpAddr, rejects: usize) -> (Endpoint, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let filter = SourceFilter::new(move |ip, _req, _now| {
        let n = count.fetch_add(1, Ordering::Relaxed);
        if ip == allowed {
            SourceVerdict::Allow
        } else if n < rejects {
            SourceVerdict::Reject(StatusCode(403))
        } else {
            SourceVerdict::Drop
        }
    });
    let config = EndpointConfig {
        local_addrs: vec![ListenAddr {
            transport: Transport::Udp,
            addr: "127.0.0.1:5060".parse().unwrap(),
        }],
        source_filter: Some(filter),
        ..EndpointConfig::default()
    };
    (Endpoint::new(config), asked)
}

fn statuses(ep: &mut Endpoint) -> Vec<u16> {
    std::iter::from_fn(|| ep.poll_transmit())
        .filter_map(|t| match Message::parse(t.bytes, &Limits::default()) {
            Ok(Message::Response(r)) => Some(r.status.0),
            _ => None,
        })
        .collect()
}

#[test]
fn rejected_source_gets_a_stateless_403_without_100_trying_or_call_state() {
    let (mut ep, _) = endpoint("127.0.0.1".parse().unwrap(), usize::MAX);
    let scanner: SocketAddr = "127.0.0.9:5070".parse().unwrap();
    ep.handle_datagram(
        invite("z9hG4bK1", "c1"),
        scanner,
        Transport::Udp,
        None,
        Instant::now(),
    );
    assert_eq!(statuses(&mut ep), vec![403]);
    assert_eq!(ep.transaction_count(), 0);
    assert_eq!(ep.call_count(), 0);
    assert!(ep.poll_event().is_none(), "the gateway never hears of it");
    assert!(ep.poll_timeout().is_none(), "no timer armed");
}

#[test]
fn dropped_source_gets_no_answer_and_leaves_nothing_behind() {
    let (mut ep, _) = endpoint("127.0.0.1".parse().unwrap(), 0);
    let scanner: SocketAddr = "127.0.0.9:5070".parse().unwrap();
    for i in 0..100 {
        ep.handle_datagram(
            invite(&format!("z9hG4bK{i}"), &format!("c{i}")),
            scanner,
            Transport::Udp,
            None,
            Instant::now(),
        );
    }
    assert!(statuses(&mut ep).is_empty());
    assert_eq!(ep.transaction_count(), 0);
    assert_eq!(ep.call_count(), 0);
}

#[test]
fn ack_from_a_rejected_source_is_never_answered() {
    let (mut ep, asked) = endpoint("127.0.0.1".parse().unwrap(), usize::MAX);
    let scanner: SocketAddr = "127.0.0.9:5070".parse().unwrap();
    ep.handle_datagram(
        ack("z9hG4bKa", "c1"),
        scanner,
        Transport::Udp,
        None,
        Instant::now(),
    );
    assert_eq!(asked.load(Ordering::Relaxed), 1, "the filter saw the ACK");
    assert!(statuses(&mut ep).is_empty());
}

#[test]
fn allowed_source_goes_through_the_normal_invite_path() {
    let (mut ep, _) = endpoint("127.0.0.1".parse().unwrap(), usize::MAX);
    let trunk: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    ep.handle_datagram(
        invite("z9hG4bK1", "c1"),
        trunk,
        Transport::Udp,
        None,
        Instant::now(),
    );
    assert_eq!(statuses(&mut ep), vec![100]);
    assert!(matches!(ep.poll_event(), Some(Event::IncomingCall { .. })));
    assert_eq!(ep.call_count(), 1);
}
