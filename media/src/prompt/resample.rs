//! Band-limited resampler for prompts: windowed-sinc, polyphase, any rational ratio.
//!
//! Runs once per prompt when the catalog loads, to bring a file of any rate to the 8 kHz and
//! 16 kHz the call legs use; nothing here runs per call. It is the textbook bandlimited
//! interpolation (J. O. Smith, "Digital Audio Resampling", CCRMA): each output sample is the
//! input convolved with a lowpass sinc centred on the output instant, windowed by a Kaiser
//! window (Kaiser & Schafer 1980). Written here rather than pulled in (`rubato`) because the
//! prompt path needs only this one offline conversion, and `rubato` brings an FFT stack
//! (`realfft`, `rustfft` and their dependencies) for block-streaming features we do not use.

/// Zero crossings of the lowpass sinc on each side of the centre tap. 16 gives a transition
/// band of about 10 % of the output band with the window below.
const ZERO_CROSSINGS: f64 = 16.0;
/// Cutoff as a fraction of the lower of the two Nyquist frequencies: 0.9 of 4 kHz is 3.6 kHz,
/// above the 3.4 kHz telephone band (ITU-T G.712), so nothing audible on a call is lost.
const CUTOFF: f64 = 0.9;
/// Kaiser β = 8.6 gives about 86 dB of stopband attenuation (Kaiser's formula
/// β = 0.1102 (A − 8.7)), below the 16-bit noise floor that matters on a phone line.
const KAISER_BETA: f64 = 8.6;
/// Above this many filter phases (a ratio like 44 101 → 16 000) the table is not worth it and
/// the kernel is computed per output sample instead.
const MAX_TABLE_PHASES: u64 = 1024;

/// Resamples mono 16-bit audio from `from` Hz to `to` Hz. The output has
/// `floor(len × to / from)` samples. Rates of zero give an empty output.
pub(crate) fn resample(input: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == 0 || to == 0 {
        return Vec::new();
    }
    if from == to {
        return input.to_vec();
    }
    let g = gcd(from, to);
    let up = u64::from(to / g);
    let down = u64::from(from / g);
    // Cutoff in cycles per input sample × 2 (1.0 = input Nyquist).
    let fc = CUTOFF * f64::from(from.min(to)) / f64::from(from);
    let half = (ZERO_CROSSINGS / fc).ceil() as usize;
    let taps = 2 * half;
    let out_len = (input.len() as u64 * up / down) as usize;

    let table: Option<Vec<f32>> = (up <= MAX_TABLE_PHASES).then(|| {
        let mut table = vec![0.0; up as usize * taps];
        for (phase, coefs) in table.chunks_exact_mut(taps).enumerate() {
            kernel(phase as f64 / up as f64, half, fc, coefs);
        }
        table
    });
    let mut scratch = vec![0.0f32; taps];

    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len as u64 {
        let pos = n * down;
        let centre = (pos / up) as i64;
        let phase = pos % up;
        let coefs: &[f32] = match &table {
            Some(table) => {
                let start = phase as usize * taps;
                table.get(start..start + taps).unwrap_or(&scratch)
            }
            None => {
                kernel(phase as f64 / up as f64, half, fc, &mut scratch);
                &scratch
            }
        };
        let first = centre + 1 - half as i64;
        let window = usize::try_from(first)
            .ok()
            .and_then(|f| input.get(f..f + taps));
        let acc: f32 = match window {
            // Away from the edges: a straight dot product.
            Some(window) => coefs
                .iter()
                .zip(window)
                .map(|(&c, &x)| c * f32::from(x))
                .sum(),
            // At the edges, samples outside the input are zero.
            None => coefs
                .iter()
                .enumerate()
                .filter_map(|(j, &c)| {
                    let k = usize::try_from(first + j as i64).ok()?;
                    input.get(k).map(|&x| c * f32::from(x))
                })
                .sum(),
        };
        out.push(acc.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16);
    }
    out
}

/// Fills `coefs` with the taps for an output instant `frac` (0 ≤ frac < 1) input samples after
/// the centre input sample, normalised to unity gain at DC.
fn kernel(frac: f64, half: usize, fc: f64, coefs: &mut [f32]) {
    let i0_beta = bessel_i0(KAISER_BETA);
    let mut sum = 0.0;
    for (j, c) in coefs.iter_mut().enumerate() {
        // Distance in input samples from the output instant to tap j.
        let x = frac + half as f64 - 1.0 - j as f64;
        let t = x / half as f64;
        let window = if t.abs() >= 1.0 {
            0.0
        } else {
            bessel_i0(KAISER_BETA * (1.0 - t * t).sqrt()) / i0_beta
        };
        let h = fc * sinc(fc * x) * window;
        sum += h;
        *c = h as f32;
    }
    if sum.abs() > f64::EPSILON {
        for c in coefs.iter_mut() {
            *c = (f64::from(*c) / sum) as f32;
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Modified Bessel function of the first kind, order 0, by its power series (converges fast
/// for the arguments a Kaiser window uses).
fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..64 {
        term *= q / (k as f64 * k as f64);
        sum += term;
        if term < sum * 1e-16 {
            break;
        }
    }
    sum
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f64, amplitude: f64, len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| {
                (amplitude * (2.0 * std::f64::consts::PI * hz * n as f64 / f64::from(rate)).sin())
                    as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn output_length_follows_the_rate_ratio() {
        let input = vec![0i16; 22_050];
        assert_eq!(resample(&input, 22_050, 16_000).len(), 16_000);
        assert_eq!(resample(&input, 16_000, 8_000).len(), 11_025);
        assert_eq!(resample(&input, 8_000, 16_000).len(), 44_100);
    }

    #[test]
    fn in_band_tone_keeps_its_level() {
        let input = sine(16_000, 1_000.0, 10_000.0, 16_000);
        let out = resample(&input, 16_000, 8_000);
        // Skip the filter's edges.
        let ratio = rms(&out[100..7_900]) / rms(&input[200..15_800]);
        assert!((ratio - 1.0).abs() < 0.01, "gain {ratio}");
    }

    #[test]
    fn tone_above_the_new_nyquist_is_removed_not_aliased() {
        // 5 kHz cannot exist at 8 kHz; a naive decimator would fold it to 3 kHz.
        let input = sine(16_000, 5_000.0, 10_000.0, 16_000);
        let out = resample(&input, 16_000, 8_000);
        assert!(
            rms(&out[100..7_900]) < 10.0,
            "rms {}",
            rms(&out[100..7_900])
        );
    }

    #[test]
    fn awkward_ratio_without_table_matches_length_and_level() {
        let input = sine(44_101, 440.0, 8_000.0, 44_101);
        let out = resample(&input, 44_101, 16_000);
        assert_eq!(out.len(), 16_000);
        let ratio = rms(&out[200..15_800]) / rms(&input[500..43_600]);
        assert!((ratio - 1.0).abs() < 0.01, "gain {ratio}");
    }
}
