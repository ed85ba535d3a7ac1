//! RFC 4733 `telephone-event` payloads: parse and receive (one digit per key press) and
//! generate the packet train for an outgoing digit.
//!
//! Sits right after RTP demultiplexing: packets whose payload type is the negotiated
//! `telephone-event` type go to [`EventReceiver::receive`] instead of the jitter buffer,
//! and the digits it returns go to [`super::dedup`]. Follows RFC 4733 §2.3 (payload
//! format), §2.5.1 (sender: start, updates, three end packets, long-event segments) and
//! §2.5.2 (receiver).
//!
//! **When a digit is emitted.** The receiver reports a digit on the *first* packet it sees
//! of an event, not on its end packet, as most gateways do: a caller barging into a prompt
//! is heard at once, and an event whose end packets are all lost still counts. Every
//! later packet of the same event (updates, the three end packets, duplicates, packets
//! arriving late) is absorbed, so a press is reported exactly once.
//!
//! **How an event is identified.** By its RTP timestamp (RFC 4733 §2.5.1.1: all packets
//! of one event carry the timestamp of its start), never by the marker bit: carriers
//! routinely drop or never set it, and the first packet may itself be lost, so the first
//! one seen can be an update or even an end packet.

use std::time::{Duration, Instant};

use thiserror::Error;

use super::Digit;

/// A payload that cannot be used as a DTMF event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EventError {
    /// RFC 4733 §2.3: the event payload is four octets.
    #[error("telephone-event payload is {len} bytes, needs at least 4 (RFC 4733 §2.3)")]
    TooShort { len: usize },
    /// A valid RFC 4733 event that is not a DTMF key (flash, fax tones, ...).
    #[error("telephone-event code {0} is not a DTMF digit")]
    NotDtmf(u8),
    /// The caller's output buffer cannot hold a four-octet payload.
    #[error("output buffer of {len} bytes cannot hold a 4-byte telephone-event payload")]
    BufferTooSmall { len: usize },
}

/// One RFC 4733 §2.3 payload: event code, end bit, volume and duration so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (RFC 4733 §3.2: 0-15 are DTMF).
    pub event: u8,
    /// E bit: this packet reports the end of the event.
    pub end: bool,
    /// Power level of the tone, as −dBm0 (0-63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units, counted from the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Payload length (RFC 4733 §2.3).
    pub const LEN: usize = 4;

    /// Parses the first event of a payload. Extra octets (RFC 4733 §2.5.1.5 allows
    /// padding and several events back to back) are ignored; the R bit is ignored as
    /// §2.3 requires of receivers.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, EventError> {
        match payload {
            [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3f,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(EventError::TooShort { len: payload.len() }),
        }
    }

    /// The DTMF key of this event, if it is one.
    pub fn digit(&self) -> Result<Digit, EventError> {
        Digit::from_event_code(self.event).map_err(|_| EventError::NotDtmf(self.event))
    }

    /// Writes the four payload octets into `out`; returns the length written.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, EventError> {
        let len = out.len();
        let dst = out
            .get_mut(..Self::LEN)
            .ok_or(EventError::BufferTooSmall { len })?;
        let [d0, d1] = self.duration.to_be_bytes();
        let flags = (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3f);
        dst.copy_from_slice(&[self.event, flags, d0, d1]);
        Ok(Self::LEN)
    }
}

/// A key press reported by [`EventReceiver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedDigit {
    pub digit: Digit,
    /// RTP timestamp identifying the event.
    pub timestamp: u32,
    /// Tone power as −dBm0, from the first packet seen.
    pub volume: u8,
}

/// An event whose packets stop arriving without an end packet is taken as over after
/// this long. RFC 4733 §2.5.1.2 has the sender refresh a running event every 50 ms, so a
/// second of silence is twenty missed updates.
const EVENT_STALE_AFTER: Duration = Duration::from_secs(1);

/// A packet whose timestamp is at most this far behind the current event is a late packet
/// of an earlier event (reordering), not a new one. Beyond it, the sender's clock is
/// assumed to have been reset.
const LATE_WINDOW: Duration = Duration::from_secs(4);

/// RFC 4733 §2.5.1.3: a segment that reached the 16-bit duration limit is followed by a
/// new segment whose timestamp is advanced by that duration. A running event whose last
/// duration came this close to the limit is treated as one being split.
const SEGMENT_SPLIT_MIN_DURATION: u16 = 0xF000;

/// How many earlier event timestamps are remembered to absorb late packets.
const RECENT_EVENTS: usize = 8;

#[derive(Debug, Clone, Copy)]
struct CurrentEvent {
    timestamp: u32,
    digit: Digit,
    ended: bool,
    max_duration: u16,
    last_seq: u16,
    last_seen: Instant,
}

/// Receive side of RFC 4733 for one RTP stream: turns packets into one digit per press.
#[derive(Debug, Clone)]
pub struct EventReceiver {
    clock_rate: u32,
    current: Option<CurrentEvent>,
    recent: [Option<u32>; RECENT_EVENTS],
    recent_next: usize,
}

impl EventReceiver {
    /// `clock_rate` is the `telephone-event` rate from the SDP (8000 for `/8000`).
    pub fn new(clock_rate: u32) -> EventReceiver {
        EventReceiver {
            clock_rate: clock_rate.max(1),
            current: None,
            recent: [None; RECENT_EVENTS],
            recent_next: 0,
        }
    }

    /// Forgets all events; call when the stream's SSRC changes.
    pub fn reset(&mut self) {
        self.current = None;
        self.recent = [None; RECENT_EVENTS];
    }

    /// Feeds one `telephone-event` packet. Returns the digit when this packet is the
    /// first one seen of a new event, `None` for every other packet of an event.
    pub fn receive(
        &mut self,
        timestamp: u32,
        marker: bool,
        seq: u16,
        payload: &[u8],
        now: Instant,
    ) -> Result<Option<ReceivedDigit>, EventError> {
        let packet = TelephoneEvent::parse(payload)?;
        let digit = packet.digit()?;
        if let Some(cur) = self.current.as_mut() {
            let stale = now.saturating_duration_since(cur.last_seen) > EVENT_STALE_AFTER;
            if cur.timestamp == timestamp {
                // Some senders do not advance their RTP clock while no audio flows, so
                // two presses can share a timestamp. A fresh start after a finished event
                // (newer sequence number, not an end packet, or a marker) is a new press;
                // a late update of the same event has an older sequence number.
                let finished = cur.ended || stale;
                let newer = seq_is_newer(seq, cur.last_seq);
                let restarted = finished && newer && !packet.end && (marker || stale);
                if !restarted {
                    cur.ended |= packet.end;
                    cur.max_duration = cur.max_duration.max(packet.duration);
                    if newer {
                        cur.last_seq = seq;
                        cur.last_seen = now;
                    }
                    return Ok(None);
                }
            } else {
                let behind = cur.timestamp.wrapping_sub(timestamp);
                let late_window = u64::from(self.clock_rate) * LATE_WINDOW.as_secs();
                let is_late = (behind != 0 && u64::from(behind) <= late_window)
                    || self.recent.contains(&Some(timestamp));
                if is_late {
                    return Ok(None);
                }
                let ahead = timestamp.wrapping_sub(cur.timestamp);
                let is_next_segment = !cur.ended
                    && !stale
                    && !marker
                    && cur.digit == digit
                    && cur.max_duration >= SEGMENT_SPLIT_MIN_DURATION
                    && ahead <= u32::from(u16::MAX) + self.clock_rate / 10;
                if is_next_segment {
                    let old = cur.timestamp;
                    cur.timestamp = timestamp;
                    cur.max_duration = packet.duration;
                    cur.ended = packet.end;
                    cur.last_seq = seq;
                    cur.last_seen = now;
                    self.remember(old);
                    return Ok(None);
                }
            }
            let old = cur.timestamp;
            self.remember(old);
        }
        self.current = Some(CurrentEvent {
            timestamp,
            digit,
            ended: packet.end,
            max_duration: packet.duration,
            last_seq: seq,
            last_seen: now,
        });
        Ok(Some(ReceivedDigit {
            digit,
            timestamp,
            volume: packet.volume,
        }))
    }

    fn remember(&mut self, timestamp: u32) {
        if let Some(slot) = self.recent.get_mut(self.recent_next) {
            *slot = Some(timestamp);
        }
        self.recent_next = (self.recent_next + 1) % RECENT_EVENTS;
    }
}

/// RFC 3550 §A.1 style serial comparison of 16-bit sequence numbers.
fn seq_is_newer(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 0x8000
}

/// RFC 4733 §2.5.1.2: a running event is refreshed every 50 ms.
pub const UPDATE_INTERVAL: Duration = Duration::from_millis(50);
/// RFC 4733 §2.5.1.4: the final packet is sent three times.
pub const END_REPEATS: u8 = 3;
/// Spacing of the repeated end packets: one 20 ms packetisation interval, so that a
/// short loss burst cannot take all three.
const END_SPACING: Duration = Duration::from_millis(20);
/// RFC 4733 §2.3.3 volume for generated digits: −10 dBm0, a typical keypad level.
pub const DEFAULT_VOLUME: u8 = 10;

/// One packet of an outgoing event, produced by [`EventSender::next_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutgoingEvent {
    /// RTP marker bit: set on the first packet of the event only.
    pub marker: bool,
    /// RTP timestamp: the event's start, the same on every packet.
    pub timestamp: u32,
    /// When to send it, counted from the event's start.
    pub send_after: Duration,
    /// Bytes written into the caller's buffer.
    pub len: usize,
}

/// Send side of RFC 4733 for one digit: start packet (marker), an update every 50 ms,
/// then three end packets, all with the same RTP timestamp. The caller assigns sequence
/// numbers and sends each packet at `start + send_after`.
#[derive(Debug, Clone)]
pub struct EventSender {
    digit: Digit,
    timestamp: u32,
    volume: u8,
    total: u16,
    interval: u32,
    total_time: Duration,
    next_update: u32,
    ends_sent: u8,
}

impl EventSender {
    /// `duration` is how long the key is held; it is capped at the 16-bit duration field
    /// (8.19 s at 8 kHz), far above any keypad press.
    pub fn new(
        digit: Digit,
        start_timestamp: u32,
        clock_rate: u32,
        duration: Duration,
        volume: u8,
    ) -> EventSender {
        let samples = duration.as_micros() * u128::from(clock_rate) / 1_000_000;
        let total = u16::try_from(samples).unwrap_or(u16::MAX);
        let interval = (u128::from(clock_rate) * UPDATE_INTERVAL.as_micros() / 1_000_000) as u32;
        let total_time =
            Duration::from_micros(u64::from(total) * 1_000_000 / u64::from(clock_rate.max(1)));
        EventSender {
            digit,
            timestamp: start_timestamp,
            volume: volume.min(63),
            total,
            interval: interval.max(1),
            total_time,
            next_update: 0,
            ends_sent: 0,
        }
    }

    /// Writes the next packet's payload into `out`; `None` once the last end packet has
    /// been produced.
    pub fn next_packet(&mut self, out: &mut [u8]) -> Result<Option<OutgoingEvent>, EventError> {
        let elapsed = u64::from(self.next_update) * u64::from(self.interval);
        let (event, send_after, marker) = if elapsed < u64::from(self.total) {
            let k = self.next_update;
            let ev = TelephoneEvent {
                event: self.digit.event_code(),
                end: false,
                volume: self.volume,
                duration: elapsed as u16,
            };
            (ev, UPDATE_INTERVAL * k, k == 0)
        } else if self.ends_sent < END_REPEATS {
            let ev = TelephoneEvent {
                event: self.digit.event_code(),
                end: true,
                volume: self.volume,
                duration: self.total,
            };
            let at = self.total_time + END_SPACING * u32::from(self.ends_sent);
            // An event too short for any update still starts with a marked packet.
            (ev, at, self.next_update == 0 && self.ends_sent == 0)
        } else {
            return Ok(None);
        };
        let len = event.write(out)?;
        if event.end {
            self.ends_sent += 1;
        } else {
            self.next_update += 1;
        }
        Ok(Some(OutgoingEvent {
            marker,
            timestamp: self.timestamp,
            send_after,
            len,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(digit: Digit, end: bool, duration: u16) -> [u8; 4] {
        let mut buf = [0u8; 4];
        let ev = TelephoneEvent {
            event: digit.event_code(),
            end,
            volume: 10,
            duration,
        };
        let _ = ev.write(&mut buf);
        buf
    }

    /// Packets as a sender emits them: (timestamp, marker, seq, payload, ms offset).
    fn press(digit: Digit, ts: u32, seq0: u16, ms: u32) -> Vec<(u32, bool, u16, [u8; 4], u32)> {
        let mut out = Vec::new();
        let mut sender = EventSender::new(digit, ts, 8000, Duration::from_millis(ms.into()), 10);
        let mut buf = [0u8; 4];
        let mut seq = seq0;
        while let Ok(Some(p)) = sender.next_packet(&mut buf) {
            out.push((
                p.timestamp,
                p.marker,
                seq,
                buf,
                p.send_after.as_millis() as u32,
            ));
            seq = seq.wrapping_add(1);
        }
        out
    }

    fn feed(
        rx: &mut EventReceiver,
        packets: &[(u32, bool, u16, [u8; 4], u32)],
        t0: Instant,
    ) -> Vec<Digit> {
        packets
            .iter()
            .filter_map(|(ts, m, seq, p, ms)| {
                rx.receive(*ts, *m, *seq, p, t0 + Duration::from_millis((*ms).into()))
                    .ok()
                    .flatten()
            })
            .map(|d| d.digit)
            .collect()
    }

    #[test]
    fn short_payload_is_a_typed_error() {
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(EventError::TooShort { len: 3 })
        );
    }

    #[test]
    fn payload_fields_are_parsed() {
        let ev = TelephoneEvent::parse(&[11, 0x80 | 0x40 | 7, 0x03, 0x20]).unwrap();
        assert_eq!(
            ev,
            TelephoneEvent {
                event: 11,
                end: true,
                volume: 7,
                duration: 800
            }
        );
        assert_eq!(ev.digit(), Ok(Digit::Pound));
    }

    #[test]
    fn non_dtmf_event_is_rejected() {
        let mut rx = EventReceiver::new(8000);
        let got = rx.receive(0, true, 0, &[16, 0, 0, 0], Instant::now());
        assert_eq!(got, Err(EventError::NotDtmf(16)));
    }

    #[test]
    fn sender_emits_marked_start_updates_every_50ms_and_three_ends_on_one_timestamp() {
        let packets = press(Digit::D5, 1234, 0, 120);
        // 0, 50, 100 ms updates, then three ends.
        assert_eq!(packets.len(), 6);
        assert!(packets.iter().all(|p| p.0 == 1234));
        assert!(packets[0].1);
        assert!(packets[1..].iter().all(|p| !p.1));
        let offsets: Vec<u32> = packets.iter().map(|p| p.4).collect();
        assert_eq!(offsets, vec![0, 50, 100, 120, 140, 160]);
        let parsed: Vec<TelephoneEvent> = packets
            .iter()
            .map(|p| TelephoneEvent::parse(&p.3).unwrap())
            .collect();
        assert_eq!(parsed[2].duration, 800);
        assert!(parsed[3..].iter().all(|e| e.end && e.duration == 960));
        assert!(parsed[..3].iter().all(|e| !e.end));
    }

    #[test]
    fn a_full_press_is_reported_once_on_its_first_packet() {
        let mut rx = EventReceiver::new(8000);
        let packets = press(Digit::D7, 8000, 10, 200);
        let first = rx.receive(
            packets[0].0,
            true,
            packets[0].2,
            &packets[0].3,
            Instant::now(),
        );
        assert_eq!(first.unwrap().map(|d| d.digit), Some(Digit::D7));
        assert!(feed(&mut rx, &packets[1..], Instant::now()).is_empty());
    }

    #[test]
    fn duplicated_packets_and_redundant_ends_do_not_repeat_the_digit() {
        let mut rx = EventReceiver::new(8000);
        let mut packets = press(Digit::D1, 160, 0, 100);
        let copy = packets.clone();
        packets.extend(copy);
        assert_eq!(feed(&mut rx, &packets, Instant::now()), vec![Digit::D1]);
    }

    #[test]
    fn missing_marker_bits_still_separate_presses_by_timestamp() {
        let mut rx = EventReceiver::new(8000);
        let mut packets = press(Digit::D2, 1000, 0, 100);
        packets.extend(press(Digit::D2, 3000, 10, 100));
        packets.extend(press(Digit::D3, 5000, 20, 100));
        for p in &mut packets {
            p.1 = false;
        }
        assert_eq!(
            feed(&mut rx, &packets, Instant::now()),
            vec![Digit::D2, Digit::D2, Digit::D3]
        );
    }

    #[test]
    fn lost_start_packets_still_report_the_digit_from_an_update_or_an_end() {
        let mut rx = EventReceiver::new(8000);
        let a = press(Digit::D8, 1000, 0, 150);
        let b = press(Digit::D9, 9000, 20, 150);
        let mut packets: Vec<_> = a.into_iter().skip(2).collect(); // start and first update lost
        packets.extend(
            b.into_iter()
                .filter(|p| TelephoneEvent::parse(&p.3).unwrap().end),
        );
        assert_eq!(
            feed(&mut rx, &packets, Instant::now()),
            vec![Digit::D8, Digit::D9]
        );
    }

    #[test]
    fn a_long_press_split_into_segments_is_one_digit() {
        let mut rx = EventReceiver::new(8000);
        let t0 = Instant::now();
        // First segment reaches the 16-bit limit; the next starts 0xFFFF later, unmarked.
        let seg1 = [
            (0u32, true, 0u16, payload(Digit::D0, false, 0)),
            (0, false, 1, payload(Digit::D0, false, 0xFFFF)),
        ];
        let seg2 = [
            (0xFFFFu32, false, 2u16, payload(Digit::D0, false, 400)),
            (0xFFFF, false, 3, payload(Digit::D0, true, 800)),
        ];
        let mut got = Vec::new();
        for (i, (ts, m, seq, p)) in seg1.iter().chain(seg2.iter()).enumerate() {
            if let Ok(Some(d)) =
                rx.receive(*ts, *m, *seq, p, t0 + Duration::from_millis(50 * i as u64))
            {
                got.push(d.digit);
            }
        }
        assert_eq!(got, vec![Digit::D0]);
    }

    #[test]
    fn an_event_that_never_ends_is_reported_at_its_start() {
        let mut rx = EventReceiver::new(8000);
        let packets: Vec<_> = press(Digit::Star, 500, 0, 300)
            .into_iter()
            .filter(|p| !TelephoneEvent::parse(&p.3).unwrap().end)
            .collect();
        assert_eq!(feed(&mut rx, &packets, Instant::now()), vec![Digit::Star]);
    }

    #[test]
    fn late_packets_of_a_previous_event_are_ignored() {
        let mut rx = EventReceiver::new(8000);
        let a = press(Digit::D4, 1000, 0, 100);
        let b = press(Digit::D6, 3000, 10, 100);
        let mut packets = vec![a[0]];
        packets.push(b[0]);
        packets.extend_from_slice(&a[1..]);
        packets.extend_from_slice(&b[1..]);
        assert_eq!(
            feed(&mut rx, &packets, Instant::now()),
            vec![Digit::D4, Digit::D6]
        );
    }

    #[test]
    fn a_sender_reusing_a_timestamp_for_a_new_marked_press_is_heard() {
        let mut rx = EventReceiver::new(8000);
        let mut packets = press(Digit::D5, 1000, 0, 100);
        packets.extend(press(Digit::D5, 1000, 10, 100));
        assert_eq!(
            feed(&mut rx, &packets, Instant::now()),
            vec![Digit::D5, Digit::D5]
        );
    }
}
