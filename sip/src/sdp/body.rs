//! Finding the SDP offer in a SIP message body (RFC 3261 §7.4, §20.15; RFC 5621).
//!
//! Between the INVITE and [`SessionDescription::parse`](super::SessionDescription::parse):
//! the body is the offer when its `Content-Type` is `application/sdp`. A `multipart/*` body
//! (RFC 2046 §5.1) carries the SDP next to other parts: ISUP on SIP-I/SIP-T trunks
//! (RFC 3204), a location object (RFC 6442), a signed or binary part (RFC 4475 §3.1.1.11);
//! the offer is then its first `application/sdp` part with the `session` disposition
//! (RFC 5621 §3.2, the default for SDP). A body of any other type carries no offer and is
//! never read as SDP.

use crate::header::MediaType;
use crate::message::{StatusCode, Text};

/// How deep `multipart` bodies may nest inside each other (RFC 5621 §3.1 allows nesting;
/// real bodies nest once at most). Bounds the work a hostile body can cause.
const MAX_NESTING: usize = 4;

/// Why the SDP could not be taken out of a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// RFC 3261 §20.15: a non-empty body must say its type.
    #[error("the body has no Content-Type")]
    MissingContentType,
    #[error("malformed Content-Type {0:?}")]
    BadContentType(String),
    #[error("multipart body without a boundary parameter")]
    MissingBoundary,
    #[error("multipart body without a delimiter line for its boundary")]
    NoDelimiter,
    #[error(
        "the SDP part has Content-Transfer-Encoding {0:?}; only binary, 8bit and 7bit are read"
    )]
    UnsupportedTransferEncoding(String),
    #[error("the SDP is not UTF-8")]
    NotUtf8,
}

impl BodyError {
    /// The status to refuse the request with: 415 for what we cannot decode, 400 for
    /// what is malformed.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::MissingContentType | BodyError::UnsupportedTransferEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            BodyError::BadContentType(_)
            | BodyError::MissingBoundary
            | BodyError::NoDelimiter
            | BodyError::NotUtf8 => StatusCode::BAD_REQUEST,
        }
    }
}

/// The SDP text of a message body, borrowed from it.
///
/// `content_type` is the raw `Content-Type` value (`None` when absent).
/// - `application/sdp` (any case, any parameters): the whole body.
/// - `multipart/*` with a `boundary` (`mixed`, `alternative`, `related`...; RFC 2046
///   §5.1.7 reads unknown subtypes as `mixed`): the first `application/sdp` part whose
///   `Content-Disposition` is absent or `session`, searched depth-first through nested
///   multiparts. `Ok(None)` when no part is SDP.
/// - An empty body, or any other type: `Ok(None)` (no offer; the body is not SDP).
pub fn offer_body<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
) -> Result<Option<&'a str>, BodyError> {
    if body.is_empty() {
        return Ok(None);
    }
    let raw = content_type.ok_or(BodyError::MissingContentType)?;
    let mt = parse_media_type(raw)?;
    sdp_in(&mt, body, None, 0)
}

fn parse_media_type(raw: &str) -> Result<MediaType, BodyError> {
    MediaType::parse(&Text::from(raw.to_owned()))
        .map_err(|_| BodyError::BadContentType(raw.chars().take(64).collect()))
}

/// The SDP in an entity of type `mt` (a whole body or one part).
fn sdp_in<'a>(
    mt: &MediaType,
    content: &'a [u8],
    transfer_encoding: Option<&str>,
    depth: usize,
) -> Result<Option<&'a str>, BodyError> {
    if mt.is("application", "sdp") {
        if let Some(cte) = transfer_encoding {
            let identity = ["binary", "8bit", "7bit"];
            if !identity.iter().any(|i| cte.eq_ignore_ascii_case(i)) {
                return Err(BodyError::UnsupportedTransferEncoding(
                    cte.chars().take(32).collect(),
                ));
            }
        }
        return std::str::from_utf8(content)
            .map(Some)
            .map_err(|_| BodyError::NotUtf8);
    }
    if !mt.mtype.eq_ignore_ascii_case("multipart") || depth >= MAX_NESTING {
        return Ok(None);
    }
    let boundary = mt
        .params
        .value("boundary")
        .map(unquote)
        .filter(|b| !b.is_empty())
        .ok_or(BodyError::MissingBoundary)?;
    for part in parts(content, boundary.as_bytes())? {
        let part = Part::parse(part);
        if part
            .disposition
            .as_deref()
            .is_some_and(|d| !d.eq_ignore_ascii_case("session"))
        {
            // early-session (RFC 3959), render, icon...: not the offer.
            continue;
        }
        // RFC 2046 §5.1: a part without Content-Type is text/plain.
        let Some(ct) = part.content_type.as_deref() else {
            continue;
        };
        let Ok(ct) = parse_media_type(ct) else {
            continue;
        };
        let found = sdp_in(
            &ct,
            part.content,
            part.transfer_encoding.as_deref(),
            depth + 1,
        );
        match found {
            Ok(Some(sdp)) => return Ok(Some(sdp)),
            Ok(None) => {}
            // The offer itself is undecodable: say so rather than answer without it.
            Err(e) if ct.is("application", "sdp") => return Err(e),
            // A malformed nested multipart is skipped like any part we do not need.
            Err(_) => {}
        }
    }
    Ok(None)
}

/// A `boundary` parameter value without its quotes (RFC 2045 §5.1 allows a quoted string).
fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        None => v.to_owned(),
    }
}

/// The body parts between the delimiter lines of `boundary` (RFC 2046 §5.1.1): the
/// preamble and epilogue are dropped, the line break before each delimiter belongs to the
/// delimiter. A body whose close delimiter is missing ends its last part at the end.
fn parts<'a>(body: &'a [u8], boundary: &[u8]) -> Result<Vec<&'a [u8]>, BodyError> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut from = 0;
    loop {
        let Some(delim) = next_delimiter(body, from, boundary) else {
            let Some(s) = start else {
                return Err(BodyError::NoDelimiter);
            };
            out.push(without_final_line_break(body.get(s..).unwrap_or(&[])));
            return Ok(out);
        };
        if let Some(s) = start {
            out.push(without_final_line_break(
                body.get(s..delim.at).unwrap_or(&[]),
            ));
        }
        if delim.close {
            return Ok(out);
        }
        start = Some(delim.after);
        from = delim.after;
    }
}

struct Delimiter {
    /// Where its `--` starts.
    at: usize,
    /// Just past its line end.
    after: usize,
    /// `--boundary--`, the last one.
    close: bool,
}

/// The next delimiter line at or after `from`: `--boundary`, optionally `--`, then only
/// linear white space to the end of the line (RFC 2046 §5.1.1 transport padding). A line
/// that merely starts with the boundary is content.
fn next_delimiter(body: &[u8], from: usize, boundary: &[u8]) -> Option<Delimiter> {
    let mut line_start = from;
    while line_start < body.len() {
        let rest = body.get(line_start..).unwrap_or(&[]);
        let line_len = rest.iter().position(|&b| b == b'\n');
        let line = match line_len {
            Some(n) => rest.get(..n).unwrap_or(&[]),
            None => rest,
        };
        let after = line_start + line_len.map_or(rest.len(), |n| n + 1);
        if let Some(tail) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        {
            let (close, padding) = match tail.strip_prefix(b"--") {
                Some(p) => (true, p),
                None => (false, tail),
            };
            if padding.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r')) {
                return Some(Delimiter {
                    at: line_start,
                    after,
                    close,
                });
            }
        }
        line_start = after;
    }
    None
}

fn without_final_line_break(part: &[u8]) -> &[u8] {
    let part = part.strip_suffix(b"\n").unwrap_or(part);
    part.strip_suffix(b"\r").unwrap_or(part)
}

/// One body part: its MIME headers (those we read) and its content.
struct Part<'a> {
    content_type: Option<String>,
    transfer_encoding: Option<String>,
    /// The disposition type alone (`session`, `render`...), without parameters.
    disposition: Option<String>,
    content: &'a [u8],
}

impl<'a> Part<'a> {
    fn parse(part: &'a [u8]) -> Part<'a> {
        let (head, content) = split_head(part);
        let mut p = Part {
            content_type: None,
            transfer_encoding: None,
            disposition: None,
            content,
        };
        for (name, value) in header_fields(head) {
            let slot = if name.eq_ignore_ascii_case("content-type") {
                &mut p.content_type
            } else if name.eq_ignore_ascii_case("content-transfer-encoding") {
                &mut p.transfer_encoding
            } else if name.eq_ignore_ascii_case("content-disposition") {
                &mut p.disposition
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        if let Some(d) = p.disposition.as_mut() {
            let kind = d.split(';').next().unwrap_or("").trim().to_owned();
            *d = kind;
        }
        if let Some(t) = p.transfer_encoding.as_mut() {
            *t = t.trim().to_owned();
        }
        p
    }
}

/// Splits a part at the empty line ending its headers; a part that starts with a line
/// break has none (RFC 2046 §5.1.1), one without an empty line is all headers.
fn split_head(part: &[u8]) -> (&[u8], &[u8]) {
    for lead in [&b"\r\n"[..], b"\n"] {
        if let Some(content) = part.strip_prefix(lead) {
            return (&[], content);
        }
    }
    let mut i = 0;
    while let Some(rel) = part
        .get(i..)
        .and_then(|r| r.iter().position(|&b| b == b'\n'))
    {
        let lf = i + rel;
        let next = part.get(lf + 1..).unwrap_or(&[]);
        for blank in [&b"\r\n"[..], b"\n"] {
            if next.starts_with(blank) {
                let head = part.get(..lf + 1).unwrap_or(&[]);
                let content = part.get(lf + 1 + blank.len()..).unwrap_or(&[]);
                return (head, content);
            }
        }
        i = lf + 1;
    }
    (part, &[])
}

/// `name: value` fields of a MIME header section, folded lines joined; lines that are not
/// UTF-8 or have no colon are skipped.
fn header_fields(head: &[u8]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                       m=audio 4000 RTP/AVP 0\r\n";

    #[test]
    fn application_sdp_is_the_body_in_any_case_with_parameters() {
        for ct in [
            "application/sdp",
            "Application/SDP",
            "application/sdp; charset=utf-8",
        ] {
            assert_eq!(offer_body(Some(ct), SDP.as_bytes()), Ok(Some(SDP)), "{ct}");
        }
    }

    #[test]
    fn no_body_or_another_type_is_no_offer() {
        assert_eq!(offer_body(Some("application/sdp"), b""), Ok(None));
        assert_eq!(offer_body(None, b""), Ok(None));
        assert_eq!(
            offer_body(Some("application/unknownformat"), b"<audio/>"),
            Ok(None)
        );
        assert_eq!(offer_body(Some("text/plain"), SDP.as_bytes()), Ok(None));
    }

    #[test]
    fn a_body_without_a_type_or_with_a_broken_one_is_an_error() {
        let e = offer_body(None, SDP.as_bytes());
        assert_eq!(e, Err(BodyError::MissingContentType));
        assert_eq!(
            e.err().map(|e| e.status()),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        let e = offer_body(Some("application"), SDP.as_bytes());
        assert!(matches!(e, Err(BodyError::BadContentType(_))), "{e:?}");
        assert_eq!(
            offer_body(Some("application/sdp"), b"v=0\r\n\xff\r\n"),
            Err(BodyError::NotUtf8)
        );
    }

    fn multipart(boundary: &str, parts: &[(&str, &str)]) -> String {
        let mut b = String::from("preamble to be ignored\r\n");
        for (headers, content) in parts {
            b.push_str(&format!("--{boundary}\r\n{headers}\r\n{content}\r\n"));
        }
        b.push_str(&format!("--{boundary}--\r\nepilogue\r\n"));
        b
    }

    #[test]
    fn multipart_mixed_gives_its_sdp_part() {
        // A SIP-I trunk: SDP next to an ISUP IAM (RFC 3204).
        let body = multipart(
            "unique-boundary-1",
            &[
                ("Content-Type: application/sdp\r\n", SDP),
                (
                    "Content-Type: application/ISUP; version=nxv3; base=etsi121\r\n\
                     Content-Disposition: signal; handling=optional\r\n",
                    "\u{1}\u{0}\u{49}",
                ),
            ],
        );
        let ct = "multipart/mixed; boundary=unique-boundary-1";
        assert_eq!(offer_body(Some(ct), body.as_bytes()), Ok(Some(SDP)));
    }

    #[test]
    fn multipart_alternative_and_quoted_boundaries_are_read() {
        let body = multipart(
            "a b:c",
            &[
                ("Content-Type: text/plain\r\n", "hello"),
                ("content-type: APPLICATION/SDP\r\n", SDP),
            ],
        );
        let ct = "multipart/alternative;boundary=\"a b:c\"";
        assert_eq!(offer_body(Some(ct), body.as_bytes()), Ok(Some(SDP)));
    }

    #[test]
    fn sdp_parts_of_another_disposition_or_type_are_skipped() {
        let early = SDP.replace("4000", "5000");
        let body = multipart(
            "b1",
            &[
                ("Content-Type: application/sdp\r\nContent-Disposition: early-session\r\n", &early),
                ("", "a part without headers is text/plain"),
                ("Content-Type: application/sdp\r\nContent-Disposition: session;handling=required\r\n", SDP),
            ],
        );
        assert_eq!(
            offer_body(Some("multipart/mixed;boundary=b1"), body.as_bytes()),
            Ok(Some(SDP))
        );
    }

    #[test]
    fn multipart_without_sdp_is_no_offer() {
        let body = multipart("b1", &[("Content-Type: text/plain\r\n", "hi")]);
        assert_eq!(
            offer_body(Some("multipart/mixed;boundary=b1"), body.as_bytes()),
            Ok(None)
        );
    }

    #[test]
    fn nested_multipart_is_searched() {
        let inner = multipart("inner", &[("Content-Type: application/sdp\r\n", SDP)]);
        let body = multipart(
            "outer",
            &[
                ("Content-Type: text/plain\r\n", "x"),
                (
                    "Content-Type: multipart/related; boundary=inner\r\n",
                    &inner,
                ),
            ],
        );
        assert_eq!(
            offer_body(Some("multipart/mixed; boundary=outer"), body.as_bytes()),
            Ok(Some(SDP))
        );
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut body = multipart("b0", &[("Content-Type: application/sdp\r\n", SDP)]);
        for i in 1..=MAX_NESTING + 1 {
            let ct = format!("Content-Type: multipart/mixed; boundary=b{}\r\n", i - 1);
            body = multipart(&format!("b{i}"), &[(&ct, &body)]);
        }
        let ct = format!("multipart/mixed; boundary=b{}", MAX_NESTING + 1);
        assert_eq!(offer_body(Some(&ct), body.as_bytes()), Ok(None));
    }

    #[test]
    fn bare_lf_padding_and_a_missing_close_delimiter_are_tolerated() {
        let body = format!(
            "--xyz  \nContent-Type: application/sdp\n\n{}\n--xyzNOT a delimiter\n",
            SDP.replace("\r\n", "\n").trim_end()
        );
        let found = offer_body(Some("multipart/mixed;boundary=xyz"), body.as_bytes());
        let expected = format!(
            "{}\n--xyzNOT a delimiter",
            SDP.replace("\r\n", "\n").trim_end()
        );
        assert_eq!(found, Ok(Some(expected.as_str())));
    }

    #[test]
    fn malformed_multipart_is_an_error_naming_the_problem() {
        let body = multipart("b1", &[("Content-Type: application/sdp\r\n", SDP)]);
        assert_eq!(
            offer_body(Some("multipart/mixed"), body.as_bytes()),
            Err(BodyError::MissingBoundary)
        );
        assert_eq!(
            offer_body(Some("multipart/mixed;boundary=other"), body.as_bytes()),
            Err(BodyError::NoDelimiter)
        );
        let encoded = multipart(
            "b1",
            &[(
                "Content-Type: application/sdp\r\nContent-Transfer-Encoding: base64\r\n",
                "dj0w",
            )],
        );
        let e = offer_body(Some("multipart/mixed;boundary=b1"), encoded.as_bytes());
        assert!(
            matches!(e, Err(BodyError::UnsupportedTransferEncoding(ref t)) if t == "base64"),
            "{e:?}"
        );
    }

    #[test]
    fn arbitrary_octets_never_panic() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xb0d1);
        let alphabet = b"-b1\r\n: \tContent-Type/applicationsdp;=\"\xff";
        for _ in 0..20_000 {
            let body: Vec<u8> = (0..rng.gen_range(0..120))
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let _ = offer_body(Some("multipart/mixed;boundary=b1"), &body);
        }
    }
}
