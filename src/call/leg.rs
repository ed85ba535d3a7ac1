//! The caller's media leg: everything between the trunk's RTP socket and 20 ms PCM frames.
//!
//! Inbound, per datagram: `SRTP unprotect → rtp::Packet::parse → RtpReceiver (latching, stats)
//! → telephone-event? RFC 4733 receiver : jitter buffer`. Per 20 ms tick: `jitter pop → decode
//! (or PLC) → in-band DTMF detector (while the PIN is collected) → PCM frame`. Outbound, per
//! tick: `PCM frame → encode → RTP header → SRTP protect → datagram`. Digits from all three
//! methods (RFC 4733, SIP INFO via [`CallerLeg::on_info_digit`], in-band) go through one
//! de-duplicator.
//!
//! Sans-IO: the call task owns the socket and the clock and hands both in. Every buffer is
//! allocated when the leg is built; the per-packet and per-frame paths only borrow.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialin_media::codec::{
    new_decoder, new_encoder, CodecConfig, CodecKind, Decoder, Encoder, SampleRate,
};
use dialin_media::dtmf::dedup::{DigitDeduplicator, DigitSource};
use dialin_media::dtmf::event::EventReceiver;
use dialin_media::dtmf::inband::InbandDetector;
use dialin_media::dtmf::Digit;
use dialin_media::jitter::{JitterBuffer, JitterConfig, PacketInfo, Playout};
use dialin_media::rtcp;
use dialin_media::rtp::{Header, Packet, PayloadType, RtpTimestamp, SeqNo, Ssrc};
use dialin_media::srtp::{MasterKey, SrtpContext, SrtpProfile};
use dialin_media::stream::{RtpReceiver, SendStats, SourcePolicy};

/// Largest datagram we send: RTP header, a 20 ms Opus/G.722/G.711 frame, the SRTP tag.
pub const MAX_PACKET: usize = 1500;
/// Largest Opus payload kept for forwarding ([`crate::room::MAX_OPUS_PAYLOAD`]); a larger
/// one (not seen from voice encoders) is transcoded instead.
const MAX_FORWARD: usize = crate::room::MAX_OPUS_PAYLOAD;
/// Samples in the largest 20 ms frame (16 kHz).
pub const MAX_FRAME: usize = 320;
/// Digits buffered between two polls; a caller cannot key faster than this in 20 ms.
const DIGIT_QUEUE: usize = 8;

/// What the SDP negotiation decided for this leg.
#[derive(Debug, Clone)]
pub struct LegParams {
    pub codec: CodecKind,
    pub payload_type: u8,
    pub telephone_event: Option<u8>,
    /// The clock rate `telephone-event` was offered at (8000 even beside Opus at 48000).
    pub telephone_event_rate: Option<u32>,
    /// Where the SDP said to send RTP (latching may move it once).
    pub remote: SocketAddr,
    /// Who else may send the call's media: the signalling peer's IP, the trunk's
    /// `media_sources`.
    pub sources: SourcePolicy,
    pub srtp: Option<LegSrtp>,
    pub codec_config: CodecConfig,
    pub jitter_min: Duration,
    pub jitter_max: Duration,
}

/// SDES keys for both directions.
#[derive(Debug, Clone)]
pub struct LegSrtp {
    pub profile: SrtpProfile,
    pub local: MasterKey,
    pub remote: MasterKey,
}

/// Why an inbound datagram was not used (counted, never fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    Malformed,
    Unauthenticated,
    ForeignSource,
    Duplicate,
    UnknownPayloadType,
    Rtcp,
}

/// Counters for the call record and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct LegStats {
    pub packets_received: u64,
    pub packets_sent: u64,
    pub packets_lost: i64,
    pub jitter_ms: f64,
    pub discarded: u64,
    pub foreign: u64,
    pub concealed_frames: u64,
    pub late_packets: u64,
}

/// One caller's media leg.
pub struct CallerLeg {
    codec: CodecKind,
    pt: u8,
    te_pt: Option<u8>,
    rate: SampleRate,
    receiver: RtpReceiver,
    jitter: JitterBuffer,
    decoder: Box<dyn Decoder>,
    encoder: Box<dyn Encoder>,
    events: EventReceiver,
    inband: Option<InbandDetector>,
    dedup: DigitDeduplicator,
    digits: [Option<char>; DIGIT_QUEUE],
    digit_count: usize,
    srtp_in: Option<SrtpContext>,
    srtp_out: Option<SrtpContext>,
    ssrc: Ssrc,
    seq: SeqNo,
    ts: RtpTimestamp,
    send_stats: SendStats,
    payload_scratch: [u8; MAX_PACKET],
    /// The Opus payload behind the last frame [`CallerLeg::pull_frame`] decoded, kept for a
    /// room that takes Opus as is ([`CallerLeg::forwardable_payload`]).
    forward: [u8; MAX_FORWARD],
    forward_len: Option<usize>,
    stats: LegStats,
    /// Packets lost from earlier peer addresses (see [`CallerLeg::retarget`]).
    carried_lost: i64,
}

impl std::fmt::Debug for CallerLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerLeg")
            .field("codec", &self.codec)
            .field("remote", &self.remote())
            .finish_non_exhaustive()
    }
}

/// Building a leg failed (a codec the media engine cannot run at its rate).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the media leg: {0}")]
pub struct LegError(String);

/// Largest RTP payload the leg's jitter buffer keeps, per codec: 60 ms of G.711 or G.722
/// (one byte per 8 kHz sample, RFC 3551 §4.5), or Opus's largest frame (1275 bytes, RFC 6716
/// §3.4). A larger packet is counted and dropped; sized to the codec, a call's buffer holds
/// 15 KB rather than 48.
fn max_payload(codec: CodecKind) -> usize {
    match codec {
        CodecKind::Opus => 1275,
        CodecKind::Pcmu | CodecKind::Pcma | CodecKind::G722 => 480,
    }
}

impl CallerLeg {
    /// Builds the leg; allocates every buffer it will use.
    pub fn new(params: &LegParams) -> Result<CallerLeg, LegError> {
        let rate = params.codec.default_sample_rate();
        let decoder = new_decoder(params.codec, rate, &params.codec_config)
            .map_err(|e| LegError(e.to_string()))?;
        let encoder = new_encoder(params.codec, rate, &params.codec_config)
            .map_err(|e| LegError(e.to_string()))?;
        let clock = params.codec.rtp_clock_rate();
        let jitter = JitterBuffer::new(JitterConfig {
            clock_rate: clock,
            frame: Duration::from_millis(20),
            min_delay: params.jitter_min,
            max_delay: params.jitter_max,
            max_payload: max_payload(params.codec),
            ..JitterConfig::default()
        });
        let inband = InbandDetector::new(rate.hz()).map_err(|e| LegError(e.to_string()))?;
        let (srtp_in, srtp_out) = match &params.srtp {
            Some(s) => (
                Some(SrtpContext::new(s.profile, &s.remote)),
                Some(SrtpContext::new(s.profile, &s.local)),
            ),
            None => (None, None),
        };
        Ok(CallerLeg {
            codec: params.codec,
            pt: params.payload_type,
            te_pt: params.telephone_event,
            rate,
            receiver: RtpReceiver::new(params.remote, params.sources.clone(), clock),
            jitter,
            decoder,
            encoder,
            events: EventReceiver::new(params.telephone_event_rate.unwrap_or(clock)),
            inband: Some(inband),
            dedup: DigitDeduplicator::default(),
            digits: [None; DIGIT_QUEUE],
            digit_count: 0,
            srtp_in,
            srtp_out,
            ssrc: Ssrc(rand::random()),
            seq: SeqNo(rand::random()),
            ts: RtpTimestamp(rand::random()),
            send_stats: SendStats::new(clock),
            payload_scratch: [0; MAX_PACKET],
            forward: [0; MAX_FORWARD],
            forward_len: None,
            stats: LegStats::default(),
            carried_lost: 0,
        })
    }

    /// PCM rate of the frames this leg takes and gives (8 kHz for G.711, 16 kHz otherwise).
    pub fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    /// Samples per 20 ms frame at [`CallerLeg::sample_rate`].
    pub fn frame_len(&self) -> usize {
        self.rate.frame_samples()
    }

    pub fn codec(&self) -> CodecKind {
        self.codec
    }

    /// Where our RTP goes (the negotiated address, or the latched one).
    pub fn remote(&self) -> SocketAddr {
        self.receiver.peer().address()
    }

    /// When the last accepted packet arrived.
    pub fn last_received(&self) -> Option<Instant> {
        self.receiver.last_received()
    }

    /// The peer moved its media to `remote` (a re-INVITE with a new `c=`/`m=` address,
    /// RFC 3264 §8.3.1): send there and accept packets from there, latching once more as at
    /// call start. The counters carry over; nothing changes when the address is the same.
    pub fn retarget(&mut self, remote: SocketAddr) {
        if remote == self.receiver.peer().negotiated() {
            return;
        }
        self.carried_lost += self.receiver.stats().cumulative_lost();
        let policy = self.receiver.peer().policy().clone();
        self.receiver = RtpReceiver::new(remote, policy, self.codec.rtp_clock_rate());
        self.events.reset();
    }

    /// Stop looking for in-band digits (after the PIN: speech must not be read as keys).
    pub fn set_inband_detection(&mut self, on: bool, sample_rate_hz: u32) {
        self.inband = if on {
            InbandDetector::new(sample_rate_hz).ok()
        } else {
            None
        };
    }

    /// Handles one datagram from the leg's socket; `buf[..len]` may be decrypted in place.
    pub fn on_datagram(
        &mut self,
        buf: &mut [u8],
        len: usize,
        from: SocketAddr,
        now: Instant,
    ) -> Result<(), Discard> {
        let Some(data) = buf.get_mut(..len) else {
            return Err(self.discard(Discard::Malformed));
        };
        if rtcp::is_rtcp(data) {
            // RTCP on the RTP port (RFC 5761) follows the same source rule as RTP. Reports
            // from the peer are accepted silently; our own RR/SR come from the stats.
            if !self.receiver.peer().admits(from) {
                self.receiver.peer_mut().count_foreign();
                self.stats.foreign += 1;
                return Err(self.discard(Discard::ForeignSource));
            }
            return Err(Discard::Rtcp);
        }
        let plain_len = match self.srtp_in.as_mut() {
            Some(ctx) => match ctx.unprotect_rtp(data) {
                Ok(n) => n,
                Err(_) => return Err(self.discard(Discard::Unauthenticated)),
            },
            None => len,
        };
        let Some(data) = buf.get(..plain_len) else {
            return Err(self.discard(Discard::Malformed));
        };
        let packet = match Packet::parse(data) {
            Ok(p) => p,
            Err(_) => return Err(self.discard(Discard::Malformed)),
        };
        match self.receiver.on_packet(from, &packet, now) {
            Ok(_) => {}
            Err(dialin_media::stream::Dropped::ForeignSource) => {
                self.stats.foreign += 1;
                return Err(self.discard(Discard::ForeignSource));
            }
            Err(_) => return Err(self.discard(Discard::Duplicate)),
        }
        self.stats.packets_received += 1;
        let pt = packet.payload_type().get();
        if Some(pt) == self.te_pt {
            if let Ok(Some(d)) = self.events.receive(
                packet.timestamp().0,
                packet.marker(),
                packet.seq().0,
                packet.payload(),
                now,
            ) {
                self.push_digit(d.digit, DigitSource::Rfc4733, now);
            }
            return Ok(());
        }
        if pt != self.pt {
            return Err(self.discard(Discard::UnknownPayloadType));
        }
        let info = PacketInfo {
            ssrc: packet.ssrc().0,
            seq: packet.seq().0,
            timestamp: packet.timestamp().0,
            marker: packet.marker(),
        };
        if let dialin_media::jitter::PushOutcome::Late =
            self.jitter.push(info, packet.payload(), now)
        {
            self.stats.late_packets += 1;
        }
        Ok(())
    }

    /// A digit from a SIP INFO request.
    pub fn on_info_digit(&mut self, key: char, now: Instant) {
        if let Ok(d) = Digit::from_char(key) {
            self.push_digit(d, DigitSource::SipInfo, now);
        }
    }

    /// Next digit the caller keyed, once, whatever method carried it.
    pub fn poll_digit(&mut self) -> Option<char> {
        if self.digit_count == 0 {
            return None;
        }
        let d = self.digits[0];
        self.digits.copy_within(1.., 0);
        self.digits[DIGIT_QUEUE - 1] = None;
        self.digit_count -= 1;
        d
    }

    /// The caller's next 20 ms of audio into `out` (len [`CallerLeg::frame_len`]).
    /// Returns false when there was nothing to play (no packets yet, or the stream stopped).
    pub fn pull_frame(&mut self, now: Instant, out: &mut [i16]) -> bool {
        let n = self.frame_len().min(out.len());
        let out = &mut out[..n];
        self.forward_len = None;
        let produced = match self.jitter.pop(now) {
            Playout::Frame(frame) => match self.decoder.decode(frame.payload, out) {
                Ok(_) => {
                    if self.codec == CodecKind::Opus {
                        if let Some(slot) = self.forward.get_mut(..frame.payload.len()) {
                            slot.copy_from_slice(frame.payload);
                            self.forward_len = Some(frame.payload.len());
                        }
                    }
                    true
                }
                Err(_) => self.decoder.conceal(out).is_ok(),
            },
            Playout::Missing => {
                self.stats.concealed_frames += 1;
                self.decoder.conceal(out).is_ok()
            }
            Playout::Empty => false,
        };
        if !produced {
            out.fill(0);
            return false;
        }
        if let Some(det) = self.inband.as_mut() {
            if let Some(d) = det.process(out) {
                self.push_digit(d, DigitSource::Inband, now);
            }
        }
        true
    }

    /// For an Opus caller, the payload of the packet the last [`CallerLeg::pull_frame`]
    /// decoded (not a concealed frame): an Opus room can take it without transcoding.
    pub fn forwardable_payload(&self) -> Option<&[u8]> {
        self.forward.get(..self.forward_len?)
    }

    /// Encodes one 20 ms frame and writes the datagram to send to [`CallerLeg::remote`] into
    /// `out`; returns its length.
    pub fn encode_frame(&mut self, pcm: &[i16], now: Instant, out: &mut [u8]) -> Option<usize> {
        let payload_len = self.encoder.encode(pcm, &mut self.payload_scratch).ok()?;
        let payload = self.payload_scratch.get(..payload_len)?;
        let pt = PayloadType::new(self.pt).ok()?;
        let header = Header::new(pt, self.seq, self.ts, self.ssrc);
        let len = header.write(payload, out).ok()?;
        let len = match self.srtp_out.as_mut() {
            Some(ctx) => ctx.protect_rtp(out, len).ok()?,
            None => len,
        };
        self.send_stats.on_sent(payload_len, self.ts, now);
        self.seq = self.seq.next();
        self.ts = self.ts.add(self.codec.rtp_timestamp_step());
        self.stats.packets_sent += 1;
        Some(len)
    }

    /// Counters so far.
    pub fn stats(&self) -> LegStats {
        let rs = self.receiver.stats();
        LegStats {
            packets_lost: rs.cumulative_lost() + self.carried_lost,
            jitter_ms: rs.jitter_duration().as_secs_f64() * 1000.0,
            ..self.stats
        }
    }

    fn push_digit(&mut self, digit: Digit, source: DigitSource, now: Instant) {
        if !self.dedup.accept(digit, source, now) {
            return;
        }
        if self.digit_count < DIGIT_QUEUE {
            self.digits[self.digit_count] = Some(digit.to_char());
            self.digit_count += 1;
        }
    }

    fn discard(&mut self, why: Discard) -> Discard {
        self.stats.discarded += 1;
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(remote: SocketAddr) -> LegParams {
        LegParams {
            codec: CodecKind::Pcmu,
            payload_type: 0,
            telephone_event: Some(101),
            telephone_event_rate: Some(8000),
            remote,
            sources: SourcePolicy::sdp_only(),
            srtp: None,
            codec_config: CodecConfig::default(),
            jitter_min: Duration::from_millis(20),
            jitter_max: Duration::from_millis(200),
        }
    }

    fn packet(seq: u16) -> Vec<u8> {
        let mut out = vec![0u8; MAX_PACKET];
        let header = Header::new(
            PayloadType::new(0).unwrap(),
            SeqNo(seq),
            RtpTimestamp(u32::from(seq) * 160),
            Ssrc(7),
        );
        let len = header.write(&[0xff; 160], &mut out).unwrap();
        out.truncate(len);
        out
    }

    fn feed(leg: &mut CallerLeg, seq: u16, from: SocketAddr, now: Instant) -> Result<(), Discard> {
        let mut buf = packet(seq);
        let len = buf.len();
        leg.on_datagram(&mut buf, len, from, now)
    }

    #[test]
    fn reinvite_to_a_new_address_moves_our_rtp_and_accepts_the_new_source() {
        let old: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let new: SocketAddr = "127.0.0.1:40100".parse().unwrap();
        let now = Instant::now();
        let mut leg = CallerLeg::new(&params(old)).unwrap();
        assert_eq!(feed(&mut leg, 1, old, now), Ok(()));
        assert_eq!(
            feed(&mut leg, 2, new, now),
            Err(Discard::ForeignSource),
            "latched on the SDP address"
        );
        leg.retarget(new);
        assert_eq!(leg.remote(), new);
        assert_eq!(feed(&mut leg, 3, new, now), Ok(()));
        assert_eq!(
            feed(&mut leg, 4, old, now),
            Err(Discard::ForeignSource),
            "the old address is gone"
        );
        assert_eq!(leg.stats().packets_received, 2);
    }

    #[test]
    fn foreign_rtcp_is_dropped_and_counted_and_does_not_latch() {
        let caller: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.2:40001".parse().unwrap();
        let now = Instant::now();
        let mut leg = CallerLeg::new(&params(caller)).unwrap();
        // An RTCP receiver report (V=2, PT=201, length 1, SSRC).
        let mut rr = [0x80u8, 201, 0, 1, 0, 0, 0, 9];
        assert_eq!(
            leg.on_datagram(&mut rr, 8, stranger, now),
            Err(Discard::ForeignSource)
        );
        assert_eq!(leg.on_datagram(&mut rr, 8, caller, now), Err(Discard::Rtcp));
        assert_eq!(leg.stats().foreign, 1);
        assert_eq!(leg.remote(), caller);
    }

    #[test]
    fn retarget_to_the_same_address_changes_nothing() {
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let now = Instant::now();
        let mut leg = CallerLeg::new(&params(addr)).unwrap();
        assert_eq!(feed(&mut leg, 1, addr, now), Ok(()));
        leg.retarget(addr);
        assert_eq!(
            feed(&mut leg, 1, addr, now),
            Err(Discard::Duplicate),
            "the receiver kept its state"
        );
    }
}
