//! The room engine: rooms, participants, their peer connections and the SFU forwarding
//! between them, owned by one task. Inputs are signalling messages from the WebSocket tasks,
//! UDP datagrams, test-hook commands and the passing of time (`now` is always passed in);
//! outputs are `SignalResponse`s pushed to each participant's WebSocket task and UDP
//! datagrams collected in [`Engine::transmits`]. The wire behaviour follows LiveKit's
//! `livekit_rtc.proto` and its server (`rtcservice`, `participant`, `room`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use livekit_protocol as proto;
use livekit_protocol::participant_info::{Kind, State};
use livekit_protocol::signal_request::Message as Req;
use livekit_protocol::signal_response::Message as Resp;
use livekit_protocol::{DataPacket, ParticipantInfo, SignalResponse, TrackInfo};
use prost::Message as _;
use rand::Rng;
use str0m::media::{MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Event, Input, Output};
use tokio::sync::{mpsc, oneshot};

use crate::peer::{self, Peer, Role, Subscriber, LOSSY_LABEL, RELIABLE_LABEL};
use crate::room_service::RoomServiceError;
use crate::synthetic::{self, SharedRecording, Signal, Synthetic};
use crate::token::JoinGrant;

/// Signalling protocol version this stand-in speaks (`ServerInfo.protocol`).
pub(crate) const PROTOCOL_VERSION: i32 = 17;
/// Version it reports (`ServerInfo.version`, `JoinResponse.server_version`).
pub(crate) const SERVER_VERSION: &str = "1.11.0";
/// Housekeeping period for ping timeouts and resume grace periods.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Speaker detection, as livekit-server's defaults (`audio` in its configuration): every
/// `update_interval` (500 ms), a participant whose packets were louder than `active_level`
/// (30, i.e. -30 dBov) for at least `min_percentile` (40 %) of them is an active speaker.
const SPEAKER_INTERVAL: Duration = Duration::from_millis(500);
const ACTIVE_LEVEL_DBOV: i8 = -30;
const MIN_PERCENTILE: u32 = 40;
/// Speaker levels are quantized to eighths, as livekit-server does.
const LEVEL_QUANTIZATION: f32 = 8.0;
/// One Opus frame (RFC 7587 §4.2).
const FRAME: Duration = Duration::from_millis(20);
/// Synthetic frames sent at once after a late wake-up (100 ms of audio).
const MAX_CATCH_UP_FRAMES: u32 = 5;
/// Data packets the server keeps per room for [`crate::TestServer::data_packets`].
const MAX_ROOM_DATA: usize = 10_000;
/// Departed participants remembered for [`Command::Departed`].
const DEPARTED_KEPT: usize = 1024;
/// `Room.empty_timeout` / `departure_timeout` defaults of livekit-server's config.
const EMPTY_TIMEOUT_S: u32 = 300;
const DEPARTURE_TIMEOUT_S: u32 = 20;

/// Tunables; the defaults are livekit-server's.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `JoinResponse.ping_interval` (livekit-server default: 5 s).
    pub ping_interval: Duration,
    /// `JoinResponse.ping_timeout`: no ping for this long closes the signal connection (15 s).
    pub ping_timeout: Duration,
    /// How long a participant whose signal connection dropped may resume with `reconnect=1`.
    pub resume_grace: Duration,
    /// ICE servers announced in `JoinResponse`/`ReconnectResponse` (empty: host candidates only).
    pub ice_servers: Vec<proto::IceServer>,
    /// Let `RoomService.MutePublishedTrack` unmute (livekit-server's
    /// `room.enable_remote_unmute`, off by default: an unmute is refused with
    /// `failed_precondition`).
    pub remote_unmute: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(15),
            resume_grace: Duration::from_secs(20),
            ice_servers: Vec::new(),
            remote_unmute: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key(u64);

/// Query parameters of `/rtc` the engine cares about.
#[derive(Debug, Clone, Default)]
pub(crate) struct JoinParams {
    pub reconnect: bool,
    pub sid: Option<String>,
    pub auto_subscribe: bool,
    pub protocol: i32,
}

/// What the engine asks a WebSocket task to do.
#[derive(Debug)]
pub(crate) enum WsOut {
    Send(Box<SignalResponse>),
    Close,
}

/// A participant as the test hooks see it.
#[derive(Debug, Clone)]
pub struct ParticipantSnapshot {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub kind: Kind,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub tracks: Vec<TrackInfo>,
    pub state: State,
    /// In-process participant made by `add_synthetic_participant`.
    pub synthetic: bool,
    /// Has a live signal WebSocket (false while waiting for a resume).
    pub signal_connected: bool,
    pub publisher_connected: bool,
    pub subscriber_connected: bool,
    /// The candidates the client trickled (`candidateInit` JSON) and for which PC.
    pub trickled: Vec<(proto::SignalTarget, String)>,
    /// The `ice-ufrag` of each publisher offer the client sent, in order: a new one is an ICE
    /// restart.
    pub publisher_ufrags: Vec<String>,
    /// Joined with a `hidden` grant: others are not told about it.
    pub hidden: bool,
}

/// Per-participant packet counters for load runs.
#[derive(Debug, Clone, Default)]
pub struct ParticipantCounters {
    pub room: String,
    pub identity: String,
    /// Audio RTP payloads received from this participant (or generated, if synthetic).
    pub packets_in: u64,
    /// Audio RTP payloads forwarded to this participant.
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub data_in: u64,
    pub data_out: u64,
    /// Data packets for this participant dropped because its channel was not open.
    pub data_dropped: u64,
    /// Datagrams to or from this participant dropped by `blackhole_media`.
    pub datagrams_blackholed: u64,
    /// The RFC 6464 audio level (dBov) and voice flag of the last packet received from this
    /// participant that carried one (what the real server's speaker detection reads).
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
}

/// Whole-engine figures for load runs.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    /// Time the engine task spent working (not waiting), since start.
    pub busy: Duration,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Peer connections alive now (publisher + subscriber).
    pub peer_connections: usize,
}

pub(crate) enum Command {
    Connect {
        conn: ConnId,
        grant: Box<JoinGrant>,
        params: JoinParams,
        out: mpsc::UnboundedSender<WsOut>,
    },
    Signal {
        conn: ConnId,
        msg: Box<Req>,
    },
    WsClosed {
        conn: ConnId,
    },
    Participants {
        room: String,
        reply: oneshot::Sender<Vec<ParticipantSnapshot>>,
    },
    AddSynthetic {
        room: String,
        identity: String,
        signal: Signal,
        recording: SharedRecording,
        reply: oneshot::Sender<Result<String, String>>,
    },
    SetSignal {
        identity: String,
        signal: Signal,
        reply: oneshot::Sender<bool>,
    },
    SyntheticData {
        identity: String,
        packet: Box<DataPacket>,
        lossy: bool,
        reply: oneshot::Sender<bool>,
    },
    CloseRoom {
        room: String,
        reply: oneshot::Sender<bool>,
    },
    RemoveParticipant {
        room: String,
        identity: String,
        reply: oneshot::Sender<bool>,
    },
    DropWebsocket {
        identity: String,
        reply: oneshot::Sender<bool>,
    },
    KillPeerConnection {
        identity: String,
        reply: oneshot::Sender<bool>,
    },
    Counters {
        reply: oneshot::Sender<Vec<ParticipantCounters>>,
    },
    DataPackets {
        room: String,
        reply: oneshot::Sender<Vec<DataPacket>>,
    },
    Blackhole {
        identity: String,
        on: bool,
        reply: oneshot::Sender<bool>,
    },
    Stats {
        reply: oneshot::Sender<EngineStats>,
    },
    Departed {
        room: String,
        reply: oneshot::Sender<Vec<ParticipantSnapshot>>,
    },
    /// `RoomService.ListParticipants`: everyone in the room (none if there is no such room).
    ListParticipants {
        room: String,
        reply: oneshot::Sender<Vec<ParticipantInfo>>,
    },
    /// `RoomService.MutePublishedTrack`: the track as it now is (`None`: no such track).
    MutePublishedTrack {
        request: proto::MuteRoomTrackRequest,
        reply: oneshot::Sender<Result<Option<TrackInfo>, RoomServiceError>>,
    },
    /// `RoomService.UpdateParticipant`.
    UpdateParticipant {
        request: Box<proto::UpdateParticipantRequest>,
        reply: oneshot::Sender<Result<ParticipantInfo, RoomServiceError>>,
    },
    Shutdown,
}

struct Room {
    sid: String,
    name: String,
    created: SystemTime,
    members: Vec<Key>,
    data: Vec<DataPacket>,
    /// The active speakers last announced, by participant sid.
    speakers: HashMap<String, f32>,
}

/// One participant's audio levels over the current speaker interval.
#[derive(Debug, Default, Clone, Copy)]
struct LevelWindow {
    packets: u32,
    loud: u32,
    /// Sum of the loud packets' linear levels (10^(dBov/20)).
    loud_linear: f64,
}

impl LevelWindow {
    fn add(&mut self, dbov: i8) {
        self.packets += 1;
        if dbov >= ACTIVE_LEVEL_DBOV {
            self.loud += 1;
            self.loud_linear += 10f64.powf(f64::from(dbov) / 20.0);
        }
    }

    /// The speaker level (0..1, quantized) when active over the window.
    fn speaking(&self) -> Option<f32> {
        if self.packets == 0 || self.loud * 100 < MIN_PERCENTILE * self.packets {
            return None;
        }
        let level = (self.loud_linear / f64::from(self.loud)) as f32;
        Some((level * LEVEL_QUANTIZATION).ceil() / LEVEL_QUANTIZATION)
    }
}

struct PublishedTrack {
    info: TrackInfo,
    /// m-line on the publisher PC, once the client's offer carried it.
    mid: Option<Mid>,
}

enum Media {
    Remote {
        publisher: Option<Box<Peer>>,
        subscriber: Box<Subscriber>,
        early_candidates: Vec<str0m::Candidate>,
    },
    Synthetic(Box<Synthetic>),
}

struct Signalling {
    conn: ConnId,
    out: mpsc::UnboundedSender<WsOut>,
}

struct Participant {
    sid: String,
    identity: String,
    name: String,
    kind: Kind,
    metadata: String,
    attributes: HashMap<String, String>,
    room: String,
    joined_at: SystemTime,
    version: u32,
    state: State,
    grant_publish: bool,
    grant_subscribe: bool,
    grant_publish_data: bool,
    grant_update_metadata: bool,
    hidden: bool,
    auto_subscribe: bool,
    client_protocol: i32,
    signal: Option<Signalling>,
    signal_lost_at: Option<Instant>,
    last_ping: Instant,
    media: Media,
    tracks: Vec<PublishedTrack>,
    /// AddTrack requests waiting for their m-line, in order.
    pending_tracks: Vec<TrackInfo>,
    /// Track sids this participant explicitly unsubscribed from / subscribed to.
    subscription_overrides: HashMap<String, bool>,
    /// Audio levels of what it published in the current speaker interval.
    levels: LevelWindow,
    counters: ParticipantCounters,
    /// `candidateInit` of every `Trickle` the client sent, with its target (test hook).
    trickled: Vec<(proto::SignalTarget, String)>,
    /// `ice-ufrag` of every publisher offer (test hook).
    publisher_ufrags: Vec<String>,
}

impl Participant {
    fn info(&self) -> ParticipantInfo {
        let joined = self
            .joined_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            state: self.state as i32,
            tracks: self.tracks.iter().map(|t| t.info.clone()).collect(),
            metadata: self.metadata.clone(),
            joined_at: joined.as_secs() as i64,
            joined_at_ms: joined.as_millis() as i64,
            name: self.name.clone(),
            version: self.version,
            permission: Some(proto::ParticipantPermission {
                can_subscribe: self.grant_subscribe,
                can_publish: self.grant_publish,
                can_publish_data: self.grant_publish_data,
                can_update_metadata: self.grant_update_metadata,
                hidden: self.hidden,
                ..Default::default()
            }),
            is_publisher: !self.tracks.is_empty(),
            kind: self.kind as i32,
            attributes: self.attributes.clone(),
            client_protocol: self.client_protocol,
            ..Default::default()
        }
    }

    fn send(&self, msg: Resp) {
        if let Some(s) = &self.signal {
            let _ = s
                .out
                .send(WsOut::Send(Box::new(SignalResponse { message: Some(msg) })));
        }
    }

    fn close_signal(&mut self) {
        if let Some(s) = self.signal.take() {
            let _ = s.out.send(WsOut::Close);
        }
    }

    fn peer_mut(&mut self, role: Role) -> Option<&mut Peer> {
        match (&mut self.media, role) {
            (Media::Remote { publisher, .. }, Role::Publisher) => publisher.as_deref_mut(),
            (Media::Remote { subscriber, .. }, Role::Subscriber) => Some(&mut subscriber.peer),
            (Media::Synthetic(_), _) => None,
        }
    }

    fn snapshot(&self) -> ParticipantSnapshot {
        let (synthetic, publisher_connected, subscriber_connected) = match &self.media {
            Media::Remote {
                publisher,
                subscriber,
                ..
            } => (
                false,
                publisher.as_ref().is_some_and(|p| p.connected),
                subscriber.peer.connected,
            ),
            Media::Synthetic(_) => (true, false, false),
        };
        ParticipantSnapshot {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            kind: self.kind,
            metadata: self.metadata.clone(),
            attributes: self.attributes.clone(),
            tracks: self.tracks.iter().map(|t| t.info.clone()).collect(),
            state: self.state,
            synthetic,
            signal_connected: self.signal.is_some(),
            publisher_connected,
            subscriber_connected,
            trickled: self.trickled.clone(),
            publisher_ufrags: self.publisher_ufrags.clone(),
            hidden: self.hidden,
        }
    }
}

pub(crate) struct Engine {
    cfg: EngineConfig,
    local_addr: SocketAddr,
    rooms: HashMap<String, Room>,
    parts: HashMap<Key, Participant>,
    conns: HashMap<ConnId, Key>,
    by_addr: HashMap<SocketAddr, (Key, Role)>,
    dirty: Vec<(Key, Role)>,
    next_key: u64,
    next_housekeeping: Instant,
    next_frame: Instant,
    next_speakers: Instant,
    /// Participants whose UDP traffic is dropped both ways (test hook).
    blackholed: HashSet<Key>,
    /// The last [`DEPARTED_KEPT`] participants to leave, as they were when they left (test
    /// hook: what attributes a participant left with).
    departed: VecDeque<(String, ParticipantSnapshot)>,
    /// Datagrams to send; the driver empties it.
    pub transmits: Vec<Transmit>,
    /// Updated by the driver.
    pub stats: EngineStats,
}

fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(prefix.len() + 12);
    s.push_str(prefix);
    for _ in 0..12 {
        let i = rng.gen_range(0..ALPHABET.len());
        s.push(char::from(ALPHABET.get(i).copied().unwrap_or(b'x')));
    }
    s
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}

fn server_info() -> proto::ServerInfo {
    proto::ServerInfo {
        edition: proto::server_info::Edition::Standard as i32,
        version: SERVER_VERSION.into(),
        protocol: PROTOCOL_VERSION,
        region: String::new(),
        node_id: "ND_dialin_test".into(),
        ..Default::default()
    }
}

fn leave(reason: proto::DisconnectReason, action: proto::leave_request::Action) -> Resp {
    Resp::Leave(proto::LeaveRequest {
        can_reconnect: action != proto::leave_request::Action::Disconnect,
        reason: reason as i32,
        action: action as i32,
        regions: None,
    })
}

impl Engine {
    pub(crate) fn new(cfg: EngineConfig, local_addr: SocketAddr, now: Instant) -> Self {
        Self {
            cfg,
            local_addr,
            rooms: HashMap::new(),
            parts: HashMap::new(),
            conns: HashMap::new(),
            by_addr: HashMap::new(),
            dirty: Vec::new(),
            next_key: 1,
            next_housekeeping: now + HOUSEKEEPING,
            next_frame: now + FRAME,
            next_speakers: now + SPEAKER_INTERVAL,
            blackholed: HashSet::new(),
            departed: VecDeque::new(),
            transmits: Vec::new(),
            stats: EngineStats::default(),
        }
    }

    /// Earliest moment the engine needs [`Engine::handle_timeout`].
    pub(crate) fn next_deadline(&self) -> Instant {
        let mut t = self
            .next_housekeeping
            .min(self.next_frame)
            .min(self.next_speakers);
        for p in self.parts.values() {
            if let Media::Remote {
                publisher,
                subscriber,
                ..
            } = &p.media
            {
                t = t.min(subscriber.peer.next_timeout);
                if let Some(pb) = publisher {
                    t = t.min(pb.next_timeout);
                }
            }
        }
        t
    }

    fn mark(&mut self, key: Key, role: Role) {
        if let Some(peer) = self.parts.get_mut(&key).and_then(|p| p.peer_mut(role)) {
            if !peer.dirty {
                peer.dirty = true;
            }
        }
        if !self.dirty.contains(&(key, role)) {
            self.dirty.push((key, role));
        }
    }

    // ---------------------------------------------------------------- inputs

    pub(crate) fn handle_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Connect {
                conn,
                grant,
                params,
                out,
            } => self.connect(conn, *grant, params, out, now),
            Command::Signal { conn, msg } => {
                if let Some(&key) = self.conns.get(&conn) {
                    self.signal(key, *msg, now);
                }
            }
            Command::WsClosed { conn } => {
                if let Some(key) = self.conns.remove(&conn) {
                    if let Some(p) = self.parts.get_mut(&key) {
                        if p.signal.as_ref().is_some_and(|s| s.conn == conn) {
                            p.signal = None;
                            p.signal_lost_at = Some(now);
                            p.state = State::Disconnected;
                            tracing::debug!(identity = %p.identity, "signal connection lost; waiting for resume");
                        }
                    }
                }
            }
            Command::Participants { room, reply } => {
                let list = self
                    .rooms
                    .get(&room)
                    .map(|r| {
                        r.members
                            .iter()
                            .filter_map(|k| self.parts.get(k))
                            .map(Participant::snapshot)
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = reply.send(list);
            }
            Command::AddSynthetic {
                room,
                identity,
                signal,
                recording,
                reply,
            } => {
                let _ = reply.send(self.add_synthetic(&room, &identity, signal, recording, now));
            }
            Command::SetSignal {
                identity,
                signal,
                reply,
            } => {
                let mut found = false;
                for p in self.parts.values_mut() {
                    if let (true, Media::Synthetic(s)) = (p.identity == identity, &mut p.media) {
                        s.set_signal(signal);
                        found = true;
                    }
                }
                let _ = reply.send(found);
            }
            Command::SyntheticData {
                identity,
                packet,
                lossy,
                reply,
            } => {
                let key = self
                    .parts
                    .iter()
                    .find(|(_, p)| p.identity == identity && matches!(p.media, Media::Synthetic(_)))
                    .map(|(k, _)| *k);
                if let Some(key) = key {
                    self.route_data(key, *packet, lossy);
                }
                let _ = reply.send(key.is_some());
            }
            Command::CloseRoom { room, reply } => {
                let found = self.rooms.contains_key(&room);
                let members = self
                    .rooms
                    .get(&room)
                    .map(|r| r.members.clone())
                    .unwrap_or_default();
                for key in members {
                    self.remove(key, proto::DisconnectReason::RoomDeleted, true);
                }
                self.rooms.remove(&room);
                let _ = reply.send(found);
            }
            Command::RemoveParticipant {
                room,
                identity,
                reply,
            } => {
                let key = self.find(&room, &identity);
                if let Some(key) = key {
                    self.remove(key, proto::DisconnectReason::ParticipantRemoved, true);
                }
                let _ = reply.send(key.is_some());
            }
            Command::DropWebsocket { identity, reply } => {
                let mut found = false;
                for (key, p) in self.parts.iter_mut() {
                    if p.identity == identity && p.signal.is_some() {
                        if let Some(s) = p.signal.take() {
                            self.conns.remove(&s.conn);
                            let _ = s.out.send(WsOut::Close);
                        }
                        p.signal_lost_at = Some(now);
                        p.state = State::Disconnected;
                        tracing::debug!(?key, "test hook dropped the signal connection");
                        found = true;
                    }
                }
                let _ = reply.send(found);
            }
            Command::KillPeerConnection { identity, reply } => {
                let keys: Vec<Key> = self
                    .parts
                    .iter()
                    .filter(|(_, p)| {
                        p.identity == identity && matches!(p.media, Media::Remote { .. })
                    })
                    .map(|(k, _)| *k)
                    .collect();
                for key in &keys {
                    self.full_reconnect(*key);
                }
                let _ = reply.send(!keys.is_empty());
            }
            Command::Counters { reply } => {
                let mut list: Vec<_> = self.parts.values().map(|p| p.counters.clone()).collect();
                list.sort_by(|a, b| (&a.room, &a.identity).cmp(&(&b.room, &b.identity)));
                let _ = reply.send(list);
            }
            Command::Blackhole {
                identity,
                on,
                reply,
            } => {
                let keys: Vec<Key> = self
                    .parts
                    .iter()
                    .filter(|(_, p)| p.identity == identity)
                    .map(|(k, _)| *k)
                    .collect();
                for k in &keys {
                    if on {
                        self.blackholed.insert(*k);
                    } else {
                        self.blackholed.remove(k);
                    }
                }
                let _ = reply.send(!keys.is_empty());
            }
            Command::Stats { reply } => {
                let mut stats = self.stats.clone();
                stats.peer_connections = self
                    .parts
                    .values()
                    .map(|p| match &p.media {
                        Media::Remote { publisher, .. } => 1 + usize::from(publisher.is_some()),
                        Media::Synthetic(_) => 0,
                    })
                    .sum();
                let _ = reply.send(stats);
            }
            Command::Shutdown => {}
            Command::DataPackets { room, reply } => {
                let _ = reply.send(
                    self.rooms
                        .get(&room)
                        .map(|r| r.data.clone())
                        .unwrap_or_default(),
                );
            }
            Command::ListParticipants { room, reply } => {
                let list = self
                    .rooms
                    .get(&room)
                    .map(|r| {
                        r.members
                            .iter()
                            .filter_map(|k| self.parts.get(k))
                            .map(Participant::info)
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = reply.send(list);
            }
            Command::MutePublishedTrack { request, reply } => {
                let _ = reply.send(self.mute_published_track(&request));
            }
            Command::UpdateParticipant { request, reply } => {
                let _ = reply.send(self.update_participant(&request));
            }
            Command::Departed { room, reply } => {
                let _ = reply.send(
                    self.departed
                        .iter()
                        .filter(|(r, _)| *r == room)
                        .map(|(_, p)| p.clone())
                        .collect(),
                );
            }
        }
    }

    /// A datagram arrived on the shared UDP socket.
    pub(crate) fn handle_udp(&mut self, source: SocketAddr, data: &[u8], now: Instant) {
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local_addr,
                contents,
            },
        );
        // STUN (RFC 7983 §7: first byte 0..=3) may come from a new address or announce an ICE
        // restart, so it is matched by ufrag; everything else by the source address it latched.
        let is_stun = data.first().is_some_and(|b| *b < 4);
        let mut target = if is_stun {
            None
        } else {
            self.by_addr.get(&source).copied()
        };
        if let Some((key, role)) = target {
            let ok = self
                .parts
                .get_mut(&key)
                .and_then(|p| p.peer_mut(role))
                .is_some_and(|pe| pe.rtc.accepts(&input));
            if !ok {
                target = None;
            }
        }
        if target.is_none() {
            'scan: for (key, p) in self.parts.iter_mut() {
                for role in [Role::Publisher, Role::Subscriber] {
                    if let Some(pe) = p.peer_mut(role) {
                        if pe.rtc.accepts(&input) {
                            target = Some((*key, role));
                            break 'scan;
                        }
                    }
                }
            }
        }
        let Some((key, role)) = target else { return };
        if self.blackholed.contains(&key) {
            if let Some(p) = self.parts.get_mut(&key) {
                p.counters.datagrams_blackholed += 1;
            }
            return;
        }
        self.by_addr.insert(source, (key, role));
        if let Some(pe) = self.parts.get_mut(&key).and_then(|p| p.peer_mut(role)) {
            if let Err(e) = pe.rtc.handle_input(input) {
                tracing::debug!("rtc input: {e}");
            }
        }
        self.mark(key, role);
    }

    /// Time passed: drive str0m timers, synthetic frames, ping timeouts and resume grace.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (key, p) in self.parts.iter_mut() {
            for role in [Role::Publisher, Role::Subscriber] {
                if let Some(pe) = p.peer_mut(role) {
                    if pe.next_timeout <= now {
                        if let Err(e) = pe.rtc.handle_input(Input::Timeout(now)) {
                            tracing::debug!("rtc timeout: {e}");
                        }
                        due.push((*key, role));
                    }
                }
            }
        }
        for (k, r) in due {
            self.mark(k, r);
        }
        // Late wake-ups (a loaded machine) are caught up, a few frames at most, as a sender's
        // audio clock would; beyond that the lost time is skipped rather than burst out.
        let mut caught_up = 0;
        while now >= self.next_frame && caught_up < MAX_CATCH_UP_FRAMES {
            self.next_frame += FRAME;
            caught_up += 1;
            self.synthetic_frames(now);
        }
        if now >= self.next_frame {
            self.next_frame = now + FRAME;
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            self.housekeeping(now);
        }
        if now >= self.next_speakers {
            self.next_speakers = now + SPEAKER_INTERVAL;
            self.speaker_updates();
        }
    }

    /// livekit-server's `audioUpdateWorker`: every [`SPEAKER_INTERVAL`], each room's active
    /// speakers whose level changed, and those no longer active (level 0, not active), go to
    /// every participant of the room as `SpeakersChanged`, loudest first.
    fn speaker_updates(&mut self) {
        for room in self.rooms.values_mut() {
            let mut now_active: HashMap<String, f32> = HashMap::new();
            for k in &room.members {
                if let Some(p) = self.parts.get_mut(k) {
                    if let Some(level) = p.levels.speaking() {
                        now_active.insert(p.sid.clone(), level);
                    }
                    p.levels = LevelWindow::default();
                }
            }
            let mut changed: Vec<proto::SpeakerInfo> = now_active
                .iter()
                .filter(|(sid, level)| room.speakers.get(*sid) != Some(*level))
                .map(|(sid, level)| proto::SpeakerInfo {
                    sid: sid.clone(),
                    level: *level,
                    active: true,
                })
                .collect();
            changed.sort_by(|a, b| b.level.total_cmp(&a.level));
            changed.extend(
                room.speakers
                    .keys()
                    .filter(|sid| !now_active.contains_key(*sid))
                    .map(|sid| proto::SpeakerInfo {
                        sid: sid.clone(),
                        level: 0.0,
                        active: false,
                    }),
            );
            room.speakers = now_active;
            if changed.is_empty() {
                continue;
            }
            for k in &room.members {
                if let Some(p) = self.parts.get(k) {
                    p.send(Resp::SpeakersChanged(proto::SpeakersChanged {
                        speakers: changed.clone(),
                    }));
                }
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (key, p) in self.parts.iter_mut() {
            if matches!(p.media, Media::Synthetic(_)) {
                continue;
            }
            if p.signal.is_some()
                && now.saturating_duration_since(p.last_ping) > self.cfg.ping_timeout
            {
                tracing::debug!(identity = %p.identity, "ping timeout: closing signal connection");
                if let Some(s) = p.signal.take() {
                    self.conns.remove(&s.conn);
                    let _ = s.out.send(WsOut::Close);
                }
                p.signal_lost_at = Some(now);
                p.state = State::Disconnected;
            }
            if let Some(t) = p.signal_lost_at {
                if now.saturating_duration_since(t) > self.cfg.resume_grace {
                    expired.push(*key);
                }
            }
        }
        for key in expired {
            self.remove(key, proto::DisconnectReason::SignalClose, false);
        }
    }

    /// Poll every peer connection that had input until it only has a timeout left, and act on
    /// the events; acting may touch other peers (forwarding), which are polled in turn.
    pub(crate) fn drain(&mut self, now: Instant) {
        let mut events = Vec::new();
        while !self.dirty.is_empty() {
            let batch = std::mem::take(&mut self.dirty);
            for (key, role) in batch {
                let Some(p) = self.parts.get_mut(&key) else {
                    continue;
                };
                let blackholed = self.blackholed.contains(&key);
                let mut dropped = 0;
                let Some(pe) = p.peer_mut(role) else { continue };
                pe.dirty = false;
                loop {
                    match pe.rtc.poll_output() {
                        Ok(Output::Timeout(t)) => {
                            pe.next_timeout = t;
                            break;
                        }
                        Ok(Output::Transmit(t)) => {
                            if blackholed {
                                dropped += 1;
                            } else {
                                self.transmits.push(t);
                            }
                        }
                        Ok(Output::Event(e)) => events.push((key, role, e)),
                        Err(e) => {
                            tracing::debug!("rtc poll: {e}");
                            pe.next_timeout = now + Duration::from_secs(1);
                            break;
                        }
                    }
                }
                p.counters.datagrams_blackholed += dropped;
            }
            for (key, role, e) in events.drain(..) {
                self.handle_event(key, role, e, now);
            }
        }
    }

    // ------------------------------------------------------------- signalling

    fn connect(
        &mut self,
        conn: ConnId,
        grant: JoinGrant,
        params: JoinParams,
        out: mpsc::UnboundedSender<WsOut>,
        now: Instant,
    ) {
        if params.reconnect {
            let key = params.sid.as_deref().and_then(|sid| {
                self.parts
                    .iter()
                    .find(|(_, p)| {
                        p.sid == sid && p.identity == grant.identity && p.room == grant.room
                    })
                    .map(|(k, _)| *k)
            });
            match key {
                Some(key) => self.resume(key, conn, out, now),
                None => {
                    // The session is gone (grace expired or never existed): tell the client to
                    // do a full reconnect, as the real server does for an unknown resume.
                    let msg = leave(
                        proto::DisconnectReason::StateMismatch,
                        proto::leave_request::Action::Reconnect,
                    );
                    let _ = out.send(WsOut::Send(Box::new(SignalResponse { message: Some(msg) })));
                    let _ = out.send(WsOut::Close);
                }
            }
            return;
        }
        if let Some(old) = self.find(&grant.room, &grant.identity) {
            self.remove(old, proto::DisconnectReason::DuplicateIdentity, true);
        }
        let subscriber = match Peer::new(self.local_addr, now) {
            Ok(p) => Subscriber::new(p),
            Err(e) => {
                tracing::warn!("cannot create subscriber PC: {e}");
                let _ = out.send(WsOut::Close);
                return;
            }
        };
        let room_name = grant.room.clone();
        let room = self.rooms.entry(room_name.clone()).or_insert_with(|| Room {
            sid: random_id("RM_"),
            name: room_name.clone(),
            created: SystemTime::now(),
            members: Vec::new(),
            data: Vec::new(),
            speakers: HashMap::new(),
        });
        let key = Key(self.next_key);
        self.next_key += 1;
        room.members.push(key);
        let p = Participant {
            sid: random_id("PA_"),
            identity: grant.identity.clone(),
            name: grant.name.clone(),
            kind: grant.kind,
            metadata: grant.metadata.clone(),
            attributes: grant.attributes.clone(),
            room: room_name.clone(),
            joined_at: SystemTime::now(),
            version: 1,
            state: State::Joining,
            grant_publish: grant.can_publish,
            grant_subscribe: grant.can_subscribe,
            grant_publish_data: grant.can_publish_data,
            grant_update_metadata: grant.can_update_own_metadata,
            hidden: grant.hidden,
            auto_subscribe: params.auto_subscribe,
            client_protocol: params.protocol,
            signal: Some(Signalling { conn, out }),
            signal_lost_at: None,
            last_ping: now,
            media: Media::Remote {
                publisher: None,
                subscriber: Box::new(subscriber),
                early_candidates: Vec::new(),
            },
            tracks: Vec::new(),
            pending_tracks: Vec::new(),
            subscription_overrides: HashMap::new(),
            levels: LevelWindow::default(),
            counters: ParticipantCounters {
                room: room_name.clone(),
                identity: grant.identity.clone(),
                ..Default::default()
            },
            trickled: Vec::new(),
            publisher_ufrags: Vec::new(),
        };
        self.parts.insert(key, p);
        self.conns.insert(conn, key);

        let join = self.join_response(key);
        if let Some(p) = self.parts.get(&key) {
            p.send(Resp::Join(join));
        }
        // Subscribe to what is already published, then offer the subscriber PC (with the data
        // channels) right away: subscriber_primary.
        self.subscribe_existing(key);
        self.offer_subscriber(key);
        self.mark(key, Role::Subscriber);
        self.broadcast_participant(key, false);
        self.broadcast_room_update(&room_name);
        tracing::debug!(identity = %grant.identity, room = %room_name, "joined");
    }

    fn join_response(&self, key: Key) -> proto::JoinResponse {
        let Some(p) = self.parts.get(&key) else {
            return Default::default();
        };
        let others = self
            .rooms
            .get(&p.room)
            .map(|r| r.members.as_slice())
            .unwrap_or_default();
        proto::JoinResponse {
            room: self.room_info(&p.room),
            participant: Some(p.info()),
            other_participants: others
                .iter()
                .filter(|k| **k != key)
                .filter_map(|k| self.parts.get(k))
                .filter(|o| !o.hidden)
                .map(Participant::info)
                .collect(),
            server_version: SERVER_VERSION.into(),
            ice_servers: self.cfg.ice_servers.clone(),
            subscriber_primary: true,
            ping_timeout: self.cfg.ping_timeout.as_secs() as i32,
            ping_interval: self.cfg.ping_interval.as_secs() as i32,
            server_info: Some(server_info()),
            enabled_publish_codecs: vec![proto::Codec {
                mime: "audio/opus".into(),
                fmtp_line: String::new(),
            }],
            fast_publish: true,
            ..Default::default()
        }
    }

    fn room_info(&self, room: &str) -> Option<proto::Room> {
        let r = self.rooms.get(room)?;
        let members: Vec<&Participant> = r
            .members
            .iter()
            .filter_map(|k| self.parts.get(k))
            .filter(|p| !p.hidden)
            .collect();
        Some(proto::Room {
            sid: r.sid.clone(),
            name: r.name.clone(),
            empty_timeout: EMPTY_TIMEOUT_S,
            departure_timeout: DEPARTURE_TIMEOUT_S,
            creation_time: unix_ms(r.created) / 1000,
            creation_time_ms: unix_ms(r.created),
            num_participants: members.len() as u32,
            num_publishers: members.iter().filter(|p| !p.tracks.is_empty()).count() as u32,
            ..Default::default()
        })
    }

    fn resume(&mut self, key: Key, conn: ConnId, out: mpsc::UnboundedSender<WsOut>, now: Instant) {
        let others: Vec<ParticipantInfo> = {
            let Some(p) = self.parts.get(&key) else {
                return;
            };
            self.rooms
                .get(&p.room)
                .map(|r| {
                    r.members
                        .iter()
                        .filter(|k| **k != key)
                        .filter_map(|k| self.parts.get(k))
                        .filter(|o| !o.hidden)
                        .map(Participant::info)
                        .collect()
                })
                .unwrap_or_default()
        };
        let Some(p) = self.parts.get_mut(&key) else {
            return;
        };
        if let Some(old) = p.signal.take() {
            self.conns.remove(&old.conn);
            let _ = old.out.send(WsOut::Close);
        }
        p.signal = Some(Signalling { conn, out });
        p.signal_lost_at = None;
        p.last_ping = now;
        p.state = if p.peer_mut(Role::Subscriber).is_some_and(|s| s.connected) {
            State::Active
        } else {
            State::Joined
        };
        self.conns.insert(conn, key);
        p.send(Resp::Reconnect(proto::ReconnectResponse {
            ice_servers: self.cfg.ice_servers.clone(),
            client_configuration: None,
            server_info: Some(server_info()),
            last_message_seq: 0,
        }));
        p.send(Resp::Update(proto::ParticipantUpdate {
            participants: others,
        }));
        if let Media::Remote { subscriber, .. } = &mut p.media {
            subscriber.request_ice_restart();
        }
        tracing::debug!(identity = %p.identity, "resumed");
        self.offer_subscriber(key);
        self.mark(key, Role::Subscriber);
    }

    fn signal(&mut self, key: Key, msg: Req, now: Instant) {
        let Some(p) = self.parts.get_mut(&key) else {
            return;
        };
        match msg {
            Req::Offer(sd) => self.publisher_offer(key, &sd, now),
            Req::Answer(sd) => {
                if let Media::Remote { subscriber, .. } = &mut p.media {
                    if let Err(e) = subscriber.accept_answer(&sd.sdp) {
                        tracing::debug!(identity = %p.identity, "subscriber answer refused: {e}");
                    }
                }
                self.mark(key, Role::Subscriber);
                self.offer_subscriber(key);
            }
            Req::Trickle(t) => {
                if p.trickled.len() < 64 {
                    let target = proto::SignalTarget::try_from(t.target)
                        .unwrap_or(proto::SignalTarget::Publisher);
                    p.trickled.push((target, t.candidate_init.clone()));
                }
                let Some(cand) = peer::parse_candidate_init(&t.candidate_init) else {
                    return;
                };
                if let Media::Remote {
                    publisher,
                    subscriber,
                    early_candidates,
                } = &mut p.media
                {
                    if t.target == proto::SignalTarget::Subscriber as i32 {
                        subscriber.peer.rtc.add_remote_candidate(cand);
                        self.mark(key, Role::Subscriber);
                    } else if let Some(pb) = publisher {
                        pb.rtc.add_remote_candidate(cand);
                        self.mark(key, Role::Publisher);
                    } else {
                        early_candidates.push(cand);
                    }
                }
            }
            Req::AddTrack(add) => {
                if !p.grant_publish {
                    tracing::debug!(identity = %p.identity, "AddTrack without canPublish ignored");
                    return;
                }
                let info = TrackInfo {
                    sid: random_id("TR_"),
                    r#type: add.r#type,
                    name: add.name.clone(),
                    muted: add.muted,
                    source: add.source,
                    mime_type: if add.r#type == proto::TrackType::Audio as i32 {
                        "audio/opus".into()
                    } else {
                        String::new()
                    },
                    disable_red: add.disable_red,
                    stream: add.stream.clone(),
                    audio_features: add.audio_features.clone(),
                    ..Default::default()
                };
                p.send(Resp::TrackPublished(proto::TrackPublishedResponse {
                    cid: add.cid.clone(),
                    track: Some(info.clone()),
                }));
                p.pending_tracks.push(info);
            }
            Req::Mute(m) => {
                let mut changed = false;
                for t in p.tracks.iter_mut().filter(|t| t.info.sid == m.sid) {
                    t.info.muted = m.muted;
                    changed = true;
                }
                if changed {
                    p.version += 1;
                    self.broadcast_participant(key, true);
                }
            }
            Req::Subscription(s) => {
                for sid in &s.track_sids {
                    p.subscription_overrides.insert(sid.clone(), s.subscribe);
                }
                for pt in &s.participant_tracks {
                    for sid in &pt.track_sids {
                        p.subscription_overrides.insert(sid.clone(), s.subscribe);
                    }
                }
                self.apply_subscriptions(key);
            }
            Req::Leave(_) => {
                self.remove(key, proto::DisconnectReason::ClientInitiated, false);
            }
            Req::Ping(ts) => {
                p.last_ping = now;
                let _ = ts;
                p.send(Resp::Pong(unix_ms(SystemTime::now())));
            }
            Req::PingReq(ping) => {
                p.last_ping = now;
                p.send(Resp::PongResp(proto::Pong {
                    last_ping_timestamp: ping.timestamp,
                    timestamp: unix_ms(SystemTime::now()),
                }));
            }
            Req::UpdateMetadata(u) => {
                if !p.grant_update_metadata {
                    if u.request_id != 0 {
                        p.send(Resp::RequestResponse(proto::RequestResponse {
                            request_id: u.request_id,
                            reason: proto::request_response::Reason::NotAllowed as i32,
                            message: "does not have permission to update own metadata".into(),
                            request: None,
                        }));
                    }
                    return;
                }
                if !u.name.is_empty() {
                    p.name = u.name.clone();
                }
                if !u.metadata.is_empty() {
                    p.metadata = u.metadata.clone();
                }
                for (k, v) in &u.attributes {
                    if v.is_empty() {
                        p.attributes.remove(k);
                    } else {
                        p.attributes.insert(k.clone(), v.clone());
                    }
                }
                p.version += 1;
                if u.request_id != 0 {
                    p.send(Resp::RequestResponse(proto::RequestResponse {
                        request_id: u.request_id,
                        reason: proto::request_response::Reason::Ok as i32,
                        message: String::new(),
                        request: None,
                    }));
                }
                self.broadcast_participant(key, true);
            }
            other => {
                tracing::debug!(identity = %p.identity, "signal request not handled: {:?}", std::mem::discriminant(&other));
            }
        }
    }

    fn publisher_offer(&mut self, key: Key, sd: &proto::SessionDescription, now: Instant) {
        let local = self.local_addr;
        let Some(p) = self.parts.get_mut(&key) else {
            return;
        };
        if let Some(ufrag) = sd
            .sdp
            .lines()
            .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        {
            p.publisher_ufrags.push(ufrag.to_owned());
        }
        let Media::Remote {
            publisher,
            early_candidates,
            ..
        } = &mut p.media
        else {
            return;
        };
        let first = publisher.is_none();
        if first {
            match Peer::new(local, now) {
                Ok(mut pe) => {
                    for c in early_candidates.drain(..) {
                        pe.rtc.add_remote_candidate(c);
                    }
                    *publisher = Some(Box::new(pe));
                }
                Err(e) => {
                    tracing::warn!("cannot create publisher PC: {e}");
                    return;
                }
            }
        }
        let Some(pe) = publisher.as_deref_mut() else {
            return;
        };
        match peer::answer_offer(pe, &sd.sdp) {
            Ok(answer) => {
                if p.state == State::Joining {
                    p.state = State::Joined;
                }
                p.send(Resp::Answer(proto::SessionDescription {
                    r#type: "answer".into(),
                    sdp: answer,
                    id: sd.id,
                    mid_to_track_id: HashMap::new(),
                }));
                if first {
                    if let Some(c) = local_candidate(local) {
                        p.send(Resp::Trickle(proto::TrickleRequest {
                            candidate_init: peer::candidate_init(&c),
                            target: proto::SignalTarget::Publisher as i32,
                            r#final: false,
                        }));
                    }
                }
            }
            Err(e) => tracing::debug!(identity = %p.identity, "publisher offer refused: {e}"),
        }
        self.mark(key, Role::Publisher);
    }

    /// Send the next subscriber offer if one is due.
    fn offer_subscriber(&mut self, key: Key) {
        let local = self.local_addr;
        let Some(p) = self.parts.get_mut(&key) else {
            return;
        };
        let Media::Remote { subscriber, .. } = &mut p.media else {
            return;
        };
        let Some((sdp, id, mids)) = subscriber.next_offer() else {
            return;
        };
        let first = !std::mem::replace(&mut subscriber.trickled, true);
        p.send(Resp::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp,
            id,
            mid_to_track_id: mids,
        }));
        if first {
            if let Some(c) = local_candidate(local) {
                p.send(Resp::Trickle(proto::TrickleRequest {
                    candidate_init: peer::candidate_init(&c),
                    target: proto::SignalTarget::Subscriber as i32,
                    r#final: false,
                }));
            }
        }
        self.mark(key, Role::Subscriber);
    }

    // ---------------------------------------------------------------- events

    fn handle_event(&mut self, key: Key, role: Role, e: Event, now: Instant) {
        match e {
            Event::Connected => {
                let Some(p) = self.parts.get_mut(&key) else {
                    return;
                };
                if let Some(pe) = p.peer_mut(role) {
                    pe.connected = true;
                }
                tracing::debug!(identity = %p.identity, ?role, "DTLS-SRTP connected");
                if matches!(p.state, State::Joining | State::Joined) {
                    // ICE/DTLS up: the participant is ACTIVE, and the room is told so.
                    p.state = State::Active;
                    p.version += 1;
                    self.broadcast_participant(key, false);
                }
            }
            Event::IceConnectionStateChange(s) => {
                tracing::trace!(?key, ?role, "ICE {s:?}");
            }
            Event::MediaAdded(m) if role == Role::Publisher && m.kind == MediaKind::Audio => {
                self.publish_track(key, m.mid);
            }
            Event::MediaData(d) if role == Role::Publisher => {
                let Some(p) = self.parts.get_mut(&key) else {
                    return;
                };
                let Some(track_sid) = p
                    .tracks
                    .iter()
                    .find(|t| t.mid == Some(d.mid))
                    .map(|t| t.info.sid.clone())
                else {
                    return;
                };
                p.counters.packets_in += 1;
                p.counters.bytes_in += d.data.len() as u64;
                if let Some(level) = d.ext_vals.audio_level {
                    p.counters.audio_level = Some(level);
                    p.counters.voice_activity = d.ext_vals.voice_activity;
                    p.levels.add(level);
                }
                self.forward(key, &track_sid, &d.data, d.time, now);
            }
            Event::ChannelOpen(id, label) => {
                if let Some(pe) = self.parts.get_mut(&key).and_then(|p| p.peer_mut(role)) {
                    pe.channels.insert(label, id);
                }
            }
            Event::ChannelData(cd) => {
                let Some(p) = self.parts.get_mut(&key) else {
                    return;
                };
                let Some(pe) = p.peer_mut(role) else { return };
                let lossy = pe
                    .channels
                    .iter()
                    .any(|(l, id)| *id == cd.id && l == LOSSY_LABEL);
                match DataPacket::decode(cd.data.as_slice()) {
                    Ok(pkt) => {
                        if p.grant_publish_data {
                            self.route_data(key, pkt, lossy);
                        }
                    }
                    Err(e) => tracing::debug!("undecodable data packet: {e}"),
                }
            }
            _ => {}
        }
    }

    /// A new audio m-line appeared on `key`'s publisher PC: bind it to the oldest pending
    /// AddTrack, announce the track and subscribe everyone else to it.
    fn publish_track(&mut self, key: Key, mid: Mid) {
        let Some(p) = self.parts.get_mut(&key) else {
            return;
        };
        if p.tracks.iter().any(|t| t.mid == Some(mid)) {
            return;
        }
        let Some(idx) = p
            .pending_tracks
            .iter()
            .position(|t| t.r#type == proto::TrackType::Audio as i32)
        else {
            tracing::debug!(identity = %p.identity, "audio m-line without AddTrack ignored");
            return;
        };
        let mut info = p.pending_tracks.remove(idx);
        info.mid = mid.to_string();
        p.tracks.push(PublishedTrack {
            info,
            mid: Some(mid),
        });
        p.version += 1;
        self.broadcast_participant(key, true);
        self.subscribe_others_to(key);
        let room = p_room(&self.parts, key);
        self.broadcast_room_update(&room);
    }

    // ------------------------------------------------------------ forwarding

    /// Forward one Opus payload of `from`'s track to every other subscriber in the room.
    fn forward(
        &mut self,
        from: Key,
        track_sid: &str,
        data: &Arc<[u8]>,
        time: MediaTime,
        now: Instant,
    ) {
        let Some(room) = self.parts.get(&from).map(|p| p.room.clone()) else {
            return;
        };
        let Some(members) = self
            .rooms
            .get_mut(&room)
            .map(|r| std::mem::take(&mut r.members))
        else {
            return;
        };
        let from_identity = self
            .parts
            .get(&from)
            .map(|p| p.identity.clone())
            .unwrap_or_default();
        for &to in &members {
            if to == from {
                continue;
            }
            let Some(p) = self.parts.get_mut(&to) else {
                continue;
            };
            match &mut p.media {
                Media::Remote { subscriber, .. } => {
                    let Some(&mid) = subscriber.track_mids.get(track_sid) else {
                        continue;
                    };
                    if !subscriber.peer.connected {
                        continue;
                    }
                    let pt = subscriber
                        .peer
                        .rtc
                        .writer(mid)
                        .and_then(|w| w.payload_params().next().map(|pp| pp.pt()));
                    let (Some(pt), Some(w)) = (pt, subscriber.peer.rtc.writer(mid)) else {
                        continue;
                    };
                    match w.write(pt, now, time, data.clone()) {
                        Ok(()) => {
                            p.counters.packets_out += 1;
                            p.counters.bytes_out += data.len() as u64;
                        }
                        Err(e) => tracing::trace!("forward write: {e}"),
                    }
                    if !subscriber.peer.dirty {
                        subscriber.peer.dirty = true;
                        self.dirty.push((to, Role::Subscriber));
                    }
                }
                Media::Synthetic(s) => {
                    if !p.grant_subscribe {
                        continue;
                    }
                    s.receive(&from_identity, data);
                    p.counters.packets_out += 1;
                    p.counters.bytes_out += data.len() as u64;
                }
            }
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.members = members;
        }
    }

    fn synthetic_frames(&mut self, now: Instant) {
        let mut frames = Vec::new();
        for (key, p) in self.parts.iter_mut() {
            let Media::Synthetic(s) = &mut p.media else {
                continue;
            };
            let Some(track) = p.tracks.first() else {
                continue;
            };
            match s.next_frame() {
                Ok(f) => {
                    p.levels.add(s.level_dbov());
                    p.counters.packets_in += 1;
                    p.counters.bytes_in += f.len() as u64;
                    frames.push((
                        *key,
                        track.info.sid.clone(),
                        f,
                        MediaTime::new(s.rtp_time, str0m::media::Frequency::FORTY_EIGHT_KHZ),
                    ));
                }
                Err(e) => tracing::warn!("synthetic encode: {e}"),
            }
        }
        for (key, sid, f, t) in frames {
            self.forward(key, &sid, &f, t, now);
        }
    }

    // ----------------------------------------------------------------- data

    /// Stamp the sender on a data packet, record it in the room and deliver it to its
    /// destinations (everyone else when none are named) on the same kind of channel.
    fn route_data(&mut self, from: Key, mut pkt: DataPacket, lossy: bool) {
        let Some(sender) = self.parts.get_mut(&from) else {
            return;
        };
        sender.counters.data_in += 1;
        pkt.participant_identity = sender.identity.clone();
        pkt.participant_sid = sender.sid.clone();
        #[allow(deprecated)]
        {
            pkt.kind = if lossy {
                proto::data_packet::Kind::Lossy as i32
            } else {
                proto::data_packet::Kind::Reliable as i32
            };
        }
        let mut destinations = pkt.destination_identities.clone();
        if let Some(proto::data_packet::Value::User(u)) = &mut pkt.value {
            #[allow(deprecated)]
            {
                u.participant_identity = sender.identity.clone();
                u.participant_sid = sender.sid.clone();
                if destinations.is_empty() {
                    destinations = u.destination_identities.clone();
                }
            }
        }
        let room = sender.room.clone();
        let bytes = pkt.encode_to_vec();
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        if r.data.len() < MAX_ROOM_DATA {
            r.data.push(pkt.clone());
        }
        let members = r.members.clone();
        for to in members {
            if to == from {
                continue;
            }
            let Some(p) = self.parts.get_mut(&to) else {
                continue;
            };
            if !destinations.is_empty() && !destinations.contains(&p.identity) {
                continue;
            }
            match &mut p.media {
                Media::Synthetic(s) => {
                    synthetic::lock(&s.recording).push_data(pkt.clone());
                    p.counters.data_out += 1;
                }
                Media::Remote { subscriber, .. } => {
                    let label = if lossy { LOSSY_LABEL } else { RELIABLE_LABEL };
                    let sent = subscriber
                        .peer
                        .channel_for(label)
                        .and_then(|id| subscriber.peer.rtc.channel(id))
                        .map(|mut ch| ch.write(true, &bytes).is_ok())
                        .unwrap_or(false);
                    if sent {
                        p.counters.data_out += 1;
                        if !self.dirty.contains(&(to, Role::Subscriber)) {
                            self.dirty.push((to, Role::Subscriber));
                        }
                    } else {
                        p.counters.data_dropped += 1;
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------- room service

    /// An admin mutes (or, with `remote_unmute`, unmutes) a participant's track, as
    /// livekit-server's `RoomManager.MutePublishedTrack` does: the participant is told with a
    /// `Mute` signal whatever the track (its SDK then mutes the local track), the published or
    /// pending track's flag changes, and the room hears of it.
    fn mute_published_track(
        &mut self,
        req: &proto::MuteRoomTrackRequest,
    ) -> Result<Option<TrackInfo>, RoomServiceError> {
        if !self.rooms.contains_key(&req.room) {
            return Err(RoomServiceError::RoomNotFound);
        }
        let key = self
            .find(&req.room, &req.identity)
            .ok_or(RoomServiceError::ParticipantNotFound)?;
        if !req.muted && !self.cfg.remote_unmute {
            return Err(RoomServiceError::RemoteUnmuteDisabled);
        }
        let p = self
            .parts
            .get_mut(&key)
            .ok_or(RoomServiceError::ParticipantNotFound)?;
        p.send(Resp::Mute(proto::MuteTrackRequest {
            sid: req.track_sid.clone(),
            muted: req.muted,
        }));
        let mut track = None;
        let mut changed = false;
        let published = p.tracks.iter_mut().map(|t| &mut t.info);
        for info in published.chain(p.pending_tracks.iter_mut()) {
            if info.sid == req.track_sid {
                changed |= info.muted != req.muted;
                info.muted = req.muted;
                track.get_or_insert_with(|| info.clone());
            }
        }
        if changed {
            p.version += 1;
            self.broadcast_participant(key, true);
        }
        Ok(track)
    }

    /// An admin changes a participant's name, metadata, attributes (an empty value deletes
    /// the key) or permission, as livekit-server's `RoomManager.UpdateParticipant` does. The
    /// participant gets the `ParticipantUpdate` too: that is how an SDK learns its new
    /// permission. Revoking `can_publish` unpublishes its tracks (`TrackUnpublished` to it);
    /// revoking `can_subscribe` takes its subscriptions away.
    fn update_participant(
        &mut self,
        req: &proto::UpdateParticipantRequest,
    ) -> Result<ParticipantInfo, RoomServiceError> {
        let key = self
            .find(&req.room, &req.identity)
            .ok_or(RoomServiceError::ParticipantNotFound)?;
        let p = self
            .parts
            .get_mut(&key)
            .ok_or(RoomServiceError::ParticipantNotFound)?;
        let mut changed = false;
        if !req.name.is_empty() && p.name != req.name {
            p.name = req.name.clone();
            changed = true;
        }
        if !req.metadata.is_empty() && p.metadata != req.metadata {
            p.metadata = req.metadata.clone();
            changed = true;
        }
        for (k, v) in &req.attributes {
            if v.is_empty() {
                changed |= p.attributes.remove(k).is_some();
            } else if p.attributes.get(k) != Some(v) {
                p.attributes.insert(k.clone(), v.clone());
                changed = true;
            }
        }
        let mut unpublish = false;
        let mut resubscribe = false;
        if let Some(perm) = &req.permission {
            unpublish = p.grant_publish && !perm.can_publish;
            resubscribe = p.grant_subscribe != perm.can_subscribe;
            let before = (
                p.grant_publish,
                p.grant_subscribe,
                p.grant_publish_data,
                p.grant_update_metadata,
            );
            p.grant_publish = perm.can_publish;
            p.grant_subscribe = perm.can_subscribe;
            p.grant_publish_data = perm.can_publish_data;
            p.grant_update_metadata = perm.can_update_metadata;
            changed |= before
                != (
                    p.grant_publish,
                    p.grant_subscribe,
                    p.grant_publish_data,
                    p.grant_update_metadata,
                );
        }
        if unpublish {
            self.unpublish_all(key);
        }
        if resubscribe {
            self.apply_subscriptions(key);
        }
        let p = self
            .parts
            .get_mut(&key)
            .ok_or(RoomServiceError::ParticipantNotFound)?;
        if changed {
            p.version += 1;
            let info = p.info();
            self.broadcast_participant(key, true);
            return Ok(info);
        }
        Ok(p.info())
    }

    /// Take all of `key`'s tracks down (its publish permission was revoked): `TrackUnpublished`
    /// to it, and off every subscriber PC.
    fn unpublish_all(&mut self, key: Key) {
        let Some(p) = self.parts.get_mut(&key) else {
            return;
        };
        let sids: Vec<String> = p.tracks.drain(..).map(|t| t.info.sid).collect();
        p.pending_tracks.clear();
        for sid in &sids {
            p.send(Resp::TrackUnpublished(proto::TrackUnpublishedResponse {
                track_sid: sid.clone(),
            }));
        }
        let room = p.room.clone();
        let members = self
            .rooms
            .get(&room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for to in members.into_iter().filter(|k| *k != key) {
            let Some(Media::Remote { subscriber, .. }) =
                self.parts.get_mut(&to).map(|o| &mut o.media)
            else {
                continue;
            };
            for sid in &sids {
                subscriber.remove_track(sid);
            }
            self.offer_subscriber(to);
        }
    }

    // ------------------------------------------------------------ membership

    fn find(&self, room: &str, identity: &str) -> Option<Key> {
        self.rooms
            .get(room)?
            .members
            .iter()
            .copied()
            .find(|k| self.parts.get(k).is_some_and(|p| p.identity == identity))
    }

    fn add_synthetic(
        &mut self,
        room_name: &str,
        identity: &str,
        signal: Signal,
        recording: SharedRecording,
        now: Instant,
    ) -> Result<String, String> {
        if self.find(room_name, identity).is_some() {
            return Err(format!(
                "identity {identity} is already in room {room_name}"
            ));
        }
        let synth = Synthetic::new(signal, recording).map_err(|e| e.to_string())?;
        let room = self
            .rooms
            .entry(room_name.to_owned())
            .or_insert_with(|| Room {
                sid: random_id("RM_"),
                name: room_name.to_owned(),
                created: SystemTime::now(),
                members: Vec::new(),
                data: Vec::new(),
                speakers: HashMap::new(),
            });
        let key = Key(self.next_key);
        self.next_key += 1;
        room.members.push(key);
        let sid = random_id("PA_");
        let track = TrackInfo {
            sid: random_id("TR_"),
            r#type: proto::TrackType::Audio as i32,
            name: "synthetic".into(),
            source: proto::TrackSource::Microphone as i32,
            mime_type: "audio/opus".into(),
            ..Default::default()
        };
        self.parts.insert(
            key,
            Participant {
                sid: sid.clone(),
                identity: identity.to_owned(),
                name: identity.to_owned(),
                kind: Kind::Standard,
                metadata: String::new(),
                attributes: HashMap::new(),
                room: room_name.to_owned(),
                joined_at: SystemTime::now(),
                version: 1,
                state: State::Active,
                grant_publish: true,
                grant_subscribe: true,
                grant_publish_data: true,
                grant_update_metadata: true,
                hidden: false,
                auto_subscribe: true,
                client_protocol: PROTOCOL_VERSION,
                signal: None,
                signal_lost_at: None,
                last_ping: now,
                media: Media::Synthetic(Box::new(synth)),
                tracks: vec![PublishedTrack {
                    info: track,
                    mid: None,
                }],
                pending_tracks: Vec::new(),
                subscription_overrides: HashMap::new(),
                levels: LevelWindow::default(),
                counters: ParticipantCounters {
                    room: room_name.to_owned(),
                    identity: identity.to_owned(),
                    ..Default::default()
                },
                trickled: Vec::new(),
                publisher_ufrags: Vec::new(),
            },
        );
        self.broadcast_participant(key, false);
        self.subscribe_others_to(key);
        self.broadcast_room_update(room_name);
        Ok(sid)
    }

    fn wants(p: &Participant, track_sid: &str) -> bool {
        p.grant_subscribe
            && p.subscription_overrides
                .get(track_sid)
                .copied()
                .unwrap_or(p.auto_subscribe)
    }

    /// Subscribe the newly joined `key` to every track already published in its room.
    fn subscribe_existing(&mut self, key: Key) {
        let Some(room) = self.parts.get(&key).map(|p| p.room.clone()) else {
            return;
        };
        let tracks: Vec<(String, String)> = self
            .rooms
            .get(&room)
            .map(|r| {
                r.members
                    .iter()
                    .filter(|k| **k != key)
                    .filter_map(|k| self.parts.get(k))
                    .flat_map(|o| {
                        o.tracks
                            .iter()
                            .map(move |t| (t.info.sid.clone(), o.sid.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(p) = self.parts.get_mut(&key) else {
            return;
        };
        let want: Vec<bool> = tracks.iter().map(|(t, _)| Self::wants(p, t)).collect();
        if let Media::Remote { subscriber, .. } = &mut p.media {
            for ((track, psid), w) in tracks.iter().zip(want) {
                if w {
                    subscriber.add_track(track, psid);
                }
            }
        }
    }

    /// `key` published something: every other remote participant gets it on its subscriber PC.
    fn subscribe_others_to(&mut self, key: Key) {
        let Some(p) = self.parts.get(&key) else {
            return;
        };
        let tracks: Vec<String> = p.tracks.iter().map(|t| t.info.sid.clone()).collect();
        let psid = p.sid.clone();
        let members = self
            .rooms
            .get(&p.room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for to in members {
            if to == key {
                continue;
            }
            let Some(o) = self.parts.get_mut(&to) else {
                continue;
            };
            let want: Vec<bool> = tracks.iter().map(|t| Self::wants(o, t)).collect();
            if let Media::Remote { subscriber, .. } = &mut o.media {
                for (t, w) in tracks.iter().zip(want) {
                    if w {
                        subscriber.add_track(t, &psid);
                    }
                }
                self.offer_subscriber(to);
            }
        }
    }

    /// Re-evaluate `key`'s explicit subscriptions (UpdateSubscription).
    fn apply_subscriptions(&mut self, key: Key) {
        let Some(room) = self.parts.get(&key).map(|p| p.room.clone()) else {
            return;
        };
        let tracks: Vec<(String, String)> = self
            .rooms
            .get(&room)
            .map(|r| {
                r.members
                    .iter()
                    .filter(|k| **k != key)
                    .filter_map(|k| self.parts.get(k))
                    .flat_map(|o| {
                        o.tracks
                            .iter()
                            .map(move |t| (t.info.sid.clone(), o.sid.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some(p) = self.parts.get_mut(&key) else {
            return;
        };
        let want: Vec<bool> = tracks.iter().map(|(t, _)| Self::wants(p, t)).collect();
        if let Media::Remote { subscriber, .. } = &mut p.media {
            for ((t, psid), w) in tracks.iter().zip(want) {
                if w {
                    subscriber.add_track(t, psid);
                } else {
                    subscriber.remove_track(t);
                }
            }
        }
        self.offer_subscriber(key);
    }

    /// The server gives up on `key`'s peer connections (LiveKit's "full reconnect"): Leave
    /// with action RECONNECT, and the participant is removed.
    fn full_reconnect(&mut self, key: Key) {
        if let Some(p) = self.parts.get_mut(&key) {
            p.send(leave(
                proto::DisconnectReason::StateMismatch,
                proto::leave_request::Action::Reconnect,
            ));
        }
        self.remove(key, proto::DisconnectReason::StateMismatch, false);
    }

    /// Take `key` out of its room. With `send_leave`, the participant is told why first.
    fn remove(&mut self, key: Key, reason: proto::DisconnectReason, send_leave: bool) {
        let Some(mut p) = self.parts.remove(&key) else {
            return;
        };
        if self.departed.len() == DEPARTED_KEPT {
            self.departed.pop_front();
        }
        self.departed.push_back((p.room.clone(), p.snapshot()));
        if send_leave {
            p.send(leave(reason, proto::leave_request::Action::Disconnect));
        }
        p.close_signal();
        self.conns.retain(|_, k| *k != key);
        self.by_addr.retain(|_, (k, _)| *k != key);
        self.dirty.retain(|(k, _)| *k != key);
        self.blackholed.remove(&key);
        if let Media::Remote {
            publisher,
            subscriber,
            ..
        } = &mut p.media
        {
            if let Some(pb) = publisher {
                pb.rtc.disconnect();
            }
            subscriber.peer.rtc.disconnect();
        }
        let room = p.room.clone();
        let track_sids: Vec<String> = p.tracks.iter().map(|t| t.info.sid.clone()).collect();
        let members = match self.rooms.get_mut(&room) {
            Some(r) => {
                r.members.retain(|k| *k != key);
                r.members.clone()
            }
            None => Vec::new(),
        };
        let mut info = p.info();
        info.state = State::Disconnected as i32;
        info.disconnect_reason = reason as i32;
        info.version += 1;
        info.tracks.clear();
        for to in &members {
            let Some(o) = self.parts.get_mut(to) else {
                continue;
            };
            if let Media::Remote { subscriber, .. } = &mut o.media {
                for t in &track_sids {
                    subscriber.remove_track(t);
                }
            }
            o.send(Resp::Update(proto::ParticipantUpdate {
                participants: vec![info.clone()],
            }));
        }
        for to in &members {
            self.offer_subscriber(*to);
        }
        if members.is_empty() {
            self.rooms.remove(&room);
        } else {
            self.broadcast_room_update(&room);
        }
        tracing::debug!(identity = %p.identity, ?reason, "left");
    }

    /// ParticipantUpdate with `key`'s info to the others (and to itself with `include_self`).
    fn broadcast_participant(&mut self, key: Key, include_self: bool) {
        let Some(p) = self.parts.get(&key) else {
            return;
        };
        let info = p.info();
        let Some(r) = self.rooms.get(&p.room) else {
            return;
        };
        for to in &r.members {
            if *to == key && !include_self {
                continue;
            }
            // As livekit-server: a hidden participant's updates go to itself only.
            if *to != key && p.hidden {
                continue;
            }
            if let Some(o) = self.parts.get(to) {
                o.send(Resp::Update(proto::ParticipantUpdate {
                    participants: vec![info.clone()],
                }));
            }
        }
    }

    fn broadcast_room_update(&mut self, room: &str) {
        let Some(info) = self.room_info(room) else {
            return;
        };
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for k in &r.members {
            if let Some(o) = self.parts.get(k) {
                o.send(Resp::RoomUpdate(proto::RoomUpdate {
                    room: Some(info.clone()),
                }));
            }
        }
    }
}

fn p_room(parts: &HashMap<Key, Participant>, key: Key) -> String {
    parts.get(&key).map(|p| p.room.clone()).unwrap_or_default()
}

/// The one host candidate every peer connection has: the shared UDP socket.
fn local_candidate(local: SocketAddr) -> Option<str0m::Candidate> {
    str0m::Candidate::host(local, "udp").ok()
}
