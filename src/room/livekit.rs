//! The `livekit` room backend: after the PIN, the caller joins a LiveKit room as a participant
//! of kind SIP (DESIGN.md §Participant in the room).
//!
//! ```text
//!  call task ──to_room (PCM 16 kHz)──► session task ─ Opus ─► publisher PC ──UDP──► LiveKit
//!            ◄─from_room (mix)──────── (one per call:  ◄─ Opus ─ subscriber PC ◄──UDP──┘
//!            ◄─events / dtmf ────────►  2 str0m Rtc,   ◄──── WebSocket /rtc (protobuf) ──►
//!                                        2 sockets, WS)
//! ```
//!
//! [`LiveKitRooms::join`] mints a per-call access token (identity, name, kind `sip`, the `sip.*`
//! attributes, grants for that one room, short TTL), opens the signal WebSocket and waits for the
//! `JoinResponse`; a failure there is a [`RoomError`] and the caller hears "service unavailable".
//! The session task (module `session`) then does what LiveKit's SDKs do: `AddTrack` then the publisher
//! offer (Opus sendonly and the `_reliable`/`_lossy` data channels), answers the server's
//! subscriber offers, trickles candidates by target, pings, resumes a dropped WebSocket
//! with `reconnect=1&sid=` while keeping both peer connections, and joins again from scratch
//! when the server asks for a full reconnect (`Leave{action: RECONNECT}`).
//!
//! A trunk's `livekit = { url, api_key, api_secret }` sends its calls to another server or
//! project (the call's trunk is its `sip.trunkID` attribute). `wss://` URLs go through rustls
//! (ring) with Mozilla's root certificates compiled in. ICE offers a host candidate (the
//! address the signal connection left from) and, when `livekit.ice_servers` or the
//! `JoinResponse` list STUN servers, a server-reflexive one learnt from them (module `stun`);
//! TURN servers are not used (no TURN client).
//!
//! The room is exchanged at the caller's rate: 8 kHz for G.711 callers, 16 kHz
//! ([`LIVEKIT_SAMPLE_RATE`], wideband) for the others. Opus encodes from and decodes to both
//! natively (LiveKit's subscribers decode at 48 kHz whatever was coded), so the call path has
//! no resampler, and an 8 kHz encode costs about two thirds of a 16 kHz one (README,
//! Performance).

pub mod api;
mod heard;
mod session;
mod share;
mod signal;
pub(crate) mod stun;
mod turn;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dialin_media::codec::SampleRate;
use livekit_api::access_token::{AccessToken, VideoGrants};
use tokio::sync::{mpsc, oneshot};

use super::{
    AudioFrame, HostFuture, JoinFuture, JoinRequest, RoomBackend, RoomError, RoomEvent, RoomHandle,
};
use crate::call::ROLE_ATTRIBUTE;
use crate::config::{HostRule, IceTransportPolicy, LiveKitConfig};
use crate::ingress::trunk::{SharedTrunkTable, TrunkId};
use crate::ops::metrics::Metrics;
use crate::pins::PinRole;

/// The attribute naming the call's trunk (LiveKit SIP conventions), which picks the trunk's
/// LiveKit override.
const TRUNK_ATTRIBUTE: &str = "sip.trunkID";

/// PCM rate of [`RoomHandle`]s from this backend for wideband callers (G.722, Opus) and any
/// rate other than 8 kHz; narrowband (G.711) callers get [`NARROWBAND_SAMPLE_RATE`].
pub const LIVEKIT_SAMPLE_RATE: u32 = 16_000;
/// PCM rate of [`RoomHandle`]s for callers at 8 kHz.
pub const NARROWBAND_SAMPLE_RATE: u32 = 8_000;

/// How long the WebSocket upgrade and then the `JoinResponse` may each take before the join
/// fails. LiveKit's client SDKs give up on the signal connection after about 5 s.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The token's `kind` claim for a phone participant (LiveKit's `ParticipantInfo.Kind.SIP`,
/// spelled as LiveKit's server SDKs write it).
const SIP_KIND: &str = "sip";

/// Frames the audio channels hold each way: 60 ms of slack between the call's clock and the
/// session's, as the `local` backend does.
const CHANNEL_FRAMES: usize = 3;

/// Where a call's participant goes: a LiveKit server and the API key that signs its tokens.
pub struct LiveKitRooms {
    url: String,
    api_key: String,
    api_secret: String,
    token_ttl: Duration,
    tls: tokio_tungstenite::Connector,
    /// Trunks whose `livekit = { ... }` sends their calls to another server or project,
    /// read at each join so that a reload applies to the next call.
    trunks: Option<Arc<SharedTrunkTable>>,
    /// Where sessions count the frames they drop or miss.
    metrics: Option<Arc<Metrics>>,
    /// `livekit.ice_servers` and `livekit.ice_transport_policy`: the STUN servers are asked
    /// for each call's reflexive address and the TURN server for a relayed one, with those
    /// of the `JoinResponse`.
    ice: session::IceSetup,
    /// `livekit.host`: who counts as a room's host.
    host: HostRule,
    /// `livekit.share_rooms`: calls of one room share this node's listener of that room.
    share: bool,
    /// The listeners of this node, by server, room and rate (module `share`).
    listeners:
        Mutex<HashMap<ListenerKey, Arc<tokio::sync::Mutex<Option<mpsc::Sender<share::Join>>>>>>,
}

/// One listener per LiveKit server, room and sample rate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ListenerKey {
    url: String,
    room: String,
    rate: u32,
}

/// Attempts at joining a room's listener: one that is ending refuses the call, which then
/// starts a new one.
const LISTENER_ATTEMPTS: usize = 3;

/// How often a waiting participant's room is looked at for its host.
const HOST_POLL: Duration = Duration::from_secs(1);
/// Failed looks in a row after which the wait fails (the caller hears "service unavailable").
const HOST_POLL_FAILURES: u32 = 5;

/// Whether `p` is a host of its room: a dialin caller of a host PIN (`sip.role = host`), or
/// a participant matching `rule`. Egress and ingress participants (recorders, streams) and
/// hidden ones never are.
pub fn is_host(p: &livekit_protocol::ParticipantInfo, rule: &HostRule) -> bool {
    use livekit_protocol::participant_info::{Kind, State};
    if p.state == State::Disconnected as i32 {
        return false;
    }
    // A hidden participant (a gateway's listener, an observer) is not in the meeting.
    if p.permission.as_ref().is_some_and(|perm| perm.hidden) {
        return false;
    }
    if p.attributes.get(ROLE_ATTRIBUTE).map(String::as_str) == Some(PinRole::Host.as_str()) {
        return true;
    }
    match rule {
        HostRule::AnyNonSip => {
            let kind = Kind::try_from(p.kind).unwrap_or(Kind::Standard);
            !matches!(kind, Kind::Sip | Kind::Egress | Kind::Ingress)
                && !p.identity.starts_with(CALL_IDENTITY_PREFIX)
        }
        HostRule::Attribute { key, value } => p.attributes.get(key) == Some(value),
    }
}

pub use heard::{Losses, RoomMix};

/// Identities of dialin's calls (`sip_<call id>`).
const CALL_IDENTITY_PREFIX: &str = "sip_";

/// The server and key one call's participant uses.
struct Server<'a> {
    url: &'a str,
    api_key: &'a str,
    api_secret: &'a str,
}

impl LiveKitRooms {
    /// From `[livekit]`. The secret must be set (configuration checking requires it when
    /// `rooms.backend = "livekit"`).
    pub fn new(config: &LiveKitConfig) -> Result<LiveKitRooms, RoomError> {
        let secret = config
            .api_secret
            .as_ref()
            .map(|s| s.expose().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| RoomError::Refused("livekit.api_secret is not set".into()))?;
        Ok(LiveKitRooms {
            url: config.url.clone(),
            api_key: config.api_key.clone(),
            api_secret: secret,
            token_ttl: Duration::from_secs(config.token_ttl_s),
            tls: signal::tls_connector().map_err(RoomError::Refused)?,
            trunks: None,
            metrics: None,
            ice: session::IceSetup {
                servers: config.ice_servers.clone(),
                relay_only: config.ice_transport_policy == IceTransportPolicy::Relay,
            },
            host: config.host.clone(),
            share: config.share_rooms,
            listeners: Mutex::new(HashMap::new()),
        })
    }

    /// Counts the frames sessions drop or miss in these metrics
    /// (`dialin_room_frames_dropped_total`, `dialin_room_frames_missing_total`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> LiveKitRooms {
        self.metrics = Some(metrics);
        self
    }

    /// Honours the trunks' `livekit = { url, api_key, api_secret }` overrides (unset keys fall
    /// back to `[livekit]`); the call's trunk is its `sip.trunkID` attribute.
    pub fn with_trunk_overrides(mut self, trunks: Arc<SharedTrunkTable>) -> LiveKitRooms {
        self.trunks = Some(trunks);
        self
    }

    /// Looks at `room` every [`HOST_POLL`] through the RoomService API until a host is in it.
    async fn watch_for_host(&self, room: String, trunk: TrunkId) -> Result<(), RoomError> {
        let client = {
            let table = self.trunks.as_ref().map(|t| t.load());
            let over = table
                .as_deref()
                .and_then(|table| table.get(&trunk)?.livekit.as_ref());
            let url = over.and_then(|o| o.url.as_deref()).unwrap_or(&self.url);
            let key = over
                .and_then(|o| o.api_key.as_deref())
                .unwrap_or(&self.api_key);
            let secret = over
                .and_then(|o| o.api_secret.as_ref())
                .map(|s| s.expose())
                .unwrap_or(&self.api_secret);
            api::RoomServiceClient::new(url, key, secret)
                .map_err(|e| RoomError::Refused(e.to_string()))?
        };
        let mut failures = 0;
        loop {
            match client.list_participants(&room).await {
                Ok(participants) => {
                    failures = 0;
                    if participants.iter().any(|p| is_host(p, &self.host)) {
                        return Ok(());
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(room = %room, error = %e, failures, "looking for the room's host failed");
                    if failures >= HOST_POLL_FAILURES {
                        return Err(RoomError::Unreachable(e.to_string()));
                    }
                }
            }
            tokio::time::sleep(HOST_POLL).await;
        }
    }

    async fn join_room(&self, req: JoinRequest) -> Result<RoomHandle, RoomError> {
        let table = self.trunks.as_ref().map(|t| t.load());
        let trunk_override = table.as_deref().and_then(|table| {
            let id = TrunkId::parse(req.attributes.get(TRUNK_ATTRIBUTE)?).ok()?;
            table.get(&id)?.livekit.as_ref()
        });
        let server = Server {
            url: trunk_override
                .and_then(|o| o.url.as_deref())
                .unwrap_or(&self.url),
            api_key: trunk_override
                .and_then(|o| o.api_key.as_deref())
                .unwrap_or(&self.api_key),
            api_secret: trunk_override
                .and_then(|o| o.api_secret.as_ref())
                .map(|s| s.expose())
                .unwrap_or(&self.api_secret),
        };
        let url = server.url.to_owned();
        let rate = if req.sample_rate == NARROWBAND_SAMPLE_RATE {
            SampleRate::Hz8000
        } else {
            SampleRate::Hz16000
        };
        let (events_tx, events) = mpsc::channel(16);
        // A shared room: the call is mixed by this node's listener of the room, which must
        // know the call's identity before its participant joins (its track is never
        // subscribed to).
        let shared = if self.share {
            let listener =
                mint_listener_token(server.api_key, server.api_secret, self.token_ttl, &req.room)?;
            Some(
                self.join_listener(&url, &req, rate, listener, events_tx.clone())
                    .await?,
            )
        } else {
            None
        };
        // The access token for this call: kind SIP, the request's identity, name and
        // attributes, allowed to join only `req.room`, publish its microphone, subscribe and
        // send data.
        let token = mint_token(server.api_key, server.api_secret, self.token_ttl, &req)?;
        drop(table);
        let auto_subscribe = shared.is_none();
        let mut ws = signal::connect(&url, &token, None, auto_subscribe, JOIN_TIMEOUT, &self.tls)
            .await
            .map_err(room_error)?;
        let (join, early) = signal::await_join(&mut ws, JOIN_TIMEOUT)
            .await
            .map_err(room_error)?;
        let others_at_join = join.other_participants.len();

        let (to_room, to_room_rx) = mpsc::channel(CHANNEL_FRAMES);
        // A shared room's call hears the listener's mix, and its session mixes nothing.
        let (from_room_tx, from_room, voice) = match shared {
            Some((voice, heard)) => (mpsc::channel(1).0, heard, Some(voice)),
            None => {
                let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
                (tx, rx, None)
            }
        };
        let (dtmf_tx, dtmf_rx) = mpsc::channel(16);
        let (mute_tx, mute_rx) = mpsc::channel(4);
        let (attributes_tx, attributes_rx) = mpsc::channel(4);
        let (leave_tx, leave_rx) = oneshot::channel();
        let io = session::SessionIo {
            to_room: to_room_rx,
            from_room: from_room_tx,
            events: events_tx,
            dtmf: dtmf_rx,
            mute: mute_rx,
            attributes: attributes_rx,
            leave: leave_rx,
        };
        let target = session::Target {
            tls: self.tls.clone(),
            url,
            token,
            auto_subscribe,
        };
        let session = session::Session::start(
            target,
            ws,
            join,
            io,
            &req.identity,
            rate,
            self.metrics.clone(),
            &self.ice,
            session::Role::Caller { voice },
        )
        .await
        .map_err(|e| RoomError::Unreachable(format!("peer connection setup: {e}")))?;
        tokio::spawn(session.run(early));
        Ok(RoomHandle {
            sample_rate: rate.hz(),
            others_at_join,
            to_room,
            from_room,
            events,
            dtmf: Some(dtmf_tx),
            mute: Some(mute_tx),
            attributes: Some(attributes_tx),
            _membership: Box::new(Membership { _leave: leave_tx }),
        })
    }
}

impl LiveKitRooms {
    /// Has this node's listener of the call's room mix the call, starting the listener if
    /// there is none: the call's voice goes to the returned sender, and what it hears comes
    /// from the returned receiver.
    async fn join_listener(
        &self,
        url: &str,
        req: &JoinRequest,
        rate: SampleRate,
        listener: (String, String),
        events: mpsc::Sender<RoomEvent>,
    ) -> Result<(mpsc::Sender<AudioFrame>, mpsc::Receiver<AudioFrame>), RoomError> {
        let key = ListenerKey {
            url: url.to_owned(),
            room: req.room.clone(),
            rate: rate.hz(),
        };
        let mut last_error = None;
        for _ in 0..LISTENER_ATTEMPTS {
            let slot = {
                let mut listeners = self
                    .listeners
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // Listeners that ended, with nobody starting one, are forgotten.
                listeners.retain(|_, slot| {
                    Arc::strong_count(slot) > 1
                        || slot
                            .try_lock()
                            .map_or(true, |s| s.as_ref().is_some_and(|tx| !tx.is_closed()))
                });
                listeners.entry(key.clone()).or_default().clone()
            };
            let joins = {
                let mut slot = slot.lock().await;
                match slot.as_ref().filter(|tx| !tx.is_closed()) {
                    Some(tx) => tx.clone(),
                    None => {
                        let (identity, token) = &listener;
                        let tx = self
                            .start_listener(url, &req.room, rate, identity, token)
                            .await?;
                        *slot = Some(tx.clone());
                        tx
                    }
                }
            };
            let (voice_tx, voice) = mpsc::channel(CHANNEL_FRAMES);
            let (out, heard) = mpsc::channel(CHANNEL_FRAMES);
            let (accepted, accepted_rx) = oneshot::channel();
            let join = share::Join {
                identity: req.identity.clone(),
                voice,
                out,
                events: events.clone(),
                accepted,
            };
            if joins.send(join).await.is_err() {
                last_error = Some("the room's listener ended".to_owned());
                continue;
            }
            match tokio::time::timeout(JOIN_TIMEOUT, accepted_rx).await {
                Ok(Ok(())) => return Ok((voice_tx, heard)),
                Ok(Err(_)) => last_error = Some("the room's listener ended".to_owned()),
                Err(_) => {
                    return Err(RoomError::Unreachable(
                        "the room's listener did not take the call in time".into(),
                    ))
                }
            }
        }
        Err(RoomError::Unreachable(
            last_error.unwrap_or_else(|| "no listener for the room".into()),
        ))
    }

    /// Joins `room` as this node's hidden listener and starts its session.
    async fn start_listener(
        &self,
        url: &str,
        room: &str,
        rate: SampleRate,
        identity: &str,
        token: &str,
    ) -> Result<mpsc::Sender<share::Join>, RoomError> {
        let mut ws = signal::connect(url, token, None, false, JOIN_TIMEOUT, &self.tls)
            .await
            .map_err(room_error)?;
        let (join, early) = signal::await_join(&mut ws, JOIN_TIMEOUT)
            .await
            .map_err(room_error)?;
        // The listener's own channels lead nowhere: it hears for its members, publishes
        // nothing and takes no key or mute. Their other ends live as long as the session
        // (held by the task below), so that they never read as closed.
        let (to_room_keep, to_room) = mpsc::channel(1);
        let (from_room, _) = mpsc::channel(1);
        let (events, _) = mpsc::channel(1);
        let (dtmf_keep, dtmf) = mpsc::channel(1);
        let (mute_keep, mute) = mpsc::channel(1);
        let (attributes_keep, attributes) = mpsc::channel(1);
        let (leave_keep, leave) = oneshot::channel();
        let io = session::SessionIo {
            to_room,
            from_room,
            events,
            dtmf,
            mute,
            attributes,
            leave,
        };
        let (joins_tx, joins) = mpsc::channel(16);
        let target = session::Target {
            tls: self.tls.clone(),
            url: url.to_owned(),
            token: token.to_owned(),
            auto_subscribe: false,
        };
        let session = session::Session::start(
            target,
            ws,
            join,
            io,
            identity,
            rate,
            self.metrics.clone(),
            &self.ice,
            session::Role::Listener(Box::new(share::Shared::new(joins))),
        )
        .await
        .map_err(|e| RoomError::Unreachable(format!("listener peer connection setup: {e}")))?;
        tracing::info!(room = %room, identity = %identity, "this node's listener joined the room");
        tokio::spawn(async move {
            let _keep = (
                to_room_keep,
                dtmf_keep,
                mute_keep,
                attributes_keep,
                leave_keep,
            );
            session.run(early).await;
        });
        Ok(joins_tx)
    }
}

impl RoomBackend for LiveKitRooms {
    fn join(&self, req: JoinRequest) -> JoinFuture<'_> {
        Box::pin(self.join_room(req))
    }

    fn wait_for_host(&self, room: String, trunk: TrunkId) -> HostFuture<'_> {
        Box::pin(self.watch_for_host(room, trunk))
    }

    fn name(&self) -> &'static str {
        "livekit"
    }
}

/// Dropping it closes the oneshot, which tells the session task to send `Leave` and stop.
struct Membership {
    _leave: oneshot::Sender<()>,
}

fn room_error(e: signal::SignalError) -> RoomError {
    match e {
        signal::SignalError::Refused { .. } => RoomError::Refused(e.to_string()),
        signal::SignalError::Unreachable { .. } | signal::SignalError::NoJoin(_) => {
            RoomError::Unreachable(e.to_string())
        }
    }
}

/// The identity and token of a node's listener of `room`: hidden, subscribe-only, a random
/// identity.
fn mint_listener_token(
    api_key: &str,
    api_secret: &str,
    ttl: Duration,
    room: &str,
) -> Result<(String, String), RoomError> {
    let identity = format!("{}{:016x}", share::LISTENER_PREFIX, rand::random::<u64>());
    let token = AccessToken::with_api_key(api_key, api_secret)
        .with_identity(&identity)
        .with_name("dialin")
        .with_ttl(ttl)
        .with_grants(VideoGrants {
            room_join: true,
            room: room.to_owned(),
            can_publish: Some(false),
            can_subscribe: Some(true),
            can_publish_data: Some(false),
            hidden: true,
            ..Default::default()
        })
        .to_jwt()
        .map_err(|e| RoomError::Refused(format!("minting the listener's access token: {e}")))?;
    Ok((identity, token))
}

fn mint_token(
    api_key: &str,
    api_secret: &str,
    ttl: Duration,
    req: &JoinRequest,
) -> Result<String, RoomError> {
    let attributes: BTreeMap<String, String> = req.attributes.clone();
    let token = AccessToken::with_api_key(api_key, api_secret);
    let token = match &req.room_config {
        Some(config) => token.with_room_config(config.clone()),
        None => token,
    };
    token
        .with_identity(&req.identity)
        .with_name(&req.name)
        .with_metadata(req.metadata.as_deref().unwrap_or_default())
        .with_kind(SIP_KIND)
        .with_attributes(attributes)
        .with_ttl(ttl)
        .with_grants(VideoGrants {
            room_join: true,
            room: req.room.clone(),
            can_publish: Some(true),
            can_subscribe: Some(true),
            can_publish_data: Some(true),
            can_publish_sources: vec!["microphone".to_owned()],
            // To set `sip.callStatus` to `hangup` when the call ends.
            can_update_own_metadata: Some(true),
            ..Default::default()
        })
        .to_jwt()
        .map_err(|e| RoomError::Refused(format!("minting the access token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_api::access_token::TokenVerifier;

    fn request() -> JoinRequest {
        let mut attributes = BTreeMap::new();
        attributes.insert("sip.phoneNumber".to_owned(), "••••1234".to_owned());
        JoinRequest {
            room: "standup".into(),
            identity: "sip_abc".into(),
            name: "Phone ••••1234".into(),
            attributes,
            sample_rate: NARROWBAND_SAMPLE_RATE,
            role: crate::pins::PinRole::Participant,
            metadata: None,
            room_config: None,
        }
    }

    fn participant(
        identity: &str,
        kind: livekit_protocol::participant_info::Kind,
    ) -> livekit_protocol::ParticipantInfo {
        livekit_protocol::ParticipantInfo {
            identity: identity.into(),
            kind: kind as i32,
            state: livekit_protocol::participant_info::State::Active as i32,
            ..Default::default()
        }
    }

    #[test]
    fn hosts_follow_the_configured_rule_and_host_pins() {
        use livekit_protocol::participant_info::{Kind, State};
        let any = HostRule::AnyNonSip;
        assert!(is_host(&participant("alice", Kind::Standard), &any));
        assert!(is_host(&participant("agent", Kind::Agent), &any));
        assert!(!is_host(&participant("sip_CA_1", Kind::Sip), &any));
        assert!(
            !is_host(&participant("sip_CA_2", Kind::Standard), &any),
            "a dialin call by identity"
        );
        assert!(!is_host(&participant("recorder", Kind::Egress), &any));
        let mut gone = participant("bob", Kind::Standard);
        gone.state = State::Disconnected as i32;
        assert!(!is_host(&gone, &any), "a participant who left is no host");
        let mut hidden = participant("observer", Kind::Standard);
        hidden.permission = Some(livekit_protocol::ParticipantPermission {
            hidden: true,
            ..Default::default()
        });
        assert!(!is_host(&hidden, &any), "a hidden participant is no host");
        let mut host_caller = participant("sip_CA_3", Kind::Sip);
        host_caller
            .attributes
            .insert(ROLE_ATTRIBUTE.into(), "host".into());
        assert!(is_host(&host_caller, &any), "a host PIN's caller");
        let rule = HostRule::parse("attribute:role=teacher").expect("rule");
        let mut teacher = participant("t", Kind::Standard);
        assert!(!is_host(&teacher, &rule));
        teacher.attributes.insert("role".into(), "teacher".into());
        assert!(is_host(&teacher, &rule));
        assert!(is_host(&host_caller, &rule));
        assert!(HostRule::parse("attribute:=x").is_err());
        assert!(HostRule::parse("anyone").is_err());
    }

    #[test]
    fn token_is_scoped_to_one_room_with_sip_kind_and_attributes() {
        let jwt = mint_token(
            "key",
            "secret-secret-secret",
            Duration::from_secs(90),
            &request(),
        )
        .unwrap();
        let claims = TokenVerifier::with_api_key("key", "secret-secret-secret")
            .verify(&jwt)
            .unwrap();
        assert_eq!(claims.sub, "sip_abc");
        assert_eq!(claims.name, "Phone ••••1234");
        assert_eq!(claims.kind, "sip");
        assert_eq!(
            claims.attributes.get("sip.phoneNumber").map(String::as_str),
            Some("••••1234")
        );
        assert_eq!(claims.video.room, "standup");
        assert!(claims.video.room_join && !claims.video.room_admin && !claims.video.room_create);
        assert_eq!(
            claims.video.can_publish_sources,
            vec!["microphone".to_owned()]
        );
        assert!(claims.exp - claims.nbf <= 90);
    }

    #[test]
    fn missing_secret_is_refused_at_construction() {
        let config = LiveKitConfig {
            api_secret: None,
            ..LiveKitConfig::default()
        };
        assert!(LiveKitRooms::new(&config).is_err());
    }
}
