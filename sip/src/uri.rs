//! URIs found in Request-URIs and name-addr headers (RFC 3261 §19.1, RFC 3966).
//!
//! `sip:`/`sips:` and `tel:` URIs are parsed into their parts; any other scheme is
//! kept as an [`AbsoluteUri`] (RFC 3986 `scheme ":" ...`) so that the request still
//! parses and the UAS can answer `416 Unsupported URI Scheme` (RFC 3261 §8.2.2.1).
//! Escapes (`%XX`) are kept as sent; [`unescape`] decodes on demand.

use crate::header::{parse_params, Params};
use crate::message::Text;
use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a URI did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("empty URI")]
    Empty,
    #[error("URI has no scheme")]
    NoScheme,
    #[error("URI contains whitespace or control characters")]
    IllegalCharacter,
    #[error("bad host in URI")]
    BadHost,
    #[error("bad port in URI")]
    BadPort,
    #[error("bad user part in URI")]
    BadUser,
    #[error("bad URI parameters")]
    BadParams,
    #[error("bad telephone number")]
    BadTelNumber,
}

/// A URI as it appears in a SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// `tel:` (RFC 3966).
    Tel(TelUri),
    /// Any other scheme, kept verbatim.
    Other(AbsoluteUri),
}

/// `sip:` or `sips:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
}

/// The host part of a SIP URI or Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A host name (kept as sent; compare case-insensitively).
    Domain(Text),
    Ipv4(Ipv4Addr),
    /// Written `[...]` in URIs and Via.
    Ipv6(Ipv6Addr),
}

/// A parsed `sip:`/`sips:` URI (RFC 3261 §19.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    raw: Text,
    pub scheme: Scheme,
    /// User part, still escaped as sent (see [`SipUri::user_unescaped`]).
    pub user: Option<Text>,
    pub password: Option<Text>,
    pub host: Host,
    pub port: Option<u16>,
    /// `;name=value` URI parameters, order kept.
    pub params: Params,
    /// `?name=value&...` URI headers, still escaped.
    pub headers: Vec<(Text, Text)>,
}

/// A `tel:` URI (RFC 3966): the number and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    raw: Text,
    /// The number, e.g. `+358-555-1234567` (visual separators kept).
    pub number: Text,
    pub params: Params,
}

/// A URI with a scheme this crate does not interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsoluteUri {
    raw: Text,
    scheme_len: usize,
}

impl Uri {
    /// Parses a URI (no surrounding `<>`, no whitespace).
    pub fn parse(text: Text) -> Result<Uri, UriError> {
        let s = text.as_str();
        if s.is_empty() {
            return Err(UriError::Empty);
        }
        if s.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(UriError::IllegalCharacter);
        }
        let colon = s.find(':').ok_or(UriError::NoScheme)?;
        let scheme = &s[..colon];
        if scheme.is_empty()
            || !scheme
                .as_bytes()
                .first()
                .is_some_and(|b| b.is_ascii_alphabetic())
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        {
            return Err(UriError::NoScheme);
        }
        if scheme.eq_ignore_ascii_case("sip") {
            SipUri::parse_rest(text.clone(), Scheme::Sip, colon + 1).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse_rest(text.clone(), Scheme::Sips, colon + 1).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            TelUri::parse_rest(text.clone(), colon + 1).map(Uri::Tel)
        } else {
            Ok(Uri::Other(AbsoluteUri {
                raw: text.clone(),
                scheme_len: colon,
            }))
        }
    }

    /// Parses from a `&str` (copies it).
    pub fn parse_str(s: &str) -> Result<Uri, UriError> {
        Uri::parse(Text::from(s.to_owned()))
    }

    /// The URI exactly as sent.
    pub fn as_str(&self) -> &str {
        match self {
            Uri::Sip(u) => u.raw.as_str(),
            Uri::Tel(u) => u.raw.as_str(),
            Uri::Other(u) => u.raw.as_str(),
        }
    }

    /// The URI as a `Text` sharing the message buffer.
    pub fn as_text(&self) -> &Text {
        match self {
            Uri::Sip(u) => &u.raw,
            Uri::Tel(u) => &u.raw,
            Uri::Other(u) => &u.raw,
        }
    }

    /// The scheme as sent (`sip`, `sips`, `tel`, `mailto`...).
    pub fn scheme(&self) -> &str {
        let s = self.as_str();
        s.split(':').next().unwrap_or("")
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// True for `sip:` and `sips:`.
    pub fn is_sip(&self) -> bool {
        matches!(self, Uri::Sip(_))
    }

    /// The user part for SIP URIs or the number for `tel:` URIs.
    pub fn user(&self) -> Option<&Text> {
        match self {
            Uri::Sip(u) => u.user.as_ref(),
            Uri::Tel(t) => Some(&t.number),
            Uri::Other(_) => None,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SipUri {
    fn parse_rest(raw: Text, scheme: Scheme, start: usize) -> Result<SipUri, UriError> {
        let s = raw.as_str();
        let rest = s.get(start..).ok_or(UriError::Empty)?;
        // userinfo ends at the last '@': neither host, params nor headers may hold an
        // unescaped '@', while the user part may hold '?' and ';' (RFC 3261 §25.1).
        let (userinfo, after_user) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hostpart, headers_part) = match after_user.find('?') {
            Some(q) => (&after_user[..q], Some(&after_user[q + 1..])),
            None => (after_user, None),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.find(':') {
                    Some(c) => (&ui[..c], Some(&ui[c + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() || !u.bytes().all(is_user_char) {
                    return Err(UriError::BadUser);
                }
                if let Some(p) = p {
                    if !p.bytes().all(is_user_char) {
                        return Err(UriError::BadUser);
                    }
                }
                (Some(raw.slice_ref(u)), p.map(|p| raw.slice_ref(p)))
            }
        };
        let (hostport, params_part) = match hostpart.find(';') {
            Some(sc) => (&hostpart[..sc], Some(&hostpart[sc..])),
            None => (hostpart, None),
        };
        let (host, port) = parse_hostport(&raw, hostport)?;
        let params = match params_part {
            Some(p) => parse_params(&raw, p).map_err(|_| UriError::BadParams)?,
            None => Params::default(),
        };
        let mut headers = Vec::new();
        if let Some(h) = headers_part {
            for pair in h.split('&') {
                let (n, v) = pair.split_once('=').ok_or(UriError::BadParams)?;
                if n.is_empty() {
                    return Err(UriError::BadParams);
                }
                headers.push((raw.slice_ref(n), raw.slice_ref(v)));
            }
        }
        Ok(SipUri {
            raw,
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// Builds `sip:[user@]host[:port]` (no parameters).
    pub fn new(user: Option<&str>, host: Host, port: Option<u16>) -> SipUri {
        let mut s = String::from("sip:");
        if let Some(u) = user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&host.to_string());
        if let Some(p) = port {
            s.push(':');
            s.push_str(&p.to_string());
        }
        let raw = Text::from(s);
        SipUri {
            user: user.map(|u| raw.slice_ref(&raw.as_str()[4..4 + u.len()])),
            raw,
            scheme: Scheme::Sip,
            password: None,
            host,
            port,
            params: Params::default(),
            headers: Vec::new(),
        }
    }

    /// The URI exactly as sent.
    pub fn as_str(&self) -> &str {
        self.raw.as_str()
    }

    /// The user part with `%XX` escapes decoded (lossy for non-UTF-8 octets).
    pub fn user_unescaped(&self) -> Option<String> {
        self.user
            .as_ref()
            .map(|u| String::from_utf8_lossy(&unescape(u)).into_owned())
    }

    /// `transport=` URI parameter.
    pub fn transport_param(&self) -> Option<&str> {
        self.params
            .get("transport")
            .and_then(|v| v.map(|t| t.as_str()))
    }

    /// True when the URI carries `;lr` (RFC 3261 §16.12.1.1 loose routing).
    pub fn is_loose_route(&self) -> bool {
        self.params.contains("lr")
    }
}

impl TelUri {
    fn parse_rest(raw: Text, start: usize) -> Result<TelUri, UriError> {
        let s = raw.as_str();
        let rest = s.get(start..).ok_or(UriError::Empty)?;
        let (number, params_part) = match rest.find(';') {
            Some(sc) => (&rest[..sc], Some(&rest[sc..])),
            None => (rest, None),
        };
        let digits = number.strip_prefix('+').unwrap_or(number);
        if digits.is_empty()
            || !digits.bytes().all(|b| {
                b.is_ascii_hexdigit()
                    || matches!(
                        b,
                        b'-' | b'.' | b'(' | b')' | b'*' | b'#' | b'p' | b'w' | b'P' | b'W'
                    )
            })
        {
            return Err(UriError::BadTelNumber);
        }
        let params = match params_part {
            Some(p) => parse_params(&raw, p).map_err(|_| UriError::BadParams)?,
            None => Params::default(),
        };
        Ok(TelUri {
            number: raw.slice_ref(number),
            raw,
            params,
        })
    }

    /// The number without visual separators (`-`, `.`, `(`, `)`).
    pub fn digits(&self) -> String {
        self.number
            .chars()
            .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
            .collect()
    }
}

impl AbsoluteUri {
    /// The scheme as sent.
    pub fn scheme(&self) -> &str {
        self.raw.as_str().get(..self.scheme_len).unwrap_or("")
    }
    /// The URI exactly as sent.
    pub fn as_str(&self) -> &str {
        self.raw.as_str()
    }
}

impl Host {
    /// Parses a host (`name`, `1.2.3.4` or `[v6]`).
    pub fn parse(raw: &Text, s: &str) -> Result<Host, UriError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(UriError::BadHost)?;
            return inner
                .parse::<Ipv6Addr>()
                .map(Host::Ipv6)
                .map_err(|_| UriError::BadHost);
        }
        if s.is_empty() {
            return Err(UriError::BadHost);
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            if let Ok(a) = s.parse::<Ipv4Addr>() {
                return Ok(Host::Ipv4(a));
            }
        }
        // hostname = *( domainlabel "." ) toplabel [ "." ] (RFC 3261 §25.1)
        let ok = s.split('.').enumerate().all(|(i, label)| {
            (label.is_empty() && i > 0 && s.ends_with('.') && s.len() > 1)
                || (!label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    && !label.starts_with('-'))
        });
        if ok {
            Ok(Host::Domain(raw.slice_ref(s)))
        } else {
            Err(UriError::BadHost)
        }
    }

    /// The IP address, when the host is a literal.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Host::Ipv4(a) => Some((*a).into()),
            Host::Ipv6(a) => Some((*a).into()),
            Host::Domain(_) => None,
        }
    }
}

impl From<std::net::IpAddr> for Host {
    fn from(ip: std::net::IpAddr) -> Host {
        match ip {
            std::net::IpAddr::V4(a) => Host::Ipv4(a),
            std::net::IpAddr::V6(a) => Host::Ipv6(a),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Splits `host[:port]` (IPv6 in brackets).
pub(crate) fn parse_hostport(raw: &Text, s: &str) -> Result<(Host, Option<u16>), UriError> {
    let (h, p) = if s.starts_with('[') {
        let close = s.find(']').ok_or(UriError::BadHost)?;
        let after = &s[close + 1..];
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':').ok_or(UriError::BadPort)?)
        };
        (&s[..=close], port)
    } else {
        match s.rfind(':') {
            Some(c) => (&s[..c], Some(&s[c + 1..])),
            None => (s, None),
        }
    };
    let host = Host::parse(raw, h)?;
    let port = match p {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UriError::BadPort);
            }
            Some(p.parse::<u16>().map_err(|_| UriError::BadPort)?)
        }
    };
    Ok((host, port))
}

fn is_user_char(b: u8) -> bool {
    // unreserved / escaped / user-unreserved, plus password chars (RFC 3261 §25.1)
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'('
                | b')'
                | b'%'
                | b'&'
                | b'='
                | b'+'
                | b'$'
                | b','
                | b';'
                | b'?'
                | b'/'
                | b':'
        )
}

/// Decodes `%XX` escapes; invalid escapes are kept literally.
pub fn unescape(s: &str) -> Cow<'_, [u8]> {
    if !s.contains('%') {
        return Cow::Borrowed(s.as_bytes());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b.get(i).copied().unwrap_or(0);
        if c == b'%' {
            let hi = b.get(i + 1).and_then(|x| (*x as char).to_digit(16));
            let lo = b.get(i + 2).and_then(|x| (*x as char).to_digit(16));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse_str(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("not a sip uri: {other:?}"),
        }
    }

    #[test]
    fn sip_uri_with_user_port_params_and_headers_parses() {
        let u = sip("sip:alice:pw@example.com:5070;transport=tcp;lr?subject=hi&x=y");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("pw"));
        assert_eq!(u.host, Host::Domain(Text::from_static("example.com")));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport_param(), Some("tcp"));
        assert!(u.is_loose_route());
        assert_eq!(u.headers.len(), 2);
    }

    #[test]
    fn ipv6_reference_with_port_parses() {
        let u = sip("sips:[2001:db8::1]:5061");
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.host, Host::Ipv6("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port, Some(5061));
    }

    #[test]
    fn escaped_user_is_unescaped_on_demand() {
        let u = sip("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(u.user_unescaped().as_deref(), Some("sips:user@example.com"));
    }

    #[test]
    fn user_part_may_hold_semicolons() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert!(u.params.is_empty());
    }

    #[test]
    fn tel_uri_parses_number_and_params() {
        match Uri::parse_str("tel:+1-201-555-0123;phone-context=example.com") {
            Ok(Uri::Tel(t)) => {
                assert_eq!(t.digits(), "+12015550123");
                assert!(t.params.contains("phone-context"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_scheme_is_kept_as_absolute_uri() {
        let u = Uri::parse_str("soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(u.scheme(), "soap.beep");
        assert!(matches!(u, Uri::Other(_)));
    }

    #[test]
    fn whitespace_in_uri_is_rejected() {
        assert_eq!(Uri::parse_str("sip:a b@x"), Err(UriError::IllegalCharacter));
    }

    #[test]
    fn bad_port_is_rejected() {
        assert_eq!(Uri::parse_str("sip:x.com:99999"), Err(UriError::BadPort));
    }
}
