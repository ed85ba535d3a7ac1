//! Tone and level measurement on recorded PCM, for asserting what a call carried.
//!
//! The end of the test call flow: a [`super::caller::Call`] records the audio it
//! receives, and tests ask here what is in it: the level of one frequency
//! ([`goertzel_level`], the generalized Goertzel algorithm evaluated at the exact
//! frequency, not at a DFT bin), the strongest frequency ([`dominant_frequency`]),
//! the overall level ([`rms_dbfs`]) and whether the signal looks like speech rather
//! than silence, a steady tone or steady noise ([`is_speech_like`]).
//!
//! Levels are in dBFS as AES17 defines them: a full-scale sine (peak ±32767) reads
//! 0 dBFS, whatever the measure (its RMS or its amplitude at one frequency), so a tone
//! played with `play_tone(hz, -20.0)` reads -20 dBFS in all three functions.

use std::f64::consts::PI;

/// Full scale of 16-bit PCM.
const FULL_SCALE: f64 = 32768.0;

/// What [`rms_dbfs`] and [`goertzel_level`] return for a signal with no energy.
pub const SILENCE_DBFS: f64 = -150.0;

/// Amplitude (peak) of the component of `samples` at `hz`, as a fraction of full scale.
///
/// Generalized Goertzel (the DTFT at `hz`) over a Hann window, so a tone between DFT bins
/// and other components far from `hz` leak little. For a pure sine at `hz` covering the
/// whole buffer it returns the sine's amplitude within a fraction of a dB.
pub fn goertzel_amplitude(samples: &[i16], rate: u32, hz: f64) -> f64 {
    let windowed = hann(samples);
    windowed_amplitude(&windowed, rate, hz)
}

/// `samples` scaled to full scale 1.0 and multiplied by a Hann window, with the window's
/// sum (a sine of amplitude A then has |X| = A * sum / 2).
struct Windowed {
    samples: Vec<f64>,
    window_sum: f64,
}

fn hann(samples: &[i16]) -> Windowed {
    let n = samples.len();
    let denom = n.saturating_sub(1).max(1) as f64;
    let mut window_sum = 0.0;
    let samples = samples
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let w = 0.5 - 0.5 * (2.0 * PI * i as f64 / denom).cos();
            window_sum += w;
            f64::from(x) / FULL_SCALE * w
        })
        .collect();
    Windowed {
        samples,
        window_sum,
    }
}

fn windowed_amplitude(x: &Windowed, rate: u32, hz: f64) -> f64 {
    if x.samples.len() < 2 || rate == 0 || x.window_sum <= 0.0 {
        return 0.0;
    }
    let coeff = 2.0 * (2.0 * PI * hz / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in &x.samples {
        let s0 = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    // |X(w)|^2 from the last two states.
    let power = (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0);
    2.0 * power.sqrt() / x.window_sum
}

/// Level of the component at `hz`, in dBFS (a full-scale sine at `hz` reads 0).
pub fn goertzel_level(samples: &[i16], rate: u32, hz: f64) -> f64 {
    to_db(goertzel_amplitude(samples, rate, hz))
}

/// The strongest frequency in `samples`, searched on a 10 Hz grid from 50 Hz to just
/// under Nyquist (at most 8 kHz: telephony tones and voices live below), then refined to
/// 0.5 Hz around the best grid point.
pub fn dominant_frequency(samples: &[i16], rate: u32) -> f32 {
    let x = hann(samples);
    let top = (f64::from(rate) / 2.0 - 20.0).min(8000.0);
    let mut best = (0.0f64, 0.0f64);
    let mut hz = 50.0;
    while hz < top {
        let a = windowed_amplitude(&x, rate, hz);
        if a > best.1 {
            best = (hz, a);
        }
        hz += 10.0;
    }
    let centre = best.0;
    let mut hz = (centre - 10.0).max(1.0);
    while hz <= centre + 10.0 {
        let a = windowed_amplitude(&x, rate, hz);
        if a > best.1 {
            best = (hz, a);
        }
        hz += 0.5;
    }
    best.0 as f32
}

/// RMS level in dBFS (AES17: a full-scale sine reads 0 dBFS); [`SILENCE_DBFS`] for
/// an empty or all-zero buffer.
pub fn rms_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return SILENCE_DBFS;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / samples.len() as f64).sqrt();
    to_db(rms * std::f64::consts::SQRT_2 / FULL_SCALE)
}

/// Whether `samples` look like speech: audible (above -50 dBFS RMS), with a level that
/// moves the way syllables and pauses make it move (the loud 20 ms frames at least 15 dB
/// above the quiet ones), and not a tone (no single frequency holds most of the energy).
/// Silence, a steady or beeping tone, and steady noise are not speech-like.
pub fn is_speech_like(samples: &[i16], rate: u32) -> bool {
    let frame = (rate / 50) as usize;
    if frame == 0 || samples.len() < frame * 10 {
        return false;
    }
    if rms_dbfs(samples) < -50.0 {
        return false;
    }
    let mut levels: Vec<f64> = samples.chunks_exact(frame).map(rms_dbfs).collect();
    levels.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        levels
            .get(((levels.len() - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(SILENCE_DBFS)
    };
    let (quiet, loud) = (pick(0.1), pick(0.9));
    if loud - quiet < 15.0 {
        return false;
    }
    // Tonal check on the loud part of the signal.
    let hz = dominant_frequency(samples, rate);
    let tone = goertzel_amplitude(samples, rate, f64::from(hz));
    let total_rms = 10f64.powf(rms_dbfs(samples) / 20.0);
    // For a pure tone, amplitude at its frequency equals the AES17 RMS level.
    tone < 0.5 * total_rms
}

/// A sine at `hz` with peak amplitude `dbfs` (AES17), `len` samples at `rate`, starting at
/// phase 0. For building expected signals in tests.
pub fn sine(rate: u32, hz: f64, dbfs: f64, len: usize) -> Vec<i16> {
    let amp = 10f64.powf(dbfs / 20.0) * 32767.0;
    (0..len)
        .map(|i| (amp * (2.0 * PI * hz * i as f64 / f64::from(rate)).sin()).round() as i16)
        .collect()
}

fn to_db(ratio: f64) -> f64 {
    if ratio <= 0.0 {
        SILENCE_DBFS
    } else {
        (20.0 * ratio.log10()).max(SILENCE_DBFS)
    }
}

/// Normalised correlation of `prompt` with `heard` starting at `off` (1: the same waveform).
pub fn correlation(heard: &[i16], prompt: &[i16], off: usize) -> f64 {
    let Some(seg) = heard.get(off..off + prompt.len()) else {
        return 0.0;
    };
    let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
    for (&a, &b) in seg.iter().zip(prompt) {
        let (a, b) = (f64::from(a), f64::from(b));
        xy += a * b;
        xx += a * a;
        yy += b * b;
    }
    xy / (xx * yy).sqrt().max(1.0)
}

/// Where `clip` (8 kHz) is played in `heard` (8 kHz) at or after sample `from`, if it is:
/// the 20 ms level envelopes place it to a frame, the waveform to the sample, and the whole
/// clip must then correlate above 0.9 (G.711 keeps a played prompt near 1).
pub fn find_clip(heard: &[i16], clip: &[i16], from: usize) -> Option<usize> {
    let env = |pcm: &[i16]| -> Vec<f64> {
        pcm.chunks(160)
            .map(|c| {
                10.0 * (c.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / c.len() as f64
                    + 1.0)
                    .log10()
            })
            .collect()
    };
    let first = from / 160;
    let (eh, ec) = (env(heard), env(clip));
    // The few best frame positions, each checked on the waveform.
    let mut lags: Vec<(usize, f64)> = (first..eh.len().saturating_sub(ec.len()))
        .map(|lag| {
            let score = -ec
                .iter()
                .zip(&eh[lag..])
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>();
            (lag, score)
        })
        .collect();
    lags.sort_by(|a, b| b.1.total_cmp(&a.1));
    lags.into_iter().take(5).find_map(|(lag, _)| {
        let around = lag * 160;
        let (off, c) = (around.saturating_sub(320)..around + 320)
            .map(|o| (o, correlation(heard, clip, o)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        (c > 0.9).then_some(off)
    })
}
