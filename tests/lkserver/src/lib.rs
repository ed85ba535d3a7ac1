//! A test-only stand-in for a LiveKit server, so the gateway's LiveKit room backend can be
//! tested end to end in `cargo test`, on loopback, with no external process.
//!
//! ```text
//!  client ──WS /rtc (protobuf SignalRequest/Response)──► signal task ─┐
//!                                                                      ▼ Command
//!  client PCs ◄──UDP (ICE, DTLS-SRTP, SCTP) one shared socket──► engine task (all str0m Rtc,
//!                                                                  rooms, forwarding, synthetic
//!  test ──TestServer hooks (oneshot replies)──────────────────────► participants, timers)
//! ```
//!
//! It speaks the real protocol: `JoinResponse` first, `AddTrack` → `TrackPublished`, the
//! client offers the publisher PC and the server answers, the server offers the subscriber PC
//! (with `_reliable`, `_lossy` and `_data_track` channels, one sendonly Opus m-line per remote
//! track, msid `participant_sid|track_sid`) and the client answers, `Trickle` by target,
//! `Ping`/`PingReq` → `Pong`/`PongResp`, `ParticipantUpdate`, `RoomUpdate`, `LeaveRequest` both
//! ways, `UpdateParticipantMetadata`, `MuteTrack`, `UpdateSubscription`, resume with
//! `reconnect=1&sid=` (`ReconnectResponse` then an ICE-restart subscriber offer), data packets
//! relayed between data channels. The server is a full ICE agent: controlled on the publisher PC,
//! controlling on the subscriber PC.
//!
//! The same listener serves LiveKit's room service over Twirp (module `room_service`):
//! `POST {http}/twirp/livekit.RoomService/{ListParticipants,MutePublishedTrack,UpdateParticipant}`
//! with a JSON or protobuf body and `Authorization: Bearer JWT` carrying `roomAdmin` for the room
//! ([`TestServer::admin_token`]). An admin mute reaches the participant as a `Mute` signal; an
//! unmute needs [`EngineConfig::remote_unmute`]; a permission change reaches it as a
//! `ParticipantUpdate` about itself.
//!
//! It also serves LiveKit's SIP service (module `sip_service`):
//! `POST {http}/twirp/livekit.SIP/{Create,List}SIPInboundTrunk`, `GetSIPInboundTrunk`,
//! `DeleteSIPTrunk` and `{Create,List,Delete}SIPDispatchRule`, with a token carrying the
//! `sip.admin` grant ([`TestServer::sip_admin_token`]). Trunks and rules live in memory; tests
//! can also create them directly, count requests ([`TestServer::sip_api_calls`]) and make the
//! service unavailable, hang or slow ([`TestServer::set_sip_outage`]).
//!
//! How a client joins (what this server expects, in order, as LiveKit SDKs do it):
//! 1. `GET {url}/rtc?access_token=JWT&protocol=16&auto_subscribe=1&sdk=..&version=..` upgraded
//!    to a WebSocket (a bad token gets HTTP 401/400 and a text body instead). Binary frames
//!    only, one protobuf `SignalRequest`/`SignalResponse` per frame.
//! 2. Server → `Join(JoinResponse)` first; then `Offer` for the subscriber PC (data channels,
//!    plus an m-line per track already published) and a `Trickle{target: SUBSCRIBER}` with the
//!    server's candidate; `ParticipantUpdate`/`RoomUpdate` as the room changes.
//! 3. Client → `AddTrack{cid, type: AUDIO, source: MICROPHONE}` (answered by
//!    `TrackPublished{cid, track.sid = TR_..}`), then `Offer` for the publisher PC with the
//!    sendonly Opus m-line and the `_reliable`/`_lossy` channels, then `Trickle{target:
//!    PUBLISHER}`. Server → `Answer` (same `id`) and `Trickle{target: PUBLISHER}`.
//! 4. Client → `Answer` to each subscriber `Offer` (echo its `id`). Server offers again
//!    whenever a remote track comes or goes; `mid_to_track_id` maps each m-line to its track.
//! 5. Client → `PingReq` every `ping_interval` (server → `PongResp`); nothing for
//!    `ping_timeout` closes the WebSocket. Data packets go on the publisher PC's channels and
//!    arrive, sender-stamped, on the subscriber PC's channel of the same kind.
//! 6. Leaving: client → `Leave`. Resuming after a lost WebSocket: a new `/rtc` with
//!    `reconnect=1&sid=PA_..` within `resume_grace` → `Reconnect(ReconnectResponse)`, a
//!    `ParticipantUpdate` with the others, and an ICE-restart subscriber `Offer`; the client may
//!    re-offer its publisher PC (ICE restart). An unknown `sid` gets `Leave{action: RECONNECT}`.
//!
//! Differences from the real server (livekit-server 1.11), short and honest:
//! - Single node, in-process; no Redis, no webhooks, egress, ingress, SIP bridge or agents.
//! - Room service: only `ListParticipants`, `MutePublishedTrack` and `UpdateParticipant`; the
//!   other RoomService methods answer `unimplemented` (rooms are created on first join;
//!   `close_room`/`remove_participant` are test hooks). JSON responses use the proto field
//!   names as Twirp does but leave out fields at their default value (Twirp writes them all).
//!   Request bodies need a `Content-Length`; one request per connection. A mute for a
//!   participant that is not there is an immediate `not_found` (livekit-server routes it over
//!   its message bus). `UpdateParticipant` applies `can_publish`, `can_subscribe`,
//!   `can_publish_data` and `can_update_metadata` of the permission and ignores its other
//!   fields (sources, hidden, ...).
//! - SIP service: inbound trunks and dispatch rules only (no outbound trunks, no legacy
//!   `SIPTrunkInfo` trunks, no `Update*`, no `CreateSIPParticipant`/`TransferSIPParticipant`:
//!   those answer `unimplemented`). `page.limit` caps each list answer, as the `Pagination`
//!   message documents; livekit-server 1.11 pages through its store itself and answers every
//!   item after `page.after_id` whatever the limit. Ids are `ST_`/`SDR_` and 12 random
//!   characters like the real ones; lists are sorted by id, and `dispatch_rule_ids` that do not
//!   exist are left out, as livekit-server does. A trunk's `headers`, `headers_to_attributes`
//!   and `attributes_to_headers` are not checked (the real server refuses malformed header
//!   names); no `created_at`/`updated_at`. Same JSON and request-body notes as the room service.
//! - Audio only, Opus only (no RED, no DTX negotiation logic, no simulcast, no video, no
//!   codec fallback); payloads are forwarded as received (str0m assigns the subscriber-side
//!   SSRC, sequence numbers and payload type). No bandwidth estimation, no NACK/RTX, no
//!   connection-quality updates.
//! - Speaker detection reads the RFC 6464 level of each published packet (a synthetic
//!   participant counts as sending its tone's RMS level) with livekit-server's default
//!   `audio` settings: every 500 ms, active when at least 40 % of the packets were at -30 dBov
//!   or louder; the level sent is the loud packets' mean linear level, quantized to eighths.
//!   `SpeakersChanged` carries the speakers that came or changed (loudest first) and those
//!   that stopped (level 0, inactive), to every participant of the room. The real server
//!   smooths levels over `smooth_intervals` and observes each track separately; this one
//!   does not smooth and takes a participant as one source.
//! - ICE: one UDP host candidate on loopback (no ICE/TCP, no STUN server entry in
//!   `ice_servers` unless configured). The embedded TURN server (`ServerOptions::turn`) speaks
//!   UDP only, with one credential for everyone (see the `turn` module). A client must use a distinct local port per PC, as it
//!   must with livekit-server's single-port UDP mux.
//! - An audio m-line on the publisher PC is bound to the oldest pending `AddTrack` (the real
//!   server matches by the msid track id / cid).
//! - Guesses: the `LeaveRequest` reasons for a failed peer connection (`STATE_MISMATCH`,
//!   action `RECONNECT`) and for an unknown resume (same); `ServerInfo.protocol` = 17,
//!   `version` = 1.11.0; a dropped signal connection leaves the participant in the room for
//!   `resume_grace` (20 s default) before it is removed with `SIGNAL_CLOSE`.
//! - `RoomUpdate` goes out on every join, leave and publish (the real server batches its
//!   participant counts); `ReconnectResponse.last_message_seq` is always 0 (no data-packet
//!   replay on resume); no `refresh_token`.
//! - A muted track (by its publisher or by the room service) is still forwarded: only its flag
//!   changes.
//! - Hidden participants (`video.hidden` in the token): as livekit-server, they are left out
//!   of the others' `JoinResponse`, `ParticipantUpdate`s and `RoomUpdate` counts, and their own
//!   updates go to themselves only; `ListParticipants` lists them. The real server also keeps
//!   them out of speaker updates and strips their identity from data they send: this server
//!   sends no speaker updates, and a hidden participant's data is stamped as anyone's.
//! - Synthetic participants live inside the server (no WebRTC of their own); the rest of the
//!   room sees them as ordinary publishing participants.

mod engine;
mod peer;
mod room_service;
mod signal;
mod sip_service;
mod synthetic;
mod token;
mod turn;
mod twirp;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use livekit_api::access_token::{AccessToken, SIPGrants, VideoGrants};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use engine::{EngineConfig, EngineStats, ParticipantCounters, ParticipantSnapshot};
pub use livekit_protocol as proto;
pub use livekit_protocol::participant_info::{Kind as ParticipantKind, State as ParticipantState};
pub use room_service::RoomServiceError;
pub use sip_service::{SipOutage, SipServiceError};
pub use synthetic::{Signal, FRAME_SAMPLES, SAMPLE_RATE};
pub use token::TokenError;
pub use turn::{TurnStats, REALM_NAME as TURN_REALM};

use engine::{Command, Engine};
use synthetic::{Recording, SharedRecording};

/// Why the server or a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bind: {0}")]
    Bind(#[from] std::io::Error),
    #[error("the server task has stopped")]
    Stopped,
    #[error("{0}")]
    Refused(String),
    #[error("token: {0}")]
    Token(String),
    #[error(transparent)]
    RoomService(#[from] RoomServiceError),
    #[error(transparent)]
    SipService(#[from] SipServiceError),
}

/// Where and how to run the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub api_key: String,
    pub api_secret: String,
    /// HTTP/WebSocket listen address (port 0: any).
    pub listen: SocketAddr,
    /// UDP address for all peer connections (port 0: any). Its IP is the advertised host
    /// candidate, so it must not be unspecified.
    pub udp: SocketAddr,
    pub engine: EngineConfig,
    /// Run the embedded TURN server (livekit-server's `turn.enabled`) on the UDP address's IP
    /// and announce it, with a credential, in `JoinResponse.ice_servers`.
    pub turn: bool,
}

impl ServerOptions {
    /// Loopback, ephemeral ports, livekit-server's default timings.
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        let lo: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            listen: lo,
            udp: lo,
            engine: EngineConfig::default(),
            turn: false,
        }
    }
}

/// A running stand-in server. Dropping it stops it.
pub struct TestServer {
    url: String,
    http_addr: SocketAddr,
    udp_addr: SocketAddr,
    api_key: String,
    api_secret: String,
    cmd: mpsc::UnboundedSender<Command>,
    tasks: Vec<JoinHandle<()>>,
    turn: Option<turn::TurnServer>,
    ice_servers: Vec<proto::IceServer>,
    sip: sip_service::SipShared,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Requests held by a `Hang` outage are let go, so their tasks end.
        self.sip.set_outage(None);
        let _ = self.cmd.send(Command::Shutdown);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl TestServer {
    /// Start on 127.0.0.1 with ephemeral ports.
    pub async fn start(api_key: &str, api_secret: &str) -> Result<TestServer, ServerError> {
        Self::start_with(ServerOptions::new(api_key, api_secret)).await
    }

    pub async fn start_with(opts: ServerOptions) -> Result<TestServer, ServerError> {
        let listener = TcpListener::bind(opts.listen).await?;
        let http_addr = listener.local_addr()?;
        let socket = std::net::UdpSocket::bind(opts.udp)?;
        socket.set_nonblocking(true)?;
        let udp_addr = socket.local_addr()?;
        let mut engine_config = opts.engine.clone();
        let turn = if opts.turn {
            let password = format!("{:032x}", rand::random::<u128>());
            let server = turn::TurnServer::start(udp_addr.ip(), "livekit-turn", &password).await?;
            engine_config.ice_servers.push(server.ice_server());
            Some(server)
        } else {
            None
        };
        let ice_servers = engine_config.ice_servers.clone();
        let (cmd, rx) = mpsc::unbounded_channel();
        let engine = Engine::new(engine_config, udp_addr, Instant::now());
        // The engine gets a thread of its own so that tests' client tasks in the same process
        // cannot delay its timers.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("lkserver-engine".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match UdpSocket::from_std(socket) {
                        Ok(socket) => run_engine(engine, socket, rx).await,
                        Err(e) => tracing::error!("engine socket: {e}"),
                    }
                })
            })?;
        let tokens = token::TokenCheck::new(&opts.api_key, &opts.api_secret);
        let sip = sip_service::SipShared::new();
        let tasks = vec![tokio::spawn(signal::serve(
            listener,
            tokens,
            cmd.clone(),
            sip.clone(),
        ))];
        Ok(TestServer {
            url: format!("ws://{http_addr}"),
            http_addr,
            udp_addr,
            api_key: opts.api_key,
            api_secret: opts.api_secret,
            cmd,
            tasks,
            turn,
            ice_servers,
            sip,
        })
    }

    /// The ICE servers `JoinResponse` announces.
    pub fn join_ice_servers(&self) -> Vec<proto::IceServer> {
        self.ice_servers.clone()
    }

    /// What the embedded TURN server did (`None` unless started with `turn`).
    pub fn turn_stats(&self) -> Option<TurnStats> {
        self.turn.as_ref().map(turn::TurnServer::stats)
    }

    /// `ws://127.0.0.1:PORT`: the URL a LiveKit client is given (it appends `/rtc`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `http://127.0.0.1:PORT`: where the Twirp paths (`/twirp/...`) of the room and SIP
    /// services are.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The UDP address every peer connection uses.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// A token for `identity` in `room` with publish/subscribe/data grants, valid 10 minutes.
    pub fn token(&self, room: &str, identity: &str) -> Result<String, ServerError> {
        AccessToken::with_api_key(&self.api_key, &self.api_secret)
            .with_identity(identity)
            .with_ttl(Duration::from_secs(600))
            .with_grants(VideoGrants {
                room_join: true,
                room: room.into(),
                ..Default::default()
            })
            .to_jwt()
            .map_err(|e| ServerError::Token(e.to_string()))
    }

    /// A token for the room service with `roomAdmin` on `room`, valid 10 minutes.
    pub fn admin_token(&self, room: &str) -> Result<String, ServerError> {
        AccessToken::with_api_key(&self.api_key, &self.api_secret)
            .with_ttl(Duration::from_secs(600))
            .with_grants(VideoGrants {
                room_admin: true,
                room: room.into(),
                ..Default::default()
            })
            .to_jwt()
            .map_err(|e| ServerError::Token(e.to_string()))
    }

    /// A token for the SIP service (`sip.admin`), valid 10 minutes.
    pub fn sip_admin_token(&self) -> Result<String, ServerError> {
        AccessToken::with_api_key(&self.api_key, &self.api_secret)
            .with_ttl(Duration::from_secs(600))
            .with_sip_grants(SIPGrants {
                admin: true,
                call: false,
            })
            .to_jwt()
            .map_err(|e| ServerError::Token(e.to_string()))
    }

    /// Requests that reached `/twirp/livekit.SIP/<Method>` since start, by method, whatever
    /// their answer (refused, unavailable, malformed ones included); hooks are not counted.
    pub fn sip_api_calls(&self) -> BTreeMap<String, u64> {
        self.sip.calls()
    }

    /// Make the SIP service misbehave (`None`: behave). Ending a `Hang` answers the requests
    /// it held.
    pub fn set_sip_outage(&self, outage: Option<SipOutage>) {
        self.sip.set_outage(outage);
    }

    /// What `SIP.CreateSIPInboundTrunk` does, without HTTP: the trunk is checked as the
    /// service checks it and stored under a new `ST_` id.
    pub fn create_sip_inbound_trunk(
        &self,
        trunk: proto::SipInboundTrunkInfo,
    ) -> Result<proto::SipInboundTrunkInfo, ServerError> {
        Ok(self.sip.create_inbound_trunk(trunk)?)
    }

    /// What `SIP.CreateSIPDispatchRule{dispatch_rule}` does, without HTTP: the rule is
    /// checked against the others and stored under a new `SDR_` id.
    pub fn create_sip_dispatch_rule(
        &self,
        rule: proto::SipDispatchRuleInfo,
    ) -> Result<proto::SipDispatchRuleInfo, ServerError> {
        Ok(self.sip.create_dispatch_rule(rule)?)
    }

    /// Every inbound trunk, by id.
    pub fn sip_inbound_trunks(&self) -> Vec<proto::SipInboundTrunkInfo> {
        self.sip.inbound_trunks()
    }

    /// Every dispatch rule, by id.
    pub fn sip_dispatch_rules(&self) -> Vec<proto::SipDispatchRuleInfo> {
        self.sip.dispatch_rules()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ServerError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(make(tx)).map_err(|_| ServerError::Stopped)?;
        rx.await.map_err(|_| ServerError::Stopped)
    }

    /// Everyone in `room` (empty if the room does not exist), in join order.
    pub async fn participants(&self, room: &str) -> Result<Vec<ParticipantSnapshot>, ServerError> {
        self.ask(|reply| Command::Participants {
            room: room.into(),
            reply,
        })
        .await
    }

    /// Poll `participants(room)` until one matches `pred`, or `None` after `timeout`.
    pub async fn wait_for_participant(
        &self,
        room: &str,
        pred: impl Fn(&ParticipantSnapshot) -> bool,
        timeout: Duration,
    ) -> Result<Option<ParticipantSnapshot>, ServerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(p) = self.participants(room).await?.into_iter().find(|p| pred(p)) {
                return Ok(Some(p));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Put an in-process participant in `room` that publishes `signal` as 48 kHz Opus, every
    /// 20 ms, and records what is forwarded to it.
    pub async fn add_synthetic_participant(
        &self,
        room: &str,
        identity: &str,
        signal: Signal,
    ) -> Result<SyntheticParticipant, ServerError> {
        let recording: SharedRecording = Arc::new(Mutex::new(Recording::default()));
        let sid = self
            .ask(|reply| Command::AddSynthetic {
                room: room.into(),
                identity: identity.into(),
                signal,
                recording: recording.clone(),
                reply,
            })
            .await?
            .map_err(ServerError::Refused)?;
        Ok(SyntheticParticipant {
            identity: identity.into(),
            sid,
            recording,
            cmd: self.cmd.clone(),
        })
    }

    /// Delete the room: every participant gets `LeaveRequest{reason: ROOM_DELETED}` and its
    /// signal connection is closed. `false` if there was no such room.
    pub async fn close_room(&self, room: &str) -> Result<bool, ServerError> {
        self.ask(|reply| Command::CloseRoom {
            room: room.into(),
            reply,
        })
        .await
    }

    /// Remove one participant: `LeaveRequest{reason: PARTICIPANT_REMOVED}` to it, a
    /// `ParticipantUpdate` (DISCONNECTED) to the others.
    pub async fn remove_participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<bool, ServerError> {
        self.ask(|reply| Command::RemoveParticipant {
            room: room.into(),
            identity: identity.into(),
            reply,
        })
        .await
    }

    /// What `RoomService.MutePublishedTrack` does, without HTTP: the participant gets a `Mute`
    /// signal, the track's flag changes and the room is told. `None` if it has no such track.
    pub async fn mute_published_track(
        &self,
        room: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
    ) -> Result<Option<proto::TrackInfo>, ServerError> {
        let request = proto::MuteRoomTrackRequest {
            room: room.into(),
            identity: identity.into(),
            track_sid: track_sid.into(),
            muted,
        };
        Ok(self
            .ask(|reply| Command::MutePublishedTrack { request, reply })
            .await??)
    }

    /// What `RoomService.UpdateParticipant` does, without HTTP (works on synthetic
    /// participants too: a way to give them attributes).
    pub async fn update_participant(
        &self,
        request: proto::UpdateParticipantRequest,
    ) -> Result<proto::ParticipantInfo, ServerError> {
        Ok(self
            .ask(|reply| Command::UpdateParticipant {
                request: Box::new(request),
                reply,
            })
            .await??)
    }

    /// Close `identity`'s signal WebSocket without a Leave, as a network failure would; the
    /// participant stays for `resume_grace`, waiting for `reconnect=1&sid=`.
    pub async fn drop_websocket(&self, identity: &str) -> Result<bool, ServerError> {
        self.ask(|reply| Command::DropWebsocket {
            identity: identity.into(),
            reply,
        })
        .await
    }

    /// Fail `identity`'s peer connections server-side: `LeaveRequest{action: RECONNECT}` and
    /// the participant is removed, so the client must join again (LiveKit's full reconnect).
    pub async fn kill_peer_connection(&self, identity: &str) -> Result<bool, ServerError> {
        self.ask(|reply| Command::KillPeerConnection {
            identity: identity.into(),
            reply,
        })
        .await
    }

    /// Packet counters of every participant, sorted by (room, identity).
    pub async fn counters(&self) -> Result<Vec<ParticipantCounters>, ServerError> {
        self.ask(|reply| Command::Counters { reply }).await
    }

    /// Drop all of `identity`'s UDP traffic, both ways, while `on` (a network outage with the
    /// signal connection still up: ICE consent fails, media stops). `false` if unknown.
    pub async fn blackhole_media(&self, identity: &str, on: bool) -> Result<bool, ServerError> {
        self.ask(|reply| Command::Blackhole {
            identity: identity.into(),
            on,
            reply,
        })
        .await
    }

    /// Participants that left `room` (the last 1024 departures of the server), oldest
    /// first, as they were when they left: their last attributes, name and metadata.
    pub async fn departed(&self, room: &str) -> Result<Vec<ParticipantSnapshot>, ServerError> {
        self.ask(|reply| Command::Departed {
            room: room.into(),
            reply,
        })
        .await
    }

    /// Engine busy time and datagram counts since start.
    pub async fn stats(&self) -> Result<EngineStats, ServerError> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// Every data packet the server received in `room` (sender stamped), in arrival order.
    pub async fn data_packets(&self, room: &str) -> Result<Vec<proto::DataPacket>, ServerError> {
        self.ask(|reply| Command::DataPackets {
            room: room.into(),
            reply,
        })
        .await
    }
}

/// Handle on an in-process participant; its recordings outlive its removal from the room.
pub struct SyntheticParticipant {
    identity: String,
    sid: String,
    recording: SharedRecording,
    cmd: mpsc::UnboundedSender<Command>,
}

impl SyntheticParticipant {
    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Everything heard so far, 48 kHz mono ([`SAMPLE_RATE`]); several sources are summed,
    /// each aligned on its first sample.
    pub fn received_audio(&self) -> Vec<i16> {
        synthetic::lock(&self.recording).mixed()
    }

    /// What was heard from one participant, 48 kHz mono, in arrival order (lost packets are
    /// simply missing; no concealment).
    pub fn received_audio_from(&self, identity: &str) -> Vec<i16> {
        synthetic::lock(&self.recording)
            .audio
            .get(identity)
            .cloned()
            .unwrap_or_default()
    }

    /// Identities heard, in the order first heard.
    pub fn heard_from(&self) -> Vec<String> {
        synthetic::lock(&self.recording).sources.clone()
    }

    /// Data packets delivered to this participant (sender stamped by the server).
    pub fn received_data(&self) -> Vec<proto::DataPacket> {
        synthetic::lock(&self.recording).data.clone()
    }

    /// Switch what it publishes.
    pub async fn set_signal(&self, signal: Signal) -> Result<bool, ServerError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::SetSignal {
                identity: self.identity.clone(),
                signal,
                reply: tx,
            })
            .map_err(|_| ServerError::Stopped)?;
        rx.await.map_err(|_| ServerError::Stopped)
    }

    /// Send a data packet into the room from this participant (reliable unless `lossy`).
    pub async fn send_data(
        &self,
        packet: proto::DataPacket,
        lossy: bool,
    ) -> Result<bool, ServerError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::SyntheticData {
                identity: self.identity.clone(),
                packet: Box::new(packet),
                lossy,
                reply: tx,
            })
            .map_err(|_| ServerError::Stopped)?;
        rx.await.map_err(|_| ServerError::Stopped)
    }
}

/// The engine's driver: one task, one UDP socket, all peer connections.
async fn run_engine(
    mut engine: Engine,
    socket: UdpSocket,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let deadline = engine.next_deadline();
        let woke;
        tokio::select! {
            cmd = rx.recv() => {
                woke = Instant::now();
                match cmd {
                    Some(Command::Shutdown) | None => break,
                    Some(c) => engine.handle_command(c, woke),
                }
            }
            r = socket.recv_from(&mut buf) => {
                woke = Instant::now();
                if let Ok((n, src)) = r {
                    engine.stats.datagrams_in += 1;
                    engine.handle_udp(src, buf.get(..n).unwrap_or_default(), woke);
                    // Take what else is queued before polling outputs.
                    for _ in 0..64 {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, src)) => {
                                engine.stats.datagrams_in += 1;
                                engine.handle_udp(src, buf.get(..n).unwrap_or_default(), Instant::now());
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => woke = Instant::now(),
        }
        let now = Instant::now();
        engine.handle_timeout(now);
        engine.drain(now);
        let mut sent = 0;
        for t in engine.transmits.drain(..) {
            if socket.try_send_to(&t.contents, t.destination).is_ok() {
                sent += 1;
            }
        }
        engine.stats.datagrams_out += sent;
        engine.stats.busy += woke.elapsed();
    }
}
