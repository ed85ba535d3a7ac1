//! The STUN Binding transaction (RFC 8489 §6) a call's session runs against the STUN servers
//! of `livekit.ice_servers` and of LiveKit's `JoinResponse`, to learn the address its sockets
//! have on the far side of a NAT and offer it to LiveKit as a server-reflexive candidate.
//!
//! Sans-IO: a request is 20 bytes out, a response is bytes in and an address out. Written here
//! rather than taken from a crate: the exchange is one header and one attribute read back,
//! and str0m keeps its STUN codec private. TURN (RFC 8656) over UDP is [`super::turn`]'s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// RFC 8489 §5: the fixed value that tells STUN from other traffic on the same socket.
pub(crate) const MAGIC_COOKIE: u32 = 0x2112_A442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const MAPPED_ADDRESS: u16 = 0x0001;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const HEADER: usize = 20;
/// RFC 7064 §3.1: the default port of `stun:` URIs.
const DEFAULT_PORT: u16 = 3478;

/// A transaction id (RFC 8489 §5): 96 random bits.
pub(crate) type TransactionId = [u8; 12];

/// What an ICE server URI is to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IceUrl {
    /// `stun:host[:port]`: used.
    Stun { host: String, port: u16 },
    /// `turn:host[:port][?transport=udp]`: used, with the entry's credential.
    Turn { host: String, port: u16 },
    /// `turns:`, `stuns:` or TURN over TCP: understood, not used (no TLS or TCP client).
    Unsupported,
    /// Not an RFC 7064/7065 URI.
    Invalid,
}

/// Reads an ICE server URI (RFC 7064 `stun:`, RFC 7065 `turn:`).
pub(crate) fn parse_url(url: &str) -> IceUrl {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once(':') else {
        return IceUrl::Invalid;
    };
    let turn = match scheme.to_ascii_lowercase().as_str() {
        "stun" => false,
        "turn" => true,
        "stuns" | "turns" => return IceUrl::Unsupported,
        _ => return IceUrl::Invalid,
    };
    // RFC 7065 §3.1: `?transport=udp` or `?transport=tcp` on TURN URIs only.
    let rest = match rest.split_once('?') {
        None => rest,
        Some((rest, query)) if turn => match query.to_ascii_lowercase().as_str() {
            "transport=udp" => rest,
            "transport=tcp" => return IceUrl::Unsupported,
            _ => return IceUrl::Invalid,
        },
        Some(_) => return IceUrl::Invalid,
    };
    if rest.contains(['?', '/', '@']) || rest.is_empty() {
        return IceUrl::Invalid;
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return IceUrl::Invalid;
        };
        match after {
            "" => (addr, None),
            p => match p.strip_prefix(':') {
                Some(p) => (addr, Some(p)),
                None => return IceUrl::Invalid,
            },
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = match port.map(str::parse::<u16>) {
        None => DEFAULT_PORT,
        Some(Ok(p)) if p != 0 => p,
        Some(_) => return IceUrl::Invalid,
    };
    if host.is_empty() {
        return IceUrl::Invalid;
    }
    let host = host.to_owned();
    if turn {
        IceUrl::Turn { host, port }
    } else {
        IceUrl::Stun { host, port }
    }
}

/// A Binding request without attributes (RFC 8489 §6.1: no authentication for Binding).
pub(crate) fn binding_request(id: &TransactionId) -> [u8; HEADER] {
    let mut out = [0u8; HEADER];
    out[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // Message length 0: no attributes.
    out[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out[8..20].copy_from_slice(id);
    out
}

/// Whether `packet` looks like a STUN message at all (RFC 8489 §5: the two top bits are zero
/// and the magic cookie is in place), to tell it from DTLS and RTP on a shared socket.
pub(crate) fn is_stun(packet: &[u8]) -> bool {
    packet.len() >= HEADER
        && packet[0] & 0xc0 == 0
        && packet.get(4..8) == Some(&MAGIC_COOKIE.to_be_bytes()[..])
}

/// The mapped address of a Binding success response to transaction `id`, or `None` for any
/// other message, a response to another transaction, or a malformed one.
pub(crate) fn binding_response_address(packet: &[u8], id: &TransactionId) -> Option<SocketAddr> {
    if !is_stun(packet) {
        return None;
    }
    let kind = u16::from_be_bytes([packet[0], packet[1]]);
    let length = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if kind != BINDING_SUCCESS || packet.get(8..20)? != id.as_slice() {
        return None;
    }
    let mut attrs = packet.get(HEADER..HEADER.checked_add(length)?)?;
    let mut plain = None;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        match kind {
            XOR_MAPPED_ADDRESS => return address(value, Some(id)),
            MAPPED_ADDRESS => plain = address(value, None),
            _ => {}
        }
        // Attributes are padded to a multiple of 4 bytes.
        let padded = 4 + len.div_ceil(4) * 4;
        attrs = attrs.get(padded..).unwrap_or(&[]);
    }
    plain
}

/// An XOR-address attribute's value (RFC 8489 §14.2) of a message with transaction `id`.
pub(crate) fn xor_address_value(value: &[u8], id: &TransactionId) -> Option<SocketAddr> {
    address(value, Some(id))
}

/// An address attribute's value (RFC 8489 §14.1, §14.2); XOR-ed with the cookie and the
/// transaction id when `xor` is given.
fn address(value: &[u8], xor: Option<&TransactionId>) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let mut port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]);
    let cookie = MAGIC_COOKIE.to_be_bytes();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match family {
        0x01 => {
            let mut b: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            if xor.is_some() {
                for (x, k) in b.iter_mut().zip(cookie) {
                    *x ^= k;
                }
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        0x02 => {
            let mut b: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            if let Some(id) = xor {
                for (x, k) in b.iter_mut().zip(cookie.iter().chain(id.iter())) {
                    *x ^= k;
                }
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: TransactionId = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    /// A success response with one attribute, as a STUN server writes it.
    fn response(id: &TransactionId, kind: u16, value: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
        let len = 4 + value.len().div_ceil(4) * 4;
        p.extend_from_slice(&(len as u16).to_be_bytes());
        p.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        p.extend_from_slice(id);
        p.extend_from_slice(&kind.to_be_bytes());
        p.extend_from_slice(&(value.len() as u16).to_be_bytes());
        p.extend_from_slice(value);
        p.resize(HEADER + len, 0);
        p
    }

    #[test]
    fn request_is_a_bare_binding_with_cookie_and_id() {
        let r = binding_request(&ID);
        assert_eq!(&r[0..4], &[0, 1, 0, 0]);
        assert_eq!(&r[4..8], &[0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(&r[8..], &ID);
        assert!(is_stun(&r));
    }

    #[test]
    fn xor_mapped_ipv4_address_is_read_back() {
        // RFC 5769 §2.2's sample response maps to 192.0.2.1:32853.
        let value = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        let p = response(&ID, XOR_MAPPED_ADDRESS, &value);
        assert_eq!(
            binding_response_address(&p, &ID),
            Some("192.0.2.1:32853".parse().unwrap())
        );
    }

    #[test]
    fn xor_mapped_ipv6_address_uses_the_transaction_id() {
        let want: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
        let IpAddr::V6(v6) = want.ip() else { panic!() };
        let mut value = vec![0x00, 0x02];
        value.extend_from_slice(&(want.port() ^ 0x2112).to_be_bytes());
        let key: Vec<u8> = MAGIC_COOKIE.to_be_bytes().into_iter().chain(ID).collect();
        value.extend(v6.octets().iter().zip(&key).map(|(a, k)| a ^ k));
        let p = response(&ID, XOR_MAPPED_ADDRESS, &value);
        assert_eq!(binding_response_address(&p, &ID), Some(want));
    }

    #[test]
    fn plain_mapped_address_from_old_servers_is_accepted() {
        let value = [0x00, 0x01, 0x13, 0x88, 203, 0, 113, 7];
        let p = response(&ID, MAPPED_ADDRESS, &value);
        assert_eq!(
            binding_response_address(&p, &ID),
            Some("203.0.113.7:5000".parse().unwrap())
        );
    }

    #[test]
    fn other_transactions_messages_and_garbage_are_ignored() {
        let value = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        let p = response(&ID, XOR_MAPPED_ADDRESS, &value);
        let mut other = ID;
        other[0] ^= 0xff;
        assert_eq!(binding_response_address(&p, &other), None);
        assert_eq!(binding_response_address(&binding_request(&ID), &ID), None);
        // Truncated at every length; a length field past the end; an RTP-looking packet.
        for n in 0..p.len() {
            assert_eq!(binding_response_address(&p[..n], &ID), None, "{n} bytes");
        }
        let mut long = p.clone();
        long[3] = 0xf0;
        assert_eq!(binding_response_address(&long, &ID), None);
        assert!(!is_stun(&[
            0x80, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]));
        let mut bad_family = p.clone();
        bad_family[HEADER + 5] = 0x07;
        assert_eq!(binding_response_address(&bad_family, &ID), None);
    }

    #[test]
    fn ice_urls_follow_rfc_7064_and_7065() {
        let stun = |h: &str, p| IceUrl::Stun {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            parse_url("stun:stun.example.com"),
            stun("stun.example.com", 3478)
        );
        assert_eq!(
            parse_url("STUN:203.0.113.1:19302"),
            stun("203.0.113.1", 19302)
        );
        assert_eq!(
            parse_url("stun:[2001:db8::1]:3479"),
            stun("2001:db8::1", 3479)
        );
        assert_eq!(parse_url("stun:[2001:db8::1]"), stun("2001:db8::1", 3478));
        let turn = |h: &str, p| IceUrl::Turn {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            parse_url("turn:turn.example.com?transport=udp"),
            turn("turn.example.com", 3478)
        );
        assert_eq!(parse_url("turn:192.0.2.1:3479"), turn("192.0.2.1", 3479));
        assert_eq!(
            parse_url("turn:turn.example.com?transport=tcp"),
            IceUrl::Unsupported
        );
        assert_eq!(parse_url("turn:h?transport=sctp"), IceUrl::Invalid);
        assert_eq!(parse_url("stun:h?transport=udp"), IceUrl::Invalid);
        assert_eq!(parse_url("turns:turn.example.com:443"), IceUrl::Unsupported);
        assert_eq!(parse_url("stuns:stun.example.com"), IceUrl::Unsupported);
        for bad in [
            "",
            "stun:",
            "stun:host:0",
            "stun:host:x",
            "http://x",
            "stun:[::1",
            "stun:a/b",
        ] {
            assert_eq!(parse_url(bad), IceUrl::Invalid, "{bad}");
        }
    }
}
