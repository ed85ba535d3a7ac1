//! Codec DSP checked by measurement: tones come back at their frequency and level,
//! speech-like audio keeps a codec-appropriate segmental SNR, and a lost frame is
//! concealed by a continuation rather than silence or a click.

use dialin_media::codec::{
    new_decoder, new_encoder, CodecConfig, CodecKind, Decoder, Encoder, SampleRate,
};
use std::f64::consts::PI;

const FULL_SCALE: f64 = 32767.0;

/// Amplitude of a sine at `dbfs` (0 dBFS = full-scale sine).
fn amplitude(dbfs: f64) -> f64 {
    FULL_SCALE * 10f64.powf(dbfs / 20.0)
}

fn sine(freq: f64, dbfs: f64, rate: u32, n: usize) -> Vec<i16> {
    let a = amplitude(dbfs);
    (0..n)
        .map(|i| (a * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()).round() as i16)
        .collect()
}

/// A voiced, vowel-like signal: harmonics of a gliding pitch shaped by three formants,
/// with a syllable-rate envelope, band-limited to below `rate / 2`.
fn vowel_like(rate: u32, seconds: f64) -> Vec<i16> {
    let n = (f64::from(rate) * seconds) as usize;
    let nyquist = f64::from(rate) / 2.0;
    let formants = [(700.0, 130.0), (1220.0, 70.0), (2600.0, 160.0)];
    let mut phase = 0.0f64;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = i as f64 / f64::from(rate);
        // Pitch glides between 95 and 185 Hz, like intonation.
        let f0 = 140.0 + 45.0 * (2.0 * PI * 0.7 * t).sin();
        phase += 2.0 * PI * f0 / f64::from(rate);
        let mut s = 0.0;
        let mut h = 1.0;
        while h * f0 < nyquist * 0.9 {
            let f = h * f0;
            let env: f64 = formants
                .iter()
                .map(|&(fc, bw)| 1.0 / (1.0 + ((f - fc) / bw).powi(2)))
                .sum::<f64>()
                + 0.02;
            s += env * (h * phase).sin() / h.sqrt();
            h += 1.0;
        }
        // Syllables: 4 Hz envelope that never quite reaches silence.
        let syll = 0.55 + 0.45 * (2.0 * PI * 4.0 * t).sin();
        out.push(s * syll);
    }
    let peak = out.iter().fold(0.0f64, |m, &x| m.max(x.abs()));
    let gain = amplitude(-6.0) / peak;
    out.into_iter().map(|x| (x * gain).round() as i16).collect()
}

struct Pair {
    enc: Box<dyn Encoder>,
    dec: Box<dyn Decoder>,
    frame: usize,
}

fn pair(kind: CodecKind, rate: SampleRate, config: &CodecConfig) -> Pair {
    let enc = new_encoder(kind, rate, config).expect("encoder");
    let dec = new_decoder(kind, rate, config).expect("decoder");
    Pair {
        enc,
        dec,
        frame: rate.frame_samples(),
    }
}

/// Encodes and decodes `input` frame by frame; `lose(i)` drops frame `i`.
fn round_trip_with_loss(p: &mut Pair, input: &[i16], lose: impl Fn(usize) -> bool) -> Vec<i16> {
    let mut out = Vec::with_capacity(input.len());
    let mut payload = [0u8; 1500];
    let mut pcm = vec![0i16; p.frame * 6];
    for (i, frame) in input.chunks_exact(p.frame).enumerate() {
        let n = p.enc.encode(frame, &mut payload).expect("encode");
        let got = if lose(i) {
            p.dec.conceal(&mut pcm).expect("conceal")
        } else {
            p.dec.decode(&payload[..n], &mut pcm).expect("decode")
        };
        assert_eq!(got, p.frame);
        out.extend_from_slice(&pcm[..got]);
    }
    out
}

fn round_trip(kind: CodecKind, rate: SampleRate, config: &CodecConfig, input: &[i16]) -> Vec<i16> {
    round_trip_with_loss(&mut pair(kind, rate, config), input, |_| false)
}

/// Frequency by linearly interpolated positive-going zero crossings.
fn frequency(x: &[i16], rate: u32) -> f64 {
    let mut first = None;
    let mut last = 0.0;
    let mut count = 0usize;
    for i in 1..x.len() {
        let (a, b) = (f64::from(x[i - 1]), f64::from(x[i]));
        if a < 0.0 && b >= 0.0 {
            let t = (i - 1) as f64 + (-a) / (b - a);
            if first.is_none() {
                first = Some(t);
            } else {
                count += 1;
            }
            last = t;
        }
    }
    let span = last - first.unwrap_or(last);
    if span <= 0.0 {
        return 0.0;
    }
    count as f64 * f64::from(rate) / span
}

/// Level of a sine-like signal in dBFS (RMS relative to a full-scale sine).
fn level_dbfs(x: &[i16]) -> f64 {
    let ms = x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64;
    20.0 * (ms.sqrt() * 2f64.sqrt() / FULL_SCALE).log10()
}

/// The lag (output behind input) that best aligns `out` with `input`.
fn best_lag(input: &[i16], out: &[i16], max_lag: usize) -> usize {
    let window = &input[input.len() / 4..input.len() / 4 + input.len() / 2];
    let start = input.len() / 4;
    let mut best = (0, f64::MIN);
    for lag in 0..max_lag {
        let Some(o) = out.get(start + lag..start + lag + window.len()) else {
            break;
        };
        let c: f64 = window
            .iter()
            .zip(o)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        if c > best.1 {
            best = (lag, c);
        }
    }
    best.0
}

/// Segmental SNR over 20 ms segments after alignment, skipping the first `skip`
/// samples (codec start-up) and near-silent segments; each segment is clamped to
/// [-10, 60] dB as is customary.
fn segmental_snr(input: &[i16], out: &[i16], rate: u32, skip: usize) -> f64 {
    let lag = best_lag(input, out, rate as usize / 20);
    let seg = rate as usize / 50;
    let mut total = 0.0;
    let mut segments = 0;
    let mut i = skip;
    while i + seg + lag <= out.len() && i + seg <= input.len() {
        let x = &input[i..i + seg];
        let y = &out[i + lag..i + lag + seg];
        let sig: f64 = x.iter().map(|&s| f64::from(s).powi(2)).sum();
        let noise: f64 = x
            .iter()
            .zip(y)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        if sig / seg as f64 > 100.0 {
            total += (10.0 * (sig / noise.max(1e-9)).log10()).clamp(-10.0, 60.0);
            segments += 1;
        }
        i += seg;
    }
    assert!(segments > 10, "too few segments to measure");
    total / f64::from(segments)
}

fn check_tone(kind: CodecKind, rate: SampleRate, freq: f64) -> (f64, f64, f64) {
    let hz = rate.hz();
    let input = sine(freq, -10.0, hz, hz as usize);
    let out = round_trip(kind, rate, &CodecConfig::default(), &input);
    // Measure after 200 ms of start-up.
    let settled = &out[hz as usize / 5..];
    let f = frequency(settled, hz);
    let level = level_dbfs(settled);
    let snr = segmental_snr(&input, &out, hz, hz as usize / 5);
    println!("{kind} @{hz} Hz: {freq} Hz tone -> {f:.2} Hz, {level:.2} dBFS, SNR {snr:.1} dB");
    assert!(
        (f - freq).abs() < freq * 0.005,
        "{kind}: {freq} Hz came back at {f:.2} Hz"
    );
    assert!(
        (level + 10.0).abs() <= 1.0,
        "{kind}: -10 dBFS came back at {level:.2} dBFS"
    );
    (f, level, snr)
}

#[test]
fn pcmu_tones_keep_frequency_and_level_with_over_30_db_snr() {
    for freq in [1000.0, 440.0] {
        let (_, _, snr) = check_tone(CodecKind::Pcmu, SampleRate::Hz8000, freq);
        assert!(snr > 30.0, "PCMU tone SNR {snr:.1} dB");
    }
}

#[test]
fn pcma_tones_keep_frequency_and_level_with_over_30_db_snr() {
    for freq in [1000.0, 440.0] {
        let (_, _, snr) = check_tone(CodecKind::Pcma, SampleRate::Hz8000, freq);
        assert!(snr > 30.0, "PCMA tone SNR {snr:.1} dB");
    }
}

#[test]
fn g722_tones_keep_frequency_and_level_with_over_25_db_snr() {
    for freq in [1000.0, 440.0] {
        let (_, _, snr) = check_tone(CodecKind::G722, SampleRate::Hz16000, freq);
        assert!(snr > 25.0, "G.722 tone SNR {snr:.1} dB");
    }
}

#[test]
fn opus_tones_keep_frequency_and_level_at_8_and_16_khz() {
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        for freq in [1000.0, 440.0] {
            check_tone(CodecKind::Opus, rate, freq);
        }
    }
}

fn speech_snr(kind: CodecKind, rate: SampleRate, config: &CodecConfig) -> f64 {
    let hz = rate.hz();
    let input = vowel_like(hz, 1.5);
    let out = round_trip(kind, rate, config, &input);
    segmental_snr(&input, &out, hz, hz as usize / 5)
}

#[test]
fn speech_like_signal_keeps_codec_appropriate_segmental_snr() {
    let config = CodecConfig::default();
    // Thresholds: G.711's 8-bit log PCM gives ~38 dB on speech (G.711 §A, 6 dB/bit
    // over 6-7 effective bits); G.722 at 64 kbit/s is ADPCM with a 6-bit low band;
    // Opus is a perceptual codec at 24 kbit/s whose waveform match is far looser.
    let cases = [
        (CodecKind::Pcmu, SampleRate::Hz8000, 30.0),
        (CodecKind::Pcma, SampleRate::Hz8000, 30.0),
        (CodecKind::G722, SampleRate::Hz16000, 20.0),
        (CodecKind::Opus, SampleRate::Hz8000, 8.0),
        (CodecKind::Opus, SampleRate::Hz16000, 8.0),
    ];
    for (kind, rate, min) in cases {
        let snr = speech_snr(kind, rate, &config);
        println!(
            "{kind} @{} Hz speech-like segmental SNR {snr:.1} dB",
            rate.hz()
        );
        assert!(snr > min, "{kind} @{rate:?}: {snr:.1} dB <= {min} dB");
    }
}

#[test]
fn opus_complexity_sweep_keeps_speech_quality_at_every_setting() {
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let mut line = format!("Opus @{} Hz segSNR by complexity:", rate.hz());
        for complexity in 0..=10u8 {
            let config = CodecConfig {
                opus_complexity: complexity,
                ..CodecConfig::default()
            };
            let snr = speech_snr(CodecKind::Opus, rate, &config);
            line.push_str(&format!(" c{complexity}={snr:.2}"));
            assert!(snr > 5.0, "complexity {complexity}: {snr:.1} dB");
        }
        println!("{line}");
    }
}

/// Energy of `x`.
fn energy(x: &[i16]) -> f64 {
    x.iter().map(|&s| f64::from(s).powi(2)).sum()
}

/// Largest sample-to-sample step in `x`.
fn max_step(x: &[i16]) -> i32 {
    x.windows(2)
        .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
        .max()
        .unwrap_or(0)
}

fn check_single_loss(kind: CodecKind, rate: SampleRate) {
    let hz = rate.hz() as usize;
    let frame = rate.frame_samples();
    let input = vowel_like(rate.hz(), 1.0);
    let lost = 25; // 500 ms in, in the middle of a syllable
    let clean = round_trip(kind, rate, &CodecConfig::default(), &input);
    let mut p = pair(kind, rate, &CodecConfig::default());
    let out = round_trip_with_loss(&mut p, &input, |i| i == lost);

    // The output frame carrying the loss (plus the codec delay) must hold sound
    // comparable to what was lost, not silence.
    let region = lost * frame..(lost + 2) * frame;
    let ratio = energy(&out[region.clone()]) / energy(&clean[region.clone()]);
    // And no click: no step larger than the clean signal's largest, with margin.
    let around = (lost - 1) * frame..(lost + 3) * frame;
    let clean_step = max_step(&clean[around.clone()]);
    let lossy_step = max_step(&out[around]);
    println!(
        "{kind} @{hz} Hz one lost frame: energy ratio {ratio:.2}, max step {lossy_step} vs clean {clean_step}"
    );
    assert!(
        ratio > 0.3 && ratio < 2.0,
        "{kind}: energy ratio {ratio:.2} over the loss"
    );
    assert!(
        f64::from(lossy_step) < 1.5 * f64::from(clean_step),
        "{kind}: click ({lossy_step} vs {clean_step})"
    );
    // The stream carries on normally afterwards.
    let after = (lost + 5) * frame..(lost + 15) * frame;
    let after_ratio = energy(&out[after.clone()]) / energy(&clean[after]);
    assert!(
        (after_ratio - 1.0).abs() < 0.25,
        "{kind}: did not recover ({after_ratio:.2})"
    );
}

#[test]
fn pcmu_lost_frame_is_concealed_by_a_continuation_without_click() {
    check_single_loss(CodecKind::Pcmu, SampleRate::Hz8000);
}

#[test]
fn pcma_lost_frame_is_concealed_by_a_continuation_without_click() {
    check_single_loss(CodecKind::Pcma, SampleRate::Hz8000);
}

#[test]
fn g722_lost_frame_is_concealed_by_a_continuation_without_click() {
    check_single_loss(CodecKind::G722, SampleRate::Hz16000);
}

#[test]
fn opus_lost_frame_is_concealed_by_a_continuation_without_click() {
    check_single_loss(CodecKind::Opus, SampleRate::Hz8000);
    check_single_loss(CodecKind::Opus, SampleRate::Hz16000);
}

#[test]
fn long_loss_fades_to_silence_instead_of_buzzing() {
    for (kind, rate) in [
        (CodecKind::Pcmu, SampleRate::Hz8000),
        (CodecKind::G722, SampleRate::Hz16000),
    ] {
        let frame = rate.frame_samples();
        let input = vowel_like(rate.hz(), 1.0);
        let mut p = pair(kind, rate, &CodecConfig::default());
        let out = round_trip_with_loss(&mut p, &input, |i| (20..30).contains(&i));
        let late = &out[25 * frame..30 * frame];
        assert_eq!(
            energy(late),
            0.0,
            "{kind}: still sounding 100 ms into a loss"
        );
    }
}

#[test]
fn opus_in_band_fec_rebuilds_a_lost_frame_better_than_concealment() {
    let rate = SampleRate::Hz16000;
    let frame = rate.frame_samples();
    let config = CodecConfig {
        fec: true,
        expected_loss_percent: 20,
        ..CodecConfig::default()
    };
    let input = vowel_like(rate.hz(), 1.0);
    let mut enc = new_encoder(CodecKind::Opus, rate, &config).expect("encoder");
    let mut packets = Vec::new();
    for f in input.chunks_exact(frame) {
        let mut buf = [0u8; 1500];
        let n = enc.encode(f, &mut buf).expect("encode");
        packets.push(buf[..n].to_vec());
    }
    let lost = 30;
    let decode_all = |use_fec: bool| {
        let mut dec = new_decoder(CodecKind::Opus, rate, &config).expect("decoder");
        let mut out = Vec::new();
        let mut pcm = vec![0i16; frame];
        for (i, p) in packets.iter().enumerate() {
            let n = if i == lost {
                if use_fec {
                    dec.recover(&packets[i + 1], &mut pcm).expect("recover")
                } else {
                    dec.conceal(&mut pcm).expect("conceal")
                }
            } else {
                dec.decode(p, &mut pcm).expect("decode")
            };
            out.extend_from_slice(&pcm[..n]);
        }
        out
    };
    let mut reference = new_decoder(CodecKind::Opus, rate, &config).expect("decoder");
    let mut clean = Vec::new();
    let mut pcm = vec![0i16; frame];
    for p in &packets {
        let n = reference.decode(p, &mut pcm).expect("decode");
        clean.extend_from_slice(&pcm[..n]);
    }
    let err = |x: &[i16]| {
        let r = lost * frame..(lost + 1) * frame;
        let e: f64 = x[r.clone()]
            .iter()
            .zip(&clean[r.clone()])
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        10.0 * (energy(&clean[r]) / e.max(1e-9)).log10()
    };
    let fec = err(&decode_all(true));
    let plc = err(&decode_all(false));
    println!("Opus lost frame vs clean decode: FEC {fec:.1} dB, PLC {plc:.1} dB");
    assert!(
        fec > plc + 3.0,
        "FEC {fec:.1} dB not better than PLC {plc:.1} dB"
    );
}

#[test]
fn codec_refuses_a_rate_it_cannot_run_at() {
    let c = CodecConfig::default();
    assert!(new_encoder(CodecKind::Pcmu, SampleRate::Hz16000, &c).is_err());
    assert!(new_decoder(CodecKind::G722, SampleRate::Hz8000, &c).is_err());
    let bad = CodecConfig {
        opus_complexity: 11,
        ..c
    };
    assert!(new_encoder(CodecKind::Opus, SampleRate::Hz8000, &bad).is_err());
}

#[test]
fn garbage_payloads_are_errors_or_audio_never_panics() {
    let c = CodecConfig::default();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for (kind, rate) in [
        (CodecKind::Pcmu, SampleRate::Hz8000),
        (CodecKind::Pcma, SampleRate::Hz8000),
        (CodecKind::G722, SampleRate::Hz16000),
        (CodecKind::Opus, SampleRate::Hz8000),
        (CodecKind::Opus, SampleRate::Hz16000),
    ] {
        let mut dec = new_decoder(kind, rate, &c).expect("decoder");
        let mut out = vec![0i16; rate.frame_samples() * 6];
        for len in 0..400usize {
            let mut payload = vec![0u8; len % 300];
            for b in &mut payload {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            let _ = dec.decode(&payload, &mut out);
        }
        // A too-small output buffer is an error, not a panic.
        assert!(dec.decode(&[0x78; 160], &mut [0i16; 10]).is_err());
    }
}

#[test]
fn rtp_clock_and_frame_helpers_follow_rfc_3551_and_7587() {
    assert_eq!(CodecKind::G722.rtp_clock_rate(), 8000);
    assert_eq!(CodecKind::G722.rtp_timestamp_step(), 160);
    assert_eq!(CodecKind::Opus.rtp_timestamp_step(), 960);
    assert_eq!(CodecKind::Pcmu.static_payload_type(), Some(0));
    assert_eq!(CodecKind::Pcma.static_payload_type(), Some(8));
    assert_eq!(CodecKind::G722.static_payload_type(), Some(9));
    assert_eq!(SampleRate::Hz16000.frame_samples(), 320);
}
