//! RTCP (RFC 3550 §6): reception quality reports alongside the call's RTP.
//!
//! Receive side: [`is_rtcp`] splits RTP from RTCP on a muxed port (RFC 5761 §4), then
//! [`Compound::parse`] walks a compound packet and yields [`RtcpPacket`]s (SR, RR, SDES,
//! BYE; APP and unknown types are passed over). All views borrow the datagram.
//! Send side: [`write_sender_report`], [`write_receiver_report`], [`write_sdes_cname`] and
//! [`write_bye`] append into a caller buffer, so a compound packet is built by calling
//! them one after the other; [`RtcpScheduler`] says when the next report is due
//! (RFC 3550 §6.3, simplified: fixed mean interval, 0.5–1.5 randomisation).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thiserror::Error;

use crate::rtp::{RtpTimestamp, Ssrc};

/// RFC 3550 §12.1 packet types.
const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
/// RFC 3550 §6.5: SDES item type CNAME.
const SDES_CNAME: u8 = 1;
/// RFC 3550 §6.4.1: a report block is 24 octets.
const REPORT_BLOCK_LEN: usize = 24;
/// RFC 3550 §6.4.1: sender info is 20 octets.
const SENDER_INFO_LEN: usize = 20;
/// RFC 3550 §6.2: the recommended minimum mean interval between reports.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Why a buffer is not valid RTCP, or RTCP cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtcpError {
    /// Shorter than a header, or than its length field announces.
    #[error("RTCP packet too short")]
    TooShort,
    /// Version field is not 2.
    #[error("RTCP version {0}, expected 2")]
    BadVersion(u8),
    /// Padding on a packet that is not the last of the compound, or a bad count.
    #[error("invalid RTCP padding")]
    BadPadding,
    /// More report blocks / sources than the packet's length allows.
    #[error("RTCP count field does not fit the packet length")]
    BadCount,
    /// The caller's buffer cannot hold what is being written.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// More than 31 report blocks or sources, or a CNAME over 255 octets.
    #[error("RTCP field out of range: {0}")]
    FieldOutOfRange(&'static str),
}

/// A 64-bit NTP timestamp (RFC 3550 §4): seconds since 1900 in the high 32 bits, fraction in
/// the low 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// The NTP time of a wall-clock instant (the driver reads the clock, not this module).
    pub fn from_system_time(t: SystemTime) -> Self {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = since.as_secs().wrapping_add(NTP_UNIX_OFFSET_S);
        let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTime((secs << 32) | frac)
    }

    /// The middle 32 bits, as used for LSR (RFC 3550 §6.4.1).
    pub fn middle_32(self) -> u32 {
        (self.0 >> 16) as u32
    }
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: Ssrc,
    /// Lost fraction since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost, signed 24-bit.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (low 32 bits).
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP time, 0 if none.
    pub last_sr: u32,
    /// Delay since that SR in 1/65536 s, 0 if none.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn parse(b: &[u8]) -> Option<Self> {
        let b: &[u8; REPORT_BLOCK_LEN] = b.get(..REPORT_BLOCK_LEN)?.try_into().ok()?;
        let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        // Sign-extend the 24-bit cumulative loss.
        let lost = ((w(4) << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: Ssrc(w(0)),
            fraction_lost: b[4],
            cumulative_lost: lost,
            highest_seq: w(8),
            jitter: w(12),
            last_sr: w(16),
            delay_since_last_sr: w(20),
        })
    }

    fn write(&self, out: &mut [u8; REPORT_BLOCK_LEN]) {
        out[0..4].copy_from_slice(&self.ssrc.0.to_be_bytes());
        let lost = (self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0x00ff_ffff;
        out[4..8].copy_from_slice(&((u32::from(self.fraction_lost) << 24) | lost).to_be_bytes());
        out[8..12].copy_from_slice(&self.highest_seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        out[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// The report blocks of an SR or RR, read lazily from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlocks<'a> {
    data: &'a [u8],
}

impl<'a> ReportBlocks<'a> {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.data.len() / REPORT_BLOCK_LEN
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The blocks.
    pub fn iter(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.data
            .chunks_exact(REPORT_BLOCK_LEN)
            .filter_map(ReportBlock::parse)
    }
}

/// Sender info of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub ntp_time: NtpTime,
    pub rtp_time: RtpTimestamp,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// A Sender Report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport<'a> {
    pub ssrc: Ssrc,
    pub info: SenderInfo,
    pub reports: ReportBlocks<'a>,
}

/// A Receiver Report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    pub ssrc: Ssrc,
    pub reports: ReportBlocks<'a>,
}

/// An SDES packet; [`Sdes::cnames`] reads the CNAME of each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sdes<'a> {
    count: u8,
    body: &'a [u8],
}

impl<'a> Sdes<'a> {
    /// `(ssrc, cname)` for each chunk that has a CNAME item; stops at malformed data.
    pub fn cnames(&self) -> impl Iterator<Item = (Ssrc, &'a [u8])> + 'a {
        SdesChunks {
            rest: self.body,
            left: self.count,
        }
    }
}

struct SdesChunks<'a> {
    rest: &'a [u8],
    left: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = (Ssrc, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        while self.left > 0 {
            self.left -= 1;
            let ssrc = Ssrc(u32::from_be_bytes(self.rest.get(..4)?.try_into().ok()?));
            let mut pos = 4;
            let mut cname = None;
            // Items until a null octet; the chunk then pads to a 32-bit boundary (§6.5).
            loop {
                let ty = *self.rest.get(pos)?;
                if ty == 0 {
                    pos += 1;
                    break;
                }
                let len = usize::from(*self.rest.get(pos + 1)?);
                let value = self.rest.get(pos + 2..pos + 2 + len)?;
                if ty == SDES_CNAME && cname.is_none() {
                    cname = Some(value);
                }
                pos += 2 + len;
            }
            let next = pos.div_ceil(4) * 4;
            self.rest = self.rest.get(next..).unwrap_or(&[]);
            if let Some(c) = cname {
                return Some((ssrc, c));
            }
        }
        None
    }
}

/// A BYE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bye<'a> {
    sources: &'a [u8],
    /// The optional reason (RFC 3550 §6.6).
    pub reason: Option<&'a [u8]>,
}

impl<'a> Bye<'a> {
    /// The sources leaving.
    pub fn sources(&self) -> impl Iterator<Item = Ssrc> + 'a {
        self.sources
            .chunks_exact(4)
            .map(|c| Ssrc(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
    }
}

/// One packet of a compound RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    SenderReport(SenderReport<'a>),
    ReceiverReport(ReceiverReport<'a>),
    Sdes(Sdes<'a>),
    Bye(Bye<'a>),
    /// APP (204), feedback (205/206, RFC 4585) or any other type: passed over.
    Other {
        packet_type: u8,
        body: &'a [u8],
    },
}

/// A compound RTCP packet (RFC 3550 §6.1), iterated packet by packet.
#[derive(Debug, Clone, Copy)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

impl<'a> Compound<'a> {
    /// Check the framing of every packet in `buf` (RFC 3550 §A.2 validity checks that do
    /// not depend on local state: version, lengths summing to the datagram, padding only
    /// on the last packet) and return an iterator over them.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtcpError> {
        if buf.len() < 4 {
            return Err(RtcpError::TooShort);
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let (first, len) = header(rest)?;
            if first & 0x20 != 0 && len != rest.len() {
                return Err(RtcpError::BadPadding);
            }
            rest = rest.get(len..).ok_or(RtcpError::TooShort)?;
        }
        Ok(Compound { rest: buf })
    }
}

/// First octet and total length of the packet at the start of `b`.
fn header(b: &[u8]) -> Result<(u8, usize), RtcpError> {
    let h = b.get(..4).ok_or(RtcpError::TooShort)?;
    let version = h[0] >> 6;
    if version != 2 {
        return Err(RtcpError::BadVersion(version));
    }
    let len = 4 * (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1);
    if len > b.len() {
        return Err(RtcpError::TooShort);
    }
    Ok((h[0], len))
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = parse_one(self.rest);
        match item {
            Ok((p, len)) => {
                self.rest = self.rest.get(len..).unwrap_or(&[]);
                Some(Ok(p))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

fn parse_one(b: &[u8]) -> Result<(RtcpPacket<'_>, usize), RtcpError> {
    let (first, len) = header(b)?;
    let pkt = b.get(..len).ok_or(RtcpError::TooShort)?;
    let mut end = len;
    if first & 0x20 != 0 {
        let pad = usize::from(*pkt.last().ok_or(RtcpError::BadPadding)?);
        if pad == 0 || pad > len - 4 {
            return Err(RtcpError::BadPadding);
        }
        end = len - pad;
    }
    let count = first & 0x1f;
    let body = pkt.get(4..end).ok_or(RtcpError::TooShort)?;
    let word = |i: usize| -> Result<u32, RtcpError> {
        let s = body.get(i..i + 4).ok_or(RtcpError::TooShort)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    };
    let blocks = |at: usize| -> Result<ReportBlocks<'_>, RtcpError> {
        let n = REPORT_BLOCK_LEN * usize::from(count);
        let data = body.get(at..at + n).ok_or(RtcpError::BadCount)?;
        Ok(ReportBlocks { data })
    };
    let p = match pkt.get(1).copied().unwrap_or(0) {
        PT_SR => {
            let ssrc = Ssrc(word(0)?);
            let info = SenderInfo {
                ntp_time: NtpTime((u64::from(word(4)?) << 32) | u64::from(word(8)?)),
                rtp_time: RtpTimestamp(word(12)?),
                packet_count: word(16)?,
                octet_count: word(20)?,
            };
            RtcpPacket::SenderReport(SenderReport {
                ssrc,
                info,
                reports: blocks(4 + SENDER_INFO_LEN)?,
            })
        }
        PT_RR => RtcpPacket::ReceiverReport(ReceiverReport {
            ssrc: Ssrc(word(0)?),
            reports: blocks(4)?,
        }),
        PT_SDES => RtcpPacket::Sdes(Sdes { count, body }),
        PT_BYE => {
            let n = 4 * usize::from(count);
            let sources = body.get(..n).ok_or(RtcpError::BadCount)?;
            let reason = body
                .get(n)
                .and_then(|&l| body.get(n + 1..n + 1 + usize::from(l)));
            RtcpPacket::Bye(Bye { sources, reason })
        }
        packet_type => RtcpPacket::Other { packet_type, body },
    };
    Ok((p, len))
}

/// RFC 5761 §4: on a port shared by RTP and RTCP, a second octet of 192..=223 (RTCP packet
/// types 192–223, i.e. RTP payload types 64–95 with the marker bit set) is RTCP.
pub fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram.get(1), Some(192..=223))
}

/// Write a common header for a packet of `len` octets into `out` at `at`.
fn put_header(out: &mut [u8], count: usize, pt: u8, len: usize) {
    out[0] = 0x80 | (count as u8);
    out[1] = pt;
    out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
}

fn check_blocks(reports: &[ReportBlock]) -> Result<(), RtcpError> {
    if reports.len() > 31 {
        return Err(RtcpError::FieldOutOfRange("more than 31 report blocks"));
    }
    Ok(())
}

/// Write an SR (RFC 3550 §6.4.1) at the start of `out`; returns the octets written.
pub fn write_sender_report(
    out: &mut [u8],
    ssrc: Ssrc,
    info: &SenderInfo,
    reports: &[ReportBlock],
) -> Result<usize, RtcpError> {
    check_blocks(reports)?;
    let len = 8 + SENDER_INFO_LEN + REPORT_BLOCK_LEN * reports.len();
    let out = out.get_mut(..len).ok_or(RtcpError::BufferTooSmall)?;
    put_header(out, reports.len(), PT_SR, len);
    out[4..8].copy_from_slice(&ssrc.0.to_be_bytes());
    out[8..16].copy_from_slice(&info.ntp_time.0.to_be_bytes());
    out[16..20].copy_from_slice(&info.rtp_time.0.to_be_bytes());
    out[20..24].copy_from_slice(&info.packet_count.to_be_bytes());
    out[24..28].copy_from_slice(&info.octet_count.to_be_bytes());
    for (chunk, rb) in out[28..].chunks_exact_mut(REPORT_BLOCK_LEN).zip(reports) {
        if let Ok(c) = <&mut [u8; REPORT_BLOCK_LEN]>::try_from(chunk) {
            rb.write(c);
        }
    }
    Ok(len)
}

/// Write an RR (RFC 3550 §6.4.2) at the start of `out`; returns the octets written.
pub fn write_receiver_report(
    out: &mut [u8],
    ssrc: Ssrc,
    reports: &[ReportBlock],
) -> Result<usize, RtcpError> {
    check_blocks(reports)?;
    let len = 8 + REPORT_BLOCK_LEN * reports.len();
    let out = out.get_mut(..len).ok_or(RtcpError::BufferTooSmall)?;
    put_header(out, reports.len(), PT_RR, len);
    out[4..8].copy_from_slice(&ssrc.0.to_be_bytes());
    for (chunk, rb) in out[8..].chunks_exact_mut(REPORT_BLOCK_LEN).zip(reports) {
        if let Ok(c) = <&mut [u8; REPORT_BLOCK_LEN]>::try_from(chunk) {
            rb.write(c);
        }
    }
    Ok(len)
}

/// Write an SDES with one chunk carrying the CNAME (RFC 3550 §6.5.1).
pub fn write_sdes_cname(out: &mut [u8], ssrc: Ssrc, cname: &[u8]) -> Result<usize, RtcpError> {
    if cname.len() > 255 {
        return Err(RtcpError::FieldOutOfRange("CNAME over 255 octets"));
    }
    // header, ssrc, type+len+value, then at least one null octet, padded to 32 bits.
    let items = 2 + cname.len() + 1;
    let len = 8 + items.div_ceil(4) * 4;
    let out = out.get_mut(..len).ok_or(RtcpError::BufferTooSmall)?;
    put_header(out, 1, PT_SDES, len);
    out[4..8].copy_from_slice(&ssrc.0.to_be_bytes());
    out[8] = SDES_CNAME;
    out[9] = cname.len() as u8;
    out[10..10 + cname.len()].copy_from_slice(cname);
    out[10 + cname.len()..].fill(0);
    Ok(len)
}

/// Write a BYE for `sources` (RFC 3550 §6.6), without a reason.
pub fn write_bye(out: &mut [u8], sources: &[Ssrc]) -> Result<usize, RtcpError> {
    if sources.len() > 31 {
        return Err(RtcpError::FieldOutOfRange("more than 31 sources"));
    }
    let len = 4 + 4 * sources.len();
    let out = out.get_mut(..len).ok_or(RtcpError::BufferTooSmall)?;
    put_header(out, sources.len(), PT_BYE, len);
    for (chunk, s) in out[4..].chunks_exact_mut(4).zip(sources) {
        chunk.copy_from_slice(&s.0.to_be_bytes());
    }
    Ok(len)
}

/// When to send the next RTCP report (RFC 3550 §6.3, simplified for a two-party call).
///
/// Each interval is the mean interval times a uniform factor in [0.5, 1.5] (§6.3.1) so
/// that reports from many calls started together spread out; the first interval is half
/// the mean (§6.2 "initial" allowance). The driver asks [`next_due`](Self::next_due),
/// arms a timer, and calls [`on_sent`](Self::on_sent) after sending.
#[derive(Debug, Clone)]
pub struct RtcpScheduler {
    mean: Duration,
    next: Instant,
    rng: StdRng,
}

impl RtcpScheduler {
    /// A scheduler with mean `interval`, first report due around `now + interval / 2`.
    pub fn new(now: Instant, interval: Duration) -> Self {
        Self::with_rng(now, interval, StdRng::from_entropy())
    }

    /// Like [`new`](Self::new) with a fixed seed (for reproducible tests).
    pub fn with_seed(now: Instant, interval: Duration, seed: u64) -> Self {
        Self::with_rng(now, interval, StdRng::seed_from_u64(seed))
    }

    fn with_rng(now: Instant, interval: Duration, rng: StdRng) -> Self {
        let mut s = RtcpScheduler {
            mean: interval,
            next: now,
            rng,
        };
        s.next = now + s.randomised(interval / 2);
        s
    }

    fn randomised(&mut self, d: Duration) -> Duration {
        d.mul_f64(self.rng.gen_range(0.5..=1.5))
    }

    /// When the next report is due.
    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// Whether a report is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// A report was sent at `now`: schedule the next.
    pub fn on_sent(&mut self, now: Instant) {
        let d = self.randomised(self.mean);
        self.next = now + d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32, lost: i32) -> ReportBlock {
        ReportBlock {
            ssrc: Ssrc(ssrc),
            fraction_lost: 12,
            cumulative_lost: lost,
            highest_seq: 70000,
            jitter: 33,
            last_sr: 0xaabb_ccdd,
            delay_since_last_sr: 65536,
        }
    }

    #[test]
    fn compound_sr_sdes_bye_round_trips() {
        let mut buf = [0u8; 256];
        let info = SenderInfo {
            ntp_time: NtpTime(0x0102_0304_0506_0708),
            rtp_time: RtpTimestamp(160_000),
            packet_count: 1000,
            octet_count: 160_000,
        };
        let mut n = write_sender_report(&mut buf, Ssrc(42), &info, &[block(7, -3), block(8, 1000)])
            .unwrap();
        n += write_sdes_cname(&mut buf[n..], Ssrc(42), b"dialin@example").unwrap();
        n += write_bye(&mut buf[n..], &[Ssrc(42)]).unwrap();
        let packets: Vec<_> = Compound::parse(&buf[..n])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(packets.len(), 3);
        match packets[0] {
            RtcpPacket::SenderReport(sr) => {
                assert_eq!(sr.ssrc, Ssrc(42));
                assert_eq!(sr.info, info);
                let blocks: Vec<_> = sr.reports.iter().collect();
                assert_eq!(blocks, vec![block(7, -3), block(8, 1000)]);
            }
            other => panic!("expected SR, got {other:?}"),
        }
        match packets[1] {
            RtcpPacket::Sdes(s) => {
                assert_eq!(
                    s.cnames().collect::<Vec<_>>(),
                    vec![(Ssrc(42), &b"dialin@example"[..])]
                )
            }
            other => panic!("expected SDES, got {other:?}"),
        }
        match packets[2] {
            RtcpPacket::Bye(b) => assert_eq!(b.sources().collect::<Vec<_>>(), vec![Ssrc(42)]),
            other => panic!("expected BYE, got {other:?}"),
        }
    }

    #[test]
    fn receiver_report_round_trips() {
        let mut buf = [0u8; 64];
        let n = write_receiver_report(&mut buf, Ssrc(1), &[block(2, 5)]).unwrap();
        assert_eq!(n, 32);
        let mut c = Compound::parse(&buf[..n]).unwrap();
        match c.next() {
            Some(Ok(RtcpPacket::ReceiverReport(rr))) => {
                assert_eq!(rr.ssrc, Ssrc(1));
                assert_eq!(rr.reports.iter().next(), Some(block(2, 5)));
            }
            other => panic!("expected RR, got {other:?}"),
        }
        assert!(c.next().is_none());
    }

    #[test]
    fn app_and_unknown_packets_are_skipped_over() {
        let mut buf = [0u8; 128];
        let mut n = write_receiver_report(&mut buf, Ssrc(1), &[]).unwrap();
        // APP packet: header + ssrc + name + 4 octets data.
        let app = [
            0x80, 204, 0, 3, 0, 0, 0, 1, b'T', b'E', b'S', b'T', 1, 2, 3, 4,
        ];
        buf[n..n + app.len()].copy_from_slice(&app);
        n += app.len();
        n += write_bye(&mut buf[n..], &[Ssrc(1)]).unwrap();
        let kinds: Vec<_> = Compound::parse(&buf[..n])
            .unwrap()
            .map(|p| match p.unwrap() {
                RtcpPacket::ReceiverReport(_) => 201,
                RtcpPacket::Other { packet_type, .. } => packet_type,
                RtcpPacket::Bye(_) => 203,
                _ => 0,
            })
            .collect();
        assert_eq!(kinds, vec![201, 204, 203]);
    }

    #[test]
    fn rejects_bad_version_length_and_count() {
        let mut buf = [0u8; 64];
        let n = write_receiver_report(&mut buf, Ssrc(1), &[block(2, 5)]).unwrap();
        let mut v = buf;
        v[0] = 0x40 | (v[0] & 0x3f);
        assert_eq!(
            Compound::parse(&v[..n]).err(),
            Some(RtcpError::BadVersion(1))
        );
        assert_eq!(
            Compound::parse(&buf[..n - 4]).err(),
            Some(RtcpError::TooShort)
        );
        let mut c = buf;
        c[0] = 0x80 | 2; // two blocks announced, one present
        let first = Compound::parse(&c[..n]).unwrap().next();
        assert_eq!(first, Some(Err(RtcpError::BadCount)));
    }

    #[test]
    fn padding_is_only_allowed_on_the_last_packet() {
        let mut buf = [0u8; 64];
        let n = write_receiver_report(&mut buf, Ssrc(1), &[]).unwrap();
        let m = write_bye(&mut buf[n..], &[Ssrc(1)]).unwrap();
        buf[0] |= 0x20;
        assert_eq!(
            Compound::parse(&buf[..n + m]).err(),
            Some(RtcpError::BadPadding)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x9e37_79b9u32;
        for len in 0..120usize {
            for _ in 0..100 {
                let mut buf: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        state as u8
                    })
                    .collect();
                if let Some(b) = buf.first_mut() {
                    *b = 0x80 | (*b & 0x3f);
                }
                if let Ok(c) = Compound::parse(&buf) {
                    for p in c {
                        if let Ok(RtcpPacket::Sdes(s)) = p {
                            let _ = s.cnames().count();
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mux_demux_sorts_rtcp_from_rtp() {
        let mut buf = [0u8; 64];
        let n = write_receiver_report(&mut buf, Ssrc(1), &[]).unwrap();
        assert!(is_rtcp(&buf[..n]));
        // RTP PCMU with marker, dynamic PT 96 with marker, and PT 127 (0xff): all RTP.
        assert!(!is_rtcp(&[0x80, 0x80, 0, 0]));
        assert!(!is_rtcp(&[0x80, 0x80 | 96, 0, 0]));
        assert!(!is_rtcp(&[0x80, 0xff, 0, 0]));
        assert!(is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80]));
    }

    #[test]
    fn ntp_time_from_unix_epoch_and_middle_bits() {
        let t = UNIX_EPOCH + Duration::from_millis(1500);
        let ntp = NtpTime::from_system_time(t);
        assert_eq!(ntp.0 >> 32, NTP_UNIX_OFFSET_S + 1);
        assert_eq!(ntp.0 & 0xffff_ffff, 1 << 31);
        assert_eq!(
            ntp.middle_32(),
            (((NTP_UNIX_OFFSET_S + 1) as u32) << 16) | 0x8000
        );
    }

    #[test]
    fn scheduler_spreads_reports_between_half_and_one_and_a_half_intervals() {
        let t0 = Instant::now();
        let mean = DEFAULT_REPORT_INTERVAL;
        let mut s = RtcpScheduler::with_seed(t0, mean, 7);
        let first = s.next_due() - t0;
        assert!(
            first >= mean / 4 && first <= mean * 3 / 4,
            "first {first:?}"
        );
        assert!(!s.is_due(t0));
        let mut now = s.next_due();
        let mut gaps = Vec::new();
        for _ in 0..200 {
            assert!(s.is_due(now));
            s.on_sent(now);
            let gap = s.next_due() - now;
            assert!(gap >= mean / 2 && gap <= mean * 3 / 2, "gap {gap:?}");
            gaps.push(gap);
            now = s.next_due();
        }
        let distinct = gaps.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(distinct > 100, "intervals are randomised");
        let avg = gaps.iter().sum::<Duration>() / gaps.len() as u32;
        assert!(avg > mean * 8 / 10 && avg < mean * 12 / 10, "mean {avg:?}");
    }
}
