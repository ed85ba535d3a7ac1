//! Sans-IO framing of SIP messages on a byte stream (RFC 3261 §18.3).
//!
//! TCP and TLS deliver octets, not messages: [`StreamFramer`] accumulates them
//! and cuts complete messages using the Content-Length header (mandatory on
//! streams; missing means 0). CRLF keep-alives between messages (RFC 5626
//! §3.5.1) are skipped; each double-CRLF "ping" among them is counted so the
//! driver can answer it with a CRLF "pong" ([`StreamFramer::take_pings`]). Any
//! framing error is fatal for the connection: after it the stream cannot be
//! resynchronised, so the driver writes the request's error response
//! ([`StreamFramer::rejection`]: 513 when too large, 400 when its Content-Length
//! cannot frame it) and then closes it.

use crate::header::HeaderName;
use crate::message::{
    find_header_end, reject_unparsable, skip_leading_crlf, Limits, ParseError, ParseErrorKind,
    Response, Text,
};
use bytes::{Bytes, BytesMut};

/// Why a stream can no longer be framed (the connection must be closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("header section larger than {0} octets")]
    HeadersTooLarge(usize),
    #[error("message larger than {0} octets")]
    MessageTooLarge(usize),
    #[error("malformed Content-Length")]
    BadContentLength,
    #[error("more than one Content-Length")]
    MultipleContentLength,
}

impl FramingError {
    /// The same failure as a parse error of the message alone, which says how a request
    /// is answered: 513 Message Too Large (RFC 3261 §21.5.14) or 400.
    fn to_parse_error(&self, in_response: bool) -> ParseError {
        let kind = match *self {
            FramingError::HeadersTooLarge(n) | FramingError::MessageTooLarge(n) => {
                ParseErrorKind::MessageTooLarge(n)
            }
            FramingError::BadContentLength => ParseErrorKind::BadContentLength,
            FramingError::MultipleContentLength => ParseErrorKind::MultipleContentLength,
        };
        ParseError { kind, in_response }
    }
}

/// Accumulates stream octets and pops whole messages.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    limits: Limits,
    /// Bytes of `buf` already searched for the end of the header section.
    searched: usize,
    /// Total length of the message at the front, once its headers are complete.
    frame_len: Option<usize>,
    failed: Option<FramingError>,
    /// Octets of `PING` matched by the keep-alive CR/LFs skipped so far.
    ping_matched: usize,
    /// Pings seen and not yet taken.
    pings: usize,
}

/// RFC 5626 §3.5.1: a keep-alive ping is a double CRLF between messages.
const PING: &[u8] = b"\r\n\r\n";

impl StreamFramer {
    pub fn new(limits: Limits) -> StreamFramer {
        StreamFramer {
            buf: BytesMut::with_capacity(4096),
            limits,
            searched: 0,
            frame_len: None,
            failed: None,
            ping_matched: 0,
            pings: 0,
        }
    }

    /// Appends received octets.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The buffer to read into directly (e.g. `AsyncReadExt::read_buf`).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Octets buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when octets of a message not yet complete are buffered. Once `pop` has
    /// returned `Ok(None)`, keep-alive CR/LFs between messages are not counted: a
    /// peer that sent only those is not in a message.
    pub fn in_message(&self) -> bool {
        self.frame_len.is_some() || self.buf.iter().any(|b| *b != b'\r' && *b != b'\n')
    }

    /// Double-CRLF keep-alive pings (RFC 5626 §3.5.1) seen between messages since
    /// the last call; the server side answers each with a single CRLF pong.
    pub fn take_pings(&mut self) -> usize {
        std::mem::take(&mut self.pings)
    }

    /// The next complete message, `Ok(None)` if more octets are needed.
    pub fn pop(&mut self) -> Result<Option<Bytes>, FramingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.pop_inner();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// Once [`StreamFramer::pop`] has failed: the error response for the request that
    /// could not be framed, built from its Via, From, To, Call-ID and CSeq as far as they
    /// were received. `None` before a failure, for a response, or when those headers are
    /// missing.
    pub fn rejection(&self) -> Option<Response> {
        let error = self.failed.as_ref()?;
        let raw = Bytes::copy_from_slice(&self.buf);
        let in_response = raw.starts_with(b"SIP/");
        reject_unparsable(&raw, &error.to_parse_error(in_response))
    }

    fn pop_inner(&mut self) -> Result<Option<Bytes>, FramingError> {
        let lead = skip_leading_crlf(&self.buf);
        if let Some(total) = self.frame_len {
            if self.buf.len() < total {
                return Ok(None);
            }
            self.frame_len = None;
            self.searched = 0;
            return Ok(Some(self.buf.split_to(total).freeze()));
        }
        if lead > 0 {
            // A lone CR may be the first half of a CRLF: keep it for the next read only if
            // it is the last octet; either way it is ignorable whitespace.
            let skipped = self.buf.split_to(lead);
            self.count_pings(&skipped);
            self.searched = 0;
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        // A message starts here: CR/LFs before it and after it are separate runs.
        self.ping_matched = 0;
        // Resume the search a few octets back so a CRLFCRLF split across reads is found.
        let from = self.searched.saturating_sub(3);
        let found =
            find_header_end(self.buf.get(from..).unwrap_or(&[])).map(|(h, b)| (h + from, b + from));
        let Some((head_len, body_start)) = found else {
            self.searched = self.buf.len();
            if self.buf.len() > self.limits.max_message_size {
                return Err(FramingError::HeadersTooLarge(self.limits.max_message_size));
            }
            return Ok(None);
        };
        let cl = content_length(self.buf.get(..head_len).unwrap_or(&[]))?;
        let total = body_start
            .checked_add(cl)
            .ok_or(FramingError::BadContentLength)?;
        if total > self.limits.max_message_size {
            return Err(FramingError::MessageTooLarge(self.limits.max_message_size));
        }
        if self.buf.len() < total {
            self.frame_len = Some(total);
            return Ok(None);
        }
        self.searched = 0;
        Ok(Some(self.buf.split_to(total).freeze()))
    }
}

impl StreamFramer {
    /// Matches skipped keep-alive octets against `PING`, across reads.
    fn count_pings(&mut self, skipped: &[u8]) {
        for &b in skipped {
            if PING.get(self.ping_matched) == Some(&b) {
                self.ping_matched += 1;
            } else {
                // Only a CR can restart the pattern (an LF out of place cannot).
                self.ping_matched = usize::from(b == b'\r');
            }
            if self.ping_matched == PING.len() {
                self.pings += 1;
                self.ping_matched = 0;
            }
        }
    }
}

/// Content-Length from a raw header section (0 when absent).
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
    let mut lines = head.split(|&b| b == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        let name = std::str::from_utf8(line.get(..colon).unwrap_or(&[]))
            .map_err(|_| FramingError::BadContentLength);
        let Ok(name) = name else { continue };
        if HeaderName::parse(&Text::from(name.trim_end().to_owned())) != HeaderName::ContentLength {
            continue;
        }
        if found.is_some() {
            return Err(FramingError::MultipleContentLength);
        }
        let mut value: Vec<u8> = line.get(colon + 1..).unwrap_or(&[]).to_vec();
        while let Some(cont) =
            lines.next_if(|l| l.first().is_some_and(|b| *b == b' ' || *b == b'\t'))
        {
            value.extend_from_slice(cont.strip_suffix(b"\r").unwrap_or(cont));
        }
        let v = std::str::from_utf8(&value)
            .map_err(|_| FramingError::BadContentLength)?
            .trim();
        let n = crate::header::parse_delta(v).ok_or(FramingError::BadContentLength)?;
        found = Some(n as usize);
    }
    Ok(found.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nContent-Length: 3\r\n\r\nabc";

    #[test]
    fn partial_reads_are_joined() {
        let mut f = StreamFramer::new(Limits::default());
        for chunk in MSG.chunks(7) {
            assert_eq!(f.pop(), Ok(None));
            f.push(chunk);
        }
        assert_eq!(f.pop().unwrap().as_deref(), Some(MSG));
        assert_eq!(f.pop(), Ok(None));
    }

    #[test]
    fn two_messages_in_one_read_are_split() {
        let mut f = StreamFramer::new(Limits::default());
        let mut both = MSG.to_vec();
        both.extend_from_slice(b"\r\n\r\n");
        both.extend_from_slice(MSG);
        f.push(&both);
        assert_eq!(f.pop().unwrap().as_deref(), Some(MSG));
        assert_eq!(f.pop().unwrap().as_deref(), Some(MSG));
        assert_eq!(f.pop(), Ok(None));
    }

    #[test]
    fn crlf_keepalives_are_skipped() {
        let mut f = StreamFramer::new(Limits::default());
        f.push(b"\r\n\r\n\r\n");
        assert_eq!(f.pop(), Ok(None));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn double_crlf_between_messages_is_a_ping_even_split_across_reads() {
        let mut f = StreamFramer::new(Limits::default());
        f.push(MSG);
        f.push(b"\r\n\r");
        assert!(f.pop().unwrap().is_some());
        assert_eq!(f.pop(), Ok(None));
        assert_eq!(f.take_pings(), 0);
        f.push(b"\n\r\n\r\n");
        assert_eq!(f.pop(), Ok(None));
        assert_eq!(f.take_pings(), 2);
        assert_eq!(f.take_pings(), 0, "taken once");
        assert!(!f.in_message(), "keep-alives are not a message");
    }

    #[test]
    fn only_a_double_crlf_is_a_ping() {
        let mut f = StreamFramer::new(Limits::default());
        f.push(b"\r\n\n\r\n");
        assert_eq!(f.pop(), Ok(None));
        assert_eq!(f.take_pings(), 0, "a stray LF breaks the pattern");
        f.push(b"\r\n");
        assert_eq!(f.pop(), Ok(None));
        assert_eq!(f.take_pings(), 1, "completed by the next read");
        f.push(b"\r\n");
        f.push(MSG);
        f.push(b"\r\n");
        assert!(f.pop().unwrap().is_some());
        assert_eq!(f.pop(), Ok(None));
        assert_eq!(
            f.take_pings(),
            0,
            "a CRLF before and one after a message are not one ping"
        );
    }

    #[test]
    fn a_partial_message_is_in_message() {
        let mut f = StreamFramer::new(Limits::default());
        assert!(!f.in_message());
        f.push(b"\r\nOPT");
        assert_eq!(f.pop(), Ok(None));
        assert!(f.in_message());
        f.push(&MSG[3..]);
        assert!(f.pop().unwrap().is_some());
        assert!(!f.in_message());
    }

    #[test]
    fn body_not_yet_arrived_waits() {
        let mut f = StreamFramer::new(Limits::default());
        f.push(&MSG[..MSG.len() - 1]);
        assert_eq!(f.pop(), Ok(None));
        f.push(&MSG[MSG.len() - 1..]);
        assert!(f.pop().unwrap().is_some());
    }

    #[test]
    fn oversize_header_section_is_fatal() {
        let mut f = StreamFramer::new(Limits {
            max_message_size: 64,
            ..Limits::default()
        });
        f.push(&[b'a'; 100]);
        assert_eq!(f.pop(), Err(FramingError::HeadersTooLarge(64)));
        assert!(f.pop().is_err());
    }

    #[test]
    fn oversize_content_length_is_fatal() {
        let mut f = StreamFramer::new(Limits::default());
        f.push(b"OPTIONS sip:a SIP/2.0\r\nl: 999999\r\n\r\n");
        assert_eq!(f.pop(), Err(FramingError::MessageTooLarge(65_535)));
    }

    #[test]
    fn multiple_content_length_is_fatal() {
        let mut f = StreamFramer::new(Limits::default());
        f.push(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab");
        assert_eq!(f.pop(), Err(FramingError::MultipleContentLength));
    }

    #[test]
    fn missing_content_length_means_empty_body() {
        let mut f = StreamFramer::new(Limits::default());
        f.push(b"OPTIONS sip:a SIP/2.0\r\nTo: x\r\n\r\nOPTIONS");
        assert_eq!(f.pop().unwrap().map(|b| b.len()), Some(32));
        assert_eq!(f.buffered(), 7);
    }
}
