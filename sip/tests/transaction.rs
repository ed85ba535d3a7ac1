//! RFC 3261 §17 transaction behaviour, driven with a simulated clock.

use bytes::Bytes;
use dialin_sip::message::{Limits, Message, Method, Request, StatusCode};
use dialin_sip::timer::Timers;
use dialin_sip::transaction::{
    ack_for_non2xx, ClientResponse, ClientState, ClientTimeout, ClientTransaction, ServerState,
    ServerTimeout, ServerTransaction, TransactionKey,
};
use dialin_sip::transport::{Target, Transport};
use std::time::{Duration, Instant};

fn udp() -> Target {
    Target {
        addr: "127.0.0.1:5070".parse().unwrap(),
        transport: Transport::Udp,
        conn: None,
    }
}
fn tcp() -> Target {
    Target {
        transport: Transport::Tcp,
        ..udp()
    }
}
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn request(raw: &str) -> Request {
    match Message::parse(Bytes::from(raw.replace('\n', "\r\n")), &Limits::default()) {
        Ok(Message::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn invite(branch: &str) -> Request {
    request(&format!(
        "INVITE sip:1000@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\nFrom: <sip:a@127.0.0.1>;tag=f1\n\
         To: <sip:1000@127.0.0.1>\nCall-ID: c1\nCSeq: 1 INVITE\nContact: <sip:a@127.0.0.1:5070>\nMax-Forwards: 70\n\n"
    ))
}

/// Drives `handle_timeout` at each deadline until `until`, collecting retransmission times.
fn server_retransmits(
    tx: &mut ServerTransaction,
    start: Instant,
    until: Instant,
) -> (Vec<Duration>, Option<ServerTimeout>) {
    let mut times = Vec::new();
    while let Some(at) = tx.poll_timeout() {
        if at > until {
            break;
        }
        match tx.handle_timeout(at) {
            ServerTimeout::Retransmit(_) => times.push(at - start),
            ServerTimeout::Idle => {}
            end => return (times, Some(end)),
        }
    }
    (times, None)
}

#[test]
fn invite_non2xx_final_is_retransmitted_with_timer_g_backoff_until_timer_h() {
    let t0 = Instant::now();
    let mut tx = ServerTransaction::new(&Method::Invite, udp(), Timers::default());
    assert_eq!(tx.state(), ServerState::Proceeding);
    assert!(tx
        .respond(StatusCode::BUSY_HERE, Bytes::from_static(b"486"), t0)
        .is_some());
    let (times, end) = server_retransmits(&mut tx, t0, t0 + Duration::from_secs(60));
    // G: 0.5, 1, 2, 4, 4, 4... after each send; cumulative 0.5, 1.5, 3.5, 7.5, 11.5...
    let expected: Vec<Duration> = [
        500u64, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ]
    .iter()
    .map(|m| ms(*m))
    .collect();
    assert_eq!(times, expected);
    // H: 64·T1 = 32 s without ACK.
    assert_eq!(end, Some(ServerTimeout::NoAck));
    assert_eq!(tx.state(), ServerState::Terminated);
}

#[test]
fn ack_stops_retransmissions_and_timer_i_absorbs_acks_for_t4() {
    let t0 = Instant::now();
    let mut tx = ServerTransaction::new(&Method::Invite, udp(), Timers::default());
    tx.respond(StatusCode::FORBIDDEN, Bytes::from_static(b"403"), t0);
    assert!(tx.on_ack(t0 + ms(700)));
    assert_eq!(tx.state(), ServerState::Confirmed);
    assert_eq!(
        tx.poll_timeout(),
        Some(t0 + ms(700) + Duration::from_secs(5))
    );
    assert!(tx.on_ack(t0 + ms(900)), "retransmitted ACK is absorbed");
    assert_eq!(tx.on_retransmission(), None);
    assert_eq!(tx.handle_timeout(t0 + ms(5700)), ServerTimeout::Terminated);
}

#[test]
fn timer_i_is_zero_and_no_timer_g_over_tcp() {
    let t0 = Instant::now();
    let mut tx = ServerTransaction::new(&Method::Invite, tcp(), Timers::default());
    tx.respond(StatusCode::FORBIDDEN, Bytes::from_static(b"403"), t0);
    assert_eq!(
        tx.poll_timeout(),
        Some(t0 + Duration::from_secs(32)),
        "only Timer H runs"
    );
    tx.on_ack(t0 + ms(10));
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(10)));
}

#[test]
fn retransmitted_invite_gets_the_last_provisional_again() {
    let t0 = Instant::now();
    let mut tx = ServerTransaction::new(&Method::Invite, udp(), Timers::default());
    tx.respond(StatusCode::TRYING, Bytes::from_static(b"100"), t0);
    assert_eq!(tx.on_retransmission(), Some(Bytes::from_static(b"100")));
    tx.respond(StatusCode::RINGING, Bytes::from_static(b"180"), t0);
    assert_eq!(tx.on_retransmission(), Some(Bytes::from_static(b"180")));
}

#[test]
fn invite_2xx_moves_to_accepted_and_ends_after_timer_l() {
    let t0 = Instant::now();
    let mut tx = ServerTransaction::new(&Method::Invite, udp(), Timers::default());
    tx.respond(StatusCode::OK, Bytes::from_static(b"200"), t0);
    assert_eq!(tx.state(), ServerState::Accepted);
    assert!(!tx.on_ack(t0), "the ACK to a 2xx belongs to the dialog");
    assert_eq!(
        tx.handle_timeout(t0 + Duration::from_secs(31)),
        ServerTimeout::Idle
    );
    assert_eq!(
        tx.handle_timeout(t0 + Duration::from_secs(32)),
        ServerTimeout::Terminated
    );
}

#[test]
fn non_invite_server_absorbs_retransmits_with_last_response_until_timer_j() {
    let t0 = Instant::now();
    let mut tx = ServerTransaction::new(&Method::Bye, udp(), Timers::default());
    assert_eq!(tx.state(), ServerState::Trying);
    assert_eq!(tx.on_retransmission(), None, "nothing to resend in Trying");
    tx.respond(StatusCode::OK, Bytes::from_static(b"200"), t0);
    assert_eq!(tx.state(), ServerState::Completed);
    assert_eq!(tx.on_retransmission(), Some(Bytes::from_static(b"200")));
    assert!(
        tx.respond(StatusCode::OK, Bytes::from_static(b"again"), t0)
            .is_none(),
        "one final only"
    );
    assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    assert_eq!(
        tx.handle_timeout(t0 + Duration::from_secs(32)),
        ServerTimeout::Terminated
    );
}

#[test]
fn non_invite_server_timer_j_is_zero_over_tcp() {
    let t0 = Instant::now();
    let mut tx = ServerTransaction::new(&Method::Options, tcp(), Timers::default());
    tx.respond(StatusCode::OK, Bytes::from_static(b"200"), t0);
    assert_eq!(tx.poll_timeout(), Some(t0));
}

#[test]
fn configured_t1_t2_scale_the_timers() {
    let t0 = Instant::now();
    let timers = Timers {
        t1: ms(100),
        t2: ms(400),
        t4: ms(1000),
    };
    let mut tx = ServerTransaction::new(&Method::Invite, udp(), timers);
    tx.respond(StatusCode::BUSY_HERE, Bytes::from_static(b"486"), t0);
    let (times, end) = server_retransmits(&mut tx, t0, t0 + Duration::from_secs(10));
    assert_eq!(
        &times[..5],
        &[ms(100), ms(300), ms(700), ms(1100), ms(1500)]
    );
    assert_eq!(end, Some(ServerTimeout::NoAck));
}

#[test]
fn invite_client_retransmits_with_timer_a_doubling_and_times_out_with_timer_b_at_32s() {
    let t0 = Instant::now();
    let mut tx = ClientTransaction::new(
        &Method::Invite,
        Bytes::from_static(b"INVITE"),
        udp(),
        Timers::default(),
        t0,
    );
    let mut times = Vec::new();
    let mut end = None;
    while let Some(at) = tx.poll_timeout() {
        match tx.handle_timeout(at) {
            ClientTimeout::Retransmit(_) => times.push(at - t0),
            ClientTimeout::Idle => {}
            e => {
                end = Some((e, at - t0));
                break;
            }
        }
    }
    assert_eq!(
        times,
        vec![ms(500), ms(1500), ms(3500), ms(7500), ms(15500), ms(31500)]
    );
    assert_eq!(
        end,
        Some((ClientTimeout::TimedOut, Duration::from_secs(32)))
    );
}

#[test]
fn invite_client_stops_timer_a_on_provisional_and_acks_non2xx_with_timer_d() {
    let t0 = Instant::now();
    let mut tx = ClientTransaction::new(
        &Method::Invite,
        Bytes::from_static(b"INVITE"),
        udp(),
        Timers::default(),
        t0,
    );
    assert_eq!(
        tx.on_response(StatusCode::RINGING, t0 + ms(100)),
        ClientResponse::Deliver
    );
    assert_eq!(
        tx.poll_timeout(),
        Some(t0 + Duration::from_secs(32)),
        "only Timer B left"
    );
    assert_eq!(
        tx.on_response(StatusCode::REQUEST_PENDING, t0 + ms(200)),
        ClientResponse::DeliverAndAck
    );
    tx.set_ack(Bytes::from_static(b"ACK"));
    assert_eq!(tx.state(), ClientState::Completed);
    // A retransmitted final gets the same ACK, not the TU.
    assert_eq!(
        tx.on_response(StatusCode::REQUEST_PENDING, t0 + ms(300)),
        ClientResponse::Absorb(Some(Bytes::from_static(b"ACK")))
    );
    assert_eq!(
        tx.poll_timeout(),
        Some(t0 + ms(200) + Duration::from_secs(32)),
        "Timer D"
    );
}

#[test]
fn invite_client_2xx_terminates_and_leaves_the_ack_to_the_dialog() {
    let t0 = Instant::now();
    let mut tx = ClientTransaction::new(
        &Method::Invite,
        Bytes::from_static(b"INVITE"),
        udp(),
        Timers::default(),
        t0,
    );
    assert_eq!(tx.on_response(StatusCode::OK, t0), ClientResponse::Deliver);
    assert_eq!(tx.state(), ClientState::Terminated);
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn non_invite_client_uses_timer_e_capped_at_t2_then_timer_f() {
    let t0 = Instant::now();
    let mut tx = ClientTransaction::new(
        &Method::Bye,
        Bytes::from_static(b"BYE"),
        udp(),
        Timers::default(),
        t0,
    );
    let mut times = Vec::new();
    let mut end = None;
    while let Some(at) = tx.poll_timeout() {
        match tx.handle_timeout(at) {
            ClientTimeout::Retransmit(_) => times.push(at - t0),
            ClientTimeout::Idle => {}
            e => {
                end = Some((e, at - t0));
                break;
            }
        }
    }
    assert_eq!(
        &times[..6],
        &[ms(500), ms(1500), ms(3500), ms(7500), ms(11500), ms(15500)]
    );
    assert_eq!(
        end,
        Some((ClientTimeout::TimedOut, Duration::from_secs(32)))
    );
}

#[test]
fn non_invite_client_in_proceeding_retransmits_every_t2_and_timer_k_follows_the_final() {
    let t0 = Instant::now();
    let mut tx = ClientTransaction::new(
        &Method::Info,
        Bytes::from_static(b"INFO"),
        udp(),
        Timers::default(),
        t0,
    );
    tx.on_response(StatusCode::TRYING, t0 + ms(100));
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(4100)));
    assert_eq!(
        tx.on_response(StatusCode::OK, t0 + ms(200)),
        ClientResponse::Deliver
    );
    assert_eq!(
        tx.on_response(StatusCode::OK, t0 + ms(300)),
        ClientResponse::Absorb(None)
    );
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(5200)), "Timer K = T4");
    assert_eq!(tx.handle_timeout(t0 + ms(5200)), ClientTimeout::Terminated);
}

#[test]
fn non_invite_client_over_tcp_does_not_retransmit() {
    let t0 = Instant::now();
    let tx = ClientTransaction::new(
        &Method::Bye,
        Bytes::from_static(b"BYE"),
        tcp(),
        Timers::default(),
        t0,
    );
    assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
}

#[test]
fn ack_and_cancel_find_the_invite_transaction_by_branch() {
    let inv = invite("z9hG4bKabc");
    let ack = request(
        "ACK sip:1000@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc\nFrom: <sip:a@127.0.0.1>;tag=f1\n\
         To: <sip:1000@127.0.0.1>;tag=ours\nCall-ID: c1\nCSeq: 1 ACK\nMax-Forwards: 70\n\n",
    );
    let cancel = request(
        "CANCEL sip:1000@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc\nFrom: <sip:a@127.0.0.1>;tag=f1\n\
         To: <sip:1000@127.0.0.1>\nCall-ID: c1\nCSeq: 1 CANCEL\nMax-Forwards: 70\n\n",
    );
    let k = TransactionKey::for_request(&inv).unwrap();
    assert_eq!(TransactionKey::for_request(&ack).unwrap(), k);
    let ck = TransactionKey::for_request(&cancel).unwrap();
    assert_ne!(ck, k, "CANCEL is its own transaction");
    assert_eq!(ck.with_method(Method::Invite), k);
    assert_ne!(
        TransactionKey::for_request(&invite("z9hG4bKother")).unwrap(),
        k
    );
}

#[test]
fn rfc2543_requests_without_magic_cookie_match_by_call_id_cseq_tags_and_via() {
    let a = invite("oldbranch1");
    let again = invite("oldbranch1");
    let ack = request(
        "ACK sip:1000@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=oldbranch1\nFrom: <sip:a@127.0.0.1>;tag=f1\n\
         To: <sip:1000@127.0.0.1>;tag=ours\nCall-ID: c1\nCSeq: 1 ACK\nMax-Forwards: 70\n\n",
    );
    let k = TransactionKey::for_request(&a).unwrap();
    assert!(matches!(k, TransactionKey::Rfc2543 { .. }));
    assert_eq!(TransactionKey::for_request(&again).unwrap(), k);
    assert_eq!(TransactionKey::for_request(&ack).unwrap(), k);
    let other_call = request(
        "INVITE sip:1000@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=oldbranch1\nFrom: <sip:a@127.0.0.1>;tag=f1\n\
         To: <sip:1000@127.0.0.1>\nCall-ID: c2\nCSeq: 1 INVITE\nMax-Forwards: 70\n\n",
    );
    assert_ne!(TransactionKey::for_request(&other_call).unwrap(), k);
}

#[test]
fn ack_for_non2xx_keeps_the_invite_branch_and_takes_the_response_to_tag() {
    let inv = invite("z9hG4bKxyz");
    let resp = dialin_sip::message::Response::to_request(&inv, StatusCode::BUSY_HERE, None)
        .with_to_tag("t9");
    let ack = ack_for_non2xx(&inv, &resp);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.headers.top_via().unwrap().branch(), Some("z9hG4bKxyz"));
    assert_eq!(ack.headers.to().unwrap().tag(), Some("t9"));
    assert_eq!(ack.headers.cseq().unwrap().seq, 1);
    assert_eq!(ack.headers.cseq().unwrap().method, Method::Ack);
}
