//! Cost of one 20 ms mixer frame for a room: push every participant's frame, mix, and read
//! every participant's output, at 8 and 16 kHz with 8 and 32 participants.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use dialin_media::mixer::{Mixer, ParticipantId};

/// Speech-like input: each participant a different tone and level, so that speaker selection
/// has real work to do.
fn frames(participants: usize, frame_len: usize, rate: f64) -> Vec<Vec<i16>> {
    (0..participants)
        .map(|p| {
            let hz = 150.0 + 37.0 * p as f64;
            let amplitude = 500.0 + 300.0 * p as f64;
            (0..frame_len)
                .map(|n| (amplitude * (std::f64::consts::TAU * hz * n as f64 / rate).sin()) as i16)
                .collect()
        })
        .collect()
}

fn mix_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("mixer_frame");
    for (rate, frame_len) in [(8_000u32, 160usize), (16_000, 320)] {
        for participants in [8usize, 32] {
            let inputs = frames(participants, frame_len, f64::from(rate));
            let mut mixer = Mixer::new(frame_len);
            for p in 0..participants {
                mixer.add(ParticipantId(p as u32)).unwrap();
            }
            let label = format!("{}kHz", rate / 1_000);
            group.bench_with_input(
                BenchmarkId::new(label, participants),
                &inputs,
                |b, inputs| {
                    b.iter(|| {
                        for (p, frame) in inputs.iter().enumerate() {
                            mixer.push(ParticipantId(p as u32), frame).unwrap();
                        }
                        mixer.mix();
                        let mut heard = 0i32;
                        for p in 0..inputs.len() {
                            if let Some(out) = mixer.output_for(ParticipantId(p as u32)) {
                                heard += i32::from(out[0]);
                            }
                        }
                        black_box(heard)
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, mix_frame);
criterion_main!(benches);
