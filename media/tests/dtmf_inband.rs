//! In-band DTMF detection held to ITU-T Q.24 with generated signals, and talk-off on
//! synthetic speech (espeak-ng).

use std::process::Command;

use std::time::{Duration, Instant};

use dialin_media::dtmf::dedup::{DigitDeduplicator, DigitSource};
use dialin_media::dtmf::event::{EventReceiver, EventSender};
use dialin_media::dtmf::inband::InbandDetector;
use dialin_media::dtmf::Digit;

/// 0 dBm0 sine amplitude in 16-bit PCM: full scale is +3.17 dBm0 (ITU-T G.711).
const DBM0_AMPLITUDE: f64 = 32767.0 * 0.694_3;

/// Deterministic noise source (xorshift64*), so failures reproduce.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((v >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn gaussian(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[derive(Clone, Copy)]
struct Tone {
    rate: u32,
    row_dbm0: f64,
    col_dbm0: f64,
    row_offset: f64,
    col_offset: f64,
}

impl Tone {
    fn nominal(rate: u32) -> Tone {
        Tone {
            rate,
            row_dbm0: -10.0,
            col_dbm0: -10.0,
            row_offset: 0.0,
            col_offset: 0.0,
        }
    }
}

fn amplitude(dbm0: f64) -> f64 {
    DBM0_AMPLITUDE * 10f64.powf(dbm0 / 20.0)
}

/// Appends `ms` of the key's tone pair (as f64, mixed and quantised later).
fn push_tone(out: &mut Vec<f64>, digit: Digit, ms: u32, t: Tone) {
    let (row, col) = digit.frequencies();
    let (fr, fc) = (
        f64::from(row) * (1.0 + t.row_offset),
        f64::from(col) * (1.0 + t.col_offset),
    );
    let n = (t.rate * ms / 1000) as usize;
    let start = out.len();
    for i in 0..n {
        let time = (start + i) as f64 / f64::from(t.rate);
        let tau = 2.0 * std::f64::consts::PI * time;
        out.push(
            amplitude(t.row_dbm0) * (tau * fr).sin()
                + amplitude(t.col_dbm0) * (tau * fc + 1.0).sin(),
        );
    }
}

fn push_silence(out: &mut Vec<f64>, rate: u32, ms: u32) {
    out.extend(std::iter::repeat_n(0.0, (rate * ms / 1000) as usize));
}

fn to_pcm(signal: &[f64]) -> Vec<i16> {
    signal
        .iter()
        .map(|&v| v.round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// Runs the detector over the signal in 20 ms frames, as the call path does.
fn detect(rate: u32, pcm: &[i16]) -> Vec<Digit> {
    let mut det = InbandDetector::new(rate).expect("supported rate");
    let frame = (rate / 50) as usize;
    let mut found = Vec::new();
    for chunk in pcm.chunks(frame) {
        if let Some(d) = det.process(chunk) {
            found.push(d);
        }
        while let Some(d) = det.poll_digit() {
            found.push(d);
        }
    }
    found
}

/// Each digit alone: 100 ms of tone between silences.
fn detect_single(digit: Digit, tone: Tone) -> Vec<Digit> {
    let mut s = Vec::new();
    push_silence(&mut s, tone.rate, 60);
    push_tone(&mut s, digit, 100, tone);
    push_silence(&mut s, tone.rate, 100);
    detect(tone.rate, &to_pcm(&s))
}

#[test]
fn every_digit_is_detected_at_nominal_frequencies() {
    for rate in [8000, 16000] {
        for digit in Digit::ALL {
            assert_eq!(
                detect_single(digit, Tone::nominal(rate)),
                vec![digit],
                "{digit} at {rate} Hz"
            );
        }
    }
}

#[test]
fn frequency_offsets_of_1_5_percent_are_accepted() {
    for digit in Digit::ALL {
        for (ro, co) in [
            (0.015, 0.015),
            (-0.015, -0.015),
            (0.015, -0.015),
            (-0.015, 0.015),
        ] {
            let tone = Tone {
                row_offset: ro,
                col_offset: co,
                ..Tone::nominal(8000)
            };
            assert_eq!(
                detect_single(digit, tone),
                vec![digit],
                "{digit} offsets {ro} {co}"
            );
        }
    }
}

#[test]
fn frequency_offsets_of_3_5_percent_are_rejected() {
    for digit in Digit::ALL {
        for (ro, co) in [
            (0.035, 0.0),
            (-0.035, 0.0),
            (0.0, 0.035),
            (0.0, -0.035),
            (0.035, 0.035),
            (-0.035, -0.035),
        ] {
            let tone = Tone {
                row_offset: ro,
                col_offset: co,
                ..Tone::nominal(8000)
            };
            assert_eq!(
                detect_single(digit, tone),
                vec![],
                "{digit} offsets {ro} {co}"
            );
        }
    }
}

#[test]
fn twist_of_6_db_either_way_is_accepted() {
    for digit in Digit::ALL {
        for (row, col) in [(-8.0, -14.0), (-14.0, -8.0)] {
            let tone = Tone {
                row_dbm0: row,
                col_dbm0: col,
                ..Tone::nominal(8000)
            };
            assert_eq!(
                detect_single(digit, tone),
                vec![digit],
                "{digit} row {row} col {col}"
            );
        }
    }
}

#[test]
fn excessive_twist_is_rejected() {
    for digit in [Digit::D1, Digit::D5, Digit::Pound] {
        for (row, col) in [(-6.0, -18.0), (-18.0, -6.0)] {
            let tone = Tone {
                row_dbm0: row,
                col_dbm0: col,
                ..Tone::nominal(8000)
            };
            assert_eq!(
                detect_single(digit, tone),
                vec![],
                "{digit} row {row} col {col}"
            );
        }
    }
}

/// Every digit, including runs of the same digit, as 40 ms tones and 40 ms pauses
/// (Q.24's shortest signal), at several alignments to the detector's blocks.
fn forty_ms_sequence(rate: u32) {
    let digits: Vec<Digit> = Digit::ALL
        .iter()
        .copied()
        .chain([Digit::D1, Digit::D1, Digit::D1, Digit::Pound, Digit::Pound])
        .collect();
    for lead_samples in [0usize, 17, 41, 64, 90, 101] {
        let mut s = vec![0.0; lead_samples * (rate as usize / 8000)];
        for &d in &digits {
            push_tone(&mut s, d, 40, Tone::nominal(rate));
            push_silence(&mut s, rate, 40);
        }
        push_silence(&mut s, rate, 60);
        assert_eq!(
            detect(rate, &to_pcm(&s)),
            digits,
            "lead {lead_samples} at {rate} Hz"
        );
    }
}

#[test]
fn forty_ms_tones_with_forty_ms_pauses_are_all_found() {
    forty_ms_sequence(8000);
}

#[test]
fn forty_ms_tones_with_forty_ms_pauses_are_all_found_at_16_khz() {
    forty_ms_sequence(16000);
}

#[test]
fn twenty_ms_tones_are_rejected() {
    for lead_samples in [0usize, 20, 51, 77, 101] {
        let mut s = vec![0.0; lead_samples];
        for d in Digit::ALL {
            push_tone(&mut s, d, 20, Tone::nominal(8000));
            push_silence(&mut s, 8000, 60);
        }
        assert_eq!(detect(8000, &to_pcm(&s)), vec![], "lead {lead_samples}");
    }
}

#[test]
fn a_long_press_is_one_digit() {
    let mut s = Vec::new();
    push_tone(&mut s, Digit::D0, 2000, Tone::nominal(8000));
    push_silence(&mut s, 8000, 100);
    assert_eq!(detect(8000, &to_pcm(&s)), vec![Digit::D0]);
}

#[test]
fn digits_at_minus_20_dbm0_in_white_noise_at_15_db_snr_are_all_found() {
    // −20 dBm0 for the pair: each tone at −23 dBm0.
    let tone = Tone {
        row_dbm0: -23.0,
        col_dbm0: -23.0,
        ..Tone::nominal(8000)
    };
    let digits: Vec<Digit> = Digit::ALL
        .iter()
        .copied()
        .chain([Digit::D4, Digit::D4, Digit::Star])
        .collect();
    for seed in [1u64, 7, 42] {
        let mut s = Vec::new();
        push_silence(&mut s, 8000, 50);
        for &d in &digits {
            push_tone(&mut s, d, 50, tone);
            push_silence(&mut s, 8000, 50);
        }
        // Signal power of the pair: two sines of −23 dBm0. Noise 15 dB below it.
        let signal_power = 2.0 * amplitude(-23.0).powi(2) / 2.0;
        let sigma = (signal_power / 10f64.powf(1.5)).sqrt();
        let mut noise = Noise(seed);
        for v in s.iter_mut() {
            *v += sigma * noise.gaussian();
        }
        assert_eq!(detect(8000, &to_pcm(&s)), digits, "seed {seed}");
    }
}

#[test]
fn white_noise_alone_yields_no_digit() {
    let mut noise = Noise(99);
    let s: Vec<f64> = (0..8000 * 20)
        .map(|_| amplitude(-15.0) * noise.gaussian())
        .collect();
    assert_eq!(detect(8000, &to_pcm(&s)), vec![]);
}

// ---- talk-off ------------------------------------------------------------------------

const SPEECH: &[(&str, &str)] = &[
    ("en", "The meeting will begin in a few minutes. Please have your agenda ready, and remember that the quarterly figures are due on Thursday. We reviewed the numbers from last year, and most of the regional offices reported higher sales, although the northern branch struggled with supply problems during the winter. Our plan is to hire three engineers, open a new support line, and move the data centre before the end of the summer. If you have questions about the budget, send them to the finance team before Friday, so that they can prepare answers for the board."),
    ("en-us+f3", "Good morning everybody, and thank you for joining the call. I would like to start with a short update on the project schedule. The design review went well, the prototype passed its first tests, and the customer asked for two small changes to the user interface. Six, seven, eight, nine: we counted every unit twice. One, two, three, four, five, zero, star, pound, hash. We expect the second phase to take about eleven weeks, which means the launch date moves to the middle of October. Please keep your microphones muted when you are not speaking, and raise your hand if you want to ask something."),
    ("fr", "Bonjour à tous et merci d'être présents. Nous allons commencer par un rapide tour de table, puis nous parlerons du calendrier du projet et des prochaines étapes. Les résultats du trimestre sont meilleurs que prévu, mais il reste beaucoup de travail avant la livraison. Un, deux, trois, quatre, cinq, six, sept, huit, neuf, dix. Je vous demande de relire le document envoyé hier soir et de me faire part de vos remarques avant mercredi. La prochaine réunion aura lieu la semaine prochaine à la même heure."),
    ("de", "Guten Tag und herzlich willkommen zu unserer wöchentlichen Besprechung. Zuerst möchte ich mich bei allen bedanken, die am Wochenende gearbeitet haben, um die neue Version rechtzeitig fertigzustellen. Eins, zwei, drei, vier, fünf, sechs, sieben, acht, neun, null. Die Kunden sind bisher sehr zufrieden, aber wir müssen die Dokumentation verbessern und die Fehler aus der letzten Woche beheben. Bitte tragen Sie Ihre Stunden bis Freitag in das System ein."),
    ("es+m3", "Buenas tardes a todos. Vamos a empezar con el informe de ventas del último mes y después hablaremos de los nuevos proyectos. Uno, dos, tres, cuatro, cinco, seis, siete, ocho, nueve, cero. El equipo de soporte ha recibido muchas llamadas esta semana, sobre todo por problemas con la conexión, y necesitamos más personas para responder a tiempo. Les pido que revisen el documento y que envíen sus comentarios antes del jueves."),
    ("en-gb-scotland+f2", "Welcome back. Before we continue, a reminder that the building will be closed on Monday for maintenance, so please work from home. The engineering team has finished the migration, and the old servers will be switched off next week. Seven hundred and forty two tickets were closed this month, the highest number so far. Thanks to everyone who helped, and a special thanks to the night shift, who kept the service running during the storm. Now, let us look at the plans for the next quarter, starting with hiring and training."),
    ("it", "Buongiorno a tutti e benvenuti. Oggi parleremo dei risultati del progetto e dei prossimi passi. Uno, due, tre, quattro, cinque, sei, sette, otto, nove, zero. Il cliente ha chiesto alcune modifiche e dobbiamo consegnare la nuova versione entro la fine del mese. Vi prego di controllare il calendario e di segnalare eventuali problemi il prima possibile."),
];

/// The WAV's 16-bit mono samples and rate. espeak-ng writes to a pipe, so the RIFF and
/// data sizes are placeholders: read to the end of the buffer.
fn parse_wav(bytes: &[u8]) -> Option<(u32, Vec<i16>)> {
    if bytes.get(0..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut pos = 12;
    let mut rate = None;
    while pos + 8 <= bytes.len() {
        let id = bytes.get(pos..pos + 4)?;
        let size = u32::from_le_bytes(bytes.get(pos + 4..pos + 8)?.try_into().ok()?) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            rate = Some(u32::from_le_bytes(
                bytes.get(body + 4..body + 8)?.try_into().ok()?,
            ));
        } else if id == b"data" {
            let data = bytes.get(body..)?;
            let samples = data
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return Some((rate?, samples));
        }
        pos = body + size;
    }
    None
}

/// Windowed-sinc resampler to 8 kHz with a 3.6 kHz cut-off (good enough for a talk-off
/// corpus; not for the call path).
fn resample_to_8k(rate: u32, input: &[i16]) -> Vec<f64> {
    let ratio = f64::from(rate) / 8000.0;
    let cutoff = 3600.0 / f64::from(rate);
    let taps = 16isize;
    let out_len = (input.len() as f64 / ratio) as usize;
    (0..out_len)
        .map(|n| {
            let centre = n as f64 * ratio;
            let base = centre.floor() as isize;
            let mut acc = 0.0;
            for k in base - taps..=base + taps {
                let Some(&x) = usize::try_from(k).ok().and_then(|k| input.get(k)) else {
                    continue;
                };
                let t = k as f64 - centre;
                let sinc = if t.abs() < 1e-9 {
                    2.0 * cutoff
                } else {
                    (2.0 * std::f64::consts::PI * cutoff * t).sin() / (std::f64::consts::PI * t)
                };
                let w = 0.5 + 0.5 * (std::f64::consts::PI * t / (taps as f64 + 1.0)).cos();
                acc += f64::from(x) * sinc * w;
            }
            acc
        })
        .collect()
}

fn espeak_corpus() -> Option<Vec<f64>> {
    let strict = std::env::var("DIALIN_STRICT_TESTS").is_ok_and(|v| v == "1");
    let mut speech = Vec::new();
    for (voice, text) in SPEECH {
        for speed in ["150", "185"] {
            let out = Command::new("espeak-ng")
                .args(["-v", voice, "-s", speed, "--stdout", text])
                .output();
            let out = match out {
                Ok(o) if o.status.success() => o,
                other => {
                    let why = format!(
                        "espeak-ng unavailable or failed for voice {voice}: {:?}",
                        other.err()
                    );
                    assert!(!strict, "{why} (DIALIN_STRICT_TESTS=1)");
                    eprintln!("skipping talk-off test: {why}");
                    return None;
                }
            };
            let (rate, pcm) = parse_wav(&out.stdout).expect("espeak-ng wrote a WAV");
            speech.extend(resample_to_8k(rate, &pcm));
        }
    }
    Some(speech)
}

#[test]
fn three_minutes_of_speech_yield_no_digit_talk_off() {
    let Some(speech) = espeak_corpus() else {
        return;
    };
    let seconds = speech.len() as f64 / 8000.0;
    assert!(seconds >= 180.0, "talk-off corpus is only {seconds:.0} s");
    let rms = (speech.iter().map(|v| v * v).sum::<f64>() / speech.len() as f64).sqrt();
    let mut total = 0;
    // As synthesised, and scaled to a loud (−10 dBm0) and a quiet (−25 dBm0) talker.
    for (label, gain) in [
        ("as synthesised", 1.0),
        ("-10 dBm0", amplitude(-10.0) / 2f64.sqrt() / rms),
        ("-25 dBm0", amplitude(-25.0) / 2f64.sqrt() / rms),
    ] {
        let scaled: Vec<f64> = speech.iter().map(|v| v * gain).collect();
        let digits = detect(8000, &to_pcm(&scaled));
        println!(
            "talk-off: {seconds:.0} s of speech {label}: {} false digits {digits:?}",
            digits.len()
        );
        total += digits.len();
    }
    assert_eq!(total, 0, "speech was mistaken for DTMF");
}

#[test]
fn a_pin_sent_both_as_telephone_events_and_as_tones_is_collected_once() {
    // A gateway that relays each key press as RFC 4733 packets and also leaves the tones
    // in the audio: the digits must reach the IVR once each, double presses included.
    let pin = [Digit::D1, Digit::D2, Digit::D2, Digit::D9, Digit::Pound];
    let t0 = Instant::now();
    let mut events: Vec<(u64, DigitSource, Digit)> = Vec::new();

    // RFC 4733: 100 ms presses every 250 ms, packets handled on arrival.
    let mut rx = EventReceiver::new(8000);
    let mut seq = 0u16;
    for (i, &d) in pin.iter().enumerate() {
        let start_ms = 250 * i as u64;
        let mut sender = EventSender::new(
            d,
            8000 * start_ms as u32 / 1000,
            8000,
            Duration::from_millis(100),
            10,
        );
        let mut buf = [0u8; 4];
        while let Ok(Some(p)) = sender.next_packet(&mut buf) {
            let at = start_ms + p.send_after.as_millis() as u64;
            if let Ok(Some(got)) = rx.receive(
                p.timestamp,
                p.marker,
                seq,
                &buf,
                t0 + Duration::from_millis(at),
            ) {
                events.push((at, DigitSource::Rfc4733, got.digit));
            }
            seq = seq.wrapping_add(1);
        }
    }

    // In-band: the same presses as tones, seen after a 60 ms jitter buffer.
    let mut audio = Vec::new();
    for &d in &pin {
        push_tone(&mut audio, d, 100, Tone::nominal(8000));
        push_silence(&mut audio, 8000, 150);
    }
    let mut det = InbandDetector::new(8000).expect("8 kHz");
    for (i, frame) in to_pcm(&audio).chunks(160).enumerate() {
        if let Some(d) = det.process(frame) {
            events.push((20 * (i as u64 + 1) + 60, DigitSource::Inband, d));
        }
    }

    events.sort_by_key(|e| e.0);
    let mut dedup = DigitDeduplicator::default();
    let collected: Vec<Digit> = events
        .iter()
        .filter(|(at, src, d)| dedup.accept(*d, *src, t0 + Duration::from_millis(*at)))
        .map(|e| e.2)
        .collect();
    assert_eq!(events.len(), 2 * pin.len(), "each source saw every press");
    assert_eq!(collected, pin);
}
