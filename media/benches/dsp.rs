//! Per-frame DSP costs on the media hot path: in-band DTMF detection per 20 ms frame and
//! jitter buffer push+pop per packet.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dialin_media::dtmf::inband::InbandDetector;
use dialin_media::dtmf::Digit;
use dialin_media::jitter::{JitterBuffer, JitterConfig, PacketInfo, Playout};

/// One second of the `5` key at −10 dBm0 per tone, then one second of a low noise-like
/// signal, so both the tone path and the idle path are measured.
fn signal(rate: u32) -> Vec<i16> {
    let (row, col) = Digit::D5.frequencies();
    let amp = 32767.0 * 0.6943 * 10f32.powf(-0.5);
    let mut seed = 1u32;
    (0..rate * 2)
        .map(|i| {
            if i < rate {
                let t = i as f32 / rate as f32;
                let tau = 2.0 * std::f32::consts::PI * t;
                (amp * (tau * row).sin() + amp * (tau * col).sin()) as i16
            } else {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                ((seed >> 16) as i16) >> 4
            }
        })
        .collect()
}

fn inband(c: &mut Criterion) {
    for rate in [8000u32, 16000] {
        let pcm = signal(rate);
        let frame = (rate / 50) as usize;
        let frames: Vec<&[i16]> = pcm.chunks(frame).collect();
        let mut det = InbandDetector::new(rate).expect("supported rate");
        let mut i = 0usize;
        c.bench_function(&format!("dtmf_inband_20ms_frame_{}khz", rate / 1000), |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                black_box(det.process(black_box(frames[i])))
            })
        });
    }
}

fn jitter(c: &mut Criterion) {
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let payload = [0x55u8; 160];
    let t0 = Instant::now();
    let mut n: u32 = 0;
    c.bench_function("jitter_push_pop_per_packet", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let now = t0 + Duration::from_millis(u64::from(n) * 20);
            let info = PacketInfo {
                ssrc: 1,
                seq: n as u16,
                timestamp: n.wrapping_mul(160),
                marker: false,
            };
            jb.push(black_box(info), black_box(&payload), now);
            match jb.pop(now) {
                Playout::Frame(f) => black_box(f.payload.len()),
                _ => 0,
            }
        })
    });
}

criterion_group!(benches, inband, jitter);
criterion_main!(benches);
