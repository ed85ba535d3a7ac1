//! SIP transports: UDP, TCP and TLS (RFC 3261 §18, RFC 3581).
//!
//! The edge of the call flow. The sans-IO pieces are here: [`ListenAddr`]
//! (`udp://0.0.0.0:5060`), [`framer::StreamFramer`] (cutting messages out of a
//! stream), [`stamp_received`] (server transport: `received`/`rport` on the top
//! Via, RFC 3261 §18.2.1 and RFC 3581 §4) and [`response_target`] (where a
//! response goes, RFC 3261 §18.2.2 and RFC 3581 §4). The tokio driver in
//! [`driver`] binds the listeners, delivers [`Incoming`] messages on a channel
//! and sends [`Target`]ed octets, reusing stream connections; it admits and
//! times out stream connections as the sans-IO `admission` module decides, so
//! sources with no trunk cannot exhaust them.

mod admission;
pub mod driver;
pub mod framer;

pub use admission::RefusedConnections;
pub use driver::{
    Observer, TransportConfig, TransportError, TransportObserver, Transports, TrustedSources,
};
pub use framer::{FramingError, StreamFramer};

use crate::header::{HeaderName, Via, ViaTransport};
use crate::message::{Message, Request, Text};
use crate::uri::Host;
use bytes::Bytes;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// A transport protocol we listen and send on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Reliable (stream) transports keep connections (RFC 3261 §18).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
    /// The token used in Via (`UDP`, `TCP`, `TLS`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
    /// Default port (RFC 3261 §19.1.2: 5060, 5061 for TLS).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            _ => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// A listen address as written in the configuration: `udp://0.0.0.0:5060`,
/// `tcp://[::]:5060`, `tls://0.0.0.0:5061` (port defaults per transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Why a listen address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenAddrError {
    #[error("listen address must start with udp://, tcp:// or tls://")]
    Scheme,
    #[error("listen address has a bad IP address or port")]
    Address,
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;
    fn from_str(s: &str) -> Result<ListenAddr, ListenAddrError> {
        let (scheme, rest) = s.trim().split_once("://").ok_or(ListenAddrError::Scheme)?;
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            _ => return Err(ListenAddrError::Scheme),
        };
        let rest = rest.trim_end_matches('/');
        let addr = match rest.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                let host = rest.trim_start_matches('[').trim_end_matches(']');
                let ip: IpAddr = host.parse().map_err(|_| ListenAddrError::Address)?;
                SocketAddr::new(ip, transport.default_port())
            }
        };
        Ok(ListenAddr { transport, addr })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.transport, self.addr)
    }
}

/// Identifies one stream connection for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// A message received by a transport.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Parsed message; requests already carry `received`/`rport` on the top Via.
    pub message: Message,
    /// The octets as received (one datagram or one stream frame).
    pub raw: Bytes,
    pub source: SocketAddr,
    /// The local address it arrived on.
    pub local: SocketAddr,
    pub transport: Transport,
    /// The connection for stream transports (`None` for UDP).
    pub conn: Option<ConnectionId>,
}

impl Incoming {
    /// Where a response to this message goes: the same connection for streams,
    /// otherwise per the top Via ([`response_target`]).
    pub fn reply_target(&self) -> Result<Target, RouteError> {
        let via = self
            .message
            .headers()
            .top_via()
            .map_err(|_| RouteError::NoVia)?;
        let mut t = response_target(&via, self.source, self.transport)?;
        t.conn = self.conn;
        Ok(t)
    }
}

/// Where to send octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    pub transport: Transport,
    /// For streams: the connection to reuse if still open.
    pub conn: Option<ConnectionId>,
}

/// Why no response address could be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no usable Via")]
    NoVia,
    #[error("Via sent-by {0} needs DNS resolution (RFC 3263), which this layer does not do")]
    NeedsResolution(String),
    #[error("refusing to send to broadcast, multicast or unspecified address {0}")]
    ForbiddenAddress(IpAddr),
    #[error("Via transport {0} is not supported")]
    UnsupportedTransport(String),
}

fn parse_received(v: &str) -> Option<IpAddr> {
    let v = v.trim_start_matches('[').trim_end_matches(']');
    v.parse().ok()
}

fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_broadcast() || a.is_multicast() || a.is_unspecified(),
        IpAddr::V6(a) => a.is_multicast() || a.is_unspecified(),
    }
}

/// The address a response to a request with top Via `via`, received from
/// `source` over `transport`, is sent to (RFC 3261 §18.2.2, RFC 3581 §4):
/// - `rport` with a value (or present, empty): the source IP and port;
/// - `received`: that IP, at the sent-by port;
/// - otherwise the sent-by host literal and port (names need DNS: an error).
///
/// For streams the caller also passes the connection to reuse in [`Target::conn`].
/// `maddr` (multicast) is not honoured. Broadcast, multicast and unspecified
/// addresses are refused (RFC 4475 §3.3.10).
pub fn response_target(
    via: &Via,
    source: SocketAddr,
    transport: Transport,
) -> Result<Target, RouteError> {
    let t = match &via.transport {
        ViaTransport::Udp => Transport::Udp,
        ViaTransport::Tcp => Transport::Tcp,
        ViaTransport::Tls => Transport::Tls,
        other => return Err(RouteError::UnsupportedTransport(other.as_str().to_owned())),
    };
    // A response travels on the transport the request came on.
    let transport = if t == transport { t } else { transport };
    let received = via.received().and_then(parse_received);
    let addr = if via.has_rport() {
        let ip = received.unwrap_or(source.ip());
        let port = via.rport().unwrap_or(source.port());
        SocketAddr::new(ip, port)
    } else if let Some(ip) = received {
        SocketAddr::new(ip, via.sent_by_port())
    } else {
        match &via.host {
            Host::Domain(d) => return Err(RouteError::NeedsResolution(d.to_string())),
            h => match h.ip() {
                Some(ip) => SocketAddr::new(ip, via.sent_by_port()),
                None => return Err(RouteError::NoVia),
            },
        }
    };
    if is_forbidden(addr.ip()) {
        return Err(RouteError::ForbiddenAddress(addr.ip()));
    }
    Ok(Target {
        addr,
        transport,
        conn: None,
    })
}

/// Server transport duty on a received request (RFC 3261 §18.2.1, RFC 3581 §4):
/// add `received=<source IP>` to the top Via when its sent-by host differs from
/// the source IP, and fill in `rport=<source port>` (with `received`) when the
/// client asked with an empty `rport`. Returns false if there is no parsable Via.
pub fn stamp_received(req: &mut Request, source: SocketAddr) -> bool {
    let Some(pos) = req.headers.iter().position(|h| h.name == HeaderName::Via) else {
        return false;
    };
    let Some(header) = req.headers.iter_mut().nth(pos) else {
        return false;
    };
    // The top Via value is the first element of the first Via line.
    let line = header.value.clone();
    let mut parts = crate::header::split_list(&line);
    let Some(top) = parts.next() else {
        return false;
    };
    let rest: Vec<Text> = parts.collect();
    let Ok(mut via) = Via::parse(&top) else {
        return false;
    };
    let src_ip = source.ip();
    let host_matches = via.host.ip() == Some(src_ip);
    let mut changed = false;
    if via.has_rport() && via.rport().is_none() {
        via.params.set(
            Text::from_static("rport"),
            Some(Text::from(source.port().to_string())),
        );
        // RFC 3581 §4: with rport, received is added even if sent-by matches.
        via.params.set(
            Text::from_static("received"),
            Some(Text::from(ip_param(src_ip))),
        );
        changed = true;
    } else if !host_matches {
        via.params.set(
            Text::from_static("received"),
            Some(Text::from(ip_param(src_ip))),
        );
        changed = true;
    }
    if changed {
        let mut s = via.to_string();
        for r in rest {
            s.push_str(", ");
            s.push_str(&r);
        }
        header.value = Text::from(s);
    }
    true
}

fn ip_param(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        // RFC 5118 §4.5: IPv6 in received is written as a reference.
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Limits, Message};

    fn via(s: &'static str) -> Via {
        Via::parse(&Text::from_static(s)).unwrap()
    }

    fn src() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    #[test]
    fn listen_addresses_parse_with_default_ports() {
        assert_eq!(
            "udp://0.0.0.0:5060".parse::<ListenAddr>(),
            Ok(ListenAddr {
                transport: Transport::Udp,
                addr: "0.0.0.0:5060".parse().unwrap()
            })
        );
        assert_eq!(
            "tls://[::1]".parse::<ListenAddr>().unwrap().addr,
            "[::1]:5061".parse().unwrap()
        );
        assert_eq!(
            "ws://0.0.0.0:1".parse::<ListenAddr>(),
            Err(ListenAddrError::Scheme)
        );
    }

    #[test]
    fn response_goes_to_source_port_when_rport_requested() {
        let v = via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport=40000;received=127.0.0.1");
        assert_eq!(
            response_target(&v, src(), Transport::Udp).unwrap().addr,
            src()
        );
    }

    #[test]
    fn response_goes_to_received_ip_and_sent_by_port_without_rport() {
        let v = via("SIP/2.0/UDP pc.example.com:5070;branch=z9hG4bKa;received=127.0.0.2");
        assert_eq!(
            response_target(&v, src(), Transport::Udp).unwrap().addr,
            "127.0.0.2:5070".parse().unwrap()
        );
    }

    #[test]
    fn response_goes_to_sent_by_literal_with_default_port() {
        let v = via("SIP/2.0/UDP 127.0.0.3;branch=z9hG4bKa");
        assert_eq!(
            response_target(&v, src(), Transport::Udp).unwrap().addr,
            "127.0.0.3:5060".parse().unwrap()
        );
    }

    #[test]
    fn response_to_broadcast_is_refused() {
        let v = via("SIP/2.0/UDP 192.0.2.198;branch=z9hG4bKa;received=255.255.255.255");
        assert!(matches!(
            response_target(&v, src(), Transport::Udp),
            Err(RouteError::ForbiddenAddress(_))
        ));
    }

    #[test]
    fn stamping_adds_received_and_fills_rport() {
        let raw = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP host.example.com;branch=z9hG4bKa;rport, SIP/2.0/UDP b\r\n\r\n";
        let Ok(Message::Request(mut r)) = Message::parse(Bytes::from(raw), &Limits::default())
        else {
            panic!()
        };
        assert!(stamp_received(&mut r, src()));
        let vias = r.headers.via().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].received(), Some("127.0.0.1"));
        assert_eq!(vias[0].rport(), Some(40000));
    }

    #[test]
    fn stamping_leaves_matching_sent_by_alone() {
        let raw = "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKa\r\n\r\n";
        let Ok(Message::Request(mut r)) = Message::parse(Bytes::from(raw), &Limits::default())
        else {
            panic!()
        };
        assert!(stamp_received(&mut r, src()));
        assert_eq!(r.headers.top_via().unwrap().received(), None);
    }
}
