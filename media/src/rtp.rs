//! RTP packets (RFC 3550 §5): the first step of the media path on the SIP side.
//!
//! `recv → rtp::Packet::parse → jitter → decode`: [`Packet`] is a zero-copy view over the
//! datagram the driver received; nothing is copied or allocated, and every field is read
//! through bounds-checked accessors so a malformed packet is a typed [`RtpError`], never a
//! panic. [`Header::write`] goes the other way, into a caller-provided buffer.
//! [`SeqUnwrapper`] and [`TimestampUnwrapper`] extend the 16-bit sequence number and the
//! 32-bit timestamp to `u64` (RFC 3550 §A.1), tolerating wrap-around and reordering.

use thiserror::Error;

/// RFC 3550 §5.1: the fixed header is 12 octets.
pub const FIXED_HEADER_LEN: usize = 12;
/// RFC 3550 §5.1: the version field is 2.
const RTP_VERSION: u8 = 2;

/// Why a buffer is not a valid RTP packet, or a packet cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtpError {
    /// Fewer octets than the header (fixed part, CSRC list or extension) announces.
    #[error("RTP packet too short: need {needed} octets, have {have}")]
    TooShort { needed: usize, have: usize },
    /// The version field is not 2.
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// The padding count is zero or reaches into the header (RFC 3550 §5.1, P bit).
    #[error("RTP padding count {0} is invalid for this packet")]
    BadPadding(u8),
    /// The payload type is above 127.
    #[error("payload type {0} is out of range 0..=127")]
    BadPayloadType(u8),
    /// The caller's buffer cannot hold the packet being written.
    #[error("output buffer too small: need {needed} octets, have {have}")]
    BufferTooSmall { needed: usize, have: usize },
    /// More than 15 CSRCs, or an extension longer than 65535 words, was asked for.
    #[error("header field out of range: {0}")]
    FieldOutOfRange(&'static str),
}

/// RTP payload type, 0..=127 (RFC 3550 §5.1; numbers from RFC 3551 or SDP `a=rtpmap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadType(u8);

impl PayloadType {
    /// RFC 3551 table 4: PCMU.
    pub const PCMU: PayloadType = PayloadType(0);
    /// RFC 3551 table 4: PCMA.
    pub const PCMA: PayloadType = PayloadType(8);
    /// RFC 3551 table 4: G722.
    pub const G722: PayloadType = PayloadType(9);

    /// A payload type, or `BadPayloadType` above 127.
    pub const fn new(pt: u8) -> Result<Self, RtpError> {
        if pt > 127 {
            Err(RtpError::BadPayloadType(pt))
        } else {
            Ok(PayloadType(pt))
        }
    }

    /// The number, 0..=127.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl std::fmt::Display for PayloadType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The 16-bit RTP sequence number as carried on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SeqNo(pub u16);

impl SeqNo {
    /// The next sequence number, wrapping at 2^16.
    pub const fn next(self) -> SeqNo {
        SeqNo(self.0.wrapping_add(1))
    }
}

/// The 32-bit RTP timestamp as carried on the wire, in units of the payload's clock rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RtpTimestamp(pub u32);

impl RtpTimestamp {
    /// This timestamp advanced by `ticks`, wrapping at 2^32.
    pub const fn add(self, ticks: u32) -> RtpTimestamp {
        RtpTimestamp(self.0.wrapping_add(ticks))
    }
}

/// Synchronisation source identifier (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ssrc(pub u32);

/// A header extension (RFC 3550 §5.3.1): the 16-bit profile word and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    /// "defined by profile" word (0xBEDE for RFC 8285 one-byte headers).
    pub profile: u16,
    /// The extension data, a multiple of 4 octets.
    pub data: &'a [u8],
}

/// A parsed RTP packet: a borrowed view, every accessor reads from the original bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    buf: &'a [u8],
    csrc_count: u8,
    /// Offset of the payload (end of fixed header, CSRCs and extension).
    payload_start: usize,
    /// Offset one past the payload (start of padding).
    payload_end: usize,
    /// Offset and length of the extension data, when the X bit is set.
    ext: Option<(u16, usize, usize)>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Octets taken by the fixed header, CSRC list and extension at the start of `buf`,
/// checked as [`Packet::parse`] checks them but without the padding check: under SRTP
/// the padding count is encrypted with the payload (RFC 3711 §3.1), so it can only be
/// checked once the packet is decrypted.
pub(crate) fn header_len(buf: &[u8]) -> Result<usize, RtpError> {
    parse_header(buf).map(|(_, len, _)| len)
}

/// CSRC count, header length, and extension (profile, data offset, data length).
type HeaderParts = (u8, usize, Option<(u16, usize, usize)>);

fn parse_header(buf: &[u8]) -> Result<HeaderParts, RtpError> {
    let have = buf.len();
    let too_short = |needed| RtpError::TooShort { needed, have };
    let first = *buf.first().ok_or(too_short(FIXED_HEADER_LEN))?;
    let version = first >> 6;
    if version != RTP_VERSION {
        return Err(RtpError::BadVersion(version));
    }
    if have < FIXED_HEADER_LEN {
        return Err(too_short(FIXED_HEADER_LEN));
    }
    let csrc_count = first & 0x0f;
    let mut pos = FIXED_HEADER_LEN + 4 * usize::from(csrc_count);
    if have < pos {
        return Err(too_short(pos));
    }
    let ext = if first & 0x10 != 0 {
        let profile = be16(buf, pos).ok_or(too_short(pos + 4))?;
        let words = be16(buf, pos + 2).ok_or(too_short(pos + 4))?;
        let start = pos + 4;
        let len = 4 * usize::from(words);
        pos = start + len;
        if have < pos {
            return Err(too_short(pos));
        }
        Some((profile, start, len))
    } else {
        None
    };
    Ok((csrc_count, pos, ext))
}

impl<'a> Packet<'a> {
    /// Parse `buf` as one RTP packet (RFC 3550 §5.1, §5.3.1).
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let (csrc_count, pos, ext) = parse_header(buf)?;
        let have = buf.len();
        let first = buf.first().copied().unwrap_or(0);
        let mut payload_end = have;
        if first & 0x20 != 0 {
            // RFC 3550 §5.1: the last octet counts the padding octets, itself included.
            let count = buf.last().copied().unwrap_or(0);
            if count == 0 || usize::from(count) > have - pos {
                return Err(RtpError::BadPadding(count));
            }
            payload_end = have - usize::from(count);
        }
        Ok(Packet {
            buf,
            csrc_count,
            payload_start: pos,
            payload_end,
            ext,
        })
    }

    fn byte(&self, at: usize) -> u8 {
        // Offsets below FIXED_HEADER_LEN were checked by `parse`.
        self.buf.get(at).copied().unwrap_or(0)
    }

    /// The whole packet as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The P bit.
    pub fn has_padding(&self) -> bool {
        self.byte(0) & 0x20 != 0
    }

    /// The M bit (start of a talkspurt for audio, RFC 3551 §4.1).
    pub fn marker(&self) -> bool {
        self.byte(1) & 0x80 != 0
    }

    /// The payload type.
    pub fn payload_type(&self) -> PayloadType {
        PayloadType(self.byte(1) & 0x7f)
    }

    /// The sequence number.
    pub fn seq(&self) -> SeqNo {
        SeqNo(be16(self.buf, 2).unwrap_or(0))
    }

    /// The timestamp.
    pub fn timestamp(&self) -> RtpTimestamp {
        RtpTimestamp(be32(self.buf, 4).unwrap_or(0))
    }

    /// The SSRC.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(self.buf, 8).unwrap_or(0))
    }

    /// The contributing sources (0 to 15).
    pub fn csrcs(&self) -> impl Iterator<Item = Ssrc> + 'a {
        let buf = self.buf;
        (0..usize::from(self.csrc_count))
            .filter_map(move |i| be32(buf, FIXED_HEADER_LEN + 4 * i).map(Ssrc))
    }

    /// Number of CSRCs.
    pub fn csrc_count(&self) -> usize {
        usize::from(self.csrc_count)
    }

    /// The header extension, when the X bit is set.
    pub fn extension(&self) -> Option<Extension<'a>> {
        let (profile, start, len) = self.ext?;
        let data = self.buf.get(start..start + len)?;
        Some(Extension { profile, data })
    }

    /// Length of the header: fixed part, CSRCs and extension.
    pub fn header_len(&self) -> usize {
        self.payload_start
    }

    /// The payload, without header and padding.
    pub fn payload(&self) -> &'a [u8] {
        self.buf
            .get(self.payload_start..self.payload_end)
            .unwrap_or(&[])
    }

    /// Number of padding octets at the end (0 without the P bit).
    pub fn padding_len(&self) -> usize {
        self.buf.len() - self.payload_end
    }
}

/// Fields of an RTP header to write. Version is always 2; no padding is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub marker: bool,
    pub payload_type: PayloadType,
    pub seq: SeqNo,
    pub timestamp: RtpTimestamp,
    pub ssrc: Ssrc,
    /// At most 15.
    pub csrcs: &'a [Ssrc],
    /// Written as-is; `data` must be a multiple of 4 octets.
    pub extension: Option<Extension<'a>>,
}

impl<'a> Header<'a> {
    /// A header with no CSRCs and no extension.
    pub const fn new(
        payload_type: PayloadType,
        seq: SeqNo,
        timestamp: RtpTimestamp,
        ssrc: Ssrc,
    ) -> Self {
        Header {
            marker: false,
            payload_type,
            seq,
            timestamp,
            ssrc,
            csrcs: &[],
            extension: None,
        }
    }

    /// Octets this header takes on the wire.
    pub fn wire_len(&self) -> usize {
        FIXED_HEADER_LEN + 4 * self.csrcs.len() + self.extension.map_or(0, |e| 4 + e.data.len())
    }

    /// Write the header into the start of `out`; returns the octets written.
    pub fn write_header(&self, out: &mut [u8]) -> Result<usize, RtpError> {
        if self.csrcs.len() > 15 {
            return Err(RtpError::FieldOutOfRange("more than 15 CSRCs"));
        }
        if let Some(ext) = self.extension {
            if ext.data.len() % 4 != 0 || ext.data.len() / 4 > usize::from(u16::MAX) {
                return Err(RtpError::FieldOutOfRange("extension length"));
            }
        }
        let len = self.wire_len();
        let have = out.len();
        let out = out
            .get_mut(..len)
            .ok_or(RtpError::BufferTooSmall { needed: len, have })?;
        let x = if self.extension.is_some() { 0x10 } else { 0 };
        // csrcs.len() <= 15 was checked above.
        out[0] = (RTP_VERSION << 6) | x | self.csrcs.len() as u8;
        out[1] = (u8::from(self.marker) << 7) | self.payload_type.0;
        out[2..4].copy_from_slice(&self.seq.0.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.0.to_be_bytes());
        let mut pos = FIXED_HEADER_LEN;
        for c in self.csrcs {
            out[pos..pos + 4].copy_from_slice(&c.0.to_be_bytes());
            pos += 4;
        }
        if let Some(ext) = self.extension {
            out[pos..pos + 2].copy_from_slice(&ext.profile.to_be_bytes());
            // Length fits in u16: checked above.
            out[pos + 2..pos + 4].copy_from_slice(&((ext.data.len() / 4) as u16).to_be_bytes());
            pos += 4;
            out[pos..pos + ext.data.len()].copy_from_slice(ext.data);
        }
        Ok(len)
    }

    /// Write header and `payload` into `out`; returns the packet length.
    pub fn write(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, RtpError> {
        let needed = self.wire_len() + payload.len();
        if out.len() < needed {
            return Err(RtpError::BufferTooSmall {
                needed,
                have: out.len(),
            });
        }
        let h = self.write_header(out)?;
        out[h..needed].copy_from_slice(payload);
        Ok(needed)
    }
}

/// Extends 16-bit sequence numbers to `u64` (RFC 3550 §A.1 "extended highest sequence
/// number"): each number is placed in the 2^16 cycle that puts it nearest to the highest
/// seen so far, so late (reordered) packets before a wrap land in the previous cycle.
#[derive(Debug, Clone, Default)]
pub struct SeqUnwrapper {
    highest: Option<u64>,
}

impl SeqUnwrapper {
    /// A fresh unwrapper; the first number maps to cycle 1 so that reordering just
    /// before it does not underflow.
    pub const fn new() -> Self {
        SeqUnwrapper { highest: None }
    }

    /// The extended value of `seq`; advances the highest when `seq` is newer.
    pub fn unwrap(&mut self, seq: SeqNo) -> u64 {
        let ext = match self.highest {
            None => (1 << 16) | u64::from(seq.0),
            Some(h) => nearest(h, u64::from(seq.0), 16),
        };
        if !matches!(self.highest, Some(h) if ext <= h) {
            self.highest = Some(ext);
        }
        ext
    }

    /// The highest extended value returned so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

/// Extends 32-bit RTP timestamps to `u64`, like [`SeqUnwrapper`] with 2^32 cycles.
#[derive(Debug, Clone, Default)]
pub struct TimestampUnwrapper {
    highest: Option<u64>,
}

impl TimestampUnwrapper {
    /// A fresh unwrapper; the first timestamp maps to cycle 1.
    pub const fn new() -> Self {
        TimestampUnwrapper { highest: None }
    }

    /// The extended value of `ts`; advances the highest when `ts` is newer.
    pub fn unwrap(&mut self, ts: RtpTimestamp) -> u64 {
        let ext = match self.highest {
            None => (1 << 32) | u64::from(ts.0),
            Some(h) => nearest(h, u64::from(ts.0), 32),
        };
        if !matches!(self.highest, Some(h) if ext <= h) {
            self.highest = Some(ext);
        }
        ext
    }
}

/// The value `v + k * 2^bits` nearest to `reference`.
fn nearest(reference: u64, v: u64, bits: u32) -> u64 {
    let cycle = 1u64 << bits;
    let half = cycle / 2;
    let base = reference & !(cycle - 1);
    let candidate = base | v;
    let low = reference & (cycle - 1);
    if v > low && v - low > half && base >= cycle {
        candidate - cycle
    } else if low > v && low - v > half {
        candidate + cycle
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcmu_packet() -> Vec<u8> {
        let mut buf = vec![0u8; 172];
        let h = Header {
            marker: true,
            ..Header::new(
                PayloadType::PCMU,
                SeqNo(4660),
                RtpTimestamp(0xdead_beef),
                Ssrc(0x1234_5678),
            )
        };
        let n = h.write(&[0xff; 160], &mut buf).unwrap();
        assert_eq!(n, 172);
        buf
    }

    #[test]
    fn parses_fields_of_a_written_packet() {
        let buf = pcmu_packet();
        let p = Packet::parse(&buf).unwrap();
        assert!(p.marker());
        assert_eq!(p.payload_type(), PayloadType::PCMU);
        assert_eq!(p.seq(), SeqNo(4660));
        assert_eq!(p.timestamp(), RtpTimestamp(0xdead_beef));
        assert_eq!(p.ssrc(), Ssrc(0x1234_5678));
        assert_eq!(p.payload().len(), 160);
        assert_eq!(p.header_len(), 12);
        assert!(p.extension().is_none());
        assert_eq!(p.csrcs().count(), 0);
    }

    #[test]
    fn parses_csrcs_extension_and_padding() {
        // V=2 P=1 X=1 CC=2, M=0 PT=96
        let mut buf = vec![0xb2, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        buf.extend_from_slice(&[0, 0, 0, 10, 0, 0, 0, 11]);
        buf.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]);
        buf.extend_from_slice(&[9, 9, 9]);
        buf.extend_from_slice(&[0, 0, 3]);
        let p = Packet::parse(&buf).unwrap();
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![Ssrc(10), Ssrc(11)]);
        assert_eq!(
            p.extension(),
            Some(Extension {
                profile: 0xbede,
                data: &[1, 2, 3, 4]
            })
        );
        assert_eq!(p.payload(), &[9, 9, 9]);
        assert_eq!(p.padding_len(), 3);
        assert!(p.has_padding());
    }

    #[test]
    fn writer_round_trips_csrcs_and_extension() {
        let csrcs = [Ssrc(1), Ssrc(2)];
        let h = Header {
            csrcs: &csrcs,
            extension: Some(Extension {
                profile: 0x1000,
                data: &[5, 6, 7, 8],
            }),
            ..Header::new(
                PayloadType::new(111).unwrap(),
                SeqNo(65535),
                RtpTimestamp(7),
                Ssrc(9),
            )
        };
        let mut out = [0u8; 64];
        let n = h.write(b"abc", &mut out).unwrap();
        let p = Packet::parse(&out[..n]).unwrap();
        assert_eq!(p.csrcs().collect::<Vec<_>>(), csrcs);
        assert_eq!(p.extension().unwrap().data, &[5, 6, 7, 8]);
        assert_eq!(p.payload(), b"abc");
        assert_eq!(p.payload_type().get(), 111);
    }

    #[test]
    fn writer_refuses_a_small_buffer() {
        let h = Header::new(PayloadType::PCMA, SeqNo(0), RtpTimestamp(0), Ssrc(0));
        let mut out = [0u8; 20];
        assert_eq!(
            h.write(&[0; 10], &mut out),
            Err(RtpError::BufferTooSmall {
                needed: 22,
                have: 20
            })
        );
    }

    #[test]
    fn rejects_wrong_version() {
        let mut buf = pcmu_packet();
        buf[0] = (1 << 6) | (buf[0] & 0x3f);
        assert_eq!(Packet::parse(&buf), Err(RtpError::BadVersion(1)));
    }

    #[test]
    fn rejects_truncated_headers() {
        let buf = pcmu_packet();
        assert!(matches!(
            Packet::parse(&buf[..11]),
            Err(RtpError::TooShort { .. })
        ));
        assert!(matches!(Packet::parse(&[]), Err(RtpError::TooShort { .. })));
        let mut cc = buf[..16].to_vec();
        cc[0] |= 0x02; // two CSRCs announced, one present
        assert!(matches!(
            Packet::parse(&cc),
            Err(RtpError::TooShort { needed: 20, .. })
        ));
        let mut ext = buf[..20].to_vec();
        ext[0] |= 0x10;
        ext[14] = 0;
        ext[15] = 9; // 9 words of extension announced
        assert!(matches!(
            Packet::parse(&ext),
            Err(RtpError::TooShort { .. })
        ));
    }

    #[test]
    fn rejects_padding_that_is_zero_or_eats_the_header() {
        let mut buf = pcmu_packet();
        buf[0] |= 0x20;
        *buf.last_mut().unwrap() = 0;
        assert_eq!(Packet::parse(&buf), Err(RtpError::BadPadding(0)));
        *buf.last_mut().unwrap() = 161;
        assert_eq!(Packet::parse(&buf), Err(RtpError::BadPadding(161)));
        *buf.last_mut().unwrap() = 160;
        assert_eq!(Packet::parse(&buf).unwrap().payload().len(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x1234_5678u32;
        for len in 0..200usize {
            for _ in 0..50 {
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        state as u8
                    })
                    .collect();
                if let Ok(p) = Packet::parse(&buf) {
                    assert!(p.header_len() + p.payload().len() + p.padding_len() == buf.len());
                    let _ = p.extension();
                    let _ = p.csrcs().count();
                }
            }
        }
    }

    #[test]
    fn payload_type_above_127_is_rejected() {
        assert_eq!(PayloadType::new(128), Err(RtpError::BadPayloadType(128)));
        assert_eq!(PayloadType::new(127).map(PayloadType::get), Ok(127));
    }

    #[test]
    fn sequence_unwrapping_crosses_the_wrap() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(SeqNo(65534));
        let b = u.unwrap(SeqNo(65535));
        let c = u.unwrap(SeqNo(0));
        let d = u.unwrap(SeqNo(1));
        assert_eq!([b - a, c - b, d - c], [1, 1, 1]);
        assert_eq!(u.highest(), Some(d));
    }

    #[test]
    fn sequence_unwrapping_places_late_packets_before_the_wrap() {
        let mut u = SeqUnwrapper::new();
        let first = u.unwrap(SeqNo(65530));
        let after_wrap = u.unwrap(SeqNo(3));
        let late = u.unwrap(SeqNo(65533));
        assert_eq!(after_wrap - first, 9);
        assert_eq!(late - first, 3);
        assert_eq!(u.highest(), Some(after_wrap));
    }

    #[test]
    fn sequence_unwrapping_handles_reordering_at_start() {
        let mut u = SeqUnwrapper::new();
        let a = u.unwrap(SeqNo(1));
        let b = u.unwrap(SeqNo(65535)); // two before `a`, from before the wrap
        assert_eq!(a - b, 2);
    }

    #[test]
    fn timestamp_unwrapping_crosses_the_wrap() {
        let mut u = TimestampUnwrapper::new();
        let a = u.unwrap(RtpTimestamp(u32::MAX - 79));
        let b = u.unwrap(RtpTimestamp(80));
        let late = u.unwrap(RtpTimestamp(u32::MAX - 159));
        assert_eq!(b - a, 160);
        assert_eq!(a - late, 80);
    }
}
