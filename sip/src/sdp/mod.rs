//! SDP session descriptions (RFC 4566) and the offer/answer model (RFC 3264).
//!
//! Sits between the SIP dialog and the media engine: the body of an INVITE (or of the
//! ACK when we offered in the 200 OK) is parsed here into a [`SessionDescription`],
//! [`negotiate`] picks the audio stream, codec, `telephone-event` (RFC 4733), direction
//! and SDES-SRTP keys (RFC 4568), and [`Negotiated::answer_sdp`] writes the body of our
//! 200 OK. [`offer_body`] finds the SDP in a message body first: `application/sdp` itself,
//! or its part of a `multipart/*` body (RFC 2046 §5.1, RFC 5621).
//!
//! Parsing is total over peer input and liberal (RFC 4566 §5 lets a parser skip what it does
//! not understand): only what decides where and how our audio flows fails the whole body
//! with a typed [`SdpError`]: a missing or wrong `v=`, a malformed session-level `c=`, the
//! `m=` or `c=` line of an audio section we could use, too many `m=` lines. Any other
//! malformed line (an attribute anywhere, a line that is not `<type>=<value>`, the `o=`, any
//! line of a section we will reject such as video or a port-0 stream) is skipped and
//! reported in [`SessionDescription::ignored`] with the error it had, so that one odd line
//! from a phone does not cost the call. Negotiation still refuses what cannot be negotiated.

mod body;
mod negotiate;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;

pub use body::{offer_body, BodyError};
pub use negotiate::{
    accept_answer, build_offer, negotiate, AnswerPolicy, Codec, HoldState, HoldTransition,
    LocalMedia, Negotiated, NegotiatedCodec, NegotiationError, Offer, OfferPolicy, SrtpParams,
    SrtpPolicy,
};

/// Upper bound on `m=` lines we accept; real offers carry one to four. Bounds the work a
/// hostile body can cause (the SIP layer already bounds the body size).
const MAX_MEDIA_DESCRIPTIONS: usize = 32;

/// Why an SDP body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP body is empty")]
    Empty,
    #[error("SDP must start with v=0 (line {line})")]
    MissingVersion { line: usize },
    #[error("unsupported SDP version {0:?}")]
    UnsupportedVersion(String),
    #[error("line {line} is not of the form <type>=<value>")]
    MalformedLine { line: usize },
    #[error("bad o= line: {0}")]
    BadOrigin(&'static str),
    #[error("bad c= line: {0}")]
    BadConnection(&'static str),
    #[error("c= address {0:?} is not an IP address (FQDNs are not supported)")]
    UnsupportedConnectionAddress(String),
    #[error("bad m= line: {0}")]
    BadMedia(&'static str),
    #[error("more than {MAX_MEDIA_DESCRIPTIONS} m= lines")]
    TooManyMedia,
    #[error("bad a=rtpmap: {0}")]
    BadRtpmap(&'static str),
    #[error("bad a=fmtp: {0}")]
    BadFmtp(&'static str),
    #[error("bad a=ptime or a=maxptime value {0:?}")]
    BadPtime(String),
    #[error("bad a=rtcp: {0}")]
    BadRtcp(&'static str),
    #[error("bad a=crypto: {0}")]
    BadCrypto(&'static str),
}

/// A parsed SDP body: the session level and its media descriptions, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Option<Origin>,
    pub session_name: Option<String>,
    /// Session-level `c=`; a media-level `c=` overrides it.
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute, the default for every media description.
    pub direction: Option<Direction>,
    /// Session-level attributes not interpreted above (`name`, optional value).
    pub attributes: Vec<Attribute>,
    pub media: Vec<MediaDescription>,
    /// Malformed lines skipped because the offer does not depend on them, in body order.
    pub ignored: Vec<IgnoredLine>,
}

/// A line [`SessionDescription::parse`] skipped, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredLine {
    /// 1-based line number in the body.
    pub line: usize,
    pub error: SdpError,
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`.
///
/// Kept as text: RFC 4566 §5.2 only asks that the version grows, and some peers put
/// numbers wider than 64 bits there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: String,
    pub session_version: String,
    pub address: String,
}

/// An attribute we keep but don't interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

/// Media direction attributes (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction an answerer gives to an offered direction (RFC 3264 §6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the side holding this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side holding this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// Removes the receiving half: what an offer with the RFC 2543 hold address
    /// `c=0.0.0.0` means (RFC 3264 §8.4).
    fn without_receive(self) -> Direction {
        match self {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        }
    }

    fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The media type of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
    Other(String),
}

impl MediaKind {
    fn parse(s: &str) -> MediaKind {
        match s {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            other => MediaKind::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Other(s) => s,
        }
    }
}

/// The transport protocol of an `m=` line (RFC 4566 §5.14, RFC 3711, RFC 4585, RFC 5124).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    RtpAvp,
    RtpSavp,
    RtpAvpf,
    RtpSavpf,
    Other(String),
}

impl Transport {
    fn parse(s: &str) -> Transport {
        match s {
            "RTP/AVP" => Transport::RtpAvp,
            "RTP/SAVP" => Transport::RtpSavp,
            "RTP/AVPF" => Transport::RtpAvpf,
            "RTP/SAVPF" => Transport::RtpSavpf,
            other => Transport::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Transport::RtpAvp => "RTP/AVP",
            Transport::RtpSavp => "RTP/SAVP",
            Transport::RtpAvpf => "RTP/AVPF",
            Transport::RtpSavpf => "RTP/SAVPF",
            Transport::Other(s) => s,
        }
    }

    /// RTP carried over plain UDP (not DTLS, not TCP).
    pub fn is_rtp(&self) -> bool {
        !matches!(self, Transport::Other(_))
    }

    /// The secure profiles (SRTP, keyed here by SDES `a=crypto`).
    pub fn is_secure(&self) -> bool {
        matches!(self, Transport::RtpSavp | Transport::RtpSavpf)
    }
}

/// An RTP payload type number, 0..=127 (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadType(u8);

impl PayloadType {
    pub const fn new(value: u8) -> Option<PayloadType> {
        if value <= 127 {
            Some(PayloadType(value))
        } else {
            None
        }
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    /// Only for constants known to be in range.
    pub(crate) const fn new_const(value: u8) -> PayloadType {
        PayloadType(value & 0x7f)
    }

    fn parse(s: &str) -> Option<PayloadType> {
        if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u8>().ok().and_then(PayloadType::new)
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: PayloadType,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
}

/// `a=fmtp:<format> <parameters>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    pub format: String,
    pub parameters: String,
}

/// `a=rtcp:<port> [IN IP4|IP6 <address>]` (RFC 3605).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpAttribute {
    pub port: u16,
    pub address: Option<IpAddr>,
}

/// SRTP crypto suites (RFC 4568 §6.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CryptoSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    Other(String),
}

impl CryptoSuite {
    fn parse(s: &str) -> CryptoSuite {
        match s {
            "AES_CM_128_HMAC_SHA1_80" => CryptoSuite::AesCm128HmacSha1_80,
            "AES_CM_128_HMAC_SHA1_32" => CryptoSuite::AesCm128HmacSha1_32,
            other => CryptoSuite::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            CryptoSuite::Other(s) => s,
        }
    }

    /// Master key plus master salt length in bytes: 128-bit key, 112-bit salt
    /// (RFC 4568 §6.2.1).
    fn key_salt_len(&self) -> Option<usize> {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 | CryptoSuite::AesCm128HmacSha1_32 => Some(30),
            CryptoSuite::Other(_) => None,
        }
    }
}

impl fmt::Display for CryptoSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The optional master key identifier of a key parameter: `<value>:<length in bytes>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mki {
    pub value: u64,
    pub length: u8,
}

/// `a=crypto:<tag> <suite> inline:<key||salt>[|<lifetime>][|<mki>:<length>] [<session params>]`
/// (RFC 4568 §9.1). Only the first key parameter is kept: we don't rekey by MKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: CryptoSuite,
    /// Master key followed by master salt, decoded from base64.
    pub key_salt: Vec<u8>,
    pub lifetime: Option<String>,
    pub mki: Option<Mki>,
    pub session_params: Vec<String>,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    pub kind: MediaKind,
    pub port: u16,
    pub port_count: Option<u16>,
    pub transport: Transport,
    /// The format list; for RTP profiles these are payload type numbers.
    pub formats: Vec<String>,
    pub connection: Option<IpAddr>,
    pub rtpmaps: Vec<RtpMap>,
    pub fmtps: Vec<Fmtp>,
    pub ptime: Option<u32>,
    pub maxptime: Option<u32>,
    pub direction: Option<Direction>,
    pub rtcp_mux: bool,
    pub rtcp: Option<RtcpAttribute>,
    pub crypto: Vec<Crypto>,
    pub attributes: Vec<Attribute>,
}

impl MediaDescription {
    fn new(kind: MediaKind, port: u16, port_count: Option<u16>, transport: Transport) -> Self {
        MediaDescription {
            kind,
            port,
            port_count,
            transport,
            formats: Vec::new(),
            connection: None,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            ptime: None,
            maxptime: None,
            direction: None,
            rtcp_mux: false,
            rtcp: None,
            crypto: Vec::new(),
            attributes: Vec::new(),
        }
    }

    /// Whether this section can be our audio stream: audio over an RTP profile, not
    /// disabled with port 0 (RFC 3264 §5.1). Every other section is answered with port 0,
    /// so nothing inside it matters to us.
    pub fn can_carry_audio(&self) -> bool {
        self.kind == MediaKind::Audio && self.port != 0 && self.transport.is_rtp()
    }

    /// The payload types of the format list, skipping entries that are not numbers.
    pub fn payload_types(&self) -> impl Iterator<Item = PayloadType> + '_ {
        self.formats.iter().filter_map(|f| PayloadType::parse(f))
    }

    pub fn rtpmap(&self, pt: PayloadType) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == pt)
    }

    pub fn fmtp(&self, pt: PayloadType) -> Option<&str> {
        let wanted = pt.get();
        self.fmtps
            .iter()
            .find(|f| f.format.parse::<u8>().ok() == Some(wanted))
            .map(|f| f.parameters.as_str())
    }
}

impl SessionDescription {
    /// Parses an SDP body. Accepts CRLF or bare LF line ends (RFC 4566 §5 asks receivers
    /// to be tolerant of LF). Line types we don't use (`i=`, `u=`, `e=`, `p=`, `b=`,
    /// `t=`, `r=`, `z=`, `k=`) are skipped; malformed lines the offer does not depend on
    /// are skipped and listed in [`SessionDescription::ignored`] (see the module docs).
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        let mut sd = SessionDescription {
            origin: None,
            session_name: None,
            connection: None,
            direction: None,
            attributes: Vec::new(),
            media: Vec::new(),
            ignored: Vec::new(),
        };
        let mut saw_version = false;
        for (index, raw) in text.split('\n').enumerate() {
            let line_no = index + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                continue;
            }
            let mut chars = line.char_indices();
            let (kind, eq) = match (chars.next(), chars.next()) {
                (Some((_, k)), Some((i, '='))) if k.is_ascii_alphabetic() => (k, i),
                _ if !saw_version => return Err(SdpError::MalformedLine { line: line_no }),
                _ => {
                    sd.ignore(line_no, SdpError::MalformedLine { line: line_no });
                    continue;
                }
            };
            let value = line.get(eq + 1..).unwrap_or("");
            if !saw_version {
                if kind != 'v' {
                    return Err(SdpError::MissingVersion { line: line_no });
                }
                if value.trim() != "0" {
                    return Err(SdpError::UnsupportedVersion(value.to_owned()));
                }
                saw_version = true;
                continue;
            }
            match sd.apply_line(kind, value) {
                Ok(()) => {}
                Err(LineError::Skip(e)) => sd.ignore(line_no, e),
                Err(LineError::Fatal(e)) => return Err(e),
            }
        }
        if !saw_version {
            return Err(SdpError::Empty);
        }
        Ok(sd)
    }

    fn ignore(&mut self, line: usize, error: SdpError) {
        self.ignored.push(IgnoredLine { line, error });
    }

    /// Applies one `<kind>=<value>` line after `v=`.
    fn apply_line(&mut self, kind: char, value: &str) -> Result<(), LineError> {
        match kind {
            // Nothing we negotiate depends on the origin: a broken one is skipped.
            'o' => self.origin = Some(parse_origin(value).map_err(LineError::Skip)?),
            's' if self.media.is_empty() => self.session_name = Some(value.to_owned()),
            'c' => match self.media.last_mut() {
                None => self.connection = Some(parse_connection(value).map_err(LineError::Fatal)?),
                Some(m) => match parse_connection(value) {
                    Ok(addr) => m.connection = Some(addr),
                    Err(e) if m.can_carry_audio() => return Err(LineError::Fatal(e)),
                    Err(e) => return Err(LineError::Skip(e)),
                },
            },
            'm' => {
                if self.media.len() >= MAX_MEDIA_DESCRIPTIONS {
                    return Err(LineError::Fatal(SdpError::TooManyMedia));
                }
                match parse_media(value) {
                    Ok(m) => self.media.push(m),
                    Err(e) => {
                        // The answer must keep one m-line per offered m-line (RFC 3264 §6):
                        // a malformed section we would reject anyway stays, disabled.
                        let Some(disabled) = disabled_media(value) else {
                            return Err(LineError::Fatal(e));
                        };
                        self.media.push(disabled);
                        return Err(LineError::Skip(e));
                    }
                }
            }
            'a' => {
                let (name, attr_value) = match value.split_once(':') {
                    Some((n, v)) => (n, Some(v)),
                    None => (value, None),
                };
                match self.media.last_mut() {
                    Some(m) => {
                        apply_media_attribute(m, name, attr_value).map_err(LineError::Skip)?
                    }
                    None => {
                        if let Some(d) = Direction::from_attribute(name) {
                            self.direction = Some(d);
                        } else {
                            self.attributes.push(Attribute {
                                name: name.to_owned(),
                                value: attr_value.map(str::to_owned),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The connection address in force for `media`: its own `c=` or the session's.
    pub fn connection_for(&self, media: &MediaDescription) -> Option<IpAddr> {
        media.connection.or(self.connection)
    }

    /// The direction in force for `media`: its own attribute, the session's, or sendrecv
    /// (RFC 3264 §5.1 default).
    pub fn direction_for(&self, media: &MediaDescription) -> Direction {
        media
            .direction
            .or(self.direction)
            .unwrap_or(Direction::SendRecv)
    }
}

fn parse_origin(value: &str) -> Result<Origin, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    let mut next = |what| parts.next().ok_or(SdpError::BadOrigin(what));
    let username = next("missing username")?.to_owned();
    let session_id = next("missing session id")?.to_owned();
    let session_version = next("missing session version")?.to_owned();
    let _nettype = next("missing network type")?;
    let _addrtype = next("missing address type")?;
    let address = next("missing address")?.to_owned();
    Ok(Origin {
        username,
        session_id,
        session_version,
        address,
    })
}

/// `c=IN IP4 <addr>[/<ttl>[/<n>]]` or `c=IN IP6 <addr>[/<n>]` (RFC 4566 §5.7).
fn parse_connection(value: &str) -> Result<IpAddr, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    if parts.next() != Some("IN") {
        return Err(SdpError::BadConnection("network type is not IN"));
    }
    let addrtype = parts
        .next()
        .ok_or(SdpError::BadConnection("missing address type"))?;
    let addr = parts
        .next()
        .ok_or(SdpError::BadConnection("missing address"))?;
    parse_typed_address(addrtype, addr).map_err(|e| match e {
        AddrError::Type => SdpError::BadConnection("address type is not IP4 or IP6"),
        AddrError::Mismatch => SdpError::BadConnection("address does not match its type"),
        AddrError::NotIp(a) => SdpError::UnsupportedConnectionAddress(a),
    })
}

enum AddrError {
    Type,
    Mismatch,
    NotIp(String),
}

fn parse_typed_address(addrtype: &str, addr: &str) -> Result<IpAddr, AddrError> {
    let host = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = host
        .parse()
        .map_err(|_| AddrError::NotIp(host.to_owned()))?;
    match (addrtype, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        ("IP4", _) | ("IP6", _) => Err(AddrError::Mismatch),
        _ => Err(AddrError::Type),
    }
}

/// What one malformed line costs.
enum LineError {
    /// The line is skipped and reported.
    Skip(SdpError),
    /// The whole body is refused.
    Fatal(SdpError),
}

/// A malformed `m=` line of a media type other than audio, kept as a disabled section
/// (port 0) with whatever transport and formats it names, so that the answer can reject it
/// in place. `None` for audio (the stream we would use) or when not even the media type is
/// there.
fn disabled_media(value: &str) -> Option<MediaDescription> {
    let mut parts = value.split_ascii_whitespace();
    let kind = MediaKind::parse(parts.next()?);
    if kind == MediaKind::Audio {
        return None;
    }
    let _port = parts.next();
    let transport = Transport::parse(parts.next().unwrap_or("RTP/AVP"));
    let mut media = MediaDescription::new(kind, 0, None, transport);
    media.formats = parts.map(str::to_owned).collect();
    Some(media)
}

/// `m=<media> <port>[/<number of ports>] <proto> <fmt> ...` (RFC 4566 §5.14).
fn parse_media(value: &str) -> Result<MediaDescription, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    let kind = parts
        .next()
        .ok_or(SdpError::BadMedia("missing media type"))?;
    let port_field = parts.next().ok_or(SdpError::BadMedia("missing port"))?;
    let (port, count) = match port_field.split_once('/') {
        Some((p, n)) => (p, Some(n)),
        None => (port_field, None),
    };
    let port =
        parse_decimal::<u16>(port).ok_or(SdpError::BadMedia("port is not a number 0-65535"))?;
    let port_count = match count {
        Some(n) => Some(parse_decimal::<u16>(n).ok_or(SdpError::BadMedia("bad number of ports"))?),
        None => None,
    };
    let transport = parts
        .next()
        .ok_or(SdpError::BadMedia("missing transport protocol"))?;
    let mut media = MediaDescription::new(
        MediaKind::parse(kind),
        port,
        port_count,
        Transport::parse(transport),
    );
    media.formats = parts.map(str::to_owned).collect();
    if media.formats.is_empty() {
        return Err(SdpError::BadMedia("empty format list"));
    }
    Ok(media)
}

fn apply_media_attribute(
    m: &mut MediaDescription,
    name: &str,
    value: Option<&str>,
) -> Result<(), SdpError> {
    if let Some(d) = Direction::from_attribute(name) {
        m.direction = Some(d);
        return Ok(());
    }
    match (name, value) {
        ("rtpmap", Some(v)) => m.rtpmaps.push(parse_rtpmap(v)?),
        ("rtpmap", None) => return Err(SdpError::BadRtpmap("missing value")),
        ("fmtp", Some(v)) => {
            let v = v.trim_start();
            let (format, params) = v
                .split_once(|c: char| c.is_ascii_whitespace())
                .unwrap_or((v, ""));
            if format.is_empty() {
                return Err(SdpError::BadFmtp("missing format"));
            }
            m.fmtps.push(Fmtp {
                format: format.to_owned(),
                parameters: params.trim().to_owned(),
            });
        }
        ("fmtp", None) => return Err(SdpError::BadFmtp("missing value")),
        ("ptime", v) => m.ptime = Some(parse_ptime(v)?),
        ("maxptime", v) => m.maxptime = Some(parse_ptime(v)?),
        ("rtcp-mux", _) => m.rtcp_mux = true,
        ("rtcp", Some(v)) => m.rtcp = Some(parse_rtcp(v)?),
        ("rtcp", None) => return Err(SdpError::BadRtcp("missing port")),
        ("crypto", Some(v)) => m.crypto.push(parse_crypto(v)?),
        ("crypto", None) => return Err(SdpError::BadCrypto("missing value")),
        _ => m.attributes.push(Attribute {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        }),
    }
    Ok(())
}

fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_rtpmap(v: &str) -> Result<RtpMap, SdpError> {
    let v = v.trim();
    let (pt, rest) = v
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or(SdpError::BadRtpmap("missing encoding"))?;
    let payload_type =
        PayloadType::parse(pt).ok_or(SdpError::BadRtpmap("payload type is not 0-127"))?;
    let mut fields = rest.trim().split('/');
    let encoding = fields.next().unwrap_or("");
    if encoding.is_empty() {
        return Err(SdpError::BadRtpmap("empty encoding name"));
    }
    let clock_rate = fields
        .next()
        .and_then(|c| parse_decimal::<u32>(c.trim()))
        .filter(|&c| c > 0)
        .ok_or(SdpError::BadRtpmap("clock rate is not a positive number"))?;
    let channels = match fields.next() {
        Some(c) => {
            Some(parse_decimal::<u8>(c.trim()).ok_or(SdpError::BadRtpmap("bad channel count"))?)
        }
        None => None,
    };
    Ok(RtpMap {
        payload_type,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

/// Milliseconds; RFC 4566 §6 allows a decimal fraction, which we truncate.
fn parse_ptime(v: Option<&str>) -> Result<u32, SdpError> {
    let raw = v.unwrap_or("").trim();
    let int = raw.split('.').next().unwrap_or("");
    parse_decimal::<u32>(int)
        .filter(|&p| p > 0)
        .ok_or_else(|| SdpError::BadPtime(raw.chars().take(32).collect()))
}

fn parse_rtcp(v: &str) -> Result<RtcpAttribute, SdpError> {
    let mut parts = v.split_ascii_whitespace();
    let port = parts
        .next()
        .and_then(parse_decimal::<u16>)
        .ok_or(SdpError::BadRtcp("port is not a number 0-65535"))?;
    let address = match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => None,
        (Some("IN"), Some(t), Some(a)) => {
            Some(parse_typed_address(t, a).map_err(|_| SdpError::BadRtcp("bad address"))?)
        }
        _ => return Err(SdpError::BadRtcp("bad connection address")),
    };
    Ok(RtcpAttribute { port, address })
}

/// Accepts base64 with or without padding: some phones strip the `=`.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

pub(crate) fn encode_key(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

fn parse_crypto(v: &str) -> Result<Crypto, SdpError> {
    let mut parts = v.split_ascii_whitespace();
    let tag = parts
        .next()
        .filter(|t| t.len() <= 9)
        .and_then(parse_decimal::<u32>)
        .ok_or(SdpError::BadCrypto("tag is not 1-9 digits"))?;
    let suite = CryptoSuite::parse(
        parts
            .next()
            .ok_or(SdpError::BadCrypto("missing crypto suite"))?,
    );
    let key_params = parts
        .next()
        .ok_or(SdpError::BadCrypto("missing key parameters"))?;
    let session_params = parts.map(str::to_owned).collect();
    // Several key parameters are separated by ';'; only the first is used.
    let first = key_params.split(';').next().unwrap_or("");
    let info = first
        .strip_prefix("inline:")
        .ok_or(SdpError::BadCrypto("key method is not inline"))?;
    let mut fields = info.split('|');
    let key_b64 = fields.next().unwrap_or("");
    let key_salt = BASE64
        .decode(key_b64)
        .map_err(|_| SdpError::BadCrypto("key is not valid base64"))?;
    if let Some(len) = suite.key_salt_len() {
        if key_salt.len() != len {
            return Err(SdpError::BadCrypto(
                "key and salt have the wrong length for the suite",
            ));
        }
    }
    let mut lifetime = None;
    let mut mki = None;
    for field in fields {
        if let Some((value, length)) = field.split_once(':') {
            let value = parse_decimal::<u64>(value).ok_or(SdpError::BadCrypto("bad MKI value"))?;
            let length = parse_decimal::<u8>(length)
                .filter(|l| (1..=128).contains(l))
                .ok_or(SdpError::BadCrypto("bad MKI length"))?;
            mki = Some(Mki { value, length });
        } else if lifetime.is_none() && !field.is_empty() {
            lifetime = Some(field.to_owned());
        } else {
            return Err(SdpError::BadCrypto("unexpected key parameter field"));
        }
    }
    Ok(Crypto {
        tag,
        suite,
        key_salt,
        lifetime,
        mki,
        session_params,
    })
}
