//! The whole media hot path in one run, per 20 ms frame (one packet) at 8 kHz, so the
//! figures are comparable with each other:
//!
//! - `rtp_parse`: `rtp::Packet::parse` of a 20 ms PCMU packet (160 octets of payload).
//! - `caller_to_room`: RTP write (the phone's side) → parse → `RtpReceiver::on_packet` →
//!   jitter push and pop → PCMU decode → Opus encode.
//! - `room_to_caller`: 3 × Opus decode → `Mixer` push, mix, `output_for` → PCMU encode →
//!   RTP header write.
//! - `mixer/N`: one mixer frame for a room of N participants (push all, mix, read all).
//! - `jitter_push_pop`: one in-order packet pushed and one frame popped.
//! - `goertzel_detector`: in-band DTMF detection of one frame (alternating tone and noise).
//!
//! Timed in CPU time of the benchmark thread (`CLOCK_THREAD_CPUTIME_ID`), not wall time:
//! the build machine is shared, and a frame's cost is what it takes from a core.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main};
use dialin_media::codec::{
    new_decoder, new_encoder, CodecConfig, CodecKind, Decoder, Encoder, SampleRate,
};
use dialin_media::dtmf::inband::InbandDetector;
use dialin_media::dtmf::Digit;
use dialin_media::jitter::{JitterBuffer, JitterConfig, PacketInfo, Playout};
use dialin_media::mixer::{Mixer, ParticipantId};
use dialin_media::rtp::{Header, Packet, PayloadType, RtpTimestamp, SeqNo, Ssrc};
use dialin_media::stream::{RtpReceiver, SourcePolicy};

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

const RATE: SampleRate = SampleRate::Hz8000;
const FRAME: Duration = Duration::from_millis(20);
/// Frames of audio cycled through (5 s), so codecs see changing content.
const FRAMES: usize = 250;

/// A voiced talker: harmonics of a moving pitch with a syllable envelope, one
/// `FRAMES`-long clip of 20 ms frames.
fn talker(f0_base: f32, seed: f32) -> Vec<Vec<i16>> {
    let hz = RATE.hz() as f32;
    let n = RATE.frame_samples();
    let tau = 2.0 * std::f32::consts::PI;
    let mut phase = 0.0f32;
    (0..FRAMES)
        .map(|k| {
            (0..n)
                .map(|i| {
                    let t = (k * n + i) as f32 / hz;
                    let f0 = f0_base + 30.0 * (tau * 0.8 * t + seed).sin();
                    phase += tau * f0 / hz;
                    let mut v = 0.0;
                    let mut h = 1.0;
                    while h * f0 < hz * 0.45 {
                        v += (h * phase).sin() / h;
                        h += 1.0;
                    }
                    let env = 0.6 + 0.4 * (tau * 4.0 * t + seed).sin();
                    (3000.0 * v * env) as i16
                })
                .collect()
        })
        .collect()
}

fn encode_all(kind: CodecKind, frames: &[Vec<i16>]) -> Vec<Vec<u8>> {
    let mut enc = new_encoder(kind, RATE, &CodecConfig::default()).expect("encoder");
    frames
        .iter()
        .map(|f| {
            let mut buf = [0u8; 1500];
            let n = enc.encode(f, &mut buf).expect("encode");
            buf.get(..n).expect("encoded length").to_vec()
        })
        .collect()
}

fn pcmu_header(seq: u16) -> Header<'static> {
    Header::new(
        PayloadType::PCMU,
        SeqNo(seq),
        RtpTimestamp(u32::from(seq).wrapping_mul(160)),
        Ssrc(0xca11),
    )
}

fn rtp_parse(c: &mut Criterion) {
    let mut pkt = [0u8; 172];
    let n = pcmu_header(1)
        .write(&[0xd5; 160], &mut pkt)
        .expect("rtp write");
    c.bench_function("call_path/rtp_parse", |b| {
        b.iter(|| {
            let p = Packet::parse(black_box(&pkt[..n])).expect("parse");
            black_box((p.seq(), p.timestamp(), p.ssrc(), p.payload().len()))
        })
    });
}

fn caller_to_room(c: &mut Criterion) {
    let config = CodecConfig::default();
    let payloads = encode_all(CodecKind::Pcmu, &talker(120.0, 0.0));
    let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let mut receiver = RtpReceiver::new(peer, SourcePolicy::sdp_only(), 8000);
    let mut jitter = JitterBuffer::new(JitterConfig::default());
    let mut pcmu = new_decoder(CodecKind::Pcmu, RATE, &config).expect("pcmu decoder");
    let mut opus = new_encoder(CodecKind::Opus, RATE, &config).expect("opus encoder");
    let mut wire = [0u8; 1500];
    let mut pcm = vec![0i16; RATE.frame_samples() * 6];
    let mut out = [0u8; 1500];
    let t0 = Instant::now();
    let mut k: u32 = 0;
    c.bench_function("call_path/caller_to_room_pcmu_to_opus", |b| {
        b.iter(|| {
            k = k.wrapping_add(1);
            let now = t0 + FRAME * k;
            let payload = &payloads[k as usize % FRAMES];
            let len = pcmu_header(k as u16)
                .write(payload, &mut wire)
                .expect("rtp write");
            let packet = Packet::parse(&wire[..len]).expect("parse");
            if receiver.on_packet(peer, &packet, now).is_ok() {
                let info = PacketInfo {
                    ssrc: packet.ssrc().0,
                    seq: packet.seq().0,
                    timestamp: packet.timestamp().0,
                    marker: packet.marker(),
                };
                jitter.push(info, packet.payload(), now);
            }
            let samples = match jitter.pop(now) {
                Playout::Frame(f) => pcmu.decode(f.payload, &mut pcm).expect("decode"),
                Playout::Missing => pcmu.conceal(&mut pcm).expect("conceal"),
                Playout::Empty => return 0,
            };
            black_box(opus.encode(&pcm[..samples], &mut out).expect("opus encode"))
        })
    });
}

fn room_to_caller(c: &mut Criterion) {
    let config = CodecConfig::default();
    let streams: Vec<Vec<Vec<u8>>> = [(110.0, 0.0), (180.0, 1.0), (230.0, 2.0)]
        .iter()
        .map(|&(f0, seed)| encode_all(CodecKind::Opus, &talker(f0, seed)))
        .collect();
    let mut decoders: Vec<Box<dyn Decoder>> = (0..3)
        .map(|_| new_decoder(CodecKind::Opus, RATE, &config).expect("opus decoder"))
        .collect();
    let mut pcmu: Box<dyn Encoder> =
        new_encoder(CodecKind::Pcmu, RATE, &config).expect("pcmu encoder");
    let caller = ParticipantId(0);
    let mut mixer = Mixer::new(RATE.frame_samples());
    for p in 0..4 {
        mixer.add(ParticipantId(p)).expect("add");
    }
    let mut pcm = vec![0i16; RATE.frame_samples() * 6];
    let mut payload = [0u8; 160];
    let mut wire = [0u8; 1500];
    let mut k: usize = 0;
    c.bench_function("call_path/room_to_caller_3x_opus_mix_pcmu", |b| {
        b.iter(|| {
            k += 1;
            for (i, (dec, stream)) in decoders.iter_mut().zip(&streams).enumerate() {
                let n = dec
                    .decode(&stream[k % FRAMES], &mut pcm)
                    .expect("opus decode");
                mixer
                    .push(ParticipantId(i as u32 + 1), &pcm[..n])
                    .expect("push");
            }
            mixer.mix();
            let heard = mixer.output_for(caller).expect("caller");
            let n = pcmu.encode(heard, &mut payload).expect("pcmu encode");
            black_box(
                pcmu_header(k as u16)
                    .write(&payload[..n], &mut wire)
                    .expect("rtp write"),
            )
        })
    });
}

fn mixer(c: &mut Criterion) {
    let frame_len = RATE.frame_samples();
    for participants in [8usize, 32] {
        // Each participant a different tone and level, so selection has work to do.
        let inputs: Vec<Vec<i16>> = (0..participants)
            .map(|p| {
                let hz = 150.0 + 37.0 * p as f64;
                let amplitude = 500.0 + 300.0 * p as f64;
                (0..frame_len)
                    .map(|n| {
                        (amplitude * (std::f64::consts::TAU * hz * n as f64 / 8000.0).sin()) as i16
                    })
                    .collect()
            })
            .collect();
        let mut mixer = Mixer::new(frame_len);
        for p in 0..participants {
            mixer.add(ParticipantId(p as u32)).expect("add");
        }
        c.bench_function(&format!("call_path/mixer/{participants}"), |b| {
            b.iter(|| {
                for (p, frame) in inputs.iter().enumerate() {
                    mixer.push(ParticipantId(p as u32), frame).expect("push");
                }
                mixer.mix();
                let mut heard = 0i32;
                for p in 0..participants {
                    if let Some(out) = mixer.output_for(ParticipantId(p as u32)) {
                        heard += i32::from(out[0]);
                    }
                }
                black_box(heard)
            })
        });
    }
}

fn jitter(c: &mut Criterion) {
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let payload = [0x55u8; 160];
    let t0 = Instant::now();
    let mut n: u32 = 0;
    c.bench_function("call_path/jitter_push_pop", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let now = t0 + FRAME * n;
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

fn goertzel(c: &mut Criterion) {
    let rate = RATE.hz();
    let (row, col) = Digit::D5.frequencies();
    // −10 dBm0 per tone (ITU-T G.711: 0 dBm0 is a sine of peak 0.6943 of full scale).
    let amp = 32767.0 * 0.6943 * 10f32.powf(-0.5);
    let mut seed = 1u32;
    let signal: Vec<i16> = (0..rate * 2)
        .map(|i| {
            if i < rate {
                let tau = 2.0 * std::f32::consts::PI * i as f32 / rate as f32;
                (amp * (tau * row).sin() + amp * (tau * col).sin()) as i16
            } else {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                ((seed >> 16) as i16) >> 4
            }
        })
        .collect();
    let frames: Vec<&[i16]> = signal.chunks(RATE.frame_samples()).collect();
    let mut det = InbandDetector::new(rate).expect("supported rate");
    let mut i = 0usize;
    c.bench_function("call_path/goertzel_detector", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(det.process(black_box(frames[i])))
        })
    });
}

fn config() -> Criterion {
    criterion::Criterion::default().with_measurement(ThreadCpuTime { wall: WallTime })
}

criterion_group! {
    name = benches;
    config = config()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = rtp_parse, caller_to_room, room_to_caller, mixer, jitter, goertzel
}
criterion_main!(benches);
