//! SIP messages: parsing, typed access and serialization (RFC 3261 §7, §8.2.6, §18.3).
//!
//! This is the first step of the call flow: a transport hands a datagram or a
//! stream frame (see [`crate::transport::StreamFramer`]) to [`Message::parse`],
//! which splits the start line and header lines without copying (values are
//! [`Text`] slices of the received [`Bytes`]) and enforces [`Limits`]. Typed views
//! (Via, From/To, CSeq...) are parsed on demand by [`Headers`]. Outgoing messages
//! are built with [`Response::to_request`] / [`RequestBuilder`] and written with
//! `write_to` into a reusable buffer; `Content-Length` is always computed from the
//! body.

mod text;

pub use text::Text;

use crate::header::{
    is_token, parse_tokens, split_list, CSeq, Header, HeaderError, HeaderName, MediaType, NameAddr,
    SessionExpires, Via,
};
use crate::uri::{Uri, UriError};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// A request method (RFC 3261 §7.1 and extensions).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Info,
    Update,
    Register,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    /// An extension method token, kept as sent (methods are case-sensitive).
    Other(Text),
}

impl Method {
    /// Parses a method token; `None` if it is not a token.
    pub fn parse(t: &Text) -> Option<Method> {
        use Method::*;
        Some(match t.as_str() {
            "INVITE" => Invite,
            "ACK" => Ack,
            "BYE" => Bye,
            "CANCEL" => Cancel,
            "OPTIONS" => Options,
            "INFO" => Info,
            "UPDATE" => Update,
            "REGISTER" => Register,
            "PRACK" => Prack,
            "SUBSCRIBE" => Subscribe,
            "NOTIFY" => Notify,
            "REFER" => Refer,
            "MESSAGE" => Message,
            s if is_token(s) => Other(t.clone()),
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &str {
        use Method::*;
        match self {
            Invite => "INVITE",
            Ack => "ACK",
            Bye => "BYE",
            Cancel => "CANCEL",
            Options => "OPTIONS",
            Info => "INFO",
            Update => "UPDATE",
            Register => "REGISTER",
            Prack => "PRACK",
            Subscribe => "SUBSCRIBE",
            Notify => "NOTIFY",
            Refer => "REFER",
            Message => "MESSAGE",
            Other(t) => t.as_str(),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A response status code, 100..=699 (RFC 3261 §7.2, §21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(pub u16);

impl StatusCode {
    pub const TRYING: StatusCode = StatusCode(100);
    pub const RINGING: StatusCode = StatusCode(180);
    pub const SESSION_PROGRESS: StatusCode = StatusCode(183);
    pub const OK: StatusCode = StatusCode(200);
    pub const BAD_REQUEST: StatusCode = StatusCode(400);
    pub const UNAUTHORIZED: StatusCode = StatusCode(401);
    pub const FORBIDDEN: StatusCode = StatusCode(403);
    pub const NOT_FOUND: StatusCode = StatusCode(404);
    pub const METHOD_NOT_ALLOWED: StatusCode = StatusCode(405);
    pub const NOT_ACCEPTABLE: StatusCode = StatusCode(406);
    pub const PROXY_AUTHENTICATION_REQUIRED: StatusCode = StatusCode(407);
    pub const REQUEST_TIMEOUT: StatusCode = StatusCode(408);
    pub const REQUEST_ENTITY_TOO_LARGE: StatusCode = StatusCode(413);
    pub const REQUEST_URI_TOO_LONG: StatusCode = StatusCode(414);
    pub const UNSUPPORTED_MEDIA_TYPE: StatusCode = StatusCode(415);
    pub const UNSUPPORTED_URI_SCHEME: StatusCode = StatusCode(416);
    pub const BAD_EXTENSION: StatusCode = StatusCode(420);
    pub const EXTENSION_REQUIRED: StatusCode = StatusCode(421);
    pub const SESSION_INTERVAL_TOO_SMALL: StatusCode = StatusCode(422);
    pub const INTERVAL_TOO_BRIEF: StatusCode = StatusCode(423);
    pub const TEMPORARILY_UNAVAILABLE: StatusCode = StatusCode(480);
    pub const CALL_DOES_NOT_EXIST: StatusCode = StatusCode(481);
    pub const LOOP_DETECTED: StatusCode = StatusCode(482);
    pub const TOO_MANY_HOPS: StatusCode = StatusCode(483);
    pub const BUSY_HERE: StatusCode = StatusCode(486);
    pub const REQUEST_TERMINATED: StatusCode = StatusCode(487);
    pub const NOT_ACCEPTABLE_HERE: StatusCode = StatusCode(488);
    pub const REQUEST_PENDING: StatusCode = StatusCode(491);
    pub const SERVER_INTERNAL_ERROR: StatusCode = StatusCode(500);
    pub const NOT_IMPLEMENTED: StatusCode = StatusCode(501);
    pub const SERVICE_UNAVAILABLE: StatusCode = StatusCode(503);
    pub const VERSION_NOT_SUPPORTED: StatusCode = StatusCode(505);
    pub const MESSAGE_TOO_LARGE: StatusCode = StatusCode(513);
    pub const DECLINE: StatusCode = StatusCode(603);

    /// The RFC's reason phrase, or a class default.
    // Specific codes first, class ranges as the fallback: the overlap is the point.
    #[allow(clippy::match_overlapping_arm)]
    pub fn reason_phrase(self) -> &'static str {
        match self.0 {
            100 => "Trying",
            180 => "Ringing",
            181 => "Call Is Being Forwarded",
            182 => "Queued",
            183 => "Session Progress",
            200 => "OK",
            202 => "Accepted",
            300 => "Multiple Choices",
            301 => "Moved Permanently",
            302 => "Moved Temporarily",
            400 => "Bad Request",
            401 => "Unauthorized",
            402 => "Payment Required",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            407 => "Proxy Authentication Required",
            408 => "Request Timeout",
            410 => "Gone",
            413 => "Request Entity Too Large",
            414 => "Request-URI Too Long",
            415 => "Unsupported Media Type",
            416 => "Unsupported URI Scheme",
            420 => "Bad Extension",
            421 => "Extension Required",
            422 => "Session Interval Too Small",
            423 => "Interval Too Brief",
            480 => "Temporarily Unavailable",
            481 => "Call/Transaction Does Not Exist",
            482 => "Loop Detected",
            483 => "Too Many Hops",
            484 => "Address Incomplete",
            485 => "Ambiguous",
            486 => "Busy Here",
            487 => "Request Terminated",
            488 => "Not Acceptable Here",
            491 => "Request Pending",
            493 => "Undecipherable",
            500 => "Server Internal Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Server Time-out",
            505 => "Version Not Supported",
            513 => "Message Too Large",
            600 => "Busy Everywhere",
            603 => "Decline",
            604 => "Does Not Exist Anywhere",
            606 => "Not Acceptable",
            100..=199 => "Provisional",
            200..=299 => "Success",
            300..=399 => "Redirection",
            400..=499 => "Client Error",
            500..=599 => "Server Error",
            _ => "Global Failure",
        }
    }
    pub fn is_provisional(self) -> bool {
        (100..200).contains(&self.0)
    }
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }
    /// 200..=699.
    pub fn is_final(self) -> bool {
        self.0 >= 200
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason_phrase())
    }
}

/// Parser limits. Defaults follow RFC 3261 §18.1.1 (a UDP datagram is at most
/// 65,535 octets) and sizes no legitimate trunk sends past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Whole message (start line, headers, body).
    pub max_message_size: usize,
    /// Header lines (after unfolding).
    pub max_headers: usize,
    /// One physical line, including a folded header's total length.
    pub max_line_length: usize,
    /// Via values across all Via headers (70: the usual initial Max-Forwards, RFC 3261 §8.1.1.6).
    pub max_via: usize,
    /// Request-URI length (over it: 414, RFC 3261 §21.4.12).
    pub max_request_uri: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: 65_535,
            max_headers: 128,
            max_line_length: 8 * 1024,
            max_via: 70,
            max_request_uri: 4 * 1024,
        }
    }
}

/// What was wrong with a message that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("empty message")]
    Empty,
    #[error("message larger than {0} octets")]
    MessageTooLarge(usize),
    #[error("more than {0} header lines")]
    TooManyHeaders(usize),
    #[error("a line is longer than {0} octets")]
    LineTooLong(usize),
    #[error("more than {0} Via values")]
    TooManyVia(usize),
    #[error("header section not terminated by an empty line")]
    UnterminatedHeaders,
    #[error("header section is not UTF-8")]
    NotUtf8,
    #[error("malformed start line")]
    BadStartLine,
    #[error("unsupported SIP version")]
    BadVersion,
    #[error("Request-URI longer than {0} octets")]
    RequestUriTooLong(usize),
    #[error("malformed Request-URI: {0}")]
    BadRequestUri(UriError),
    #[error("status code out of range")]
    BadStatusCode,
    #[error("malformed header line")]
    BadHeaderLine,
    #[error("malformed Content-Length")]
    BadContentLength,
    #[error("more than one Content-Length")]
    MultipleContentLength,
    #[error("body shorter than Content-Length")]
    BodyTruncated,
}

/// A parse failure; `in_response` says whether the start line looked like a
/// status line (then the message is dropped, never answered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub in_response: bool,
}

impl ParseError {
    /// The status to answer a request that failed to parse with, or `None` to
    /// drop it silently (responses, empty datagrams).
    pub fn status(&self) -> Option<StatusCode> {
        use ParseErrorKind::*;
        if self.in_response {
            return None;
        }
        match self.kind {
            Empty => None,
            // RFC 4475 §3.3.9: over UDP the element SHOULD respond with an error; on a
            // stream the framer answers it before closing the connection.
            MultipleContentLength => Some(StatusCode::BAD_REQUEST),
            // RFC 3261 §18.1.1 / §21.5.9
            MessageTooLarge(_) => Some(StatusCode::MESSAGE_TOO_LARGE),
            RequestUriTooLong(_) => Some(StatusCode::REQUEST_URI_TOO_LONG),
            BadVersion => Some(StatusCode::VERSION_NOT_SUPPORTED),
            TooManyHeaders(_) | LineTooLong(_) | TooManyVia(_) | UnterminatedHeaders | NotUtf8
            | BadStartLine | BadRequestUri(_) | BadStatusCode | BadHeaderLine
            | BadContentLength | BodyTruncated => Some(StatusCode::BAD_REQUEST),
        }
    }
}

/// The header fields of a message, in received order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::new())
    }
    pub fn with_capacity(n: usize) -> Headers {
        Headers(Vec::with_capacity(n))
    }
    /// Appends a header.
    pub fn push(&mut self, name: HeaderName, value: impl Into<Text>) {
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }
    /// Inserts a header before all others of the same name (or at the end).
    pub fn push_front(&mut self, name: HeaderName, value: impl Into<Text>) {
        let pos = self
            .0
            .iter()
            .position(|h| h.name.matches(&name))
            .unwrap_or(self.0.len());
        self.0.insert(
            pos,
            Header {
                name,
                value: value.into(),
            },
        );
    }
    /// Replaces every header of that name with one value.
    pub fn set(&mut self, name: HeaderName, value: impl Into<Text>) {
        let value = value.into();
        match self.0.iter().position(|h| h.name.matches(&name)) {
            Some(pos) => {
                if let Some(h) = self.0.get_mut(pos) {
                    h.value = value;
                }
                let mut i = 0;
                self.0.retain(|h| {
                    let keep = i <= pos || !h.name.matches(&name);
                    i += 1;
                    keep
                });
            }
            None => self.push(name, value),
        }
    }
    /// Removes every header of that name.
    pub fn remove(&mut self, name: &HeaderName) {
        self.0.retain(|h| !h.name.matches(name));
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Header> {
        self.0.iter_mut()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// First value of a header.
    pub fn get(&self, name: &HeaderName) -> Option<&Text> {
        self.0
            .iter()
            .find(|h| h.name.matches(name))
            .map(|h| &h.value)
    }
    /// All header lines of that name, in order.
    pub fn get_all<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = &'a Text> + 'a {
        let name = name.clone();
        self.0
            .iter()
            .filter(move |h| h.name.matches(&name))
            .map(|h| &h.value)
    }
    /// All comma-separated values of that name, across lines, in order.
    pub fn values<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = Text> + 'a {
        self.get_all(name)
            .flat_map(|t| split_list(t).collect::<Vec<_>>())
    }
    /// Number of header lines with that name.
    pub fn count(&self, name: &HeaderName) -> usize {
        self.get_all(name).count()
    }

    fn single(&self, name: &HeaderName, label: &'static str) -> Result<&Text, HeaderError> {
        let mut it = self.get_all(name);
        let first = it.next().ok_or(HeaderError::Missing(label))?;
        if it.next().is_some() {
            return Err(HeaderError::Multiple(label));
        }
        Ok(first)
    }

    fn single_opt(
        &self,
        name: &HeaderName,
        label: &'static str,
    ) -> Result<Option<&Text>, HeaderError> {
        match self.single(name, label) {
            Ok(t) => Ok(Some(t)),
            Err(HeaderError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every Via value, top first.
    pub fn via(&self) -> Result<Vec<Via>, HeaderError> {
        let v: Vec<Via> = self
            .values(&HeaderName::Via)
            .map(|t| Via::parse(&t))
            .collect::<Result<_, _>>()?;
        if v.is_empty() {
            return Err(HeaderError::Missing("Via"));
        }
        Ok(v)
    }
    /// The topmost Via value.
    pub fn top_via(&self) -> Result<Via, HeaderError> {
        let first = self
            .values(&HeaderName::Via)
            .next()
            .ok_or(HeaderError::Missing("Via"))?;
        Via::parse(&first)
    }
    pub fn from(&self) -> Result<NameAddr, HeaderError> {
        let v = self.single(&HeaderName::From, "From")?;
        NameAddr::parse(v, "From")
    }
    pub fn to(&self) -> Result<NameAddr, HeaderError> {
        let v = self.single(&HeaderName::To, "To")?;
        NameAddr::parse(v, "To")
    }
    pub fn call_id(&self) -> Result<&Text, HeaderError> {
        let v = self.single(&HeaderName::CallId, "Call-ID")?;
        if v.is_empty() || v.contains(crate::header::is_lws) {
            return Err(HeaderError::Malformed("Call-ID"));
        }
        Ok(v)
    }
    pub fn cseq(&self) -> Result<CSeq, HeaderError> {
        CSeq::parse(self.single(&HeaderName::CSeq, "CSeq")?)
    }
    /// Contact values (empty for none; `*` is reported by [`Headers::contact_is_star`]).
    pub fn contacts(&self) -> Result<Vec<NameAddr>, HeaderError> {
        if self.contact_is_star() {
            return Ok(Vec::new());
        }
        self.values(&HeaderName::Contact)
            .map(|t| NameAddr::parse(&t, "Contact"))
            .collect()
    }
    /// `Contact: *` (REGISTER removal, RFC 3261 §10.2.2).
    pub fn contact_is_star(&self) -> bool {
        self.get(&HeaderName::Contact)
            .is_some_and(|v| v.as_str() == "*")
    }
    pub fn max_forwards(&self) -> Result<Option<u32>, HeaderError> {
        match self.single_opt(&HeaderName::MaxForwards, "Max-Forwards")? {
            None => Ok(None),
            // RFC 3261 §20.22 gives no upper bound, but RFC 4475 §3.1.2.4 treats values over
            // 255 as overlarge; no element sends more than 70 initially.
            Some(v) => crate::header::parse_delta(v.trim())
                .filter(|n| *n <= 255)
                .map(Some)
                .ok_or(HeaderError::Malformed("Max-Forwards")),
        }
    }
    pub fn content_type(&self) -> Result<Option<MediaType>, HeaderError> {
        self.single_opt(&HeaderName::ContentType, "Content-Type")?
            .map(MediaType::parse)
            .transpose()
    }
    pub fn content_length(&self) -> Result<Option<usize>, HeaderError> {
        match self.single_opt(&HeaderName::ContentLength, "Content-Length")? {
            None => Ok(None),
            Some(v) => crate::header::parse_delta(v.trim())
                .map(|n| Some(n as usize))
                .ok_or(HeaderError::Malformed("Content-Length")),
        }
    }
    /// Route values in order.
    pub fn routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.values(&HeaderName::Route)
            .map(|t| NameAddr::parse(&t, "Route"))
            .collect()
    }
    /// Record-Route values in order.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.values(&HeaderName::RecordRoute)
            .map(|t| NameAddr::parse(&t, "Record-Route"))
            .collect()
    }
    /// Option tags / tokens of a list header (Supported, Require, Allow...).
    pub fn tokens(&self, name: &HeaderName) -> Vec<Text> {
        self.get_all(name).flat_map(parse_tokens).collect()
    }
    pub fn supported(&self) -> Vec<Text> {
        self.tokens(&HeaderName::Supported)
    }
    pub fn require(&self) -> Vec<Text> {
        self.tokens(&HeaderName::Require)
    }
    pub fn proxy_require(&self) -> Vec<Text> {
        self.tokens(&HeaderName::ProxyRequire)
    }
    pub fn allow(&self) -> Vec<Text> {
        self.tokens(&HeaderName::Allow)
    }
    /// Accept media ranges (empty when absent).
    pub fn accept(&self) -> Result<Vec<MediaType>, HeaderError> {
        self.values(&HeaderName::Accept)
            .filter(|t| !t.is_empty())
            .map(|t| MediaType::parse(&t).map_err(|_| HeaderError::Malformed("Accept")))
            .collect()
    }
    pub fn session_expires(&self) -> Result<Option<SessionExpires>, HeaderError> {
        self.single_opt(&HeaderName::SessionExpires, "Session-Expires")?
            .map(SessionExpires::parse)
            .transpose()
    }
    /// Raw Authorization value (RFC 3261 §22.2); parsed by the digest module.
    pub fn authorization(&self) -> Option<&Text> {
        self.get(&HeaderName::Authorization)
    }
    pub fn proxy_authorization(&self) -> Option<&Text> {
        self.get(&HeaderName::ProxyAuthorization)
    }
    pub fn www_authenticate(&self) -> Option<&Text> {
        self.get(&HeaderName::WwwAuthenticate)
    }
    pub fn proxy_authenticate(&self) -> Option<&Text> {
        self.get(&HeaderName::ProxyAuthenticate)
    }

    fn write_to(&self, out: &mut BytesMut) {
        for h in &self.0 {
            if h.name == HeaderName::ContentLength {
                continue;
            }
            out.put_slice(h.name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(h.value.as_bytes());
            out.put_slice(b"\r\n");
        }
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Bytes,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: StatusCode,
    pub reason: Text,
    pub headers: Headers,
    pub body: Bytes,
}

/// A parsed or built SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    /// Parses one complete message (a UDP datagram, or one frame cut by
    /// [`crate::transport::StreamFramer`]). Octets past Content-Length are ignored
    /// (RFC 3261 §18.3); a missing Content-Length means the rest is the body.
    pub fn parse(data: Bytes, limits: &Limits) -> Result<Message, ParseError> {
        parse_message(data, limits)
    }

    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }
    pub fn body(&self) -> &Bytes {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }
    pub fn is_request(&self) -> bool {
        matches!(self, Message::Request(_))
    }
    pub fn as_request(&self) -> Option<&Request> {
        match self {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        }
    }
    pub fn as_response(&self) -> Option<&Response> {
        match self {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        }
    }
    /// Serializes into `out` (appends).
    pub fn write_to(&self, out: &mut BytesMut) {
        match self {
            Message::Request(r) => r.write_to(out),
            Message::Response(r) => r.write_to(out),
        }
    }
    /// Serializes into fresh bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(1024);
        self.write_to(&mut b);
        b.freeze()
    }
}

impl From<Request> for Message {
    fn from(r: Request) -> Message {
        Message::Request(r)
    }
}
impl From<Response> for Message {
    fn from(r: Response) -> Message {
        Message::Response(r)
    }
}

fn write_body(headers: &Headers, body: &Bytes, out: &mut BytesMut) {
    headers.write_to(out);
    out.put_slice(b"Content-Length: ");
    out.put_slice(body.len().to_string().as_bytes());
    out.put_slice(b"\r\n\r\n");
    out.put_slice(body);
}

impl Request {
    /// A request with no headers and no body (see [`RequestBuilder`]).
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }
    /// Serializes into `out` (appends); Content-Length is computed.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(256 + self.body.len());
        out.put_slice(self.method.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.uri.as_str().as_bytes());
        out.put_slice(b" SIP/2.0\r\n");
        write_body(&self.headers, &self.body, out);
    }
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.write_to(&mut b);
        b.freeze()
    }
}

impl Response {
    /// A response with the default reason phrase, no headers and no body.
    pub fn new(status: StatusCode) -> Response {
        Response {
            status,
            reason: Text::from_static(status.reason_phrase()),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// A response to `req` per RFC 3261 §8.2.6.2: Via values (all, in order), From,
    /// To, Call-ID and CSeq copied; Timestamp echoed in 100 Trying (§8.2.6.1).
    /// `reason` overrides the default phrase. Add a To tag with [`Response::with_to_tag`].
    pub fn to_request(req: &Request, status: StatusCode, reason: Option<&str>) -> Response {
        let mut resp = Response::new(status);
        if let Some(r) = reason {
            resp.reason = Text::from(r.to_owned());
        }
        resp.headers = Headers::with_capacity(8);
        for h in &req.headers {
            let copy = matches!(
                h.name,
                HeaderName::Via
                    | HeaderName::From
                    | HeaderName::To
                    | HeaderName::CallId
                    | HeaderName::CSeq
            ) || (status.0 == 100 && h.name == HeaderName::Timestamp);
            if copy {
                resp.headers.0.push(h.clone());
            }
        }
        resp
    }

    /// Adds `;tag=<tag>` to To unless it already has a tag (RFC 3261 §8.2.6.2).
    pub fn with_to_tag(mut self, tag: &str) -> Response {
        self.set_to_tag(tag);
        self
    }

    /// Adds `;tag=<tag>` to To unless it already has a tag.
    pub fn set_to_tag(&mut self, tag: &str) {
        for h in self.headers.iter_mut() {
            if h.name == HeaderName::To {
                let has_tag = NameAddr::parse(&h.value, "To")
                    .map(|n| n.tag().is_some())
                    .unwrap_or(false);
                if !has_tag {
                    h.value = Text::from(format!("{};tag={}", h.value, tag));
                }
                return;
            }
        }
    }

    /// Appends a header (builder style).
    pub fn header(mut self, name: HeaderName, value: impl Into<Text>) -> Response {
        self.headers.push(name, value);
        self
    }

    /// Sets the body and its Content-Type (builder style).
    pub fn with_body(mut self, content_type: impl Into<Text>, body: Bytes) -> Response {
        self.headers.set(HeaderName::ContentType, content_type);
        self.body = body;
        self
    }

    /// Serializes into `out` (appends); Content-Length is computed.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(256 + self.body.len());
        out.put_slice(b"SIP/2.0 ");
        let code = self.status.0.min(999);
        out.put_slice(&[
            b'0' + (code / 100) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
        ]);
        out.put_u8(b' ');
        out.put_slice(self.reason.as_bytes());
        out.put_slice(b"\r\n");
        write_body(&self.headers, &self.body, out);
    }
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.write_to(&mut b);
        b.freeze()
    }
}

/// Builds requests we originate (BYE, re-INVITE, INFO, OPTIONS...). The caller
/// supplies Via, From, To, Call-ID, CSeq, Max-Forwards (the dialog layer knows them).
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    req: Request,
}

impl RequestBuilder {
    pub fn new(method: Method, uri: Uri) -> RequestBuilder {
        RequestBuilder {
            req: Request::new(method, uri),
        }
    }
    /// Appends a header.
    pub fn header(mut self, name: HeaderName, value: impl Into<Text>) -> RequestBuilder {
        self.req.headers.push(name, value);
        self
    }
    /// Adds a Via value on top (before existing Vias).
    pub fn via(mut self, via: &Via) -> RequestBuilder {
        self.req
            .headers
            .push_front(HeaderName::Via, Text::from(via.to_string()));
        self
    }
    /// `CSeq: <seq> <method of this request>`.
    pub fn cseq(mut self, seq: u32) -> RequestBuilder {
        let v = format!("{} {}", seq, self.req.method);
        self.req.headers.push(HeaderName::CSeq, Text::from(v));
        self
    }
    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: impl Into<Text>, body: Bytes) -> RequestBuilder {
        self.req.headers.set(HeaderName::ContentType, content_type);
        self.req.body = body;
        self
    }
    pub fn build(self) -> Request {
        self.req
    }
}

// ---------------------------------------------------------------------------
// Parser

fn err(kind: ParseErrorKind, in_response: bool) -> ParseError {
    ParseError { kind, in_response }
}

/// Finds the end of the header section: returns (header_len, body_start).
pub(crate) fn find_header_end(data: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < data.len() {
        match memchr_lf(data, i) {
            None => return None,
            Some(lf) => {
                // An empty line is "\n\n" or "\n\r\n".
                match (data.get(lf + 1), data.get(lf + 2)) {
                    (Some(b'\n'), _) => return Some((lf + 1, lf + 2)),
                    (Some(b'\r'), Some(b'\n')) => return Some((lf + 1, lf + 3)),
                    _ => i = lf + 1,
                }
            }
        }
    }
    None
}

fn memchr_lf(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| p + from)
}

/// RFC 3261 §7.5: CRLFs before the start line are ignored.
pub(crate) fn skip_leading_crlf(data: &[u8]) -> usize {
    data.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

fn parse_message(data: Bytes, limits: &Limits) -> Result<Message, ParseError> {
    let lead = skip_leading_crlf(&data);
    let data = data.slice(lead..);
    let in_response = data.starts_with(b"SIP/");
    if data.is_empty() {
        return Err(err(ParseErrorKind::Empty, false));
    }
    if data.len() > limits.max_message_size {
        return Err(err(
            ParseErrorKind::MessageTooLarge(limits.max_message_size),
            in_response,
        ));
    }
    let (head_len, body_start) =
        find_header_end(&data).ok_or(err(ParseErrorKind::UnterminatedHeaders, in_response))?;
    let head =
        Text::from_utf8(data.slice(..head_len)).ok_or(err(ParseErrorKind::NotUtf8, in_response))?;
    let e = |k| err(k, in_response);

    // Physical lines without their line ends.
    let mut lines = head
        .as_str()
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .peekable();
    let start = lines.next().unwrap_or("");
    if start.len() > limits.max_line_length {
        if !in_response && start.len() > limits.max_request_uri {
            return Err(e(ParseErrorKind::RequestUriTooLong(limits.max_request_uri)));
        }
        return Err(e(ParseErrorKind::LineTooLong(limits.max_line_length)));
    }

    let mut headers = Headers::with_capacity(16);
    let mut via_count = 0usize;
    let mut cl_values = 0usize;
    let mut folded = String::new();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            break;
        }
        if line.len() > limits.max_line_length {
            return Err(e(ParseErrorKind::LineTooLong(limits.max_line_length)));
        }
        if line.starts_with([' ', '\t']) {
            // A continuation with no header to continue.
            return Err(e(ParseErrorKind::BadHeaderLine));
        }
        let colon = line.find(':').ok_or(e(ParseErrorKind::BadHeaderLine))?;
        let name = line[..colon].trim_end_matches(crate::header::is_lws);
        if !is_token(name) {
            return Err(e(ParseErrorKind::BadHeaderLine));
        }
        let first = line[colon + 1..].trim_matches(crate::header::is_lws);
        let value = if lines.peek().is_some_and(|n| n.starts_with([' ', '\t'])) {
            // RFC 3261 §7.3.1: a folded line is equivalent to one SP.
            folded.clear();
            folded.push_str(first);
            while let Some(cont) = lines.next_if(|n| n.starts_with([' ', '\t'])) {
                let cont = cont.trim_matches(crate::header::is_lws);
                if !cont.is_empty() {
                    if !folded.is_empty() {
                        folded.push(' ');
                    }
                    folded.push_str(cont);
                }
                if folded.len() > limits.max_line_length {
                    return Err(e(ParseErrorKind::LineTooLong(limits.max_line_length)));
                }
            }
            Text::from(folded.clone())
        } else {
            head.slice_ref(first)
        };
        if headers.len() >= limits.max_headers {
            return Err(e(ParseErrorKind::TooManyHeaders(limits.max_headers)));
        }
        // Known names need no copy of the spelling; unknown ones keep it (zero-copy).
        let name =
            HeaderName::known(name).unwrap_or_else(|| HeaderName::Other(head.slice_ref(name)));
        match name {
            HeaderName::Via => {
                via_count += split_list(&value).count();
                if via_count > limits.max_via {
                    return Err(e(ParseErrorKind::TooManyVia(limits.max_via)));
                }
            }
            HeaderName::ContentLength => cl_values += 1,
            _ => {}
        }
        headers.0.push(Header { name, value });
    }

    // Content-Length framing (RFC 3261 §18.3, §20.14).
    let rest = data.slice(body_start.min(data.len())..);
    let body = if cl_values > 1 {
        return Err(e(ParseErrorKind::MultipleContentLength));
    } else if cl_values == 1 {
        let n = headers
            .content_length()
            .map_err(|_| e(ParseErrorKind::BadContentLength))?
            .unwrap_or(0);
        if n > rest.len() {
            return Err(e(ParseErrorKind::BodyTruncated));
        }
        rest.slice(..n)
    } else {
        rest
    };

    if in_response {
        let status_line = start;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let code = parts.next().unwrap_or("");
        let reason = parts.next().unwrap_or("");
        check_version(version, true)?;
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(e(ParseErrorKind::BadStatusCode));
        }
        let code: u16 = code.parse().map_err(|_| e(ParseErrorKind::BadStatusCode))?;
        if !(100..=699).contains(&code) {
            return Err(e(ParseErrorKind::BadStatusCode));
        }
        Ok(Message::Response(Response {
            status: StatusCode(code),
            reason: head.slice_ref(reason),
            headers,
            body,
        }))
    } else {
        // Request-Line = Method SP Request-URI SP SIP-Version (exactly single spaces)
        let mut parts = start.split(' ');
        let (method, uri, version) = match (parts.next(), parts.next(), parts.next(), parts.next())
        {
            (Some(m), Some(u), Some(v), None)
                if !m.is_empty() && !u.is_empty() && !v.is_empty() =>
            {
                (m, u, v)
            }
            _ => {
                // Tell an over-long URI apart from a broken line.
                if start.len() > limits.max_request_uri {
                    return Err(e(ParseErrorKind::RequestUriTooLong(limits.max_request_uri)));
                }
                return Err(e(ParseErrorKind::BadStartLine));
            }
        };
        let method =
            Method::parse(&head.slice_ref(method)).ok_or(e(ParseErrorKind::BadStartLine))?;
        check_version(version, false)?;
        if uri.len() > limits.max_request_uri {
            return Err(e(ParseErrorKind::RequestUriTooLong(limits.max_request_uri)));
        }
        let uri =
            Uri::parse(head.slice_ref(uri)).map_err(|u| e(ParseErrorKind::BadRequestUri(u)))?;
        Ok(Message::Request(Request {
            method,
            uri,
            headers,
            body,
        }))
    }
}

fn check_version(v: &str, in_response: bool) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    // A well-formed "SIP/x.y" is an unsupported version (505); anything else is malformed.
    let well_formed = v.len() > 4
        && v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
        && v.get(4..).is_some_and(|n| {
            n.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            })
        });
    Err(err(
        if well_formed {
            ParseErrorKind::BadVersion
        } else {
            ParseErrorKind::BadStartLine
        },
        in_response,
    ))
}

/// Builds the error response for a request that failed to parse (400, 505,
/// 414, 513...), from the Via, From, To, Call-ID and CSeq lines found by a
/// lenient scan of the raw octets. `None` when the error is to be dropped or
/// those headers cannot be found.
pub fn reject_unparsable(raw: &Bytes, error: &ParseError) -> Option<Response> {
    let status = error.status()?;
    let lead = skip_leading_crlf(raw);
    let data = raw.slice(lead..);
    let end = find_header_end(&data).map(|(h, _)| h).unwrap_or(data.len());
    let head = data.slice(..end);
    let mut resp = Response::new(status);
    resp.reason = Text::from(format!("{} ({})", status.reason_phrase(), error.kind));
    let mut seen = [false; 5];
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = HeaderName::from_str_name(name.trim());
        let slot = match name {
            HeaderName::Via => 0,
            HeaderName::From => 1,
            HeaderName::To => 2,
            HeaderName::CallId => 3,
            HeaderName::CSeq => 4,
            _ => continue,
        };
        if slot != 0 && seen.get(slot).copied().unwrap_or(true) {
            continue;
        }
        if let Some(s) = seen.get_mut(slot) {
            *s = true;
        }
        resp.headers.push(name, Text::from(value.trim().to_owned()));
    }
    if seen.iter().all(|s| *s) {
        Some(resp)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n\
Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKold\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.com>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.1>\r\n\
X-Custom: Kept  as is\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\r\n";

    fn parse(s: &str) -> Result<Message, ParseError> {
        Message::parse(Bytes::copy_from_slice(s.as_bytes()), &Limits::default())
    }

    #[test]
    fn invite_parses_with_typed_headers() {
        let m = parse(INVITE).unwrap();
        let r = m.as_request().unwrap();
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.headers.via().unwrap().len(), 2);
        assert_eq!(
            r.headers.top_via().unwrap().branch(),
            Some("z9hG4bK776asdhds")
        );
        assert_eq!(r.headers.from().unwrap().tag(), Some("1928301774"));
        assert_eq!(r.headers.to().unwrap().tag(), None);
        assert_eq!(
            r.headers.call_id().unwrap(),
            "a84b4c76e66710@pc33.example.com"
        );
        assert_eq!(
            r.headers.cseq().unwrap(),
            CSeq {
                seq: 314159,
                method: Method::Invite
            }
        );
        assert_eq!(r.headers.max_forwards().unwrap(), Some(70));
        assert_eq!(r.body.as_ref(), b"v=0\r");
        let custom = HeaderName::from_str_name("x-custom");
        assert_eq!(
            r.headers.get(&custom).map(|t| t.as_str()),
            Some("Kept  as is")
        );
    }

    #[test]
    fn header_values_share_the_received_buffer() {
        let raw = Bytes::copy_from_slice(INVITE.as_bytes());
        let m = Message::parse(raw.clone(), &Limits::default()).unwrap();
        let cid = m.headers().call_id().unwrap().as_bytes().as_ptr() as usize;
        let base = raw.as_ptr() as usize;
        assert!(cid > base && cid < base + raw.len());
    }

    #[test]
    fn response_to_request_copies_dialog_headers_and_adds_to_tag() {
        let m = parse(INVITE).unwrap();
        let req = m.as_request().unwrap();
        let resp = Response::to_request(req, StatusCode::OK, None).with_to_tag("abc");
        let bytes = resp.to_bytes();
        let back = Message::parse(bytes, &Limits::default()).unwrap();
        let back = back.as_response().unwrap();
        assert_eq!(back.status, StatusCode::OK);
        assert_eq!(back.reason, "OK");
        assert_eq!(back.headers.via().unwrap().len(), 2);
        assert_eq!(back.headers.to().unwrap().tag(), Some("abc"));
        assert_eq!(back.headers.cseq().unwrap().seq, 314159);
        assert!(back.headers.get(&HeaderName::Contact).is_none());
    }

    #[test]
    fn request_builder_serializes_and_reparses() {
        let req = RequestBuilder::new(Method::Bye, Uri::parse_str("sip:alice@192.0.2.1").unwrap())
            .via(
                &Via::parse(&Text::from_static(
                    "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx",
                ))
                .unwrap(),
            )
            .header(HeaderName::From, "<sip:bob@example.com>;tag=a")
            .header(HeaderName::To, "<sip:alice@example.com>;tag=b")
            .header(HeaderName::CallId, "c1")
            .cseq(2)
            .header(HeaderName::MaxForwards, "70")
            .body(
                "application/dtmf-relay",
                Bytes::from_static(b"Signal=5\r\n"),
            )
            .build();
        let back = Message::parse(req.to_bytes(), &Limits::default()).unwrap();
        let back = back.as_request().unwrap();
        assert_eq!(
            back,
            &Message::parse(req.to_bytes(), &Limits::default())
                .unwrap()
                .as_request()
                .unwrap()
                .clone()
        );
        assert_eq!(back.method, Method::Bye);
        assert_eq!(back.headers.cseq().unwrap().method, Method::Bye);
        assert_eq!(back.headers.content_length().unwrap(), Some(10));
        assert_eq!(back.body.as_ref(), b"Signal=5\r\n");
    }

    #[test]
    fn trailing_octets_after_content_length_are_ignored() {
        let m = parse(&format!("{INVITE}garbage")).unwrap();
        assert_eq!(m.body().len(), 4);
    }

    #[test]
    fn short_body_is_a_400() {
        let e = parse(&INVITE.replace("Content-Length: 4", "Content-Length: 40")).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::BodyTruncated);
        assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn unknown_version_is_505() {
        let e = parse(&INVITE.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia")).unwrap_err();
        assert_eq!(e.status(), Some(StatusCode::VERSION_NOT_SUPPORTED));
    }

    #[test]
    fn too_many_headers_is_reported_by_limit() {
        let limits = Limits {
            max_headers: 5,
            ..Limits::default()
        };
        let e = Message::parse(Bytes::from_static(INVITE.as_bytes()), &limits).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::TooManyHeaders(5));
    }

    #[test]
    fn long_request_uri_is_414() {
        let long = format!("INVITE sip:{}@example.com SIP/2.0\r\n", "a".repeat(5000));
        let e = parse(&INVITE.replacen("INVITE sip:bob@example.com SIP/2.0\r\n", &long, 1))
            .unwrap_err();
        assert_eq!(e.status(), Some(StatusCode::REQUEST_URI_TOO_LONG));
    }

    #[test]
    fn oversize_message_is_513() {
        let limits = Limits {
            max_message_size: 100,
            ..Limits::default()
        };
        let e = Message::parse(Bytes::from_static(INVITE.as_bytes()), &limits).unwrap_err();
        assert_eq!(e.status(), Some(StatusCode::MESSAGE_TOO_LARGE));
    }

    #[test]
    fn malformed_response_is_dropped_not_answered() {
        let e = parse("SIP/2.0 999 Big\r\nVia: SIP/2.0/UDP h\r\n\r\n").unwrap_err();
        assert_eq!(e.status(), None);
    }

    #[test]
    fn unparsable_request_gets_an_error_response_with_copied_headers() {
        let bad = INVITE.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia");
        let raw = Bytes::from(bad);
        let e = Message::parse(raw.clone(), &Limits::default()).unwrap_err();
        let resp = reject_unparsable(&raw, &e).unwrap();
        assert_eq!(resp.status, StatusCode::VERSION_NOT_SUPPORTED);
        assert_eq!(resp.headers.via().unwrap().len(), 2);
        assert_eq!(
            resp.headers.call_id().unwrap(),
            "a84b4c76e66710@pc33.example.com"
        );
    }

    #[test]
    fn headers_set_replaces_all_values() {
        let mut h = Headers::new();
        h.push(HeaderName::Supported, "a");
        h.push(HeaderName::Supported, "b");
        h.set(HeaderName::Supported, "c");
        assert_eq!(h.supported(), vec![Text::from_static("c")]);
    }

    #[test]
    fn status_code_phrases() {
        assert_eq!(StatusCode(420).reason_phrase(), "Bad Extension");
        assert_eq!(StatusCode(499).reason_phrase(), "Client Error");
    }
}
