//! Codec cost per 20 ms frame on the two call paths, plus each codec alone.
//!
//! caller → room: jitter buffer → PCMU decode → Opus encode (8 kHz) → LiveKit.
//! room → caller: three speakers' Opus decode (8 kHz) → sum → PCMU encode → RTP.
//! The same two paths at 16 kHz with G.722, and Opus encode at each complexity.
//! With the `libopus` feature, the `engines/` cases run both paths on libopus and on
//! `opus-rs` (the default engine) in the same run; every other Opus case then measures libopus.
//!
//! Timed in CPU time of the benchmark thread (`CLOCK_THREAD_CPUTIME_ID`), not wall
//! time: the build machine is shared, and a frame's cost is what it takes from a core.

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId};
use dialin_media::codec::{
    new_decoder, new_encoder, CodecConfig, CodecKind, Decoder, Encoder, SampleRate,
};
use std::time::Duration;

type Criterion = criterion::Criterion<ThreadCpuTime>;

/// CPU time consumed by the calling thread, in nanoseconds.
struct ThreadCpuTime {
    wall: WallTime,
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }

    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, as for wall time, so its formatter fits.
        self.wall.formatter()
    }
}

/// Frames of audio cycled through so encoders see changing content.
const FRAMES: usize = 50;

/// A voiced speaker: harmonics of a moving pitch with a syllable envelope.
fn speaker(rate: SampleRate, f0_base: f32, seed: f32) -> Vec<Vec<i16>> {
    let hz = rate.hz() as f32;
    let n = rate.frame_samples();
    let mut phase = 0.0f32;
    (0..FRAMES)
        .map(|k| {
            (0..n)
                .map(|i| {
                    let t = (k * n + i) as f32 / hz;
                    let f0 = f0_base + 30.0 * (2.0 * std::f32::consts::PI * 0.8 * t + seed).sin();
                    phase += 2.0 * std::f32::consts::PI * f0 / hz;
                    let mut v = 0.0;
                    let mut h = 1.0;
                    while h * f0 < hz * 0.45 {
                        v += (h * phase).sin() / h;
                        h += 1.0;
                    }
                    let env = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 4.0 * t + seed).sin();
                    (3000.0 * v * env) as i16
                })
                .collect()
        })
        .collect()
}

fn encode_all(enc: &mut dyn Encoder, frames: &[Vec<i16>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .map(|f| {
            let mut buf = [0u8; 1500];
            let n = enc.encode(f, &mut buf).expect("encode");
            buf[..n].to_vec()
        })
        .collect()
}

fn setup(
    kind: CodecKind,
    rate: SampleRate,
    c: &CodecConfig,
) -> (Box<dyn Encoder>, Box<dyn Decoder>) {
    (
        new_encoder(kind, rate, c).expect("encoder"),
        new_decoder(kind, rate, c).expect("decoder"),
    )
}

/// caller → room: SIP codec decode, then Opus encode, at the SIP leg's rate.
fn caller_to_room(c: &mut Criterion, sip: CodecKind, rate: SampleRate, name: &str) {
    let opus = new_encoder(CodecKind::Opus, rate, &CodecConfig::default()).expect("opus");
    caller_to_room_with(c, sip, rate, name, opus);
}

/// caller → room with a given Opus encoder.
fn caller_to_room_with(
    c: &mut Criterion,
    sip: CodecKind,
    rate: SampleRate,
    name: &str,
    mut opus: Box<dyn Encoder>,
) {
    let config = CodecConfig::default();
    let (mut sip_enc, mut sip_dec) = setup(sip, rate, &config);
    let payloads = encode_all(sip_enc.as_mut(), &speaker(rate, 120.0, 0.0));
    let mut pcm = vec![0i16; rate.frame_samples()];
    let mut out = [0u8; 1500];
    let mut k = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            let n = sip_dec
                .decode(&payloads[k % FRAMES], &mut pcm)
                .expect("decode");
            let m = opus.encode(&pcm[..n], &mut out).expect("encode");
            k += 1;
            black_box(m)
        })
    });
}

/// room → caller: three Opus decodes, their sum, then the SIP codec's encode.
fn room_to_caller(c: &mut Criterion, sip: CodecKind, rate: SampleRate, name: &str) {
    let config = CodecConfig::default();
    let decoders = (0..3)
        .map(|_| new_decoder(CodecKind::Opus, rate, &config).expect("opus decoder"))
        .collect();
    room_to_caller_with(c, sip, rate, name, decoders);
}

/// room → caller with given Opus decoders, one per speaker.
fn room_to_caller_with(
    c: &mut Criterion,
    sip: CodecKind,
    rate: SampleRate,
    name: &str,
    mut decoders: Vec<Box<dyn Decoder>>,
) {
    let config = CodecConfig::default();
    let mut sip_enc = new_encoder(sip, rate, &config).expect("sip encoder");
    let streams: Vec<Vec<Vec<u8>>> = [(110.0, 0.0), (180.0, 1.0), (230.0, 2.0)]
        .iter()
        .map(|&(f0, seed)| {
            let mut e = new_encoder(CodecKind::Opus, rate, &config).expect("opus");
            encode_all(e.as_mut(), &speaker(rate, f0, seed))
        })
        .collect();
    let n = rate.frame_samples();
    let mut pcm = vec![0i16; n];
    let mut mix = vec![0i32; n];
    let mut out = [0u8; 1500];
    let mut k = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            mix.fill(0);
            for (dec, stream) in decoders.iter_mut().zip(&streams) {
                let got = dec.decode(&stream[k % FRAMES], &mut pcm).expect("decode");
                for (m, &s) in mix.iter_mut().zip(&pcm[..got]) {
                    *m += i32::from(s);
                }
            }
            for (p, &m) in pcm.iter_mut().zip(&mix) {
                *p = m.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
            }
            let m = sip_enc.encode(&pcm, &mut out).expect("encode");
            k += 1;
            black_box(m)
        })
    });
}

fn call_paths(c: &mut Criterion) {
    caller_to_room(
        c,
        CodecKind::Pcmu,
        SampleRate::Hz8000,
        "caller_to_room/pcmu_decode+opus_encode@8k",
    );
    room_to_caller(
        c,
        CodecKind::Pcmu,
        SampleRate::Hz8000,
        "room_to_caller/3x_opus_decode+sum+pcmu_encode@8k",
    );
    caller_to_room(
        c,
        CodecKind::G722,
        SampleRate::Hz16000,
        "caller_to_room/g722_decode+opus_encode@16k",
    );
    room_to_caller(
        c,
        CodecKind::G722,
        SampleRate::Hz16000,
        "room_to_caller/3x_opus_decode+sum+g722_encode@16k",
    );
}

fn single_codecs(c: &mut Criterion) {
    let config = CodecConfig::default();
    for (kind, rate) in [
        (CodecKind::Pcmu, SampleRate::Hz8000),
        (CodecKind::Pcma, SampleRate::Hz8000),
        (CodecKind::G722, SampleRate::Hz16000),
        (CodecKind::Opus, SampleRate::Hz8000),
        (CodecKind::Opus, SampleRate::Hz16000),
    ] {
        let (mut enc, mut dec) = setup(kind, rate, &config);
        let frames = speaker(rate, 140.0, 0.5);
        let payloads = encode_all(enc.as_mut(), &frames);
        let mut out = [0u8; 1500];
        let mut pcm = vec![0i16; rate.frame_samples()];
        let mut k = 0;
        c.bench_function(&format!("{kind}@{}/encode", rate.hz()), |b| {
            b.iter(|| {
                k += 1;
                black_box(enc.encode(&frames[k % FRAMES], &mut out).expect("encode"))
            })
        });
        c.bench_function(&format!("{kind}@{}/decode", rate.hz()), |b| {
            b.iter(|| {
                k += 1;
                black_box(dec.decode(&payloads[k % FRAMES], &mut pcm).expect("decode"))
            })
        });
        c.bench_function(&format!("{kind}@{}/conceal", rate.hz()), |b| {
            b.iter(|| {
                // A loss followed by a good frame, the realistic pattern.
                k += 1;
                dec.conceal(&mut pcm).expect("conceal");
                black_box(dec.decode(&payloads[k % FRAMES], &mut pcm).expect("decode"))
            })
        });
    }
}

fn opus_complexity(c: &mut Criterion) {
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let frames = speaker(rate, 140.0, 0.5);
        let mut group = c.benchmark_group(format!("opus_encode@{}", rate.hz()));
        for complexity in 0..=10u8 {
            let config = CodecConfig {
                opus_complexity: complexity,
                ..CodecConfig::default()
            };
            let mut enc = new_encoder(CodecKind::Opus, rate, &config).expect("encoder");
            let mut out = [0u8; 1500];
            let mut k = 0;
            group.bench_with_input(
                BenchmarkId::new("complexity", complexity),
                &complexity,
                |b, _| {
                    b.iter(|| {
                        k += 1;
                        black_box(enc.encode(&frames[k % FRAMES], &mut out).expect("encode"))
                    })
                },
            );
        }
        // In-band FEC costs a second SILK quantisation pass (LBRR); measure without.
        for complexity in [0u8, 1, 5, 10] {
            let config = CodecConfig {
                opus_complexity: complexity,
                fec: false,
                ..CodecConfig::default()
            };
            let mut enc = new_encoder(CodecKind::Opus, rate, &config).expect("encoder");
            let mut out = [0u8; 1500];
            let mut k = 0;
            group.bench_with_input(
                BenchmarkId::new("complexity_without_fec", complexity),
                &complexity,
                |b, _| {
                    b.iter(|| {
                        k += 1;
                        black_box(enc.encode(&frames[k % FRAMES], &mut out).expect("encode"))
                    })
                },
            );
        }
        group.finish();
    }
}

/// The two Opus engines side by side on the same call paths, in the same run: with the
/// `libopus` feature, `new_encoder` / `new_decoder` give libopus, and
/// `new_pure_rust_opus_*` the default build's engine, set up as the default build sets it.
#[cfg(feature = "libopus")]
mod engines {
    use super::*;
    use dialin_media::codec::{new_pure_rust_opus_decoder, new_pure_rust_opus_encoder};

    pub(super) fn libopus_vs_pure(c: &mut Criterion) {
        let config = CodecConfig::default();
        for (sip, rate, c2r, r2c) in [
            (
                CodecKind::Pcmu,
                SampleRate::Hz8000,
                "pcmu_decode+opus_encode@8k",
                "3x_opus_decode+sum+pcmu_encode@8k",
            ),
            (
                CodecKind::G722,
                SampleRate::Hz16000,
                "g722_decode+opus_encode@16k",
                "3x_opus_decode+sum+g722_encode@16k",
            ),
        ] {
            let libopus = new_encoder(CodecKind::Opus, rate, &config).expect("libopus encoder");
            let pure = new_pure_rust_opus_encoder(rate, &config).expect("pure-Rust encoder");
            caller_to_room_with(
                c,
                sip,
                rate,
                &format!("engines/caller_to_room/{c2r}/libopus"),
                libopus,
            );
            caller_to_room_with(
                c,
                sip,
                rate,
                &format!("engines/caller_to_room/{c2r}/opus-rs"),
                pure,
            );
            let libopus = (0..3)
                .map(|_| new_decoder(CodecKind::Opus, rate, &config).expect("libopus decoder"))
                .collect();
            let pure = (0..3)
                .map(|_| new_pure_rust_opus_decoder(rate).expect("pure-Rust decoder"))
                .collect();
            room_to_caller_with(
                c,
                sip,
                rate,
                &format!("engines/room_to_caller/{r2c}/libopus"),
                libopus,
            );
            room_to_caller_with(
                c,
                sip,
                rate,
                &format!("engines/room_to_caller/{r2c}/opus-rs"),
                pure,
            );
        }
    }
}

/// Without the `libopus` feature there is one engine and nothing to compare.
#[cfg(not(feature = "libopus"))]
mod engines {
    pub(super) fn libopus_vs_pure(_: &mut super::Criterion) {}
}

criterion_group! {
    name = benches;
    config = criterion::Criterion::default()
        .with_measurement(ThreadCpuTime { wall: WallTime })
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = call_paths, engines::libopus_vs_pure, single_codecs, opus_complexity
}
criterion_main!(benches);
