//! A phone on a SIP trunk, in the test process: it calls the gateway and answers calls.
//!
//! The far end of dialin's call flow as tests see it. [`Caller::dial`] places a call the
//! way a carrier's phone does (RFC 3261 §13.2 INVITE client with §17.1.1 Timer A
//! retransmission over UDP, digest answers to 401/407 per RFC 7616, CANCEL per §9.1, ACK
//! per §13.2.2.4 and §17.1.1.3), with an SDP offer (or a late offer taken from the 200,
//! RFC 3261 §13.2.1) built by `dialin_sip::sdp`. The established [`Call`] is a background
//! task owning the dialog and one RTP socket: it sends a 20 ms frame every 20 ms from a
//! source the test can switch at any time (silence, a tone, PCM, DTMF in three ways),
//! records what it receives, decoded at the codec's rate, answers BYE, re-INVITE, INFO and
//! OPTIONS, and hangs up with BYE. [`Answerer`] is the other side, for testing the caller
//! itself and for tests where the gateway places calls: it answers INVITEs (optionally
//! after a digest challenge, or rejects them) and gives each answered call as a [`Call`].
//!
//! Everything runs on tokio over loopback, through `dialin_sip`'s transports and message
//! types and `dialin_media`'s RTP, SRTP, codec and DTMF modules. It is test support:
//! clarity over speed, a mutex around the observable state.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use dialin_media::dtmf::event::{EventReceiver, EventSender, OutgoingEvent, DEFAULT_VOLUME};
use dialin_media::dtmf::Digit;
use dialin_media::rtp::{Header, Packet, PayloadType as RtpPayloadType, RtpTimestamp, SeqNo, Ssrc};
use dialin_media::srtp::{MasterKey, SrtpContext, SrtpProfile, MASTER_KEY_LEN};
use dialin_media::{
    new_decoder, new_encoder, CodecConfig, CodecKind, Decoder, Encoder, SampleRate,
};
use dialin_sip::digest::{Algorithm, Credential, DigestServer, VerifyOutcome};
use dialin_sip::sdp::{
    accept_answer, build_offer, negotiate, AnswerPolicy, Direction, LocalMedia, Negotiated, Offer,
    OfferPolicy, SessionDescription, SrtpPolicy,
};
use dialin_sip::transport::{Incoming, ListenAddr, Target, Transport, TransportConfig, Transports};
use dialin_sip::{
    HeaderName, Headers, Message, Method, NameAddr, Request, RequestBuilder, Response, StatusCode,
    Uri,
};

pub use dialin_sip::sdp::Codec;

/// RFC 3261 §17.1.1.1: T1, the RTT estimate, 500 ms.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.2.2: T2, the cap of non-INVITE retransmission intervals, 4 s.
const T2: Duration = Duration::from_secs(4);
/// RFC 3261 §17.1.1.2: Timer B = 64*T1, the INVITE transaction timeout.
const TIMER_B: Duration = Duration::from_secs(32);
/// RFC 3261 §17.1.2.2: Timer F = 64*T1, the non-INVITE transaction timeout.
const TIMER_F: Duration = Duration::from_secs(32);
/// RFC 3551 §4.5: 20 ms packets.
const PTIME: Duration = Duration::from_millis(20);
/// Length of one DTMF press and of the pause after it (Q.24 asks for at least 40 ms of
/// each; 100 ms is what phones send when dialing from memory).
const DTMF_PRESS: Duration = Duration::from_millis(100);
const DTMF_GAP: Duration = Duration::from_millis(100);
/// Level of each of the two in-band DTMF tones, dBFS (AES17). ITU-T Q.24 accepts -3 to
/// -25 dBm0 per tone; -9 dBFS keeps the sum of both below full scale.
const INBAND_DTMF_DBFS: f64 = -9.0;
/// How long a finished leg keeps answering retransmitted requests (RFC 3261 §17.2.2
/// Timer J = 64*T1 over UDP; 4 s, as SIPp's own timewait, is plenty on loopback).
const LINGER: Duration = Duration::from_secs(4);
/// Payload bytes large enough for any audio frame we send or receive.
const MAX_PACKET: usize = 1500;
/// Decoded samples per packet at most: 120 ms of 48 kHz Opus (RFC 6716 §2.1.4).
const MAX_DECODED: usize = 5760;

const USER_AGENT: &str = "dialin-test-caller";
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, INFO, OPTIONS, UPDATE";

// ---------------------------------------------------------------------------
// Public options and errors

/// The SIP transport a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    Udp,
    Tcp,
}

impl SipTransport {
    fn transport(self) -> Transport {
        match self {
            SipTransport::Udp => Transport::Udp,
            SipTransport::Tcp => Transport::Tcp,
        }
    }
}

/// How [`Call::send_dtmf`] sends digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfMode {
    /// RFC 4733 `telephone-event` packets: start (marker), 50 ms updates, three ends.
    Rfc4733,
    /// SIP INFO with `application/dtmf-relay` bodies (`Signal=5`, `Duration=160`).
    Info,
    /// The two ITU-T Q.23 tones in the audio itself.
    Inband,
}

/// How to place a call.
#[derive(Debug, Clone)]
pub struct DialOptions {
    /// Where the INVITE goes (the gateway's SIP listener); in-dialog requests go there too,
    /// as they would through a carrier's outbound proxy.
    pub gateway: SocketAddr,
    pub transport: SipTransport,
    /// The calling number (From user part), e.g. `+33612345678`.
    pub from_user: String,
    /// The called number (Request-URI and To user part).
    pub to_user: String,
    /// Codecs offered, in preference order.
    pub codecs: Vec<Codec>,
    /// Offer `telephone-event` (/8000, and /48000 when Opus is offered).
    pub telephone_event: bool,
    /// Digest credentials (username, password) for 401/407 challenges.
    pub credentials: Option<(String, String)>,
    /// Late offer: INVITE without SDP, the 200 carries the offer, the ACK our answer.
    pub no_sdp_in_invite: bool,
    /// Offer RTP/SAVP with SDES `a=crypto` keys.
    pub srtp: bool,
    /// Extra headers for the INVITE (name, value).
    pub extra_headers: Vec<(String, String)>,
    /// How long to wait for a final response to the INVITE.
    pub answer_timeout: Duration,
}

impl DialOptions {
    /// A UDP call from `+33612345678` to `1000`, offering PCMU, PCMA, G.722 and Opus
    /// with telephone-event, no credentials.
    pub fn new(gateway: SocketAddr) -> DialOptions {
        DialOptions {
            gateway,
            transport: SipTransport::Udp,
            from_user: "+33612345678".to_owned(),
            to_user: "1000".to_owned(),
            codecs: vec![Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus],
            telephone_event: true,
            credentials: None,
            no_sdp_in_invite: false,
            srtp: false,
            extra_headers: Vec::new(),
            answer_timeout: TIMER_B,
        }
    }
}

/// Why a call could not be placed or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("SIP transport error: {0}")]
    Transport(#[from] dialin_sip::transport::TransportError),
    /// A final non-2xx response to the INVITE (after any digest retry).
    #[error("call rejected with {status} {reason}")]
    Rejected {
        status: u16,
        reason: String,
        headers: Headers,
    },
    #[error("no final response within {0:?}")]
    Timeout(Duration),
    #[error("unusable SDP from the peer: {0}")]
    Sdp(String),
    #[error("SDP negotiation failed: {0}")]
    Negotiation(#[from] dialin_sip::sdp::NegotiationError),
    #[error("codec error: {0}")]
    Codec(#[from] dialin_media::CodecError),
    #[error("{method} answered {status}")]
    RequestFailed { method: String, status: u16 },
    #[error("{0:?} is not a DTMF digit")]
    BadDigit(char),
    #[error("the call is not in a state to do that: {0}")]
    WrongState(&'static str),
    #[error("the call task has ended")]
    Closed,
}

impl CallerError {
    /// The status of a rejection, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallerError::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// A header of the rejecting response (`Retry-After`, `Warning`, ...).
    pub fn header(&self, name: &str) -> Option<String> {
        match self {
            CallerError::Rejected { headers, .. } => headers
                .get(&HeaderName::from_str_name(name))
                .map(|t| t.as_str().to_owned()),
            _ => None,
        }
    }
    /// `Retry-After` seconds of a rejection (RFC 3261 §20.33).
    pub fn retry_after(&self) -> Option<u32> {
        self.header("Retry-After")?
            .split([';', '(', ' '])
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

// ---------------------------------------------------------------------------
// Observable state shared by a call's tasks and its handle

/// A run of decoded audio received in one RTP packet.
#[derive(Debug, Clone)]
struct Chunk {
    at: Instant,
    samples: Vec<i16>,
}

/// What plays into the call.
#[derive(Debug, Clone)]
enum Source {
    Silence,
    Tone {
        hz: f64,
        amplitude: f64,
        phase: f64,
    },
    Pcm {
        samples: Arc<[i16]>,
        pos: usize,
        looped: bool,
    },
    /// Plays back what was received (the answerer's echo mode).
    Echo,
}

/// One queued in-band DTMF element, in 20 ms frames.
#[derive(Debug)]
enum InbandStep {
    Tone { digit: Digit, frames: u32, n: u64 },
    Gap { frames: u32 },
    Done(oneshot::Sender<()>),
}

/// One queued RFC 4733 digit.
#[derive(Debug)]
enum EventStep {
    Digit(Digit),
    Done(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct SipFacts {
    call_id: String,
    provisional: Vec<u16>,
    final_status: Option<u16>,
    invite: Option<Request>,
    answer: Option<Response>,
    local_sdp: Option<String>,
    remote_sdp: Option<String>,
    negotiated: Option<Negotiated>,
    established: bool,
    bye_received: bool,
    bye_sent: bool,
    terminated: bool,
    info_digits: String,
    reinvites: u32,
    requests: Vec<Request>,
}

struct MediaFacts {
    source: Source,
    inband: VecDeque<InbandStep>,
    events: VecDeque<EventStep>,
    recorded: Vec<Chunk>,
    echo: VecDeque<i16>,
    digits: Vec<(Instant, char)>,
    packets_sent: u64,
    packets_received: u64,
    /// Bumped when the negotiation changes (re-INVITE), so the media task reloads it.
    generation: u64,
    local_rtp: Option<SocketAddr>,
}

impl Default for MediaFacts {
    fn default() -> Self {
        MediaFacts {
            source: Source::Silence,
            inband: VecDeque::new(),
            events: VecDeque::new(),
            recorded: Vec::new(),
            echo: VecDeque::new(),
            digits: Vec::new(),
            packets_sent: 0,
            packets_received: 0,
            generation: 0,
            local_rtp: None,
        }
    }
}

#[derive(Default)]
struct Shared {
    sip: Mutex<SipFacts>,
    media: Mutex<MediaFacts>,
}

impl Shared {
    fn sip(&self) -> MutexGuard<'_, SipFacts> {
        self.sip.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn media(&self) -> MutexGuard<'_, MediaFacts> {
        self.media.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// ---------------------------------------------------------------------------
// Media: one RTP socket, a 20 ms sender, a receiver that decodes and records

fn codec_kind(c: Codec) -> CodecKind {
    match c {
        Codec::Pcmu => CodecKind::Pcmu,
        Codec::Pcma => CodecKind::Pcma,
        Codec::G722 => CodecKind::G722,
        Codec::Opus => CodecKind::Opus,
    }
}

fn sample_rate(c: Codec) -> SampleRate {
    match c {
        Codec::Pcmu | Codec::Pcma => SampleRate::Hz8000,
        Codec::G722 => SampleRate::Hz16000,
        Codec::Opus => SampleRate::Hz48000,
    }
}

fn srtp_context(suite: &dialin_sip::sdp::CryptoSuite, key_salt: &[u8; 30]) -> Option<SrtpContext> {
    let profile = SrtpProfile::from_sdes_name(suite.as_str())?;
    let key: [u8; MASTER_KEY_LEN] = key_salt.get(..MASTER_KEY_LEN)?.try_into().ok()?;
    let salt = key_salt.get(MASTER_KEY_LEN..)?.try_into().ok()?;
    Some(SrtpContext::new(profile, &MasterKey::new(key, salt)))
}

/// The per-negotiation half of the media state: codec, payload types, keys.
struct MediaSetup {
    remote: SocketAddr,
    pt: RtpPayloadType,
    te_pt: Option<RtpPayloadType>,
    clock: u32,
    rate: SampleRate,
    sends: bool,
    encoder: Box<dyn Encoder>,
    decoder: Box<dyn Decoder>,
    srtp_tx: Option<SrtpContext>,
    srtp_rx: Option<SrtpContext>,
    events_rx: EventReceiver,
}

impl MediaSetup {
    fn new(n: &Negotiated) -> Result<MediaSetup, CallerError> {
        let codec = n.codec.codec;
        let kind = codec_kind(codec);
        let rate = sample_rate(codec);
        let cfg = CodecConfig::default();
        let pt = RtpPayloadType::new(n.codec.payload_type.get())
            .map_err(|e| CallerError::Sdp(e.to_string()))?;
        let te_pt = n
            .telephone_event
            .and_then(|p| RtpPayloadType::new(p.get()).ok());
        let (srtp_tx, srtp_rx) = match &n.srtp {
            Some(s) => (
                srtp_context(&s.suite, &s.local_key_salt),
                srtp_context(&s.suite, &s.remote_key_salt),
            ),
            None => (None, None),
        };
        Ok(MediaSetup {
            remote: n.remote_rtp,
            pt,
            te_pt,
            clock: n.codec.clock_rate,
            rate,
            sends: n.local_direction.sends()
                && !n.remote_rtp.ip().is_unspecified()
                && n.remote_rtp.port() != 0,
            encoder: new_encoder(kind, rate, &cfg)?,
            decoder: new_decoder(kind, rate, &cfg)?,
            srtp_tx,
            srtp_rx,
            events_rx: EventReceiver::new(n.codec.clock_rate),
        })
    }
}

/// An RFC 4733 digit being sent.
struct ActiveEvent {
    sender: EventSender,
    start: Instant,
    next: Option<(OutgoingEvent, [u8; 4])>,
}

struct MediaTask {
    sock: Arc<UdpSocket>,
    shared: Arc<Shared>,
    setup: MediaSetup,
    generation: u64,
    ssrc: Ssrc,
    seq: SeqNo,
    ts: u32,
    first: bool,
    event: Option<ActiveEvent>,
    /// No RFC 4733 digit starts before this (the gap after the previous one).
    event_gap_until: Option<Instant>,
    pcm: Vec<i16>,
    out: Vec<u8>,
}

impl MediaTask {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(PTIME);
        let mut buf = vec![0u8; MAX_PACKET + 64];
        loop {
            let event_at = self
                .event
                .as_ref()
                .and_then(|e| e.next.as_ref().map(|(p, _)| e.start + p.send_after));
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            let event_deadline = event_at.map(tokio::time::Instant::from_std).unwrap_or(far);
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => self.on_tick().await,
                r = self.sock.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        if let Some(data) = buf.get_mut(..n) {
                            self.on_packet(data, from);
                        }
                    }
                }
                _ = tokio::time::sleep_until(event_deadline), if event_at.is_some() => self.send_due_events().await,
            }
        }
    }

    fn reload_if_renegotiated(&mut self) {
        // Lock order: never hold the media lock while taking the SIP one.
        let generation = self.shared.media().generation;
        if generation == self.generation {
            return;
        }
        let negotiated = self.shared.sip().negotiated.clone();
        self.generation = generation;
        if let Some(n) = negotiated {
            let same_codec = n.codec.payload_type.get() == self.setup.pt.get()
                && sample_rate(n.codec.codec) == self.setup.rate;
            if same_codec {
                self.setup.remote = n.remote_rtp;
                self.setup.sends = n.local_direction.sends()
                    && !n.remote_rtp.ip().is_unspecified()
                    && n.remote_rtp.port() != 0;
                self.setup.te_pt = n
                    .telephone_event
                    .and_then(|p| RtpPayloadType::new(p.get()).ok());
            } else if let Ok(s) = MediaSetup::new(&n) {
                self.setup = s;
            }
        }
    }

    async fn on_tick(&mut self) {
        self.reload_if_renegotiated();
        let frame = self.setup.rate.frame_samples();
        let step = self.setup.clock / 1000 * PTIME.as_millis() as u32;
        let now = Instant::now();
        if self.event.is_none() {
            self.maybe_start_event(now);
        }
        let event_running = self.event.is_some();
        self.pcm.resize(frame, 0);
        let mut pcm = std::mem::take(&mut self.pcm);
        self.fill_frame(&mut pcm);
        if event_running {
            // RFC 4733 §2.5.1.1: the event replaces the audio while it lasts.
            self.send_due_events().await;
        } else if self.setup.sends {
            let mut payload = [0u8; MAX_PACKET];
            if let Ok(n) = self.setup.encoder.encode(&pcm, &mut payload) {
                let marker = std::mem::take(&mut self.first);
                let pt = self.setup.pt;
                self.send_rtp(pt, marker, self.ts, payload.get(..n).unwrap_or(&[]))
                    .await;
            }
        }
        self.pcm = pcm;
        self.ts = self.ts.wrapping_add(step);
    }

    fn maybe_start_event(&mut self, now: Instant) {
        if self.event_gap_until.is_some_and(|t| now < t) {
            return;
        }
        let te_clock = self.setup.clock;
        let mut m = self.shared.media();
        loop {
            match m.events.pop_front() {
                Some(EventStep::Done(tx)) => {
                    let _ = tx.send(());
                }
                Some(EventStep::Digit(d)) => {
                    let mut sender =
                        EventSender::new(d, self.ts, te_clock, DTMF_PRESS, DEFAULT_VOLUME);
                    let mut b = [0u8; 4];
                    let next = match sender.next_packet(&mut b) {
                        Ok(Some(p)) => Some((p, b)),
                        _ => None,
                    };
                    self.event = Some(ActiveEvent {
                        sender,
                        start: now,
                        next,
                    });
                    return;
                }
                None => return,
            }
        }
    }

    async fn send_due_events(&mut self) {
        let now = Instant::now();
        let Some(te_pt) = self.setup.te_pt else {
            // No telephone-event negotiated: drop the digit.
            self.event = None;
            return;
        };
        loop {
            let Some(ev) = self.event.as_mut() else {
                return;
            };
            let Some((p, b)) = ev.next.take() else {
                self.event = None;
                self.event_gap_until = Some(now + DTMF_GAP);
                return;
            };
            if ev.start + p.send_after > now {
                ev.next = Some((p, b));
                return;
            }
            let mut nb = [0u8; 4];
            ev.next = match ev.sender.next_packet(&mut nb) {
                Ok(Some(q)) => Some((q, nb)),
                _ => None,
            };
            if self.setup.sends {
                self.send_rtp(te_pt, p.marker, p.timestamp, b.get(..p.len).unwrap_or(&[]))
                    .await;
            }
        }
    }

    fn fill_frame(&mut self, pcm: &mut [i16]) {
        let rate = f64::from(self.setup.rate.hz());
        let mut m = self.shared.media();
        // In-band DTMF overrides the source while a tone plays.
        while let Some(InbandStep::Done(_)) = m.inband.front() {
            if let Some(InbandStep::Done(tx)) = m.inband.pop_front() {
                let _ = tx.send(());
            }
        }
        let mut inband_tone = None;
        let mut consumed = false;
        match m.inband.front_mut() {
            Some(InbandStep::Tone { digit, frames, n }) => {
                inband_tone = Some((*digit, *n));
                *n += pcm.len() as u64;
                *frames -= 1;
                consumed = *frames == 0;
            }
            Some(InbandStep::Gap { frames }) => {
                *frames -= 1;
                consumed = *frames == 0;
            }
            _ => {}
        }
        if consumed {
            m.inband.pop_front();
        }
        if let Some((digit, n0)) = inband_tone {
            let (lo, hi) = digit.frequencies();
            let amp = 10f64.powf(INBAND_DTMF_DBFS / 20.0) * 32767.0;
            for (i, s) in pcm.iter_mut().enumerate() {
                let t = (n0 + i as u64) as f64 / rate;
                let v = amp
                    * ((2.0 * std::f64::consts::PI * f64::from(lo) * t).sin()
                        + (2.0 * std::f64::consts::PI * f64::from(hi) * t).sin());
                *s = v.round().clamp(-32768.0, 32767.0) as i16;
            }
            return;
        }
        let MediaFacts { source, echo, .. } = &mut *m;
        match source {
            Source::Silence => pcm.fill(0),
            Source::Tone {
                hz,
                amplitude,
                phase,
            } => {
                let inc = 2.0 * std::f64::consts::PI * *hz / rate;
                for s in pcm.iter_mut() {
                    *s = (*amplitude * phase.sin()).round().clamp(-32768.0, 32767.0) as i16;
                    *phase = (*phase + inc) % (2.0 * std::f64::consts::PI);
                }
            }
            Source::Pcm {
                samples,
                pos,
                looped,
            } => {
                for s in pcm.iter_mut() {
                    if *pos >= samples.len() && *looped && !samples.is_empty() {
                        *pos = 0;
                    }
                    *s = samples.get(*pos).copied().unwrap_or(0);
                    *pos += 1;
                }
            }
            Source::Echo => {
                for s in pcm.iter_mut() {
                    *s = echo.pop_front().unwrap_or(0);
                }
            }
        }
    }

    async fn send_rtp(&mut self, pt: RtpPayloadType, marker: bool, ts: u32, payload: &[u8]) {
        let mut h = Header::new(pt, self.seq, RtpTimestamp(ts), self.ssrc);
        h.marker = marker;
        self.out.resize(MAX_PACKET + 64, 0);
        let Ok(mut n) = h.write(payload, &mut self.out) else {
            return;
        };
        if let Some(ctx) = self.setup.srtp_tx.as_mut() {
            match ctx.protect_rtp(&mut self.out, n) {
                Ok(len) => n = len,
                Err(_) => return,
            }
        }
        self.seq = self.seq.next();
        if let Some(pkt) = self.out.get(..n) {
            if self.sock.send_to(pkt, self.setup.remote).await.is_ok() {
                self.shared.media().packets_sent += 1;
            }
        }
    }

    fn on_packet(&mut self, data: &mut [u8], _from: SocketAddr) {
        // RTCP multiplexed on the RTP port (RFC 5761 §4: payload types 200-204 after the
        // marker bit) is not recorded.
        if data.get(1).is_some_and(|b| (200..=204).contains(b)) {
            return;
        }
        let len = match self.setup.srtp_rx.as_mut() {
            Some(ctx) => match ctx.unprotect_rtp(data) {
                Ok(n) => n,
                Err(_) => return,
            },
            None => data.len(),
        };
        let Some(data) = data.get(..len) else { return };
        let Ok(p) = Packet::parse(data) else { return };
        let now = Instant::now();
        if Some(p.payload_type()) == self.setup.te_pt {
            let got = self.setup.events_rx.receive(
                p.timestamp().0,
                p.marker(),
                p.seq().0,
                p.payload(),
                now,
            );
            let mut m = self.shared.media();
            m.packets_received += 1;
            if let Ok(Some(d)) = got {
                m.digits.push((now, d.digit.to_char()));
            }
        } else if p.payload_type() == self.setup.pt {
            let mut pcm = vec![0i16; MAX_DECODED];
            let n = self
                .setup
                .decoder
                .decode(p.payload(), &mut pcm)
                .unwrap_or(0);
            pcm.truncate(n);
            let mut m = self.shared.media();
            m.packets_received += 1;
            if matches!(m.source, Source::Echo) {
                m.echo.extend(pcm.iter().copied());
                // Keep at most one second queued.
                let cap = self.setup.rate.hz() as usize;
                while m.echo.len() > cap {
                    m.echo.pop_front();
                }
            }
            m.recorded.push(Chunk {
                at: now,
                samples: pcm,
            });
        }
    }
}

/// The running media of a call.
struct MediaHandle {
    stop: watch::Sender<bool>,
}

impl MediaHandle {
    /// Starts media for `negotiated` on `sock`.
    fn start(
        sock: Arc<UdpSocket>,
        shared: Arc<Shared>,
        negotiated: &Negotiated,
    ) -> Result<MediaHandle, CallerError> {
        let setup = MediaSetup::new(negotiated)?;
        let generation = shared.media().generation;
        let (stop, rx) = watch::channel(false);
        let task = MediaTask {
            sock,
            shared,
            setup,
            generation,
            ssrc: Ssrc(rand::random()),
            seq: SeqNo(rand::random::<u16>() & 0x7fff),
            ts: rand::random::<u32>() & 0x7fff_ffff,
            first: true,
            event: None,
            event_gap_until: None,
            pcm: Vec::with_capacity(MAX_DECODED),
            out: vec![0u8; MAX_PACKET + 64],
        };
        tokio::spawn(task.run(rx));
        Ok(MediaHandle { stop })
    }
}

impl Drop for MediaHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

// ---------------------------------------------------------------------------
// SIP endpoint: bound transports and a dispatcher routing messages by Call-ID

type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Incoming>>>>;

#[derive(Clone)]
struct Endpoint {
    transports: Transports,
    udp: SocketAddr,
    tcp: SocketAddr,
    routes: Routes,
    stop: Arc<watch::Sender<bool>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Endpoint {
    /// Binds UDP and TCP on loopback ephemeral ports. Messages for no registered Call-ID
    /// go to `unrouted`, or are answered 481 (RFC 3261 §12.2.2) when it is `None`.
    async fn bind(
        unrouted: Option<mpsc::UnboundedSender<Incoming>>,
    ) -> Result<Endpoint, CallerError> {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let cfg = TransportConfig {
            listen: vec![
                ListenAddr {
                    transport: Transport::Udp,
                    addr: SocketAddr::new(lo, 0),
                },
                ListenAddr {
                    transport: Transport::Tcp,
                    addr: SocketAddr::new(lo, 0),
                },
            ],
            ..TransportConfig::default()
        };
        let (transports, mut rx) = Transports::bind(cfg).await?;
        let udp = transports
            .local_addr(Transport::Udp)
            .ok_or(CallerError::WrongState("no UDP listener"))?;
        let tcp = transports
            .local_addr(Transport::Tcp)
            .ok_or(CallerError::WrongState("no TCP listener"))?;
        let (stop, mut stop_rx) = watch::channel(false);
        let ep = Endpoint {
            transports,
            udp,
            tcp,
            routes: Routes::default(),
            stop: Arc::new(stop),
        };
        let me = ep.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    m = rx.recv() => match m {
                        Some(inc) => me.dispatch(inc, unrouted.as_ref()).await,
                        None => break,
                    },
                }
            }
        });
        Ok(ep)
    }

    async fn dispatch(&self, inc: Incoming, unrouted: Option<&mpsc::UnboundedSender<Incoming>>) {
        let call_id = inc
            .message
            .headers()
            .call_id()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default();
        let route = lock(&self.routes).get(&call_id).cloned();
        let inc = match route {
            Some(tx) => match tx.send(inc) {
                Ok(()) => return,
                Err(e) => {
                    lock(&self.routes).remove(&call_id);
                    e.0
                }
            },
            None => inc,
        };
        if let Some(u) = unrouted {
            let _ = u.send(inc);
            return;
        }
        if let Message::Request(req) = &inc.message {
            if req.method != Method::Ack {
                let resp = Response::to_request(req, StatusCode::CALL_DOES_NOT_EXIST, None)
                    .with_to_tag(&new_tag());
                self.reply(&inc, &resp).await;
            }
        }
    }

    async fn reply(&self, inc: &Incoming, resp: &Response) {
        if let Ok(t) = inc.reply_target() {
            let _ = self.transports.send(&t, resp.to_bytes()).await;
        }
    }

    fn register(&self, call_id: &str) -> mpsc::UnboundedReceiver<Incoming> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.routes).insert(call_id.to_owned(), tx);
        rx
    }

    fn unregister(&self, call_id: &str) {
        lock(&self.routes).remove(call_id);
    }

    fn local(&self, t: Transport) -> SocketAddr {
        match t {
            Transport::Tcp => self.tcp,
            _ => self.udp,
        }
    }

    fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.transports.shutdown();
    }
}

fn rand_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn new_tag() -> String {
    rand_hex()
}

/// RFC 3261 §8.1.1.7: branches start with the magic cookie `z9hG4bK`.
fn new_branch() -> String {
    format!("z9hG4bK{}", rand_hex())
}

fn top_branch(h: &Headers) -> Option<String> {
    h.top_via().ok()?.branch().map(str::to_owned)
}

fn header_text(h: &Headers, name: &HeaderName) -> Option<String> {
    h.get(name).map(|t| t.as_str().to_owned())
}

/// The digit of a SIP INFO DTMF body: `application/dtmf-relay` (`Signal=5`) or
/// `application/dtmf` (`5`).
fn info_digit(body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            if k.trim().eq_ignore_ascii_case("signal") {
                return v.trim().chars().next();
            }
        }
    }
    let t = text.trim();
    (t.chars().count() == 1).then(|| t.chars().next()).flatten()
}

// ---------------------------------------------------------------------------
// One call leg: dialog state and the task driving it

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Uac,
    Uas,
}

#[derive(Debug, Default)]
struct Dialog {
    call_id: String,
    /// Our From (UAC) or To (UAS) header value, with our tag.
    local: String,
    /// The peer's header value, with its tag once known.
    remote: String,
    /// Request-URI of our in-dialog requests: the peer's Contact (RFC 3261 §12.1).
    remote_target: String,
    /// Route values for our in-dialog requests (RFC 3261 §12.1.1/§12.1.2).
    routes: Vec<String>,
    local_cseq: u32,
    contact: String,
}

enum Command {
    Cancel(oneshot::Sender<Result<u16, CallerError>>),
    Hangup(oneshot::Sender<Result<(), CallerError>>),
    Info {
        digits: Vec<Digit>,
        done: oneshot::Sender<Result<(), CallerError>>,
    },
    Reinvite {
        direction: Direction,
        done: oneshot::Sender<Result<u16, CallerError>>,
    },
}

impl Command {
    fn refuse(self, why: &'static str) {
        match self {
            Command::Cancel(r) => {
                let _ = r.send(Err(CallerError::WrongState(why)));
            }
            Command::Hangup(r) => {
                let _ = r.send(Err(CallerError::WrongState(why)));
            }
            Command::Info { done, .. } => {
                let _ = done.send(Err(CallerError::WrongState(why)));
            }
            Command::Reinvite { done, .. } => {
                let _ = done.send(Err(CallerError::WrongState(why)));
            }
        }
    }
}

struct Leg {
    ep: Endpoint,
    /// The caller owns its endpoint and shuts it down when the call ends.
    owns_endpoint: bool,
    transport: Transport,
    /// Where our requests go.
    peer: Target,
    rx: mpsc::UnboundedReceiver<Incoming>,
    shared: Arc<Shared>,
    dialog: Dialog,
    rtp: Arc<UdpSocket>,
    media: Option<MediaHandle>,
    answer_policy: AnswerPolicy,
    offer_policy: OfferPolicy,
    session_id: u64,
    sdp_version: u64,
    /// Our offer in a 200 OK, answered in the ACK.
    pending_offer: Option<Offer>,
    /// UAC: the ACK to resend when the 2xx is retransmitted.
    last_ack: Option<Bytes>,
    /// UAS: our final response to the initial INVITE, resent on its retransmission.
    invite_response: Option<(u32, Bytes)>,
}

impl Leg {
    fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.transport.via_token(),
            self.ep.local(self.transport)
        )
    }

    fn local_media(&mut self) -> LocalMedia {
        self.sdp_version += 1;
        let port = self.rtp.local_addr().map(|a| a.port()).unwrap_or(0);
        LocalMedia {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            session_id: self.session_id,
            version: self.sdp_version,
            username: "dialin-test".to_owned(),
        }
    }

    async fn send(&self, bytes: Bytes) -> Result<(), CallerError> {
        self.ep.transports.send(&self.peer, bytes).await?;
        Ok(())
    }

    async fn reply(&self, inc: &Incoming, resp: &Response) {
        self.ep.reply(inc, resp).await;
    }

    fn terminated(&self) -> bool {
        self.shared.sip().terminated
    }

    /// Records the outcome of an offer/answer and starts or updates the media.
    fn apply(
        &mut self,
        n: Negotiated,
        remote_sdp: String,
        local_sdp: String,
    ) -> Result<(), CallerError> {
        {
            let mut s = self.shared.sip();
            s.negotiated = Some(n.clone());
            s.remote_sdp = Some(remote_sdp);
            s.local_sdp = Some(local_sdp);
        }
        self.shared.media().generation += 1;
        if self.media.is_none() {
            self.media = Some(MediaHandle::start(
                self.rtp.clone(),
                self.shared.clone(),
                &n,
            )?);
        }
        Ok(())
    }

    /// A request inside the dialog (RFC 3261 §12.2.1.1).
    fn in_dialog(&mut self, method: Method) -> Result<RequestBuilder, CallerError> {
        self.dialog.local_cseq += 1;
        let uri = Uri::parse_str(&self.dialog.remote_target)
            .or_else(|_| Uri::parse_str(&format!("sip:{}", self.peer.addr)))
            .map_err(|_| CallerError::WrongState("no usable remote target"))?;
        let mut b = RequestBuilder::new(method, uri)
            .header(HeaderName::Via, self.via(&new_branch()))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, self.dialog.local.clone())
            .header(HeaderName::To, self.dialog.remote.clone())
            .header(HeaderName::CallId, self.dialog.call_id.clone())
            .cseq(self.dialog.local_cseq);
        for r in &self.dialog.routes {
            b = b.header(HeaderName::Route, r.clone());
        }
        Ok(b.header(HeaderName::Contact, self.dialog.contact.clone())
            .header(HeaderName::UserAgent, USER_AGENT))
    }

    /// A non-INVITE client transaction (RFC 3261 §17.1.2): retransmits over UDP (Timer E)
    /// until a final response or Timer F; requests that arrive meanwhile are served.
    async fn transact(&mut self, req: Request) -> Result<Response, CallerError> {
        let branch = top_branch(&req.headers).unwrap_or_default();
        let method = req.method.clone();
        let bytes = req.to_bytes();
        self.send(bytes.clone()).await?;
        let start = tokio::time::Instant::now();
        let mut interval = T1;
        let mut next = start + interval;
        loop {
            let wake = if self.transport == Transport::Udp {
                next.min(start + TIMER_F)
            } else {
                start + TIMER_F
            };
            tokio::select! {
                m = self.rx.recv() => {
                    let Some(inc) = m else { return Err(CallerError::Closed) };
                    match &inc.message {
                        Message::Response(r) => {
                            let ours = top_branch(&r.headers).as_deref() == Some(branch.as_str())
                                && r.headers.cseq().is_ok_and(|c| c.method == method);
                            if ours {
                                if r.status.is_final() {
                                    return Ok(r.clone());
                                }
                            } else {
                                self.on_stray_response(r).await;
                            }
                        }
                        Message::Request(_) => self.on_request(inc).await,
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= start + TIMER_F {
                        return Err(CallerError::Timeout(TIMER_F));
                    }
                    self.send(bytes.clone()).await?;
                    interval = (interval * 2).min(T2);
                    next = tokio::time::Instant::now() + interval;
                }
            }
        }
    }

    async fn on_stray_response(&mut self, r: &Response) {
        // A retransmitted 2xx to our INVITE: the ACK was lost (RFC 3261 §13.2.2.4).
        let is_invite_2xx =
            r.status.is_success() && r.headers.cseq().is_ok_and(|c| c.method == Method::Invite);
        if is_invite_2xx {
            if let Some(ack) = self.last_ack.clone() {
                let _ = self.send(ack).await;
            }
        }
    }

    async fn on_message(&mut self, inc: Incoming) {
        match &inc.message {
            Message::Request(_) => self.on_request(inc).await,
            Message::Response(r) => {
                let r = r.clone();
                self.on_stray_response(&r).await
            }
        }
    }

    fn ok(&self, req: &Request) -> Response {
        Response::to_request(req, StatusCode::OK, None).with_to_tag(&self.local_tag())
    }

    fn local_tag(&self) -> String {
        NameAddr::parse(&dialin_sip::Text::from(self.dialog.local.clone()), "From")
            .ok()
            .and_then(|n| n.tag().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Requests the peer sends inside the dialog.
    async fn on_request(&mut self, inc: Incoming) {
        let Message::Request(req) = &inc.message else {
            return;
        };
        let req = req.clone();
        self.shared.sip().requests.push(req.clone());
        match req.method {
            Method::Bye => {
                self.media = None;
                self.reply(&inc, &self.ok(&req)).await;
                let mut s = self.shared.sip();
                s.bye_received = true;
                s.terminated = true;
            }
            Method::Invite | Method::Update => {
                let cseq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
                if let Some((seq, bytes)) = self.invite_response.clone() {
                    if seq == cseq && req.method == Method::Invite {
                        let _ = self.ep.transports.send(&self.peer_reply(&inc), bytes).await;
                        return;
                    }
                }
                self.on_reoffer(&inc, &req).await;
            }
            Method::Ack => {
                if let Some(offer) = self.pending_offer.take() {
                    let body = String::from_utf8_lossy(&req.body).into_owned();
                    if let Ok(answer) = SessionDescription::parse(&body) {
                        if let Ok(n) = accept_answer(&offer, &answer) {
                            let _ = self.apply(n, body, offer.sdp.clone());
                        }
                    }
                }
            }
            Method::Info => {
                if let Some(d) = info_digit(&req.body) {
                    self.shared.sip().info_digits.push(d);
                }
                self.reply(&inc, &self.ok(&req)).await;
            }
            Method::Options => {
                let resp = self
                    .ok(&req)
                    .header(HeaderName::Allow, ALLOW)
                    .header(HeaderName::Accept, "application/sdp");
                self.reply(&inc, &resp).await;
            }
            Method::Cancel => {
                // RFC 3261 §9.2: a CANCEL for an answered INVITE gets 200 and changes nothing.
                self.reply(&inc, &self.ok(&req)).await;
            }
            _ => {
                let resp = Response::to_request(&req, StatusCode::METHOD_NOT_ALLOWED, None)
                    .with_to_tag(&self.local_tag())
                    .header(HeaderName::Allow, ALLOW);
                self.reply(&inc, &resp).await;
            }
        }
    }

    fn peer_reply(&self, inc: &Incoming) -> Target {
        inc.reply_target().unwrap_or(self.peer)
    }

    /// A re-INVITE or UPDATE (RFC 3261 §14.2, RFC 3311): with an offer we answer keeping
    /// the codec and taking the mirrored direction (RFC 3264 §6.1); without one we offer
    /// in the 200 and take the answer from the ACK.
    async fn on_reoffer(&mut self, inc: &Incoming, req: &Request) {
        if req.method == Method::Invite {
            self.shared.sip().reinvites += 1;
        }
        if req.body.is_empty() {
            if req.method == Method::Update {
                self.reply(inc, &self.ok(req)).await;
                return;
            }
            let local = self.local_media();
            let offer = build_offer(&self.offer_policy, &local);
            let resp = self
                .ok(req)
                .header(HeaderName::Contact, self.dialog.contact.clone())
                .with_body("application/sdp", Bytes::from(offer.sdp.clone()));
            self.pending_offer = Some(offer);
            self.reply(inc, &resp).await;
            return;
        }
        let body = String::from_utf8_lossy(&req.body).into_owned();
        let current = self.shared.sip().negotiated.clone();
        let result = SessionDescription::parse(&body)
            .map_err(|e| CallerError::Sdp(e.to_string()))
            .and_then(|offer| {
                match &current {
                    Some(c) => c.renegotiate(&offer, &self.answer_policy),
                    None => negotiate(&offer, &self.answer_policy),
                }
                .map_err(CallerError::from)
            });
        match result {
            Ok(n) => {
                let local = self.local_media();
                let answer = n.answer_sdp(&local);
                let resp = self
                    .ok(req)
                    .header(HeaderName::Contact, self.dialog.contact.clone())
                    .with_body("application/sdp", Bytes::from(answer.clone()));
                let _ = self.apply(n, body, answer);
                self.reply(inc, &resp).await;
            }
            Err(_) => {
                let resp = Response::to_request(req, StatusCode::NOT_ACCEPTABLE_HERE, None)
                    .with_to_tag(&self.local_tag());
                self.reply(inc, &resp).await;
            }
        }
    }

    /// Sends BYE and waits for its final response.
    async fn bye(&mut self) -> Result<(), CallerError> {
        self.media = None;
        let req = self.in_dialog(Method::Bye)?.build();
        {
            let mut s = self.shared.sip();
            s.bye_sent = true;
            s.terminated = true;
        }
        let resp = self.transact(req).await?;
        if resp.status.is_success() {
            Ok(())
        } else {
            Err(CallerError::RequestFailed {
                method: "BYE".into(),
                status: resp.status.0,
            })
        }
    }

    /// One SIP INFO per digit (`application/dtmf-relay`), a press and a gap apart.
    async fn send_info(&mut self, digits: Vec<Digit>) -> Result<(), CallerError> {
        let duration_ms = DTMF_PRESS.as_millis() as u64 + 60;
        for (i, d) in digits.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(DTMF_PRESS + DTMF_GAP).await;
            }
            let body = format!("Signal={}\r\nDuration={duration_ms}\r\n", d.to_char());
            let req = self
                .in_dialog(Method::Info)?
                .body("application/dtmf-relay", Bytes::from(body))
                .build();
            let resp = self.transact(req).await?;
            if !resp.status.is_success() {
                return Err(CallerError::RequestFailed {
                    method: "INFO".into(),
                    status: resp.status.0,
                });
            }
        }
        Ok(())
    }

    /// Sends a re-INVITE offering our codecs with `direction` (RFC 3264 §8.4: `sendonly`
    /// holds the peer), ACKs the final response and applies the answer. Returns the
    /// final status. Retransmitted like a non-INVITE request (fine on loopback).
    async fn reinvite(&mut self, direction: Direction) -> Result<u16, CallerError> {
        let local = self.local_media();
        let mut offer = build_offer(&self.offer_policy, &local);
        offer.sdp = offer
            .sdp
            .replace("a=sendrecv\r\n", &format!("a={direction}\r\n"));
        let req = self
            .in_dialog(Method::Invite)?
            .body("application/sdp", Bytes::from(offer.sdp.clone()))
            .build();
        let seq = self.dialog.local_cseq;
        let resp = self.transact(req.clone()).await?;
        if !resp.status.is_success() {
            self.send(self.non2xx_ack(&req, &resp).to_bytes()).await?;
            return Ok(resp.status.0);
        }
        self.dialog.local_cseq = seq.saturating_sub(1);
        let ack = self.in_dialog(Method::Ack)?.build();
        let bytes = ack.to_bytes();
        self.send(bytes.clone()).await?;
        self.last_ack = Some(bytes);
        let answer = String::from_utf8_lossy(&resp.body).into_owned();
        let n = SessionDescription::parse(&answer)
            .map_err(|e| CallerError::Sdp(e.to_string()))
            .and_then(|a| accept_answer(&offer, &a).map_err(CallerError::from))?;
        self.apply(n, answer, offer.sdp.clone())?;
        Ok(resp.status.0)
    }

    /// The established dialog: serve the peer's requests and the handle's commands until
    /// the call ends, then linger to answer retransmissions.
    async fn run_dialog(&mut self, cmds: &mut mpsc::Receiver<Command>) {
        let mut handle_gone = false;
        while !self.terminated() {
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some(inc) => self.on_message(inc).await,
                    None => break,
                },
                c = cmds.recv(), if !handle_gone => match c {
                    None => {
                        // The test dropped the call without hanging up: hang up for it.
                        handle_gone = true;
                        let _ = self.bye().await;
                    }
                    Some(Command::Hangup(reply)) => {
                        let r = self.bye().await;
                        let _ = reply.send(r);
                    }
                    Some(Command::Info { digits, done }) => {
                        let r = self.send_info(digits).await;
                        let _ = done.send(r);
                    }
                    Some(Command::Reinvite { direction, done }) => {
                        let r = self.reinvite(direction).await;
                        let _ = done.send(r);
                    }
                    Some(c @ Command::Cancel(_)) => c.refuse("the call is already answered"),
                },
            }
        }
        self.media = None;
        self.shared.sip().terminated = true;
        let until = tokio::time::Instant::now() + LINGER;
        loop {
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some(inc) => self.on_message(inc).await,
                    None => break,
                },
                c = cmds.recv(), if !handle_gone => match c {
                    Some(c) => c.refuse("the call has ended"),
                    None => handle_gone = true,
                },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        self.finish();
    }

    fn finish(&mut self) {
        self.media = None;
        self.shared.sip().terminated = true;
        self.ep.unregister(&self.dialog.call_id);
        if self.owns_endpoint {
            self.ep.shutdown();
        }
    }
}

// ---------------------------------------------------------------------------
// UAC: the INVITE client transaction and the dialog it creates

impl Leg {
    /// Sends the INVITE and drives it to a final response (RFC 3261 §13.2, §17.1.1):
    /// retransmits over UDP until a provisional response, answers one digest challenge
    /// (two if the first credentials were stale), CANCELs on request once a provisional
    /// response has come (§9.1), ACKs every final response.
    async fn invite(
        &mut self,
        opts: &DialOptions,
        cmds: &mut mpsc::Receiver<Command>,
    ) -> Result<(), CallerError> {
        let offer = if opts.no_sdp_in_invite {
            None
        } else {
            let local = self.local_media();
            Some(build_offer(&self.offer_policy, &local))
        };
        let tcp = self.transport == Transport::Tcp;
        let uri_text = format!(
            "sip:{}@{}{}",
            opts.to_user,
            opts.gateway,
            if tcp { ";transport=tcp" } else { "" }
        );
        let uri = Uri::parse_str(&uri_text)
            .map_err(|_| CallerError::WrongState("the called number makes a bad URI"))?;
        let to = format!("<sip:{}@{}>", opts.to_user, opts.gateway);
        self.dialog.remote = to.clone();
        self.dialog.remote_target = uri_text;
        let deadline = tokio::time::Instant::now() + opts.answer_timeout;
        let mut cseq = 1u32;
        let mut auth: Option<(HeaderName, String)> = None;
        let mut auth_tries = 0;
        let mut cancel_reply: Option<oneshot::Sender<Result<u16, CallerError>>> = None;
        let mut cancel_wanted = false;
        let mut cmds_closed = false;
        loop {
            let branch = new_branch();
            let mut b = RequestBuilder::new(Method::Invite, uri.clone())
                .header(HeaderName::Via, self.via(&branch))
                .header(HeaderName::MaxForwards, "70")
                .header(HeaderName::From, self.dialog.local.clone())
                .header(HeaderName::To, to.clone())
                .header(HeaderName::CallId, self.dialog.call_id.clone())
                .cseq(cseq)
                .header(HeaderName::Contact, self.dialog.contact.clone())
                .header(HeaderName::UserAgent, USER_AGENT)
                .header(HeaderName::Allow, ALLOW);
            if let Some((name, value)) = &auth {
                b = b.header(name.clone(), value.clone());
            }
            for (n, v) in &opts.extra_headers {
                b = b.header(HeaderName::from_str_name(n), v.clone());
            }
            if let Some(o) = &offer {
                b = b.body("application/sdp", Bytes::from(o.sdp.clone()));
            }
            let invite = b.build();
            {
                let mut s = self.shared.sip();
                s.invite = Some(invite.clone());
                s.local_sdp = offer.as_ref().map(|o| o.sdp.clone());
            }
            let bytes = invite.to_bytes();
            self.send(bytes.clone()).await?;
            let mut interval = T1;
            let mut next_retx = (!tcp).then(|| tokio::time::Instant::now() + interval);
            let mut provisional_seen = false;
            let mut cancel_sent = false;
            let resp: Response = loop {
                if cancel_wanted && provisional_seen && !cancel_sent {
                    self.send(self.cancel_for(&invite).to_bytes()).await?;
                    cancel_sent = true;
                }
                let wake = next_retx.map_or(deadline, |t| t.min(deadline));
                tokio::select! {
                    m = self.rx.recv() => {
                        let Some(inc) = m else { return Err(CallerError::Closed) };
                        match &inc.message {
                            Message::Response(r) => {
                                let Ok(c) = r.headers.cseq() else { continue };
                                if c.method != Method::Invite || c.seq != cseq {
                                    continue;
                                }
                                if r.status.is_provisional() {
                                    // Proceeding: no more retransmissions (RFC 3261 §17.1.1.2).
                                    provisional_seen = true;
                                    next_retx = None;
                                    self.shared.sip().provisional.push(r.status.0);
                                    continue;
                                }
                                break r.clone();
                            }
                            Message::Request(req) => {
                                // Nothing else can happen before the dialog exists.
                                let resp = Response::to_request(req, StatusCode::CALL_DOES_NOT_EXIST, None);
                                if req.method != Method::Ack {
                                    self.reply(&inc, &resp).await;
                                }
                            }
                        }
                    }
                    c = cmds.recv(), if !cmds_closed => match c {
                        Some(Command::Cancel(reply)) => {
                            cancel_reply = Some(reply);
                            cancel_wanted = true;
                        }
                        Some(other) => other.refuse("the call is not answered yet"),
                        None => {
                            cmds_closed = true;
                            cancel_wanted = true;
                        }
                    },
                    _ = tokio::time::sleep_until(wake) => {
                        if tokio::time::Instant::now() >= deadline {
                            if provisional_seen && !cancel_sent {
                                let _ = self.send(self.cancel_for(&invite).to_bytes()).await;
                            }
                            return Err(CallerError::Timeout(opts.answer_timeout));
                        }
                        self.send(bytes.clone()).await?;
                        interval *= 2;
                        next_retx = Some(tokio::time::Instant::now() + interval);
                    }
                }
            };
            self.shared.sip().final_status = Some(resp.status.0);
            if resp.status.is_success() {
                let established = self.on_invite_2xx(&resp, offer.as_ref()).await;
                if cancel_wanted {
                    // The 200 crossed our CANCEL: the call exists, so end it with BYE.
                    let _ = self.bye().await;
                    if let Some(r) = cancel_reply {
                        let _ = r.send(Ok(resp.status.0));
                    }
                    return Err(CallerError::Rejected {
                        status: resp.status.0,
                        reason: "answered before the CANCEL took effect; hung up".into(),
                        headers: resp.headers.clone(),
                    });
                }
                return established;
            }
            // RFC 3261 §17.1.1.3: the ACK of a non-2xx final response.
            self.send(self.non2xx_ack(&invite, &resp).to_bytes())
                .await?;
            let status = resp.status.0;
            let challenged = status == 401 || status == 407;
            if challenged && !cancel_wanted && auth_tries < 2 {
                if let Some((user, pass)) = &opts.credentials {
                    let (challenge_name, answer_name) = if status == 401 {
                        (HeaderName::WwwAuthenticate, HeaderName::Authorization)
                    } else {
                        (
                            HeaderName::ProxyAuthenticate,
                            HeaderName::ProxyAuthorization,
                        )
                    };
                    let challenges: Vec<String> = resp
                        .headers
                        .get_all(&challenge_name)
                        .map(|t| t.as_str().to_owned())
                        .collect();
                    let stale = challenges
                        .iter()
                        .any(|c| digest_client::Challenge::parse(c).is_some_and(|c| c.stale));
                    if auth_tries == 0 || stale {
                        if let Some(value) = digest_client::authorize(
                            &challenges,
                            user,
                            pass,
                            "INVITE",
                            uri.as_str(),
                        ) {
                            auth = Some((answer_name, value));
                            auth_tries += 1;
                            cseq += 1;
                            continue;
                        }
                    }
                }
            }
            if let Some(r) = cancel_reply {
                let _ = r.send(Ok(status));
            }
            self.finish();
            return Err(CallerError::Rejected {
                status,
                reason: resp.reason.as_str().to_owned(),
                headers: resp.headers.clone(),
            });
        }
    }

    /// RFC 3261 §9.1: same Request-URI, Call-ID, From, To, CSeq number and top Via as the
    /// INVITE; method CANCEL.
    fn cancel_for(&self, invite: &Request) -> Request {
        let mut b = RequestBuilder::new(Method::Cancel, invite.uri.clone());
        for name in [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
        ] {
            if let Some(v) = invite.headers.get(&name) {
                b = b.header(name, v.clone());
            }
        }
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        b.cseq(seq).header(HeaderName::MaxForwards, "70").build()
    }

    /// RFC 3261 §17.1.1.3: the INVITE's top Via, Request-URI, Call-ID, From, CSeq number;
    /// the response's To (with its tag); method ACK.
    fn non2xx_ack(&self, invite: &Request, resp: &Response) -> Request {
        let mut b = RequestBuilder::new(Method::Ack, invite.uri.clone());
        if let Some(v) = invite.headers.get(&HeaderName::Via) {
            b = b.header(HeaderName::Via, v.clone());
        }
        b = b.header(HeaderName::MaxForwards, "70");
        if let Some(v) = invite.headers.get(&HeaderName::From) {
            b = b.header(HeaderName::From, v.clone());
        }
        if let Some(v) = resp.headers.get(&HeaderName::To) {
            b = b.header(HeaderName::To, v.clone());
        }
        if let Some(v) = invite.headers.get(&HeaderName::CallId) {
            b = b.header(HeaderName::CallId, v.clone());
        }
        for r in invite.headers.get_all(&HeaderName::Route) {
            b = b.header(HeaderName::Route, r.clone());
        }
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        b.cseq(seq).build()
    }

    /// A 2xx to our INVITE: set up the dialog (RFC 3261 §12.1.2), take the answer (or the
    /// late offer), ACK (§13.2.2.4), start media. If the SDP is unusable the call is
    /// still ACKed, then hung up.
    async fn on_invite_2xx(
        &mut self,
        resp: &Response,
        offer: Option<&Offer>,
    ) -> Result<(), CallerError> {
        if let Some(to) = header_text(&resp.headers, &HeaderName::To) {
            self.dialog.remote = to;
        }
        if let Some(c) = resp
            .headers
            .contacts()
            .ok()
            .and_then(|c| c.into_iter().next())
        {
            self.dialog.remote_target = c.uri.as_str().to_owned();
        }
        let mut rr: Vec<String> = resp
            .headers
            .values(&HeaderName::RecordRoute)
            .map(|t| t.as_str().to_owned())
            .collect();
        rr.reverse();
        self.dialog.routes = rr;
        let remote_sdp = String::from_utf8_lossy(&resp.body).into_owned();
        let parsed =
            SessionDescription::parse(&remote_sdp).map_err(|e| CallerError::Sdp(e.to_string()));
        let (negotiated, ack_body) = match offer {
            Some(o) => (
                parsed.and_then(|a| accept_answer(o, &a).map_err(CallerError::from)),
                None,
            ),
            None => {
                let n = parsed
                    .and_then(|o| negotiate(&o, &self.answer_policy).map_err(CallerError::from));
                let body = match &n {
                    Ok(n) => {
                        let local = self.local_media();
                        Some(n.answer_sdp(&local))
                    }
                    Err(_) => None,
                };
                (n, body)
            }
        };
        let seq = resp.headers.cseq().map(|c| c.seq).unwrap_or(1);
        // The ACK keeps the INVITE's CSeq number (RFC 3261 §13.2.2.4).
        self.dialog.local_cseq = seq.saturating_sub(1);
        let mut ack = self.in_dialog(Method::Ack)?;
        if let Some(body) = &ack_body {
            ack = ack.body("application/sdp", Bytes::from(body.clone()));
        }
        let ack = ack.build();
        let bytes = ack.to_bytes();
        self.send(bytes.clone()).await?;
        self.last_ack = Some(bytes);
        {
            let mut s = self.shared.sip();
            s.answer = Some(resp.clone());
            s.established = true;
        }
        match negotiated {
            Ok(n) => {
                let local_sdp = ack_body
                    .or_else(|| offer.map(|o| o.sdp.clone()))
                    .unwrap_or_default();
                self.apply(n, remote_sdp, local_sdp)
            }
            Err(e) => {
                self.shared.sip().remote_sdp = Some(remote_sdp);
                let _ = self.bye().await;
                self.finish();
                Err(e)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// UAS: answering one INVITE

/// How an [`Answerer`] treats calls.
#[derive(Debug, Clone)]
pub struct AnswerOptions {
    /// Codecs accepted, best first.
    pub codecs: Vec<Codec>,
    /// Accept `telephone-event` when offered.
    pub telephone_event: bool,
    /// Accept SDES-SRTP offers (plain RTP is always accepted).
    pub srtp: bool,
    /// What answered calls play: silence, a tone, or an echo of what they receive.
    pub source: AnswerSource,
    /// Reject every call with this status and these extra headers.
    pub reject: Option<(u16, Vec<(String, String)>)>,
    /// Challenge INVITEs (401) for this realm and accept only these credentials.
    pub auth: Option<AnswerAuth>,
    /// Time between 180 Ringing and 200 OK (a CANCEL in that time gets 487).
    pub ring_for: Duration,
}

/// Digest credentials an [`Answerer`] demands.
#[derive(Debug, Clone)]
pub struct AnswerAuth {
    pub realm: String,
    pub username: String,
    pub password: String,
}

/// What an answered call plays at first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnswerSource {
    Silence,
    Tone { hz: f64, dbfs: f64 },
    Echo,
}

impl Default for AnswerOptions {
    /// PCMU (then PCMA) with telephone-event, silence, 20 ms of ringing.
    fn default() -> Self {
        AnswerOptions {
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event: true,
            srtp: true,
            source: AnswerSource::Silence,
            reject: None,
            auth: None,
            ring_for: Duration::from_millis(20),
        }
    }
}

impl Leg {
    /// Answers `inc` (an initial INVITE): 100, then a rejection, or 180, a ring, and a 200
    /// with our answer (or offer) retransmitted until the ACK (RFC 3261 §13.3.1.4).
    /// Returns whether the call is established.
    async fn answer(&mut self, inc: Incoming, opts: &AnswerOptions) -> Result<bool, CallerError> {
        let Message::Request(req) = &inc.message else {
            return Ok(false);
        };
        let req = req.clone();
        self.peer = inc.reply_target().unwrap_or(self.peer);
        let cseq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
        let local_tag = new_tag();
        self.dialog.remote = header_text(&req.headers, &HeaderName::From).unwrap_or_default();
        self.dialog.local = format!(
            "{};tag={local_tag}",
            header_text(&req.headers, &HeaderName::To).unwrap_or_default()
        );
        if let Some(c) = req
            .headers
            .contacts()
            .ok()
            .and_then(|c| c.into_iter().next())
        {
            self.dialog.remote_target = c.uri.as_str().to_owned();
        }
        self.dialog.routes = req
            .headers
            .values(&HeaderName::RecordRoute)
            .map(|t| t.as_str().to_owned())
            .collect();
        self.shared.sip().invite = Some(req.clone());

        let respond =
            |status: StatusCode| Response::to_request(&req, status, None).with_to_tag(&local_tag);
        self.reply(&inc, &Response::to_request(&req, StatusCode::TRYING, None))
            .await;

        if let Some((status, headers)) = &opts.reject {
            let mut r = respond(StatusCode(*status));
            for (n, v) in headers {
                r = r.header(HeaderName::from_str_name(n), v.clone());
            }
            self.final_non2xx(&inc, cseq, r).await;
            return Ok(false);
        }

        let remote_body = String::from_utf8_lossy(&req.body).into_owned();
        let (body, negotiated) = if req.body.is_empty() {
            let local = self.local_media();
            let offer = build_offer(&self.offer_policy, &local);
            let sdp = offer.sdp.clone();
            self.pending_offer = Some(offer);
            (sdp, None)
        } else {
            let n = SessionDescription::parse(&remote_body)
                .map_err(|e| CallerError::Sdp(e.to_string()))
                .and_then(|o| negotiate(&o, &self.answer_policy).map_err(CallerError::from));
            match n {
                Ok(n) => {
                    let local = self.local_media();
                    (n.answer_sdp(&local), Some(n))
                }
                Err(_) => {
                    self.final_non2xx(&inc, cseq, respond(StatusCode::NOT_ACCEPTABLE_HERE))
                        .await;
                    return Ok(false);
                }
            }
        };

        self.reply(&inc, &respond(StatusCode::RINGING)).await;
        self.shared.sip().provisional.push(180);
        let ring_end = tokio::time::Instant::now() + opts.ring_for;
        loop {
            tokio::select! {
                m = self.rx.recv() => {
                    let Some(m) = m else { return Ok(false) };
                    let Message::Request(r) = &m.message else { continue };
                    match r.method {
                        Method::Cancel => {
                            self.reply(&m, &Response::to_request(r, StatusCode::OK, None).with_to_tag(&local_tag)).await;
                            self.final_non2xx(&inc, cseq, respond(StatusCode::REQUEST_TERMINATED)).await;
                            return Ok(false);
                        }
                        Method::Invite => self.reply(&m, &respond(StatusCode::RINGING)).await,
                        _ => {}
                    }
                }
                _ = tokio::time::sleep_until(ring_end) => break,
            }
        }

        let ok = respond(StatusCode::OK)
            .header(HeaderName::Contact, self.dialog.contact.clone())
            .header(HeaderName::Allow, ALLOW)
            .with_body("application/sdp", Bytes::from(body.clone()));
        let bytes = ok.to_bytes();
        self.invite_response = Some((cseq, bytes.clone()));
        self.shared.sip().answer = Some(ok.clone());
        self.shared.sip().final_status = Some(200);
        let target = self.peer;
        self.ep.transports.send(&target, bytes.clone()).await?;
        let start = tokio::time::Instant::now();
        let mut interval = T1;
        let mut next = start + interval;
        let ack = loop {
            tokio::select! {
                m = self.rx.recv() => {
                    let Some(m) = m else { return Ok(false) };
                    let Message::Request(r) = &m.message else { continue };
                    match r.method {
                        Method::Ack => break r.clone(),
                        Method::Invite => { let _ = self.ep.transports.send(&target, bytes.clone()).await; }
                        Method::Cancel => self.reply(&m, &Response::to_request(r, StatusCode::OK, None).with_to_tag(&local_tag)).await,
                        _ => self.on_request(m).await,
                    }
                }
                _ = tokio::time::sleep_until(next) => {
                    if tokio::time::Instant::now() >= start + TIMER_B {
                        // RFC 3261 §13.3.1.4: no ACK, end the dialog.
                        let _ = self.bye().await;
                        return Ok(false);
                    }
                    let _ = self.ep.transports.send(&target, bytes.clone()).await;
                    interval = (interval * 2).min(T2);
                    next = tokio::time::Instant::now() + interval;
                }
            }
        };
        self.shared.sip().established = true;
        match (negotiated, self.pending_offer.take()) {
            (Some(n), _) => self.apply(n, remote_body, body)?,
            (None, Some(offer)) => {
                let answer = String::from_utf8_lossy(&ack.body).into_owned();
                let n = SessionDescription::parse(&answer)
                    .map_err(|e| CallerError::Sdp(e.to_string()))
                    .and_then(|a| accept_answer(&offer, &a).map_err(CallerError::from));
                match n {
                    Ok(n) => self.apply(n, answer, body)?,
                    Err(e) => {
                        let _ = self.bye().await;
                        return Err(e);
                    }
                }
            }
            (None, None) => return Ok(false),
        }
        Ok(true)
    }

    /// Sends a final non-2xx response and absorbs the ACK (retransmitting the response
    /// over UDP until it comes, RFC 3261 §17.2.1 Timer G).
    async fn final_non2xx(&mut self, inc: &Incoming, cseq: u32, resp: Response) {
        self.shared.sip().final_status = Some(resp.status.0);
        let bytes = resp.to_bytes();
        self.invite_response = Some((cseq, bytes.clone()));
        let target = self.peer_reply(inc);
        let _ = self.ep.transports.send(&target, bytes.clone()).await;
        let start = tokio::time::Instant::now();
        let mut interval = T1;
        loop {
            let wake = tokio::time::Instant::now() + interval;
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some(m) => match &m.message {
                        Message::Request(r) if r.method == Method::Ack => break,
                        Message::Request(r) if r.method == Method::Invite => {
                            let _ = self.ep.transports.send(&target, bytes.clone()).await;
                        }
                        _ => {}
                    },
                    None => break,
                },
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= start + TIMER_B {
                        break;
                    }
                    if self.transport == Transport::Udp {
                        let _ = self.ep.transports.send(&target, bytes.clone()).await;
                    }
                    interval = (interval * 2).min(T2);
                }
            }
        }
        self.shared.sip().terminated = true;
    }
}

// ---------------------------------------------------------------------------
// Public handles

/// Places calls. Each call binds its own loopback SIP (UDP and TCP) and RTP ports.
pub struct Caller;

impl Caller {
    /// Places a call and waits for its final response: `Ok` once the 200 is ACKed and
    /// media runs, [`CallerError::Rejected`] for 3xx-6xx.
    pub async fn dial(opts: DialOptions) -> Result<Call, CallerError> {
        Caller::start(opts).await?.answered().await
    }

    /// Sends the INVITE and returns at once, so the test can watch provisional responses
    /// or CANCEL before the answer.
    pub async fn start(opts: DialOptions) -> Result<Dialing, CallerError> {
        let ep = Endpoint::bind(None).await?;
        let transport = opts.transport.transport();
        let rtp = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?);
        let call_id = format!("{}@127.0.0.1", rand_hex());
        let rx = ep.register(&call_id);
        let shared = Arc::new(Shared::default());
        shared.sip().call_id = call_id.clone();
        shared.media().local_rtp = rtp.local_addr().ok();
        let local = ep.local(transport);
        let contact = format!(
            "<sip:{}@{local}{}>",
            opts.from_user,
            if transport == Transport::Tcp {
                ";transport=tcp"
            } else {
                ""
            }
        );
        let srtp = if opts.srtp {
            SrtpPolicy::Require
        } else {
            SrtpPolicy::Allow
        };
        let mut leg = Leg {
            peer: Target {
                addr: opts.gateway,
                transport,
                conn: None,
            },
            ep,
            owns_endpoint: true,
            transport,
            rx,
            shared: shared.clone(),
            dialog: Dialog {
                call_id,
                local: format!("<sip:{}@127.0.0.1>;tag={}", opts.from_user, new_tag()),
                contact,
                ..Dialog::default()
            },
            rtp,
            media: None,
            answer_policy: AnswerPolicy {
                codecs: opts.codecs.clone(),
                srtp,
                telephone_event: opts.telephone_event,
                ..AnswerPolicy::default()
            },
            offer_policy: OfferPolicy {
                codecs: opts.codecs.clone(),
                srtp,
                telephone_event: opts.telephone_event,
                ..OfferPolicy::default()
            },
            session_id: rand::random::<u32>().into(),
            sdp_version: 0,
            pending_offer: None,
            last_ack: None,
            invite_response: None,
        };
        let (cmd, mut cmds) = mpsc::channel(16);
        let (outcome_tx, outcome) = oneshot::channel();
        tokio::spawn(async move {
            let r = leg.invite(&opts, &mut cmds).await;
            let ok = r.is_ok();
            let _ = outcome_tx.send(r);
            if ok {
                leg.run_dialog(&mut cmds).await;
            } else {
                leg.finish();
            }
        });
        Ok(Dialing {
            call: Call {
                shared,
                cmd,
                role: Role::Uac,
            },
            outcome,
        })
    }
}

/// A call placed but not answered yet.
pub struct Dialing {
    call: Call,
    outcome: oneshot::Receiver<Result<(), CallerError>>,
}

impl Dialing {
    pub fn call_id(&self) -> String {
        self.call.call_id()
    }

    /// Provisional statuses received so far (100, 180, 183...).
    pub fn provisional(&self) -> Vec<u16> {
        self.call.shared.sip().provisional.clone()
    }

    /// Waits until a provisional response with `status` has come.
    pub async fn wait_provisional(&self, status: u16, timeout: Duration) -> bool {
        poll_until(timeout, || {
            self.call.shared.sip().provisional.contains(&status)
        })
        .await
    }

    /// Waits for the final response.
    pub async fn answered(self) -> Result<Call, CallerError> {
        match self.outcome.await {
            Ok(Ok(())) => Ok(self.call),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CallerError::Closed),
        }
    }

    /// CANCELs the call (sent once a provisional response has come, RFC 3261 §9.1) and
    /// returns the final status of the INVITE: 487 normally, 200 when the answer crossed
    /// the CANCEL (the call is then hung up with BYE).
    pub async fn cancel(self) -> Result<u16, CallerError> {
        let (tx, rx) = oneshot::channel();
        self.call
            .cmd
            .send(Command::Cancel(tx))
            .await
            .map_err(|_| CallerError::Closed)?;
        rx.await.map_err(|_| CallerError::Closed)?
    }
}

/// An established call (either side): its dialog and media run in background tasks.
/// Dropping it without [`Call::hangup`] sends BYE.
pub struct Call {
    shared: Arc<Shared>,
    cmd: mpsc::Sender<Command>,
    role: Role,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("call_id", &self.call_id())
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

async fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl Call {
    pub fn call_id(&self) -> String {
        self.shared.sip().call_id.clone()
    }

    /// The peer's SDP (answer, or offer when it offered).
    pub fn remote_sdp(&self) -> Option<String> {
        self.shared.sip().remote_sdp.clone()
    }

    /// Our SDP (offer or answer).
    pub fn local_sdp(&self) -> Option<String> {
        self.shared.sip().local_sdp.clone()
    }

    /// The full negotiation in force.
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.shared.sip().negotiated.clone()
    }

    /// The codec in force.
    pub fn codec(&self) -> Option<Codec> {
        self.shared.sip().negotiated.as_ref().map(|n| n.codec.codec)
    }

    /// The negotiated `telephone-event` payload type.
    pub fn telephone_event_pt(&self) -> Option<u8> {
        self.shared
            .sip()
            .negotiated
            .as_ref()
            .and_then(|n| n.telephone_event)
            .map(|p| p.get())
    }

    /// Our direction for the audio stream (changes with re-INVITEs).
    pub fn local_direction(&self) -> Option<Direction> {
        self.shared
            .sip()
            .negotiated
            .as_ref()
            .map(|n| n.local_direction)
    }

    /// Sample rate of [`Call::recorded`] PCM: the codec's (8000 for G.711, 16000 for
    /// G.722, 48000 for Opus).
    pub fn sample_rate(&self) -> u32 {
        self.codec().map(|c| sample_rate(c).hz()).unwrap_or(8000)
    }

    /// Our RTP address.
    pub fn local_rtp(&self) -> Option<SocketAddr> {
        self.shared.media().local_rtp
    }

    /// The INVITE (as sent by the caller side, as received by the answering side).
    pub fn invite(&self) -> Option<Request> {
        self.shared.sip().invite.clone()
    }

    /// The 200 OK that established the call.
    pub fn answer(&self) -> Option<Response> {
        self.shared.sip().answer.clone()
    }

    /// Provisional statuses seen (caller side) or sent (answering side).
    pub fn provisional(&self) -> Vec<u16> {
        self.shared.sip().provisional.clone()
    }

    /// In-dialog requests received from the peer, in order.
    pub fn requests_received(&self) -> Vec<Request> {
        self.shared.sip().requests.clone()
    }

    /// Re-INVITEs received.
    pub fn reinvites_received(&self) -> u32 {
        self.shared.sip().reinvites
    }

    pub fn play_silence(&self) {
        self.set_source(Source::Silence);
    }

    /// A sine at `hz`, peak level `dbfs` (AES17: 0 is full scale).
    pub fn play_tone(&self, hz: f64, dbfs: f64) {
        let amplitude = 10f64.powf(dbfs / 20.0) * 32767.0;
        self.set_source(Source::Tone {
            hz,
            amplitude,
            phase: 0.0,
        });
    }

    /// PCM at the codec's rate ([`Call::sample_rate`]), once or looped; silence after.
    pub fn play_pcm(&self, samples: &[i16], looped: bool) {
        self.set_source(Source::Pcm {
            samples: samples.into(),
            pos: 0,
            looped,
        });
    }

    /// Plays back what is received (about one packet late).
    pub fn play_echo(&self) {
        self.set_source(Source::Echo);
    }

    fn set_source(&self, source: Source) {
        self.shared.media().source = source;
    }

    /// Sends `digits` (0-9, *, #, A-D) and returns once the last one is sent: RFC 4733
    /// events (100 ms each, 100 ms apart), SIP INFO, or in-band tone pairs (100 ms tone,
    /// 100 ms of the current source). RFC 4733 digits are dropped if no telephone-event
    /// was negotiated.
    pub async fn send_dtmf(&self, digits: &str, mode: DtmfMode) -> Result<(), CallerError> {
        let digits: Vec<Digit> = digits
            .chars()
            .map(|c| Digit::from_char(c).map_err(|_| CallerError::BadDigit(c)))
            .collect::<Result<_, _>>()?;
        let frames = |d: Duration| (d.as_millis() / PTIME.as_millis()) as u32;
        match mode {
            DtmfMode::Info => {
                let (done, rx) = oneshot::channel();
                self.cmd
                    .send(Command::Info { digits, done })
                    .await
                    .map_err(|_| CallerError::Closed)?;
                rx.await.map_err(|_| CallerError::Closed)?
            }
            DtmfMode::Rfc4733 => {
                if self.shared.sip().terminated {
                    return Err(CallerError::WrongState("the call has ended"));
                }
                let (done, rx) = oneshot::channel();
                {
                    let mut m = self.shared.media();
                    m.events.extend(digits.into_iter().map(EventStep::Digit));
                    m.events.push_back(EventStep::Done(done));
                }
                rx.await.map_err(|_| CallerError::Closed)
            }
            DtmfMode::Inband => {
                if self.shared.sip().terminated {
                    return Err(CallerError::WrongState("the call has ended"));
                }
                let (done, rx) = oneshot::channel();
                {
                    let mut m = self.shared.media();
                    for d in digits {
                        m.inband.push_back(InbandStep::Tone {
                            digit: d,
                            frames: frames(DTMF_PRESS),
                            n: 0,
                        });
                        m.inband.push_back(InbandStep::Gap {
                            frames: frames(DTMF_GAP),
                        });
                    }
                    m.inband.push_back(InbandStep::Done(done));
                }
                rx.await.map_err(|_| CallerError::Closed)
            }
        }
    }

    /// Decoded audio received since `since`, at [`Call::sample_rate`], packets
    /// concatenated in arrival order.
    pub fn recorded(&self, since: Instant) -> Vec<i16> {
        let m = self.shared.media();
        m.recorded
            .iter()
            .filter(|c| c.at >= since)
            .flat_map(|c| c.samples.iter().copied())
            .collect()
    }

    /// Decoded packets received since `since`, each with its arrival time.
    pub fn recorded_chunks(&self, since: Instant) -> Vec<(Instant, Vec<i16>)> {
        let m = self.shared.media();
        m.recorded
            .iter()
            .filter(|c| c.at >= since)
            .map(|c| (c.at, c.samples.clone()))
            .collect()
    }

    /// Waits until a packet at least `min_dbfs` loud (RMS, AES17) arrives after `since`
    /// (a prompt starting, the far end talking); returns its arrival time.
    pub async fn wait_for_sound(
        &self,
        since: Instant,
        min_dbfs: f64,
        timeout: Duration,
    ) -> Option<Instant> {
        let find = || {
            let m = self.shared.media();
            m.recorded
                .iter()
                .find(|c| c.at >= since && super::tone::rms_dbfs(&c.samples) >= min_dbfs)
                .map(|c| c.at)
        };
        let mut at = None;
        poll_until(timeout, || {
            at = find();
            at.is_some()
        })
        .await;
        at
    }

    /// All decoded audio received so far.
    pub fn recorded_all(&self) -> Vec<i16> {
        let m = self.shared.media();
        m.recorded
            .iter()
            .flat_map(|c| c.samples.iter().copied())
            .collect()
    }

    /// Decoded audio received between `from` and `to`.
    pub fn recorded_between(&self, from: Instant, to: Instant) -> Vec<i16> {
        let m = self.shared.media();
        m.recorded
            .iter()
            .filter(|c| c.at >= from && c.at < to)
            .flat_map(|c| c.samples.iter().copied())
            .collect()
    }

    /// RFC 4733 digits received, one per press, in order.
    pub fn received_digits(&self) -> String {
        self.shared.media().digits.iter().map(|(_, c)| *c).collect()
    }

    /// RFC 4733 digits received with their arrival times.
    pub fn received_digit_times(&self) -> Vec<(Instant, char)> {
        self.shared.media().digits.clone()
    }

    /// Digits received in SIP INFO requests.
    pub fn info_digits(&self) -> String {
        self.shared.sip().info_digits.clone()
    }

    /// Waits until `n` RFC 4733 digits have arrived; returns those received.
    pub async fn wait_for_digits(&self, n: usize, timeout: Duration) -> String {
        poll_until(timeout, || self.shared.media().digits.len() >= n).await;
        self.received_digits()
    }

    /// Waits until `n` SIP INFO digits have arrived; returns those received.
    pub async fn wait_for_info_digits(&self, n: usize, timeout: Duration) -> String {
        poll_until(timeout, || {
            self.shared.sip().info_digits.chars().count() >= n
        })
        .await;
        self.info_digits()
    }

    pub fn packets_sent(&self) -> u64 {
        self.shared.media().packets_sent
    }

    /// RTP packets received with the negotiated audio or telephone-event payload type.
    pub fn packets_received(&self) -> u64 {
        self.shared.media().packets_received
    }

    /// Waits until `n` RTP packets have been received.
    pub async fn wait_for_packets(&self, n: u64, timeout: Duration) -> bool {
        poll_until(timeout, || self.shared.media().packets_received >= n).await
    }

    /// Whether the peer hung up (a BYE was received and answered 200).
    pub fn bye_received(&self) -> bool {
        self.shared.sip().bye_received
    }

    /// Waits for the peer's BYE.
    pub async fn wait_for_bye(&self, timeout: Duration) -> bool {
        poll_until(timeout, || self.shared.sip().bye_received).await
    }

    /// Whether the dialog has ended (either side).
    pub fn is_terminated(&self) -> bool {
        self.shared.sip().terminated
    }

    /// Sends a re-INVITE offering `direction` (`SendOnly` puts the peer on hold,
    /// `SendRecv` resumes) and returns its final status; the answer's direction is
    /// applied to our media.
    pub async fn reinvite(&self, direction: Direction) -> Result<u16, CallerError> {
        let (done, rx) = oneshot::channel();
        self.cmd
            .send(Command::Reinvite { direction, done })
            .await
            .map_err(|_| CallerError::Closed)?;
        rx.await.map_err(|_| CallerError::Closed)?
    }

    /// Sends BYE and waits for its 200.
    pub async fn hangup(&self) -> Result<(), CallerError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Hangup(tx))
            .await
            .map_err(|_| CallerError::Closed)?;
        rx.await.map_err(|_| CallerError::Closed)?
    }
}

// ---------------------------------------------------------------------------
// Answerer: the called side

#[derive(Default)]
struct AnswererFacts {
    invites: Vec<Request>,
    auth: Vec<VerifyOutcome>,
}

/// Answers calls on loopback (UDP and TCP on one port each) per [`AnswerOptions`].
pub struct Answerer {
    ep: Endpoint,
    calls: mpsc::UnboundedReceiver<Call>,
    facts: Arc<Mutex<AnswererFacts>>,
}

impl Answerer {
    pub async fn start(opts: AnswerOptions) -> Result<Answerer, CallerError> {
        let (unrouted_tx, mut unrouted) = mpsc::unbounded_channel();
        let ep = Endpoint::bind(Some(unrouted_tx)).await?;
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let facts = Arc::new(Mutex::new(AnswererFacts::default()));
        let mut digest = opts.auth.as_ref().map(|a| {
            let secret: [u8; 16] = rand::random();
            DigestServer::new(a.realm.clone(), &secret, Duration::from_secs(300))
        });
        let me = ep.clone();
        let f = facts.clone();
        tokio::spawn(async move {
            while let Some(inc) = unrouted.recv().await {
                let Message::Request(req) = &inc.message else {
                    continue;
                };
                match req.method {
                    Method::Invite
                        if req
                            .headers
                            .to()
                            .ok()
                            .and_then(|t| t.tag().map(str::to_owned))
                            .is_none() =>
                    {
                        lock(&f).invites.push(req.clone());
                        if let (Some(server), Some(auth)) = (digest.as_mut(), opts.auth.as_ref()) {
                            let values: Vec<&str> = req
                                .headers
                                .get_all(&HeaderName::Authorization)
                                .map(|t| t.as_str())
                                .collect();
                            let outcome = server.verify(
                                SystemTime::now(),
                                "INVITE",
                                req.uri.as_str(),
                                values,
                                |u| {
                                    (u == auth.username)
                                        .then(|| Credential::Password(auth.password.clone()))
                                },
                            );
                            lock(&f).auth.push(outcome.clone());
                            if !matches!(outcome, VerifyOutcome::Ok { .. }) {
                                let stale = outcome == VerifyOutcome::Stale;
                                let mut r =
                                    Response::to_request(req, StatusCode::UNAUTHORIZED, None)
                                        .with_to_tag(&new_tag());
                                for c in server.challenge(
                                    SystemTime::now(),
                                    stale,
                                    &[Algorithm::Sha256, Algorithm::Md5],
                                ) {
                                    r = r.header(HeaderName::WwwAuthenticate, c);
                                }
                                me.reply(&inc, &r).await;
                                continue;
                            }
                        }
                        spawn_answering_leg(&me, inc, &opts, calls_tx.clone());
                    }
                    Method::Ack => {}
                    Method::Options => {
                        let r = Response::to_request(req, StatusCode::OK, None)
                            .with_to_tag(&new_tag())
                            .header(HeaderName::Allow, ALLOW);
                        me.reply(&inc, &r).await;
                    }
                    _ => {
                        let r = Response::to_request(req, StatusCode::CALL_DOES_NOT_EXIST, None)
                            .with_to_tag(&new_tag());
                        me.reply(&inc, &r).await;
                    }
                }
            }
        });
        Ok(Answerer { ep, calls, facts })
    }

    /// The SIP address to call for `transport`.
    pub fn addr(&self, transport: SipTransport) -> SocketAddr {
        self.ep.local(transport.transport())
    }

    /// The next established call (200 sent and ACKed), if one comes within `timeout`.
    pub async fn next_call(&mut self, timeout: Duration) -> Option<Call> {
        tokio::time::timeout(timeout, self.calls.recv())
            .await
            .ok()
            .flatten()
    }

    /// Initial INVITEs received (challenged ones included).
    pub fn invites_received(&self) -> Vec<Request> {
        lock(&self.facts).invites.clone()
    }

    /// The digest verdict on each initial INVITE, in order.
    pub fn auth_outcomes(&self) -> Vec<VerifyOutcome> {
        lock(&self.facts).auth.clone()
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        self.ep.shutdown();
    }
}

fn spawn_answering_leg(
    ep: &Endpoint,
    inc: Incoming,
    opts: &AnswerOptions,
    calls: mpsc::UnboundedSender<Call>,
) {
    let call_id = inc
        .message
        .headers()
        .call_id()
        .map(|t| t.as_str().to_owned())
        .unwrap_or_default();
    let rx = ep.register(&call_id);
    let shared = Arc::new(Shared::default());
    shared.sip().call_id = call_id.clone();
    shared.media().source = match opts.source {
        AnswerSource::Silence => Source::Silence,
        AnswerSource::Tone { hz, dbfs } => Source::Tone {
            hz,
            amplitude: 10f64.powf(dbfs / 20.0) * 32767.0,
            phase: 0.0,
        },
        AnswerSource::Echo => Source::Echo,
    };
    let transport = inc.transport;
    let contact = format!(
        "<sip:answerer@{}{}>",
        ep.local(transport),
        if transport == Transport::Tcp {
            ";transport=tcp"
        } else {
            ""
        }
    );
    let srtp = if opts.srtp {
        SrtpPolicy::Allow
    } else {
        SrtpPolicy::Disable
    };
    let ep = ep.clone();
    let opts = opts.clone();
    tokio::spawn(async move {
        let rtp = match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await {
            Ok(s) => Arc::new(s),
            Err(_) => return,
        };
        shared.media().local_rtp = rtp.local_addr().ok();
        let mut leg = Leg {
            peer: Target {
                addr: inc.source,
                transport,
                conn: inc.conn,
            },
            ep,
            owns_endpoint: false,
            transport,
            rx,
            shared: shared.clone(),
            dialog: Dialog {
                call_id,
                contact,
                ..Dialog::default()
            },
            rtp,
            media: None,
            answer_policy: AnswerPolicy {
                codecs: opts.codecs.clone(),
                srtp,
                telephone_event: opts.telephone_event,
                ..AnswerPolicy::default()
            },
            offer_policy: OfferPolicy {
                codecs: opts.codecs.clone(),
                srtp: SrtpPolicy::Allow,
                telephone_event: opts.telephone_event,
                ..OfferPolicy::default()
            },
            session_id: rand::random::<u32>().into(),
            sdp_version: 0,
            pending_offer: None,
            last_ack: None,
            invite_response: None,
        };
        let (cmd, mut cmds) = mpsc::channel(16);
        match leg.answer(inc, &opts).await {
            Ok(true) => {
                let _ = calls.send(Call {
                    shared,
                    cmd,
                    role: Role::Uas,
                });
                leg.run_dialog(&mut cmds).await;
            }
            _ => {
                drop(cmd);
                leg.finish();
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Digest client

/// The client side of SIP digest authentication (RFC 3261 §22.2, RFC 7616 §3.4): answer
/// a `WWW-Authenticate`/`Proxy-Authenticate` challenge with an `Authorization` value.
/// MD5 (RFC 1321) and SHA-256 (FIPS 180-4) are written out here so the test caller
/// shares no code with the gateway's verifier.
pub mod digest_client {
    use std::fmt::Write as _;

    /// One parsed `Digest` challenge.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Challenge {
        pub realm: String,
        pub nonce: String,
        pub opaque: Option<String>,
        /// As sent (`MD5` when absent, RFC 7616 §3.3).
        pub algorithm: String,
        /// The qop options offered.
        pub qop: Vec<String>,
        pub stale: bool,
    }

    impl Challenge {
        /// Parses `Digest realm="...", nonce="...", ...`; `None` for other schemes or
        /// when realm or nonce is missing.
        pub fn parse(value: &str) -> Option<Challenge> {
            let v = value.trim();
            let (scheme, rest) = v.split_once(char::is_whitespace)?;
            if !scheme.eq_ignore_ascii_case("digest") {
                return None;
            }
            let params = parse_params(rest);
            let get = |k: &str| {
                params
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            };
            Some(Challenge {
                realm: get("realm")?,
                nonce: get("nonce")?,
                opaque: get("opaque"),
                algorithm: get("algorithm").unwrap_or_else(|| "MD5".to_owned()),
                qop: get("qop")
                    .map(|q| {
                        q.split(',')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            })
        }
    }

    /// `name=value` pairs separated by commas; quoted values unescaped.
    fn parse_params(s: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut chars = s.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                chars.next();
            }
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' || c == ',' {
                    break;
                }
                name.push(c);
                chars.next();
            }
            if name.is_empty() {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'=') {
                chars.next();
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if chars.peek() == Some(&'"') {
                    chars.next();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some(n) = chars.next() {
                                    value.push(n);
                                }
                            }
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                } else {
                    while let Some(&c) = chars.peek() {
                        if c == ',' {
                            break;
                        }
                        value.push(c);
                        chars.next();
                    }
                    value = value.trim().to_owned();
                }
            }
            out.push((name.trim().to_owned(), value));
        }
        out
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Hash {
        Md5,
        Sha256,
    }

    impl Hash {
        fn hex(self, s: &str) -> String {
            let bytes: Vec<u8> = match self {
                Hash::Md5 => md5(s.as_bytes()).to_vec(),
                Hash::Sha256 => sha256(s.as_bytes()).to_vec(),
            };
            to_hex(&bytes)
        }
    }

    /// The `Authorization` value answering the best challenge we support among
    /// `challenges` (SHA-256 over MD5; `-sess` variants too), with `qop=auth` when
    /// offered. `None` when no challenge is usable.
    pub fn authorize(
        challenges: &[String],
        user: &str,
        pass: &str,
        method: &str,
        uri: &str,
    ) -> Option<String> {
        let parsed: Vec<Challenge> = challenges
            .iter()
            .filter_map(|c| Challenge::parse(c))
            .collect();
        let rank = |c: &Challenge| match c.algorithm.to_ascii_uppercase().as_str() {
            "SHA-256" | "SHA-256-SESS" => Some(2),
            "MD5" | "MD5-SESS" => Some(1),
            _ => None,
        };
        let best = parsed
            .iter()
            .filter(|c| rank(c).is_some())
            .max_by_key(|c| rank(c))?;
        let cnonce = format!("{:016x}", rand::random::<u64>());
        Some(response(best, user, pass, method, uri, &cnonce, 1))
    }

    /// The `Authorization` value for one challenge (RFC 7616 §3.4.1).
    pub fn response(
        c: &Challenge,
        user: &str,
        pass: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> String {
        let alg = c.algorithm.to_ascii_uppercase();
        let hash = if alg.starts_with("SHA-256") {
            Hash::Sha256
        } else {
            Hash::Md5
        };
        let sess = alg.ends_with("-SESS");
        let mut ha1 = hash.hex(&format!("{user}:{}:{pass}", c.realm));
        if sess {
            ha1 = hash.hex(&format!("{ha1}:{}:{cnonce}", c.nonce));
        }
        let ha2 = hash.hex(&format!("{method}:{uri}"));
        let qop_auth = c.qop.iter().any(|q| q.eq_ignore_ascii_case("auth"));
        let nc = format!("{nc:08x}");
        let resp = if qop_auth {
            hash.hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", c.nonce))
        } else {
            hash.hex(&format!("{ha1}:{}:{ha2}", c.nonce))
        };
        let mut v = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{resp}\", algorithm={}",
            c.realm, c.nonce, c.algorithm
        );
        if qop_auth {
            let _ = write!(v, ", qop=auth, nc={nc}, cnonce=\"{cnonce}\"");
        }
        if let Some(o) = &c.opaque {
            let _ = write!(v, ", opaque=\"{o}\"");
        }
        v
    }

    pub fn to_hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }

    /// Message padding shared by MD5 and SHA-256: 0x80, zeros to 56 mod 64, the bit
    /// length in 64 bits (little-endian for MD5, big-endian for SHA-256).
    fn pad(data: &[u8], big_endian: bool) -> Vec<u8> {
        let mut m = data.to_vec();
        let bits = (data.len() as u64).wrapping_mul(8);
        m.push(0x80);
        while m.len() % 64 != 56 {
            m.push(0);
        }
        m.extend_from_slice(&if big_endian {
            bits.to_be_bytes()
        } else {
            bits.to_le_bytes()
        });
        m
    }

    /// MD5, RFC 1321.
    pub fn md5(data: &[u8]) -> [u8; 16] {
        const S: [u32; 64] = [
            7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20,
            5, 9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
            6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
        ];
        // RFC 1321 §3.4: T[i] = floor(2^32 * |sin(i)|), i in radians, 1-based.
        let k: Vec<u32> = (1..=64)
            .map(|i| (f64::from(i).sin().abs() * 4_294_967_296.0) as u32)
            .collect();
        let mut h: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
        for chunk in pad(data, false).chunks_exact(64) {
            let w: Vec<u32> = chunk
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let [mut a, mut b, mut c, mut d] = h;
            for i in 0..64 {
                let (f, g) = match i / 16 {
                    0 => ((b & c) | (!b & d), i),
                    1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                    2 => (b ^ c ^ d, (3 * i + 5) % 16),
                    _ => (c ^ (b | !d), (7 * i) % 16),
                };
                let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(w[g]);
                a = d;
                d = c;
                c = b;
                b = b.wrapping_add(f.rotate_left(S[i]));
            }
            h[0] = h[0].wrapping_add(a);
            h[1] = h[1].wrapping_add(b);
            h[2] = h[2].wrapping_add(c);
            h[3] = h[3].wrapping_add(d);
        }
        let mut out = [0u8; 16];
        for (o, v) in out.chunks_exact_mut(4).zip(h) {
            o.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The first `n` primes.
    // `is_multiple_of` is newer than the workspace's rust-version (1.80).
    #[allow(clippy::manual_is_multiple_of)]
    fn primes(n: usize) -> Vec<u32> {
        let mut p = Vec::with_capacity(n);
        let mut x = 2u32;
        while p.len() < n {
            if p.iter().take_while(|&&q| q * q <= x).all(|&q| x % q != 0) {
                p.push(x);
            }
            x += 1;
        }
        p
    }

    /// The first 32 bits of the fractional part of `v`.
    fn frac32(v: f64) -> u32 {
        ((v - v.floor()) * 4_294_967_296.0) as u32
    }

    /// SHA-256, FIPS 180-4 §6.2. Constants (§4.2.2, §5.3.3) are computed from the
    /// fractional parts of square and cube roots of the first primes.
    pub fn sha256(data: &[u8]) -> [u8; 32] {
        let ps = primes(64);
        let k: Vec<u32> = ps.iter().map(|&p| frac32(f64::from(p).cbrt())).collect();
        let mut h: Vec<u32> = ps
            .iter()
            .take(8)
            .map(|&p| frac32(f64::from(p).sqrt()))
            .collect();
        for chunk in pad(data, true).chunks_exact(64) {
            let mut w = [0u32; 64];
            for (i, b) in chunk.chunks_exact(4).enumerate() {
                w[i] = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            }
            for i in 16..64 {
                let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
                let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16]
                    .wrapping_add(s0)
                    .wrapping_add(w[i - 7])
                    .wrapping_add(s1);
            }
            let mut v = [h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]];
            for i in 0..64 {
                let [a, b, c, d, e, f, g, hh] = v;
                let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
                let ch = (e & f) ^ (!e & g);
                let t1 = hh
                    .wrapping_add(s1)
                    .wrapping_add(ch)
                    .wrapping_add(k[i])
                    .wrapping_add(w[i]);
                let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
                let maj = (a & b) ^ (a & c) ^ (b & c);
                let t2 = s0.wrapping_add(maj);
                v = [t1.wrapping_add(t2), a, b, c, d.wrapping_add(t1), e, f, g];
            }
            for (x, y) in h.iter_mut().zip(v) {
                *x = x.wrapping_add(y);
            }
        }
        let mut out = [0u8; 32];
        for (o, v) in out.chunks_exact_mut(4).zip(h) {
            o.copy_from_slice(&v.to_be_bytes());
        }
        out
    }
}
