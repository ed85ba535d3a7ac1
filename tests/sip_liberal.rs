//! Liberal acceptance, end to end: the real `dialin serve` binary against every message of
//! the RFC 4475 torture corpus and against what real peers send (multipart bodies, Opus
//! with DTMF at 8000 only, broken framing, broken Via).
//!
//! Each corpus message is sent from 127.0.0.1 (a trunk source) exactly as archived, over
//! TCP so that the answer comes back on the connection whatever the message's Via says.
//! Messages whose framing is only defined for a datagram (no Content-Length, an
//! unterminated header section, a body shorter than Content-Length, octets after the
//! message, two Content-Length values) go over UDP with `;rport` added to their top Via,
//! the one transport-level rewrite, so that the answer comes back to the sending socket.
//! Each message is judged on its final response against its INDEX verdict: a call the
//! gateway accepts must be a real call (200 with an SDP answer, then ACK and BYE end it),
//! a message that must be refused gets the status the RFC names, a response is dropped.
//! Where the INDEX allows liberal acceptance we accept, as `sip/tests/rfc4475.rs` documents.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dialin_media::dtmf::event::{EventSender, DEFAULT_VOLUME};
use dialin_media::dtmf::Digit;
use dialin_media::rtp::{Header, PayloadType as RtpPayloadType, RtpTimestamp, SeqNo, Ssrc};
use dialin_sip::header::HeaderName;
use dialin_sip::message::{Limits, Message, Method, Response};
use dialin_sip::sdp::{MediaKind, SessionDescription};
use dialin_sip::transport::StreamFramer;
use support::gateway::{Gateway, GatewayOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const SECOND: Duration = Duration::from_secs(1);
/// How long the gateway may take to decide a call (trunk, PIN store, media ports).
const FINAL_WITHIN: Duration = Duration::from_secs(10);

// ---- the corpus ----

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/conformance/rfc4475"
    ));
    if dir.join("INDEX").is_file() {
        return Some(dir);
    }
    if std::env::var("DIALIN_STRICT_TESTS").as_deref() == Ok("1") {
        panic!("RFC 4475 corpus missing at {}", dir.display());
    }
    eprintln!("skipping: RFC 4475 corpus not found at {}", dir.display());
    None
}

/// (file, verdict) rows of the INDEX table.
fn index(dir: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.join("INDEX")).expect("INDEX readable");
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let file = w.next()?;
            if !file.ends_with(".dat") {
                return None;
            }
            let _section = w.next()?;
            let verdict = w.next()?;
            Some((file.to_owned(), verdict.to_owned()))
        })
        .collect()
}

fn read_corpus(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// What the gateway must do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A final response with this status.
    Status(u16),
    /// The INVITE is a call: 200 with an SDP answer; ACK and BYE end it.
    Call,
    /// A response sent to the gateway: no answer; the connection still serves a request.
    Dropped,
    /// No verdict: whatever it answers, the connection still serves a request.
    Survives,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Tcp,
    /// UDP, with `;rport` added to the top Via.
    Udp,
}

/// The expectation for each corpus message, and the transport it needs.
fn expectation(stem: &str, verdict: &str) -> Option<(Via, Expect)> {
    use Expect::*;
    let tcp = |e| Some((Via::Tcp, e));
    let udp = |e| Some((Via::Udp, e));
    match (verdict, stem) {
        // 3.1.1: valid messages. Requests we do not serve are answered as a UA that is
        // no registrar: 405 for REGISTER and MESSAGE, 501 for unknown methods.
        ("MUST-PARSE", "wsinv") => tcp(Status(481)), // To tag of a dialog that does not exist
        ("MUST-PARSE", "intmeth" | "esc02") => tcp(Status(501)),
        ("MUST-PARSE", "esc01" | "longreq") => tcp(Call),
        ("MUST-PARSE", "escnull" | "mpart01") => tcp(Status(405)),
        ("MUST-PARSE", "lwsdisp" | "semiuri" | "transports") => tcp(Status(200)),
        // Octets after the REGISTER in the datagram are ignored, not a second request.
        ("MUST-PARSE", "dblreq") => udp(Status(405)),
        ("MUST-PARSE", "unreason" | "noreason") => tcp(Dropped),
        // 3.1.2: invalid messages.
        (
            "MUST-REJECT",
            "badinv01" | "ncl" | "scalar02" | "quotbal" | "ltgtruri" | "lwsruri" | "lwsstart"
            | "trws" | "mismatch01",
        ) => tcp(Status(400)),
        ("MUST-REJECT", "clerr" | "baddn") => udp(Status(400)),
        ("MUST-REJECT", "badvers") => tcp(Status(505)),
        ("MUST-REJECT", "mismatch02") => tcp(Status(501)),
        ("MUST-REJECT", "scalarlg" | "bigcode") => tcp(Dropped),
        // Liberal acceptance, as the RFC allows.
        ("MUST-REJECT", "escruri" | "baddate") => tcp(Call),
        ("MUST-REJECT", "regbadct") => tcp(Status(405)),
        ("MUST-REJECT", "badaspec") => tcp(Status(200)),
        // 3.2 - 3.4: parse, then the transaction or application layer decides.
        ("PARSE-SEMANTIC", "badbranch" | "insuf" | "unksm2" | "multi01") => tcp(Status(400)),
        ("PARSE-SEMANTIC", "unkscm" | "novelsc") => tcp(Status(416)),
        ("PARSE-SEMANTIC", "bext01") => tcp(Status(420)),
        ("PARSE-SEMANTIC", "invut") => tcp(Status(415)),
        ("PARSE-SEMANTIC", "sdp01") => tcp(Status(406)),
        ("PARSE-SEMANTIC", "regaut01" | "cparam01" | "cparam02" | "regescrt") => tcp(Status(405)),
        ("PARSE-SEMANTIC", "zeromf") => tcp(Status(200)),
        // RFC 4475 §3.3.9: over UDP the element SHOULD respond with an error.
        ("PARSE-SEMANTIC", "mcl01") => udp(Status(400)),
        ("PARSE-SEMANTIC", "bcast") => tcp(Dropped),
        // RFC 2543 syntax, no Contact, no Content-Length: accepted for backward compatibility.
        ("PARSE-SEMANTIC", "inv2543") => udp(Call),
        ("UNREFERENCED", _) => tcp(Survives),
        _ => None,
    }
}

/// Adds `;rport` to the first value of the top Via so that a UDP answer comes back to the
/// sending socket (RFC 3581); nothing else of the message changes.
fn with_rport(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 6);
    let mut rest = raw;
    while let Some(n) = rest.iter().position(|&b| b == b'\n') {
        let (line, tail) = rest.split_at(n + 1);
        rest = tail;
        if is_via_line(line) {
            // Before the first comma (a second value), else before the line end.
            let text_end = line.len()
                - line
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_whitespace())
                    .count();
            let at = line.iter().position(|&b| b == b',').unwrap_or(text_end);
            out.extend_from_slice(&line[..at]);
            out.extend_from_slice(b";rport");
            out.extend_from_slice(&line[at..]);
            break;
        }
        out.extend_from_slice(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            // The header section ended without a Via.
            break;
        }
    }
    out.extend_from_slice(rest);
    out
}

/// `Via:` or its compact form `v:`, in any case, with optional space before the colon.
fn is_via_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = String::from_utf8_lossy(&line[..colon])
        .trim()
        .to_ascii_lowercase();
    !line.starts_with(b" ") && !line.starts_with(b"\t") && (name == "via" || name == "v")
}

// ---- a SIP peer on loopback ----

enum Peer {
    Tcp {
        stream: TcpStream,
        framer: StreamFramer,
        closed: bool,
    },
    Udp {
        sock: UdpSocket,
        gateway: SocketAddr,
    },
}

impl Peer {
    async fn tcp(gw: &Gateway) -> Peer {
        let stream = TcpStream::connect(gw.sip)
            .await
            .expect("connect to the gateway");
        stream.set_nodelay(true).expect("nodelay");
        Peer::Tcp {
            stream,
            framer: StreamFramer::new(Limits::default()),
            closed: false,
        }
    }

    async fn udp(gw: &Gateway) -> Peer {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("udp socket");
        Peer::Udp {
            sock,
            gateway: gw.sip,
        }
    }

    fn local(&self) -> SocketAddr {
        match self {
            Peer::Tcp { stream, .. } => stream.local_addr().expect("local address"),
            Peer::Udp { sock, .. } => sock.local_addr().expect("local address"),
        }
    }

    fn via_token(&self) -> &'static str {
        match self {
            Peer::Tcp { .. } => "TCP",
            Peer::Udp { .. } => "UDP",
        }
    }

    async fn send(&mut self, raw: &[u8]) {
        match self {
            Peer::Tcp { stream, .. } => stream.write_all(raw).await.expect("write"),
            Peer::Udp { sock, gateway } => {
                sock.send_to(raw, *gateway).await.expect("send");
            }
        }
    }

    /// The next message from the gateway; `None` after `limit` or once it closed the
    /// connection.
    async fn recv(&mut self, limit: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + limit;
        match self {
            Peer::Tcp {
                stream,
                framer,
                closed,
            } => loop {
                match framer.pop() {
                    Ok(Some(frame)) => return Message::parse(frame, &Limits::default()).ok(),
                    Ok(None) => {}
                    Err(_) => return None,
                }
                if *closed {
                    return None;
                }
                let read =
                    tokio::time::timeout_at(deadline, stream.read_buf(framer.buffer_mut())).await;
                match read {
                    Err(_) => return None,
                    Ok(Ok(0)) | Ok(Err(_)) => *closed = true,
                    Ok(Ok(_)) => {}
                }
            },
            Peer::Udp { sock, .. } => {
                let mut buf = vec![0u8; 65_536];
                loop {
                    let got = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
                    let n = match got {
                        Err(_) => return None,
                        Ok(Ok((n, _))) => n,
                        Ok(Err(_)) => continue,
                    };
                    let data = Bytes::copy_from_slice(buf.get(..n).unwrap_or(&[]));
                    if let Ok(m) = Message::parse(data, &Limits::default()) {
                        return Some(m);
                    }
                }
            }
        }
    }

    /// Whether the gateway closed the connection (TCP) within `limit`.
    async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self {
                Peer::Tcp { closed: true, .. } => return true,
                Peer::Tcp { stream, closed, .. } => {
                    let mut sink = BytesMut::with_capacity(4096);
                    match tokio::time::timeout_at(deadline, stream.read_buf(&mut sink)).await {
                        Err(_) => return false,
                        Ok(Ok(0)) | Ok(Err(_)) => *closed = true,
                        Ok(Ok(_)) => {}
                    }
                }
                Peer::Udp { .. } => return false,
            }
        }
    }

    /// The first final response (provisional ones and requests from the gateway skipped).
    async fn final_response(&mut self, limit: Duration) -> Option<Response> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await? {
                Message::Response(r) if r.status.0 >= 200 => return Some(r),
                _ => {}
            }
        }
    }

    /// The final response to the request with this Call-ID and CSeq method.
    async fn response_to(
        &mut self,
        call_id: &str,
        method: &Method,
        limit: Duration,
    ) -> Option<Response> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.final_response(left).await?;
            let same_call = r.headers.call_id().is_ok_and(|c| c.as_str() == call_id);
            let same_method = r.headers.cseq().is_ok_and(|c| &c.method == method);
            if same_call && same_method {
                return Some(r);
            }
        }
    }

    /// Sends an OPTIONS and returns what the gateway sent before its 200 (the messages it
    /// sent for earlier requests), or `Err` when no 200 came.
    async fn probe(&mut self, id: &str) -> Result<Vec<Message>, String> {
        let raw = format!(
            "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{} {};branch=z9hG4bK{id};rport\r\n\
             From: <sip:probe@127.0.0.1>;tag={id}\r\nTo: <sip:gateway@127.0.0.1>\r\nCall-ID: {id}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            self.via_token(),
            self.local()
        );
        self.send(raw.as_bytes()).await;
        let mut before = Vec::new();
        let deadline = Instant::now() + 5 * SECOND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = self.recv(left).await else {
                return Err(format!(
                    "no answer to an OPTIONS afterwards (before it: {before:?})"
                ));
            };
            let is_probe = m.headers().call_id().is_ok_and(|c| c.as_str() == id);
            match (&m, is_probe) {
                (Message::Response(r), true) if r.status.0 == 200 => return Ok(before),
                (_, true) => {}
                (_, false) => before.push(m),
            }
        }
    }
}

fn branch() -> String {
    format!("z9hG4bK{:016x}", rand::random::<u64>())
}

/// A dialog as the 200 OK to our INVITE set it up, for the ACK and BYE (RFC 3261 §12.1.2).
struct Answered {
    target: String,
    from: String,
    to: String,
    call_id: String,
    cseq: u32,
    sdp: SessionDescription,
}

/// Checks that `ok` answers a call: 200 with Contact, a To tag and an SDP answer whose
/// first stream is audio on a real port.
fn answered(ok: &Response) -> Result<Answered, String> {
    if ok.status.0 != 200 {
        return Err(format!("{} {}", ok.status.0, ok.reason));
    }
    let h = &ok.headers;
    let contact = h
        .contacts()
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or("200 without Contact")?;
    let to = h.get(&HeaderName::To).ok_or("200 without To")?;
    if h.to()
        .ok()
        .and_then(|t| t.tag().map(str::to_owned))
        .is_none()
    {
        return Err("200 without a To tag".into());
    }
    let is_sdp = h
        .content_type()
        .ok()
        .flatten()
        .is_some_and(|c| c.is("application", "sdp"));
    if !is_sdp {
        return Err("200 without an SDP body".into());
    }
    let text = std::str::from_utf8(&ok.body).map_err(|_| "SDP not UTF-8")?;
    let sdp = SessionDescription::parse(text).map_err(|e| format!("our SDP: {e}"))?;
    let audio = sdp.media.first().ok_or("SDP without media")?;
    if audio.kind != MediaKind::Audio || audio.port == 0 {
        return Err(format!("first stream is not live audio: {audio:?}"));
    }
    Ok(Answered {
        target: contact.uri.as_str().to_owned(),
        from: h
            .get(&HeaderName::From)
            .ok_or("200 without From")?
            .as_str()
            .to_owned(),
        to: to.as_str().to_owned(),
        call_id: h.call_id().map_err(|e| e.to_string())?.as_str().to_owned(),
        cseq: h.cseq().map_err(|e| e.to_string())?.seq,
        sdp,
    })
}

impl Answered {
    fn request(&self, peer: &Peer, method: &str, cseq: u32, body: Option<&str>) -> String {
        let (ct, body) = match body {
            Some(b) => ("Content-Type: application/sdp\r\n", b),
            None => ("", ""),
        };
        format!(
            "{method} {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={};rport\r\nFrom: {}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            self.target,
            peer.via_token(),
            peer.local(),
            branch(),
            self.from,
            self.to,
            self.call_id,
            body.len()
        )
    }

    /// ACK (RFC 3261 §13.2.2.4), then BYE; the BYE must be answered 200.
    async fn hang_up(&self, peer: &mut Peer) -> Result<(), String> {
        let ack = self.request(peer, "ACK", self.cseq, None);
        peer.send(ack.as_bytes()).await;
        let bye = self.request(peer, "BYE", self.cseq.wrapping_add(1), None);
        peer.send(bye.as_bytes()).await;
        match peer
            .response_to(&self.call_id, &Method::Bye, FINAL_WITHIN)
            .await
        {
            Some(r) if r.status.0 == 200 => Ok(()),
            Some(r) => Err(format!("BYE answered {} {}", r.status.0, r.reason)),
            None => Err("BYE not answered".into()),
        }
    }
}

/// Sends one corpus message and judges the gateway's handling of it.
async fn judge(
    gw: &Gateway,
    stem: &str,
    raw: &[u8],
    via: Via,
    expect: Expect,
) -> Result<String, String> {
    let (mut peer, raw) = match via {
        Via::Tcp => (Peer::tcp(gw).await, raw.to_vec()),
        Via::Udp => (Peer::udp(gw).await, with_rport(raw)),
    };
    peer.send(&raw).await;
    match expect {
        Expect::Status(code) => {
            let r = peer
                .final_response(FINAL_WITHIN)
                .await
                .ok_or(format!("no final response (expected {code})"))?;
            if r.status.0 != code {
                return Err(format!("expected {code}, got {} {}", r.status.0, r.reason));
            }
            if stem == "dblreq" {
                // The INVITE after the REGISTER in the same datagram is not a request.
                let before = peer.probe("after-dblreq").await?;
                if !before.is_empty() {
                    return Err(format!("the trailing INVITE was processed: {before:?}"));
                }
            }
            Ok(format!("{} {}", r.status.0, r.reason))
        }
        Expect::Call => {
            let r = peer
                .final_response(FINAL_WITHIN)
                .await
                .ok_or("no final response (expected 200 with SDP)")?;
            let call = answered(&r)?;
            call.hang_up(&mut peer).await?;
            Ok("200 with SDP; ACK and BYE end the call".into())
        }
        Expect::Dropped => {
            let before = peer.probe(&format!("after-{stem}")).await?;
            if before.is_empty() {
                Ok("dropped".into())
            } else {
                Err(format!("a response was answered: {before:?}"))
            }
        }
        Expect::Survives => {
            let before = peer.probe(&format!("after-{stem}")).await?;
            Ok(format!(
                "survived ({} messages before the probe's 200)",
                before.len()
            ))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rfc4475_message_gets_its_index_verdict_from_the_gateway() {
    let Some(dir) = corpus_dir() else { return };
    let rows = index(&dir);
    assert_eq!(rows.len(), 50, "INDEX lists the 50 archive members");
    let gw = Gateway::start(GatewayOptions::default()).await;
    let mut failures = Vec::new();
    for (file, verdict) in &rows {
        let stem = file.trim_end_matches(".dat");
        let Some((via, expect)) = expectation(stem, verdict) else {
            failures.push(format!("{file} ({verdict}): no expectation written"));
            continue;
        };
        let raw = read_corpus(&dir, file);
        match judge(&gw, stem, &raw, via, expect).await {
            Ok(what) => eprintln!("{file} ({verdict}, {via:?}): {what}"),
            Err(why) => failures.push(format!("{file} ({verdict}, {via:?}): {why}")),
        }
    }
    assert!(
        gw.wait_no_calls(10 * SECOND).await,
        "every call ended: {:?}",
        gw.calls().await
    );
    assert!(
        failures.is_empty(),
        "RFC 4475 failures through the gateway:\n{}",
        failures.join("\n")
    );
}

// ---- what real peers send ----

const PIN: &str = "1357924680";

fn invite(peer: &Peer, call_id: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{} {};branch={};rport\r\n\
         From: <sip:+33612345678@127.0.0.1>;tag={call_id}\r\nTo: <sip:1000@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{}>\r\nMax-Forwards: 70\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        peer.via_token(),
        peer.local(),
        branch(),
        peer.local(),
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn offer(rtp: SocketAddr, formats: &str, attributes: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n{attributes}",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_with_a_multipart_body_is_answered_from_its_sdp_part() {
    // A SIP-I trunk: the SDP next to the ISUP IAM it maps (RFC 3204, RFC 5621).
    let gw = Gateway::start(GatewayOptions::default()).await;
    let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("rtp");
    let mut peer = Peer::tcp(&gw).await;
    let sdp = offer(
        rtp.local_addr().expect("rtp address"),
        "0 101",
        "a=rtpmap:101 telephone-event/8000\r\n",
    );
    let mut body = format!(
        "--sip-i-boundary\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n\
         --sip-i-boundary\r\nContent-Type: application/ISUP; version=itu-t92+\r\n\
         Content-Disposition: signal; handling=optional\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&[
        0x01, 0x00, 0x49, 0x00, 0x00, 0x03, 0x02, 0x00, 0x07, 0x0d, 0x0a,
    ]);
    body.extend_from_slice(b"\r\n--sip-i-boundary--\r\n");
    let raw = invite(
        &peer,
        "multipart-1",
        "multipart/mixed; boundary=sip-i-boundary",
        &body,
    );
    peer.send(&raw).await;
    let r = peer
        .final_response(FINAL_WITHIN)
        .await
        .expect("a final response");
    let call = answered(&r).unwrap_or_else(|e| panic!("the call is answered: {e}"));
    let formats = &call.sdp.media[0].formats;
    assert_eq!(formats, &["0", "101"], "PCMU and DTMF from the SDP part");
    call.hang_up(&mut peer).await.expect("the call ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_whose_body_is_not_sdp_is_answered_with_our_offer() {
    // The body is not read as SDP: the INVITE has no offer, and our 200 makes one
    // (RFC 3261 §13.2.1); the caller answers in the ACK.
    let gw = Gateway::start(GatewayOptions::default()).await;
    let mut peer = Peer::tcp(&gw).await;
    let raw = invite(
        &peer,
        "not-sdp-1",
        "text/plain",
        b"v=0 is not what this is\r\n",
    );
    peer.send(&raw).await;
    let r = peer
        .final_response(FINAL_WITHIN)
        .await
        .expect("a final response");
    let call = answered(&r).unwrap_or_else(|e| panic!("the call is answered with an offer: {e}"));
    let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("rtp");
    let answer = offer(rtp.local_addr().expect("rtp address"), "0", "");
    let ack = call.request(&peer, "ACK", call.cseq, Some(&answer));
    peer.send(ack.as_bytes()).await;
    let bye = call.request(&peer, "BYE", call.cseq + 1, None);
    peer.send(bye.as_bytes()).await;
    let r = peer
        .response_to(&call.call_id, &Method::Bye, FINAL_WITHIN)
        .await
        .expect("BYE answered");
    assert_eq!(r.status.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_offer_with_dtmf_only_at_8000_keeps_dtmf_and_the_pin_gets_in() {
    // baresip: opus/48000/2 and telephone-event/8000, nothing else.
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("baresip-room", Some(PIN)).await;
    let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("rtp");
    let mut peer = Peer::udp(&gw).await;
    let sdp = offer(
        rtp.local_addr().expect("rtp address"),
        "115 101",
        "a=rtpmap:115 opus/48000/2\r\na=fmtp:115 stereo=1;sprop-stereo=1\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n",
    );
    let raw = invite(&peer, "baresip-1", "application/sdp", sdp.as_bytes());
    peer.send(&raw).await;
    let r = peer
        .final_response(FINAL_WITHIN)
        .await
        .expect("a final response");
    let call = answered(&r).unwrap_or_else(|e| panic!("the call is answered: {e}"));
    let audio = &call.sdp.media[0];
    assert_eq!(audio.formats, ["115", "101"], "Opus and the DTMF payload");
    let te = audio
        .rtpmap(dialin_sip::sdp::PayloadType::new(101).expect("pt"))
        .map(|m| (m.encoding.clone(), m.clock_rate));
    assert_eq!(
        te,
        Some(("telephone-event".to_owned(), 8000)),
        "the answer keeps the event payload at its offered rate"
    );
    let ack = call.request(&peer, "ACK", call.cseq, None);
    peer.send(ack.as_bytes()).await;

    // The PIN as RFC 4733 events at 8000 Hz, to the gateway's RTP address.
    let gw_rtp = SocketAddr::new(
        call.sdp
            .connection_for(audio)
            .expect("the answer has an address"),
        audio.port,
    );
    let mut keypad = Keypad::new(101);
    keypad.press(&rtp, gw_rtp, &format!("{PIN}#")).await;
    let joined = gw
        .wait_for_call(10 * SECOND, |c| {
            c["state"] == "in_room" || c["state"] == "joining"
        })
        .await;
    assert!(
        joined.is_some_and(|c| c["room"] == "baresip-room"),
        "the PIN typed as 8 kHz events gets the caller into the room: {:?}",
        gw.calls().await
    );
    let bye = call.request(&peer, "BYE", call.cseq + 1, None);
    peer.send(bye.as_bytes()).await;
    let r = peer
        .response_to(&call.call_id, &Method::Bye, FINAL_WITHIN)
        .await
        .expect("BYE answered");
    assert_eq!(r.status.0, 200);
}

/// A caller's keypad sending RFC 4733 events at 8000 Hz on one RTP stream.
struct Keypad {
    pt: RtpPayloadType,
    ssrc: Ssrc,
    seq: SeqNo,
    ts: u32,
}

impl Keypad {
    fn new(pt: u8) -> Keypad {
        Keypad {
            pt: RtpPayloadType::new(pt).expect("pt"),
            ssrc: Ssrc(rand::random()),
            seq: SeqNo(rand::random()),
            ts: rand::random(),
        }
    }

    /// Each key pressed for 100 ms, then 100 ms apart, on the event clock.
    async fn press(&mut self, rtp: &UdpSocket, to: SocketAddr, keys: &str) {
        for c in keys.chars() {
            let digit = Digit::from_char(c).expect("a DTMF digit");
            let mut sender = EventSender::new(
                digit,
                self.ts,
                8000,
                Duration::from_millis(100),
                DEFAULT_VOLUME,
            );
            let start = Instant::now();
            let mut payload = [0u8; 4];
            while let Ok(Some(p)) = sender.next_packet(&mut payload) {
                let due = start + p.send_after;
                tokio::time::sleep(due.saturating_duration_since(Instant::now())).await;
                let mut h = Header::new(self.pt, self.seq, RtpTimestamp(p.timestamp), self.ssrc);
                h.marker = p.marker;
                let mut out = [0u8; 64];
                let n = h
                    .write(payload.get(..p.len).unwrap_or(&[]), &mut out)
                    .expect("rtp packet");
                rtp.send_to(&out[..n], to).await.expect("send rtp");
                self.seq = SeqNo(self.seq.0.wrapping_add(1));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.ts = self.ts.wrapping_add(8000 / 5 * 2);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digits_keyed_before_the_ack_count() {
    // Callers start sending media on our 200 OK, and a quick caller types before its ACK
    // reaches us: those keys belong to the PIN.
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("early-room", Some(PIN)).await;
    let rtp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("rtp");
    let mut peer = Peer::udp(&gw).await;
    let sdp = offer(
        rtp.local_addr().expect("rtp address"),
        "0 101",
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n",
    );
    let raw = invite(&peer, "early-keys-1", "application/sdp", sdp.as_bytes());
    peer.send(&raw).await;
    let r = peer
        .final_response(FINAL_WITHIN)
        .await
        .expect("a final response");
    let call = answered(&r).unwrap_or_else(|e| panic!("the call is answered: {e}"));
    let audio = &call.sdp.media[0];
    let gw_rtp = SocketAddr::new(
        call.sdp
            .connection_for(audio)
            .expect("the answer has an address"),
        audio.port,
    );
    let (first, rest) = PIN.split_at(3);
    let mut keypad = Keypad::new(101);
    keypad.press(&rtp, gw_rtp, first).await;
    let ack = call.request(&peer, "ACK", call.cseq, None);
    peer.send(ack.as_bytes()).await;
    keypad.press(&rtp, gw_rtp, &format!("{rest}#")).await;
    let joined = gw
        .wait_for_call(10 * SECOND, |c| {
            c["state"] == "in_room" || c["state"] == "joining"
        })
        .await;
    assert!(
        joined.is_some_and(|c| c["room"] == "early-room"),
        "the keys typed before the ACK are part of the PIN: {:?}",
        gw.calls().await
    );
    let bye = call.request(&peer, "BYE", call.cseq + 1, None);
    peer.send(bye.as_bytes()).await;
    let r = peer
        .response_to(&call.call_id, &Method::Bye, FINAL_WITHIN)
        .await
        .expect("BYE answered");
    assert_eq!(r.status.0, 200);
}

fn options(peer: &Peer, call_id: &str, extra: &str) -> String {
    format!(
        "OPTIONS sip:gateway@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{} {};branch={};rport\r\n\
         From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:gateway@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{extra}",
        peer.via_token(),
        peer.local(),
        branch()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_tcp_request_gets_513_before_the_connection_closes() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    let mut peer = Peer::tcp(&gw).await;
    // Larger than any message a SIP element must take (RFC 3261 §18.1.1 bounds UDP at
    // 65,535 octets, and that is our limit on streams too).
    let raw = options(&peer, "too-big", "Content-Length: 100000\r\n\r\n");
    peer.send(raw.as_bytes()).await;
    peer.send(&vec![b'x'; 20_000]).await;
    let r = peer
        .final_response(FINAL_WITHIN)
        .await
        .expect("a response before the close");
    assert_eq!(r.status.0, 513, "{}", r.reason);
    assert_eq!(
        r.headers.call_id().map(|c| c.as_str().to_owned()),
        Ok("too-big".to_owned())
    );
    assert!(
        peer.closed_within(5 * SECOND).await,
        "then the connection is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unframeable_tcp_request_gets_400_before_the_connection_closes() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    for (id, lengths) in [
        ("two-lengths", "Content-Length: 13\r\nContent-Length: 5\r\n"),
        ("bad-length", "Content-Length: five\r\n"),
    ] {
        let mut peer = Peer::tcp(&gw).await;
        let raw = options(&peer, id, &format!("{lengths}\r\nhello"));
        peer.send(raw.as_bytes()).await;
        let r = peer
            .final_response(FINAL_WITHIN)
            .await
            .expect("a response before the close");
        assert_eq!(r.status.0, 400, "{id}: {}", r.reason);
        assert!(
            peer.closed_within(5 * SECOND).await,
            "{id}: then the connection is closed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_request_with_a_broken_top_via_gets_400_at_its_source() {
    // RFC 4475 §3.1.2.1 badinv01 as sent, over UDP: its Via cannot be routed, the source
    // address can be answered, as rport would.
    let Some(dir) = corpus_dir() else { return };
    let gw = Gateway::start(GatewayOptions::default()).await;
    let mut peer = Peer::udp(&gw).await;
    peer.send(&read_corpus(&dir, "badinv01.dat")).await;
    let r = peer
        .final_response(FINAL_WITHIN)
        .await
        .expect("a 400 at the source address");
    assert_eq!(r.status.0, 400, "{}", r.reason);
    assert_eq!(
        r.headers.call_id().map(|c| c.as_str().to_owned()),
        Ok("badinv01.0ha0isndaksdjasdf3234nas".to_owned())
    );
}
