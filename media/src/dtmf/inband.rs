//! In-band DTMF: finds key tones in the caller's decoded audio (ITU-T Q.23 frequencies,
//! Q.24 acceptance limits) with Goertzel filters.
//!
//! Sits after the jitter buffer and decoder, on the caller's 8 kHz (G.711) or 16 kHz
//! (G.722) PCM, for trunks that send digits as tones rather than RFC 4733 events. Digits
//! go to [`super::dedup`].
//!
//! How it decides, per block of 12.75 ms (102 samples at 8 kHz):
//! - Goertzel energy at the eight Q.23 frequencies, split in two half-blocks, and at their
//!   high-group second harmonics; the strongest row and column tones are the candidate pair.
//! - Each tone above a minimum level; twist (column vs row level) within limits; each the
//!   clear peak of its group; together most of the block's energy; second harmonics weak
//!   (speech vowels are rich in harmonics, key tones are not); both half-blocks equally
//!   strong, so a block only partly covered by a tone does not count.
//! - A tone is confirmed by two consecutive such blocks, whose phase advance gives its
//!   frequency to a few hertz: off by more than 2.5 % (Q.24: accept ±1.5 %, reject ±3.5 %)
//!   is rejected.
//! - One digit per tone: once confirmed, the digit is emitted and the detector waits for
//!   two blocks without that tone (a pause) before it accepts another.
//!
//! A 40 ms tone always contains two whole blocks (3 × 12.75 ms < 40 ms) and a 40 ms pause
//! two tone-free ones, so Q.24's shortest signals are found; a 20 ms tone never fills two
//! consecutive blocks, so it is rejected.

use std::f32::consts::PI;

use thiserror::Error;

use super::{Digit, COLUMN_HZ, ROW_HZ};

/// Sample rates this detector accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InbandError {
    #[error("in-band DTMF detection needs 8000 to 48000 Hz audio, got {0} Hz")]
    UnsupportedRate(u32),
}

/// Block length in seconds: 102 samples at 8 kHz. Short enough that a 40 ms tone holds
/// two whole blocks (Q.24 minimum duration), long enough (78 Hz bins) to separate the
/// Q.23 frequencies, which are at least 73 Hz apart.
const BLOCK_SECONDS: f32 = 102.0 / 8000.0;

/// G.711 reference level: a full-scale sine is +3.17 dBm0 (ITU-T G.711 Table 5/6), so
/// 0 dBm0 is a sine of amplitude 10^(−3.17/20) of full scale; its power (A²/2), with
/// samples scaled to ±1.0.
const DBM0_POWER: f32 = 0.5 * 0.694_3 * 0.694_3;

/// Weakest tone accepted, per frequency, in dBm0. Q.24 leaves sensitivity to each
/// administration (typically −25 to −30 dBm0 per tone); −36 dBm0 gives margin for line
/// loss while staying well above idle-channel noise.
const MIN_TONE_DBM0: f32 = -36.0;

/// Twist limits (column level minus row level), in dB. Q.24 Table 4 values run from
/// about +4/−8 dB; we accept 8 dB either way so that ±6 dB always passes with room for
/// measurement error.
const MAX_REVERSE_TWIST_DB: f32 = 8.0;
const MAX_NORMAL_TWIST_DB: f32 = 8.0;

/// Each tone must exceed every other frequency of its group by this much.
const RELATIVE_PEAK_DB: f32 = 6.0;

/// The two tones must hold this share of the block's energy. A clean tone pair at the
/// Q.24 frequency limit (±1.5 %) keeps above 0.8 even in 15 dB white noise; speech spreads
/// its energy over many harmonics and formants.
const MIN_TONE_ENERGY_RATIO: f32 = 0.65;

/// Second harmonic must be this far below its fundamental (talk-off guard). Checked for
/// the high group only: the low group's harmonics (1394, 1540, 1704 Hz) lie within one
/// bin of high-group tones (1336, 1477, 1633 Hz), so they would measure the other key
/// tone, not a harmonic.
const HARMONIC_REJECT_DB: f32 = 10.0;

/// The two half-blocks of a tone must agree within this, in dB: a block only partly
/// covered by a tone (its start or end) is not evidence of the tone.
const HALF_BALANCE_DB: f32 = 4.0;

/// Largest frequency error accepted: halfway between Q.24's must-accept ±1.5 % and
/// must-reject ±3.5 %.
const MAX_FREQUENCY_ERROR: f32 = 0.025;

/// Blocks without the current tone needed before another digit can start (a pause).
const RELEASE_BLOCKS: u8 = 2;

/// Detected digits not yet taken by [`InbandDetector::poll_digit`].
const QUEUE: usize = 8;

#[derive(Debug, Clone, Copy, Default)]
struct Complex {
    re: f32,
    im: f32,
}

impl Complex {
    fn mul(self, o: Complex) -> Complex {
        Complex {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
    fn conj(self) -> Complex {
        Complex {
            re: self.re,
            im: -self.im,
        }
    }
    fn add(self, o: Complex) -> Complex {
        Complex {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
    fn norm_sqr(self) -> f32 {
        self.re * self.re + self.im * self.im
    }
    fn arg(self) -> f32 {
        self.im.atan2(self.re)
    }
    fn from_angle(a: f32) -> Complex {
        Complex {
            re: a.cos(),
            im: a.sin(),
        }
    }
}

/// Number of Goertzel filters: the eight Q.23 tones, then the four high-group second
/// harmonics.
const FILTERS: usize = 12;

/// The detector's Goertzel filters, stored as parallel arrays so that the per-sample
/// update of all twelve compiles to a few vector instructions.
#[derive(Debug, Clone, Copy, Default)]
struct GoertzelBank {
    coeff: [f32; FILTERS],
    s1: [f32; FILTERS],
    s2: [f32; FILTERS],
}

impl GoertzelBank {
    fn new(omegas: [f32; FILTERS]) -> GoertzelBank {
        GoertzelBank {
            coeff: omegas.map(|w| 2.0 * w.cos()),
            ..GoertzelBank::default()
        }
    }

    /// Runs every filter over `samples`; returns their summed energy (Σx²).
    fn run(&mut self, samples: &[i16]) -> f32 {
        let mut energy = 0.0;
        for &sample in samples {
            let x = f32::from(sample) / 32768.0;
            energy += x * x;
            for k in 0..FILTERS {
                let s = x + self.coeff[k] * self.s1[k] - self.s2[k];
                self.s2[k] = self.s1[k];
                self.s1[k] = s;
            }
        }
        energy
    }

    fn clear(&mut self) {
        self.s1 = [0.0; FILTERS];
        self.s2 = [0.0; FILTERS];
    }

    fn reset(&mut self, k: usize) {
        if let (Some(a), Some(b)) = (self.s1.get_mut(k), self.s2.get_mut(k)) {
            *a = 0.0;
            *b = 0.0;
        }
    }

    /// |X|² of filter `k` since its last reset; resets it.
    fn take_energy(&mut self, k: usize) -> f32 {
        let (s1, s2, c) = (
            self.s1.get(k).copied().unwrap_or(0.0),
            self.s2.get(k).copied().unwrap_or(0.0),
            self.coeff.get(k).copied().unwrap_or(0.0),
        );
        self.reset(k);
        s1 * s1 + s2 * s2 - c * s1 * s2
    }

    /// Complex DFT value of filter `k` since its last reset, phase-referenced to the last
    /// sample: Σ x[n]·e^{−jω(n−(len−1))}, given `unit` = e^{−jω}. Resets it.
    fn take_complex(&mut self, k: usize, unit: Complex) -> Complex {
        let s1 = self.s1.get(k).copied().unwrap_or(0.0);
        let s2 = self.s2.get(k).copied().unwrap_or(0.0);
        self.reset(k);
        // y = s1 − e^{−jω} s2
        Complex {
            re: s1 - unit.re * s2,
            im: -unit.im * s2,
        }
    }
}

/// Per-frequency constants: the filter, and the rotations that move the Goertzel
/// outputs to a phase reference at the block's first sample.
#[derive(Debug, Clone, Copy, Default)]
struct Tone {
    hz: f32,
    omega: f32,
    /// e^{−jω}
    unit: Complex,
    /// e^{−jω(M−1)}: half-block output → reference at the half's first sample.
    half_rewind: Complex,
    /// e^{−jωM}: second half's first sample → block's first sample.
    half_shift: Complex,
    first_half: Complex,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    digit: Digit,
    row: Complex,
    column: Complex,
    row_offset_hz: f32,
    column_offset_hz: f32,
}

/// Goertzel DTMF detector for one audio stream.
#[derive(Debug, Clone)]
pub struct InbandDetector {
    sample_rate: f32,
    block: usize,
    half: usize,
    filled: usize,
    energy: f32,
    tones: [Tone; 8],
    filters: GoertzelBank,
    previous: Option<Candidate>,
    held: Option<Digit>,
    misses: u8,
    queue: [Option<Digit>; QUEUE],
    queue_head: usize,
    queue_len: usize,
}

impl InbandDetector {
    /// A detector for `sample_rate` Hz mono PCM (8000 for G.711, 16000 for G.722).
    pub fn new(sample_rate: u32) -> Result<InbandDetector, InbandError> {
        if !(8000..=48000).contains(&sample_rate) {
            return Err(InbandError::UnsupportedRate(sample_rate));
        }
        let fs = sample_rate as f32;
        let half = ((fs * BLOCK_SECONDS) / 2.0).round() as usize;
        let block = half * 2;
        let mut tones = [Tone::default(); 8];
        for (tone, hz) in tones.iter_mut().zip(ROW_HZ.iter().chain(COLUMN_HZ.iter())) {
            let omega = 2.0 * PI * hz / fs;
            *tone = Tone {
                hz: *hz,
                omega,
                unit: Complex::from_angle(-omega),
                half_rewind: Complex::from_angle(-omega * (half as f32 - 1.0)),
                half_shift: Complex::from_angle(-omega * half as f32),
                first_half: Complex::default(),
            };
        }
        let mut omegas = [0.0f32; FILTERS];
        for (w, hz) in omegas.iter_mut().zip(ROW_HZ.iter().chain(COLUMN_HZ.iter())) {
            *w = 2.0 * PI * hz / fs;
        }
        for (w, hz) in omegas.iter_mut().skip(8).zip(COLUMN_HZ) {
            *w = 2.0 * 2.0 * PI * hz / fs;
        }
        Ok(InbandDetector {
            sample_rate: fs,
            block,
            half,
            filled: 0,
            energy: 0.0,
            tones,
            filters: GoertzelBank::new(omegas),
            previous: None,
            held: None,
            misses: 0,
            queue: [None; QUEUE],
            queue_head: 0,
            queue_len: 0,
        })
    }

    /// Feeds one frame (any length) and returns the digit it completed, if any. With
    /// frames of up to 50 ms at most one digit can complete per frame (a digit needs a
    /// tone and a pause of two blocks each); longer inputs queue further digits for
    /// [`InbandDetector::poll_digit`].
    pub fn process(&mut self, samples: &[i16]) -> Option<Digit> {
        self.push_samples(samples);
        self.poll_digit()
    }

    /// Feeds samples; detected digits are queued for [`InbandDetector::poll_digit`].
    pub fn push_samples(&mut self, samples: &[i16]) {
        let mut rest = samples;
        while !rest.is_empty() {
            let boundary = if self.filled < self.half {
                self.half
            } else {
                self.block
            };
            let (now, later) = rest.split_at((boundary - self.filled).min(rest.len()));
            self.energy += self.filters.run(now);
            self.filled += now.len();
            rest = later;
            if self.filled == self.half {
                for (k, tone) in self.tones.iter_mut().enumerate() {
                    tone.first_half = self
                        .filters
                        .take_complex(k, tone.unit)
                        .mul(tone.half_rewind);
                }
            } else if self.filled == self.block {
                self.end_block();
            }
        }
    }

    /// Next detected digit, oldest first.
    pub fn poll_digit(&mut self) -> Option<Digit> {
        if self.queue_len == 0 {
            return None;
        }
        let digit = self.queue.get_mut(self.queue_head).and_then(Option::take);
        self.queue_head = (self.queue_head + 1) % QUEUE;
        self.queue_len -= 1;
        digit
    }

    /// Forgets any tone in progress (e.g. after a stream change).
    pub fn reset(&mut self) {
        self.filters.clear();
        self.filled = 0;
        self.energy = 0.0;
        self.previous = None;
        self.held = None;
        self.misses = 0;
    }

    fn end_block(&mut self) {
        let candidate = self.analyse_block();
        self.filled = 0;
        self.energy = 0.0;

        let confirmed = match (candidate, self.previous) {
            (Some(now), Some(before)) if now.digit == before.digit => {
                self.frequency_ok(&before, &now).then_some(now.digit)
            }
            _ => None,
        };
        self.previous = candidate;

        match self.held {
            Some(held) => {
                if candidate.map(|c| c.digit) == Some(held) {
                    self.misses = 0;
                } else {
                    self.misses += 1;
                    if self.misses >= RELEASE_BLOCKS {
                        self.held = None;
                        self.misses = 0;
                    }
                }
            }
            None => {
                if let Some(digit) = confirmed {
                    self.held = Some(digit);
                    self.misses = 0;
                    self.enqueue(digit);
                }
            }
        }
    }

    fn enqueue(&mut self, digit: Digit) {
        if self.queue_len == QUEUE {
            // Nobody is polling; keep the newest digits.
            self.queue_head = (self.queue_head + 1) % QUEUE;
            self.queue_len -= 1;
        }
        let tail = (self.queue_head + self.queue_len) % QUEUE;
        if let Some(slot) = self.queue.get_mut(tail) {
            *slot = Some(digit);
            self.queue_len += 1;
        }
    }

    /// Checks one block; returns the key pair it holds if every per-block test passes.
    fn analyse_block(&mut self) -> Option<Candidate> {
        let n = self.block as f32;
        let block_power = self.energy / n;
        // Power of a sine from its DFT value: |X|² = (A·N/2)², power = A²/2 = 2|X|²/N².
        let scale = 2.0 / (n * n);
        let mut halves = [(Complex::default(), Complex::default()); 8];
        let mut power = [0.0f32; 8];
        for (i, tone) in self.tones.iter().enumerate() {
            let second = self
                .filters
                .take_complex(i, tone.unit)
                .mul(tone.half_rewind)
                .mul(tone.half_shift);
            let first = tone.first_half;
            if let (Some(h), Some(p)) = (halves.get_mut(i), power.get_mut(i)) {
                *h = (first, second);
                *p = first.add(second).norm_sqr() * scale;
            }
        }
        let (rows, columns) = power.split_at(4);
        let mut harmonic = [0.0f32; 4];
        for (k, h) in harmonic.iter_mut().enumerate() {
            *h = self.filters.take_energy(8 + k) * scale;
        }
        let row = strongest(rows)?;
        let column = strongest(columns)?;
        let col_index = column + 4;
        let p_row = *power.get(row)?;
        let p_col = *power.get(col_index)?;

        let min_power = DBM0_POWER * db_to_ratio(MIN_TONE_DBM0);
        if p_row < min_power || p_col < min_power {
            return None;
        }
        let twist = p_col / p_row;
        if twist > db_to_ratio(MAX_REVERSE_TWIST_DB) || twist < db_to_ratio(-MAX_NORMAL_TWIST_DB) {
            return None;
        }
        let peak = db_to_ratio(-RELATIVE_PEAK_DB);
        let clear_peak = |group: &[f32], best: usize, p: f32| {
            group
                .iter()
                .enumerate()
                .all(|(i, &q)| i == best || q <= p * peak)
        };
        if !clear_peak(rows, row, p_row) || !clear_peak(columns, column, p_col) {
            return None;
        }
        if p_row + p_col < MIN_TONE_ENERGY_RATIO * block_power {
            return None;
        }
        let harmonic_limit = db_to_ratio(-HARMONIC_REJECT_DB);
        if *harmonic.get(column)? > p_col * harmonic_limit {
            return None;
        }
        let balance = db_to_ratio(HALF_BALANCE_DB);
        let (row_a, row_b) = *halves.get(row)?;
        let (col_a, col_b) = *halves.get(col_index)?;
        for (a, b) in [(row_a, row_b), (col_a, col_b)] {
            let (ea, eb) = (a.norm_sqr(), b.norm_sqr());
            if ea > eb * balance || eb > ea * balance {
                return None;
            }
        }
        // Coarse frequency offset from the phase advance between the half-blocks.
        let half_seconds = self.half as f32 / self.sample_rate;
        let coarse = |a: Complex, b: Complex| b.mul(a.conj()).arg() / (2.0 * PI * half_seconds);
        Some(Candidate {
            digit: Digit::from_matrix(row, column)?,
            row: row_a.add(row_b),
            column: col_a.add(col_b),
            row_offset_hz: coarse(row_a, row_b),
            column_offset_hz: coarse(col_a, col_b),
        })
    }

    /// Frequency check over two consecutive blocks of the same key: the phase advance of
    /// each tone from one block to the next measures its frequency precisely; the coarse
    /// half-block estimate resolves the ambiguity of one bin width.
    fn frequency_ok(&self, before: &Candidate, now: &Candidate) -> bool {
        let block_seconds = self.block as f32 / self.sample_rate;
        let bin_hz = 1.0 / block_seconds;
        let (row, column) = (now.digit.row(), now.digit.column() + 4);
        let check = |index: usize, prev: Complex, cur: Complex, coarse_hz: f32| -> bool {
            let Some(tone) = self.tones.get(index) else {
                return false;
            };
            // Each block's DFT is referenced to its own first sample, so a tone exactly
            // on the nominal frequency advances by ω·N between blocks.
            let advance = cur.mul(prev.conj()).arg() - tone.omega * self.block as f32;
            let wrapped = advance - 2.0 * PI * (advance / (2.0 * PI)).round();
            let aliased_hz = wrapped / (2.0 * PI * block_seconds);
            let turns = ((coarse_hz - aliased_hz) / bin_hz).round();
            let offset_hz = aliased_hz + turns * bin_hz;
            (offset_hz / tone.hz).abs() <= MAX_FREQUENCY_ERROR
        };
        let coarse_row = 0.5 * (before.row_offset_hz + now.row_offset_hz);
        let coarse_col = 0.5 * (before.column_offset_hz + now.column_offset_hz);
        check(row, before.row, now.row, coarse_row)
            && check(column, before.column, now.column, coarse_col)
    }
}

fn strongest(group: &[f32]) -> Option<usize> {
    group
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

fn db_to_ratio(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_rate_is_a_typed_error() {
        assert_eq!(
            InbandDetector::new(4000).err(),
            Some(InbandError::UnsupportedRate(4000))
        );
    }

    #[test]
    fn silence_yields_nothing() {
        let mut det = InbandDetector::new(8000).unwrap();
        for _ in 0..100 {
            assert_eq!(det.process(&[0i16; 160]), None);
        }
    }
}
