//! Per-stream receive state: who may send us RTP, and what we have received from them.
//!
//! Sits right after [`Packet::parse`](crate::rtp::Packet::parse) on the receive path:
//! the driver hands every parsed packet, its source address and its arrival `Instant` to
//! [`RtpReceiver::on_packet`], which
//! - enforces the [`RemotePeer`] policy (symmetric RTP latching, once, on the first packet
//!   from an address the [`SourcePolicy`] admits: the SDP address, the signalling peer's IP
//!   for callers behind NAT, a trunk's listed media sources; everything else is dropped and
//!   counted),
//! - keeps the RFC 3550 §A.1 sequence state (extended highest sequence number, restarts
//!   after large jumps, duplicates), the §A.8 interarrival jitter, and the §A.3 loss
//!   figures that feed RTCP report blocks ([`ReceiveStats::report_block`]),
//! - records the last arrival so the driver can enforce `rtp_timeout`.
//!
//! [`SendStats`] counts what we send, for the sender info of our RTCP SRs.
//!
//! Sans-IO: no clock is read here; time comes in with each packet.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rtcp::{NtpTime, ReportBlock, SenderInfo};
use crate::rtp::{Packet, RtpTimestamp, SeqNo, Ssrc};

/// RFC 3550 §A.1: a jump forward larger than this is not counted as loss but as a
/// possible restart of the sender's sequence.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 §A.1: a packet this far behind the highest is a late/duplicate packet; further
/// behind, it is a possible restart.
const MAX_MISORDER: u16 = 100;
/// RFC 3550 §A.1: sequence numbers per cycle.
const RTP_SEQ_MOD: u64 = 1 << 16;
/// Width of the duplicate detection window, in sequence numbers.
const DUP_WINDOW: u64 = 64;

/// Which addresses may become a call's media peer, besides the exact address in its SDP.
///
/// The defence against off-path media injection ("RTP Bleed"): a packet from anywhere else
/// never latches the call, however early it arrives or however well-formed it is.
#[derive(Clone, Default)]
pub struct SourcePolicy {
    /// The IP address the INVITE came from (an SBC, or a phone behind NAT): media from it is
    /// accepted on any port, which is then learned.
    signalling: Option<IpAddr>,
    /// Further sources the trunk lists (a carrier whose media comes from a third address).
    also: Option<Arc<dyn Fn(IpAddr) -> bool + Send + Sync>>,
}

impl std::fmt::Debug for SourcePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourcePolicy")
            .field("signalling", &self.signalling)
            .field("also", &self.also.is_some())
            .finish()
    }
}

impl SourcePolicy {
    /// Only the SDP address itself.
    pub fn sdp_only() -> SourcePolicy {
        SourcePolicy::default()
    }

    /// The SDP address, or any port of `signalling` (the INVITE's source IP).
    pub fn with_signalling(signalling: IpAddr) -> SourcePolicy {
        SourcePolicy {
            signalling: Some(canonical(signalling)),
            also: None,
        }
    }

    /// Also any source for which `allowed` is true (a trunk's `media_sources`).
    pub fn also(mut self, allowed: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>) -> SourcePolicy {
        self.also = Some(allowed);
        self
    }

    /// May `from` become the peer of a call whose SDP said `negotiated`?
    pub fn admits(&self, negotiated: SocketAddr, from: SocketAddr) -> bool {
        same_addr(from, negotiated)
            || self.signalling == Some(canonical(from.ip()))
            || self.also.as_ref().is_some_and(|f| f(canonical(from.ip())))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, seen on dual-stack sockets) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

/// Where RTP may come from (DESIGN.md "RTP is accepted only from the negotiated peer").
///
/// Starts at the address from the SDP. Until the first packet is accepted, a packet is
/// accepted only from a source the [`SourcePolicy`] admits (the SDP address, the signalling
/// peer's IP on any port, the trunk's listed media sources); the first such packet latches
/// the peer, and our RTP goes there from then on (a caller behind NAT). Once latched, the
/// peer never changes unless the signalling says so ([`RemotePeer::new`] again on a
/// re-INVITE); every other source is dropped and counted.
#[derive(Debug, Clone)]
pub struct RemotePeer {
    current: SocketAddr,
    negotiated: SocketAddr,
    policy: SourcePolicy,
    locked: bool,
    dropped_foreign: u64,
}

/// What [`RemotePeer::check`] decided about a packet's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerVerdict {
    /// From the current peer.
    Accept,
    /// First packet of the call, from an admitted address other than the SDP's: the peer
    /// now is this address (send our RTP there too).
    Relatched(SocketAddr),
    /// From a foreign source: drop it.
    DropForeign,
}

impl RemotePeer {
    /// The peer negotiated in SDP (`c=` address, `m=` port), with who else may latch.
    pub fn new(negotiated: SocketAddr, policy: SourcePolicy) -> Self {
        RemotePeer {
            current: negotiated,
            negotiated,
            policy,
            locked: false,
            dropped_foreign: 0,
        }
    }

    /// Decide about a packet from `from`.
    pub fn check(&mut self, from: SocketAddr) -> PeerVerdict {
        if same_addr(from, self.current) {
            self.locked = true;
            return PeerVerdict::Accept;
        }
        if !self.locked && self.policy.admits(self.negotiated, from) {
            self.locked = true;
            self.current = from;
            return PeerVerdict::Relatched(from);
        }
        self.dropped_foreign += 1;
        PeerVerdict::DropForeign
    }

    /// Whether a packet from `from` would be accepted now, without latching or counting
    /// (RTCP on the RTP port follows the same rule as RTP).
    pub fn admits(&self, from: SocketAddr) -> bool {
        same_addr(from, self.current)
            || (!self.locked && self.policy.admits(self.negotiated, from))
    }

    /// Counts a packet dropped for its source outside [`RemotePeer::check`] (RTCP).
    pub fn count_foreign(&mut self) {
        self.dropped_foreign += 1;
    }

    /// Where to send our RTP: the latched source, else the SDP address.
    pub fn address(&self) -> SocketAddr {
        self.current
    }

    /// The address from the SDP.
    pub fn negotiated(&self) -> SocketAddr {
        self.negotiated
    }

    /// Who may latch.
    pub fn policy(&self) -> &SourcePolicy {
        &self.policy
    }

    /// Whether the peer moved away from the SDP address.
    pub fn relatched(&self) -> bool {
        self.current != self.negotiated
    }

    /// Packets dropped because they came from another source.
    pub fn dropped_foreign(&self) -> u64 {
        self.dropped_foreign
    }
}

/// What [`ReceiveStats::on_packet`] decided about a packet's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// In order, or late but new: use it. Carries a monotonic extended sequence number
    /// (the first packet is placed in cycle 1, so earlier reordered packets still fit).
    New(u64),
    /// Already received (within the last 64 sequence numbers).
    Duplicate,
    /// A large jump (RFC 3550 §A.1 "bad_seq"): ignored unless the next packet follows it,
    /// which then restarts the sequence state.
    OutOfRange,
}

/// RFC 3550 §A.1/§A.3/§A.8 receive statistics for one SSRC.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    clock_rate: u32,
    started: bool,
    max_seq: u16,
    /// Shifted count of sequence number cycles (RFC 3550 §A.1 `cycles`).
    cycles: u64,
    base_seq: u64,
    bad_seq: Option<u16>,
    received: u64,
    duplicates: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Bit i set: extended seq `highest - i` was received.
    seen: u64,
    /// Arrival time reference for transit computation.
    epoch: Option<Instant>,
    /// RFC 3550 §A.8 previous transit, in timestamp units.
    transit: Option<i64>,
    /// RFC 3550 §A.8 jitter, scaled by 16.
    jitter_q4: u64,
    last_sr: Option<(u32, Instant)>,
}

impl ReceiveStats {
    /// Statistics for a stream whose RTP clock runs at `clock_rate` Hz (8000 for G.711,
    /// 8000 for G.722 per RFC 3551 §4.5.2, 48000 for Opus).
    pub fn new(clock_rate: u32) -> Self {
        ReceiveStats {
            clock_rate: clock_rate.max(1),
            started: false,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: None,
            received: 0,
            duplicates: 0,
            expected_prior: 0,
            received_prior: 0,
            seen: 0,
            epoch: None,
            transit: None,
            jitter_q4: 0,
            last_sr: None,
        }
    }

    fn restart(&mut self, seq: u16) {
        // RFC 3550 §A.1 init_seq.
        self.started = true;
        self.max_seq = seq;
        // Counting starts in cycle 1 so that a packet reordered from before the first one
        // still has an extended number; reports subtract it again.
        self.cycles = RTP_SEQ_MOD;
        self.base_seq = RTP_SEQ_MOD + u64::from(seq);
        self.bad_seq = None;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
        self.seen = 0;
        self.transit = None;
    }

    fn extended_max(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    /// Mark `ext` seen; false when it was already seen.
    fn mark_seen(&mut self, ext: u64) -> bool {
        let highest = self.extended_max();
        if ext > highest {
            let shift = ext - highest;
            self.seen = if shift >= DUP_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            true
        } else {
            let back = highest - ext;
            if back >= DUP_WINDOW {
                return true;
            }
            let bit = 1u64 << back;
            let fresh = self.seen & bit == 0;
            self.seen |= bit;
            fresh
        }
    }

    /// Account for one packet that arrived at `arrival` (RFC 3550 §A.1 `update_seq`, §A.8).
    pub fn on_packet(&mut self, seq: SeqNo, ts: RtpTimestamp, arrival: Instant) -> SeqVerdict {
        let seq = seq.0;
        if !self.started {
            self.restart(seq);
            self.epoch.get_or_insert(arrival);
            self.seen = 1;
            self.received = 1;
            self.update_jitter(ts, arrival);
            return SeqVerdict::New(self.extended_max());
        }
        let udelta = seq.wrapping_sub(self.max_seq);
        let ext;
        if udelta < MAX_DROPOUT {
            // In order, with permissible gap.
            let mut cycles = self.cycles;
            if seq < self.max_seq {
                cycles += RTP_SEQ_MOD;
            }
            ext = cycles + u64::from(seq);
            if udelta == 0 || !self.mark_seen(ext) {
                self.duplicates += 1;
                return SeqVerdict::Duplicate;
            }
            self.cycles = cycles;
            self.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER {
            // A very large jump.
            if self.bad_seq == Some(seq) {
                // Two sequential packets: the sender restarted; resync (RFC 3550 §A.1).
                self.restart(seq);
                self.seen = 1;
                self.received = 1;
                self.update_jitter(ts, arrival);
                return SeqVerdict::New(self.extended_max());
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return SeqVerdict::OutOfRange;
        } else {
            // Duplicate or reordered packet, behind the highest.
            let back = u64::from(self.max_seq.wrapping_sub(seq));
            let highest = self.extended_max();
            let Some(e) = highest.checked_sub(back) else {
                return SeqVerdict::OutOfRange;
            };
            ext = e;
            if ext < self.base_seq {
                // From before the first packet we counted: accept but do not extend base.
                self.base_seq = ext;
            }
            if !self.mark_seen(ext) {
                self.duplicates += 1;
                return SeqVerdict::Duplicate;
            }
        }
        self.bad_seq = None;
        self.received += 1;
        self.update_jitter(ts, arrival);
        SeqVerdict::New(ext)
    }

    fn update_jitter(&mut self, ts: RtpTimestamp, arrival: Instant) {
        // RFC 3550 §A.8: transit = arrival (in timestamp units) - RTP timestamp; the
        // arbitrary offset of the arrival clock cancels in the difference.
        let Some(epoch) = self.epoch else { return };
        let since = arrival.saturating_duration_since(epoch);
        let arrival_ts = (since.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u64;
        let transit = (arrival_ts as u32).wrapping_sub(ts.0) as i32 as i64;
        if let Some(prev) = self.transit {
            let d = (transit - prev).unsigned_abs();
            // J += (|D| - J) / 16, kept scaled by 16 as in §A.8's integer form.
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Record a Sender Report from this source: the middle 32 bits of its NTP time (LSR)
    /// and when it arrived, for DLSR (RFC 3550 §6.4.1).
    pub fn on_sender_report(&mut self, ntp: NtpTime, arrival: Instant) {
        self.last_sr = Some((ntp.middle_32(), arrival));
    }

    /// Interarrival jitter in timestamp units (RFC 3550 §A.8).
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// Interarrival jitter as a duration.
    pub fn jitter_duration(&self) -> Duration {
        Duration::from_nanos(u64::from(self.jitter()) * 1_000_000_000 / u64::from(self.clock_rate))
    }

    /// Packets received (duplicates excluded).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets expected: extended highest - base + 1 (RFC 3550 §A.3).
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        self.extended_max() + 1 - self.base_seq
    }

    /// Cumulative packets lost; negative when duplicates beyond the window were counted.
    pub fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Duplicate packets seen.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Extended highest sequence number received (RFC 3550 §6.4.1): cycles counted from 0.
    pub fn highest_seq(&self) -> Option<u64> {
        self.started.then(|| self.extended_max() - RTP_SEQ_MOD)
    }

    /// Build the report block about `ssrc` for an SR/RR and start a new interval
    /// (RFC 3550 §A.3 fraction lost; §6.4.1 LSR/DLSR).
    pub fn report_block(&mut self, ssrc: Ssrc, now: Instant) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        // §6.4.1: cumulative lost is a signed 24-bit value, clamped.
        let cumulative_lost = self.cumulative_lost().clamp(-0x80_0000, 0x7f_ffff) as i32;
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                // DLSR in units of 1/65536 s.
                let units = (d.as_nanos() * 65536 / 1_000_000_000).min(u128::from(u32::MAX)) as u32;
                (lsr, units)
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost,
            // §6.4.1: the low 32 bits of the extended highest sequence number.
            highest_seq: self.highest_seq().unwrap_or(0) as u32,
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr,
        }
    }
}

/// Why [`RtpReceiver::on_packet`] did not accept a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// From a source other than the latched peer.
    ForeignSource,
    /// A duplicate.
    Duplicate,
    /// A sequence number far from the stream's (possible restart, waiting for a second).
    OutOfRange,
}

/// An accepted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Extended sequence number.
    pub ext_seq: u64,
    /// `Some` when this packet made the stream latch to a new address.
    pub relatched: Option<SocketAddr>,
    /// True when the SSRC changed (the peer switched streams); stats were reset.
    pub new_ssrc: bool,
}

/// The receive side of one call's RTP stream: latching, statistics and inactivity.
#[derive(Debug, Clone)]
pub struct RtpReceiver {
    peer: RemotePeer,
    clock_rate: u32,
    ssrc: Option<Ssrc>,
    stats: ReceiveStats,
    last_received: Option<Instant>,
}

impl RtpReceiver {
    /// A receiver for RTP from the SDP peer `negotiated` (or what `policy` admits), clock
    /// rate `clock_rate`.
    pub fn new(negotiated: SocketAddr, policy: SourcePolicy, clock_rate: u32) -> Self {
        RtpReceiver {
            peer: RemotePeer::new(negotiated, policy),
            clock_rate,
            ssrc: None,
            stats: ReceiveStats::new(clock_rate),
            last_received: None,
        }
    }

    /// Judge and account one packet from `from` that arrived at `now`.
    pub fn on_packet(
        &mut self,
        from: SocketAddr,
        packet: &Packet<'_>,
        now: Instant,
    ) -> Result<Accepted, Dropped> {
        let relatched = match self.peer.check(from) {
            PeerVerdict::Accept => None,
            PeerVerdict::Relatched(a) => Some(a),
            PeerVerdict::DropForeign => return Err(Dropped::ForeignSource),
        };
        let ssrc = packet.ssrc();
        let new_ssrc = self.ssrc.is_some_and(|s| s != ssrc);
        if new_ssrc {
            // The peer switched streams (e.g. a PBX transfer): counting continues afresh.
            self.stats = ReceiveStats::new(self.clock_rate);
        }
        self.ssrc = Some(ssrc);
        self.last_received = Some(now);
        match self.stats.on_packet(packet.seq(), packet.timestamp(), now) {
            SeqVerdict::New(ext_seq) => Ok(Accepted {
                ext_seq,
                relatched,
                new_ssrc,
            }),
            SeqVerdict::Duplicate => Err(Dropped::Duplicate),
            SeqVerdict::OutOfRange => Err(Dropped::OutOfRange),
        }
    }

    /// The latching policy and its counters.
    pub fn peer(&self) -> &RemotePeer {
        &self.peer
    }

    /// The latching policy, to count what is dropped outside [`RtpReceiver::on_packet`].
    pub fn peer_mut(&mut self) -> &mut RemotePeer {
        &mut self.peer
    }

    /// Statistics of the current SSRC.
    pub fn stats(&self) -> &ReceiveStats {
        &self.stats
    }

    /// Mutable statistics (for [`ReceiveStats::report_block`] and SR arrival).
    pub fn stats_mut(&mut self) -> &mut ReceiveStats {
        &mut self.stats
    }

    /// The SSRC being received, once a packet arrived.
    pub fn ssrc(&self) -> Option<Ssrc> {
        self.ssrc
    }

    /// When the last accepted-source packet arrived.
    pub fn last_received(&self) -> Option<Instant> {
        self.last_received
    }

    /// The instant at which the stream is inactive for `timeout`, counting from the last
    /// packet, or from `started` when none arrived yet (the driver arms a timer on it).
    pub fn inactivity_deadline(&self, started: Instant, timeout: Duration) -> Instant {
        self.last_received.unwrap_or(started) + timeout
    }

    /// Whether no RTP arrived for `timeout` at `now`.
    pub fn is_inactive(&self, started: Instant, timeout: Duration, now: Instant) -> bool {
        now >= self.inactivity_deadline(started, timeout)
    }
}

/// Send-side counters for our Sender Reports (RFC 3550 §6.4.1 sender info).
#[derive(Debug, Clone)]
pub struct SendStats {
    clock_rate: u32,
    packets: u32,
    octets: u32,
    last: Option<(RtpTimestamp, Instant)>,
}

impl SendStats {
    /// Counters for a stream whose RTP clock runs at `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        SendStats {
            clock_rate: clock_rate.max(1),
            packets: 0,
            octets: 0,
            last: None,
        }
    }

    /// One RTP packet with `payload_len` octets of payload and timestamp `ts` sent at `now`.
    pub fn on_sent(&mut self, payload_len: usize, ts: RtpTimestamp, now: Instant) {
        // §6.4.1: both counts wrap modulo 2^32.
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
        self.last = Some((ts, now));
    }

    /// Whether anything was sent (an SR is due only then; otherwise send an RR).
    pub fn has_sent(&self) -> bool {
        self.packets > 0
    }

    /// Sender info for an SR built at `now` (wall clock `ntp`): the RTP timestamp is the
    /// last one sent, advanced by the time since at the stream's clock rate, so that it
    /// corresponds to the same instant as `ntp` (§6.4.1).
    pub fn sender_info(&self, ntp: NtpTime, now: Instant) -> SenderInfo {
        let rtp_time = match self.last {
            Some((ts, at)) => {
                let since = now.saturating_duration_since(at);
                let ticks = since.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000;
                ts.add(ticks as u32)
            }
            None => RtpTimestamp(0),
        };
        SenderInfo {
            ntp_time: ntp,
            rtp_time,
            packet_count: self.packets,
            octet_count: self.octets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{Header, PayloadType};

    const MS20: Duration = Duration::from_millis(20);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn packet(buf: &mut [u8; 32], seq: u16, ts: u32, ssrc: u32) -> Packet<'_> {
        let h = Header::new(PayloadType::PCMU, SeqNo(seq), RtpTimestamp(ts), Ssrc(ssrc));
        let n = h.write(&[0; 4], buf).unwrap();
        Packet::parse(&buf[..n]).unwrap()
    }

    #[test]
    fn packets_from_the_sdp_address_are_accepted_and_others_dropped() {
        let mut peer = RemotePeer::new(addr("192.0.2.1:4000"), SourcePolicy::sdp_only());
        assert_eq!(peer.check(addr("192.0.2.1:4000")), PeerVerdict::Accept);
        assert_eq!(peer.check(addr("192.0.2.9:4000")), PeerVerdict::DropForeign);
        assert_eq!(peer.check(addr("192.0.2.1:4002")), PeerVerdict::DropForeign);
        assert_eq!(peer.dropped_foreign(), 2);
        assert!(!peer.relatched());
    }

    #[test]
    fn a_stranger_never_latches_even_before_the_caller_sends() {
        // The off-path attacker sprays first: nothing it sends is accepted or moves our RTP.
        let policy = SourcePolicy::with_signalling("198.51.100.7".parse().unwrap());
        let mut peer = RemotePeer::new(addr("10.0.0.5:4000"), policy);
        for port in [4000, 4001, 5000, 61000] {
            let from = SocketAddr::new("203.0.113.66".parse().unwrap(), port);
            assert_eq!(peer.check(from), PeerVerdict::DropForeign);
            assert!(!peer.admits(from));
        }
        assert_eq!(peer.address(), addr("10.0.0.5:4000"), "still the SDP address");
        assert_eq!(peer.dropped_foreign(), 4);
        // The caller behind NAT, from its signalling IP on a port of its NAT's choosing.
        assert_eq!(
            peer.check(addr("198.51.100.7:61000")),
            PeerVerdict::Relatched(addr("198.51.100.7:61000"))
        );
    }

    #[test]
    fn first_packet_from_the_signalling_address_relatches_once() {
        let policy = SourcePolicy::with_signalling("198.51.100.7".parse().unwrap());
        let mut peer = RemotePeer::new(addr("10.0.0.5:4000"), policy);
        assert_eq!(
            peer.check(addr("198.51.100.7:61000")),
            PeerVerdict::Relatched(addr("198.51.100.7:61000"))
        );
        assert_eq!(peer.address(), addr("198.51.100.7:61000"));
        assert_eq!(peer.check(addr("198.51.100.7:61000")), PeerVerdict::Accept);
        // Once latched, no other source, not even another port of the same IP or the SDP
        // address.
        assert_eq!(
            peer.check(addr("198.51.100.7:61002")),
            PeerVerdict::DropForeign
        );
        assert_eq!(peer.check(addr("10.0.0.5:4000")), PeerVerdict::DropForeign);
        assert_eq!(peer.dropped_foreign(), 2);
        assert!(peer.relatched());
    }

    #[test]
    fn a_listed_media_source_may_latch() {
        let policy = SourcePolicy::with_signalling("192.0.2.10".parse().unwrap()).also(
            std::sync::Arc::new(|ip: IpAddr| ip == "192.0.2.77".parse::<IpAddr>().unwrap()),
        );
        let mut peer = RemotePeer::new(addr("10.1.1.1:30000"), policy.clone());
        assert_eq!(
            peer.check(addr("192.0.2.78:30000")),
            PeerVerdict::DropForeign
        );
        assert_eq!(
            peer.check(addr("192.0.2.77:30000")),
            PeerVerdict::Relatched(addr("192.0.2.77:30000"))
        );
        // An IPv4-mapped source on a dual-stack socket is the same address.
        let mut peer = RemotePeer::new(addr("192.0.2.1:4000"), policy);
        assert_eq!(peer.check(addr("[::ffff:192.0.2.1]:4000")), PeerVerdict::Accept);
    }

    #[test]
    fn in_order_stream_counts_no_loss() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        for i in 0..100u16 {
            let v = s.on_packet(
                SeqNo(65500u16.wrapping_add(i)),
                RtpTimestamp(u32::from(i) * 160),
                t0 + MS20 * u32::from(i),
            );
            assert!(matches!(v, SeqVerdict::New(_)));
        }
        assert_eq!(s.received(), 100);
        assert_eq!(s.expected(), 100);
        assert_eq!(s.cumulative_lost(), 0);
        assert_eq!(s.jitter(), 0);
        assert_eq!(s.highest_seq(), Some(65536 + 63));
        let rb = s.report_block(Ssrc(1), t0);
        assert_eq!(rb.fraction_lost, 0);
        assert_eq!(rb.highest_seq, 65536 + 63);
    }

    #[test]
    fn losses_give_cumulative_and_interval_fraction() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        // First interval: 0..100 with every 4th missing → 25 lost of 100 expected... last one kept.
        for i in 0..100u16 {
            if i % 4 != 1 {
                s.on_packet(SeqNo(i), RtpTimestamp(u32::from(i) * 160), t0);
            }
        }
        let expected_lost = (0..100).filter(|i| i % 4 == 1).count() as i64;
        assert_eq!(s.cumulative_lost(), expected_lost);
        let rb = s.report_block(Ssrc(1), t0);
        assert_eq!(rb.fraction_lost, ((expected_lost as u64 * 256) / 100) as u8);
        assert_eq!(rb.cumulative_lost, expected_lost as i32);
        // Second interval: no loss, fraction back to 0, cumulative unchanged.
        for i in 100..200u16 {
            s.on_packet(SeqNo(i), RtpTimestamp(u32::from(i) * 160), t0);
        }
        let rb = s.report_block(Ssrc(1), t0);
        assert_eq!(rb.fraction_lost, 0);
        assert_eq!(rb.cumulative_lost, expected_lost as i32);
    }

    #[test]
    fn duplicates_are_counted_and_not_received_twice() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        assert!(matches!(
            s.on_packet(SeqNo(10), RtpTimestamp(0), t0),
            SeqVerdict::New(_)
        ));
        assert!(matches!(
            s.on_packet(SeqNo(12), RtpTimestamp(320), t0),
            SeqVerdict::New(_)
        ));
        assert_eq!(
            s.on_packet(SeqNo(12), RtpTimestamp(320), t0),
            SeqVerdict::Duplicate
        );
        assert!(matches!(
            s.on_packet(SeqNo(11), RtpTimestamp(160), t0),
            SeqVerdict::New(_)
        ));
        assert_eq!(
            s.on_packet(SeqNo(11), RtpTimestamp(160), t0),
            SeqVerdict::Duplicate
        );
        assert_eq!(
            s.on_packet(SeqNo(10), RtpTimestamp(0), t0),
            SeqVerdict::Duplicate
        );
        assert_eq!(s.duplicates(), 3);
        assert_eq!(s.received(), 3);
        assert_eq!(s.cumulative_lost(), 0);
    }

    #[test]
    fn late_packet_before_the_wrap_gets_the_previous_cycle() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        s.on_packet(SeqNo(65534), RtpTimestamp(0), t0);
        let after = s.on_packet(SeqNo(1), RtpTimestamp(480), t0);
        let late = s.on_packet(SeqNo(65535), RtpTimestamp(160), t0);
        match (after, late) {
            (SeqVerdict::New(a), SeqVerdict::New(l)) => assert_eq!(a - l, 2),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(s.cumulative_lost(), 1); // seq 0 is missing
    }

    #[test]
    fn packet_reordered_before_the_first_one_is_accepted_and_not_lost() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        let first = s.on_packet(SeqNo(1), RtpTimestamp(320), t0);
        let early = s.on_packet(SeqNo(65535), RtpTimestamp(0), t0);
        match (first, early) {
            (SeqVerdict::New(f), SeqVerdict::New(e)) => assert_eq!(f - e, 2),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(s.expected(), 3);
        assert_eq!(s.received(), 2);
        assert_eq!(s.cumulative_lost(), 1);
        assert_eq!(s.highest_seq(), Some(1));
    }

    #[test]
    fn large_jump_restarts_after_two_sequential_packets() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        for i in 0..10u16 {
            s.on_packet(SeqNo(i), RtpTimestamp(0), t0);
        }
        assert_eq!(
            s.on_packet(SeqNo(30000), RtpTimestamp(0), t0),
            SeqVerdict::OutOfRange
        );
        assert!(matches!(
            s.on_packet(SeqNo(30001), RtpTimestamp(0), t0),
            SeqVerdict::New(_)
        ));
        assert_eq!(s.received(), 1);
        assert_eq!(s.cumulative_lost(), 0);
    }

    #[test]
    fn jitter_follows_rfc3550_a8_for_alternating_delay() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        // Packets every 20 ms of media; arrivals alternate 0 ms and +10 ms late (80 ticks).
        let mut expected_q4: u64 = 0;
        for i in 0..200u32 {
            let late = if i % 2 == 1 {
                Duration::from_millis(10)
            } else {
                Duration::ZERO
            };
            s.on_packet(SeqNo(i as u16), RtpTimestamp(i * 160), t0 + MS20 * i + late);
            if i > 0 {
                expected_q4 = expected_q4 + 80 - ((expected_q4 + 8) >> 4);
            }
        }
        assert_eq!(s.jitter(), (expected_q4 >> 4) as u32);
        // |D| = 80 every packet: the estimate converges to 80 ticks = 10 ms.
        assert!((75..=80).contains(&s.jitter()), "jitter {}", s.jitter());
        assert!(s.jitter_duration() > Duration::from_millis(9));
    }

    #[test]
    fn report_block_carries_lsr_and_dlsr() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(8000);
        s.on_packet(SeqNo(1), RtpTimestamp(0), t0);
        let ntp = NtpTime(0x1234_5678_9abc_def0);
        s.on_sender_report(ntp, t0);
        let rb = s.report_block(Ssrc(7), t0 + Duration::from_millis(500));
        assert_eq!(rb.last_sr, 0x5678_9abc);
        assert_eq!(rb.delay_since_last_sr, 32768);
    }

    #[test]
    fn sender_info_counts_packets_octets_and_extrapolates_the_timestamp() {
        let t0 = Instant::now();
        let mut tx = SendStats::new(8000);
        assert!(!tx.has_sent());
        for i in 0..50u32 {
            tx.on_sent(160, RtpTimestamp(1000 + i * 160), t0 + MS20 * i);
        }
        let ntp = NtpTime(42 << 32);
        let info = tx.sender_info(ntp, t0 + MS20 * 49 + Duration::from_millis(5));
        assert!(tx.has_sent());
        assert_eq!(info.packet_count, 50);
        assert_eq!(info.octet_count, 50 * 160);
        assert_eq!(info.ntp_time, ntp);
        assert_eq!(info.rtp_time, RtpTimestamp(1000 + 49 * 160 + 40));
    }

    #[test]
    fn receiver_drops_foreign_and_tracks_inactivity() {
        let t0 = Instant::now();
        let mut r = RtpReceiver::new(addr("192.0.2.1:4000"), SourcePolicy::sdp_only(), 8000);
        let mut b = [0u8; 32];
        assert!(r.is_inactive(t0, Duration::from_secs(30), t0 + Duration::from_secs(30)));
        let ok = r
            .on_packet(addr("192.0.2.1:4000"), &packet(&mut b, 1, 0, 5), t0 + MS20)
            .unwrap();
        assert_eq!(ok.relatched, None);
        let mut b2 = [0u8; 32];
        assert_eq!(
            r.on_packet(
                addr("192.0.2.66:4000"),
                &packet(&mut b2, 2, 160, 5),
                t0 + MS20 * 2
            ),
            Err(Dropped::ForeignSource)
        );
        assert_eq!(r.last_received(), Some(t0 + MS20));
        assert_eq!(r.peer().dropped_foreign(), 1);
        assert_eq!(
            r.inactivity_deadline(t0, Duration::from_secs(30)),
            t0 + MS20 + Duration::from_secs(30)
        );
        assert!(!r.is_inactive(t0, Duration::from_secs(30), t0 + Duration::from_secs(30)));
    }

    #[test]
    fn receiver_resets_stats_when_ssrc_changes() {
        let t0 = Instant::now();
        let mut r = RtpReceiver::new(addr("192.0.2.1:4000"), SourcePolicy::sdp_only(), 8000);
        let src = addr("192.0.2.1:4000");
        let mut b = [0u8; 32];
        for i in 0..5 {
            r.on_packet(src, &packet(&mut b, i, 0, 5), t0).unwrap();
        }
        let acc = r.on_packet(src, &packet(&mut b, 40000, 0, 6), t0).unwrap();
        assert!(acc.new_ssrc);
        assert_eq!(r.stats().received(), 1);
        assert_eq!(r.ssrc(), Some(Ssrc(6)));
    }
}
