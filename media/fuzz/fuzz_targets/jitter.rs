//! Fuzzes the jitter buffer with arbitrary packet sequences and arrival times: no
//! panic, every frame handed out fits the configured payload size, counters stay
//! consistent.
//!
//! First two octets: capacity (4-67 slots) and maximum payload (1-256 octets). Then
//! records of 9 octets: SSRC selector and marker (1: bit 0 marker, bits 1-2 one of
//! four SSRCs), sequence number (2), timestamp (4), milliseconds to advance the clock
//! (1; the buffer is popped every 20 ms of simulated time on the way), payload
//! length (1).
#![no_main]

use std::time::{Duration, Instant};

use dialin_media::jitter::{JitterBuffer, JitterConfig, PacketInfo, Playout};
use libfuzzer_sys::fuzz_target;

const FRAME: Duration = Duration::from_millis(20);

fuzz_target!(|data: &[u8]| {
    let [capacity, max_payload, records @ ..] = data else { return };
    let config = JitterConfig {
        capacity: usize::from(capacity & 0x3f) + 4,
        max_payload: usize::from(*max_payload).max(1),
        ..JitterConfig::default()
    };
    let mut jb = JitterBuffer::new(config);
    let payload = [0xa5u8; 256];
    let mut now = Instant::now();
    let mut next_pop = now;
    let mut popped_frames = 0u64;
    for rec in records.chunks(9) {
        let [flags, s0, s1, t0, t1, t2, t3, advance, len] = rec else { break };
        now += Duration::from_millis(u64::from(*advance));
        while next_pop <= now {
            if let Playout::Frame(f) = jb.pop(next_pop) {
                assert!(f.payload.len() <= config.max_payload);
                popped_frames += 1;
            }
            next_pop += FRAME;
        }
        let info = PacketInfo {
            ssrc: u32::from((flags >> 1) & 3),
            seq: u16::from_be_bytes([*s0, *s1]),
            timestamp: u32::from_be_bytes([*t0, *t1, *t2, *t3]),
            marker: flags & 1 == 1,
        };
        let body = payload.get(..usize::from(*len)).unwrap_or(&payload);
        let _ = jb.push(info, body, now);
    }
    for _ in 0..config.capacity + 8 {
        if let Playout::Frame(f) = jb.pop(next_pop) {
            assert!(f.payload.len() <= config.max_payload);
            popped_frames += 1;
        }
        next_pop += FRAME;
    }
    let stats = jb.stats();
    assert!(stats.played >= popped_frames);
    assert!(stats.target_delay <= config.max_delay.max(config.min_delay));
});
