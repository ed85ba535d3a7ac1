//! Our Opus packets against libopus, both ways: packets from our encoder decode with
//! `opusdec` (opus-tools, libopus), and `opusenc` output decodes with our decoder,
//! each proven by measuring the decoded tone's frequency and level.
//!
//! The Ogg container (RFC 3533 pages, RFC 7845 OpusHead/OpusTags) is written and read
//! by the small muxer below, independent of the codec crate's own Ogg support.
//! Needs `opusdec`/`opusenc` on PATH; skipped with a message when missing, unless
//! `DIALIN_STRICT_TESTS=1`, where a missing tool fails the test.

use dialin_media::codec::{new_decoder, new_encoder, CodecConfig, CodecKind, SampleRate};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Returns false (test skipped) when `tool` is missing and strict mode is off.
fn have_tool(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        if std::env::var("DIALIN_STRICT_TESTS").as_deref() == Ok("1") {
            panic!("{tool} not found on PATH (DIALIN_STRICT_TESTS=1)");
        }
        eprintln!("skipping: {tool} not found on PATH (install opus-tools)");
    }
    found
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dialin-opus-interop-{}-{name}", std::process::id()))
}

// ---- Ogg (RFC 3533) ----

/// CRC-32 of Ogg pages: polynomial 0x04C11DB7, no reflection, initial value 0,
/// no final XOR (RFC 3533 §6).
fn ogg_crc(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

const SERIAL: u32 = 0x6469_616c;

/// Appends one page holding exactly one packet.
fn write_page(out: &mut Vec<u8>, packet: &[u8], flags: u8, granule: u64, seq: u32) {
    let start = out.len();
    out.extend_from_slice(b"OggS");
    out.push(0); // version
    out.push(flags);
    out.extend_from_slice(&granule.to_le_bytes());
    out.extend_from_slice(&SERIAL.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled below
                                    // Lacing: 255s then the remainder; a multiple of 255 ends with a 0.
    let mut lacing = vec![255u8; packet.len() / 255];
    lacing.push((packet.len() % 255) as u8);
    assert!(lacing.len() <= 255, "packet too large for one page");
    out.push(lacing.len() as u8);
    out.extend_from_slice(&lacing);
    out.extend_from_slice(packet);
    let crc = ogg_crc(&out[start..]);
    out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
}

/// An Ogg Opus file (RFC 7845) of mono 20 ms packets coded from `input_rate` audio.
fn mux_ogg_opus(packets: &[Vec<u8>], pre_skip: u16, input_rate: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut head = Vec::new();
    head.extend_from_slice(b"OpusHead");
    head.push(1); // version
    head.push(1); // channels
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&input_rate.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // mapping family 0: mono/stereo
    write_page(&mut out, &head, 0x02, 0, 0);
    let mut tags = Vec::new();
    tags.extend_from_slice(b"OpusTags");
    let vendor = b"dialin";
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes());
    write_page(&mut out, &tags, 0, 0, 1);
    let mut granule = u64::from(pre_skip);
    for (i, p) in packets.iter().enumerate() {
        granule += 960; // 20 ms at 48 kHz (RFC 7845 §4: granule counts 48 kHz samples)
        let flags = if i + 1 == packets.len() { 0x04 } else { 0 };
        write_page(&mut out, p, flags, granule, 2 + i as u32);
    }
    out
}

/// Packets of an Ogg Opus file with its pre-skip; checks every page's CRC.
fn demux_ogg_opus(file: &[u8]) -> (u16, Vec<Vec<u8>>) {
    let mut packets = Vec::new();
    let mut partial = Vec::new();
    let mut pos = 0;
    while pos + 27 <= file.len() {
        assert_eq!(&file[pos..pos + 4], b"OggS", "page capture pattern");
        let n_seg = usize::from(file[pos + 26]);
        let lacing = &file[pos + 27..pos + 27 + n_seg];
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let end = pos + 27 + n_seg + body_len;
        let mut page = file[pos..end].to_vec();
        let stored = u32::from_le_bytes([page[22], page[23], page[24], page[25]]);
        page[22..26].fill(0);
        assert_eq!(ogg_crc(&page), stored, "page CRC");
        let mut body = pos + 27 + n_seg;
        for &l in lacing {
            partial.extend_from_slice(&file[body..body + usize::from(l)]);
            body += usize::from(l);
            if l < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        pos = end;
    }
    let head = packets.first().expect("OpusHead packet");
    assert_eq!(&head[..8], b"OpusHead");
    let pre_skip = u16::from_le_bytes([head[10], head[11]]);
    assert_eq!(&packets[1][..8], b"OpusTags");
    (pre_skip, packets.split_off(2))
}

// ---- measurement ----

fn tone(freq: f64, dbfs: f64, rate: u32, seconds: f64) -> Vec<i16> {
    let a = 32767.0 * 10f64.powf(dbfs / 20.0);
    let n = (f64::from(rate) * seconds) as usize;
    (0..n)
        .map(|i| {
            (a * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()) as i16
        })
        .collect()
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

fn assert_tone(what: &str, pcm: &[i16], rate: u32, freq: f64, dbfs: f64) {
    // Skip the first 200 ms (codec start-up) and the last 100 ms (end of stream).
    let settled = &pcm[rate as usize / 5..pcm.len() - rate as usize / 10];
    let f = frequency(settled, rate);
    let level = level_dbfs(settled);
    println!("{what}: {freq} Hz at {dbfs} dBFS came back as {f:.2} Hz at {level:.2} dBFS");
    assert!(
        (f - freq).abs() < freq * 0.005,
        "{what}: frequency {f:.2} Hz"
    );
    assert!((level - dbfs).abs() <= 1.0, "{what}: level {level:.2} dBFS");
}

fn read_raw_s16le(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).expect("read decoded PCM");
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn our_packets(rate: SampleRate, pcm: &[i16]) -> Vec<Vec<u8>> {
    let mut enc = new_encoder(CodecKind::Opus, rate, &CodecConfig::default()).expect("encoder");
    pcm.chunks_exact(rate.frame_samples())
        .map(|f| {
            let mut buf = [0u8; 1500];
            let n = enc.encode(f, &mut buf).expect("encode");
            buf[..n].to_vec()
        })
        .collect()
}

fn our_encoder_decodes_with_opusdec(rate: SampleRate) {
    if !have_tool("opusdec") {
        return;
    }
    let hz = rate.hz();
    let input = tone(1000.0, -10.0, hz, 2.0);
    // 312 samples at 48 kHz is libopus's lookahead for VoIP/audio (RFC 7845 §4.2).
    let packets = our_packets(rate, &input);
    let file = mux_ogg_opus(&packets, 312, hz);
    let opus = temp_path(&format!("ours-{hz}.opus"));
    let raw = temp_path(&format!("ours-{hz}.raw"));
    std::fs::write(&opus, file).expect("write opus file");
    let status = Command::new("opusdec")
        .args(["--quiet", "--no-dither", "--rate", &hz.to_string()])
        .arg(&opus)
        .arg(&raw)
        .status()
        .expect("run opusdec");
    assert!(status.success(), "opusdec rejected our stream: {status}");
    let decoded = read_raw_s16le(&raw);
    let _ = std::fs::remove_file(&raw);
    assert!(
        decoded.len() + hz as usize / 10 >= input.len(),
        "opusdec returned {} samples",
        decoded.len()
    );
    assert_tone(
        &format!("ours@{hz} -> opusdec"),
        &decoded,
        hz,
        1000.0,
        -10.0,
    );

    // Our decoder on the same packets, at 48 kHz where opusdec does not resample,
    // agrees with libopus's decode sample for sample (opusdec drops the pre-skip).
    let full = temp_path(&format!("ours-{hz}-48k.raw"));
    let status = Command::new("opusdec")
        .args(["--quiet", "--no-dither", "--rate", "48000"])
        .arg(&opus)
        .arg(&full)
        .status()
        .expect("run opusdec");
    assert!(status.success(), "opusdec rejected our stream: {status}");
    let theirs = read_raw_s16le(&full);
    let _ = std::fs::remove_file(&opus);
    let _ = std::fs::remove_file(&full);
    let mut dec = new_decoder(
        CodecKind::Opus,
        SampleRate::Hz48000,
        &CodecConfig::default(),
    )
    .expect("decoder");
    let mut ours = Vec::new();
    let mut buf = vec![0i16; SampleRate::Hz48000.frame_samples()];
    for p in &packets {
        let n = dec.decode(p, &mut buf).expect("decode");
        ours.extend_from_slice(&buf[..n]);
    }
    let ours = &ours[312..];
    let n = theirs.len().min(ours.len());
    let (sig, err) = theirs[..n]
        .iter()
        .zip(&ours[..n])
        .fold((0.0, 0.0), |(s, e), (&a, &b)| {
            (
                s + f64::from(a).powi(2),
                e + (f64::from(a) - f64::from(b)).powi(2),
            )
        });
    let snr = 10.0 * (sig / f64::max(err, 1e-9)).log10();
    let differing = theirs[..n]
        .iter()
        .zip(&ours[..n])
        .filter(|(a, b)| a != b)
        .count();
    println!("ours@{hz}: our 48 kHz decode vs opusdec's: {snr:.1} dB SNR, {differing} of {n} samples differ");
    assert!(snr > 60.0, "our decoder differs from libopus: {snr:.1} dB");
}

#[test]
fn our_8khz_opus_packets_decode_with_libopus_opusdec() {
    our_encoder_decodes_with_opusdec(SampleRate::Hz8000);
}

#[test]
fn our_16khz_opus_packets_decode_with_libopus_opusdec() {
    our_encoder_decodes_with_opusdec(SampleRate::Hz16000);
}

#[test]
fn libopus_opusenc_packets_decode_with_our_decoder_at_8_and_16_khz() {
    if !have_tool("opusenc") {
        return;
    }
    let src_rate = 16_000;
    let input = tone(440.0, -10.0, src_rate, 2.0);
    let raw = temp_path("theirs.raw");
    let opus = temp_path("theirs.opus");
    let bytes: Vec<u8> = input.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&raw, bytes).expect("write raw PCM");
    let status = Command::new("opusenc")
        .args([
            "--quiet",
            "--raw",
            "--raw-bits",
            "16",
            "--raw-rate",
            "16000",
            "--raw-chan",
            "1",
        ])
        .args(["--bitrate", "24", "--speech"])
        .arg(&raw)
        .arg(&opus)
        .status()
        .expect("run opusenc");
    assert!(status.success(), "opusenc failed: {status}");
    let file = std::fs::read(&opus).expect("read opus file");
    let _ = std::fs::remove_file(&raw);
    let _ = std::fs::remove_file(&opus);
    let (pre_skip, packets) = demux_ogg_opus(&file);
    assert!(packets.len() >= 90, "only {} packets", packets.len());

    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let mut dec = new_decoder(CodecKind::Opus, rate, &CodecConfig::default()).expect("decoder");
        let mut pcm = Vec::new();
        let mut buf = vec![0i16; rate.frame_samples() * 6];
        for p in &packets {
            let n = dec.decode(p, &mut buf).expect("decode opusenc packet");
            pcm.extend_from_slice(&buf[..n]);
        }
        let skip = usize::from(pre_skip) * rate.hz() as usize / 48_000;
        assert_tone(
            &format!("opusenc -> ours@{}", rate.hz()),
            &pcm[skip..],
            rate.hz(),
            440.0,
            -10.0,
        );
    }
}

#[test]
fn ogg_crc_matches_the_rfc_3533_check_value() {
    // CRC-32/OGG (MPEG-2 variant without final XOR) of "123456789" is 0x89A1897F.
    assert_eq!(ogg_crc(b"123456789"), 0x89A1_897F);
}
