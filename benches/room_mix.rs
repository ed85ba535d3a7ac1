//! Per-tick cost of what a call hears from a LiveKit room ([`RoomMix`]): every 20 ms each
//! subscribed track's packet is taken from its jitter buffer, the audible few are decoded,
//! and the mix is made. The cost should follow who speaks, not how many are in the room.
//!
//! Run: `cargo bench -p dialin --bench room_mix`
//!
//! Cases, all at 8 kHz (a G.711 caller), with Opus packets from our own encoder (speech-like:
//! a few harmonics under a syllable-rate envelope) and the silent tracks sending a small
//! packet every 400 ms, as DTX does:
//! - `pair`: a room of two, the other one speaking (one track);
//! - `room40_speakers3`: a room of 40 with 3 speaking (39 tracks);
//! - `room40_speakers39`: a room of 40 all speaking at once (39 tracks; still at most five
//!   decoded);
//! - `shared40_speakers3`: a node's listener of a room of 40 callers, all on that node, 3
//!   speaking: 40 PCM inputs and 40 mix-minus outputs, no track (the whole room's tick; a
//!   call's share is a fortieth).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dialin::room::livekit::RoomMix;
use dialin_media::codec::{new_encoder, CodecConfig, CodecKind, SampleRate};
use dialin_media::mixer::ParticipantId;
use str0m::media::Mid;

const TICK: Duration = Duration::from_millis(20);
const FRAME: usize = 160;
/// Distinct packets per speaker, played in a loop.
const LOOP: usize = 50;

/// `LOOP` frames of a speech-like signal at 8 kHz, with a pitch of `f0`.
fn speech_pcm(f0: f64) -> Vec<Vec<i16>> {
    (0..LOOP)
        .map(|k| {
            (0..FRAME)
                .map(|i| {
                    let t = (k * FRAME + i) as f64 / 8000.0;
                    let envelope = 0.55 + 0.45 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
                    let voice: f64 = (1..=5)
                        .map(|h| {
                            (2.0 * std::f64::consts::PI * f0 * f64::from(h) * t).sin()
                                / f64::from(h)
                        })
                        .sum();
                    (6000.0 * envelope * voice) as i16
                })
                .collect()
        })
        .collect()
}

/// The same frames as Opus packets.
fn speech_packets(f0: f64) -> Vec<Vec<u8>> {
    let mut enc = new_encoder(CodecKind::Opus, SampleRate::Hz8000, &CodecConfig::default())
        .expect("an Opus encoder");
    speech_pcm(f0)
        .iter()
        .map(|pcm| {
            let mut out = [0u8; 400];
            let n = enc.encode(pcm, &mut out).expect("encode");
            out[..n].to_vec()
        })
        .collect()
}

/// A session's view of a room: `tracks` subscribed tracks of which the first `speakers`
/// speak, and the PCM inputs of a shared room's calls.
struct Room {
    mix: RoomMix,
    mids: Vec<Mid>,
    speech: Vec<Vec<Vec<u8>>>,
    quiet: Vec<u8>,
    inputs: Vec<(ParticipantId, bool)>,
    voice: Vec<Vec<i16>>,
    tick: u32,
    t0: Instant,
}

impl Room {
    /// `tracks` remote tracks (`speakers` of them speaking) and `inputs` PCM inputs (the
    /// first `speaking_inputs` of them speaking).
    fn new(tracks: usize, speakers: usize, inputs: usize, speaking_inputs: usize) -> Room {
        let mut enc = new_encoder(CodecKind::Opus, SampleRate::Hz8000, &CodecConfig::default())
            .expect("an Opus encoder");
        let mut quiet = [0u8; 400];
        let n = enc.encode(&[0; FRAME], &mut quiet).expect("encode");
        let mut mix = RoomMix::new(SampleRate::Hz8000);
        let inputs = (0..inputs)
            .map(|i| (mix.add_input().expect("an input"), i < speaking_inputs))
            .collect();
        Room {
            mix,
            mids: (0..tracks)
                .map(|k| Mid::from(format!("{k}").as_str()))
                .collect(),
            speech: (0..speakers.min(tracks))
                .map(|s| speech_packets(110.0 + 30.0 * s as f64))
                .collect(),
            quiet: quiet[..n].to_vec(),
            inputs,
            voice: speech_pcm(180.0),
            tick: 0,
            t0: Instant::now(),
        }
    }

    /// One 20 ms tick: this tick's packets arrive, the inputs speak, the room is mixed, and
    /// every input's mix is read. Returns a sample of the mix (so nothing is optimised away).
    fn tick(&mut self) -> i16 {
        let now = self.t0 + TICK * self.tick;
        let seq = self.tick as u16;
        let rtp = self.tick.wrapping_mul(960);
        let at = self.tick as usize % LOOP;
        for (k, mid) in self.mids.iter().enumerate() {
            match self.speech.get(k) {
                Some(packets) => self.mix.push_packet(*mid, seq, rtp, &packets[at], now),
                None if self.tick % 20 == 0 => {
                    self.mix
                        .push_packet(*mid, (self.tick / 20) as u16, rtp, &self.quiet, now)
                }
                None => {}
            }
        }
        for &(id, speaking) in &self.inputs {
            if speaking {
                self.mix.push_input(id, &self.voice[at]);
            }
        }
        self.mix.mix(now);
        let mut sample = self.mix.everyone().map_or(0, |m| m[at]);
        for &(id, _) in &self.inputs {
            if let Some(out) = self.mix.output_for(id) {
                sample ^= out[at];
            }
        }
        self.tick += 1;
        sample
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("room_tick");
    group
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    let cases: [(&str, usize, usize, usize, usize); 4] = [
        ("pair", 1, 1, 0, 0),
        ("room40_speakers3", 39, 3, 0, 0),
        ("room40_speakers39", 39, 39, 0, 0),
        ("shared40_speakers3", 0, 0, 40, 3),
    ];
    for (name, tracks, speakers, inputs, speaking) in cases {
        let mut room = Room::new(tracks, speakers, inputs, speaking);
        // Past the jitter buffers' start and the decoders' first choice.
        for _ in 0..100 {
            room.tick();
        }
        group.bench_function(name, |b| b.iter(|| std::hint::black_box(room.tick())));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
