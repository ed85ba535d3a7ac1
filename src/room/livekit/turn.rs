//! A TURN client (RFC 8656) for one peer-connection socket: it allocates a relayed address
//! on a TURN server, so that a gateway which cannot reach LiveKit's media ports directly
//! (or is told to use relays only) still gets media through.
//!
//! Sans-IO, like the rest of the session: datagrams from the TURN server go in through
//! [`Turn::on_datagram`], messages for it come out of [`Turn::poll_transmit`], time goes in
//! through [`Turn::handle_timeout`]. What str0m sends from the relayed candidate is wrapped
//! by [`Turn::wrap`] in a Send indication (§11) into a buffer reused for every packet; what
//! the server relays back arrives as Data indications, unwrapped to the peer's address and
//! payload. ChannelBind (§12) would save 32 bytes a packet; a call's few packets per 20 ms
//! do not need it.
//!
//! The exchange: an Allocate without credentials, the server's 401 with its realm and
//! nonce, the Allocate again with the long-term credential (§9.2 of RFC 8489: the key is
//! MD5(username:realm:password), MESSAGE-INTEGRITY an HMAC-SHA1 with it); then a
//! CreatePermission for each peer address str0m sends to, a Refresh before the allocation's
//! lifetime runs out, and permissions renewed while in use. A stale nonce (438) is taken up
//! and the request sent again. Requests are retransmitted (RFC 8489 §6.2.1: 500 ms, doubling)
//! a bounded number of times.
//!
//! Written here rather than taken from a crate: the TURN crates around either drive their
//! own sockets and tasks (webrtc-rs's `turn`) or are servers; this client is a few messages
//! over the socket the session already owns, and shares the STUN framing of [`super::stun`].

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

use super::stun::{self, TransactionId};

// Message types (RFC 8489 §5; methods of RFC 8656 §17). Every method here is below 0x10, so
// a type is the method with the class bits (0x010 indication, 0x100 success, 0x110 error).
const ALLOCATE: u16 = 0x0003;
const REFRESH: u16 = 0x0004;
const CREATE_PERMISSION: u16 = 0x0008;
const SEND_INDICATION: u16 = 0x0016;
const DATA_INDICATION: u16 = 0x0017;
const SUCCESS: u16 = 0x0100;
const ERROR: u16 = 0x0110;
const CLASS_MASK: u16 = 0x0110;

// Attributes (RFC 8489 §18.3, RFC 8656 §18).
const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const ERROR_CODE: u16 = 0x0009;
const LIFETIME: u16 = 0x000D;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const DATA: u16 = 0x0013;
const REALM: u16 = 0x0014;
const NONCE: u16 = 0x0015;
const XOR_RELAYED_ADDRESS: u16 = 0x0016;
const REQUESTED_TRANSPORT: u16 = 0x0019;

const HEADER: usize = 20;
/// MESSAGE-INTEGRITY: a 4-byte attribute header and an HMAC-SHA1.
const INTEGRITY_LEN: usize = 24;
/// RFC 8489 §6.2.1: the first retransmission after 500 ms, then doubling.
const RTO: Duration = Duration::from_millis(500);
/// Transmissions of one request before it is given up (about 15 s in all).
const MAX_TRANSMISSIONS: u32 = 5;
/// The allocation lifetime asked for (RFC 8656 §3.2 default), and how long before its end
/// it is refreshed.
const ALLOCATION_LIFETIME_S: u32 = 600;
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// A permission lasts 300 s (RFC 8656 §9); renewed a minute before, while in use.
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Peer addresses one allocation gives permissions to; LiveKit offers a handful.
const MAX_PERMISSIONS: usize = 16;
/// RFC 8656 §14: UDP (17) as REQUESTED-TRANSPORT.
const TRANSPORT_UDP: u8 = 17;
/// Challenges and stale nonces answered in a row before a server is taken to be broken.
const MAX_REAUTH: u32 = 3;
/// Largest datagram wrapped: a Send indication adds 36 bytes to the payload.
const MAX_WRAPPED: usize = 1500 + 64;

/// A TURN server of the ICE configuration, with its long-term credential.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TurnServer {
    pub(crate) addr: SocketAddr,
    pub(crate) username: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credential stays out of logs.
        f.debug_struct("TurnServer")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What a datagram from the TURN server meant.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TurnEvent<'a> {
    /// The allocation succeeded: `relay` is the relayed address to offer as a candidate.
    Allocated { relay: SocketAddr },
    /// `data` came from `peer` through the relay.
    Data { peer: SocketAddr, data: &'a [u8] },
    /// The allocation failed or was lost; the relay is unusable from now on.
    Failed(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allocate,
    Refresh { lifetime: u32 },
    Permission,
}

#[derive(Debug)]
struct Pending {
    id: TransactionId,
    kind: Kind,
    /// Peer addresses a CreatePermission asks for.
    peers: Vec<IpAddr>,
    message: Vec<u8>,
    next: Instant,
    transmissions: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Permission {
    ip: IpAddr,
    /// `None` while the CreatePermission is in flight.
    expires: Option<Instant>,
    /// A packet went to this peer since the permission was last renewed.
    used: bool,
}

/// The client side of one allocation.
pub(crate) struct Turn {
    server: TurnServer,
    state: State,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    /// The long-term key, once the server named its realm.
    key: Option<[u8; 16]>,
    relay: Option<SocketAddr>,
    refresh_at: Option<Instant>,
    permissions: Vec<Permission>,
    pending: Vec<Pending>,
    out: VecDeque<Vec<u8>>,
    /// The Send indication being built; reused for every packet.
    wrapped: Vec<u8>,
    /// Requests sent again for a challenge or a stale nonce since the last success.
    reauth: u32,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("server", &self.server)
            .field("state", &self.state)
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

impl Turn {
    /// A client for `server` that starts allocating at once.
    pub(crate) fn new(server: TurnServer, now: Instant) -> Turn {
        let mut t = Turn {
            server,
            state: State::Allocating,
            realm: Vec::new(),
            nonce: Vec::new(),
            key: None,
            relay: None,
            refresh_at: None,
            permissions: Vec::new(),
            pending: Vec::new(),
            out: VecDeque::new(),
            wrapped: Vec::with_capacity(MAX_WRAPPED),
            reauth: 0,
        };
        t.request(Kind::Allocate, Vec::new(), now);
        t
    }

    /// Where the TURN server is: datagrams from this address go to [`Turn::on_datagram`].
    pub(crate) fn server(&self) -> SocketAddr {
        self.server.addr
    }

    /// The relayed address, once allocated.
    pub(crate) fn relay(&self) -> Option<SocketAddr> {
        self.relay.filter(|_| self.state == State::Allocated)
    }

    /// The next message for the TURN server.
    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// When [`Turn::handle_timeout`] wants to run next.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        if self.state == State::Failed {
            return None;
        }
        let renewals = self
            .permissions
            .iter()
            .filter_map(|p| p.expires.map(|e| e - REFRESH_MARGIN));
        self.pending
            .iter()
            .map(|p| p.next)
            .chain(self.refresh_at)
            .chain(renewals)
            .min()
    }

    /// Retransmits what went unanswered, refreshes the allocation and the permissions in use.
    /// Returns a failure the first time the allocation is lost.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<TurnEvent<'static>> {
        if self.state == State::Failed {
            return None;
        }
        let mut gave_up = None;
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            if now < p.next {
                i += 1;
                continue;
            }
            if p.transmissions >= MAX_TRANSMISSIONS {
                let p = self.pending.remove(i);
                match p.kind {
                    Kind::Allocate | Kind::Refresh { .. } => gave_up = Some(p.kind),
                    Kind::Permission => self.permissions.retain(|q| !p.peers.contains(&q.ip)),
                }
                continue;
            }
            p.transmissions += 1;
            p.next = now + RTO * (1 << (p.transmissions - 1));
            self.out.push_back(p.message.clone());
            i += 1;
        }
        if gave_up.is_some() {
            return Some(self.fail("the TURN server stopped answering"));
        }
        if self.refresh_at.is_some_and(|at| now >= at) {
            self.refresh_at = None;
            self.request(
                Kind::Refresh {
                    lifetime: ALLOCATION_LIFETIME_S,
                },
                Vec::new(),
                now,
            );
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|p| p.expires.is_some_and(|e| now + REFRESH_MARGIN >= e))
            .filter(|p| p.used)
            .map(|p| p.ip)
            .collect();
        // Permissions nobody used since their last renewal lapse.
        self.permissions
            .retain(|p| p.used || p.expires.is_none_or(|e| now + REFRESH_MARGIN < e));
        if !due.is_empty() {
            for p in self.permissions.iter_mut().filter(|p| due.contains(&p.ip)) {
                p.expires = None;
                p.used = false;
            }
            self.request(Kind::Permission, due, now);
        }
        None
    }

    /// Wraps `data` for `peer` in a Send indication, or `None` while there is no allocation
    /// or no permission for that peer yet (one is asked for; ICE retransmits its checks).
    pub(crate) fn wrap(&mut self, peer: SocketAddr, data: &[u8], now: Instant) -> Option<&[u8]> {
        if self.relay().is_none() || data.len() > MAX_WRAPPED - 64 {
            return None;
        }
        match self.permissions.iter_mut().find(|p| p.ip == peer.ip()) {
            Some(p) if p.expires.is_some() => p.used = true,
            Some(_) => return None,
            None => {
                if self.permissions.len() >= MAX_PERMISSIONS {
                    return None;
                }
                self.permissions.push(Permission {
                    ip: peer.ip(),
                    expires: None,
                    used: false,
                });
                self.request(Kind::Permission, vec![peer.ip()], now);
                return None;
            }
        }
        // Indications carry no transaction to match, so any id will do; a fixed one keeps
        // the hot path free of the random number generator.
        let id = [0u8; 12];
        self.wrapped.clear();
        begin(&mut self.wrapped, SEND_INDICATION, &id);
        let mut peer_value = [0u8; 20];
        let n = xor_address(peer, &id, &mut peer_value);
        attribute(&mut self.wrapped, XOR_PEER_ADDRESS, &peer_value[..n]);
        attribute(&mut self.wrapped, DATA, data);
        Some(&self.wrapped)
    }

    /// A datagram from the TURN server: relayed data, or the answer to one of our requests.
    /// `None` for anything else (a stray or malformed message, an answer already had).
    pub(crate) fn on_datagram<'a>(
        &mut self,
        packet: &'a [u8],
        now: Instant,
    ) -> Option<TurnEvent<'a>> {
        let message = Message::parse(packet)?;
        if message.kind == DATA_INDICATION {
            // RFC 8656 §11.6: relayed data, only ever from peers we gave permissions to.
            let peer = message.attribute(XOR_PEER_ADDRESS)?;
            let peer = stun::xor_address_value(peer, &message.id)?;
            let data = message.attribute(DATA)?;
            return Some(TurnEvent::Data { peer, data });
        }
        let class = message.kind & CLASS_MASK;
        if class != SUCCESS && class != ERROR {
            return None;
        }
        let at = self.pending.iter().position(|p| p.id == message.id)?;
        if let Some(key) = &self.key {
            // A response to an authenticated request carries its own MESSAGE-INTEGRITY
            // (RFC 8489 §9.2.5); one that fails the check did not come from the server.
            if message.has(MESSAGE_INTEGRITY) && !message.integrity_ok(key) {
                return None;
            }
        }
        let pending = self.pending.remove(at);
        if class == ERROR {
            return self.on_error(&message, pending, now);
        }
        self.reauth = 0;
        match pending.kind {
            Kind::Allocate => {
                let relay = message.attribute(XOR_RELAYED_ADDRESS)?;
                let relay = stun::xor_address_value(relay, &message.id)?;
                self.relay = Some(relay);
                self.state = State::Allocated;
                self.schedule_refresh(&message, now);
                Some(TurnEvent::Allocated { relay })
            }
            Kind::Refresh { lifetime: 0 } => None,
            Kind::Refresh { .. } => {
                self.schedule_refresh(&message, now);
                None
            }
            Kind::Permission => {
                for p in self
                    .permissions
                    .iter_mut()
                    .filter(|p| pending.peers.contains(&p.ip))
                {
                    p.expires = Some(now + PERMISSION_LIFETIME);
                }
                None
            }
        }
    }

    /// Releases the allocation (a Refresh with lifetime 0, RFC 8656 §7): the message to send
    /// before the socket closes, if there is an allocation.
    pub(crate) fn release(&mut self) -> Option<Vec<u8>> {
        self.relay()?;
        self.state = State::Failed;
        let id: TransactionId = rand::random();
        Some(self.build(Kind::Refresh { lifetime: 0 }, &[], &id))
    }

    fn on_error(
        &mut self,
        message: &Message<'_>,
        pending: Pending,
        now: Instant,
    ) -> Option<TurnEvent<'static>> {
        let code = message.error_code().unwrap_or(0);
        let retry = match code {
            // A first 401 names the realm and nonce to authenticate with; a 401 to an
            // authenticated request means the credential is wrong.
            401 if self.key.is_none() => {
                self.realm = message.attribute(REALM).unwrap_or_default().to_vec();
                self.nonce = message.attribute(NONCE).unwrap_or_default().to_vec();
                self.key = Some(long_term_key(
                    &self.server.username,
                    &self.realm,
                    &self.server.password,
                ));
                !self.nonce.is_empty()
            }
            438 => match message.attribute(NONCE) {
                Some(nonce) => {
                    self.nonce = nonce.to_vec();
                    true
                }
                None => false,
            },
            _ => false,
        };
        if retry && self.reauth < MAX_REAUTH {
            self.reauth += 1;
            self.request(pending.kind, pending.peers, now);
            return None;
        }
        match pending.kind {
            Kind::Allocate | Kind::Refresh { lifetime: 1.. } => Some(self.fail(match code {
                401 => "the TURN server refused the credential",
                486 => "the TURN server has no allocation left for this user",
                508 => "the TURN server is out of capacity",
                _ => "the TURN server refused the allocation",
            })),
            Kind::Refresh { lifetime: 0 } => None,
            Kind::Permission => {
                self.permissions.retain(|p| !pending.peers.contains(&p.ip));
                None
            }
        }
    }

    fn fail(&mut self, why: &'static str) -> TurnEvent<'static> {
        self.state = State::Failed;
        self.pending.clear();
        self.refresh_at = None;
        TurnEvent::Failed(why)
    }

    fn schedule_refresh(&mut self, message: &Message<'_>, now: Instant) {
        let lifetime = message
            .attribute(LIFETIME)
            .and_then(|v| v.get(..4))
            .and_then(|v| v.try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(ALLOCATION_LIFETIME_S);
        let lifetime = Duration::from_secs(u64::from(lifetime));
        self.refresh_at = Some(now + lifetime.saturating_sub(REFRESH_MARGIN).max(RTO));
    }

    /// Queues a new request of `kind` (with a fresh transaction id) and its retransmissions.
    fn request(&mut self, kind: Kind, peers: Vec<IpAddr>, now: Instant) {
        let id: TransactionId = rand::random();
        let message = self.build(kind, &peers, &id);
        self.out.push_back(message.clone());
        self.pending.push(Pending {
            id,
            kind,
            peers,
            message,
            next: now + RTO,
            transmissions: 1,
        });
    }

    fn build(&self, kind: Kind, peers: &[IpAddr], id: &TransactionId) -> Vec<u8> {
        let mut m = Vec::with_capacity(128);
        let method = match kind {
            Kind::Allocate => ALLOCATE,
            Kind::Refresh { .. } => REFRESH,
            Kind::Permission => CREATE_PERMISSION,
        };
        begin(&mut m, method, id);
        match kind {
            Kind::Allocate => {
                attribute(&mut m, REQUESTED_TRANSPORT, &[TRANSPORT_UDP, 0, 0, 0]);
                attribute(&mut m, LIFETIME, &ALLOCATION_LIFETIME_S.to_be_bytes());
            }
            Kind::Refresh { lifetime } => attribute(&mut m, LIFETIME, &lifetime.to_be_bytes()),
            Kind::Permission => {
                for ip in peers {
                    let mut value = [0u8; 20];
                    // The port of XOR-PEER-ADDRESS is ignored in a CreatePermission (§9.1).
                    let n = xor_address(SocketAddr::new(*ip, 0), id, &mut value);
                    attribute(&mut m, XOR_PEER_ADDRESS, &value[..n]);
                }
            }
        }
        if let Some(key) = &self.key {
            attribute(&mut m, USERNAME, self.server.username.as_bytes());
            attribute(&mut m, REALM, &self.realm);
            attribute(&mut m, NONCE, &self.nonce);
            integrity(&mut m, key);
        }
        m
    }
}

/// RFC 8489 §9.2.2: the long-term credential's key, MD5(username ":" realm ":" password).
/// (The RFC asks for the username and password to be SASLprep'ed; TURN deployments hand
/// out ASCII credentials, taken as they are.)
pub(crate) fn long_term_key(username: &str, realm: &[u8], password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm);
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// Starts a message of type `kind`.
fn begin(out: &mut Vec<u8>, kind: u16, id: &TransactionId) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(id);
}

/// Appends an attribute, padded to 4 bytes, and updates the header's length.
fn attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - value.len() % 4) % 4, 0);
    let length = out.len() - HEADER;
    set_length(out, length);
}

fn set_length(out: &mut [u8], length: usize) {
    if let Some(field) = out.get_mut(2..4) {
        field.copy_from_slice(&(length as u16).to_be_bytes());
    }
}

/// Appends MESSAGE-INTEGRITY (RFC 8489 §14.5): an HMAC-SHA1 over the message so far, its
/// length field already counting the attribute.
fn integrity(out: &mut Vec<u8>, key: &[u8]) {
    let length = out.len() - HEADER + INTEGRITY_LEN;
    set_length(out, length);
    let mac = hmac_sha1(key, &[out]);
    out.extend_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
    out.extend_from_slice(&20u16.to_be_bytes());
    out.extend_from_slice(&mac);
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return [0; 20];
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Writes an XOR-address value (RFC 8489 §14.2) into `out`; returns its length.
fn xor_address(addr: SocketAddr, id: &TransactionId, out: &mut [u8; 20]) -> usize {
    let cookie = stun::MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (stun::MAGIC_COOKIE >> 16) as u16;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = 0x01;
            for (i, (b, k)) in ip.octets().iter().zip(cookie).enumerate() {
                out[4 + i] = b ^ k;
            }
            8
        }
        IpAddr::V6(ip) => {
            out[1] = 0x02;
            for (i, (b, k)) in ip.octets().iter().zip(cookie.iter().chain(id)).enumerate() {
                out[4 + i] = b ^ k;
            }
            20
        }
    }
}

/// A STUN message read in place.
struct Message<'a> {
    kind: u16,
    id: TransactionId,
    packet: &'a [u8],
}

impl<'a> Message<'a> {
    fn parse(packet: &'a [u8]) -> Option<Message<'a>> {
        if !stun::is_stun(packet) {
            return None;
        }
        let kind = u16::from_be_bytes([packet[0], packet[1]]);
        let length = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        let packet = packet.get(..HEADER.checked_add(length)?)?;
        let id = packet.get(8..20)?.try_into().ok()?;
        Some(Message { kind, id, packet })
    }

    /// Attributes with the offset each starts at.
    fn attributes(&self) -> impl Iterator<Item = (usize, u16, &'a [u8])> + 'a {
        let packet = self.packet;
        let mut at = HEADER;
        std::iter::from_fn(move || {
            let head = packet.get(at..at + 4)?;
            let kind = u16::from_be_bytes([head[0], head[1]]);
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let value = packet.get(at + 4..at + 4 + len)?;
            let start = at;
            at += 4 + len.div_ceil(4) * 4;
            Some((start, kind, value))
        })
    }

    fn attribute(&self, kind: u16) -> Option<&'a [u8]> {
        self.attributes()
            .find(|(_, k, _)| *k == kind)
            .map(|(_, _, v)| v)
    }

    fn has(&self, kind: u16) -> bool {
        self.attribute(kind).is_some()
    }

    /// RFC 8489 §14.8: class in the hundreds, number below.
    fn error_code(&self) -> Option<u16> {
        let v = self.attribute(ERROR_CODE)?;
        let class = u16::from(*v.get(2)? & 0x07);
        let number = u16::from(*v.get(3)?);
        Some(class * 100 + number)
    }

    /// Whether the MESSAGE-INTEGRITY attribute matches `key`.
    fn integrity_ok(&self, key: &[u8]) -> bool {
        let Some((at, _, value)) = self.attributes().find(|(_, k, _)| *k == MESSAGE_INTEGRITY)
        else {
            return false;
        };
        let (Some(head), Some(body)) = (self.packet.get(..4), self.packet.get(4..at)) else {
            return false;
        };
        let mut first = [0u8; 4];
        first.copy_from_slice(head);
        first[2..4].copy_from_slice(&((at - HEADER + INTEGRITY_LEN) as u16).to_be_bytes());
        let expected = hmac_sha1(key, &[&first, body]);
        ct_eq(&expected, value)
    }
}

/// Constant-time comparison of a MAC, so a forger learns nothing from timing.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> TurnServer {
        TurnServer {
            addr: "192.0.2.10:3478".parse().unwrap(),
            username: "user".into(),
            password: "pass".into(),
        }
    }

    /// A response to `request` as a TURN server writes it: `kind`, the attributes, and
    /// MESSAGE-INTEGRITY with `key` when given.
    fn response(
        request: &[u8],
        kind: u16,
        attrs: &[(u16, Vec<u8>)],
        key: Option<&[u8]>,
    ) -> Vec<u8> {
        let id: TransactionId = request[8..20].try_into().unwrap();
        let mut m = Vec::new();
        begin(&mut m, kind, &id);
        for (k, v) in attrs {
            attribute(&mut m, *k, v);
        }
        if let Some(key) = key {
            integrity(&mut m, key);
        }
        m
    }

    fn xor(addr: &str, request: &[u8]) -> Vec<u8> {
        let id: TransactionId = request[8..20].try_into().unwrap();
        let mut v = [0u8; 20];
        let n = xor_address(addr.parse().unwrap(), &id, &mut v);
        v[..n].to_vec()
    }

    fn error(code: u16) -> Vec<u8> {
        vec![0, 0, (code / 100) as u8, (code % 100) as u8]
    }

    /// Runs the 401 → authenticated Allocate exchange; returns the client and its key.
    fn allocated(now: Instant) -> (Turn, [u8; 16]) {
        let mut t = Turn::new(server(), now);
        let first = t.poll_transmit().expect("an Allocate");
        assert_eq!(&first[0..2], &ALLOCATE.to_be_bytes());
        let challenge = response(
            &first,
            ALLOCATE | ERROR,
            &[
                (ERROR_CODE, error(401)),
                (REALM, b"example.org".to_vec()),
                (NONCE, b"n0nce".to_vec()),
            ],
            None,
        );
        assert_eq!(t.on_datagram(&challenge, now), None);
        let second = t
            .poll_transmit()
            .expect("the Allocate again, authenticated");
        let key = long_term_key("user", b"example.org", "pass");
        let m = Message::parse(&second).unwrap();
        assert_eq!(m.attribute(USERNAME), Some(&b"user"[..]));
        assert_eq!(m.attribute(REALM), Some(&b"example.org"[..]));
        assert_eq!(m.attribute(NONCE), Some(&b"n0nce"[..]));
        assert!(
            m.integrity_ok(&key),
            "MESSAGE-INTEGRITY with the long-term key"
        );
        assert!(!m.integrity_ok(&long_term_key("user", b"example.org", "wrong")));
        let ok = response(
            &second,
            ALLOCATE | SUCCESS,
            &[
                (XOR_RELAYED_ADDRESS, xor("198.51.100.7:49152", &second)),
                (LIFETIME, 600u32.to_be_bytes().to_vec()),
            ],
            Some(&key),
        );
        assert_eq!(
            t.on_datagram(&ok, now),
            Some(TurnEvent::Allocated {
                relay: "198.51.100.7:49152".parse().unwrap()
            })
        );
        (t, key)
    }

    #[test]
    fn long_term_key_is_md5_of_user_realm_password() {
        // MD5("user:example.org:pass"), computed independently (Python's hashlib).
        assert_eq!(
            long_term_key("user", b"example.org", "pass"),
            [
                0xab, 0xca, 0x35, 0x35, 0x6f, 0x4b, 0x00, 0xfb, 0xc3, 0x3e, 0x2d, 0x8c, 0x2c, 0x43,
                0xb9, 0xd6
            ]
        );
    }

    #[test]
    fn allocation_answers_the_challenge_with_the_long_term_credential() {
        let now = Instant::now();
        let (t, _) = allocated(now);
        assert_eq!(t.relay(), Some("198.51.100.7:49152".parse().unwrap()));
        // Refreshed a minute before the 600 s lifetime ends.
        assert_eq!(t.refresh_at, Some(now + Duration::from_secs(540)));
    }

    #[test]
    fn sending_asks_for_a_permission_first_then_wraps_in_send_indications() {
        let now = Instant::now();
        let (mut t, key) = allocated(now);
        let peer: SocketAddr = "203.0.113.5:7882".parse().unwrap();
        assert_eq!(t.wrap(peer, b"hello", now), None, "no permission yet");
        let ask = t.poll_transmit().expect("a CreatePermission");
        let m = Message::parse(&ask).unwrap();
        assert_eq!(m.kind, CREATE_PERMISSION);
        assert!(m.integrity_ok(&key));
        assert_eq!(
            stun::xor_address_value(m.attribute(XOR_PEER_ADDRESS).unwrap(), &m.id).map(|a| a.ip()),
            Some(peer.ip())
        );
        assert_eq!(t.wrap(peer, b"hello", now), None, "still waiting");
        assert!(t.poll_transmit().is_none(), "asked once");
        let ok = response(&ask, CREATE_PERMISSION | SUCCESS, &[], Some(&key));
        assert_eq!(t.on_datagram(&ok, now), None);
        let sent = t.wrap(peer, b"hello", now).expect("wrapped").to_vec();
        let m = Message::parse(&sent).unwrap();
        assert_eq!(m.kind, SEND_INDICATION);
        assert_eq!(m.attribute(DATA), Some(&b"hello"[..]));
        assert_eq!(
            stun::xor_address_value(m.attribute(XOR_PEER_ADDRESS).unwrap(), &m.id),
            Some(peer)
        );
    }

    #[test]
    fn data_indications_are_unwrapped_to_the_peer_and_payload() {
        let now = Instant::now();
        let (mut t, _) = allocated(now);
        let id = [7u8; 12];
        let mut m = Vec::new();
        begin(&mut m, DATA_INDICATION, &id);
        let mut v = [0u8; 20];
        let n = xor_address("[2001:db8::1]:443".parse().unwrap(), &id, &mut v);
        attribute(&mut m, XOR_PEER_ADDRESS, &v[..n]);
        attribute(&mut m, DATA, b"rtp!");
        assert_eq!(
            t.on_datagram(&m, now),
            Some(TurnEvent::Data {
                peer: "[2001:db8::1]:443".parse().unwrap(),
                data: b"rtp!"
            })
        );
    }

    #[test]
    fn a_response_with_a_forged_integrity_is_ignored() {
        let now = Instant::now();
        let (mut t, _) = allocated(now);
        let peer: SocketAddr = "203.0.113.5:7882".parse().unwrap();
        let _ = t.wrap(peer, b"x", now);
        let ask = t.poll_transmit().unwrap();
        let forged = response(
            &ask,
            CREATE_PERMISSION | SUCCESS,
            &[],
            Some(&long_term_key("user", b"example.org", "guess")),
        );
        assert_eq!(t.on_datagram(&forged, now), None);
        assert_eq!(
            t.wrap(peer, b"x", now),
            None,
            "no permission from a forgery"
        );
    }

    #[test]
    fn a_wrong_credential_fails_the_allocation() {
        let now = Instant::now();
        let mut t = Turn::new(server(), now);
        let first = t.poll_transmit().unwrap();
        let challenge = response(
            &first,
            ALLOCATE | ERROR,
            &[
                (ERROR_CODE, error(401)),
                (REALM, b"r".to_vec()),
                (NONCE, b"n".to_vec()),
            ],
            None,
        );
        let _ = t.on_datagram(&challenge, now);
        let second = t.poll_transmit().unwrap();
        let refused = response(&second, ALLOCATE | ERROR, &[(ERROR_CODE, error(401))], None);
        assert_eq!(
            t.on_datagram(&refused, now),
            Some(TurnEvent::Failed("the TURN server refused the credential"))
        );
        assert_eq!(t.relay(), None);
        assert_eq!(t.next_timeout(), None);
    }

    #[test]
    fn a_stale_nonce_is_taken_up_and_the_request_sent_again() {
        let now = Instant::now();
        let (mut t, key) = allocated(now);
        let later = now + Duration::from_secs(540);
        assert_eq!(t.handle_timeout(later), None);
        let refresh = t.poll_transmit().expect("a Refresh");
        assert_eq!(Message::parse(&refresh).unwrap().kind, REFRESH);
        let stale = response(
            &refresh,
            REFRESH | ERROR,
            &[(ERROR_CODE, error(438)), (NONCE, b"fresh".to_vec())],
            Some(&key),
        );
        assert_eq!(t.on_datagram(&stale, later), None);
        let again = t.poll_transmit().expect("the Refresh again");
        let m = Message::parse(&again).unwrap();
        assert_eq!(m.attribute(NONCE), Some(&b"fresh"[..]));
        assert!(m.integrity_ok(&key));
    }

    #[test]
    fn an_unanswered_allocation_is_retransmitted_then_given_up() {
        let now = Instant::now();
        let mut t = Turn::new(server(), now);
        let mut sent = 0;
        let mut at = now;
        let mut failed = None;
        for _ in 0..200 {
            while t.poll_transmit().is_some() {
                sent += 1;
            }
            let Some(next) = t.next_timeout() else {
                break;
            };
            at = next;
            if let Some(e) = t.handle_timeout(at) {
                failed = Some(e);
            }
        }
        assert_eq!(sent, MAX_TRANSMISSIONS as usize);
        assert_eq!(
            failed,
            Some(TurnEvent::Failed("the TURN server stopped answering"))
        );
        // 500 ms, then doubling: 0.5 + 1 + 2 + 4 + 8 s.
        assert_eq!(at - now, Duration::from_millis(15_500));
    }

    #[test]
    fn garbage_and_strays_are_ignored() {
        let now = Instant::now();
        let (mut t, _) = allocated(now);
        for bad in [
            &b""[..],
            &[0u8; 19],
            &[0xffu8; 64],
            &[0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42],
        ] {
            assert_eq!(t.on_datagram(bad, now), None);
        }
        // A well-formed success to a transaction we never started.
        let stray = response(&[0u8; 20], ALLOCATE | SUCCESS, &[], None);
        assert_eq!(t.on_datagram(&stray, now), None);
    }
}
