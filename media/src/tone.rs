//! Synthesised audio for a caller who is not hearing anyone: hold music, a comfort tone and
//! comfort noise, each produced 20 ms at a time at 8 or 16 kHz, without allocation.
//!
//! Sits where a prompt would on the outbound side of a call leg (`generator.next_frame →
//! encode → RTP`): hold music while the caller waits alone in a room, a soft periodic tone to
//! say the line is alive, comfort noise so that a silent room does not sound like a dead line
//! (the purpose RFC 3389 §1 gives comfort noise). Everything is generated from oscillators and
//! a PRNG, so nothing here is a recording and nothing needs a licence.
//!
//! Oscillators are complex rotations (one complex multiply per sample, renormalised each
//! frame) rather than `sin()` calls, so a generator costs a few hundred nanoseconds per frame.
//! [`HoldMusic::render_loop`] renders one seamless cycle once, so that thousands of callers on
//! hold can share one buffer through [`PromptPlayer::play_looped`](crate::prompt::PromptPlayer::play_looped).
//!
//! Two short chimes tell a caller in a room that someone joined ([`join_cue`], rising) or left
//! ([`leave_cue`], falling), since a phone caller cannot see the participant list. The prompt
//! catalog renders them once at load and plays them as clips.

use std::f32::consts::TAU;
use std::sync::Arc;

use crate::prompt::SampleRate;

/// Hold-music chords, voiced between 260 Hz and 660 Hz so they survive the 300–3400 Hz
/// telephone band (ITU-T G.712): Cmaj7, Am7, Fmaj7, G6. Equal temperament, A4 = 440 Hz.
const CHORDS: [[f32; 4]; 4] = [
    [261.63, 329.63, 392.00, 493.88],
    [261.63, 329.63, 392.00, 440.00],
    [349.23, 440.00, 523.25, 659.26],
    [392.00, 493.88, 587.33, 659.26],
];
/// A chime an octave above two notes of each chord, one per half chord.
const CHIMES: [[f32; 2]; 4] = [
    [987.77, 784.00],
    [880.00, 659.26],
    [1046.50, 880.00],
    [1174.66, 987.77],
];
/// Seconds each chord lasts; the loop is `CHORDS.len()` chords long (8 s).
const CHORD_SECONDS: u32 = 2;
/// Peak amplitude of one chord voice. Four voices with their harmonic plus the chime peak
/// below 4 000 (about −18 dBFS): background level, well under speech.
const VOICE_AMPLITUDE: f32 = 650.0;
/// Relative level of each voice's second harmonic, for a warmer tone than a bare sine.
const HARMONIC: f32 = 0.25;
const CHIME_AMPLITUDE: f32 = 350.0;
/// Envelope times, in seconds.
const ATTACK_S: f32 = 0.25;
const RELEASE_S: f32 = 0.25;
const DECAY_TAU_S: f32 = 1.6;
const CHIME_ATTACK_S: f32 = 0.01;
const CHIME_TAU_S: f32 = 0.3;

/// A sine oscillator as a unit phasor rotated each sample.
#[derive(Debug, Clone, Copy, Default)]
struct Oscillator {
    re: f32,
    im: f32,
    step_re: f32,
    step_im: f32,
}

impl Oscillator {
    fn new(hz: f32, rate: u32) -> Self {
        let w = TAU * hz / rate as f32;
        Self {
            re: 1.0,
            im: 0.0,
            step_re: w.cos(),
            step_im: w.sin(),
        }
    }

    /// The current sine value, then advances one sample.
    fn next(&mut self) -> f32 {
        let out = self.im;
        let re = self.re * self.step_re - self.im * self.step_im;
        self.im = self.re * self.step_im + self.im * self.step_re;
        self.re = re;
        out
    }

    /// Pulls the phasor back onto the unit circle; rounding makes it drift otherwise.
    fn renormalise(&mut self) {
        let norm = (self.re * self.re + self.im * self.im).sqrt();
        if norm > 0.0 {
            self.re /= norm;
            self.im /= norm;
        }
    }
}

fn to_sample(x: f32) -> i16 {
    x.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
}

/// Soft synthesised hold music: four chords with swelling envelopes and a chime, looping
/// every 8 seconds without a click at the seam.
#[derive(Debug, Clone)]
pub struct HoldMusic {
    rate: u32,
    chord_len: u32,
    /// Sample position in the loop.
    position: u32,
    voices: [Oscillator; 8],
    chime: Oscillator,
    decay: f32,
    decay_step: f32,
    chime_decay: f32,
    chime_step: f32,
}

impl HoldMusic {
    pub fn new(rate: SampleRate) -> Self {
        let hz = rate.hz();
        let mut music = Self {
            rate: hz,
            chord_len: hz * CHORD_SECONDS,
            position: 0,
            voices: [Oscillator::default(); 8],
            chime: Oscillator::default(),
            decay: 1.0,
            decay_step: (-1.0 / (DECAY_TAU_S * hz as f32)).exp(),
            chime_decay: 1.0,
            chime_step: (-1.0 / (CHIME_TAU_S * hz as f32)).exp(),
        };
        music.start_chord(0);
        music.start_chime(0, 0);
        music
    }

    /// Samples in one cycle of the music.
    pub fn loop_len(&self) -> usize {
        (self.chord_len as usize) * CHORDS.len()
    }

    /// Renders one full cycle, to be shared and played with
    /// [`PromptPlayer::play_looped`](crate::prompt::PromptPlayer::play_looped).
    pub fn render_loop(rate: SampleRate) -> Arc<[i16]> {
        let mut music = Self::new(rate);
        let mut samples = vec![0i16; music.loop_len()];
        for frame in samples.chunks_mut(rate.frame_len()) {
            music.next_frame(frame);
        }
        samples.into()
    }

    fn start_chord(&mut self, chord: usize) {
        let notes = CHORDS.get(chord).copied().unwrap_or(CHORDS[0]);
        for (pair, hz) in self.voices.chunks_exact_mut(2).zip(notes) {
            if let [fundamental, harmonic] = pair {
                *fundamental = Oscillator::new(hz, self.rate);
                *harmonic = Oscillator::new(2.0 * hz, self.rate);
            }
        }
        self.decay = 1.0;
    }

    fn start_chime(&mut self, chord: usize, half: usize) {
        let hz = CHIMES
            .get(chord)
            .and_then(|c| c.get(half))
            .copied()
            .unwrap_or(CHIMES[0][0]);
        self.chime = Oscillator::new(hz, self.rate);
        self.chime_decay = 1.0;
    }

    /// Writes the next `frame.len()` samples.
    pub fn next_frame(&mut self, frame: &mut [i16]) {
        let rate = self.rate as f32;
        let half_len = self.chord_len / 2;
        for out in frame.iter_mut() {
            let in_chord = self.position % self.chord_len;
            let chord = (self.position / self.chord_len) as usize;
            if in_chord == 0 {
                self.start_chord(chord);
            }
            if in_chord == 0 || in_chord == half_len {
                self.start_chime(chord, (in_chord / half_len) as usize);
            }
            let t = in_chord as f32 / rate;
            let left = (self.chord_len - in_chord) as f32 / rate;
            let envelope = (t / ATTACK_S).min(1.0) * (left / RELEASE_S).min(1.0) * self.decay;
            self.decay *= self.decay_step;

            let mut chord_sum = 0.0;
            for pair in self.voices.chunks_exact_mut(2) {
                if let [fundamental, harmonic] = pair {
                    chord_sum += fundamental.next() + HARMONIC * harmonic.next();
                }
            }
            let t_chime = (in_chord % half_len) as f32 / rate;
            let chime_env = (t_chime / CHIME_ATTACK_S).min(1.0) * self.chime_decay;
            self.chime_decay *= self.chime_step;
            let chime = self.chime.next() * chime_env * CHIME_AMPLITUDE;

            *out = to_sample(chord_sum * envelope * VOICE_AMPLITUDE + chime);
            self.position = (self.position + 1) % (self.chord_len * CHORDS.len() as u32);
        }
        for voice in &mut self.voices {
            voice.renormalise();
        }
        self.chime.renormalise();
    }
}

/// Default comfort tone: 440 Hz (inside the 400–450 Hz band ITU-T E.180 recommends for
/// call-progress tones, so it sounds like "the network"), 200 ms every 5 s, at −30 dBFS:
/// audible on a quiet line, never intrusive.
const COMFORT_TONE_HZ: f32 = 440.0;
const COMFORT_TONE_ON_MS: u32 = 200;
const COMFORT_TONE_PERIOD_MS: u32 = 5_000;
const COMFORT_TONE_AMPLITUDE: f32 = 1_036.0; // 32767 × 10^(−30/20)
/// Raised-cosine ramps at each end of a beep keep it free of clicks.
const COMFORT_TONE_RAMP_MS: u32 = 10;

/// A soft periodic beep that tells a lone caller the line is still up.
#[derive(Debug, Clone)]
pub struct ComfortTone {
    oscillator: Oscillator,
    position: u32,
    on_len: u32,
    period_len: u32,
    ramp_len: u32,
}

impl ComfortTone {
    pub fn new(rate: SampleRate) -> Self {
        let per_ms = rate.hz() / 1_000;
        Self {
            oscillator: Oscillator::new(COMFORT_TONE_HZ, rate.hz()),
            position: 0,
            on_len: COMFORT_TONE_ON_MS * per_ms,
            period_len: COMFORT_TONE_PERIOD_MS * per_ms,
            ramp_len: COMFORT_TONE_RAMP_MS * per_ms,
        }
    }

    /// Writes the next `frame.len()` samples.
    pub fn next_frame(&mut self, frame: &mut [i16]) {
        for out in frame.iter_mut() {
            let value = self.oscillator.next();
            *out = if self.position < self.on_len {
                let edge = self.position.min(self.on_len - 1 - self.position);
                let ramp = if edge < self.ramp_len {
                    0.5 - 0.5 * (std::f32::consts::PI * edge as f32 / self.ramp_len as f32).cos()
                } else {
                    1.0
                };
                to_sample(value * ramp * COMFORT_TONE_AMPLITUDE)
            } else {
                0
            };
            self.position = (self.position + 1) % self.period_len;
        }
        self.oscillator.renormalise();
    }
}

/// Spectrum of comfort noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseColor {
    /// Flat spectrum.
    White,
    /// −3 dB per octave: sounds like a quiet room rather than a hiss.
    Pink,
}

/// Default comfort-noise level: −60 dBov, quiet line noise (RFC 3389 §3 expresses the level
/// in −dBov; −60 is typical of a quiet office line).
pub const DEFAULT_NOISE_DBOV: f32 = -60.0;

/// Low-level random noise at a set RMS level.
#[derive(Debug, Clone)]
pub struct ComfortNoise {
    state: u32,
    color: NoiseColor,
    pink: [f32; 3],
    scale: f32,
}

impl ComfortNoise {
    /// Noise of `color` whose RMS is `level_dbov` relative to full scale (0 dBov = 32767 RMS),
    /// clamped to −90..0 dBov.
    pub fn new(color: NoiseColor, level_dbov: f32) -> Self {
        let mut noise = Self {
            state: 0x9E37_79B9,
            color,
            pink: [0.0; 3],
            scale: 1.0,
        };
        // Calibrate the filter's output level once on a second of its own output, so that the
        // RMS asked for is the RMS produced whatever the colour.
        let n = 16_000;
        let power: f32 = (0..n).map(|_| noise.unit().powi(2)).sum::<f32>() / n as f32;
        let target = 32_767.0 * 10f32.powf(level_dbov.clamp(-90.0, 0.0) / 20.0);
        noise.scale = if power > 0.0 {
            target / power.sqrt()
        } else {
            0.0
        };
        noise
    }

    /// xorshift32 (Marsaglia 2003), mapped to [−1, 1), then coloured.
    fn unit(&mut self) -> f32 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let white = (self.state as f32 / u32::MAX as f32) * 2.0 - 1.0;
        match self.color {
            NoiseColor::White => white,
            NoiseColor::Pink => {
                // Three one-pole lowpasses spaced to approximate 1/f (P. Kellett's
                // "economy" pink filter, ±0.5 dB above 9 Hz at 44.1 kHz). At 8–16 kHz its
                // poles move up but the slope over the voice band stays close to −3 dB per
                // octave, which is all comfort noise needs.
                let [b0, b1, b2] = &mut self.pink;
                *b0 = 0.99765 * *b0 + white * 0.099_046;
                *b1 = 0.96300 * *b1 + white * 0.296_516_4;
                *b2 = 0.57000 * *b2 + white * 1.052_691_3;
                *b0 + *b1 + *b2 + white * 0.1848
            }
        }
    }

    /// Writes the next `frame.len()` samples.
    pub fn next_frame(&mut self, frame: &mut [i16]) {
        for out in frame.iter_mut() {
            *out = to_sample(self.unit() * self.scale);
        }
    }
}

/// Room cue notes: E5 and A5 (a rising fourth), equal temperament, A4 = 440 Hz. Both sit well
/// inside the 300–3400 Hz telephone band (ITU-T G.712) and above most speech fundamentals,
/// so a cue stands out against voices without being shrill.
const CUE_LOW_HZ: f32 = 659.26;
const CUE_HIGH_HZ: f32 = 880.00;
/// Each note lasts 90 ms: long enough to hear a pitch, short enough not to mask speech.
const CUE_NOTE_MS: u32 = 90;
/// −18 dBFS peak (32767 × 10^(−18/20)), the hold music's level: a background sound.
const CUE_AMPLITUDE: f32 = 4_125.0;
/// Raised-cosine attack and release of each note, so neither note clicks.
const CUE_ATTACK_MS: u32 = 10;
const CUE_RELEASE_MS: u32 = 30;

/// The chime played when someone joins the room: two notes, rising. Render once and share.
pub fn join_cue(rate: SampleRate) -> Arc<[i16]> {
    render_cue(rate, [CUE_LOW_HZ, CUE_HIGH_HZ])
}

/// The chime played when someone leaves the room: the join chime's notes, falling.
pub fn leave_cue(rate: SampleRate) -> Arc<[i16]> {
    render_cue(rate, [CUE_HIGH_HZ, CUE_LOW_HZ])
}

fn render_cue(rate: SampleRate, notes: [f32; 2]) -> Arc<[i16]> {
    let per_ms = rate.hz() / 1_000;
    let note_len = CUE_NOTE_MS * per_ms;
    let attack = CUE_ATTACK_MS * per_ms;
    let release = CUE_RELEASE_MS * per_ms;
    let ramp = |edge: u32, len: u32| {
        if edge < len {
            0.5 - 0.5 * (std::f32::consts::PI * edge as f32 / len as f32).cos()
        } else {
            1.0
        }
    };
    let mut samples = Vec::with_capacity((note_len as usize) * notes.len());
    for hz in notes {
        let mut oscillator = Oscillator::new(hz, rate.hz());
        for n in 0..note_len {
            let envelope = ramp(n, attack) * ramp(note_len - 1 - n, release);
            samples.push(to_sample(oscillator.next() * envelope * CUE_AMPLITUDE));
        }
    }
    samples.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn rotating_oscillator_matches_sine() {
        let mut osc = Oscillator::new(440.0, 8_000);
        for n in 0..8_000 {
            if n % 160 == 0 {
                osc.renormalise();
            }
            let expected = (TAU * 440.0 * n as f32 / 8_000.0).sin();
            assert!((osc.next() - expected).abs() < 1e-2, "sample {n}");
        }
    }

    #[test]
    fn comfort_noise_has_the_requested_level() {
        for color in [NoiseColor::White, NoiseColor::Pink] {
            let mut noise = ComfortNoise::new(color, -40.0);
            let mut samples = vec![0i16; 16_000];
            for frame in samples.chunks_mut(320) {
                noise.next_frame(frame);
            }
            let db = 20.0 * (rms(&samples) / 32_767.0).log10();
            assert!((db + 40.0).abs() < 1.0, "{color:?}: {db} dBov");
        }
    }

    #[test]
    fn comfort_tone_beeps_then_stays_silent_for_the_rest_of_the_period() {
        let mut tone = ComfortTone::new(SampleRate::Hz8000);
        let mut samples = vec![0i16; 8_000 * 5];
        for frame in samples.chunks_mut(160) {
            tone.next_frame(frame);
        }
        let on = &samples[..1_600];
        assert!(rms(on) > 500.0 && on.iter().all(|s| s.abs() <= 1_040));
        assert!(samples[1_600..].iter().all(|&s| s == 0));
    }

    #[test]
    fn hold_music_loop_equals_the_streamed_cycle() {
        let rendered = HoldMusic::render_loop(SampleRate::Hz8000);
        let mut music = HoldMusic::new(SampleRate::Hz8000);
        let mut frame = [0i16; 160];
        for (n, expected) in rendered.chunks(160).enumerate().take(100) {
            music.next_frame(&mut frame);
            assert_eq!(&frame[..], expected, "frame {n}");
        }
    }

    /// Power of `x` at `hz` (Goertzel), normalised by length.
    fn goertzel(x: &[i16], hz: f32, rate: u32) -> f64 {
        let coeff = 2.0 * f64::from(TAU * hz / rate as f32).cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &sample in x {
            let s0 = f64::from(sample) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (x.len() as f64).powi(2)
    }

    fn pitch_of_halves(cue: &[i16], rate: u32) -> [(f64, f64); 2] {
        let (first, second) = cue.split_at(cue.len() / 2);
        [first, second].map(|half| {
            (
                goertzel(half, CUE_LOW_HZ, rate),
                goertzel(half, CUE_HIGH_HZ, rate),
            )
        })
    }

    #[test]
    fn join_cue_rises_and_leave_cue_falls() {
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
            let [first, second] = pitch_of_halves(&join_cue(rate), rate.hz());
            assert!(
                first.0 > 10.0 * first.1,
                "{rate:?} join first half {first:?}"
            );
            assert!(
                second.1 > 10.0 * second.0,
                "{rate:?} join second half {second:?}"
            );
            let [first, second] = pitch_of_halves(&leave_cue(rate), rate.hz());
            assert!(
                first.1 > 10.0 * first.0,
                "{rate:?} leave first half {first:?}"
            );
            assert!(
                second.0 > 10.0 * second.1,
                "{rate:?} leave second half {second:?}"
            );
        }
    }

    #[test]
    fn cues_are_short_soft_and_start_and_end_quietly() {
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
            for cue in [join_cue(rate), leave_cue(rate)] {
                // 180 ms: nine 20 ms frames.
                assert_eq!(cue.len(), 9 * rate.frame_len(), "{rate:?}");
                let peak = cue.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
                assert!((3_500..=4_126).contains(&peak), "{rate:?}: peak {peak}");
                let edge = rate.frame_len() / 20; // 1 ms
                assert!(cue[..edge].iter().all(|s| s.abs() < 200), "{rate:?} attack");
                assert!(
                    cue[cue.len() - edge..].iter().all(|s| s.abs() < 200),
                    "{rate:?} release"
                );
                // The notes join quietly too: each has its own release and attack.
                let middle = cue.len() / 2;
                assert!(cue[middle - edge..middle + edge]
                    .iter()
                    .all(|s| s.abs() < 200));
            }
        }
    }
}
