//! The TURN server (RFC 8656, UDP) that livekit-server embeds (`turn.enabled`), announced in
//! `JoinResponse.ice_servers` with a credential, so a client that cannot reach the media port
//! directly relays through it.
//!
//! What it does, as a TURN server must: an Allocate without credentials gets `401` with the
//! realm and a nonce; an Allocate with the long-term credential (MESSAGE-INTEGRITY: HMAC-SHA1
//! keyed with MD5(username:realm:password)) gets a relay socket of its own and a success
//! response carrying `XOR-RELAYED-ADDRESS`; `CreatePermission` opens the relay to a peer
//! address; `Send` indications go out of the relay socket to permitted peers, and what
//! permitted peers send to the relay comes back as `Data` indications. `Refresh` with lifetime
//! 0 frees the allocation. Every request is authenticated; a bad MESSAGE-INTEGRITY gets `401`,
//! an unknown nonce `438`.
//!
//! Differences from livekit-server's (pion/turn) server: one credential for every participant
//! (LiveKit derives one per participant), no TURN over TLS or TCP, no ChannelBind, no
//! allocation expiry (tests are shorter than a lifetime), permissions never expire.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use tokio::net::UdpSocket;

const COOKIE: u32 = 0x2112_A442;
const ALLOCATE: u16 = 0x0003;
const REFRESH: u16 = 0x0004;
const CREATE_PERMISSION: u16 = 0x0008;
const SEND_INDICATION: u16 = 0x0016;
const DATA_INDICATION: u16 = 0x0017;
const SUCCESS: u16 = 0x0100;
const ERROR: u16 = 0x0110;

const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const ERROR_CODE: u16 = 0x0009;
const LIFETIME: u16 = 0x000D;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const DATA: u16 = 0x0013;
const REALM: u16 = 0x0014;
const NONCE: u16 = 0x0015;
const XOR_RELAYED_ADDRESS: u16 = 0x0016;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// The realm the server names in its challenges (livekit-server uses its node's domain).
pub const REALM_NAME: &str = "livekit";

/// What the TURN server has done, for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// Allocations granted.
    pub allocations: u64,
    /// Allocations freed by the client (Refresh with lifetime 0).
    pub released: u64,
    /// Requests refused for their credential or integrity.
    pub refused: u64,
    /// Datagrams relayed from clients to peers, and from peers back to clients.
    pub to_peers: u64,
    pub to_clients: u64,
}

#[derive(Default)]
struct Counters {
    allocations: AtomicU64,
    released: AtomicU64,
    refused: AtomicU64,
    to_peers: AtomicU64,
    to_clients: AtomicU64,
}

struct Allocation {
    relay: Arc<UdpSocket>,
    permissions: Arc<Mutex<HashSet<IpAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A running TURN server; dropping it stops it.
pub struct TurnServer {
    /// Where clients reach it (in `ice_server`'s URL).
    addr: SocketAddr,
    username: String,
    password: String,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TurnServer {
    /// Listens on `ip` (any port) with one credential.
    pub async fn start(ip: IpAddr, username: &str, password: &str) -> std::io::Result<TurnServer> {
        let socket = Arc::new(UdpSocket::bind(SocketAddr::new(ip, 0)).await?);
        let addr = socket.local_addr()?;
        let counters = Arc::new(Counters::default());
        let key = long_term_key(username, REALM_NAME, password);
        let server = Server {
            socket,
            username: username.to_owned(),
            key,
            nonce: format!("{:016x}", rand::random::<u64>()),
            allocations: HashMap::new(),
            counters: counters.clone(),
        };
        let task = tokio::spawn(server.run());
        Ok(TurnServer {
            addr,
            username: username.to_owned(),
            password: password.to_owned(),
            counters,
            task,
        })
    }

    /// The entry livekit-server puts in `JoinResponse.ice_servers` for it.
    pub fn ice_server(&self) -> livekit_protocol::IceServer {
        livekit_protocol::IceServer {
            urls: vec![format!("turn:{}?transport=udp", self.addr)],
            username: self.username.clone(),
            credential: self.password.clone(),
        }
    }

    pub fn stats(&self) -> TurnStats {
        let c = &self.counters;
        TurnStats {
            allocations: c.allocations.load(Ordering::Relaxed),
            released: c.released.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            to_peers: c.to_peers.load(Ordering::Relaxed),
            to_clients: c.to_clients.load(Ordering::Relaxed),
        }
    }
}

fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    Md5::digest(format!("{username}:{realm}:{password}").as_bytes()).into()
}

struct Server {
    socket: Arc<UdpSocket>,
    username: String,
    key: [u8; 16],
    nonce: String,
    allocations: HashMap<SocketAddr, Allocation>,
    counters: Arc<Counters>,
}

impl Server {
    async fn run(mut self) {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, client)) = self.socket.recv_from(&mut buf).await else {
                continue;
            };
            let Some(packet) = buf.get(..n) else { continue };
            if let Some(reply) = self.handle(packet, client).await {
                let _ = self.socket.send_to(&reply, client).await;
            }
        }
    }

    async fn handle(&mut self, packet: &[u8], client: SocketAddr) -> Option<Vec<u8>> {
        let m = Parsed::new(packet)?;
        if m.kind == SEND_INDICATION {
            let alloc = self.allocations.get(&client)?;
            let peer = xor_addr(m.attr(XOR_PEER_ADDRESS)?, &m.id)?;
            let data = m.attr(DATA)?;
            let allowed = alloc
                .permissions
                .lock()
                .map(|p| p.contains(&peer.ip()))
                .unwrap_or(false);
            if allowed && alloc.relay.send_to(data, peer).await.is_ok() {
                self.counters.to_peers.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        let method = m.kind & !ERROR;
        if m.kind & ERROR != 0 || !matches!(method, ALLOCATE | REFRESH | CREATE_PERMISSION) {
            return None;
        }
        // Every request is authenticated (RFC 8489 §9.2.4).
        let Some(at) = m.integrity_at() else {
            return Some(self.challenge(method, &m.id, 401));
        };
        let user_ok = m.attr(USERNAME) == Some(self.username.as_bytes());
        if !user_ok || !m.integrity_ok(at, &self.key) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Some(self.challenge(method, &m.id, 401));
        }
        if m.attr(NONCE) != Some(self.nonce.as_bytes()) {
            return Some(self.challenge(method, &m.id, 438));
        }
        match method {
            ALLOCATE => {
                if self.allocations.contains_key(&client) {
                    // 437 Allocation Mismatch.
                    return Some(self.error(method, &m.id, 437));
                }
                let relay = Arc::new(
                    UdpSocket::bind(SocketAddr::new(client.ip(), 0))
                        .await
                        .ok()?,
                );
                let relayed = relay.local_addr().ok()?;
                let permissions = Arc::new(Mutex::new(HashSet::new()));
                let task = tokio::spawn(relay_back(
                    relay.clone(),
                    permissions.clone(),
                    self.socket.clone(),
                    client,
                    self.counters.clone(),
                ));
                self.allocations.insert(
                    client,
                    Allocation {
                        relay,
                        permissions,
                        task,
                    },
                );
                self.counters.allocations.fetch_add(1, Ordering::Relaxed);
                let mut r = Builder::new(ALLOCATE | SUCCESS, &m.id);
                r.xor_address(XOR_RELAYED_ADDRESS, relayed);
                r.xor_address(XOR_MAPPED_ADDRESS, client);
                r.attr(LIFETIME, &600u32.to_be_bytes());
                Some(r.finish(Some(&self.key)))
            }
            REFRESH => {
                let lifetime = m
                    .attr(LIFETIME)
                    .and_then(|v| v.get(..4))
                    .and_then(|v| v.try_into().ok())
                    .map(u32::from_be_bytes)
                    .unwrap_or(600);
                if !self.allocations.contains_key(&client) {
                    return Some(self.error(method, &m.id, 437));
                }
                if lifetime == 0 {
                    if let Some(a) = self.allocations.remove(&client) {
                        a.task.abort();
                    }
                    self.counters.released.fetch_add(1, Ordering::Relaxed);
                }
                let mut r = Builder::new(REFRESH | SUCCESS, &m.id);
                r.attr(LIFETIME, &lifetime.min(3600).to_be_bytes());
                Some(r.finish(Some(&self.key)))
            }
            _ => {
                let alloc = self.allocations.get(&client);
                let Some(alloc) = alloc else {
                    return Some(self.error(method, &m.id, 437));
                };
                let peers: Vec<IpAddr> = m
                    .attrs()
                    .filter(|(k, _)| *k == XOR_PEER_ADDRESS)
                    .filter_map(|(_, v)| xor_addr(v, &m.id))
                    .map(|a| a.ip())
                    .collect();
                if peers.is_empty() {
                    return Some(self.error(method, &m.id, 400));
                }
                if let Ok(mut p) = alloc.permissions.lock() {
                    p.extend(peers);
                }
                Some(Builder::new(CREATE_PERMISSION | SUCCESS, &m.id).finish(Some(&self.key)))
            }
        }
    }

    /// `401` with the realm and nonce (or `438` with a fresh nonce): what a client
    /// authenticates its next request with.
    fn challenge(&self, method: u16, id: &[u8; 12], code: u16) -> Vec<u8> {
        let mut r = Builder::new(method | ERROR, id);
        r.error_code(code);
        r.attr(REALM, REALM_NAME.as_bytes());
        r.attr(NONCE, self.nonce.as_bytes());
        r.finish(None)
    }

    fn error(&self, method: u16, id: &[u8; 12], code: u16) -> Vec<u8> {
        let mut r = Builder::new(method | ERROR, id);
        r.error_code(code);
        r.finish(Some(&self.key))
    }
}

/// What peers send to a relay socket goes back to its client as Data indications.
async fn relay_back(
    relay: Arc<UdpSocket>,
    permissions: Arc<Mutex<HashSet<IpAddr>>>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, peer)) = relay.recv_from(&mut buf).await else {
            continue;
        };
        let allowed = permissions
            .lock()
            .map(|p| p.contains(&peer.ip()))
            .unwrap_or(false);
        if !allowed {
            continue;
        }
        let id: [u8; 12] = rand::random();
        let mut m = Builder::new(DATA_INDICATION, &id);
        m.xor_address(XOR_PEER_ADDRESS, peer);
        m.attr(DATA, buf.get(..n).unwrap_or_default());
        if socket.send_to(&m.finish(None), client).await.is_ok() {
            counters.to_clients.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A STUN message being written.
struct Builder {
    out: Vec<u8>,
    id: [u8; 12],
}

impl Builder {
    fn new(kind: u16, id: &[u8; 12]) -> Builder {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&COOKIE.to_be_bytes());
        out.extend_from_slice(id);
        Builder { out, id: *id }
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        self.out.extend_from_slice(&kind.to_be_bytes());
        self.out
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.out.extend_from_slice(value);
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
        let len = (self.out.len() - 20) as u16;
        self.out[2..4].copy_from_slice(&len.to_be_bytes());
    }

    fn error_code(&mut self, code: u16) {
        self.attr(ERROR_CODE, &[0, 0, (code / 100) as u8, (code % 100) as u8]);
    }

    fn xor_address(&mut self, kind: u16, addr: SocketAddr) {
        let mut v = vec![0u8, 0];
        v.extend_from_slice(&(addr.port() ^ (COOKIE >> 16) as u16).to_be_bytes());
        let mask: Vec<u8> = COOKIE.to_be_bytes().into_iter().chain(self.id).collect();
        match addr.ip() {
            IpAddr::V4(ip) => {
                v[1] = 1;
                v.extend(ip.octets().iter().zip(&mask).map(|(a, b)| a ^ b));
            }
            IpAddr::V6(ip) => {
                v[1] = 2;
                v.extend(ip.octets().iter().zip(&mask).map(|(a, b)| a ^ b));
            }
        }
        self.attr(kind, &v);
    }

    fn finish(mut self, key: Option<&[u8]>) -> Vec<u8> {
        if let Some(key) = key {
            let len = (self.out.len() - 20 + 24) as u16;
            self.out[2..4].copy_from_slice(&len.to_be_bytes());
            let mac = hmac_sha1(key, &self.out);
            self.out.extend_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
            self.out.extend_from_slice(&20u16.to_be_bytes());
            self.out.extend_from_slice(&mac);
        }
        self.out
    }
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A STUN message read in place.
struct Parsed<'a> {
    kind: u16,
    id: [u8; 12],
    packet: &'a [u8],
}

impl<'a> Parsed<'a> {
    fn new(packet: &'a [u8]) -> Option<Parsed<'a>> {
        if packet.len() < 20 || packet[0] & 0xc0 != 0 || packet[4..8] != COOKIE.to_be_bytes() {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        let packet = packet.get(..20 + len)?;
        Some(Parsed {
            kind: u16::from_be_bytes([packet[0], packet[1]]),
            id: packet[8..20].try_into().ok()?,
            packet,
        })
    }

    fn attrs_at(&self) -> impl Iterator<Item = (usize, u16, &'a [u8])> + 'a {
        let p = self.packet;
        let mut at = 20;
        std::iter::from_fn(move || {
            let h = p.get(at..at + 4)?;
            let kind = u16::from_be_bytes([h[0], h[1]]);
            let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let v = p.get(at + 4..at + 4 + len)?;
            let start = at;
            at += 4 + len.div_ceil(4) * 4;
            Some((start, kind, v))
        })
    }

    fn attrs(&self) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
        self.attrs_at().map(|(_, k, v)| (k, v))
    }

    fn attr(&self, kind: u16) -> Option<&'a [u8]> {
        self.attrs().find(|(k, _)| *k == kind).map(|(_, v)| v)
    }

    fn integrity_at(&self) -> Option<usize> {
        self.attrs_at()
            .find(|(_, k, _)| *k == MESSAGE_INTEGRITY)
            .map(|(at, _, _)| at)
    }

    fn integrity_ok(&self, at: usize, key: &[u8]) -> bool {
        let Some(given) = self.packet.get(at + 4..at + 24) else {
            return false;
        };
        let mut signed = self.packet[..at].to_vec();
        let len = (at - 20 + 24) as u16;
        signed[2..4].copy_from_slice(&len.to_be_bytes());
        hmac_sha1(key, &signed) == given
    }
}

fn xor_addr(v: &[u8], id: &[u8; 12]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (COOKIE >> 16) as u16;
    let mask: Vec<u8> = COOKIE.to_be_bytes().into_iter().chain(*id).collect();
    let ip = match v.get(1)? {
        1 => {
            let b: Vec<u8> = v.get(4..8)?.iter().zip(&mask).map(|(a, b)| a ^ b).collect();
            IpAddr::from(<[u8; 4]>::try_from(b).ok()?)
        }
        2 => {
            let b: Vec<u8> = v
                .get(4..20)?
                .iter()
                .zip(&mask)
                .map(|(a, b)| a ^ b)
                .collect();
            IpAddr::from(<[u8; 16]>::try_from(b).ok()?)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}
