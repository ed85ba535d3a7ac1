//! RFC 4475 torture tests: every message of the corpus gets the handling its
//! INDEX verdict names (MUST-PARSE, MUST-REJECT, PARSE-SEMANTIC).
//!
//! Liberal acceptances (the RFC allows an element to accept and repair these):
//! `escruri` (escaped headers in the Request-URI are ignored), `baddate` (Date is
//! not interpreted), `regbadct` (Contact addr-spec with `?` is accepted),
//! `badaspec` (spaces inside `< >` are trimmed). Everything else listed as
//! MUST-REJECT gets its status, or is dropped when it is a response.
//!
//! `mcl01` (two Content-Length values) is answered 400 over UDP, as RFC 4475 §3.3.9
//! says an element SHOULD; on a stream the same 400 is written before the close.

use bytes::Bytes;
use dialin_sip::header::{HeaderName, ViaTransport};
use dialin_sip::message::{reject_unparsable, Limits, Message, Method, ParseErrorKind, StatusCode};
use dialin_sip::sdp::offer_body;
use dialin_sip::transport::{response_target, FramingError, StreamFramer, Transport};
use dialin_sip::uri::Uri;
use dialin_sip::validate::{check_request, check_response, ValidationPolicy};
use std::path::{Path, PathBuf};

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance/rfc4475"
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

fn datagram(raw: &Bytes) -> Result<Message, dialin_sip::message::ParseError> {
    Message::parse(raw.clone(), &Limits::default())
}

/// The status an element answers a request with, or None when it processes it.
/// Err(()) = the message is dropped without answer.
fn uas_outcome(raw: &Bytes) -> Result<Option<StatusCode>, ()> {
    match datagram(raw) {
        Err(e) => match e.status() {
            Some(s) => {
                // Answering needs the dialog headers from the unparsable request.
                assert!(
                    reject_unparsable(raw, &e).is_some() || s.0 >= 400,
                    "no response for {e}"
                );
                Ok(Some(s))
            }
            None => Err(()),
        },
        Ok(Message::Request(r)) => Ok(check_request(&r, &ValidationPolicy::default())
            .err()
            .map(|rej| rej.status)),
        Ok(Message::Response(r)) => check_response(&r).map(|_| None).map_err(|_| ()),
    }
}

fn check_file(name: &str, verdict: &str, raw: &Bytes) -> Result<(), String> {
    let stem = name.trim_end_matches(".dat");
    let s = |c: u16| Ok(Some(StatusCode(c)));
    match verdict {
        "MUST-PARSE" => {
            let m = datagram(raw).map_err(|e| format!("must parse, got {e}"))?;
            spot_check(stem, &m, raw)
        }
        "MUST-REJECT" => {
            let got = uas_outcome(raw);
            let (expected, liberal_ok): (Result<Option<StatusCode>, ()>, bool) = match stem {
                "badinv01" | "ncl" | "scalar02" | "quotbal" | "ltgtruri" | "lwsruri"
                | "lwsstart" | "trws" | "baddn" | "mismatch01" => (s(400), false),
                "clerr" => (s(400), false),
                "badvers" => (s(505), false),
                "mismatch02" => (s(501), false),
                "scalarlg" | "bigcode" => (Err(()), false),
                "escruri" | "baddate" | "regbadct" | "badaspec" => (Ok(None), true),
                other => return Err(format!("no expectation written for MUST-REJECT {other}")),
            };
            if got == expected {
                if liberal_ok {
                    eprintln!("{stem}: accepted liberally (RFC 4475 allows it)");
                }
                Ok(())
            } else {
                Err(format!("expected {expected:?}, got {got:?}"))
            }
        }
        "PARSE-SEMANTIC" => {
            let got = uas_outcome(raw);
            let expected = match stem {
                "badbranch" | "insuf" | "unksm2" | "multi01" => s(400),
                "unkscm" | "novelsc" => s(416),
                "bext01" => s(420),
                "invut" => s(415),
                "sdp01" => s(406),
                "mcl01" => s(400),
                "regaut01" | "zeromf" | "cparam01" | "cparam02" | "regescrt" | "inv2543"
                | "bcast" => Ok(None),
                other => return Err(format!("no expectation written for PARSE-SEMANTIC {other}")),
            };
            if got != expected {
                return Err(format!("expected {expected:?}, got {got:?}"));
            }
            if stem != "mcl01" {
                datagram(raw).map_err(|e| format!("must parse, got {e}"))?;
            }
            semantic_spot_check(stem, raw)
        }
        "UNREFERENCED" => {
            // No verdict: it only must not break the parser.
            let _ = uas_outcome(raw);
            Ok(())
        }
        other => Err(format!("unknown verdict {other}")),
    }
}

fn ensure(cond: bool, what: &str) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what.to_owned())
    }
}

fn spot_check(stem: &str, m: &Message, raw: &Bytes) -> Result<(), String> {
    let h = m.headers();
    let e = |x: dialin_sip::header::HeaderError| x.to_string();
    match stem {
        "wsinv" => {
            let r = m.as_request().ok_or("not a request")?;
            ensure(r.method == Method::Invite, "method")?;
            ensure(
                h.call_id().map_err(e)? == "wsinv.ndaksdj@192.0.2.1",
                "Call-ID",
            )?;
            ensure(h.cseq().map_err(e)?.seq == 9, "CSeq 0009")?;
            ensure(
                h.max_forwards().map_err(e)? == Some(68),
                "Max-Forwards 0068",
            )?;
            ensure(h.to().map_err(e)?.tag() == Some("1918181833n"), "To tag")?;
            let from = h.from().map_err(e)?;
            ensure(from.tag() == Some("98asjd8"), "From tag")?;
            ensure(
                from.display_name.as_deref() == Some("J Rosenberg \\\""),
                "From display name",
            )?;
            let vias = h.via().map_err(e)?;
            ensure(vias.len() == 3, "three Via values")?;
            ensure(
                vias[0].transport == ViaTransport::Udp && vias[0].branch() == Some("390skdjuw"),
                "folded Via",
            )?;
            ensure(
                vias[1].transport == ViaTransport::Tcp && vias[1].branch() == Some("z9hG4bK9ikj8"),
                "Via 2",
            )?;
            ensure(
                vias[2].branch() == Some("z9hG4bK30239"),
                "Via 3 folded branch",
            )?;
            let nf = h
                .get(&HeaderName::from_str_name("newfangledheader"))
                .ok_or("NewFangledHeader kept")?;
            ensure(
                nf == "newfangled value continued newfangled value",
                "unfolded unknown header",
            )?;
            ensure(h.routes().map_err(e)?.len() == 1, "Route")?;
            let contacts = h.contacts().map_err(e)?;
            ensure(
                contacts.len() == 1 && contacts[0].params.value("q") == Some("0.33"),
                "Contact q",
            )?;
            ensure(m.body().len() == 150, "body 150")?;
            ensure(
                check_request(r, &ValidationPolicy::default()).is_ok(),
                "wsinv is acceptable",
            )
        }
        "intmeth" => {
            let r = m.as_request().ok_or("not a request")?;
            ensure(
                r.method.as_str() == "!interesting-Method0123456789_*+`.%indeed'~",
                "method token",
            )?;
            let u = r.uri.as_sip().ok_or("sip uri")?;
            ensure(
                u.user.as_deref() == Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"),
                "user",
            )?;
            ensure(
                u.password.as_deref() == Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"),
                "password",
            )?;
            let rej = check_request(r, &ValidationPolicy::default())
                .err()
                .ok_or("unknown method accepted")?;
            ensure(
                rej.status == StatusCode::NOT_IMPLEMENTED,
                "unknown method gets 501",
            )
        }
        "esc01" => {
            let r = m.as_request().ok_or("not a request")?;
            let u = r.uri.as_sip().ok_or("sip uri")?;
            ensure(
                u.user_unescaped().as_deref() == Some("sips:user@example.com"),
                "Request-URI user unescaped",
            )?;
            let to = h.to().map_err(e)?;
            ensure(
                to.uri.as_sip().and_then(|u| u.user_unescaped()).as_deref() == Some("user"),
                "To user",
            )?;
            let from = h.from().map_err(e)?;
            ensure(
                from.uri
                    .as_sip()
                    .and_then(|u| u.user_unescaped())
                    .as_deref()
                    == Some("I have spaces"),
                "From user",
            )?;
            ensure(
                h.content_type()
                    .map_err(e)?
                    .is_some_and(|c| c.is("application", "sdp")),
                "compact c",
            )?;
            ensure(
                check_request(r, &ValidationPolicy::default()).is_ok(),
                "esc01 acceptable",
            )
        }
        "escnull" => {
            let to = h.to().map_err(e)?;
            let u = to.uri.as_sip().ok_or("sip uri")?;
            ensure(
                u.user_unescaped().as_deref() == Some("null-\0-null"),
                "escaped NUL",
            )?;
            ensure(h.contacts().map_err(e)?.len() == 2, "two contacts")
        }
        "esc02" => {
            let r = m.as_request().ok_or("not a request")?;
            ensure(r.method != Method::Register, "RE%47IST%45R is not REGISTER")?;
            ensure(r.method.as_str() == "RE%47IST%45R", "method kept as sent")?;
            ensure(
                h.contacts().map_err(e)?.len() == 2,
                "C%6Fntact is not Contact",
            )
        }
        "lwsdisp" => {
            let from = h.from().map_err(e)?;
            ensure(
                from.display_name.as_deref() == Some("caller") && from.tag() == Some("323"),
                "display name",
            )
        }
        "longreq" => {
            ensure(h.via().map_err(e)?.len() == 34, "34 Via values")?;
            let to = h.to().map_err(e)?;
            ensure(
                to.display_name.as_ref().is_some_and(|d| d.len() > 80),
                "long display name",
            )?;
            ensure(h.call_id().map_err(e)?.len() > 100, "long Call-ID")
        }
        "dblreq" => {
            let r = m.as_request().ok_or("not a request")?;
            ensure(
                r.method == Method::Register && r.body.is_empty(),
                "first message only (UDP)",
            )?;
            // On a stream the trailing octets are the next message.
            let mut f = StreamFramer::new(Limits::default());
            f.push(raw);
            let first = f.pop().map_err(|x| x.to_string())?.ok_or("first frame")?;
            let second = f.pop().map_err(|x| x.to_string())?.ok_or("second frame")?;
            let first = datagram(&first).map_err(|x| x.to_string())?;
            let second = datagram(&second).map_err(|x| x.to_string())?;
            ensure(
                first
                    .as_request()
                    .is_some_and(|r| r.method == Method::Register),
                "stream frame 1",
            )?;
            ensure(
                second
                    .as_request()
                    .is_some_and(|r| r.method == Method::Invite),
                "stream frame 2",
            )
        }
        "semiuri" => {
            let r = m.as_request().ok_or("not a request")?;
            let u = r.uri.as_sip().ok_or("sip uri")?;
            ensure(
                u.user.as_deref() == Some("user;par=u%40example.net"),
                "user with ;",
            )?;
            ensure(u.params.is_empty(), "no URI params")?;
            ensure(h.accept().map_err(e)?.len() == 6, "folded Accept list")
        }
        "transports" => {
            let t: Vec<String> = h
                .via()
                .map_err(e)?
                .iter()
                .map(|v| v.transport.as_str().to_owned())
                .collect();
            ensure(
                t == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"],
                "Via transports in order",
            )
        }
        "mpart01" => {
            let ct = h.content_type().map_err(e)?.ok_or("content-type")?;
            ensure(
                ct.is("multipart", "mixed")
                    && ct.params.value("boundary") == Some("7a9cbec02ceef655"),
                "ct",
            )?;
            ensure(
                Some(m.body().len()) == h.content_length().map_err(e)?,
                "binary body framed by Content-Length",
            )?;
            mpart01_body_parts(
                h.get(&HeaderName::ContentType).map(|t| t.as_str()),
                m.body(),
            )
        }
        "unreason" => {
            let r = m.as_response().ok_or("response")?;
            ensure(
                r.status == StatusCode::OK && r.reason.contains("простое"),
                "UTF-8 reason phrase",
            )
        }
        "noreason" => {
            let r = m.as_response().ok_or("response")?;
            ensure(
                r.status.0 == 100 && r.reason.is_empty(),
                "empty reason phrase",
            )
        }
        _ => Ok(()),
    }
}

/// The multipart body of mpart01 (a text part and a binary one, with bare CR, LF and NUL
/// octets) holds no SDP; the same body with an SDP part after the binary one gives that
/// part, so the binary octets are skipped as a part, not misread as delimiters.
fn mpart01_body_parts(content_type: Option<&str>, body: &[u8]) -> Result<(), String> {
    ensure(
        offer_body(content_type, body) == Ok(None),
        "no SDP part in mpart01",
    )?;
    let close = b"--7a9cbec02ceef655--";
    let at = body
        .windows(close.len())
        .position(|w| w == close)
        .ok_or("close delimiter")?;
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
               m=audio 4000 RTP/AVP 0\r\n";
    let mut with_sdp = body.get(..at).ok_or("prefix")?.to_vec();
    with_sdp.extend_from_slice(
        format!("--7a9cbec02ceef655\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n").as_bytes(),
    );
    with_sdp.extend_from_slice(body.get(at..).ok_or("suffix")?);
    ensure(
        offer_body(content_type, &with_sdp) == Ok(Some(sdp)),
        "the SDP part after the binary part is found",
    )
}

fn semantic_spot_check(stem: &str, raw: &Bytes) -> Result<(), String> {
    let policy = ValidationPolicy::default();
    match stem {
        "bext01" => {
            let Ok(Message::Request(r)) = datagram(raw) else {
                return Err("parse".into());
            };
            let rej = check_request(&r, &policy).err().ok_or("420 expected")?;
            let unsupported = rej
                .headers
                .iter()
                .find(|(n, _)| *n == HeaderName::Unsupported)
                .ok_or("Unsupported")?;
            ensure(
                unsupported.1.split(',').count() == 4,
                "all four unknown option tags listed",
            )
        }
        "mcl01" => {
            let err = datagram(raw)
                .err()
                .ok_or("multiple Content-Length must not parse")?;
            ensure(
                err.kind == ParseErrorKind::MultipleContentLength,
                "framing error kind",
            )?;
            let mut f = StreamFramer::new(Limits::default());
            f.push(raw);
            ensure(
                f.pop() == Err(FramingError::MultipleContentLength),
                "stream closes",
            )?;
            ensure(
                f.rejection().map(|r| r.status) == Some(StatusCode::BAD_REQUEST),
                "the stream gets its 400 before the close",
            )
        }
        "bcast" => {
            let Ok(Message::Response(r)) = datagram(raw) else {
                return Err("parse".into());
            };
            let vias = r.headers.via().map_err(|e| e.to_string())?;
            let src = "127.0.0.1:5060".parse().map_err(|_| "addr")?;
            let to_bcast = vias.get(1).map(|v| response_target(v, src, Transport::Udp));
            ensure(
                matches!(to_bcast, Some(Err(_))),
                "never forwarded to the broadcast address",
            )
        }
        "zeromf" => {
            let m = datagram(raw).map_err(|e| e.to_string())?;
            ensure(
                m.headers().max_forwards() == Ok(Some(0)),
                "Max-Forwards 0 kept",
            )
        }
        "regaut01" => {
            let m = datagram(raw).map_err(|e| e.to_string())?;
            ensure(
                m.headers()
                    .authorization()
                    .is_some_and(|a| a.starts_with("NoOneKnowsThisScheme")),
                "raw Authorization kept",
            )
        }
        "cparam01" => {
            let m = datagram(raw).map_err(|e| e.to_string())?;
            let c = m.headers().contacts().map_err(|e| e.to_string())?;
            let c = c.first().ok_or("contact")?;
            let uri_params = c.uri.as_sip().map(|u| u.params.len());
            ensure(
                c.params.contains("unknownparam") && uri_params == Some(0),
                "contact-param, not url-param",
            )
        }
        "cparam02" => {
            let m = datagram(raw).map_err(|e| e.to_string())?;
            let c = m.headers().contacts().map_err(|e| e.to_string())?;
            let c = c.first().ok_or("contact")?;
            let in_uri = c
                .uri
                .as_sip()
                .is_some_and(|u| u.params.contains("unknownparam"));
            ensure(in_uri && c.params.is_empty(), "url-param kept in the URI")
        }
        "regescrt" => {
            let m = datagram(raw).map_err(|e| e.to_string())?;
            let c = m.headers().contacts().map_err(|e| e.to_string())?;
            let hdrs = c
                .first()
                .and_then(|c| c.uri.as_sip())
                .map(|u| u.headers.clone())
                .unwrap_or_default();
            ensure(
                hdrs.len() == 1 && hdrs[0].0 == "Route" && hdrs[0].1 == "%3Csip:sip.example.com%3E",
                "escaped Route header kept in the Contact URI",
            )
        }
        "unkscm" | "novelsc" => {
            let Ok(Message::Request(r)) = datagram(raw) else {
                return Err("parse".into());
            };
            ensure(
                matches!(r.uri, Uri::Other(_)),
                "unknown scheme kept as absolute URI",
            )
        }
        _ => Ok(()),
    }
}

#[test]
fn every_rfc4475_message_gets_its_index_verdict() {
    let Some(dir) = corpus_dir() else { return };
    let rows = index(&dir);
    assert_eq!(rows.len(), 50, "INDEX lists the 50 archive members");
    let mut failures = Vec::new();
    for (file, verdict) in &rows {
        let raw = Bytes::from(std::fs::read(dir.join(file)).expect("corpus file readable"));
        if let Err(why) = check_file(file, verdict, &raw) {
            failures.push(format!("{file} ({verdict}): {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "RFC 4475 failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn content_length_past_the_end_waits_for_more_data_on_a_stream() {
    let Some(dir) = corpus_dir() else { return };
    let raw = std::fs::read(dir.join("clerr.dat")).expect("clerr.dat");
    let mut f = StreamFramer::new(Limits::default());
    f.push(&raw);
    assert_eq!(f.pop(), Ok(None));
    // Over UDP the same octets are a 400.
    let e = Message::parse(Bytes::from(raw), &Limits::default()).unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));
}

#[test]
fn every_corpus_file_is_listed_in_the_index() {
    let Some(dir) = corpus_dir() else { return };
    let listed: Vec<String> = index(&dir).into_iter().map(|(f, _)| f).collect();
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".dat") {
            assert!(listed.contains(&name), "{name} is not in INDEX");
        }
    }
}

#[test]
fn negative_content_length_on_a_stream_is_answered_400_before_the_close() {
    let Some(dir) = corpus_dir() else { return };
    let raw = std::fs::read(dir.join("ncl.dat")).expect("ncl.dat");
    let mut f = StreamFramer::new(Limits::default());
    f.push(&raw);
    assert_eq!(f.pop(), Err(FramingError::BadContentLength));
    let resp = f.rejection().expect("an answer for the stream");
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.headers.call_id().map(|c| c.as_str().to_owned()),
        Ok("ncl.0ha0isndaksdj2193423r542w35".to_owned())
    );
}
