//! One call, from the 200 OK to the end (DESIGN.md §Call flow steps 3–6), driven by one task.
//!
//! The task owns everything of the call — its RTP socket and port lease, the media
//! [`CallerLeg`], the PIN menu ([`Ivr`]), the prompt player and, once joined, the
//! [`RoomHandle`] — so nothing on its path is shared or locked. It wakes for: a datagram on the
//! RTP socket, the 20 ms media tick, the menu's deadline, a SIP event routed by the gateway
//! (ACK, BYE, INFO, re-INVITE…), an admin command, a room event, and the results of the
//! PIN lookup and the room join (both run as separate tasks so that the media tick never waits
//! on the store or the room backend).
//!
//! Every way out goes through [`CallTask::finish`]: BYE when the gateway ends the call, the
//! call record completed, metrics counted; the port lease, room membership and registry entry
//! are released by their `Drop`s even if the task panics.

pub mod ivr;
pub mod keypad;
pub mod leg;
pub mod registry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use dialin_media::ports::PortLease;
use dialin_media::prompt::{
    count_speech, key_speech, Clip, PromptCatalog, PromptId, PromptPlayer,
    SampleRate as PromptRate,
};
use dialin_media::tone::HoldMusic;
use dialin_sip::endpoint::{CallKey, EndpointHandle, Event as SipEvent};
use dialin_sip::sdp::{self, AnswerPolicy, LocalMedia, Negotiated, SessionDescription};
use dialin_sip::StatusCode;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::call::registry::CallId;
use crate::call::registry::{CallCommand, CallGuard, CallOutcome, CallQuality, CallState};
use crate::call::keypad::{Command, Keypad, KeypadAction};
use crate::config::{Announce, TrunkConfig};
use crate::call::ivr::{Action, EndReason, Ivr, IvrConfig, Lookup, Prompt};
use crate::call::leg::{CallerLeg, Discard, LegParams, MAX_FRAME, MAX_PACKET};
use crate::pins::{PinRole, RoomName};
use crate::pins::guard::Entry;
use crate::pins::source::Grant;
use crate::privacy::PhoneNumber;
use crate::room::{AttributeUpdate, AudioFrame, JoinRequest, RoomBackend, RoomEvent, RoomHandle};
use crate::serve::Services;
use crate::store::{CallRecordEnd, RtpStats};
use crate::tick::TICK;

/// What the gateway hands to a new call task.
pub struct CallSetup {
    pub id: CallId,
    pub key: CallKey,
    pub trunk: Arc<TrunkConfig>,
    pub caller: PhoneNumber,
    /// The number the caller dialled (Request-URI user, else To user).
    pub called: String,
    /// Participant attributes from the trunk (its `attributes` and the INVITE headers its
    /// `headers_to_attributes` names).
    pub attributes: std::collections::BTreeMap<String, String>,
    pub sip: EndpointHandle,
    pub sip_events: mpsc::UnboundedReceiver<SipEvent>,
    pub guard: CallGuard,
    pub commands: mpsc::Receiver<CallCommand>,
    pub socket: UdpSocket,
    pub lease: PortLease,
    /// Built at answer time when the INVITE carried an offer; `None` for a late offer.
    pub leg: Option<CallerLeg>,
    /// Our offer when the INVITE had none: the caller's answer arrives in the ACK.
    pub pending_offer: Option<sdp::Offer>,
    pub negotiated: Option<Negotiated>,
    pub answer_policy: AnswerPolicy,
    pub local_media: LocalMedia,
    pub leg_template: LegTemplate,
    pub services: Services,
    pub rooms: Arc<dyn RoomBackend>,
    pub prompts: PromptCatalog,
    pub limits: CallLimits,
    pub ivr: IvrConfig,
    pub setup_started: Instant,
    pub started_at: DateTime<Utc>,
    /// Resolves when the gateway starts draining past its timeout: end with a prompt.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Media settings that a late offer needs to build its leg when the ACK arrives.
#[derive(Debug, Clone)]
pub struct LegTemplate {
    pub codec_config: dialin_media::codec::CodecConfig,
    /// Who may send the call's media besides the SDP address.
    pub sources: dialin_media::stream::SourcePolicy,
    pub jitter_min: Duration,
    pub jitter_max: Duration,
}

impl LegTemplate {
    /// Leg parameters for what SDP negotiated.
    pub fn params(&self, n: &Negotiated) -> Option<LegParams> {
        let codec = match n.codec.codec {
            sdp::Codec::Pcmu => dialin_media::codec::CodecKind::Pcmu,
            sdp::Codec::Pcma => dialin_media::codec::CodecKind::Pcma,
            sdp::Codec::G722 => dialin_media::codec::CodecKind::G722,
            sdp::Codec::Opus => dialin_media::codec::CodecKind::Opus,
        };
        let srtp = match &n.srtp {
            Some(s) => {
                let profile = match s.suite {
                    sdp::CryptoSuite::AesCm128HmacSha1_80 => {
                        dialin_media::srtp::SrtpProfile::AesCm128HmacSha1_80
                    }
                    sdp::CryptoSuite::AesCm128HmacSha1_32 => {
                        dialin_media::srtp::SrtpProfile::AesCm128HmacSha1_32
                    }
                    sdp::CryptoSuite::Other(_) => return None,
                };
                Some(crate::call::leg::LegSrtp {
                    profile,
                    local: master_key(&s.local_key_salt),
                    remote: master_key(&s.remote_key_salt),
                })
            }
            None => None,
        };
        Some(LegParams {
            codec,
            payload_type: n.codec.payload_type.get(),
            telephone_event: n.telephone_event.map(|pt| pt.get()),
            telephone_event_rate: n.telephone_event_rate,
            remote: n.remote_rtp,
            sources: self.sources.clone(),
            srtp,
            codec_config: self.codec_config,
            jitter_min: self.jitter_min,
            jitter_max: self.jitter_max,
        })
    }
}

fn master_key(key_salt: &[u8; 30]) -> dialin_media::srtp::MasterKey {
    let mut key = [0u8; 16];
    let mut salt = [0u8; 14];
    key.copy_from_slice(&key_salt[..16]);
    salt.copy_from_slice(&key_salt[16..]);
    dialin_media::srtp::MasterKey::new(key, salt)
}

/// Per-call limits from `[media]`.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub rtp_timeout: Duration,
    pub max_duration: Duration,
}

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Answered; waiting for the ACK (and, for a late offer, the caller's answer).
    AwaitingAck,
    Ivr,
    /// The PIN resolved; the join runs and "joining" plays.
    Joining,
    /// A participant PIN of a room that waits for its host: hold music until one is there,
    /// not yet in the room.
    WaitingForHost,
    InRoom,
    /// A farewell prompt plays, then BYE.
    Leaving(CallOutcome),
}

/// Runs a call to its end. Never panics on peer input; returns how the call ended.
pub async fn run(setup: CallSetup) -> CallOutcome {
    let mut task = CallTask::new(setup);
    let outcome = task.drive().await;
    task.finish(outcome).await;
    outcome
}

struct CallTask {
    s: CallSetup,
    phase: Phase,
    ivr: Option<Ivr>,
    player: PromptPlayer,
    player_active: bool,
    hold: Option<HoldMusic>,
    room: Option<RoomHandle>,
    room_name: Option<RoomName>,
    others_in_room: usize,
    join_rx: Option<oneshot::Receiver<Result<RoomHandle, String>>>,
    join_done_prompt: bool,
    lookup_rx: Option<oneshot::Receiver<Lookup>>,
    /// Says that the lookup in flight waits its turn at the PIN guard.
    queued_rx: Option<oneshot::Receiver<()>>,
    answered_at: Option<DateTime<Utc>>,
    media_started: Instant,
    remote_bye: bool,
    ended_by_sip: bool,
    /// PINs keyed, kept for the call record once the menu is gone.
    pin_attempts: u32,
    /// Resampling state between the leg's rate and the room's.
    up_prev: i16,
    /// The in-room keypad menu.
    keypad: Keypad,
    /// The caller muted itself (`*6`).
    self_muted: bool,
    /// A room admin muted the caller's track.
    room_muted: bool,
    /// Whether the room lets the caller publish (unmute after a room mute).
    can_publish: bool,
    /// `sip.handRaised` is set.
    hand_raised: bool,
    /// Resolves when the room of a waiting participant has its host.
    host_rx: Option<oneshot::Receiver<Result<(), String>>>,
    /// The join to make once the host is there.
    pending_join: Option<Grant>,
    /// When the call's audio figures are next copied to the registry.
    quality_due: Instant,
}

/// How often the registry's audio figures of a call are refreshed.
const QUALITY_EVERY: Duration = Duration::from_secs(1);

/// The participant attribute of a raised hand (absent when lowered).
pub const HAND_RAISED_ATTRIBUTE: &str = "sip.handRaised";
/// The participant attribute of a caller who keyed a host PIN (`host`).
pub const ROLE_ATTRIBUTE: &str = "sip.role";

impl CallTask {
    fn new(s: CallSetup) -> CallTask {
        let rate = s
            .leg
            .as_ref()
            .map(|l| prompt_rate(l.sample_rate().hz()))
            .unwrap_or(PromptRate::Hz8000);
        let keypad = Keypad::new(s.trunk.keys, s.trunk.keypad);
        CallTask {
            s,
            phase: Phase::AwaitingAck,
            ivr: None,
            player: PromptPlayer::new(rate),
            player_active: false,
            hold: None,
            room: None,
            room_name: None,
            others_in_room: 0,
            join_rx: None,
            join_done_prompt: false,
            lookup_rx: None,
            queued_rx: None,
            answered_at: None,
            media_started: Instant::now(),
            remote_bye: false,
            ended_by_sip: false,
            pin_attempts: 0,
            up_prev: 0,
            keypad,
            self_muted: false,
            room_muted: false,
            can_publish: true,
            hand_raised: false,
            host_rx: None,
            pending_join: None,
            quality_due: Instant::now(),
        }
    }

    async fn drive(&mut self) -> CallOutcome {
        let mut buf = vec![0u8; MAX_PACKET];
        let mut out_packet = vec![0u8; MAX_PACKET];
        let mut caller_pcm = [0i16; MAX_FRAME];
        let mut play_pcm = [0i16; MAX_FRAME];
        // On the process-wide grid, so that every call's tick falls in one runtime wake-up.
        let first = tokio::time::Instant::from_std(crate::tick::next_tick(Instant::now()));
        let mut ticker = tokio::time::interval_at(first, TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let hard_end =
            tokio::time::Instant::from_std(self.s.setup_started + self.s.limits.max_duration);
        // RFC 3261 §13.3.1.4: the 2xx is retransmitted for 64·T1 = 32 s waiting for the ACK.
        let ack_deadline = Instant::now() + Duration::from_secs(32);
        loop {
            let ivr_deadline = self.ivr.as_ref().and_then(|i| i.deadline());
            let deadline = match (ivr_deadline, self.keypad.deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wake = deadline.map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                ev = self.s.sip_events.recv() => {
                    let Some(ev) = ev else { return CallOutcome::Error };
                    if let Some(outcome) = self.on_sip(ev).await { return outcome; }
                }
                cmd = self.s.commands.recv() => {
                    if let Some(CallCommand::HangUp) = cmd {
                        info!(call = %self.s.id, "hung up by an admin");
                        // Callers are told, never just cut off (DESIGN.md: no silent failures).
                        if let Some(o) = self.leave(CallOutcome::AdminHangup, Some(PromptId::Goodbye)) { return o; }
                    }
                }
                _ = self.s.shutdown.changed() => {
                    if *self.s.shutdown.borrow() {
                        if let Some(o) = self.leave(CallOutcome::Shutdown, Some(PromptId::Goodbye)) { return o; }
                    }
                }
                r = recv_opt(&self.s.socket, &mut buf) => {
                    if let Ok((n, from)) = r {
                        let now = Instant::now();
                        if let Some(leg) = self.s.leg.as_mut() {
                            if let Err(Discard::ForeignSource) = leg.on_datagram(&mut buf, n, from, now) {
                                self.s.services.metrics.rtp_foreign_packet();
                            }
                        }
                        self.drain_digits(now);
                    }
                }
                at = ticker.tick() => {
                    let now = Instant::now();
                    self.s.services.overload.record_tick(now.saturating_duration_since(at.into_std()), now);
                    if let Some(o) = self.tick(now, &mut caller_pcm, &mut play_pcm, &mut out_packet).await { return o; }
                    if self.phase == Phase::AwaitingAck && now >= ack_deadline {
                        return CallOutcome::Error;
                    }
                }
                _ = sleep_opt(wake) => {
                    let now = Instant::now();
                    if let Some(ivr) = self.ivr.as_mut() { ivr.on_timeout(now); }
                    self.keypad.on_timeout(now);
                    self.run_keypad();
                    if let Some(o) = self.run_ivr_actions(now) { return o; }
                }
                res = recv_host(&mut self.host_rx) => {
                    if let Some(o) = self.on_host(res) { return o; }
                }
                _ = recv_queued(&mut self.queued_rx) => {
                    let now = Instant::now();
                    if let Some(ivr) = self.ivr.as_mut() { ivr.on_queued(now); }
                    if let Some(o) = self.run_ivr_actions(now) { return o; }
                }
                res = recv_once(&mut self.lookup_rx) => {
                    let now = Instant::now();
                    self.queued_rx = None;
                    if self.phase == Phase::Ivr { self.hold = None; }
                    if matches!(res, Lookup::Invalid | Lookup::LockedOut) { self.s.services.pin_refused(&self.s.trunk.id, now); }
                    if let Some(ivr) = self.ivr.as_mut() { ivr.on_lookup(res, now); }
                    if let Some(o) = self.run_ivr_actions(now) { return o; }
                }
                res = recv_join(&mut self.join_rx) => {
                    if let Some(o) = self.on_joined(res) { return o; }
                }
                ev = room_event(&mut self.room) => {
                    if let Some(o) = self.on_room_event(ev) { return o; }
                }
                _ = tokio::time::sleep_until(hard_end) => {
                    info!(call = %self.s.id, "maximum call duration reached");
                    if let Some(o) = self.leave(CallOutcome::MaxDuration, Some(PromptId::Goodbye)) { return o; }
                }
            }
        }
    }

    async fn on_sip(&mut self, ev: SipEvent) -> Option<CallOutcome> {
        match ev {
            SipEvent::Acked { body, .. } => {
                if self.phase != Phase::AwaitingAck {
                    return None;
                }
                if let Some(offer) = self.s.pending_offer.take() {
                    let Some((leg, negotiated)) =
                        body.as_ref().and_then(|b| self.leg_from_answer(&offer, b))
                    else {
                        warn!(call = %self.s.id, "late-offer call: no usable SDP answer in the ACK");
                        return Some(CallOutcome::Error);
                    };
                    // Kept for re-INVITEs: hold, a new address, session refreshes.
                    self.s.negotiated = Some(negotiated);
                    self.player = PromptPlayer::new(prompt_rate(leg.sample_rate().hz()));
                    self.s.leg = Some(leg);
                }
                self.answered_at = Some(Utc::now());
                self.media_started = Instant::now();
                self.phase = Phase::Ivr;
                self.s.guard.set_state(CallState::CollectingPin);
                self.ivr = Some(Ivr::start(self.s.ivr.clone(), Instant::now()));
                self.run_ivr_actions(Instant::now())
            }
            SipEvent::Info {
                content_type, body, ..
            } => {
                let ct = content_type
                    .as_ref()
                    .map(|t| t.as_str().to_ascii_lowercase())
                    .unwrap_or_default();
                if let Some(key) = info_digit(&ct, &body) {
                    let now = Instant::now();
                    if let Some(leg) = self.s.leg.as_mut() {
                        leg.on_info_digit(key, now);
                    }
                    self.drain_digits(now);
                }
                None
            }
            SipEvent::ReInvite { body, .. } => {
                let answer = self.renegotiate(&body);
                let _ = self.s.sip.respond_reinvite(self.s.key, answer);
                None
            }
            SipEvent::Bye { .. } | SipEvent::Cancelled { .. } => {
                self.remote_bye = true;
                self.ended_by_sip = true;
                Some(match self.phase {
                    Phase::InRoom => CallOutcome::CallerHangup,
                    // Hanging up during the farewell does not change why the call ended.
                    Phase::Leaving(o) => o,
                    _ => CallOutcome::AbandonedInIvr,
                })
            }
            SipEvent::AckTimeout { .. } | SipEvent::SessionExpired { .. } => {
                self.ended_by_sip = true;
                Some(CallOutcome::Error)
            }
            SipEvent::CallEnded { .. } => {
                self.ended_by_sip = true;
                Some(match self.phase {
                    Phase::InRoom => CallOutcome::CallerHangup,
                    Phase::Leaving(o) => o,
                    _ => CallOutcome::AbandonedInIvr,
                })
            }
            SipEvent::IncomingCall { .. } => None,
        }
    }

    fn leg_from_answer(&self, offer: &sdp::Offer, body: &Bytes) -> Option<(CallerLeg, Negotiated)> {
        let text = std::str::from_utf8(body).ok()?;
        let answer = SessionDescription::parse(text).ok()?;
        let n = sdp::accept_answer(offer, &answer).ok()?;
        let params = self.s.leg_template.params(&n)?;
        Some((CallerLeg::new(&params).ok()?, n))
    }

    /// A re-INVITE/UPDATE offer: hold/unhold or a new address. The codec stays.
    fn renegotiate(&mut self, body: &Bytes) -> Result<Bytes, StatusCode> {
        let text = std::str::from_utf8(body).map_err(|_| StatusCode(400))?;
        if text.trim().is_empty() {
            // A session refresh without an offer: repeat our last answer.
            let local = self.bump_version();
            return self
                .s
                .negotiated
                .as_ref()
                .map(|n| Bytes::from(n.answer_sdp(&local)))
                .ok_or(StatusCode(488));
        }
        let offer = SessionDescription::parse(text).map_err(|_| StatusCode(400))?;
        let next = match self.s.negotiated.as_ref() {
            Some(prev) => prev.renegotiate(&offer, &self.s.answer_policy),
            None => sdp::negotiate(&offer, &self.s.answer_policy),
        }
        .map_err(|_| StatusCode(488))?;
        let local = self.bump_version();
        let answer = Bytes::from(next.answer_sdp(&local));
        debug!(call = %self.s.id, hold = ?next.hold, "re-INVITE answered");
        let held = next.hold == sdp::HoldState::HeldByRemote;
        if held != self.on_hold() {
            info!(call = %self.s.id, held, "the caller put the call on hold or resumed it");
            self.tell_room_muted(held || self.caller_muted());
        }
        if let Some(leg) = self.s.leg.as_mut() {
            // A new `c=`/`m=` address moves our RTP there (transfers, media anchoring).
            leg.retarget(next.remote_rtp);
        }
        self.s.negotiated = Some(next);
        Ok(answer)
    }

    fn bump_version(&mut self) -> LocalMedia {
        self.s.local_media.version += 1;
        self.s.local_media.clone()
    }

    async fn tick(
        &mut self,
        now: Instant,
        caller_pcm: &mut [i16; MAX_FRAME],
        play_pcm: &mut [i16; MAX_FRAME],
        out_packet: &mut [u8],
    ) -> Option<CallOutcome> {
        let on_hold = self.on_hold();
        let Some(leg) = self.s.leg.as_mut() else {
            return None;
        };
        if self.phase == Phase::AwaitingAck {
            return None;
        }
        // RTP inactivity (DESIGN.md §Call flow step 6), counted from the answer.
        let last = leg.last_received().unwrap_or(self.media_started);
        if now.saturating_duration_since(last) >= self.s.limits.rtp_timeout && !on_hold {
            info!(call = %self.s.id, "no RTP from the caller: ending the call");
            return Some(CallOutcome::RtpTimeout);
        }
        if now >= self.quality_due {
            self.quality_due = now + QUALITY_EVERY;
            let st = leg.stats();
            self.s.guard.set_quality(CallQuality {
                packets_received: st.packets_received,
                packets_lost: u64::try_from(st.packets_lost.max(0)).unwrap_or(0),
                late_frames: st.late_packets,
                jitter_ms: st.jitter_ms,
            });
        }
        let n = leg.frame_len();
        let leg_rate = leg.sample_rate().hz();
        let has_audio = leg.pull_frame(now, &mut caller_pcm[..n]);
        self.drain_digits(now);

        // Caller → room. A caller holding the call (`sendonly`/`inactive` from its side) is
        // not mixed: its hold music must not play into the meeting.
        if let (Phase::InRoom, Some(room)) = (self.phase, self.room.as_ref()) {
            if has_audio && !on_hold && !self.self_muted && !self.room_muted {
                let mut frame = to_room_rate(&caller_pcm[..n], leg_rate, room.sample_rate);
                if let Some(opus) = self.s.leg.as_ref().and_then(|l| l.forwardable_payload()) {
                    frame = frame.with_opus(opus);
                }
                if room.to_room.try_send(frame).is_err() {
                    self.s.services.metrics.room_frames_dropped(1);
                }
            }
        }

        // Room / prompts → caller.
        let out = &mut play_pcm[..n];
        out.fill(0);
        if self.player_active {
            if let Some(room) = self.room.as_mut() {
                // A prompt has the caller's ear: the room's frames of this tick are not
                // played, and are taken so that the room's side does not count them lost.
                while room.from_room.try_recv().is_ok() {}
            }
            let still = self.player.next_frame(out);
            if !still && !self.player.is_playing() {
                self.player_active = false;
                if let Some(o) = self.on_prompt_finished(now) {
                    return Some(o);
                }
            }
        } else if self.phase == Phase::InRoom {
            let mut got = false;
            if let Some(room) = self.room.as_mut() {
                if let (Some(frame), _) = crate::room::next_frame(&mut room.from_room) {
                    from_room_rate(
                        frame.samples(),
                        room.sample_rate,
                        out,
                        leg_rate,
                        &mut self.up_prev,
                    );
                    got = true;
                }
            }
            if !got && self.others_in_room == 0 {
                if let Some(hold) = self.hold.as_mut() {
                    hold.next_frame(out);
                }
            }
        } else if let Some(hold) = self.hold.as_mut() {
            // A PIN waiting its turn at the guard.
            hold.next_frame(out);
        }
        let may_send = self.may_send();
        let leg = self.s.leg.as_mut()?;
        if !may_send {
            // RFC 3264 §6.1: answering `sendonly`/`inactive` (hold), we send nothing.
            return None;
        }
        if let Some(len) = leg.encode_frame(out, now, out_packet) {
            let _ = self.s.socket.try_send_to(&out_packet[..len], leg.remote());
        }
        None
    }

    /// Whether our side of the negotiated media may send (`sendrecv` or `sendonly`).
    fn may_send(&self) -> bool {
        self.s.negotiated.as_ref().map_or(true, |n| {
            matches!(
                n.local_direction,
                sdp::Direction::SendRecv | sdp::Direction::SendOnly
            )
        })
    }

    /// Shows the caller's track muted (or live again) where the room has such a thing.
    fn tell_room_muted(&self, muted: bool) {
        if let Some(tx) = self.room.as_ref().and_then(|r| r.mute.as_ref()) {
            let _ = tx.try_send(muted);
        }
    }

    fn on_hold(&self) -> bool {
        self.s
            .negotiated
            .as_ref()
            .is_some_and(|n| n.hold == sdp::HoldState::HeldByRemote)
    }

    fn drain_digits(&mut self, now: Instant) {
        // Media may come before the ACK (a caller starts sending on our 200): digits keyed
        // then stay queued in the leg until the IVR starts, rather than being dropped.
        if self.phase == Phase::AwaitingAck {
            return;
        }
        let Some(leg) = self.s.leg.as_mut() else {
            return;
        };
        while let Some(key) = leg.poll_digit() {
            match self.phase {
                Phase::Ivr => {
                    if let Some(ivr) = self.ivr.as_mut() {
                        ivr.on_key(key, now);
                    }
                }
                Phase::InRoom => self.keypad.on_key(key, now),
                _ => {}
            }
        }
        self.run_keypad();
        if self.phase == Phase::Ivr {
            // Actions (barge-in, lookups) are applied right away; the outcome, if any, is
            // picked up at the next tick through the IVR's state.
            let _ = self.run_ivr_actions(now);
        }
    }

    fn on_prompt_finished(&mut self, now: Instant) -> Option<CallOutcome> {
        match self.phase {
            Phase::Ivr => {
                if let Some(ivr) = self.ivr.as_mut() {
                    ivr.on_prompt_finished(now);
                }
                self.run_ivr_actions(now)
            }
            Phase::Joining => {
                self.join_done_prompt = true;
                None
            }
            Phase::WaitingForHost => {
                self.start_hold_music();
                None
            }
            Phase::InRoom => {
                if self.others_in_room == 0 {
                    self.start_hold_music();
                }
                None
            }
            Phase::Leaving(outcome) => Some(outcome),
            Phase::AwaitingAck => None,
        }
    }

    fn run_ivr_actions(&mut self, _now: Instant) -> Option<CallOutcome> {
        loop {
            let action = self.ivr.as_mut()?.poll_action()?;
            match action {
                Action::Play(p) => self.play(prompt_id(p)),
                Action::HoldMusic => self.start_hold_music(),
                Action::StopPrompt => {
                    self.player.interrupt();
                    self.player_active = false;
                }
                Action::Resolve(entry) => self.start_lookup(entry.digits()),
                Action::Join(grant) => self.start_join(grant),
                Action::HangUp(reason) => {
                    let outcome = match reason {
                        EndReason::TooManyAttempts => CallOutcome::PinFailed,
                        EndReason::NoInput | EndReason::IvrTimeLimit => CallOutcome::NoInput,
                        EndReason::LockedOut => CallOutcome::LockedOut,
                        EndReason::ServiceUnavailable => CallOutcome::Error,
                    };
                    return Some(outcome);
                }
            }
        }
    }

    fn play(&mut self, id: PromptId) {
        self.player.interrupt();
        let prompt = self.s.prompts.get(id);
        self.player.play(prompt);
        self.player_active = true;
    }

    fn start_hold_music(&mut self) {
        let rate = self.player.rate();
        self.hold.get_or_insert_with(|| HoldMusic::new(rate));
    }

    fn start_lookup(&mut self, digits: &str) {
        let (tx, rx) = oneshot::channel();
        let (queued_tx, queued_rx) = oneshot::channel();
        self.lookup_rx = Some(rx);
        self.queued_rx = Some(queued_rx);
        let guard = self.s.services.guard.clone();
        let metrics = self.s.services.metrics.clone();
        let namespace = self.s.trunk.pin_namespace.clone();
        let trunk = self.s.trunk.id.clone();
        let caller = self.s.caller.clone();
        let digits = digits.to_owned();
        let call = self.s.id.clone();
        let called = self.s.called.clone();
        let expose_caller = self.s.trunk.expose_phone_number;
        tokio::spawn(async move {
            let entry = Entry {
                trunk: &trunk,
                namespace: &namespace,
                caller: &caller,
                digits: &digits,
                called: (!called.is_empty()).then_some(called.as_str()),
                expose_caller,
                call_id: call.as_str(),
            };
            let result = guard
                .judge(entry, &metrics, move || {
                    let _ = queued_tx.send(());
                })
                .await;
            debug!(call = %call, result = ?lookup_label(&result), "PIN lookup");
            let _ = tx.send(result);
        });
    }

    fn start_join(&mut self, grant: Grant) {
        if grant.wait_for_host && grant.role == PinRole::Participant {
            self.wait_for_host(grant);
        } else {
            self.join(grant);
        }
    }

    /// Holds the caller, not yet in the room, until the room has a host.
    fn wait_for_host(&mut self, grant: Grant) {
        let room = grant.room.clone();
        self.phase = Phase::WaitingForHost;
        self.s.guard.set_state(CallState::WaitingForHost);
        if let Ok(name) = RoomName::parse(&room) {
            self.s.guard.set_room(Some(name.clone()));
            self.room_name = Some(name);
        }
        info!(call = %self.s.id, "waiting for the room's host");
        self.play(PromptId::WaitForHost);
        let (tx, rx) = oneshot::channel();
        self.host_rx = Some(rx);
        let rooms = self.s.rooms.clone();
        let watched = room.clone();
        let trunk = self.s.trunk.id.clone();
        let mut tx = tx;
        tokio::spawn(async move {
            let wait = rooms.wait_for_host(watched, trunk);
            tokio::pin!(wait);
            // Stops watching as soon as the call is gone.
            let res = tokio::select! {
                r = &mut wait => r.map_err(|e| e.to_string()),
                _ = tx.closed() => return,
            };
            let _ = tx.send(res);
        });
        self.pending_join = Some(grant);
    }

    fn on_host(&mut self, res: Result<(), String>) -> Option<CallOutcome> {
        let pending = self.pending_join.take()?;
        match res {
            Ok(()) => {
                info!(call = %self.s.id, "the host is there: joining");
                self.hold = None;
                self.play(PromptId::Joining);
                self.join(pending);
                None
            }
            Err(e) => {
                warn!(call = %self.s.id, error = %e, "watching for the room's host failed");
                self.leave(CallOutcome::JoinFailed, Some(PromptId::ServiceUnavailable))
            }
        }
    }

    fn join(&mut self, grant: Grant) {
        let Grant {
            room,
            participant_name,
            participant_identity,
            attributes: extra,
            metadata,
            role,
            hide_phone_number,
            room_config,
            ..
        } = grant;
        self.phase = Phase::Joining;
        self.s.guard.set_state(CallState::Joining);
        if let Ok(name) = RoomName::parse(&room) {
            self.s.guard.set_room(Some(name.clone()));
            self.room_name = Some(name);
        }
        let (tx, rx) = oneshot::channel();
        self.join_rx = Some(rx);
        let rooms = self.s.rooms.clone();
        // The trunk's and the PIN source's own attributes first; dialin's `sip.*` ones over
        // them: no source can make a caller look like another call.
        let mut attributes = self.s.attributes.clone();
        attributes.extend(extra.into_iter().filter(|(k, _)| !k.starts_with("sip.")));
        attributes.insert("sip.callID".to_owned(), self.s.id.as_str().to_owned());
        attributes.insert(
            "sip.trunkID".to_owned(),
            self.s.trunk.id.as_str().to_owned(),
        );
        let number = if self.s.trunk.expose_phone_number {
            self.s.caller.expose().to_owned()
        } else {
            self.s.caller.masked()
        };
        if !hide_phone_number {
            attributes.insert("sip.phoneNumber".to_owned(), number);
        }
        attributes.insert("sip.callStatus".to_owned(), "active".to_owned());
        if role == PinRole::Host {
            attributes.insert(ROLE_ATTRIBUTE.to_owned(), PinRole::Host.as_str().to_owned());
        }
        let req = JoinRequest {
            room,
            identity: participant_identity.unwrap_or_else(|| format!("sip_{}", self.s.id.as_str())),
            metadata,
            room_config,
            name: participant_name.unwrap_or_else(|| format!("Phone {}", self.s.caller.masked())),
            attributes,
            sample_rate: self.s.leg.as_ref().map_or(16_000, |l| l.sample_rate().hz()),
            role,
        };
        tokio::spawn(async move {
            let res = rooms.join(req).await.map_err(|e| e.to_string());
            let _ = tx.send(res);
        });
    }

    fn on_joined(&mut self, res: Result<RoomHandle, String>) -> Option<CallOutcome> {
        match res {
            Ok(handle) => {
                self.others_in_room = handle.others_at_join;
                self.room = Some(handle);
                self.phase = Phase::InRoom;
                if self.on_hold() {
                    self.tell_room_muted(true);
                }
                self.s.guard.set_state(CallState::InRoom);
                if let Some(leg) = self.s.leg.as_mut() {
                    // After the PIN, speech must not be read as keys.
                    leg.set_inband_detection(false, 8000);
                }
                if let Some(start) = Some(self.s.setup_started) {
                    self.s.services.metrics.call_setup(start.elapsed());
                }
                info!(call = %self.s.id, others = self.others_in_room, "joined the room");
                if self.others_in_room == 0 {
                    // Let "joining" finish, then "you are the first participant", then music.
                    if self.player_active {
                        self.player
                            .play(self.s.prompts.get(PromptId::FirstParticipant));
                    } else {
                        self.play(PromptId::FirstParticipant);
                    }
                    self.start_hold_music();
                }
                None
            }
            Err(e) => {
                warn!(call = %self.s.id, error = %e, "joining the room failed");
                self.leave(CallOutcome::JoinFailed, Some(PromptId::ServiceUnavailable))
            }
        }
    }

    fn on_room_event(&mut self, ev: Option<RoomEvent>) -> Option<CallOutcome> {
        match ev {
            Some(RoomEvent::ParticipantJoined { .. }) => {
                self.others_in_room += 1;
                self.hold = None;
                self.cue(Clip::JoinTone);
                None
            }
            Some(RoomEvent::ParticipantLeft { .. }) => {
                self.others_in_room = self.others_in_room.saturating_sub(1);
                self.cue(Clip::LeaveTone);
                if self.others_in_room == 0 {
                    self.start_hold_music();
                }
                None
            }
            Some(RoomEvent::MutedByRoom { muted }) => {
                self.room_muted = muted;
                // The room's word on our track: follow it, keeping our own mute.
                self.tell_room_muted(self.on_hold() || self.caller_muted());
                self.play(if muted {
                    PromptId::MutedByRoom
                } else {
                    PromptId::Unmuted
                });
                None
            }
            Some(RoomEvent::CanPublish(allowed)) => {
                self.can_publish = allowed;
                None
            }
            Some(RoomEvent::Closed) | Some(RoomEvent::Removed) | None => {
                info!(call = %self.s.id, "the meeting has ended");
                self.room = None;
                self.leave(CallOutcome::RoomEnded, Some(PromptId::MeetingEnded))
            }
        }
    }

    fn caller_muted(&self) -> bool {
        self.self_muted || self.room_muted
    }

    /// Carries out what the keypad decided, in key order.
    fn run_keypad(&mut self) {
        while let Some(action) = self.keypad.poll() {
            if self.phase != Phase::InRoom {
                continue;
            }
            match action {
                KeypadAction::Dtmf(key) => {
                    if let Some(tx) = self.room.as_ref().and_then(|r| r.dtmf.as_ref()) {
                        let _ = tx.try_send(key);
                    }
                }
                KeypadAction::Command(Command::Mute) => self.toggle_mute(),
                KeypadAction::Command(Command::Count) => self.say_count(),
                KeypadAction::Command(Command::Hand) => self.toggle_hand(),
                KeypadAction::Command(Command::Help) => self.say_help(),
            }
        }
    }

    fn toggle_mute(&mut self) {
        if self.caller_muted() {
            if self.room_muted && !self.can_publish {
                info!(call = %self.s.id, "unmute refused: the room does not let the caller publish");
                self.play(PromptId::UnmuteNotAllowed);
                return;
            }
            self.self_muted = false;
            self.room_muted = false;
            self.tell_room_muted(self.on_hold());
            info!(call = %self.s.id, "the caller unmuted itself");
            self.play(PromptId::Unmuted);
        } else {
            self.self_muted = true;
            self.tell_room_muted(true);
            info!(call = %self.s.id, "the caller muted itself");
            self.play(PromptId::Muted);
        }
    }

    fn toggle_hand(&mut self) {
        self.hand_raised = !self.hand_raised;
        if let Some(tx) = self.room.as_ref().and_then(|r| r.attributes.as_ref()) {
            let _ = tx.try_send(AttributeUpdate {
                key: HAND_RAISED_ATTRIBUTE,
                value: self.hand_raised.then_some("true"),
            });
        }
        info!(call = %self.s.id, raised = self.hand_raised, "the caller's hand");
        self.play(if self.hand_raised {
            PromptId::HandRaised
        } else {
            PromptId::HandLowered
        });
    }

    /// "There are N participants", counting the caller.
    fn say_count(&mut self) {
        let clips = count_speech(self.s.prompts.language(), self.others_in_room + 1);
        self.player.interrupt();
        self.player.play_clips(&self.s.prompts, &clips);
        self.player_active = self.player.is_playing();
    }

    /// Each command's phrase and its keys, as configured.
    fn say_help(&mut self) {
        self.player.interrupt();
        let keys = *self.keypad.keys();
        for command in Command::ALL {
            let phrase = match command {
                Command::Mute => PromptId::HelpMute,
                Command::Count => PromptId::HelpCount,
                Command::Hand => PromptId::HelpHand,
                Command::Help => PromptId::HelpHelp,
            };
            self.player.play(self.s.prompts.get(phrase));
            self.player
                .play_clips(&self.s.prompts, &key_speech(keys.of(command).as_str()));
        }
        self.player_active = self.player.is_playing();
    }

    /// A join or leave cue for the caller's ear only (never into the room), after whatever
    /// the caller is hearing from us.
    fn cue(&mut self, clip: Clip) {
        if self.s.trunk.announce != Announce::Tones || self.phase != Phase::InRoom {
            return;
        }
        if let Some(samples) = self.s.prompts.clip(clip, self.player.rate()) {
            self.player.play_samples(Arc::clone(samples));
            self.player_active = true;
        }
    }

    /// Plays a farewell prompt, then the call ends (BYE) when it finishes.
    fn leave(&mut self, outcome: CallOutcome, prompt: Option<PromptId>) -> Option<CallOutcome> {
        if matches!(self.phase, Phase::Leaving(_)) {
            return None;
        }
        self.room = None;
        self.hold = None;
        if let Some(ivr) = self.ivr.take() {
            self.pin_attempts = ivr.entries();
        }
        match (prompt, self.s.leg.is_some()) {
            (Some(p), true) => {
                self.phase = Phase::Leaving(outcome);
                self.play(p);
                None
            }
            _ => Some(outcome),
        }
    }

    async fn finish(&mut self, outcome: CallOutcome) {
        if !self.ended_by_sip {
            let _ = self.s.sip.hangup(self.s.key);
        }
        self.room = None;
        let stats = self.s.leg.as_ref().map(|l| l.stats()).unwrap_or_default();
        let metrics = &self.s.services.metrics;
        metrics.call_ended(outcome);
        metrics.rtp_packets_received(stats.packets_received);
        metrics.rtp_packets_lost(u64::try_from(stats.packets_lost.max(0)).unwrap_or(0));
        metrics.media_late_frames(stats.late_packets);
        let end = CallRecordEnd {
            outcome,
            room: self.room_name.clone(),
            answered_at: self.answered_at,
            ended_at: Utc::now(),
            pin_attempts: self
                .ivr
                .as_ref()
                .map(|i| i.entries())
                .unwrap_or(self.pin_attempts),
            rtp: RtpStats {
                packets_received: stats.packets_received,
                packets_lost: u64::try_from(stats.packets_lost.max(0)).unwrap_or(0),
                jitter_ms: stats.jitter_ms,
                late_frames: stats.late_packets,
            },
        };
        if let Err(e) = self
            .s
            .services
            .store
            .complete_call_record(&self.s.id, &end)
            .await
        {
            warn!(call = %self.s.id, error = %e, "could not complete the call record");
        }
        info!(call = %self.s.id, outcome = outcome.as_str(), caller = %self.s.caller.masked(), "call ended");
    }
}

fn lookup_label(l: &Lookup) -> &'static str {
    match l {
        Lookup::Room { .. } => "room",
        Lookup::Invalid => "invalid",
        Lookup::LockedOut => "locked_out",
        Lookup::Unavailable => "unavailable",
    }
}

/// The key carried by a SIP INFO body (`application/dtmf-relay`: `Signal=5`;
/// `application/dtmf`: the key alone).
fn info_digit(content_type: &str, body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let value = if content_type.starts_with("application/dtmf-relay") {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })?
    } else if content_type.starts_with("application/dtmf") {
        text.trim()
    } else {
        return None;
    };
    let mut chars = value.chars();
    let c = chars.next()?;
    if chars.next().is_some() {
        // Numeric event codes (10 = *, 11 = #) as some PBXs send them.
        return match value {
            "10" => Some('*'),
            "11" => Some('#'),
            _ => None,
        };
    }
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D' | 'a'..='d').then(|| c.to_ascii_uppercase())
}

fn prompt_id(p: Prompt) -> PromptId {
    match p {
        Prompt::WelcomeEnterPin => PromptId::WelcomeEnterPin,
        Prompt::InvalidPin => PromptId::InvalidPin,
        Prompt::TooManyAttemptsGoodbye => PromptId::TooManyAttemptsGoodbye,
        Prompt::Joining => PromptId::Joining,
        Prompt::LockedOut => PromptId::LockedOut,
        Prompt::ServiceUnavailable => PromptId::ServiceUnavailable,
        Prompt::Goodbye => PromptId::Goodbye,
        Prompt::PleaseHold => PromptId::PleaseHold,
    }
}

fn prompt_rate(hz: u32) -> PromptRate {
    if hz >= 16_000 {
        PromptRate::Hz16000
    } else {
        PromptRate::Hz8000
    }
}

/// The caller's frame at the room's rate: 2:1 decimation with a short low-pass (the average
/// of three samples) for 16 kHz legs in 8 kHz rooms, and sample repetition otherwise.
fn to_room_rate(pcm: &[i16], leg_hz: u32, room_hz: u32) -> AudioFrame {
    if leg_hz == room_hz {
        return AudioFrame::from_samples(pcm);
    }
    let mut tmp = [0i16; MAX_FRAME];
    if leg_hz == 2 * room_hz {
        let n = (pcm.len() / 2).min(MAX_FRAME);
        for (i, out) in tmp.iter_mut().take(n).enumerate() {
            let a = i32::from(pcm[2 * i]);
            let b = i32::from(*pcm.get(2 * i + 1).unwrap_or(&pcm[2 * i]));
            let c = i32::from(*pcm.get(2 * i + 2).unwrap_or(&pcm[2 * i]));
            *out = ((a + 2 * b + c) / 4) as i16;
        }
        return AudioFrame::from_samples(&tmp[..n]);
    }
    if room_hz == 2 * leg_hz {
        let n = (pcm.len() * 2).min(MAX_FRAME);
        for (i, out) in tmp.iter_mut().take(n).enumerate() {
            *out = pcm[i / 2];
        }
        return AudioFrame::from_samples(&tmp[..n]);
    }
    AudioFrame::from_samples(pcm)
}

/// The room's frame at the leg's rate into `out` (linear interpolation up, pair average down).
fn from_room_rate(room: &[i16], room_hz: u32, out: &mut [i16], leg_hz: u32, prev: &mut i16) {
    if room_hz == leg_hz {
        let n = room.len().min(out.len());
        out[..n].copy_from_slice(&room[..n]);
        return;
    }
    if leg_hz == 2 * room_hz {
        for (i, &s) in room.iter().enumerate() {
            let mid = ((i32::from(*prev) + i32::from(s)) / 2) as i16;
            if let Some(o) = out.get_mut(2 * i) {
                *o = mid;
            }
            if let Some(o) = out.get_mut(2 * i + 1) {
                *o = s;
            }
            *prev = s;
        }
        return;
    }
    if room_hz == 2 * leg_hz {
        for (i, o) in out.iter_mut().enumerate() {
            let a = i32::from(*room.get(2 * i).unwrap_or(&0));
            let b = i32::from(*room.get(2 * i + 1).unwrap_or(&0));
            *o = ((a + b) / 2) as i16;
        }
    }
}

async fn recv_opt(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    sock.recv_from(buf).await
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Waits on an optional one-shot; completes once, then the slot is emptied.
async fn recv_once<T: Default>(slot: &mut Option<oneshot::Receiver<T>>) -> T {
    match slot.as_mut() {
        Some(rx) => {
            let v = rx.await.unwrap_or_default();
            *slot = None;
            v
        }
        None => std::future::pending().await,
    }
}

/// Resolves once the guard says the lookup waits its turn; never when it does not.
async fn recv_queued(slot: &mut Option<oneshot::Receiver<()>>) {
    match slot.as_mut() {
        Some(rx) => {
            let queued = rx.await.is_ok();
            *slot = None;
            if !queued {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn recv_join(
    slot: &mut Option<oneshot::Receiver<Result<RoomHandle, String>>>,
) -> Result<RoomHandle, String> {
    match slot.as_mut() {
        Some(rx) => {
            let v = rx
                .await
                .unwrap_or_else(|_| Err("the join task ended".to_owned()));
            *slot = None;
            v
        }
        None => std::future::pending().await,
    }
}

/// Resolves with the host watch's result; never when none runs.
async fn recv_host(slot: &mut Option<oneshot::Receiver<Result<(), String>>>) -> Result<(), String> {
    match slot.as_mut() {
        Some(rx) => {
            let v = rx
                .await
                .unwrap_or_else(|_| Err("the host watch ended".to_owned()));
            *slot = None;
            v
        }
        None => std::future::pending().await,
    }
}

async fn room_event(room: &mut Option<RoomHandle>) -> Option<RoomEvent> {
    match room.as_mut() {
        Some(r) => r.events.recv().await,
        None => std::future::pending().await,
    }
}

impl Default for Lookup {
    fn default() -> Self {
        Lookup::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_bodies_give_their_key() {
        assert_eq!(
            info_digit("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"),
            Some('5')
        );
        assert_eq!(
            info_digit("application/dtmf-relay", b"Signal= #\r\n"),
            Some('#')
        );
        assert_eq!(info_digit("application/dtmf", b"*"), Some('*'));
        assert_eq!(
            info_digit("application/dtmf-relay", b"Signal=11\r\n"),
            Some('#')
        );
        assert_eq!(info_digit("application/dtmf-relay", b"Duration=160"), None);
        assert_eq!(info_digit("text/plain", b"5"), None);
        assert_eq!(info_digit("application/dtmf", b"x"), None);
        assert_eq!(info_digit("application/dtmf", &[0xff, 0xfe]), None);
    }

    #[test]
    fn rate_conversion_keeps_a_tone_level() {
        let tone: Vec<i16> = (0..320)
            .map(|n| {
                (8000.0 * (2.0 * std::f32::consts::PI * 440.0 * n as f32 / 16000.0).sin()) as i16
            })
            .collect();
        let down = to_room_rate(&tone, 16000, 8000);
        assert_eq!(down.samples().len(), 160);
        let rms = |s: &[i16]| {
            (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
        };
        let ratio = rms(down.samples()) / rms(&tone);
        assert!((0.85..1.05).contains(&ratio), "ratio {ratio}");
        let mut up = [0i16; 320];
        let mut prev = 0;
        from_room_rate(down.samples(), 8000, &mut up, 16000, &mut prev);
        let ratio = rms(&up[2..]) / rms(&tone);
        assert!((0.8..1.05).contains(&ratio), "ratio {ratio}");
    }
}
