//! Packet-loss concealment by pitch-period waveform substitution.
//!
//! Used by the G.711 and G.722 decoders when the jitter buffer reports a lost frame.
//! It follows the structure of ITU-T G.711 Appendix I (1999): keep a history of the
//! decoded speech; at the first lost 10 ms, estimate the pitch period by normalised
//! cross-correlation and repeat the last period, smoothing the seam with a
//! quarter-period overlap-add; widen the repeated span to two and three periods on
//! the second and third lost 10 ms so the result does not buzz; attenuate by 20 % per
//! 10 ms after the first, reaching silence at 60 ms; and cross-fade back into the real
//! signal over a quarter period plus 4 ms per extra lost 10 ms when packets return.
//! Like the Appendix, the output runs 3.75 ms behind the input so the seam at the start
//! of a loss can be smoothed before it is played. At 16 kHz (G.722) every length
//! doubles.

/// Appendix I constants at 8 kHz; multiplied by the rate's `scale` (1 or 2).
/// Shortest pitch period searched: 5 ms (200 Hz).
const PITCH_MIN: usize = 40;
/// Longest pitch period searched: 15 ms (66.7 Hz).
const PITCH_MAX: usize = 120;
/// Correlation window of the pitch search: 20 ms.
const CORR_LEN: usize = 160;
/// Concealment works in 10 ms blocks, the unit of the attenuation schedule.
const BLOCK: usize = 80;
/// Output delay and longest seam overlap: a quarter of the longest period, 3.75 ms.
const OVERLAP_MAX: usize = PITCH_MAX / 4;
/// History: three longest periods plus the overlap (Appendix I `HISTORYLEN`).
const HISTORY: usize = PITCH_MAX * 3 + OVERLAP_MAX;
/// Extra cross-fade at the end of a loss per additional lost 10 ms: 4 ms.
const END_OVERLAP_STEP: usize = 32;
/// Attenuation per 10 ms after the first lost 10 ms.
const ATTENUATION_PER_BLOCK: f32 = 0.2;
/// Lost 10 ms blocks after which the output is silence (60 ms).
const SILENT_AFTER_BLOCKS: usize = 6;
/// Floor under the energy normalising the pitch correlation, so near-silence does not
/// produce a confident pitch from noise (Appendix I `CORRMINPOWER`, per 20 ms window).
const CORR_MIN_POWER: f32 = 250.0;

/// Largest scale supported (16 kHz).
const MAX_SCALE: usize = 2;

/// Waveform-substitution concealment state for one decoder.
#[derive(Debug)]
pub(crate) struct WaveformPlc {
    scale: usize,
    /// Past output, newest last; `history_len()` samples are in use.
    history: [f32; HISTORY * MAX_SCALE],
    /// Copy of the history at the start of a loss; the repeated periods come from here.
    pitch_buf: [f32; HISTORY * MAX_SCALE],
    /// The original last quarter-period, kept to re-smooth the seam when the
    /// repeated span grows.
    last_quarter: [f32; OVERLAP_MAX * MAX_SCALE],
    /// Lost 10 ms blocks so far in the current loss.
    erased_blocks: usize,
    pitch: usize,
    overlap: usize,
    span_len: usize,
    span_start: usize,
    offset: usize,
}

impl WaveformPlc {
    /// `scale` is the sample rate divided by 8000: 1 for G.711, 2 for G.722.
    pub(crate) fn new(scale: usize) -> Self {
        let scale = scale.clamp(1, MAX_SCALE);
        WaveformPlc {
            scale,
            history: [0.0; HISTORY * MAX_SCALE],
            pitch_buf: [0.0; HISTORY * MAX_SCALE],
            last_quarter: [0.0; OVERLAP_MAX * MAX_SCALE],
            erased_blocks: 0,
            pitch: PITCH_MIN * scale,
            overlap: 0,
            span_len: PITCH_MIN * scale,
            span_start: 0,
            offset: 0,
        }
    }

    fn history_len(&self) -> usize {
        HISTORY * self.scale
    }

    fn block_len(&self) -> usize {
        BLOCK * self.scale
    }

    fn delay(&self) -> usize {
        OVERLAP_MAX * self.scale
    }

    /// Takes a frame of decoded audio and replaces it, in place, with the output to
    /// play: the same audio 3.75 ms later, cross-faded out of concealment if the
    /// previous frames were lost.
    pub(crate) fn receive(&mut self, pcm: &mut [i16]) {
        let block = self.block_len();
        for chunk in pcm.chunks_mut(block) {
            let mut frame = [0.0f32; BLOCK * MAX_SCALE];
            let Some(frame) = frame.get_mut(..chunk.len()) else {
                return;
            };
            for (f, &s) in frame.iter_mut().zip(chunk.iter()) {
                *f = f32::from(s);
            }
            if self.erased_blocks > 0 {
                self.blend_out_of_loss(frame);
                self.erased_blocks = 0;
            }
            self.push_and_delay(frame, chunk);
        }
    }

    /// Writes concealment for `out.len()` lost samples.
    pub(crate) fn conceal(&mut self, out: &mut [i16]) {
        let block = self.block_len();
        for chunk in out.chunks_mut(block) {
            let mut frame = [0.0f32; BLOCK * MAX_SCALE];
            let Some(frame) = frame.get_mut(..chunk.len()) else {
                return;
            };
            self.conceal_block(frame);
            self.push_and_delay(frame, chunk);
        }
    }

    /// One lost block (at most 10 ms), before the output delay.
    fn conceal_block(&mut self, out: &mut [f32]) {
        let hist = self.history_len();
        if self.erased_blocks == 0 {
            self.pitch_buf[..hist].copy_from_slice(&self.history[..hist]);
            self.pitch = self.find_pitch();
            self.overlap = self.pitch / 4;
            let ov = self.overlap;
            self.last_quarter[..ov].copy_from_slice(&self.pitch_buf[hist - ov..hist]);
            self.offset = 0;
            self.span_len = self.pitch;
            self.span_start = hist - self.span_len;
            self.smooth_span_seam();
            // The smoothed tail has not been played yet (it is inside the output
            // delay), so it replaces the history's tail.
            self.history[hist - ov..hist].copy_from_slice(&self.pitch_buf[hist - ov..hist]);
            self.synthesize(out);
        } else if self.erased_blocks < 3 {
            // Widen the repeated span by one period, cross-fading from the old span.
            let ov = self.overlap;
            let mut tail = [0.0f32; OVERLAP_MAX * MAX_SCALE];
            self.synthesize(&mut tail[..ov]);
            self.offset %= self.span_len;
            self.span_len += self.pitch;
            self.span_start = hist - self.span_len;
            self.smooth_span_seam();
            self.synthesize(out);
            let n = ov.min(out.len());
            cross_fade(&tail[..n], out, n);
            self.attenuate(out);
        } else if self.erased_blocks < SILENT_AFTER_BLOCKS {
            self.synthesize(out);
            self.attenuate(out);
        } else {
            out.fill(0.0);
        }
        self.erased_blocks += 1;
    }

    /// Makes the repeated span loop without a click: the end of the pitch buffer is
    /// faded from the original signal into the samples just before the span start,
    /// so the jump from the span's end back to its start is a continuation.
    fn smooth_span_seam(&mut self) {
        let hist = self.history_len();
        let ov = self.overlap;
        if ov == 0 || self.span_start < ov {
            return;
        }
        let before = self.span_start - ov;
        for i in 0..ov {
            let w = (i as f32 + 1.0) / (ov as f32 + 1.0);
            let orig = self.last_quarter[i];
            let prev = self.pitch_buf[before + i];
            self.pitch_buf[hist - ov + i] = orig * (1.0 - w) + prev * w;
        }
    }

    /// Copies the next samples of the repeated span, looping.
    fn synthesize(&mut self, out: &mut [f32]) {
        let span = &self.pitch_buf[self.span_start..self.span_start + self.span_len];
        for o in out.iter_mut() {
            *o = span.get(self.offset).copied().unwrap_or(0.0);
            self.offset += 1;
            if self.offset >= self.span_len {
                self.offset = 0;
            }
        }
    }

    /// Linear gain ramp: 20 % down per 10 ms block after the first.
    fn attenuate(&self, out: &mut [f32]) {
        let start = 1.0 - (self.erased_blocks.saturating_sub(1) as f32) * ATTENUATION_PER_BLOCK;
        let step = ATTENUATION_PER_BLOCK / self.block_len() as f32;
        for (i, o) in out.iter_mut().enumerate() {
            let g = (start - step * i as f32).max(0.0);
            *o *= g;
        }
    }

    /// First good block after a loss: fade the synthetic continuation out and the
    /// real signal in.
    fn blend_out_of_loss(&mut self, frame: &mut [f32]) {
        let len = (self.overlap + (self.erased_blocks - 1) * END_OVERLAP_STEP * self.scale)
            .min(frame.len())
            .min(self.block_len());
        let gain = if self.erased_blocks >= SILENT_AFTER_BLOCKS {
            0.0
        } else {
            (1.0 - (self.erased_blocks - 1) as f32 * ATTENUATION_PER_BLOCK).max(0.0)
        };
        let mut synth = [0.0f32; BLOCK * MAX_SCALE];
        self.synthesize(&mut synth[..len]);
        for s in &mut synth[..len] {
            *s *= gain;
        }
        cross_fade(&synth[..len], frame, len);
    }

    /// Appends a block to the history and writes the block delayed by 3.75 ms.
    fn push_and_delay(&mut self, frame: &[f32], out: &mut [i16]) {
        let hist = self.history_len();
        let n = frame.len();
        self.history.copy_within(n..hist, 0);
        self.history[hist - n..hist].copy_from_slice(frame);
        let start = hist - n - self.delay();
        for (o, &h) in out.iter_mut().zip(&self.history[start..start + n]) {
            *o = h.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16;
        }
    }

    /// Pitch period of the most recent history by normalised cross-correlation: a
    /// coarse search on a decimated signal, then a full-resolution refinement.
    fn find_pitch(&self) -> usize {
        let s = self.scale;
        let hist = self.history_len();
        let (pmin, pmax, corr_len) = (PITCH_MIN * s, PITCH_MAX * s, CORR_LEN * s);
        let recent = hist - corr_len;
        let buf = &self.pitch_buf[..hist];
        let score = |lag: usize, step: usize| -> f32 {
            let mut corr = 0.0f32;
            let mut energy = 0.0f32;
            let mut j = 0;
            while j < corr_len {
                let past = buf[recent - lag + j];
                corr += buf[recent + j] * past;
                energy += past * past;
                j += step;
            }
            let floor = CORR_MIN_POWER * (corr_len / step) as f32 / CORR_LEN as f32;
            corr / energy.max(floor).sqrt()
        };
        let coarse = 2 * s;
        let mut best = pmin;
        let mut best_score = f32::MIN;
        let mut lag = pmin;
        while lag <= pmax {
            let sc = score(lag, coarse);
            if sc > best_score {
                best_score = sc;
                best = lag;
            }
            lag += coarse;
        }
        let lo = best.saturating_sub(coarse - 1).max(pmin);
        let hi = (best + coarse - 1).min(pmax);
        let mut fine_best = best;
        let mut fine_score = f32::MIN;
        for lag in lo..=hi {
            let sc = score(lag, 1);
            if sc > fine_score {
                fine_score = sc;
                fine_best = lag;
            }
        }
        fine_best
    }
}

/// Linear cross-fade over the first `n` samples: `from` fades out, `to` fades in.
fn cross_fade(from: &[f32], to: &mut [f32], n: usize) {
    for (i, (t, &f)) in to.iter_mut().zip(from).take(n).enumerate() {
        let w = (i as f32 + 1.0) / (n as f32 + 1.0);
        *t = f * (1.0 - w) + *t * w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, rate: f32, n: usize, phase0: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i + phase0) as f32 / rate;
                (8000.0 * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn pitch_search_finds_the_period_of_a_periodic_signal() {
        let mut plc = WaveformPlc::new(1);
        // 100 Hz at 8 kHz: 80-sample period.
        for k in 0..10 {
            let mut f = sine(100.0, 8000.0, 160, k * 160);
            plc.receive(&mut f);
        }
        let hist = plc.history_len();
        plc.pitch_buf[..hist].copy_from_slice(&plc.history[..hist]);
        let p = plc.find_pitch();
        assert!(p == 80, "pitch {p}");
    }

    #[test]
    fn output_is_delayed_by_three_point_seven_five_ms() {
        let mut plc = WaveformPlc::new(1);
        let mut f: Vec<i16> = (0..160).map(|i| i as i16).collect();
        plc.receive(&mut f);
        assert_eq!(&f[..30], &[0; 30]);
        assert_eq!(f[30], 0);
        assert_eq!(f[31], 1);
    }

    #[test]
    fn concealment_fades_to_silence_after_sixty_ms() {
        let mut plc = WaveformPlc::new(1);
        for k in 0..5 {
            let mut f = sine(200.0, 8000.0, 160, k * 160);
            plc.receive(&mut f);
        }
        let mut out = [0i16; 160];
        // Frames 1-3 (0-60 ms lost) still carry sound; by the fourth frame's output
        // (76.25 ms with the 3.75 ms delay) only the delayed tail of the ramp is left,
        // and the fifth is silent.
        plc.conceal(&mut out);
        assert!(out.iter().any(|&s| s.abs() > 1000));
        for _ in 0..4 {
            plc.conceal(&mut out);
        }
        assert!(out.iter().all(|&s| s == 0));
    }
}
