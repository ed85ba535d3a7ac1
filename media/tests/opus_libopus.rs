//! The `libopus` feature: Opus on the system libopus keeps the codec contract.
//!
//! With the feature on, `new_encoder` / `new_decoder` for Opus run libopus. These tests
//! prove that path codes a tone faithfully at 8 and 16 kHz, applies the configured
//! bitrate, allocates nothing per frame once running, exchanges packets with the
//! pure-Rust `opus-rs` engine in both directions (the default build's engine, so a
//! gateway built either way talks to the other), and turns malformed packets into
//! typed errors. The other Opus tests (`codec_quality`, `codec_alloc`, `opus_interop`)
//! also run against libopus when the feature is on.

#![cfg(feature = "libopus")]

use dialin_media::codec::{
    new_decoder, new_encoder, new_pure_rust_opus_decoder, new_pure_rust_opus_encoder, CodecConfig,
    CodecError, CodecKind, Decoder, SampleRate,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::f64::consts::PI;

// ---- allocation counting ----

/// Counts allocations made by the current thread, so tests running in parallel on
/// other threads do not disturb the count.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        BYTES.with(|c| c.set(c.get() + layout.size()));
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        BYTES.with(|c| c.set(c.get() + layout.size()));
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        BYTES.with(|c| c.set(c.get() + new_size));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the allocations (count, bytes) it made.
fn counted<R>(f: impl FnOnce() -> R) -> (R, (usize, usize)) {
    let a0 = ALLOCATIONS.with(Cell::get);
    let b0 = BYTES.with(Cell::get);
    let r = f();
    (
        r,
        (ALLOCATIONS.with(Cell::get) - a0, BYTES.with(Cell::get) - b0),
    )
}

// ---- signals and measurement ----

fn tone(freq: f64, dbfs: f64, rate: u32, seconds: f64) -> Vec<i16> {
    let a = 32767.0 * 10f64.powf(dbfs / 20.0);
    let n = (f64::from(rate) * seconds) as usize;
    (0..n)
        .map(|i| (a * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()).round() as i16)
        .collect()
}

/// A voiced signal with a moving pitch so the encoder takes its speech paths.
fn speech_frame(rate: SampleRate, index: usize, out: &mut [i16]) {
    let hz = f64::from(rate.hz());
    let len = out.len();
    for (i, s) in out.iter_mut().enumerate() {
        let t = (index * len + i) as f64 / hz;
        let f0 = 130.0 + 40.0 * (2.0 * PI * 0.5 * t).sin();
        let v: f64 = (1..12)
            .map(|h| (2.0 * PI * f0 * f64::from(h) * t).sin() / f64::from(h))
            .sum();
        *s = (4000.0 * v) as i16;
    }
}

/// Frequency by interpolated positive-going zero crossings.
fn frequency(x: &[i16], rate: u32) -> f64 {
    let crossings: Vec<f64> = x
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] < 0 && w[1] >= 0)
        .map(|(i, w)| i as f64 + f64::from(w[0]).abs() / (f64::from(w[1]) - f64::from(w[0])))
        .collect();
    let (Some(first), Some(last)) = (crossings.first(), crossings.last()) else {
        return 0.0;
    };
    (crossings.len() - 1) as f64 * f64::from(rate) / (last - first)
}

/// RMS level in dBFS relative to a full-scale sine.
fn level_dbfs(x: &[i16]) -> f64 {
    let ms = x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64;
    20.0 * (ms.sqrt() * 2f64.sqrt() / 32767.0).log10()
}

/// Checks that `pcm` holds `freq` at `dbfs`, after 200 ms of codec start-up.
fn assert_tone(what: &str, pcm: &[i16], rate: u32, freq: f64, dbfs: f64) {
    let settled = &pcm[rate as usize / 5..];
    let f = frequency(settled, rate);
    let level = level_dbfs(settled);
    println!("{what}: {freq} Hz at {dbfs} dBFS came back as {f:.2} Hz at {level:.2} dBFS");
    assert!(
        (f - freq).abs() < freq * 0.005,
        "{what}: frequency {f:.2} Hz"
    );
    assert!((level - dbfs).abs() <= 1.0, "{what}: level {level:.2} dBFS");
}

/// Signal-to-difference ratio of `b` against `a`, in dB.
fn snr_db(a: &[i16], b: &[i16]) -> f64 {
    let (sig, err) = a.iter().zip(b).fold((0.0, 0.0), |(s, e), (&x, &y)| {
        (
            s + f64::from(x).powi(2),
            e + (f64::from(x) - f64::from(y)).powi(2),
        )
    });
    10.0 * (sig / f64::max(err, 1e-9)).log10()
}

// ---- the two engines ----

/// 20 ms packets from the crate's Opus encoder (libopus under this feature).
fn libopus_packets(rate: SampleRate, config: &CodecConfig, pcm: &[i16]) -> Vec<Vec<u8>> {
    let mut enc = new_encoder(CodecKind::Opus, rate, config).expect("encoder");
    pcm.chunks_exact(rate.frame_samples())
        .map(|f| {
            let mut buf = [0u8; 1500];
            let n = enc.encode(f, &mut buf).expect("encode");
            buf[..n].to_vec()
        })
        .collect()
}

/// 20 ms packets from the pure-Rust engine, set up as the default build sets it up.
fn pure_packets(rate: SampleRate, config: &CodecConfig, pcm: &[i16]) -> Vec<Vec<u8>> {
    let mut enc = new_pure_rust_opus_encoder(rate, config).expect("pure-Rust encoder");
    pcm.chunks_exact(rate.frame_samples())
        .map(|f| {
            let mut buf = [0u8; 1500];
            let n = enc.encode(f, &mut buf).expect("pure-Rust encode");
            buf[..n].to_vec()
        })
        .collect()
}

fn libopus_decode(rate: SampleRate, packets: &[Vec<u8>]) -> Vec<i16> {
    let mut dec = new_decoder(CodecKind::Opus, rate, &CodecConfig::default()).expect("decoder");
    let mut buf = vec![0i16; rate.frame_samples() * 6];
    let mut pcm = Vec::new();
    for p in packets {
        let n = dec.decode(p, &mut buf).expect("libopus decode");
        pcm.extend_from_slice(&buf[..n]);
    }
    pcm
}

fn pure_decode(rate: SampleRate, packets: &[Vec<u8>]) -> Vec<i16> {
    let mut dec = new_pure_rust_opus_decoder(rate).expect("pure-Rust decoder");
    let mut buf = vec![0i16; rate.frame_samples() * 6];
    let mut pcm = Vec::new();
    for p in packets {
        let n = dec.decode(p, &mut buf).expect("pure-Rust decode");
        pcm.extend_from_slice(&buf[..n]);
    }
    pcm
}

const RATES: [SampleRate; 2] = [SampleRate::Hz8000, SampleRate::Hz16000];

// ---- behaviour ----

#[test]
fn libopus_round_trip_keeps_a_1000_hz_tone_at_8_and_16_khz() {
    for rate in RATES {
        let hz = rate.hz();
        let input = tone(1000.0, -10.0, hz, 1.0);
        let packets = libopus_packets(rate, &CodecConfig::default(), &input);
        let out = libopus_decode(rate, &packets);
        assert_eq!(out.len(), input.len(), "one 20 ms frame out per packet");
        assert_tone(&format!("libopus@{hz} round trip"), &out, hz, 1000.0, -10.0);
    }
}

#[test]
fn libopus_encoder_spends_the_configured_bitrate() {
    let rate = SampleRate::Hz16000;
    let frame = rate.frame_samples();
    let mut input = vec![0i16; frame * 100];
    for (i, f) in input.chunks_exact_mut(frame).enumerate() {
        speech_frame(rate, i, f);
    }
    let mean_bits_per_second = |bitrate| {
        let config = CodecConfig {
            opus_bitrate: bitrate,
            ..CodecConfig::default()
        };
        let packets = libopus_packets(rate, &config, &input);
        let bytes: usize = packets.iter().map(Vec::len).sum();
        // 50 packets of 20 ms each make one second.
        (bytes * 8) as f64 * 50.0 / packets.len() as f64
    };
    // A speech-like signal that VBR codes below a high target: the low target is
    // met, and the high one buys clearly more bits. Neither holds if the setting is
    // ignored (libopus then picks its own rate).
    let low = mean_bits_per_second(12_000);
    let high = mean_bits_per_second(32_000);
    println!("libopus at 12000 bit/s sent {low:.0} bit/s, at 32000 bit/s sent {high:.0} bit/s");
    assert!(
        (low - 12_000.0).abs() < 0.2 * 12_000.0,
        "asked 12000 bit/s, got {low:.0}"
    );
    assert!(
        high > 1.6 * low,
        "32000 bit/s ({high:.0}) not well above 12000 ({low:.0})"
    );
}

#[test]
fn libopus_state_is_allocated_once_at_setup_by_the_rust_allocator() {
    let config = CodecConfig::default();
    let (enc, enc_alloc) = counted(|| new_encoder(CodecKind::Opus, SampleRate::Hz8000, &config));
    let (dec, dec_alloc) = counted(|| new_decoder(CodecKind::Opus, SampleRate::Hz8000, &config));
    assert!(enc.is_ok() && dec.is_ok());
    println!("setup allocations (count, bytes): encoder {enc_alloc:?}, decoder {dec_alloc:?}");
    // The codec state (tens of KiB in libopus) lives in memory this allocator handed
    // out, so the per-frame counts below see everything the state could grow by.
    assert!(
        enc_alloc.1 > 10_000,
        "encoder state not in Rust memory: {enc_alloc:?}"
    );
    assert!(
        dec_alloc.1 > 10_000,
        "decoder state not in Rust memory: {dec_alloc:?}"
    );
}

#[test]
fn libopus_encode_decode_conceal_and_recover_allocate_nothing_per_frame() {
    for rate in RATES {
        let config = CodecConfig {
            expected_loss_percent: 20,
            ..CodecConfig::default()
        };
        let mut enc = new_encoder(CodecKind::Opus, rate, &config).expect("encoder");
        let mut dec = new_decoder(CodecKind::Opus, rate, &config).expect("decoder");
        let frame = rate.frame_samples();
        let mut pcm = vec![0i16; frame];
        let mut out = vec![0i16; frame * 6];
        let mut payload = [0u8; 1500];
        let (warmup, measured) = (50, 200);
        let mut totals = [(0usize, 0usize); 4];
        for i in 0..warmup + measured {
            speech_frame(rate, i, &mut pcm);
            let (n, enc_alloc) = counted(|| enc.encode(&pcm, &mut payload).expect("encode"));
            let packet = &payload[..n];
            let none = (0, 0);
            // Two losses in every 20 frames, both kinds a jitter buffer produces:
            // frame 5 is rebuilt from frame 6's FEC once 6 arrives, frame 15 is
            // concealed at once (as when the next packet is late too).
            let (decode_alloc, conceal_alloc, recover_alloc) = match i % 20 {
                5 => (none, none, none),
                6 => {
                    let recovered = counted(|| dec.recover(packet, &mut out).expect("recover")).1;
                    (
                        counted(|| dec.decode(packet, &mut out).expect("decode")).1,
                        none,
                        recovered,
                    )
                }
                15 => (
                    none,
                    counted(|| dec.conceal(&mut out).expect("conceal")).1,
                    none,
                ),
                _ => (
                    counted(|| dec.decode(packet, &mut out).expect("decode")).1,
                    none,
                    none,
                ),
            };
            if i < warmup {
                continue;
            }
            for (t, a) in
                totals
                    .iter_mut()
                    .zip([enc_alloc, decode_alloc, conceal_alloc, recover_alloc])
            {
                *t = (t.0 + a.0, t.1 + a.1);
            }
        }
        let [encode, decode, conceal, recover] = totals;
        println!(
            "libopus@{}: allocations over {measured} frames: encode {encode:?}, \
             decode {decode:?}, conceal {conceal:?}, recover {recover:?}",
            rate.hz()
        );
        assert_eq!(encode, (0, 0), "encode allocates");
        assert_eq!(decode, (0, 0), "decode allocates");
        assert_eq!(conceal, (0, 0), "concealment allocates");
        assert_eq!(recover, (0, 0), "FEC recovery allocates");
    }
}

#[test]
fn libopus_packets_decode_with_the_pure_rust_decoder() {
    for rate in RATES {
        let hz = rate.hz();
        let input = tone(1000.0, -10.0, hz, 1.0);
        let packets = libopus_packets(rate, &CodecConfig::default(), &input);
        let theirs = pure_decode(rate, &packets);
        assert_tone(
            &format!("libopus@{hz} -> opus-rs"),
            &theirs,
            hz,
            1000.0,
            -10.0,
        );
        // The two decoders implement one normative spec (RFC 6716 §4): the same
        // packets decode to the same audio, within float rounding.
        let ours = libopus_decode(rate, &packets);
        let snr = snr_db(&ours, &theirs);
        println!("libopus@{hz}: libopus vs opus-rs decode of the same packets: {snr:.1} dB");
        assert!(snr > 60.0, "decoders disagree: {snr:.1} dB");
    }
}

#[test]
fn pure_rust_packets_decode_with_libopus() {
    for rate in RATES {
        let hz = rate.hz();
        let input = tone(1000.0, -10.0, hz, 1.0);
        let packets = pure_packets(rate, &CodecConfig::default(), &input);
        let out = libopus_decode(rate, &packets);
        assert_eq!(out.len(), input.len());
        assert_tone(&format!("opus-rs@{hz} -> libopus"), &out, hz, 1000.0, -10.0);
    }
}

#[test]
fn pure_rust_fec_is_recovered_by_libopus_as_the_pure_rust_decoder_recovers_it() {
    let rate = SampleRate::Hz16000;
    let frame = rate.frame_samples();
    let config = CodecConfig {
        expected_loss_percent: 20,
        ..CodecConfig::default()
    };
    let mut input = vec![0i16; frame * 60];
    for (i, f) in input.chunks_exact_mut(frame).enumerate() {
        speech_frame(rate, i, f);
    }
    let packets = pure_packets(rate, &config, &input);
    let clean = libopus_decode(rate, &packets);
    // Decodes up to `lost`, then rebuilds the lost frame the way `rebuild` says.
    let lost_frame = |lost: usize, rebuild: &dyn Fn(&mut dyn Decoder, &mut [i16])| {
        let mut dec = new_decoder(CodecKind::Opus, rate, &config).expect("decoder");
        let mut pcm = vec![0i16; frame];
        for p in &packets[..lost] {
            dec.decode(p, &mut pcm).expect("decode");
        }
        rebuild(dec.as_mut(), &mut pcm);
        pcm
    };
    // The encoder decides per frame whether to spend bits on LBRR (RFC 6716 §4.2.4),
    // so several losses are tried; where the next packet carries FEC, libopus must
    // rebuild the frame better than concealment and exactly as opus-rs does.
    let mut rebuilt = 0;
    for lost in [10usize, 20, 30, 40, 50] {
        let next = &packets[lost + 1];
        let reference = &clean[lost * frame..(lost + 1) * frame];
        let fec = lost_frame(lost, &|d, pcm| {
            d.recover(next, pcm).expect("recover");
        });
        let plc = lost_frame(lost, &|d, pcm| {
            d.conceal(pcm).expect("conceal");
        });
        let mut pure = new_pure_rust_opus_decoder(rate).expect("pure-Rust decoder");
        let mut pure_fec = vec![0i16; frame];
        for p in &packets[..lost] {
            pure.decode(p, &mut pure_fec).expect("pure-Rust decode");
        }
        pure.recover(next, &mut pure_fec).expect("pure-Rust FEC");
        let (fec_db, plc_db) = (snr_db(reference, &fec), snr_db(reference, &plc));
        let agreement = snr_db(&pure_fec, &fec);
        println!(
            "lost frame {lost}: libopus FEC {fec_db:.1} dB, PLC {plc_db:.1} dB, \
             vs opus-rs FEC {agreement:.1} dB"
        );
        if fec_db > plc_db + 3.0 {
            rebuilt += 1;
            assert!(
                agreement > 60.0,
                "frame {lost}: libopus and opus-rs FEC differ ({agreement:.1} dB)"
            );
        }
    }
    assert!(rebuilt > 0, "no lost frame was rebuilt from opus-rs's FEC");
}

#[test]
fn libopus_refuses_malformed_packets_with_typed_errors() {
    let malformed = |e: Result<usize, CodecError>| {
        matches!(
            e,
            Err(CodecError::MalformedPayload {
                kind: CodecKind::Opus,
                ..
            })
        )
    };
    for rate in RATES {
        let mut dec = new_decoder(CodecKind::Opus, rate, &CodecConfig::default()).expect("decoder");
        let mut out = vec![0i16; rate.frame_samples() * 6];
        // RFC 6716 §3.1: at least one TOC byte.
        assert!(malformed(dec.decode(&[], &mut out)), "empty packet");
        // §3.2.3 (R3): code 1 carries two equal frames, so the rest must be even.
        assert!(
            malformed(dec.decode(&[0x01, 0xAA], &mut out)),
            "odd code 1 packet"
        );
        // §3.2.5 (R5): code 3 with zero frames.
        assert!(
            malformed(dec.decode(&[0x03, 0x00], &mut out)),
            "code 3 with no frames"
        );
        // §3.2.5 (R5): 7 frames of 20 ms is more than 120 ms of audio.
        assert!(
            malformed(dec.decode(&[0x0B, 0x07, 0, 0, 0, 0, 0, 0, 0], &mut out)),
            "over 120 ms"
        );
        // §3.2.1: a two-byte length that runs past the end of the packet.
        assert!(
            malformed(dec.decode(&[0x02, 0xFC, 0xFF, 0x00], &mut out)),
            "length overrun"
        );
        // The same rules hold when the packet is read for its FEC.
        assert!(
            malformed(dec.recover(&[0x03, 0x00], &mut out)),
            "FEC from a bad packet"
        );
        // A good packet into a too-small buffer is a size error, not an overrun.
        let small = dec.decode(&[0x78; 160], &mut [0i16; 10]);
        assert!(
            matches!(small, Err(CodecError::OutputTooSmall { available: 10, .. })),
            "{small:?}"
        );
        // The decoder is still usable afterwards.
        let good = libopus_packets(
            rate,
            &CodecConfig::default(),
            &tone(440.0, -10.0, rate.hz(), 0.1),
        );
        assert_eq!(dec.decode(&good[0], &mut out), Ok(rate.frame_samples()));
    }
}

#[test]
fn libopus_survives_random_payloads_without_panicking() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as u8
    };
    for rate in RATES {
        let mut dec = new_decoder(CodecKind::Opus, rate, &CodecConfig::default()).expect("decoder");
        let mut out = vec![0i16; rate.frame_samples() * 6];
        let (mut ok, mut refused) = (0, 0);
        for len in 0..2000usize {
            let payload: Vec<u8> = (0..len % 400).map(|_| next()).collect();
            for result in [
                dec.decode(&payload, &mut out),
                dec.recover(&payload, &mut out),
            ] {
                match result {
                    Ok(n) => {
                        assert!(n <= out.len());
                        ok += 1;
                    }
                    Err(CodecError::MalformedPayload { .. }) => refused += 1,
                    Err(e) => panic!("random payload gave a non-payload error: {e}"),
                }
            }
        }
        println!(
            "libopus@{}: random payloads: {ok} decoded, {refused} refused",
            rate.hz()
        );
        assert!(refused > 0, "no random payload was refused");
    }
}

#[test]
fn libopus_encoder_refuses_bad_frame_lengths_and_small_buffers() {
    let rate = SampleRate::Hz8000;
    let mut enc = new_encoder(CodecKind::Opus, rate, &CodecConfig::default()).expect("encoder");
    let pcm = vec![0i16; 161];
    assert_eq!(
        enc.encode(&pcm, &mut [0u8; 1500]),
        Err(CodecError::FrameLength {
            kind: CodecKind::Opus,
            len: 161
        })
    );
    assert!(matches!(
        enc.encode(&pcm[..160], &mut []),
        Err(CodecError::OutputTooSmall { available: 0, .. })
    ));
    assert!(enc.encode(&pcm[..160], &mut [0u8; 1500]).is_ok());
}
