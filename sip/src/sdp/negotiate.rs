//! Offer/answer negotiation (RFC 3264) of the one audio stream a call carries.
//!
//! Inbound INVITE with SDP: [`negotiate`] the offer, send [`Negotiated::answer_sdp`] in
//! the 200 OK. Inbound INVITE without SDP: [`build_offer`] for the 200 OK, then
//! [`accept_answer`] on the ACK's body. A re-INVITE goes through
//! [`Negotiated::renegotiate`], which keeps the codec and keys when it can and reports
//! hold and resume (RFC 3264 §8.4). SRTP is keyed with SDES (RFC 4568); our master keys
//! come from the OS CSPRNG.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use rand::RngCore as _;

use super::{
    encode_key, Crypto, CryptoSuite, Direction, MediaDescription, MediaKind, PayloadType,
    SessionDescription, Transport,
};

/// The audio codecs the gateway can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    G722,
    Pcmu,
    Pcma,
}

impl Codec {
    /// The encoding name of `a=rtpmap` (RFC 3551 §6, RFC 7587 §7).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::G722 => "G722",
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The RTP timestamp clock. G.722 samples at 16 kHz but its RTP clock is 8000 by an
    /// error kept for compatibility (RFC 3551 §4.5.2); Opus is always 48000 (RFC 7587 §4.1).
    pub fn rtp_clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::G722 | Codec::Pcmu | Codec::Pcma => 8_000,
        }
    }

    /// The audio sample rate the codec actually encodes.
    pub fn sample_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::G722 => 16_000,
            Codec::Pcmu | Codec::Pcma => 8_000,
        }
    }

    /// The channel count written in `a=rtpmap`: Opus always says 2 (RFC 7587 §7).
    pub fn channels(self) -> u8 {
        match self {
            Codec::Opus => 2,
            Codec::G722 | Codec::Pcmu | Codec::Pcma => 1,
        }
    }

    /// Static payload types of RFC 3551 §6 Table 4.
    pub fn static_payload_type(self) -> Option<PayloadType> {
        match self {
            Codec::Pcmu => Some(PayloadType::new_const(0)),
            Codec::Pcma => Some(PayloadType::new_const(8)),
            Codec::G722 => Some(PayloadType::new_const(9)),
            Codec::Opus => None,
        }
    }

    /// Whether the offered format `pt` (with its rtpmap, if any) is this codec.
    fn matches(self, media: &MediaDescription, pt: PayloadType) -> bool {
        match media.rtpmap(pt) {
            Some(map) => {
                map.encoding.eq_ignore_ascii_case(self.encoding_name())
                    && map.clock_rate == self.rtp_clock_rate()
            }
            // Static payload types need no rtpmap (RFC 4566 §6); a dynamic one does.
            None => self.static_payload_type() == Some(pt),
        }
    }
}

/// What a trunk accepts for SRTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpPolicy {
    /// Plain RTP only; an RTP/SAVP offer is refused.
    Disable,
    /// SRTP when the peer offers SDES keys, plain RTP otherwise.
    #[default]
    Allow,
    /// SRTP only; a plain offer is refused.
    Require,
}

/// How we answer an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerPolicy {
    /// Codecs we accept, best first.
    pub codecs: Vec<Codec>,
    /// The packetization we ask to receive, in ms.
    pub ptime_ms: u32,
    pub srtp: SrtpPolicy,
    /// Echo `a=rtcp-mux` when offered (RFC 5761 §5.1.1).
    pub rtcp_mux: bool,
    /// Accept `telephone-event` (RFC 4733) when offered.
    pub telephone_event: bool,
    /// PINs are typed as DTMF: when the best codec has no `telephone-event` at its clock
    /// rate but a lower-ranked offered codec has, take the lower-ranked one.
    pub prefer_codec_with_telephone_event: bool,
    /// The `a=fmtp` we write for Opus (RFC 7587 §6.1).
    pub opus_fmtp: String,
}

impl Default for AnswerPolicy {
    fn default() -> Self {
        AnswerPolicy {
            codecs: vec![Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma],
            ptime_ms: DEFAULT_PTIME_MS,
            srtp: SrtpPolicy::Allow,
            rtcp_mux: true,
            telephone_event: true,
            prefer_codec_with_telephone_event: true,
            opus_fmtp: DEFAULT_OPUS_FMTP.to_owned(),
        }
    }
}

/// How we offer when the INVITE came without SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferPolicy {
    pub codecs: Vec<Codec>,
    pub ptime_ms: u32,
    /// `Require` offers RTP/SAVP with SDES keys; `Allow` and `Disable` offer plain RTP,
    /// since a peer without SRTP rejects a whole RTP/SAVP offer.
    pub srtp: SrtpPolicy,
    pub rtcp_mux: bool,
    pub telephone_event: bool,
    pub opus_fmtp: String,
}

impl Default for OfferPolicy {
    fn default() -> Self {
        let a = AnswerPolicy::default();
        OfferPolicy {
            codecs: a.codecs,
            ptime_ms: a.ptime_ms,
            srtp: a.srtp,
            rtcp_mux: a.rtcp_mux,
            telephone_event: a.telephone_event,
            opus_fmtp: a.opus_fmtp,
        }
    }
}

/// RFC 3551 §4.5: 20 ms is the default packetization of the audio profile.
const DEFAULT_PTIME_MS: u32 = 20;
/// In-band FEC helps on lossy trunks; 10 ms is the shortest frame we accept (RFC 7587 §6.1).
const DEFAULT_OPUS_FMTP: &str = "minptime=10;useinbandfec=1";
/// DTMF events 0-9, *, #, A-D, flash (RFC 4733 §3.2).
const TELEPHONE_EVENT_FMTP: &str = "0-16";
/// Dynamic payload types of our own offers, as WebRTC stacks number them.
const OFFER_PT_OPUS: PayloadType = PayloadType::new_const(111);
const OFFER_PT_TE_48K: PayloadType = PayloadType::new_const(110);
const OFFER_PT_TE_8K: PayloadType = PayloadType::new_const(101);
/// RFC 4568 §6.2.1: 128-bit master key + 112-bit master salt.
const KEY_SALT_LEN: usize = 30;

/// Where our media is: the `o=`, `c=` and `m=` of the SDP we write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    pub addr: IpAddr,
    pub port: u16,
    pub session_id: u64,
    /// Must grow with each new SDP in the dialog (RFC 3264 §8).
    pub version: u64,
    pub username: String,
}

/// Why an offer or answer could not be accepted. `NoCommonCodec` and the SRTP cases are
/// answered `488 Not Acceptable Here`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    #[error("no audio stream over RTP in the SDP")]
    NoAudioStream,
    #[error("no common audio codec")]
    NoCommonCodec,
    #[error("the audio stream has no connection address")]
    MissingConnectionAddress,
    #[error("SRTP is required on this trunk but the offer is plain RTP")]
    SrtpRequired,
    #[error("SRTP is disabled on this trunk but the offer is RTP/SAVP")]
    SrtpNotAllowed,
    #[error("no a=crypto line with a supported suite")]
    NoAcceptableCrypto,
    #[error("the answer rejected our audio stream")]
    StreamRejected,
}

/// A codec as agreed on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedCodec {
    pub codec: Codec,
    pub payload_type: PayloadType,
    pub clock_rate: u32,
    pub channels: u8,
    /// The peer's `a=fmtp` parameters for this payload type, if any.
    pub remote_fmtp: Option<String>,
}

/// SDES keys of an SRTP session (RFC 4568).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpParams {
    pub suite: CryptoSuite,
    pub tag: u32,
    /// Protects what the peer sends us.
    pub remote_key_salt: [u8; KEY_SALT_LEN],
    /// Protects what we send.
    pub local_key_salt: [u8; KEY_SALT_LEN],
}

impl std::fmt::Debug for SrtpParams {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpParams")
            .field("suite", &self.suite)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

/// Whether the peer has put the call on hold (RFC 3264 §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    Active,
    /// The peer sends `sendonly`/`inactive` or the RFC 2543 address `0.0.0.0`.
    HeldByRemote,
}

/// What a re-offer changed about hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldTransition {
    Unchanged,
    Held,
    Resumed,
}

/// How each offered m-line is answered, in offer order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AnswerLine {
    Chosen,
    /// RFC 3264 §6: answered with port 0 and the offered formats.
    Rejected {
        kind: String,
        transport: String,
        formats: Vec<String>,
    },
}

/// The outcome of offer/answer: everything the media engine needs for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Where to send RTP.
    pub remote_rtp: SocketAddr,
    /// Where to send RTCP: the RTP address under rtcp-mux, else `a=rtcp`, else port + 1.
    pub remote_rtcp: SocketAddr,
    pub rtcp_mux: bool,
    pub transport: Transport,
    pub codec: NegotiatedCodec,
    /// The `telephone-event` (RFC 4733) payload type, when DTMF events are carried.
    pub telephone_event: Option<PayloadType>,
    /// The RTP clock rate of the `telephone-event` payload as offered. Usually the codec's
    /// clock rate, but some phones (baresip) offer Opus at 48000 with events at 8000 only;
    /// the events' timestamps and durations then count at this rate, not the codec's.
    pub telephone_event_rate: Option<u32>,
    /// Packetization we send with: the peer's `a=ptime` when usable, else our default.
    pub ptime_ms: u32,
    /// Packetization we asked to receive.
    pub local_ptime_ms: u32,
    /// Our direction for the stream.
    pub local_direction: Direction,
    /// The peer's direction, after the `c=0.0.0.0` hold convention.
    pub remote_direction: Direction,
    pub srtp: Option<SrtpParams>,
    pub hold: HoldState,
    lines: Vec<AnswerLine>,
    opus_fmtp: String,
}

/// Answers an offer: the first audio stream we can accept is taken, the other m-lines are
/// rejected with port 0 (RFC 3264 §6).
pub fn negotiate(
    offer: &SessionDescription,
    prefs: &AnswerPolicy,
) -> Result<Negotiated, NegotiationError> {
    negotiate_with(offer, prefs, None)
}

fn negotiate_with(
    offer: &SessionDescription,
    prefs: &AnswerPolicy,
    previous: Option<&Negotiated>,
) -> Result<Negotiated, NegotiationError> {
    let mut first_error = None;
    let mut chosen = None;
    for (index, media) in offer.media.iter().enumerate() {
        if !media.can_carry_audio() {
            continue;
        }
        match negotiate_stream(offer, media, prefs, previous) {
            Ok(n) => {
                chosen = Some((index, n));
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let Some((chosen_index, mut negotiated)) = chosen else {
        return Err(first_error.unwrap_or(NegotiationError::NoAudioStream));
    };
    negotiated.lines = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if i == chosen_index {
                AnswerLine::Chosen
            } else {
                AnswerLine::Rejected {
                    kind: m.kind.as_str().to_owned(),
                    transport: m.transport.as_str().to_owned(),
                    formats: m.formats.clone(),
                }
            }
        })
        .collect();
    Ok(negotiated)
}

fn negotiate_stream(
    sd: &SessionDescription,
    media: &MediaDescription,
    prefs: &AnswerPolicy,
    previous: Option<&Negotiated>,
) -> Result<Negotiated, NegotiationError> {
    let conn = sd
        .connection_for(media)
        .ok_or(NegotiationError::MissingConnectionAddress)?;
    let remote_crypto = choose_crypto(media, prefs.srtp)?;

    // A re-offer keeps the codec in use when it is still offered, so that the media
    // path is not rebuilt on every session refresh.
    let mut order = prefs.codecs.clone();
    if let Some(prev) = previous {
        if let Some(pos) = order.iter().position(|&c| c == prev.codec.codec) {
            let c = order.remove(pos);
            order.insert(0, c);
        }
    }
    let offered: Vec<(Codec, PayloadType)> = order
        .iter()
        .filter_map(|&codec| {
            media
                .payload_types()
                .find(|&pt| codec.matches(media, pt))
                .map(|pt| (codec, pt))
        })
        .collect();
    // PINs are typed as DTMF: a codec whose clock matches an offered telephone-event is
    // preferred when the policy says so; any offered rate is still taken otherwise.
    let te_at = |clock: u32| {
        prefs
            .telephone_event
            .then(|| telephone_event_at(media, clock))
            .flatten()
    };
    let keep_previous =
        previous.is_some_and(|p| offered.first().is_some_and(|(c, _)| *c == p.codec.codec));
    let pick = if prefs.prefer_codec_with_telephone_event && !keep_previous {
        offered
            .iter()
            .find(|(c, _)| te_at(c.rtp_clock_rate()).is_some())
            .or_else(|| offered.first())
    } else {
        offered.first()
    };
    let &(codec, payload_type) = pick.ok_or(NegotiationError::NoCommonCodec)?;
    let telephone_event = prefs
        .telephone_event
        .then(|| telephone_event_for(media, codec.rtp_clock_rate()))
        .flatten();

    let mut remote_direction = sd.direction_for(media);
    if conn.is_unspecified() {
        remote_direction = remote_direction.without_receive();
    }
    let local_direction = remote_direction.answer();

    let srtp = match remote_crypto {
        None => None,
        Some(c) => {
            let remote_key_salt: [u8; KEY_SALT_LEN] = c
                .key_salt
                .as_slice()
                .try_into()
                .map_err(|_| NegotiationError::NoAcceptableCrypto)?;
            let local_key_salt = previous
                .and_then(|p| p.srtp.as_ref())
                .filter(|s| s.suite == c.suite && s.tag == c.tag)
                .map(|s| s.local_key_salt)
                .unwrap_or_else(fresh_key);
            Some(SrtpParams {
                suite: c.suite.clone(),
                tag: c.tag,
                remote_key_salt,
                local_key_salt,
            })
        }
    };

    let rtcp_mux = prefs.rtcp_mux && media.rtcp_mux;
    let remote_rtp = SocketAddr::new(conn, media.port);
    Ok(Negotiated {
        remote_rtp,
        remote_rtcp: rtcp_address(remote_rtp, rtcp_mux, media),
        rtcp_mux,
        transport: media.transport.clone(),
        codec: NegotiatedCodec {
            codec,
            payload_type,
            clock_rate: codec.rtp_clock_rate(),
            channels: codec.channels(),
            remote_fmtp: media.fmtp(payload_type).map(str::to_owned),
        },
        telephone_event: telephone_event.map(|(pt, _)| pt),
        telephone_event_rate: telephone_event.map(|(_, rate)| rate),
        ptime_ms: usable_ptime(media).unwrap_or(prefs.ptime_ms),
        local_ptime_ms: prefs.ptime_ms,
        local_direction,
        remote_direction,
        srtp,
        hold: hold_state(remote_direction),
        lines: Vec::new(),
        opus_fmtp: prefs.opus_fmtp.clone(),
    })
}

/// The offered `telephone-event` payload at exactly `clock`, with its rate.
fn telephone_event_at(media: &MediaDescription, clock: u32) -> Option<(PayloadType, u32)> {
    telephone_events(media).find(|&(_, rate)| rate == clock)
}

/// The `telephone-event` payload to use with a codec clocked at `clock`: the one at that
/// rate, else the first offered at any rate (RFC 4733 §2.1 lets the event clock differ).
fn telephone_event_for(media: &MediaDescription, clock: u32) -> Option<(PayloadType, u32)> {
    telephone_event_at(media, clock).or_else(|| telephone_events(media).next())
}

/// Every `telephone-event` payload of the format list, in the peer's order.
fn telephone_events(media: &MediaDescription) -> impl Iterator<Item = (PayloadType, u32)> + '_ {
    media.payload_types().filter_map(|pt| {
        let map = media.rtpmap(pt)?;
        map.encoding
            .eq_ignore_ascii_case("telephone-event")
            .then_some((pt, map.clock_rate))
    })
}

/// Picks the peer's crypto line under the trunk's policy. A plain RTP/AVP offer carrying
/// `a=crypto` is "best effort SRTP" (sent by Linphone, Zoiper, Asterisk): used when the
/// policy allows SRTP, ignored when it is disabled.
fn choose_crypto(
    media: &MediaDescription,
    policy: SrtpPolicy,
) -> Result<Option<&Crypto>, NegotiationError> {
    // Lines with an MKI or session parameters ask for SRTP features we don't run.
    let usable = media.crypto.iter().find(|c| {
        c.suite.key_salt_len() == Some(KEY_SALT_LEN)
            && c.mki.is_none()
            && c.session_params.is_empty()
    });
    match (policy, media.transport.is_secure()) {
        (SrtpPolicy::Disable, true) => Err(NegotiationError::SrtpNotAllowed),
        (SrtpPolicy::Disable, false) => Ok(None),
        (_, true) => usable.map(Some).ok_or(NegotiationError::NoAcceptableCrypto),
        (SrtpPolicy::Allow, false) => Ok(usable),
        (SrtpPolicy::Require, false) => usable.map(Some).ok_or(NegotiationError::SrtpRequired),
    }
}

fn fresh_key() -> [u8; KEY_SALT_LEN] {
    let mut key = [0u8; KEY_SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

fn rtcp_address(rtp: SocketAddr, mux: bool, media: &MediaDescription) -> SocketAddr {
    if mux {
        return rtp;
    }
    match media.rtcp {
        Some(a) => SocketAddr::new(a.address.unwrap_or(rtp.ip()), a.port),
        // RFC 3550 §11: RTCP on the next higher port.
        None => SocketAddr::new(rtp.ip(), rtp.port().checked_add(1).unwrap_or(rtp.port())),
    }
}

/// The peer's `a=ptime`, capped by its `a=maxptime`, when it is whole 10 ms frames up to
/// 60 ms (what our frame clock can produce).
fn usable_ptime(media: &MediaDescription) -> Option<u32> {
    let p = media.ptime?;
    let p = media.maxptime.map_or(p, |max| p.min(max));
    matches!(p, 10 | 20 | 30 | 40 | 50 | 60).then_some(p)
}

fn hold_state(remote: Direction) -> HoldState {
    // A peer that stops receiving from us has put us on hold; `recvonly` is a mute.
    match remote {
        Direction::SendOnly | Direction::Inactive => HoldState::HeldByRemote,
        Direction::SendRecv | Direction::RecvOnly => HoldState::Active,
    }
}

impl Negotiated {
    /// Answers a re-offer in the same dialog: the codec and our SRTP key are kept when the
    /// offer still allows them.
    pub fn renegotiate(
        &self,
        offer: &SessionDescription,
        prefs: &AnswerPolicy,
    ) -> Result<Negotiated, NegotiationError> {
        negotiate_with(offer, prefs, Some(self))
    }

    /// How hold changed between the previous negotiation and this one.
    pub fn hold_transition_from(&self, previous: &Negotiated) -> HoldTransition {
        match (previous.hold, self.hold) {
            (HoldState::Active, HoldState::HeldByRemote) => HoldTransition::Held,
            (HoldState::HeldByRemote, HoldState::Active) => HoldTransition::Resumed,
            _ => HoldTransition::Unchanged,
        }
    }

    /// Writes our SDP answer (RFC 3264 §6): one m-line per offered m-line, in order.
    pub fn answer_sdp(&self, local: &LocalMedia) -> String {
        let mut out = session_header(local);
        for line in &self.lines {
            match line {
                AnswerLine::Chosen => self.write_stream(&mut out, local.port),
                AnswerLine::Rejected {
                    kind,
                    transport,
                    formats,
                } => {
                    let _ = write!(out, "m={kind} 0 {transport}");
                    for f in formats {
                        let _ = write!(out, " {f}");
                    }
                    if formats.is_empty() {
                        // A malformed offered line had none; the grammar needs one
                        // (RFC 4566 §5.14), and a rejected line's formats mean nothing.
                        out.push_str(" 0");
                    }
                    out.push_str("\r\n");
                }
            }
        }
        out
    }

    fn write_stream(&self, out: &mut String, port: u16) {
        let c = &self.codec;
        let _ = write!(
            out,
            "m=audio {port} {} {}",
            self.transport.as_str(),
            c.payload_type
        );
        if let Some(te) = self.telephone_event {
            let _ = write!(out, " {te}");
        }
        out.push_str("\r\n");
        write_rtpmap(out, c.payload_type, c.codec);
        if c.codec == Codec::Opus && !self.opus_fmtp.is_empty() {
            let _ = write!(out, "a=fmtp:{} {}\r\n", c.payload_type, self.opus_fmtp);
        }
        if let Some(te) = self.telephone_event {
            let rate = self.telephone_event_rate.unwrap_or(c.clock_rate);
            write_telephone_event(out, te, rate);
        }
        let _ = write!(
            out,
            "a=ptime:{}\r\na={}\r\n",
            self.local_ptime_ms, self.local_direction
        );
        if self.rtcp_mux {
            out.push_str("a=rtcp-mux\r\n");
        }
        if let Some(s) = &self.srtp {
            let _ = write!(
                out,
                "a=crypto:{} {} inline:{}\r\n",
                s.tag,
                s.suite,
                encode_key(&s.local_key_salt)
            );
        }
    }
}

fn session_header(local: &LocalMedia) -> String {
    let ip = match local.addr {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    // o= and s= must not be empty (RFC 4566 §5.2, §5.3); spaces would split the field.
    let user: String = local
        .username
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .collect();
    let user = if user.is_empty() {
        "-".to_owned()
    } else {
        user
    };
    format!(
        "v=0\r\no={user} {} {} IN {ip} {addr}\r\ns=dialin\r\nc=IN {ip} {addr}\r\nt=0 0\r\n",
        local.session_id,
        local.version,
        addr = local.addr
    )
}

fn write_rtpmap(out: &mut String, pt: PayloadType, codec: Codec) {
    let _ = write!(
        out,
        "a=rtpmap:{pt} {}/{}",
        codec.encoding_name(),
        codec.rtp_clock_rate()
    );
    if codec == Codec::Opus {
        let _ = write!(out, "/{}", codec.channels());
    }
    out.push_str("\r\n");
}

fn write_telephone_event(out: &mut String, pt: PayloadType, clock: u32) {
    let _ = write!(
        out,
        "a=rtpmap:{pt} telephone-event/{clock}\r\na=fmtp:{pt} {TELEPHONE_EVENT_FMTP}\r\n"
    );
}

/// Our offer, kept until the answer arrives (in the ACK when the INVITE had no SDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The SDP body to send.
    pub sdp: String,
    codecs: Vec<(Codec, PayloadType)>,
    crypto: Vec<(u32, CryptoSuite, [u8; KEY_SALT_LEN])>,
    srtp: SrtpPolicy,
    rtcp_mux: bool,
    ptime_ms: u32,
    opus_fmtp: String,
}

/// Builds an offer for an INVITE that came without SDP (RFC 3261 §13.2.1).
pub fn build_offer(policy: &OfferPolicy, local: &LocalMedia) -> Offer {
    let codecs: Vec<(Codec, PayloadType)> = policy
        .codecs
        .iter()
        .map(|&c| (c, c.static_payload_type().unwrap_or(OFFER_PT_OPUS)))
        .collect();
    let secure = policy.srtp == SrtpPolicy::Require;
    let crypto: Vec<(u32, CryptoSuite, [u8; KEY_SALT_LEN])> = if secure {
        vec![
            (1, CryptoSuite::AesCm128HmacSha1_80, fresh_key()),
            (2, CryptoSuite::AesCm128HmacSha1_32, fresh_key()),
        ]
    } else {
        Vec::new()
    };
    let has_opus = codecs.iter().any(|(c, _)| *c == Codec::Opus);
    let has_8k = codecs.iter().any(|(c, _)| c.rtp_clock_rate() == 8_000);
    let te_48k = policy.telephone_event && has_opus;
    let te_8k = policy.telephone_event && has_8k;

    let mut out = session_header(local);
    let transport = if secure {
        Transport::RtpSavp
    } else {
        Transport::RtpAvp
    };
    let _ = write!(out, "m=audio {} {}", local.port, transport.as_str());
    for (_, pt) in &codecs {
        let _ = write!(out, " {pt}");
    }
    if te_48k {
        let _ = write!(out, " {OFFER_PT_TE_48K}");
    }
    if te_8k {
        let _ = write!(out, " {OFFER_PT_TE_8K}");
    }
    out.push_str("\r\n");
    for &(c, pt) in &codecs {
        write_rtpmap(&mut out, pt, c);
        if c == Codec::Opus && !policy.opus_fmtp.is_empty() {
            let _ = write!(out, "a=fmtp:{pt} {}\r\n", policy.opus_fmtp);
        }
    }
    if te_48k {
        write_telephone_event(&mut out, OFFER_PT_TE_48K, 48_000);
    }
    if te_8k {
        write_telephone_event(&mut out, OFFER_PT_TE_8K, 8_000);
    }
    let _ = write!(out, "a=ptime:{}\r\na=sendrecv\r\n", policy.ptime_ms);
    if policy.rtcp_mux {
        out.push_str("a=rtcp-mux\r\n");
    }
    for (tag, suite, key) in &crypto {
        let _ = write!(out, "a=crypto:{tag} {suite} inline:{}\r\n", encode_key(key));
    }
    Offer {
        sdp: out,
        codecs,
        crypto,
        srtp: policy.srtp,
        rtcp_mux: policy.rtcp_mux,
        ptime_ms: policy.ptime_ms,
        opus_fmtp: policy.opus_fmtp.clone(),
    }
}

/// Accepts the peer's answer to our [`Offer`]. We send with the first codec of the answer
/// that we offered (RFC 3264 §7), with the payload type the answer gives it.
pub fn accept_answer(
    offer: &Offer,
    answer: &SessionDescription,
) -> Result<Negotiated, NegotiationError> {
    let media = answer
        .media
        .iter()
        .find(|m| m.kind == MediaKind::Audio && m.transport.is_rtp())
        .ok_or(NegotiationError::NoAudioStream)?;
    if media.port == 0 {
        return Err(NegotiationError::StreamRejected);
    }
    let conn = answer
        .connection_for(media)
        .ok_or(NegotiationError::MissingConnectionAddress)?;
    let (codec, payload_type) = media
        .payload_types()
        .find_map(|pt| {
            offer
                .codecs
                .iter()
                .find(|(c, _)| c.matches(media, pt))
                .map(|(c, _)| (*c, pt))
        })
        .ok_or(NegotiationError::NoCommonCodec)?;
    let telephone_event = telephone_event_for(media, codec.rtp_clock_rate());

    let srtp = if offer.crypto.is_empty() {
        None
    } else {
        let found = media.crypto.iter().find_map(|c| {
            let (_, _, local) = offer
                .crypto
                .iter()
                .find(|(tag, suite, _)| *tag == c.tag && *suite == c.suite)?;
            let remote: [u8; KEY_SALT_LEN] = c.key_salt.as_slice().try_into().ok()?;
            Some(SrtpParams {
                suite: c.suite.clone(),
                tag: c.tag,
                remote_key_salt: remote,
                local_key_salt: *local,
            })
        });
        match (found, offer.srtp) {
            (Some(s), _) => Some(s),
            (None, SrtpPolicy::Require) => return Err(NegotiationError::SrtpRequired),
            (None, _) => None,
        }
    };

    let mut remote_direction = answer.direction_for(media);
    if conn.is_unspecified() {
        remote_direction = remote_direction.without_receive();
    }
    let rtcp_mux = offer.rtcp_mux && media.rtcp_mux;
    let remote_rtp = SocketAddr::new(conn, media.port);
    Ok(Negotiated {
        remote_rtp,
        remote_rtcp: rtcp_address(remote_rtp, rtcp_mux, media),
        rtcp_mux,
        transport: media.transport.clone(),
        codec: NegotiatedCodec {
            codec,
            payload_type,
            clock_rate: codec.rtp_clock_rate(),
            channels: codec.channels(),
            remote_fmtp: media.fmtp(payload_type).map(str::to_owned),
        },
        telephone_event: telephone_event.map(|(pt, _)| pt),
        telephone_event_rate: telephone_event.map(|(_, rate)| rate),
        ptime_ms: usable_ptime(media).unwrap_or(offer.ptime_ms),
        local_ptime_ms: offer.ptime_ms,
        local_direction: remote_direction.answer(),
        remote_direction,
        srtp,
        hold: hold_state(remote_direction),
        lines: vec![AnswerLine::Chosen],
        opus_fmtp: offer.opus_fmtp.clone(),
    })
}
