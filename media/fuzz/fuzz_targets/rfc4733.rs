//! Fuzzes RFC 4733 telephone-event handling: the payload parser (§2.3) with a
//! write-back round trip, and one [`EventReceiver`] fed a sequence of packets.
//!
//! The input after the first payload is read as records of 12 octets: timestamp (4),
//! sequence number (2), flags (1: bit 0 marker, bits 1-7 milliseconds since the last
//! packet), reserved (1), payload (4).
#![no_main]

use std::time::{Duration, Instant};

use dialin_media::dtmf::event::{EventReceiver, TelephoneEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = TelephoneEvent::parse(data) {
        let mut out = [0u8; TelephoneEvent::LEN];
        assert_eq!(ev.write(&mut out), Ok(TelephoneEvent::LEN));
        let again = TelephoneEvent::parse(&out).expect("a written event parses");
        assert_eq!(again, ev);
        let _ = ev.digit();
    }

    let clock = match data.first() {
        Some(b) if b & 1 == 1 => 16_000,
        _ => 8_000,
    };
    let mut rx = EventReceiver::new(clock);
    let mut now = Instant::now();
    for rec in data.get(1..).unwrap_or(&[]).chunks(12) {
        let [t0, t1, t2, t3, s0, s1, flags, reserved, payload @ ..] = rec else { break };
        now += Duration::from_millis(u64::from(flags >> 1) * 10);
        if *reserved == 0xff {
            rx.reset();
        }
        let ts = u32::from_be_bytes([*t0, *t1, *t2, *t3]);
        let seq = u16::from_be_bytes([*s0, *s1]);
        if let Ok(Some(d)) = rx.receive(ts, flags & 1 == 1, seq, payload, now) {
            assert_eq!(d.timestamp, ts);
        }
    }
});
