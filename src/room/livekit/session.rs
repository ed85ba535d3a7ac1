//! One call's LiveKit session: the task that owns the signal WebSocket, the publisher and
//! subscriber peer connections (str0m, sans-IO) and their UDP sockets.
//!
//! It follows LiveKit's two-peer-connection model (protocol 16): we offer the publisher PC
//! (ICE controlling; the server is controlled there) with one sendonly Opus m-line bound to the
//! track announced by `AddTrack`, plus the `_reliable` and `_lossy` data channels without which
//! the server never completes it; the server offers the subscriber PC (it is controlling there)
//! and we only answer. Candidates travel as `Trickle` messages tagged with their target PC.
//!
//! Per 20 ms, caller → room: a PCM frame from the call (8 or 16 kHz, the caller's rate) →
//! Opus → the publisher's writer.
//! Room → caller: the subscribed tracks' packets go to [`RoomMix`] (module `heard`), which
//! every 20 ms decodes the audible few and mixes them; the mix goes to the call. A session
//! is also the node's *listener* of a shared room (module `share`): it then publishes
//! nothing, subscribes to everyone but the node's calls, and mixes for each of those calls.
//! Buffers are sized when a track first appears; the steady state allocates only inside
//! str0m (its API takes and hands out owned payloads).
//!
//! A WebSocket that drops (or stops answering pings) is resumed with `reconnect=1&sid=` from a
//! helper task while media keeps flowing on the peer connections; if that fails for
//! [`RESUME_WINDOW`], the room is reported closed. A `Leave{action: RECONNECT}` (the server
//! lost our peer connections, or does not know the session we resume) makes the task join
//! again with new peer connections, at most [`MAX_REJOINS`] times per call; so does a peer
//! connection that fails, or whose media path dies while the signal connection stays up:
//! ICE down for [`ICE_FAILED_AFTER`], or nothing received for [`SILENCE_FAILS`] although
//! consent checks are answered every [`ICE_CHECK_EVERY`] on a working path.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialin_media::codec::{new_encoder, CodecConfig, CodecKind, Encoder, SampleRate};
use livekit_protocol as proto;
use prost::Message as _;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::media::{Direction, Frequency, MediaData, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::Extension;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::heard::RoomMix;
use super::share::{Member, Shared};
use super::signal::{self, SignalError, Ws};
use super::stun;
use super::turn::{Turn, TurnEvent, TurnServer};
use crate::config::IceServer;
use crate::ops::metrics::Metrics;
use crate::room::{AttributeUpdate, AudioFrame, RoomEvent};
use crate::tick::TICK;

/// Opus RTP clock: always 48 kHz whatever the coded bandwidth (RFC 7587 §4.1).
const OPUS_RTP_STEP: u64 = 960;
/// Keys kept while the reliable data channel is not open yet; more are dropped.
const EARLY_DTMF: usize = 16;
/// Frames louder than this (dBov) are flagged as voice in the audio-level extension: speech
/// sits around -20 to -35 dBov, a quiet phone line's noise below -55.
const VOICE_DBOV: i8 = -50;
/// STUN Binding rounds per pair of peer connections, and the time between them.
const STUN_ROUNDS: u32 = 3;
const STUN_RETRY: Duration = Duration::from_millis(500);
/// How long resolving the STUN servers' names may delay a join.
const STUN_RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
/// STUN servers asked per call, at most.
const MAX_STUN_SERVERS: usize = 4;
/// How long a dropped signal connection may take to resume before the room counts as lost.
/// Within LiveKit's default 20 s departure timeout, short enough that a caller is not left in
/// a silent call.
pub(crate) const RESUME_WINDOW: Duration = Duration::from_secs(10);
/// How long a peer connection's ICE may stay down (its checks unanswered: the media path
/// is gone while the signal connection may be fine) before the call joins again with new
/// peer connections, as LiveKit's SDKs do when a connection fails. The ICE agent itself
/// has already waited out its consent timeout by then.
const ICE_FAILED_AFTER: Duration = Duration::from_secs(2);
/// How long a connected peer connection may receive nothing at all (not even the answers to
/// its consent checks) before its media path counts as failed.
const SILENCE_FAILS: Duration = Duration::from_secs(5);
/// Datagrams read from one socket per wake-up, at most: a tick's worth is a few.
const READ_BATCH: usize = 64;
/// How long a new peer connection may take to connect (ICE and DTLS) before the media path
/// counts as impossible: nothing reaches LiveKit's media port, directly or through a relay.
const PC_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A wake-up this late means the task was starved, not that the network went quiet.
const STARVED: Duration = Duration::from_millis(500);
/// The ICE agent's check interval on a working pair (its largest retransmission timeout),
/// and the unanswered checks after which it gives a pair up.
const ICE_CHECK_EVERY: Duration = Duration::from_millis(1500);
const ICE_MAX_RETRANSMITS: usize = 6;
/// Full reconnects (`Leave{action: RECONNECT}`, a failed peer connection) one call may make;
/// beyond, the room is lost.
const MAX_REJOINS: u32 = 3;
/// Time between resume attempts, and the limit on each.
const RESUME_RETRY: Duration = Duration::from_millis(500);
const RESUME_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the WebSocket may still be read after a send on it failed, for the server's
/// last messages (its `Leave` comes just before it closes).
const SEND_FAILURE_GRACE: Duration = Duration::from_secs(1);
/// The participant attribute LiveKit's SIP conventions keep the call's state in, and its
/// value once the call has ended.
pub(crate) const CALL_STATUS: &str = "sip.callStatus";
const CALL_STATUS_HANGUP: &str = "hangup";
/// Used until the `JoinResponse` says otherwise (livekit-server's defaults: 5 s / 15 s).
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(15);

/// Where to resume a dropped signal connection.
pub(crate) struct Target {
    pub tls: tokio_tungstenite::Connector,
    pub url: String,
    pub token: String,
    /// Whether the server subscribes the participant to the room's tracks by itself.
    pub auto_subscribe: bool,
}

/// What a session is for.
pub(crate) enum Role {
    /// One call's participant: publishes the caller's track. With `voice`, the call's room
    /// is shared (module `share`): the caller's frames also go there as PCM, and the session
    /// subscribes to nothing.
    Caller {
        voice: Option<mpsc::Sender<AudioFrame>>,
    },
    /// A node's hidden listener of one room (module `share`): publishes nothing, subscribes
    /// to the tracks of everyone but the node's calls, and mixes for those calls.
    Listener(Box<Shared>),
}

/// The session's side of the [`crate::room::RoomHandle`] channels.
pub(crate) struct SessionIo {
    pub to_room: mpsc::Receiver<AudioFrame>,
    pub from_room: mpsc::Sender<AudioFrame>,
    pub events: mpsc::Sender<RoomEvent>,
    pub dtmf: mpsc::Receiver<char>,
    /// The call's microphone muted (true) or live again (false).
    pub mute: mpsc::Receiver<bool>,
    /// Attributes the call sets on its participant (`sip.handRaised`).
    pub attributes: mpsc::Receiver<AttributeUpdate>,
    /// Closed when the call drops its handle.
    pub leave: oneshot::Receiver<()>,
}

/// One peer connection and its socket.
struct Pc {
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    timeout: Instant,
    connected: bool,
    /// When the socket was bound: the connection must be up within [`PC_CONNECT_TIMEOUT`].
    born: Instant,
    /// Since when ICE has been down (checking or disconnected) after having connected.
    ice_down_since: Option<Instant>,
    /// When a datagram last came in on this socket (or the task was last starved: time it
    /// did not run does not count as silence).
    last_rx: Instant,
    /// The STUN Binding request in flight from this socket, if any.
    stun_id: Option<stun::TransactionId>,
    /// This socket's address as a STUN server saw it, when it differs from `addr` (NAT).
    srflx: Option<SocketAddr>,
    /// Only relayed candidates are offered (`livekit.ice_transport_policy = "relay"`).
    relay_only: bool,
    /// The TURN allocation of this socket, when a TURN server is configured.
    turn: Option<Turn>,
    /// Candidates learnt (from STUN or TURN) and not trickled to LiveKit yet.
    untold: Vec<String>,
}

impl Pc {
    /// Follows the ICE agent's state: the connection is down from the moment a connected
    /// agent loses its pair (no answers to its checks) until one works again.
    fn on_ice_state(&mut self, state: IceConnectionState, now: Instant) {
        match state {
            IceConnectionState::Connected | IceConnectionState::Completed => {
                self.ice_down_since = None;
            }
            IceConnectionState::Checking | IceConnectionState::Disconnected => {
                if self.connected && self.ice_down_since.is_none() {
                    self.ice_down_since = Some(now);
                }
            }
            IceConnectionState::New => {}
        }
    }

    /// Whether the media path is gone: ICE down for longer than [`ICE_FAILED_AFTER`], or,
    /// sooner, nothing at all received for [`SILENCE_FAILS`] on a connection whose consent
    /// checks are answered every [`ICE_CHECK_EVERY`] when it works. (str0m keeps a pair
    /// alive for 15 s after the peer's last check, so its own verdict comes late.)
    fn ice_failed(&self, now: Instant) -> bool {
        let down = self
            .ice_down_since
            .is_some_and(|at| now.saturating_duration_since(at) >= ICE_FAILED_AFTER);
        let silent = self.connected && now.saturating_duration_since(self.last_rx) >= SILENCE_FAILS;
        down || silent
    }

    async fn bind(
        ip: IpAddr,
        now: Instant,
        relay_only: bool,
        turn: Option<TurnServer>,
    ) -> std::io::Result<Pc> {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let addr = sock.local_addr()?;
        // Header extensions: the audio level (LiveKit's speaker detection) and the MID
        // (BUNDLE demultiplexing) only. Without transport-wide congestion control, neither
        // side sends or processes TWCC feedback for a fixed-rate audio stream.
        let mut config = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .clear_extension_map()
            .set_extension(1, Extension::AudioLevel)
            .set_extension(4, Extension::RtpMid);
        // Consent checks (RFC 7675) every 1.5 s, and a pair given up after 6 unanswered
        // ones (about 7.5 s), rather than str0m's 3 s and 9 (about 25 s): a caller should
        // not sit in silence that long before the call joins again.
        config.set_max_stun_rto(ICE_CHECK_EVERY);
        config.set_max_stun_retransmits(ICE_MAX_RETRANSMITS);
        let mut rtc = config.build(now);
        if !relay_only {
            let cand =
                Candidate::host(addr, "udp").map_err(|e| std::io::Error::other(e.to_string()))?;
            rtc.add_local_candidate(cand);
        }
        Ok(Pc {
            rtc,
            sock,
            addr,
            timeout: now,
            connected: false,
            born: now,
            ice_down_since: None,
            last_rx: now,
            stun_id: None,
            srflx: None,
            relay_only,
            turn: turn.map(|server| Turn::new(server, now)),
            untold: Vec::new(),
        })
    }

    /// Sends a Binding request to each STUN server of this socket's address family, unless
    /// the reflexive address is known already.
    fn send_stun(&mut self, servers: &[SocketAddr]) {
        if self.srflx.is_some() || self.relay_only {
            return;
        }
        let id: stun::TransactionId = rand::random();
        let request = stun::binding_request(&id);
        let mut sent = false;
        for server in servers
            .iter()
            .filter(|s| s.is_ipv4() == self.addr.is_ipv4())
        {
            sent |= self.sock.try_send_to(&request, *server).is_ok();
        }
        if sent {
            self.stun_id = Some(id);
        }
    }

    /// Takes `data` if it answers this socket's Binding request: a reflexive address other
    /// than the socket's own becomes a server-reflexive ICE candidate. Any other datagram
    /// (ICE checks are STUN too) is left for str0m.
    fn on_stun(&mut self, data: &[u8]) -> bool {
        let Some(id) = self.stun_id else {
            return false;
        };
        let Some(mapped) = stun::binding_response_address(data, &id) else {
            return false;
        };
        self.stun_id = None;
        if mapped != self.addr && self.srflx.is_none() {
            match Candidate::server_reflexive(mapped, self.addr, "udp") {
                Ok(c) => {
                    self.untold.push(signal::candidate_init(&c.to_sdp_string()));
                    self.rtc.add_local_candidate(c);
                    self.srflx = Some(mapped);
                }
                Err(e) => debug!(error = %e, %mapped, "unusable reflexive address"),
            }
        }
        true
    }

    /// A datagram that came in on this socket: the TURN server's, a STUN server's answer,
    /// or the peer connection's.
    fn on_datagram(&mut self, src: SocketAddr, data: &[u8], now: Instant) {
        if let Some(turn) = self.turn.as_mut().filter(|t| t.server() == src) {
            let event = turn.on_datagram(data, now);
            let relay = turn.relay();
            match event {
                Some(TurnEvent::Data { peer, data }) => {
                    if let Some(relay) = relay {
                        self.receive(peer, relay, data, now);
                    }
                }
                Some(TurnEvent::Allocated { relay }) => self.on_relay(relay),
                Some(TurnEvent::Failed(why)) => warn!(turn = %src, "TURN allocation lost: {why}"),
                None => {}
            }
            self.flush_turn();
            return;
        }
        if !self.on_stun(data) {
            self.receive(src, self.addr, data, now);
        }
    }

    /// Takes every datagram waiting on the socket (at most [`READ_BATCH`] per call).
    fn read_socket(&mut self, buf: &mut [u8], now: Instant) {
        for _ in 0..READ_BATCH {
            match self.sock.try_recv_from(buf) {
                Ok((n, src)) => {
                    self.last_rx = now;
                    if let Some(data) = buf.get(..n) {
                        self.on_datagram(src, data, now);
                    }
                }
                // Nothing more now (`WouldBlock`), or an ICMP error for an earlier send.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {}
            }
        }
    }

    /// A relayed address from the TURN server becomes a relayed ICE candidate.
    fn on_relay(&mut self, relay: SocketAddr) {
        match Candidate::relayed(relay, self.addr, "udp") {
            Ok(c) => {
                debug!(%relay, "relayed candidate from TURN");
                self.untold.push(signal::candidate_init(&c.to_sdp_string()));
                self.rtc.add_local_candidate(c);
            }
            Err(e) => debug!(error = %e, %relay, "unusable relayed address"),
        }
    }

    /// Sends the TURN client's pending requests to its server.
    fn flush_turn(&mut self) {
        if let Some(turn) = self.turn.as_mut() {
            let server = turn.server();
            while let Some(m) = turn.poll_transmit() {
                let _ = self.sock.try_send_to(&m, server);
            }
        }
    }

    /// When the TURN client wants its timer.
    fn turn_timeout(&self) -> Option<Instant> {
        self.turn.as_ref().and_then(Turn::next_timeout)
    }

    /// Runs the TURN client's timer: retransmissions, refreshes.
    fn turn_tick(&mut self, now: Instant) {
        let Some(turn) = self.turn.as_mut() else {
            return;
        };
        if turn.next_timeout().is_some_and(|at| now >= at) {
            if let Some(TurnEvent::Failed(why)) = turn.handle_timeout(now) {
                warn!(turn = %turn.server(), "TURN allocation lost: {why}");
            }
            self.flush_turn();
        }
    }

    /// Gives the TURN allocation back, so the server frees it now rather than at its
    /// lifetime's end.
    fn release_turn(&mut self) {
        if let Some(turn) = self.turn.as_mut() {
            if let Some(m) = turn.release() {
                let _ = self.sock.try_send_to(&m, turn.server());
            }
        }
    }

    fn receive(&mut self, src: SocketAddr, destination: SocketAddr, data: &[u8], now: Instant) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: src,
                destination,
                contents,
            },
        );
        if let Err(e) = self.rtc.handle_input(input) {
            debug!(error = %e, "peer connection refused a datagram");
        }
    }

    /// Sends what str0m has to send and collects its events until its next deadline.
    fn drain(&mut self, events: &mut Vec<Event>) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => match self.turn.as_mut() {
                    // From the relayed candidate: through the TURN server.
                    Some(turn) if turn.relay() == Some(t.source) => {
                        let server = turn.server();
                        if let Some(m) = turn.wrap(t.destination, &t.contents, Instant::now()) {
                            let _ = self.sock.try_send_to(m, server);
                        }
                    }
                    _ => {
                        let _ = self.sock.try_send_to(&t.contents, t.destination);
                    }
                },
                Ok(Output::Event(e)) => events.push(e),
                Err(e) => {
                    debug!(error = %e, "peer connection output");
                    self.timeout = Instant::now() + TICK;
                    return;
                }
            }
        }
    }

    /// `Trickle` payloads for this PC's candidates: the host one (unless relays only), the
    /// server-reflexive one once a STUN server told it, the relayed one once allocated.
    fn candidate_inits(&self) -> Vec<String> {
        let host = (!self.relay_only)
            .then(|| Candidate::host(self.addr, "udp").ok())
            .flatten();
        let srflx = self
            .srflx
            .and_then(|a| Candidate::server_reflexive(a, self.addr, "udp").ok());
        let relay = self
            .turn
            .as_ref()
            .and_then(Turn::relay)
            .and_then(|a| Candidate::relayed(a, self.addr, "udp").ok());
        host.into_iter()
            .chain(srflx)
            .chain(relay)
            .map(|c| signal::candidate_init(&c.to_sdp_string()))
            .collect()
    }
}

/// Frames still sent after the caller falls silent (200 ms), so that word endings and
/// short pauses go out whole.
const SILENCE_HANGOVER: u32 = 10;
/// While silent, one frame in this many still goes out (every 400 ms, as Opus DTX sends its
/// comfort-noise updates), so that the room knows the track is alive.
const SILENCE_KEEPALIVE: u32 = 20;

/// Whether a caller's frame is published: voice always; silence for a short hangover, then
/// one frame every [`SILENCE_KEEPALIVE`]. What Opus DTX with voice activity detection does,
/// decided on the frame's level (the same one sent as its RFC 6464 audio level).
#[derive(Debug, Default, Clone, Copy)]
struct SilenceGate {
    silent_frames: u32,
}

impl SilenceGate {
    fn send(&mut self, voice: bool) -> bool {
        if voice {
            self.silent_frames = 0;
            return true;
        }
        self.silent_frames = self.silent_frames.saturating_add(1);
        self.silent_frames <= SILENCE_HANGOVER
            || (self.silent_frames - SILENCE_HANGOVER) % SILENCE_KEEPALIVE == 0
    }
}

/// A frame's level for the RFC 6464 header extension: its RMS in dBov (0 loudest, -127
/// silence), and whether that is voice rather than line noise (above [`VOICE_DBOV`]).
fn audio_level(pcm: &[i16]) -> (i8, bool) {
    if pcm.is_empty() {
        return (-127, false);
    }
    let energy: f64 = pcm.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let rms = (energy / pcm.len() as f64).sqrt() / 32768.0;
    let dbov = if rms > 0.0 {
        20.0 * rms.log10()
    } else {
        -127.0
    };
    let level = dbov.clamp(-127.0, 0.0).round() as i8;
    (level, level > VOICE_DBOV)
}

/// Duration of an Opus packet in 48 kHz samples, from its TOC byte (RFC 6716 §3.1), or
/// `None` when the packet is malformed.
fn opus_duration_48k(packet: &[u8]) -> Option<u64> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame sizes in 48 kHz samples: SILK-only 10/20/40/60 ms, hybrid 10/20 ms, CELT-only
    // 2.5/5/10/20 ms.
    let frame: u64 = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config & 3)],
        12..=15 => [480, 960][usize::from(config & 1)],
        _ => [120, 240, 480, 960][usize::from(config & 3)],
    };
    let frames: u64 = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(*packet.get(1)? & 0x3f),
    };
    let total = frame * frames;
    // RFC 6716 §3.2.5: at most 120 ms in a packet.
    (frames > 0 && total <= 5760).then_some(total)
}

/// The ICE configuration sessions work with: `livekit.ice_servers` and
/// `livekit.ice_transport_policy`.
#[derive(Debug, Clone, Default)]
pub(crate) struct IceSetup {
    pub(crate) servers: Vec<IceServer>,
    pub(crate) relay_only: bool,
}

/// The servers a session uses: the STUN servers, and the first TURN server over UDP, among
/// `livekit.ice_servers` (first) and the `JoinResponse`'s ICE servers, resolved without
/// blocking, of the address family of `ip`. `turns:` and TURN over TCP are skipped.
async fn ice_servers(
    setup: &IceSetup,
    join: &proto::JoinResponse,
    identity: &str,
    ip: IpAddr,
) -> (Vec<SocketAddr>, Option<TurnServer>) {
    // (URL, TURN username, TURN credential) of every entry.
    let configured = setup.servers.iter().map(|s| {
        let user = s.username.clone().unwrap_or_default();
        let pass = s
            .credential
            .as_ref()
            .map(|c| c.expose().to_owned())
            .unwrap_or_default();
        (s.url.as_str(), user, pass)
    });
    let from_join = join.ice_servers.iter().flat_map(|s| {
        s.urls
            .iter()
            .map(|u| (u.as_str(), s.username.clone(), s.credential.clone()))
    });
    let mut stun_hosts: Vec<(String, u16)> = Vec::new();
    let mut turn_hosts: Vec<(String, u16, String, String)> = Vec::new();
    let mut skipped = 0usize;
    for (url, user, pass) in configured.chain(from_join) {
        match stun::parse_url(url) {
            stun::IceUrl::Stun { host, port } => {
                if !stun_hosts.iter().any(|(h, p)| *h == host && *p == port) {
                    stun_hosts.push((host, port));
                }
            }
            stun::IceUrl::Turn { host, port } if !user.is_empty() => {
                turn_hosts.push((host, port, user, pass));
            }
            _ => skipped += 1,
        }
    }
    if skipped > 0 {
        debug!(
            identity,
            skipped, "ICE servers not used (stuns:, turns:, TURN over TCP, or no credential)"
        );
    }
    stun_hosts.truncate(MAX_STUN_SERVERS);
    let same_family = |a: &SocketAddr| a.is_ipv4() == ip.is_ipv4();
    let lookups = async {
        let mut stun = Vec::new();
        for (host, port) in &stun_hosts {
            match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(addrs) => stun.extend(addrs.filter(same_family)),
                Err(e) => debug!(identity, %host, error = %e, "STUN server not resolved"),
            }
        }
        let mut turn = None;
        for (host, port, username, password) in &turn_hosts {
            match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(mut addrs) => {
                    if let Some(addr) = addrs.find(same_family) {
                        turn = Some(TurnServer {
                            addr,
                            username: username.clone(),
                            password: password.clone(),
                        });
                        break;
                    }
                }
                Err(e) => debug!(identity, %host, error = %e, "TURN server not resolved"),
            }
        }
        (stun, turn)
    };
    let (stun, turn) = tokio::time::timeout(STUN_RESOLVE_TIMEOUT, lookups)
        .await
        .unwrap_or_default();
    if setup.relay_only && turn.is_none() {
        warn!(
            identity,
            "livekit.ice_transport_policy is relay but no TURN server over UDP is known: \
             no media path can be set up"
        );
    }
    (stun, turn)
}

/// How the session ended.
enum End {
    /// The call left: send `Leave`.
    Left,
    /// The room ended it: tell the call.
    Room(RoomEvent),
    /// The server asked for a full reconnect (`Leave{action: RECONNECT}`): join again.
    Rejoin,
}

pub(crate) struct Session {
    /// STUN servers (from `livekit.ice_servers` and the `JoinResponse`), the next round of
    /// Binding requests, and the rounds made for the current sockets.
    stun_servers: Vec<SocketAddr>,
    /// The TURN server each new pair of sockets allocates a relay on, if any.
    turn_server: Option<TurnServer>,
    relay_only: bool,
    stun_next: Option<Instant>,
    stun_rounds: u32,
    target: Target,
    ws: Option<Ws>,
    io: SessionIo,
    publ: Pc,
    subs: Pc,
    pending: Option<SdpPendingOffer>,
    /// Publisher offers made on the current peer connection (their `id`s count up from 1).
    offers: u32,
    mic: Option<Mid>,
    mic_pt: Option<Pt>,
    reliable: Option<ChannelId>,
    /// Keys pressed before the `_reliable` channel opened, sent when it does (a caller may
    /// key right after the join, while the publisher PC still connects).
    early_dtmf: std::collections::VecDeque<char>,
    /// The sid LiveKit gave our microphone track (`TrackPublishedResponse`).
    track_sid: Option<String>,
    /// Whether the call wants its microphone muted; applied once the track has a sid.
    muted: bool,
    /// Whether the room lets us publish (our `ParticipantPermission.can_publish`).
    can_publish: bool,
    sid: String,
    identity: String,
    /// Other participants by sid → identity.
    others: HashMap<String, String>,
    ping_every: Duration,
    ping_timeout: Duration,
    next_ping: Instant,
    last_pong: Instant,
    /// Set while the WebSocket is down: when it was lost, and the pending resume attempt.
    lost_at: Option<Instant>,
    /// When a send on the WebSocket failed while it still had something to read.
    send_failed_at: Option<Instant>,
    resume: Option<oneshot::Receiver<Result<Ws, SignalError>>>,
    next_resume: Instant,
    /// Samples per 20 ms frame at the rate frames are exchanged with the call, which Opus
    /// codes from and decodes to.
    frame_len: usize,
    /// Frames dropped (track buffer overflow, full channel to the call) and mix ticks with a
    /// sending track's frame missing, counted here and in the gateway's metrics.
    metrics: Option<Arc<Metrics>>,
    frames_dropped: u64,
    frames_missing: u64,
    /// Caller frames published as the caller's own Opus packets, without transcoding.
    frames_forwarded: u64,
    /// Caller frames not sent because the caller was silent.
    frames_suppressed: u64,
    silence: SilenceGate,
    /// `None` for a listener, which publishes nothing.
    encoder: Option<Box<dyn Encoder>>,
    opus_out: Vec<u8>,
    rtp_time: u64,
    /// The subscribed tracks, their decoders and the mixer.
    room: RoomMix,
    next_mix: Instant,
    /// When the drive loop last woke, to tell a starved task from a silent network.
    last_wake: Instant,
    events: Vec<Event>,
    buf_pub: Vec<u8>,
    buf_sub: Vec<u8>,
    frames_sent: u64,
    /// Participants LiveKit reports as speaking (`SpeakersChanged`), by sid.
    speakers: std::collections::HashSet<String>,
    /// A call of a shared room: where its voice goes besides its own track.
    voice: Option<mpsc::Sender<AudioFrame>>,
    /// A listener: the calls it mixes and the tracks it wants.
    shared: Option<Box<Shared>>,
}

fn duration_s(secs: i32, default: Duration) -> Duration {
    u64::try_from(secs)
        .ok()
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
        .unwrap_or(default)
}

/// RFC 4733 §3.2 event code of a DTMF key (what LiveKit's `SipDTMF.code` carries).
fn dtmf_code(key: char) -> Option<u32> {
    match key {
        '0'..='9' => key.to_digit(10),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(12 + u32::from(key) - u32::from('A')),
        _ => None,
    }
}

async fn recv_ws(ws: &mut Option<Ws>) -> Option<Resp> {
    match ws.as_mut() {
        Some(ws) => signal::recv(ws).await,
        None => std::future::pending().await,
    }
}

async fn recv_resume(
    r: &mut Option<oneshot::Receiver<Result<Ws, SignalError>>>,
) -> Result<Ws, String> {
    match r.as_mut() {
        Some(rx) => match rx.await {
            Ok(Ok(ws)) => Ok(ws),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("resume task ended".into()),
        },
        None => std::future::pending().await,
    }
}

impl Session {
    pub(crate) async fn start(
        target: Target,
        ws: Ws,
        join: proto::JoinResponse,
        io: SessionIo,
        identity: &str,
        rate: SampleRate,
        metrics: Option<Arc<Metrics>>,
        ice: &IceSetup,
        role: Role,
    ) -> Result<Session, String> {
        // Our host candidates advertise the address the signal connection left from: the
        // one that routes to the LiveKit server.
        let ip = signal::local_ip(&ws).ok_or("the signal connection has no local address")?;
        let (stun_servers, turn_server) = ice_servers(ice, &join, identity, ip).await;
        let now = Instant::now();
        let relay_only = ice.relay_only;
        // A listener never uses its publisher connection: no relay is allocated for it.
        let publ_turn = match role {
            Role::Caller { .. } => turn_server.clone(),
            Role::Listener(_) => None,
        };
        let mut publ = Pc::bind(ip, now, relay_only, publ_turn)
            .await
            .map_err(|e| format!("publisher socket: {e}"))?;
        let mut subs = Pc::bind(ip, now, relay_only, turn_server.clone())
            .await
            .map_err(|e| format!("subscriber socket: {e}"))?;
        publ.flush_turn();
        subs.flush_turn();
        // A listener publishes nothing: no encoder (an Opus encoder's state is a few hundred
        // KiB).
        let encoder = match role {
            Role::Caller { .. } => Some(
                new_encoder(CodecKind::Opus, rate, &CodecConfig::default())
                    .map_err(|e| e.to_string())?,
            ),
            Role::Listener(_) => None,
        };
        let room = RoomMix::new(rate);
        let frame_len = room.frame_len();
        let others = join
            .other_participants
            .iter()
            .map(|p| (p.sid.clone(), p.identity.clone()))
            .collect();
        let sid = join
            .participant
            .as_ref()
            .map(|p| p.sid.clone())
            .unwrap_or_default();
        let ping_every = duration_s(join.ping_interval, DEFAULT_PING_INTERVAL);
        let (voice, shared) = match role {
            Role::Caller { voice } => (voice, None),
            Role::Listener(mut shared) => {
                for p in &join.other_participants {
                    shared.subscriptions.on_participant(p);
                }
                (None, Some(shared))
            }
        };
        Ok(Session {
            stun_next: (!stun_servers.is_empty() && !relay_only).then_some(now),
            stun_servers,
            turn_server,
            relay_only,
            stun_rounds: 0,
            metrics,
            frames_dropped: 0,
            frames_missing: 0,
            frames_forwarded: 0,
            frames_suppressed: 0,
            silence: SilenceGate::default(),
            frame_len,
            target,
            ws: Some(ws),
            io,
            publ,
            subs,
            pending: None,
            offers: 0,
            mic: None,
            mic_pt: None,
            reliable: None,
            early_dtmf: std::collections::VecDeque::with_capacity(EARLY_DTMF),
            track_sid: None,
            muted: false,
            can_publish: true,
            sid,
            identity: identity.to_owned(),
            others,
            ping_every,
            ping_timeout: duration_s(join.ping_timeout, DEFAULT_PING_TIMEOUT),
            next_ping: now + ping_every,
            last_pong: now,
            lost_at: None,
            send_failed_at: None,
            resume: None,
            next_resume: now,
            encoder,
            opus_out: vec![0u8; 1500],
            rtp_time: 0,
            room,
            next_mix: crate::tick::next_tick(now + TICK),
            last_wake: now,
            events: Vec::new(),
            buf_pub: vec![0u8; 2048],
            buf_sub: vec![0u8; 2048],
            frames_sent: 0,
            voice,
            shared,
            speakers: std::collections::HashSet::new(),
        })
    }

    /// Drives the session until the call leaves or the room ends it.
    pub(crate) async fn run(mut self, early: Vec<Resp>) {
        info!(identity = %self.identity, sid = %self.sid, others = self.others.len(), "joined the LiveKit room");
        let mut end = self.begin(early).await;
        let mut rejoins = 0;
        loop {
            let ended = match end {
                Some(e) => e,
                None => self.drive().await,
            };
            if !matches!(ended, End::Rejoin) {
                return self.finish(ended).await;
            }
            rejoins += 1;
            if rejoins > MAX_REJOINS {
                warn!(identity = %self.identity, "LiveKit keeps asking for a full reconnect; giving up");
                return self.finish(End::Room(RoomEvent::Closed)).await;
            }
            end = match self.rejoin().await {
                Ok(early) => self.begin(early).await,
                Err(e) => {
                    warn!(identity = %self.identity, error = %e, "full reconnect to LiveKit failed");
                    Some(End::Room(RoomEvent::Closed))
                }
            };
        }
    }

    /// Publishes, then handles what the server sent along with the `JoinResponse`.
    async fn begin(&mut self, early: Vec<Resp>) -> Option<End> {
        if self.shared.is_none() {
            self.publish().await;
        }
        for m in early {
            if let Some(end) = self.on_signal(m).await {
                return Some(end);
            }
        }
        self.update_subscriptions().await;
        None
    }

    /// Whether this session publishes a track (a call's; not a listener).
    fn publishes(&self) -> bool {
        self.shared.is_none()
    }

    /// A listener asks for the tracks it now wants and drops those it no longer does.
    async fn update_subscriptions(&mut self) {
        let Some(shared) = self.shared.as_mut().filter(|s| s.dirty) else {
            return;
        };
        shared.dirty = false;
        let Shared {
            members,
            subscriptions,
            ..
        } = &mut **shared;
        let (subscribe, unsubscribe) =
            subscriptions.changes(|identity| members.iter().any(|m| m.identity == identity));
        let total = subscriptions.len();
        for (track_sids, on) in [(subscribe, true), (unsubscribe, false)] {
            if !track_sids.is_empty() {
                debug!(identity = %self.identity, tracks = track_sids.len(), subscribe = on, total, "listener subscriptions");
                self.send(Req::Subscription(proto::UpdateSubscription {
                    track_sids,
                    subscribe: on,
                    participant_tracks: Vec::new(),
                }))
                .await;
            }
        }
    }

    /// A listener takes the calls waiting to be mixed, and lets go of those that left.
    fn take_members(&mut self) {
        let Some(shared) = self.shared.as_mut() else {
            return;
        };
        while let Ok(join) = shared.joins.try_recv() {
            let Some(id) = self.room.add_input() else {
                continue;
            };
            if join.accepted.send(()).is_err() {
                // The call gave up waiting.
                self.room.remove_input(id);
                continue;
            }
            debug!(identity = %self.identity, call = %join.identity, "call mixed by the room's listener");
            shared.members.push(Member {
                identity: join.identity,
                id,
                voice: join.voice,
                out: join.out,
                events: join.events,
            });
            shared.had_members = true;
            shared.dirty = true;
        }
        let room = &mut self.room;
        let before = shared.members.len();
        shared.members.retain(|m| {
            let keep = !m.gone();
            if !keep {
                room.remove_input(m.id);
            }
            keep
        });
        if shared.members.len() != before {
            shared.dirty = true;
        }
    }

    /// LiveKit's full reconnect: a new signal connection without `sid` (a new participant
    /// session with the same identity), new peer connections, the microphone published again.
    /// The call keeps its channels; others that came or went meanwhile are reported.
    async fn rejoin(&mut self) -> Result<Vec<Resp>, String> {
        info!(identity = %self.identity, "joining the LiveKit room again with new peer connections");
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
        self.publ.release_turn();
        self.subs.release_turn();
        self.publ.rtc.disconnect();
        self.subs.rtc.disconnect();
        let t = &self.target;
        let mut ws = signal::connect(
            &t.url,
            &t.token,
            None,
            t.auto_subscribe,
            super::JOIN_TIMEOUT,
            &t.tls,
        )
        .await
        .map_err(|e| e.to_string())?;
        let (join, early) = signal::await_join(&mut ws, super::JOIN_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        let ip = signal::local_ip(&ws).ok_or("the signal connection has no local address")?;
        let turn = self.turn_server.clone();
        let publ_turn = if self.publishes() { turn.clone() } else { None };
        self.publ = Pc::bind(ip, now, self.relay_only, publ_turn)
            .await
            .map_err(|e| format!("publisher socket: {e}"))?;
        self.subs = Pc::bind(ip, now, self.relay_only, turn)
            .await
            .map_err(|e| format!("subscriber socket: {e}"))?;
        self.publ.flush_turn();
        self.subs.flush_turn();
        // New sockets: their reflexive and relayed addresses are learnt afresh.
        self.stun_rounds = 0;
        self.stun_next = (!self.stun_servers.is_empty() && !self.relay_only).then_some(now);
        self.pending = None;
        self.offers = 0;
        self.mic = None;
        self.mic_pt = None;
        self.reliable = None;
        self.room.clear_tracks();
        self.speakers.clear();
        if let Some(shared) = self.shared.as_mut() {
            // A new participant session: it subscribes afresh.
            shared.subscriptions.reset();
            for p in &join.other_participants {
                shared.subscriptions.on_participant(p);
            }
            shared.dirty = true;
        }
        self.sid = join
            .participant
            .as_ref()
            .map(|p| p.sid.clone())
            .unwrap_or_default();
        let others: HashMap<String, String> = join
            .other_participants
            .iter()
            .map(|p| (p.sid.clone(), p.identity.clone()))
            .collect();
        for gone in self
            .others
            .values()
            .filter(|i| !others.values().any(|o| o == *i))
        {
            let _ = self.io.events.try_send(RoomEvent::ParticipantLeft {
                identity: gone.clone(),
            });
        }
        for came in others
            .values()
            .filter(|i| !self.others.values().any(|o| o == *i))
        {
            let _ = self.io.events.try_send(RoomEvent::ParticipantJoined {
                identity: came.clone(),
            });
        }
        self.others = others;
        self.ping_every = duration_s(join.ping_interval, DEFAULT_PING_INTERVAL);
        self.ping_timeout = duration_s(join.ping_timeout, DEFAULT_PING_TIMEOUT);
        self.next_ping = now + self.ping_every;
        self.last_pong = now;
        self.lost_at = None;
        self.resume = None;
        self.send_failed_at = None;
        self.ws = Some(ws);
        info!(identity = %self.identity, sid = %self.sid, others = self.others.len(), "joined the LiveKit room again");
        Ok(early)
    }

    async fn finish(mut self, end: End) {
        match end {
            End::Left | End::Rejoin => {
                // The call is over: say so in the participant's attributes before leaving,
                // as LiveKit's SIP service does (`sip.callStatus` = `hangup`), so that an app
                // watching the room sees why the participant went.
                let hangup = proto::UpdateParticipantMetadata {
                    attributes: [(CALL_STATUS.to_owned(), CALL_STATUS_HANGUP.to_owned())].into(),
                    ..Default::default()
                };
                let leave = proto::LeaveRequest {
                    can_reconnect: false,
                    reason: proto::DisconnectReason::ClientInitiated as i32,
                    action: proto::leave_request::Action::Disconnect as i32,
                    ..Default::default()
                };
                self.publ.release_turn();
                self.subs.release_turn();
                let publishes = self.publishes();
                if let Some(ws) = self.ws.as_mut() {
                    if matches!(end, End::Left) && publishes {
                        let _ = signal::send(ws, Req::UpdateMetadata(hangup)).await;
                    }
                    let _ = signal::send(ws, Req::Leave(leave)).await;
                    signal::close(ws).await;
                }
                info!(
                    identity = %self.identity,
                    frames_sent = self.frames_sent,
                    frames_forwarded = self.frames_forwarded,
                    frames_suppressed = self.frames_suppressed,
                    frames_dropped = self.frames_dropped,
                    frames_missing = self.frames_missing,
                    "left the LiveKit room"
                );
            }
            End::Room(ev) => {
                info!(identity = %self.identity, event = ?ev, "the LiveKit room ended the session");
                if let Some(shared) = self.shared.as_ref() {
                    // The calls this listener mixed hear nothing more from the room: they end
                    // as the room did, rather than go on silent.
                    for m in &shared.members {
                        let _ = m.events.try_send(ev.clone());
                    }
                }
                let _ = self.io.events.send(ev).await;
                if let Some(ws) = self.ws.as_mut() {
                    signal::close(ws).await;
                }
            }
        }
        self.publ.rtc.disconnect();
        self.subs.rtc.disconnect();
    }

    /// `AddTrack`, then the publisher offer (Opus sendonly + the two data channels) and our
    /// publisher candidate, as LiveKit's SDKs order them.
    async fn publish(&mut self) {
        const CID: &str = "phone-microphone";
        let add = proto::AddTrackRequest {
            cid: CID.into(),
            name: "phone".into(),
            r#type: proto::TrackType::Audio as i32,
            source: proto::TrackSource::Microphone as i32,
            ..Default::default()
        };
        self.send(Req::AddTrack(add)).await;
        let mut api = self.publ.rtc.sdp_api();
        self.mic = Some(api.add_media(
            MediaKind::Audio,
            Direction::SendOnly,
            Some("phone-stream".into()),
            Some(CID.into()),
            None,
        ));
        api.add_channel("_reliable".into());
        api.add_channel("_lossy".into());
        if let Some((offer, pending)) = api.apply() {
            self.pending = Some(pending);
            self.offers += 1;
            let sd = proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id: self.offers,
                ..Default::default()
            };
            self.send(Req::Offer(sd)).await;
        }
        self.trickle_publisher_candidates().await;
    }

    /// After a resume, what LiveKit's SDKs do: offer the publisher connection again with an
    /// ICE restart (new credentials, RFC 8445 §9), so that a media path that broke along with
    /// the signal connection is found again by new checks. The current pair carries media
    /// until a new one is chosen. (LiveKit restarts the subscriber connection itself, with
    /// the offer it sends after a resume.)
    async fn restart_publisher_ice(&mut self) {
        if self.pending.is_some() || self.mic.is_none() {
            // An offer is in flight (its answer comes on the resumed connection), or nothing
            // was published yet: `publish` makes the first offer.
            return;
        }
        let mut api = self.publ.rtc.sdp_api();
        api.ice_restart(true);
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        self.pending = Some(pending);
        self.offers += 1;
        debug!(identity = %self.identity, "publisher ICE restart after the resume");
        let sd = proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.to_sdp_string(),
            id: self.offers,
            ..Default::default()
        };
        self.send(Req::Offer(sd)).await;
        self.trickle_publisher_candidates().await;
    }

    /// Trickles every candidate of the publisher connection, after an offer.
    async fn trickle_publisher_candidates(&mut self) {
        for c in self.publ.candidate_inits() {
            self.send(Req::Trickle(proto::TrickleRequest {
                candidate_init: c,
                target: proto::SignalTarget::Publisher as i32,
                r#final: false,
            }))
            .await;
        }
    }

    /// One round of STUN Binding requests from both sockets; [`STUN_ROUNDS`] rounds
    /// [`STUN_RETRY`] apart, then the servers that did not answer are given up.
    fn stun_round(&mut self, now: Instant) {
        self.publ.send_stun(&self.stun_servers);
        self.subs.send_stun(&self.stun_servers);
        self.stun_rounds += 1;
        let done = self.publ.srflx.is_some() && self.subs.srflx.is_some();
        self.stun_next = (self.stun_rounds < STUN_ROUNDS && !done).then_some(now + STUN_RETRY);
    }

    /// Trickles the candidates just learnt (server-reflexive from STUN, relayed from TURN)
    /// to LiveKit.
    async fn tell_candidates(&mut self) {
        for target in [
            proto::SignalTarget::Publisher,
            proto::SignalTarget::Subscriber,
        ] {
            let pc = match target {
                proto::SignalTarget::Publisher => &mut self.publ,
                proto::SignalTarget::Subscriber => &mut self.subs,
            };
            if pc.untold.is_empty() {
                continue;
            }
            let learnt = std::mem::take(&mut pc.untold);
            for c in learnt {
                info!(identity = %self.identity, candidate = %c, ?target, "candidate learnt");
                self.send(Req::Trickle(proto::TrickleRequest {
                    candidate_init: c,
                    target: target as i32,
                    r#final: false,
                }))
                .await;
            }
        }
    }

    async fn send(&mut self, req: Req) {
        let Some(ws) = self.ws.as_mut() else { return };
        if !signal::send(ws, req).await {
            // The server may have closed after a `Leave` we have not read yet (a removal):
            // give the reading side a moment to deliver it before resuming.
            self.send_failed_at.get_or_insert_with(Instant::now);
        }
    }

    fn signal_lost(&mut self, now: Instant) {
        self.send_failed_at = None;
        if self.ws.take().is_some() || self.lost_at.is_none() {
            warn!(identity = %self.identity, "LiveKit signal connection lost; resuming");
            self.lost_at = Some(now);
            self.next_resume = now;
        }
    }

    fn start_resume(&mut self, now: Instant) {
        let (tx, rx) = oneshot::channel();
        let (url, token, sid, tls, auto_subscribe) = (
            self.target.url.clone(),
            self.target.token.clone(),
            self.sid.clone(),
            self.target.tls.clone(),
            self.target.auto_subscribe,
        );
        tokio::spawn(async move {
            let r = signal::connect(
                &url,
                &token,
                Some(&sid),
                auto_subscribe,
                RESUME_CONNECT_TIMEOUT,
                &tls,
            )
            .await;
            let _ = tx.send(r);
        });
        self.resume = Some(rx);
        self.next_resume = now + RESUME_RETRY;
    }

    async fn drive(&mut self) -> End {
        loop {
            let now = Instant::now();
            if let Some(failed) = self.send_failed_at {
                if now.duration_since(failed) >= SEND_FAILURE_GRACE {
                    self.signal_lost(now);
                }
            }
            if let Some(lost) = self.lost_at {
                if now.duration_since(lost) >= RESUME_WINDOW {
                    warn!(identity = %self.identity, "LiveKit signal connection not resumed in time");
                    return End::Room(RoomEvent::Closed);
                }
                if self.resume.is_none() && now >= self.next_resume {
                    self.start_resume(now);
                }
            }
            // str0m's timers (ICE checks and keep-alives, DTLS and SCTP retransmissions,
            // RTCP) are served at the next mix tick when they fall before it: none of them
            // needs better than 20 ms, and one wake-up per tick instead of several is most
            // of what a bridged call costs beyond its codecs.
            let rtc = self.publ.timeout.min(self.subs.timeout);
            let rtc = if rtc < self.next_mix && self.next_mix.duration_since(rtc) <= TICK {
                self.next_mix
            } else {
                rtc
            };
            let mut deadline = rtc.min(self.next_mix).min(self.next_ping);
            if let Some(at) = self.stun_next {
                deadline = deadline.min(at);
            }
            for at in [self.publ.turn_timeout(), self.subs.turn_timeout()]
                .into_iter()
                .flatten()
            {
                deadline = deadline.min(at);
            }
            if self.lost_at.is_some() && self.resume.is_none() {
                deadline = deadline.min(self.next_resume);
            }
            if let Some(failed) = self.send_failed_at {
                deadline = deadline.min(failed + SEND_FAILURE_GRACE);
            }
            tokio::select! {
                m = recv_ws(&mut self.ws) => match m {
                    Some(m) => {
                        if let Some(end) = self.on_signal(m).await {
                            return end;
                        }
                    }
                    None => self.signal_lost(Instant::now()),
                },
                r = recv_resume(&mut self.resume) => {
                    self.resume = None;
                    match r {
                        Ok(ws) => {
                            info!(identity = %self.identity, "LiveKit signal connection resumed");
                            self.ws = Some(ws);
                            self.lost_at = None;
                            self.send_failed_at = None;
                            self.last_pong = Instant::now();
                            self.restart_publisher_ice().await;
                        }
                        Err(e) => debug!(identity = %self.identity, error = %e, "resume attempt failed"),
                    }
                }
                d = self.io.dtmf.recv() => if let Some(key) = d { self.send_dtmf(key) },
                m = self.io.mute.recv() => if let Some(muted) = m { self.set_muted(muted).await },
                a = self.io.attributes.recv() => if let Some(update) = a { self.set_attribute(update).await },
                _ = &mut self.io.leave => return End::Left,
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            // The sockets are read when the task wakes (at the latest at the next mix tick),
            // not each on its own wake-up: a packet waits at most one tick (the jitter buffer
            // absorbs it), and a call wakes 50 times a second instead of about 150.
            self.publ.read_socket(&mut self.buf_pub, now);
            self.subs.read_socket(&mut self.buf_sub, now);
            let slept = now.saturating_duration_since(self.last_wake);
            if slept >= STARVED {
                self.publ.last_rx += slept;
                self.subs.last_rx += slept;
            }
            self.last_wake = now;
            if self.stun_next.is_some_and(|at| now >= at) {
                self.stun_round(now);
            }
            self.publ.turn_tick(now);
            self.subs.turn_tick(now);
            self.tell_candidates().await;
            if now >= self.publ.timeout {
                let _ = self.publ.rtc.handle_input(Input::Timeout(now));
            }
            if now >= self.subs.timeout {
                let _ = self.subs.rtc.handle_input(Input::Timeout(now));
            }
            if now >= self.next_ping {
                self.next_ping = now + self.ping_every;
                if self.ws.is_some() {
                    if now.duration_since(self.last_pong) > self.ping_timeout {
                        self.signal_lost(now);
                    } else {
                        let ts = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
                            .unwrap_or(0);
                        self.send(Req::PingReq(proto::Ping {
                            timestamp: ts,
                            rtt: 0,
                        }))
                        .await;
                    }
                }
            }
            if now >= self.next_mix {
                // The caller's frame is taken here, once per tick, rather than on arrival:
                // the call task's sends then never wake this task.
                if self.io.to_room.is_closed() && self.io.to_room.is_empty() {
                    return End::Left;
                }
                let (frame, surplus) = crate::room::next_frame(&mut self.io.to_room);
                if let Some(frame) = frame {
                    // Muted: nothing is sent (the room sees the muted flag, not silence).
                    if !self.muted {
                        self.send_audio(&frame, now);
                        if let Some(voice) = self.voice.as_ref() {
                            // The node's other callers in the room hear it through the
                            // room's listener; a full channel is the listener's loss.
                            let _ = voice.try_send(frame);
                        }
                    }
                }
                if surplus > 0 {
                    self.count_lost(surplus, 0);
                }
                self.mix(now);
                if self.shared.as_ref().is_some_and(|s| s.finished()) {
                    if let Some(shared) = self.shared.as_mut() {
                        shared.close();
                    }
                    info!(identity = %self.identity, "the room's listener has no call left");
                    return End::Left;
                }
                self.update_subscriptions().await;
                self.next_mix += TICK;
                if self.next_mix < now {
                    // Woken late (a loaded machine): skip ahead rather than burst.
                    self.next_mix = crate::tick::next_tick(now + TICK);
                }
            }
            self.poll_publisher();
            self.poll_subscriber();
            let publishes = self.publishes();
            let never = [(&self.publ, publishes), (&self.subs, true)]
                .iter()
                .any(|(pc, used)| {
                    *used
                        && !pc.connected
                        && now.saturating_duration_since(pc.born) >= PC_CONNECT_TIMEOUT
                });
            if never {
                warn!(
                    identity = %self.identity,
                    "no media path to LiveKit: a peer connection did not connect in time \
                     (UDP to LiveKit's media port blocked, or no usable TURN relay)"
                );
                return End::Room(RoomEvent::Closed);
            }
            let failed = (publishes && !self.publ.rtc.is_alive()) || !self.subs.rtc.is_alive();
            if failed || (publishes && self.publ.ice_failed(now)) || self.subs.ice_failed(now) {
                // What LiveKit's SDKs do when a peer connection fails: join again with new
                // ones (bounded by MAX_REJOINS; a join that fails ends the call with a prompt).
                warn!(identity = %self.identity, "a LiveKit peer connection failed; joining again");
                return End::Rejoin;
            }
        }
    }

    async fn on_signal(&mut self, m: Resp) -> Option<End> {
        match m {
            Resp::Answer(sd) => {
                let answer = SdpAnswer::from_sdp_string(&sd.sdp);
                match (self.pending.take(), answer) {
                    (Some(p), Ok(a)) => {
                        if let Err(e) = self.publ.rtc.sdp_api().accept_answer(p, a) {
                            warn!(error = %e, "publisher answer refused");
                        }
                    }
                    (_, Err(e)) => warn!(error = %e, "publisher answer unreadable"),
                    (None, Ok(_)) => debug!("publisher answer without an offer"),
                }
            }
            Resp::Offer(sd) => match SdpOffer::from_sdp_string(&sd.sdp) {
                Ok(offer) => match self.subs.rtc.sdp_api().accept_offer(offer) {
                    Ok(answer) => {
                        let reply = proto::SessionDescription {
                            r#type: "answer".into(),
                            sdp: answer.to_sdp_string(),
                            id: sd.id,
                            ..Default::default()
                        };
                        self.send(Req::Answer(reply)).await;
                        for c in self.subs.candidate_inits() {
                            let t = proto::TrickleRequest {
                                candidate_init: c,
                                target: proto::SignalTarget::Subscriber as i32,
                                r#final: false,
                            };
                            self.send(Req::Trickle(t)).await;
                        }
                    }
                    Err(e) => warn!(error = %e, "subscriber offer refused"),
                },
                Err(e) => warn!(error = %e, "subscriber offer unreadable"),
            },
            Resp::Trickle(t) => {
                if let Some(c) = signal::candidate_from_init(&t.candidate_init) {
                    if t.target == proto::SignalTarget::Publisher as i32 {
                        self.publ.rtc.add_remote_candidate(c);
                    } else {
                        self.subs.rtc.add_remote_candidate(c);
                    }
                }
            }
            Resp::Update(u) => self.on_participants(&u.participants),
            Resp::Leave(l) => {
                debug!(
                    reason = l.reason,
                    action = l.action,
                    "Leave from the server"
                );
                if l.reason == proto::DisconnectReason::ParticipantRemoved as i32 {
                    return Some(End::Room(RoomEvent::Removed));
                }
                if l.action == proto::leave_request::Action::Reconnect as i32 {
                    return Some(End::Rejoin);
                }
                // Room deleted or closed, server shutdown.
                return Some(End::Room(RoomEvent::Closed));
            }
            Resp::TrackPublished(t) => {
                if let Some(track) = t.track {
                    self.track_sid = Some(track.sid);
                    if self.muted {
                        self.send_mute().await;
                    }
                }
            }
            Resp::Mute(m) if self.track_sid.as_deref() == Some(m.sid.as_str()) => {
                // A room admin muted (or unmuted) our track (RoomService.MutePublishedTrack):
                // follow it, and let the call tell the caller.
                info!(identity = %self.identity, muted = m.muted, "track mute changed by the room");
                self.muted = m.muted;
                let _ = self
                    .io
                    .events
                    .try_send(RoomEvent::MutedByRoom { muted: m.muted });
            }
            Resp::SpeakersChanged(sc) => self.on_speakers(&sc.speakers),
            Resp::PongResp(_) | Resp::Pong(_) => self.last_pong = Instant::now(),
            Resp::Reconnect(_) => debug!("signal resume accepted"),
            // LiveKit refreshes the access token before it expires; a resume must present
            // the fresh one, or a call longer than the token's lifetime could not resume.
            Resp::RefreshToken(token) if !token.is_empty() => self.target.token = token,
            Resp::Join(j) => {
                // Only on a fresh join, which we never make after the first.
                debug!(sid = ?j.participant.map(|p| p.sid), "unexpected JoinResponse");
            }
            other => debug!(message = ?std::mem::discriminant(&other), "signal message ignored"),
        }
        None
    }

    fn on_participants(&mut self, participants: &[proto::ParticipantInfo]) {
        use proto::participant_info::State;
        if let Some(shared) = self.shared.as_mut() {
            for p in participants.iter().filter(|p| p.sid != self.sid) {
                shared.subscriptions.on_participant(p);
            }
            shared.dirty = true;
        }
        for p in participants {
            if p.sid == self.sid || p.identity == self.identity {
                // Our own entry: the room may have changed what we may do.
                let can_publish = p.permission.as_ref().map_or(true, |perm| perm.can_publish);
                if can_publish != self.can_publish {
                    self.can_publish = can_publish;
                    let _ = self.io.events.try_send(RoomEvent::CanPublish(can_publish));
                }
                continue;
            }
            if p.state == State::Disconnected as i32 {
                if self.others.remove(&p.sid).is_some() {
                    let _ = self.io.events.try_send(RoomEvent::ParticipantLeft {
                        identity: p.identity.clone(),
                    });
                }
            } else if !self.others.contains_key(&p.sid) {
                self.others.insert(p.sid.clone(), p.identity.clone());
                let _ = self.io.events.try_send(RoomEvent::ParticipantJoined {
                    identity: p.identity.clone(),
                });
            }
        }
    }

    fn send_audio(&mut self, frame: &AudioFrame, now: Instant) {
        let (Some(mid), true) = (self.mic, self.publ.connected) else {
            return;
        };
        let pcm = frame.samples();
        if pcm.len() != self.frame_len {
            debug!(len = pcm.len(), "caller frame of the wrong size");
            return;
        }
        // RFC 6464 audio level: what LiveKit's speaker detection reads (it does not decode
        // Opus), so that a talking caller shows as speaking in the room's apps.
        let (level, voice) = audio_level(pcm);
        if !self.silence.send(voice) {
            // A silent caller sends nothing, as Opus DTX would: no encode, no packet, no
            // decode at LiveKit's other subscribers. The RTP clock keeps running.
            self.rtp_time = self.rtp_time.wrapping_add(OPUS_RTP_STEP);
            self.frames_suppressed += 1;
            return;
        }
        // An Opus caller's 20 ms packet goes to the room as it came (no transcoding); any
        // other frame, or a packet of another duration, is encoded from its PCM.
        let forwarded = frame
            .opus()
            .filter(|p| opus_duration_48k(p) == Some(OPUS_RTP_STEP))
            .and_then(|p| {
                let slot = self.opus_out.get_mut(..p.len())?;
                slot.copy_from_slice(p);
                Some(p.len())
            });
        let n = match forwarded {
            Some(n) => {
                self.frames_forwarded += 1;
                n
            }
            None => match self
                .encoder
                .as_mut()
                .map(|e| e.encode(pcm, &mut self.opus_out))
            {
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    debug!(error = %e, "Opus encode");
                    return;
                }
                None => return,
            },
        };
        self.rtp_time = self.rtp_time.wrapping_add(OPUS_RTP_STEP);
        if self.mic_pt.is_none() {
            self.mic_pt = self
                .publ
                .rtc
                .writer(mid)
                .and_then(|w| w.payload_params().next().map(|p| p.pt()));
        }
        let (Some(pt), Some(payload)) = (self.mic_pt, self.opus_out.get(..n)) else {
            return;
        };
        if let Some(w) = self.publ.rtc.writer(mid) {
            if w.audio_level(level, voice)
                .write(
                    pt,
                    now,
                    MediaTime::new(self.rtp_time, Frequency::FORTY_EIGHT_KHZ),
                    payload,
                )
                .is_ok()
            {
                self.frames_sent += 1;
            }
        }
    }

    /// Mutes or unmutes the microphone track: `MuteTrackRequest` on the signal connection
    /// (others see the muted icon), and no media while muted.
    async fn set_muted(&mut self, muted: bool) {
        if self.muted == muted {
            return;
        }
        self.muted = muted;
        info!(identity = %self.identity, muted, "microphone track mute changed");
        self.send_mute().await;
    }

    /// Sets (or with `None` removes: an empty value, as LiveKit reads it) one attribute of
    /// our participant.
    async fn set_attribute(&mut self, update: AttributeUpdate) {
        let update = proto::UpdateParticipantMetadata {
            attributes: [(
                update.key.to_owned(),
                update.value.unwrap_or_default().to_owned(),
            )]
            .into(),
            ..Default::default()
        };
        self.send(Req::UpdateMetadata(update)).await;
    }

    async fn send_mute(&mut self) {
        if let Some(sid) = self.track_sid.clone() {
            self.send(Req::Mute(proto::MuteTrackRequest {
                sid,
                muted: self.muted,
            }))
            .await;
        }
    }

    // `DataPacket.kind` is deprecated in favour of the channel it travels on, but LiveKit's
    // SIP service still sets it and older servers read it.
    #[allow(deprecated)]
    fn send_dtmf(&mut self, key: char) {
        let Some(code) = dtmf_code(key) else { return };
        let packet = proto::DataPacket {
            kind: proto::data_packet::Kind::Reliable as i32,
            participant_identity: self.identity.clone(),
            value: Some(proto::data_packet::Value::SipDtmf(proto::SipDtmf {
                code,
                digit: key.to_string(),
            })),
            ..Default::default()
        };
        let Some(id) = self.reliable else {
            if self.early_dtmf.len() < EARLY_DTMF {
                self.early_dtmf.push_back(key);
            } else {
                debug!("DTMF before the reliable data channel opened: queue full, dropped");
            }
            return;
        };
        if let Some(mut ch) = self.publ.rtc.channel(id) {
            if let Err(e) = ch.write(true, &packet.encode_to_vec()) {
                debug!(error = %e, "DTMF data packet");
            }
        }
    }

    fn poll_publisher(&mut self) {
        self.publ.drain(&mut self.events);
        let mut events = std::mem::take(&mut self.events);
        for e in events.drain(..) {
            match e {
                Event::Connected => {
                    debug!(identity = %self.identity, "publisher connected");
                    self.publ.connected = true;
                }
                Event::ChannelOpen(id, label) if label == "_reliable" => {
                    self.reliable = Some(id);
                    while let Some(key) = self.early_dtmf.pop_front() {
                        self.send_dtmf(key);
                    }
                }
                Event::IceConnectionStateChange(s) => {
                    debug!(identity = %self.identity, state = ?s, "publisher ICE");
                    self.publ.on_ice_state(s, Instant::now());
                }
                _ => {}
            }
        }
        self.events = events;
    }

    fn poll_subscriber(&mut self) {
        self.subs.drain(&mut self.events);
        let mut events = std::mem::take(&mut self.events);
        for e in events.drain(..) {
            match e {
                Event::Connected => {
                    debug!(identity = %self.identity, "subscriber connected");
                    self.subs.connected = true;
                }
                Event::MediaData(d) => self.on_media(&d),
                Event::IceConnectionStateChange(s) => {
                    debug!(identity = %self.identity, state = ?s, "subscriber ICE");
                    self.subs.on_ice_state(s, Instant::now());
                }
                _ => {}
            }
        }
        self.events = events;
    }

    fn on_media(&mut self, d: &MediaData) {
        // Opus's RTP clock is 48 kHz (RFC 7587 §4.1); the RTP timestamp is its low 32 bits.
        let rtp_time = d.time.rebase(Frequency::FORTY_EIGHT_KHZ).numer() as u32;
        let new = self.room.push_packet(
            d.mid,
            d.seq_range.end().as_u16(),
            rtp_time,
            &d.data,
            d.network_time,
        );
        if new && !self.speakers.is_empty() {
            self.mark_speakers();
        }
    }

    /// LiveKit's speaker updates: who is speaking now, by participant sid.
    fn on_speakers(&mut self, changed: &[proto::SpeakerInfo]) {
        for sp in changed {
            if sp.active {
                self.speakers.insert(sp.sid.clone());
            } else {
                self.speakers.remove(&sp.sid);
            }
        }
        self.mark_speakers();
    }

    /// Tells the room's tracks which of them LiveKit hears speaking: a track's participant
    /// is the first part of its m-line's msid stream id (`participant_sid|track_sid`, as
    /// LiveKit writes it).
    fn mark_speakers(&mut self) {
        let (rtc, speakers) = (&self.subs.rtc, &self.speakers);
        let marked = self.room.mark_speakers(|mid| {
            rtc.media(mid)
                .and_then(|m| m.stream_id().split('|').next())
                .is_some_and(|sid| speakers.contains(sid))
        });
        debug!(identity = %self.identity, speakers = speakers.len(), tracks_speaking = marked, "LiveKit speakers");
    }

    /// One tick of what the session hears: the room's audible tracks decoded and mixed, for
    /// the call (a lone call) or for each call of the room (a listener).
    fn mix(&mut self, now: Instant) {
        self.take_members();
        if !self.room.has_tracks() && self.shared.is_none() {
            return;
        }
        if let Some(shared) = self.shared.as_mut() {
            // The node's calls in this room: each one's voice is a mixer input, and each
            // hears the mix of everyone but itself.
            let mut dropped = 0;
            for m in &mut shared.members {
                let (frame, surplus) = crate::room::next_frame(&mut m.voice);
                dropped += surplus;
                if let Some(frame) = frame {
                    self.room.push_input(m.id, frame.samples());
                }
            }
            let lost = self.room.mix(now);
            for m in &shared.members {
                if let Some(out) = self.room.output_for(m.id) {
                    if m.out.try_send(AudioFrame::from_samples(out)).is_err() {
                        dropped += 1;
                    }
                }
            }
            self.count_lost(lost.dropped + dropped, lost.missing);
            return;
        }
        let mut lost = self.room.mix(now);
        if let Some(out) = self.room.everyone() {
            if self
                .io
                .from_room
                .try_send(AudioFrame::from_samples(out))
                .is_err()
            {
                lost.dropped += 1;
            }
        }
        self.count_lost(lost.dropped, lost.missing);
    }

    /// Counts frames the bridge lost, in the session's totals and the metrics.
    fn count_lost(&mut self, dropped: u64, missing: u64) {
        if dropped + missing > 0 {
            self.frames_dropped += dropped;
            self.frames_missing += missing;
            if let Some(m) = self.metrics.as_deref() {
                m.room_frames_dropped(dropped);
                m.room_frames_missing(missing);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_packet_durations_come_from_the_toc() {
        // SILK NB 20 ms, one frame; CELT FB 20 ms, one frame; SILK 10 ms, two frames (code 1).
        assert_eq!(opus_duration_48k(&[0x08, 0xaa]), Some(960));
        assert_eq!(opus_duration_48k(&[0xf8, 0xaa]), Some(960));
        assert_eq!(opus_duration_48k(&[0x01, 0xaa]), Some(960));
        // SILK 60 ms; hybrid 10 ms; CELT 2.5 ms × 8 frames (code 3, count byte 8).
        assert_eq!(opus_duration_48k(&[0x18]), Some(2880));
        assert_eq!(opus_duration_48k(&[0x60]), Some(480));
        assert_eq!(opus_duration_48k(&[0x83, 0x08]), Some(960));
        // Malformed: empty, code 3 without its count byte or with zero or too many frames.
        assert_eq!(opus_duration_48k(&[]), None);
        assert_eq!(opus_duration_48k(&[0x03]), None);
        assert_eq!(opus_duration_48k(&[0x03, 0x00]), None);
        assert_eq!(opus_duration_48k(&[0x1b, 0x3f]), None);
    }

    #[test]
    fn audio_level_is_rms_in_dbov_with_voice_above_minus_50() {
        assert_eq!(audio_level(&[0; 160]), (-127, false));
        assert_eq!(audio_level(&[]), (-127, false));
        // A full-scale square wave is 0 dBov.
        let square: Vec<i16> = (0..160)
            .map(|i| if i % 2 == 0 { 32767 } else { -32767 })
            .collect();
        assert_eq!(audio_level(&square), (0, true));
        // A sine peaking at -12 dBFS has an RMS 3 dB lower: -15 dBov.
        let amp = 32768.0 * 10f64.powf(-12.0 / 20.0);
        let sine: Vec<i16> = (0..320)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 16000.0).sin()) as i16
            })
            .collect();
        let (level, voice) = audio_level(&sine);
        assert!((-16..=-14).contains(&level), "{level}");
        assert!(voice);
        // Line noise at -60 dBov is not voice.
        let noise: Vec<i16> = (0..160)
            .map(|i| if i % 2 == 0 { 33 } else { -33 })
            .collect();
        assert_eq!(audio_level(&noise), (-60, false));
    }

    #[test]
    fn dtmf_codes_follow_rfc4733() {
        assert_eq!(dtmf_code('0'), Some(0));
        assert_eq!(dtmf_code('9'), Some(9));
        assert_eq!(dtmf_code('*'), Some(10));
        assert_eq!(dtmf_code('#'), Some(11));
        assert_eq!(dtmf_code('D'), Some(15));
        assert_eq!(dtmf_code('x'), None);
    }

    #[test]
    fn a_silent_caller_sends_a_hangover_then_one_frame_in_twenty() {
        let mut gate = SilenceGate::default();
        assert!(gate.send(true));
        let sent: Vec<bool> = (0..70).map(|_| gate.send(false)).collect();
        assert!(
            sent[..SILENCE_HANGOVER as usize].iter().all(|s| *s),
            "the hangover goes out"
        );
        let after = &sent[SILENCE_HANGOVER as usize..];
        assert_eq!(
            after.iter().filter(|s| **s).count(),
            3,
            "one in twenty: {after:?}"
        );
        assert!(gate.send(true), "voice goes out at once");
        assert!(gate.send(false), "and a new hangover starts");
    }
}
