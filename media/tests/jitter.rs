//! Jitter buffer driven by simulated networks: packets sent every 20 ms, delivered with
//! chosen delays, popped every 20 ms by a simulated media task.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use dialin_media::jitter::{JitterBuffer, JitterConfig, PacketInfo, Playout, PushOutcome};

// Counts heap allocations made by the current thread, to check the steady state.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const FRAME_MS: u64 = 20;
const SAMPLES: u32 = 160;

/// One packet on the simulated wire.
#[derive(Clone, Copy)]
struct Sent {
    id: u32,
    info: PacketInfo,
    arrival_us: u64,
}

/// Packets of one stream: packet `i` sent at `start_ms + 20·i` and delivered `delay(i)` ms
/// later (None = lost).
fn stream(
    ssrc: u32,
    seq0: u16,
    ts0: u32,
    start_ms: u64,
    ids: std::ops::Range<u32>,
    mut delay_ms: impl FnMut(u32) -> Option<f64>,
) -> Vec<Sent> {
    ids.filter_map(|i| {
        let n = i;
        let d = delay_ms(i)?;
        Some(Sent {
            id: i,
            info: PacketInfo {
                ssrc,
                seq: seq0.wrapping_add(n as u16),
                timestamp: ts0.wrapping_add(n * SAMPLES),
                marker: n == 0,
            },
            arrival_us: ((start_ms + u64::from(n) * FRAME_MS) as f64 * 1000.0 + d * 1000.0) as u64,
        })
    })
    .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Frame(u32),
    Missing,
    Empty,
}

struct Run {
    out: Vec<(u64, Got)>,
    pushes: Vec<(u32, PushOutcome)>,
    jb: JitterBuffer,
    /// (time ms, target ms, current ms) sampled at every pop.
    delays: Vec<(u64, u64, u64)>,
}

impl Run {
    fn frames(&self) -> Vec<u32> {
        self.out
            .iter()
            .filter_map(|(_, g)| {
                if let Got::Frame(i) = g {
                    Some(*i)
                } else {
                    None
                }
            })
            .collect()
    }
    /// What was played between the first and the last frame.
    fn playing(&self) -> Vec<Got> {
        let first = self
            .out
            .iter()
            .position(|(_, g)| matches!(g, Got::Frame(_)))
            .unwrap_or(0);
        let last = self
            .out
            .iter()
            .rposition(|(_, g)| matches!(g, Got::Frame(_)))
            .unwrap_or(0);
        self.out[first..=last].iter().map(|(_, g)| *g).collect()
    }
    fn outcome(&self, id: u32) -> Vec<PushOutcome> {
        self.pushes
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, o)| *o)
            .collect()
    }
}

/// Delivers the packets in arrival order and pops every 20 ms (phase 7 ms) until `end_ms`.
fn simulate(mut packets: Vec<Sent>, end_ms: u64) -> Run {
    packets.sort_by_key(|p| p.arrival_us);
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut out = Vec::new();
    let mut pushes = Vec::new();
    let mut delays = Vec::new();
    let mut pending = packets.into_iter().peekable();
    let mut pop_us = 7_000u64;
    while pop_us <= end_ms * 1000 {
        while let Some(p) = pending.next_if(|p| p.arrival_us <= pop_us) {
            let payload = p.id.to_be_bytes();
            let outcome = jb.push(p.info, &payload, t0 + Duration::from_micros(p.arrival_us));
            pushes.push((p.id, outcome));
        }
        let got = match jb.pop(t0 + Duration::from_micros(pop_us)) {
            Playout::Frame(f) => Got::Frame(u32::from_be_bytes(
                f.payload.try_into().expect("4-byte payload"),
            )),
            Playout::Missing => Got::Missing,
            Playout::Empty => Got::Empty,
        };
        out.push((pop_us / 1000, got));
        let s = jb.stats();
        delays.push((
            pop_us / 1000,
            s.target_delay.as_millis() as u64,
            s.current_delay.as_millis() as u64,
        ));
        pop_us += FRAME_MS * 1000;
    }
    Run {
        out,
        pushes,
        jb,
        delays,
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn in_order_packets_play_in_order_after_the_target_delay() {
    let run = simulate(stream(1, 1000, 5000, 0, 0..100, |_| Some(30.0)), 2300);
    assert_eq!(run.frames(), (0..100).collect::<Vec<_>>());
    assert!(
        run.playing().iter().all(|g| matches!(g, Got::Frame(_))),
        "no gaps while playing"
    );
    let first_frame_ms = run
        .out
        .iter()
        .find(|(_, g)| matches!(g, Got::Frame(_)))
        .map(|(t, _)| *t)
        .unwrap();
    assert!(
        first_frame_ms >= 30 + 20,
        "waited for the minimum delay, played at {first_frame_ms} ms"
    );
    let s = run.jb.stats();
    assert_eq!((s.lost, s.late, s.duplicates, s.played), (0, 0, 0, 100));
}

#[test]
fn reordered_packets_play_in_sequence() {
    // Every even packet is held 25 ms: it arrives 5 ms after its successor.
    let run = simulate(
        stream(1, 0, 0, 0, 0..200, |i| {
            Some(if i % 2 == 0 { 35.0 } else { 10.0 })
        }),
        4500,
    );
    assert_eq!(run.frames(), (0..200).collect::<Vec<_>>());
    let s = run.jb.stats();
    assert_eq!((s.lost, s.late), (0, 0));
}

#[test]
fn duplicated_packets_are_dropped_and_counted() {
    let mut packets = stream(1, 0, 0, 0, 0..100, |_| Some(20.0));
    let copies: Vec<Sent> = packets
        .iter()
        .map(|p| Sent {
            arrival_us: p.arrival_us + 5000,
            ..*p
        })
        .collect();
    packets.extend(copies);
    let run = simulate(packets, 2500);
    assert_eq!(run.frames(), (0..100).collect::<Vec<_>>());
    assert_eq!(run.jb.stats().duplicates, 100);
}

#[test]
fn lost_packets_come_out_as_missing_for_concealment() {
    let run = simulate(
        stream(1, 0, 0, 0, 0..60, |i| {
            (![10, 11, 30].contains(&i)).then_some(20.0)
        }),
        1500,
    );
    let lost = [10, 11, 30];
    let expected: Vec<u32> = (0..60).filter(|i| !lost.contains(i)).collect();
    assert_eq!(run.frames(), expected);
    // Each gap is concealed: two frames for 10-11 (plus one held frame while the buffer
    // ran dry waiting for 12), one for 30.
    let playing = run.playing();
    let gap = |from: u32, to: u32| {
        let a = playing.iter().position(|g| *g == Got::Frame(from)).unwrap();
        let b = playing.iter().position(|g| *g == Got::Frame(to)).unwrap();
        playing[a + 1..b]
            .iter()
            .filter(|g| **g == Got::Missing)
            .count()
    };
    assert!(gap(9, 12) >= 2 && gap(29, 31) == 1, "{playing:?}");
    let s = run.jb.stats();
    let all_missing = run.out.iter().filter(|(_, g)| *g == Got::Missing).count() as u64;
    assert_eq!(s.lost, 3);
    assert_eq!(
        all_missing,
        s.lost + s.inserted,
        "every Missing is a loss or a held frame"
    );
    assert_eq!(run.jb.stats().lost, 3);
}

#[test]
fn a_late_packet_is_counted_and_dropped() {
    let run = simulate(
        stream(1, 0, 0, 0, 0..60, |i| {
            Some(if i == 20 { 400.0 } else { 20.0 })
        }),
        1500,
    );
    assert_eq!(run.outcome(20), vec![PushOutcome::Late]);
    assert!(!run.frames().contains(&20));
    assert!(run.frames().contains(&21) && run.frames().contains(&59));
    let s = run.jb.stats();
    assert_eq!((s.late, s.lost), (1, 1));
}

#[test]
fn bursty_jitter_grows_the_target_then_calm_shrinks_it() {
    let mut rng = Rng(0x5eed);
    // 0-5 s calm (±1 ms), 5-15 s bursts (a queue builds up to 120 ms every second and
    // drains over 200 ms, plus ±20 ms noise), 15-45 s calm again.
    let run = simulate(
        stream(1, 0, 0, 0, 0..2250, |i| {
            let t = i as f64 * 0.02;
            let noise = rng.next();
            Some(if (5.0..15.0).contains(&t) {
                let phase = (i % 50) as f64;
                let burst = if phase < 10.0 {
                    120.0 * (1.0 - phase / 10.0)
                } else {
                    0.0
                };
                30.0 + burst + 20.0 * noise
            } else {
                30.0 + 2.0 * noise
            })
        }),
        45_500,
    );
    let at = |ms: u64| {
        run.delays
            .iter()
            .find(|(t, _, _)| *t >= ms)
            .copied()
            .unwrap()
    };
    let peak_target = run
        .delays
        .iter()
        .filter(|(t, _, _)| (5000..15_500).contains(t))
        .map(|d| d.1)
        .max()
        .unwrap();
    let peak_current = run
        .delays
        .iter()
        .filter(|(t, _, _)| (5000..15_500).contains(t))
        .map(|d| d.2)
        .max()
        .unwrap();
    let (calm_before, calm_after) = (at(4900), at(45_000));
    println!("target/current ms: calm {calm_before:?}, burst peak {peak_target}/{peak_current}, calm again {calm_after:?}");
    assert!(
        peak_target >= calm_before.1 + 60,
        "target grew under bursts"
    );
    assert!(
        peak_current >= calm_before.2 + 40,
        "buffered audio grew under bursts"
    );
    assert!(
        calm_after.1 <= calm_before.1 + 20,
        "target sank back after calm"
    );
    assert!(
        calm_after.2 <= peak_current / 2,
        "buffered audio shrank after calm"
    );
    let s = run.jb.stats();
    assert!(
        s.dropped > 0 && s.inserted > 0,
        "adapted by dropping and inserting frames: {s:?}"
    );
    // Every packet is accounted for once: played, late, dropped to shrink, or lost.
    assert_eq!(s.played + s.late + s.dropped, 2250, "{s:?}");
}

#[test]
fn a_timestamp_jump_restarts_jitter_measurement_without_losing_frames() {
    let mut packets = stream(1, 0, 0, 0, 0..100, |_| Some(25.0));
    for p in packets.iter_mut().filter(|p| p.id >= 50) {
        p.info.timestamp = p.info.timestamp.wrapping_add(8000 * 600);
    }
    let run = simulate(packets, 2500);
    assert_eq!(run.frames(), (0..100).collect::<Vec<_>>());
    let s = run.jb.stats();
    assert!(s.resyncs >= 1);
    assert_eq!(s.lost, 0);
    assert!(
        s.target_delay <= Duration::from_millis(40),
        "jump was not taken for jitter: {s:?}"
    );
}

#[test]
fn a_new_talkspurt_after_silence_is_buffered_again() {
    // Talkspurt 1: 0-1 s. Silence (nothing sent) 1-3 s. Talkspurt 2 from 3 s, with the
    // marker bit, sequence numbers continuing and the timestamp advanced by the silence.
    let mut packets = stream(1, 0, 0, 0, 0..50, |_| Some(20.0));
    let mut second = stream(1, 50, 3000 * 8, 3000, 0..50, |_| Some(20.0));
    for p in second.iter_mut() {
        p.id += 50;
    }
    packets.extend(second);
    let run = simulate(packets, 4500);
    assert_eq!(run.frames(), (0..100).collect::<Vec<_>>());
    let silence: Vec<Got> = run
        .out
        .iter()
        .filter(|(t, _)| (1200..2900).contains(t))
        .map(|(_, g)| *g)
        .collect();
    assert!(
        silence.iter().all(|g| *g == Got::Empty),
        "silence is Empty, not endless concealment"
    );
    let s = run.jb.stats();
    assert_eq!((s.lost, s.late), (0, 0));
}

#[test]
fn an_ssrc_change_resyncs_to_the_new_stream() {
    let mut packets = stream(0xAAAA, 100, 1000, 0, 0..50, |_| Some(20.0));
    let mut second = stream(0xBBBB, 40_000, 777_777, 1000, 0..50, |_| Some(20.0));
    for p in second.iter_mut() {
        p.id += 50;
    }
    packets.extend(second);
    let run = simulate(packets, 2500);
    let frames = run.frames();
    assert!(
        frames.ends_with(&(50..100).collect::<Vec<_>>()),
        "{frames:?}"
    );
    assert_eq!(run.outcome(50), vec![PushOutcome::Resynced]);
    let s = run.jb.stats();
    assert_eq!((s.late, s.duplicates), (0, 0));
}

#[test]
fn sequence_numbers_wrapping_at_65535_play_in_order() {
    // Starts just below the wrap; the packets with seq 65535 and 0 swap places.
    let run = simulate(
        stream(1, 65_500, 0, 0, 0..100, |i| {
            Some(match i {
                35 => 45.0, // seq 65535, arrives after seq 0
                _ => 20.0,
            })
        }),
        2500,
    );
    assert_eq!(run.frames(), (0..100).collect::<Vec<_>>());
    let s = run.jb.stats();
    assert_eq!((s.lost, s.late, s.resyncs), (0, 0, 0));
}

#[test]
fn an_oversized_payload_is_refused() {
    let mut jb = JitterBuffer::new(JitterConfig {
        max_payload: 200,
        ..JitterConfig::default()
    });
    let info = PacketInfo {
        ssrc: 1,
        seq: 1,
        timestamp: 0,
        marker: true,
    };
    assert_eq!(
        jb.push(info, &[0u8; 201], Instant::now()),
        PushOutcome::TooLarge
    );
    assert_eq!(jb.stats().too_large, 1);
}

#[test]
fn steady_state_push_and_pop_do_not_allocate() {
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let t0 = Instant::now();
    let payload = [0x55u8; 160];
    let mut run = |from: u32, to: u32| {
        for i in from..to {
            let now = t0 + Duration::from_millis(u64::from(i) * 20);
            let info = PacketInfo {
                ssrc: 9,
                seq: i as u16,
                timestamp: i * 160,
                marker: i == 0,
            };
            jb.push(info, &payload, now);
            let _ = jb.pop(now + Duration::from_millis(5));
        }
    };
    run(0, 100);
    let before = ALLOCATIONS.with(Cell::get);
    run(100, 5100);
    let after = ALLOCATIONS.with(Cell::get);
    assert_eq!(after - before, 0, "allocations in 5000 push+pop cycles");
}
