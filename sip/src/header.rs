//! Header names and typed header values (RFC 3261 §7.3, §20; RFC 4028; RFC 3581).
//!
//! The parser stores every header as a ([`HeaderName`], raw [`Text`]) pair; the
//! typed views here (`Via`, `NameAddr`, `CSeq`, ...) are parsed on demand from
//! those slices, so unknown headers and values we never look at cost nothing and
//! are forwarded verbatim. Comma-separated lists (`Via: a, b`) are split with
//! [`split_list`], which respects quoted strings and `<...>`.

use crate::message::{Method, Text};
use crate::uri::{parse_hostport, Host, Uri};
use std::fmt;

/// Why a typed header value did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("more than one {0} header")]
    Multiple(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
}

/// A header field name. Known names are matched case-insensitively and in
/// compact form (RFC 3261 §7.3.3); others keep their spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Accept,
    AcceptEncoding,
    AcceptLanguage,
    Allow,
    AllowEvents,
    Authorization,
    CallId,
    Contact,
    ContentDisposition,
    ContentEncoding,
    ContentLength,
    ContentType,
    CSeq,
    Date,
    Event,
    Expires,
    From,
    MaxForwards,
    MinSe,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RAck,
    Reason,
    RecordRoute,
    ReferTo,
    ReferredBy,
    Require,
    RetryAfter,
    Route,
    RSeq,
    Server,
    SessionExpires,
    Subject,
    Supported,
    Timestamp,
    To,
    Unsupported,
    UserAgent,
    Via,
    Warning,
    WwwAuthenticate,
    /// Any other header, spelled as received.
    Other(Text),
}

impl HeaderName {
    /// Maps a received name (any case, compact forms included).
    pub fn parse(name: &Text) -> HeaderName {
        Self::known(name.as_str()).unwrap_or_else(|| HeaderName::Other(name.clone()))
    }

    /// Maps a name from a string (copies it for unknown names).
    pub fn from_str_name(name: &str) -> HeaderName {
        Self::known(name).unwrap_or_else(|| HeaderName::Other(Text::from(name.to_owned())))
    }

    pub(crate) fn known(n: &str) -> Option<HeaderName> {
        use HeaderName::*;
        if n.len() == 1 {
            // RFC 3261 §7.3.3, RFC 3265 (o, u), RFC 3515 (r), RFC 3892 (b), RFC 4028 (x)
            return Some(match n.as_bytes().first()?.to_ascii_lowercase() {
                b'v' => Via,
                b'i' => CallId,
                b'f' => From,
                b't' => To,
                b'm' => Contact,
                b'l' => ContentLength,
                b'c' => ContentType,
                b'k' => Supported,
                b's' => Subject,
                b'e' => ContentEncoding,
                b'o' => Event,
                b'r' => ReferTo,
                b'u' => AllowEvents,
                b'b' => ReferredBy,
                b'x' => SessionExpires,
                _ => return None,
            });
        }
        const TABLE: &[(&str, HeaderName)] = &[
            ("via", Via),
            ("from", From),
            ("to", To),
            ("call-id", CallId),
            ("cseq", CSeq),
            ("contact", Contact),
            ("max-forwards", MaxForwards),
            ("content-length", ContentLength),
            ("content-type", ContentType),
            ("route", Route),
            ("record-route", RecordRoute),
            ("authorization", Authorization),
            ("proxy-authorization", ProxyAuthorization),
            ("www-authenticate", WwwAuthenticate),
            ("proxy-authenticate", ProxyAuthenticate),
            ("supported", Supported),
            ("require", Require),
            ("proxy-require", ProxyRequire),
            ("unsupported", Unsupported),
            ("session-expires", SessionExpires),
            ("min-se", MinSe),
            ("allow", Allow),
            ("allow-events", AllowEvents),
            ("accept", Accept),
            ("accept-encoding", AcceptEncoding),
            ("accept-language", AcceptLanguage),
            ("content-disposition", ContentDisposition),
            ("content-encoding", ContentEncoding),
            ("date", Date),
            ("event", Event),
            ("expires", Expires),
            ("rack", RAck),
            ("rseq", RSeq),
            ("reason", Reason),
            ("refer-to", ReferTo),
            ("referred-by", ReferredBy),
            ("retry-after", RetryAfter),
            ("server", Server),
            ("subject", Subject),
            ("timestamp", Timestamp),
            ("user-agent", UserAgent),
            ("warning", Warning),
        ];
        TABLE
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    }

    /// The canonical (long) spelling used when serializing.
    pub fn as_str(&self) -> &str {
        use HeaderName::*;
        match self {
            Accept => "Accept",
            AcceptEncoding => "Accept-Encoding",
            AcceptLanguage => "Accept-Language",
            Allow => "Allow",
            AllowEvents => "Allow-Events",
            Authorization => "Authorization",
            CallId => "Call-ID",
            Contact => "Contact",
            ContentDisposition => "Content-Disposition",
            ContentEncoding => "Content-Encoding",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            CSeq => "CSeq",
            Date => "Date",
            Event => "Event",
            Expires => "Expires",
            From => "From",
            MaxForwards => "Max-Forwards",
            MinSe => "Min-SE",
            ProxyAuthenticate => "Proxy-Authenticate",
            ProxyAuthorization => "Proxy-Authorization",
            ProxyRequire => "Proxy-Require",
            RAck => "RAck",
            Reason => "Reason",
            RecordRoute => "Record-Route",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            Require => "Require",
            RetryAfter => "Retry-After",
            Route => "Route",
            RSeq => "RSeq",
            Server => "Server",
            SessionExpires => "Session-Expires",
            Subject => "Subject",
            Supported => "Supported",
            Timestamp => "Timestamp",
            To => "To",
            Unsupported => "Unsupported",
            UserAgent => "User-Agent",
            Via => "Via",
            Warning => "Warning",
            WwwAuthenticate => "WWW-Authenticate",
            Other(t) => t.as_str(),
        }
    }

    /// Same header, whatever the spelling (unknown names compare case-insensitively).
    pub fn matches(&self, other: &HeaderName) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => self == other,
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header line: its name and its raw value (folding removed, ends trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: Text,
}

/// `;name[=value]` parameters, order kept, names compared case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(Text, Option<Text>)>);

impl Params {
    /// `Some(None)` for a flag parameter (`;lr`), `Some(Some(v))` for `;n=v`.
    pub fn get(&self, name: &str) -> Option<Option<&Text>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
    /// The value of `name`, if present with a value.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten().map(|t| t.as_str())
    }
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&Text, Option<&Text>)> {
        self.0.iter().map(|(n, v)| (n, v.as_ref()))
    }
    /// Sets (replaces or appends) a parameter.
    pub fn set(&mut self, name: Text, value: Option<Text>) {
        if let Some(slot) = self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            slot.1 = value;
        } else {
            self.0.push((name, value));
        }
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in &self.0 {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

pub(crate) fn is_lws(c: char) -> bool {
    c == ' ' || c == '\t'
}

pub(crate) fn is_token_char(b: u8) -> bool {
    // RFC 3261 §25.1 token
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Parses `;a=b;c` (input starts at the first ';'), splitting outside quotes.
pub(crate) fn parse_params(raw: &Text, s: &str) -> Result<Params, ()> {
    let mut out = Vec::new();
    let s = s.trim_matches(is_lws);
    if s.is_empty() {
        return Ok(Params(out));
    }
    let s = s.strip_prefix(';').ok_or(())?;
    for part in split_outside_quotes(s, b';') {
        let part = part.trim_matches(is_lws);
        let (n, v) = match part.split_once('=') {
            Some((n, v)) => (n.trim_matches(is_lws), Some(v.trim_matches(is_lws))),
            None => (part, None),
        };
        if !is_token(n) {
            return Err(());
        }
        if let Some(v) = v {
            let ok = if v.starts_with('"') {
                quoted_end(v) == Some(v.len())
            } else {
                // token, host (incl. IPv6 reference) or URI param chars
                !v.is_empty()
                    && v.bytes().all(|b| {
                        is_token_char(b)
                            || matches!(
                                b,
                                b'[' | b']' | b':' | b'/' | b'&' | b'$' | b'@' | b'?' | b'='
                            )
                    })
            };
            if !ok {
                return Err(());
            }
        }
        out.push((raw.slice_ref(n), v.map(|v| raw.slice_ref(v))));
    }
    Ok(Params(out))
}

/// Byte index just past the closing quote of a quoted string starting at 0.
pub(crate) fn quoted_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < b.len() {
        match b.get(i) {
            Some(b'\\') => i += 2,
            Some(b'"') => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn split_outside_quotes(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut in_quote = false;
    let mut escape = false;
    let mut done = false;
    let mut idx = 0;
    let b = s.as_bytes();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while idx < b.len() {
            let c = b.get(idx).copied().unwrap_or(0);
            idx += 1;
            if escape {
                escape = false;
            } else if in_quote {
                match c {
                    b'\\' => escape = true,
                    b'"' => in_quote = false,
                    _ => {}
                }
            } else if c == b'"' {
                in_quote = true;
            } else if c == sep {
                let part = s.get(start..idx - 1).unwrap_or("");
                start = idx;
                return Some(part);
            }
        }
        done = true;
        Some(s.get(start..).unwrap_or(""))
    })
}

/// Splits a header value holding a comma-separated list, respecting quoted
/// strings and `<...>` (a URI in angle brackets may contain commas). Empty
/// elements are returned so callers can reject them.
pub fn split_list(value: &Text) -> impl Iterator<Item = Text> + '_ {
    let s = value.as_str();
    let b = s.as_bytes();
    let mut start = 0;
    let mut idx = 0;
    let mut in_quote = false;
    let mut escape = false;
    let mut in_angle = false;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while idx < b.len() {
            let c = b.get(idx).copied().unwrap_or(0);
            idx += 1;
            if escape {
                escape = false;
            } else if in_quote {
                match c {
                    b'\\' => escape = true,
                    b'"' => in_quote = false,
                    _ => {}
                }
            } else if in_angle {
                if c == b'>' {
                    in_angle = false;
                }
            } else {
                match c {
                    b'"' => in_quote = true,
                    b'<' => in_angle = true,
                    b',' => {
                        let part = s.get(start..idx - 1).unwrap_or("").trim_matches(is_lws);
                        start = idx;
                        return Some(value.slice_ref(part));
                    }
                    _ => {}
                }
            }
        }
        done = true;
        Some(value.slice_ref(s.get(start..).unwrap_or("").trim_matches(is_lws)))
    })
}

/// Comma-separated tokens (Supported, Require, Allow...), empty elements skipped.
pub fn parse_tokens(value: &Text) -> Vec<Text> {
    split_list(value).filter(|t| !t.is_empty()).collect()
}

/// Transport named in a Via header (RFC 3261 §18, §20.42).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ViaTransport {
    Udp,
    Tcp,
    Tls,
    Sctp,
    Ws,
    Wss,
    Other(Text),
}

impl ViaTransport {
    fn parse(t: &Text) -> ViaTransport {
        let s = t.as_str();
        [
            ("UDP", ViaTransport::Udp),
            ("TCP", ViaTransport::Tcp),
            ("TLS", ViaTransport::Tls),
            ("SCTP", ViaTransport::Sctp),
            ("WS", ViaTransport::Ws),
            ("WSS", ViaTransport::Wss),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|(_, v)| v)
        .unwrap_or_else(|| ViaTransport::Other(t.clone()))
    }
    pub fn as_str(&self) -> &str {
        match self {
            ViaTransport::Udp => "UDP",
            ViaTransport::Tcp => "TCP",
            ViaTransport::Tls => "TLS",
            ViaTransport::Sctp => "SCTP",
            ViaTransport::Ws => "WS",
            ViaTransport::Wss => "WSS",
            ViaTransport::Other(t) => t.as_str(),
        }
    }
}

/// One Via value: `SIP/2.0/UDP host:port;branch=...;received=...;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Protocol name and version, e.g. `SIP` and `2.0`.
    pub protocol: Text,
    pub version: Text,
    pub transport: ViaTransport,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

/// RFC 3261 §17.1.1.3: branch values from RFC 3261 elements start with this.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

impl Via {
    /// Parses one Via value (not a list).
    pub fn parse(v: &Text) -> Result<Via, HeaderError> {
        const E: HeaderError = HeaderError::Malformed("Via");
        let s = v.as_str().trim_matches(is_lws);
        // sent-protocol = name SLASH version SLASH transport, SLASH = SWS "/" SWS
        let mut rest = s;
        let mut parts: [&str; 3] = [""; 3];
        for (i, slot) in parts.iter_mut().enumerate() {
            rest = rest.trim_start_matches(is_lws);
            let end = rest
                .find(|c: char| !(c.is_ascii() && is_token_char(c as u8)))
                .unwrap_or(rest.len());
            *slot = &rest[..end];
            if slot.is_empty() {
                return Err(E);
            }
            rest = rest[end..].trim_start_matches(is_lws);
            if i < 2 {
                rest = rest.strip_prefix('/').ok_or(E)?;
            }
        }
        let [protocol, version, transport] = parts;
        // sent-by up to the first ';'
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let sent_by = sent_by.trim_matches(is_lws);
        // COLON = SWS ":" SWS: remove whitespace around the port colon.
        let compact: String;
        let sent_by = if sent_by.contains(is_lws) {
            compact = sent_by.split(is_lws).filter(|p| !p.is_empty()).collect();
            if !compact.contains(':') || compact.starts_with('[') && !compact.contains("]:") {
                return Err(E);
            }
            v.slice_ref(&compact) // copies (foreign str)
        } else {
            v.slice_ref(sent_by)
        };
        let (host, port) = parse_hostport(&sent_by, sent_by.as_str()).map_err(|_| E)?;
        let params = parse_params(v, params).map_err(|_| E)?;
        Ok(Via {
            protocol: v.slice_ref(protocol),
            version: v.slice_ref(version),
            transport: ViaTransport::parse(&v.slice_ref(transport)),
            host,
            port,
            params,
        })
    }

    /// A Via for a request we send: `SIP/2.0/<transport> host[:port];branch=<branch>;rport`
    /// (RFC 3261 §8.1.1.7; `rport` asks for symmetric response routing, RFC 3581 §3).
    pub fn new(transport: ViaTransport, host: Host, port: Option<u16>, branch: &str) -> Via {
        let mut params = Params::default();
        params.set(
            Text::from_static("branch"),
            Some(Text::from(branch.to_owned())),
        );
        params.set(Text::from_static("rport"), None);
        Via {
            protocol: Text::from_static("SIP"),
            version: Text::from_static("2.0"),
            transport,
            host,
            port,
            params,
        }
    }

    /// `branch=`.
    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }
    /// `received=` (RFC 3261 §18.2.1).
    pub fn received(&self) -> Option<&str> {
        self.params.value("received")
    }
    /// True when `rport` is present, with or without a value (RFC 3581).
    pub fn has_rport(&self) -> bool {
        self.params.contains("rport")
    }
    /// The `rport=` value, if filled in.
    pub fn rport(&self) -> Option<u16> {
        self.params.value("rport").and_then(|p| p.parse().ok())
    }
    /// `maddr=`.
    pub fn maddr(&self) -> Option<&str> {
        self.params.value("maddr")
    }
    /// True when the branch carries the RFC 3261 magic cookie.
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.starts_with(BRANCH_MAGIC_COOKIE))
    }
    /// Port of sent-by, defaulting per transport (RFC 3261 §18.2.2: 5060, 5061 for TLS).
    pub fn sent_by_port(&self) -> u16 {
        self.port.unwrap_or(match self.transport {
            ViaTransport::Tls | ViaTransport::Wss => 5061,
            _ => 5060,
        })
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} {}",
            self.protocol,
            self.version,
            self.transport.as_str(),
            self.host
        )?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// `["display"] <uri>;params` or `uri;params` (From, To, Contact, Route...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name as sent (quotes and escapes removed for quoted strings).
    pub display_name: Option<Text>,
    pub uri: Uri,
    /// Header parameters (after `>` or after an addr-spec).
    pub params: Params,
}

impl NameAddr {
    /// Parses one name-addr / addr-spec value with parameters.
    pub fn parse(v: &Text, header: &'static str) -> Result<NameAddr, HeaderError> {
        let e = HeaderError::Malformed(header);
        let s = v.as_str().trim_matches(is_lws);
        let (display_name, rest) = if s.starts_with('"') {
            let end = quoted_end(s).ok_or(e.clone())?;
            let inner = &s[1..end - 1];
            let dn = if inner.contains('\\') {
                let mut out = String::with_capacity(inner.len());
                let mut chars = inner.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    } else {
                        out.push(c);
                    }
                }
                Text::from(out)
            } else {
                v.slice_ref(inner)
            };
            let rest = s[end..].trim_start_matches(is_lws);
            if !rest.starts_with('<') {
                return Err(e);
            }
            (Some(dn), rest)
        } else if let Some(lt) = s.find('<') {
            let dn = s[..lt].trim_matches(is_lws);
            if !dn.split(is_lws).all(|w| w.is_empty() || is_token(w)) {
                return Err(e);
            }
            (
                if dn.is_empty() {
                    None
                } else {
                    Some(v.slice_ref(dn))
                },
                &s[lt..],
            )
        } else {
            (None, s)
        };
        let (uri_str, params_str) = if let Some(inner) = rest.strip_prefix('<') {
            let gt = inner.find('>').ok_or(e.clone())?;
            (inner[..gt].trim_matches(is_lws), &inner[gt + 1..])
        } else {
            // addr-spec: parameters after ';' belong to the header (RFC 3261 §20.10).
            match rest.find(';') {
                Some(i) => (rest[..i].trim_matches(is_lws), &rest[i..]),
                None => (rest, ""),
            }
        };
        let uri = Uri::parse(v.slice_ref(uri_str)).map_err(|_| e.clone())?;
        let params = parse_params(v, params_str).map_err(|_| e)?;
        Ok(NameAddr {
            display_name,
            uri,
            params,
        })
    }

    /// `<uri>` with no display name and no parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display_name: None,
            uri,
            params: Params::default(),
        }
    }

    /// Sets `;tag=` (builder style).
    pub fn with_tag(mut self, tag: &str) -> NameAddr {
        self.params
            .set(Text::from_static("tag"), Some(Text::from(tag.to_owned())));
        self
    }

    /// `tag=` (From/To).
    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write!(f, "\"")?;
            for c in d.chars() {
                if c == '"' || c == '\\' {
                    write!(f, "\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "\" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// `CSeq: 4711 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// RFC 3261 §8.1.1.5: less than 2^31 when we choose it; any u32 accepted.
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(v: &Text) -> Result<CSeq, HeaderError> {
        const E: HeaderError = HeaderError::Malformed("CSeq");
        let s = v.as_str().trim_matches(is_lws);
        let mut it = s.split(is_lws).filter(|p| !p.is_empty());
        let num = it.next().ok_or(E)?;
        let m = it.next().ok_or(E)?;
        if it.next().is_some() || num.len() > 10 || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E);
        }
        let seq = num.parse::<u32>().map_err(|_| E)?;
        let method = Method::parse(&v.slice_ref(m)).ok_or(E)?;
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Who refreshes the session (RFC 4028 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

/// `Session-Expires: 1800;refresher=uac` (RFC 4028 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionExpires {
    pub delta_seconds: u32,
    pub refresher: Option<Refresher>,
    pub params: Params,
}

impl SessionExpires {
    pub fn parse(v: &Text) -> Result<SessionExpires, HeaderError> {
        const E: HeaderError = HeaderError::Malformed("Session-Expires");
        let s = v.as_str().trim_matches(is_lws);
        let (num, params) = match s.find(';') {
            Some(i) => (s[..i].trim_matches(is_lws), &s[i..]),
            None => (s, ""),
        };
        let delta_seconds = parse_delta(num).ok_or(E)?;
        let params = parse_params(v, params).map_err(|_| E)?;
        let refresher = match params.value("refresher") {
            Some(r) if r.eq_ignore_ascii_case("uac") => Some(Refresher::Uac),
            Some(r) if r.eq_ignore_ascii_case("uas") => Some(Refresher::Uas),
            Some(_) => return Err(E),
            None => None,
        };
        Ok(SessionExpires {
            delta_seconds,
            refresher,
            params,
        })
    }
}

/// `type/subtype;params` (Content-Type, Accept elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub mtype: Text,
    pub subtype: Text,
    pub params: Params,
}

impl MediaType {
    pub fn parse(v: &Text) -> Result<MediaType, HeaderError> {
        const E: HeaderError = HeaderError::Malformed("Content-Type");
        let s = v.as_str().trim_matches(is_lws);
        let (ty, params) = match s.find(';') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let (t, st) = ty.split_once('/').ok_or(E)?;
        let (t, st) = (t.trim_matches(is_lws), st.trim_matches(is_lws));
        if !is_token(t) || !is_token(st) {
            return Err(E);
        }
        Ok(MediaType {
            mtype: v.slice_ref(t),
            subtype: v.slice_ref(st),
            params: parse_params(v, params).map_err(|_| E)?,
        })
    }

    /// Case-insensitive `type/subtype` comparison (parameters ignored).
    pub fn is(&self, mtype: &str, subtype: &str) -> bool {
        self.mtype.eq_ignore_ascii_case(mtype) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// True if this (an Accept range, possibly with `*`) covers `mtype/subtype`.
    pub fn covers(&self, mtype: &str, subtype: &str) -> bool {
        (self.mtype.as_str() == "*" || self.mtype.eq_ignore_ascii_case(mtype))
            && (self.subtype.as_str() == "*" || self.subtype.eq_ignore_ascii_case(subtype))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.mtype, self.subtype, self.params)
    }
}

/// Parses a delta-seconds / non-negative integer field that must fit in u32.
pub(crate) fn parse_delta(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &'static str) -> Text {
        Text::from_static(s)
    }

    #[test]
    fn compact_and_case_insensitive_names_map_to_known_headers() {
        assert_eq!(HeaderName::parse(&t("v")), HeaderName::Via);
        assert_eq!(
            HeaderName::parse(&t("MaX-fOrWaRdS")),
            HeaderName::MaxForwards
        );
        assert_eq!(HeaderName::parse(&t("l")), HeaderName::ContentLength);
        assert_eq!(HeaderName::parse(&t("X-Foo")).as_str(), "X-Foo");
    }

    #[test]
    fn via_with_spaces_everywhere_parses() {
        let v = Via::parse(&t(
            "SIP  / 2.0  / TCP     spindle.example.com   ;\tbranch  =   z9hG4bK9ikj8",
        ))
        .unwrap();
        assert_eq!(v.transport, ViaTransport::Tcp);
        assert_eq!(v.host, Host::Domain(t("spindle.example.com")));
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
    }

    #[test]
    fn via_ipv6_sent_by_received_and_rport() {
        let v = Via::parse(&t(
            "SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3;received=[2001:db8::9:255];rport",
        ))
        .unwrap();
        assert_eq!(v.host, Host::Ipv6("2001:db8::9:1".parse().unwrap()));
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
        assert!(v.has_rport());
        assert_eq!(v.rport(), None);
    }

    #[test]
    fn via_with_empty_params_is_malformed() {
        assert!(Via::parse(&t("SIP/2.0/UDP 192.0.2.15;;")).is_err());
    }

    #[test]
    fn list_split_respects_quotes_and_angle_brackets() {
        let v = t("\"a, b\" <sip:x@y;p=1,2>;q=1, <sip:z@w>");
        let parts: Vec<_> = split_list(&v).collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], "<sip:z@w>");
    }

    #[test]
    fn name_addr_forms_parse() {
        let n = NameAddr::parse(
            &t("\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>  ;  tag = 98asjd8"),
            "From",
        )
        .unwrap();
        assert_eq!(n.display_name.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse(&t("sip:user@example.com;tag=1"), "To").unwrap();
        assert_eq!(n.tag(), Some("1"));
        let n = NameAddr::parse(&t("caller<sip:caller@example.com>;tag=323"), "From").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("caller"));
    }

    #[test]
    fn unterminated_display_name_is_malformed() {
        assert!(NameAddr::parse(&t("\"Mr J. User <sip:j.user@example.com>"), "To").is_err());
    }

    #[test]
    fn built_via_and_name_addr_serialize_and_reparse() {
        let v = Via::new(
            ViaTransport::Tcp,
            Host::Ipv4([127, 0, 0, 1].into()),
            Some(5062),
            "z9hG4bKabc",
        );
        let back = Via::parse(&Text::from(v.to_string())).unwrap();
        assert_eq!(back, v);
        assert!(back.has_rport());
        let n = NameAddr::new(Uri::parse_str("sip:gw@127.0.0.1").unwrap()).with_tag("t1");
        let back = NameAddr::parse(&Text::from(n.to_string()), "To").unwrap();
        assert_eq!(back.tag(), Some("t1"));
        assert_eq!(back.uri.as_str(), "sip:gw@127.0.0.1");
    }

    #[test]
    fn cseq_over_u32_is_malformed() {
        assert!(CSeq::parse(&t("36893488147419103232 REGISTER")).is_err());
        let c = CSeq::parse(&t("0009\r\n  INVITE".replace("\r\n", "").leak())).unwrap();
        assert_eq!(c.seq, 9);
        assert_eq!(c.method, Method::Invite);
    }

    #[test]
    fn session_expires_with_refresher() {
        let s = SessionExpires::parse(&t("1800;refresher=uas")).unwrap();
        assert_eq!(s.delta_seconds, 1800);
        assert_eq!(s.refresher, Some(Refresher::Uas));
    }

    #[test]
    fn media_type_and_accept_ranges() {
        let m = MediaType::parse(&t("application/SDP; charset=utf-8")).unwrap();
        assert!(m.is("application", "sdp"));
        assert!(MediaType::parse(&t("application/*"))
            .unwrap()
            .covers("application", "sdp"));
    }
}
