//! WAV (RIFF/WAVE) reader for prompt files: PCM signed 16-bit, any channel count, any rate.
//!
//! Used once at start-up by the prompt catalog, on the embedded prompts and on the files an
//! operator drops in an override directory. Follows the RIFF layout of Microsoft's "Multimedia
//! Programming Interface and Data Specifications 1.0" (chunks of id + little-endian size +
//! body, padded to even length) and its `WAVE_FORMAT_EXTENSIBLE` extension. Operator files are
//! untrusted in the sense that a bad one must give an error, never a panic.

use thiserror::Error;

/// `WAVE_FORMAT_PCM` (mmreg.h).
const FORMAT_PCM: u16 = 0x0001;
/// `WAVE_FORMAT_EXTENSIBLE` (mmreg.h): the real format is the first two bytes of the sub-format
/// GUID, at offset 24 of the `fmt ` body.
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// Sample rates accepted: those of recorded speech. Anything else is refused rather than
/// resampled (a 1 Hz file would take the resampler minutes at start-up).
const MIN_SAMPLE_RATE: u32 = 8_000;
const MAX_SAMPLE_RATE: u32 = 48_000;
/// Channels accepted (mixed down to mono).
const MAX_CHANNELS: u16 = 8;
/// Longest prompt accepted, in seconds.
pub const MAX_SECONDS: u32 = 600;

/// Why a WAV file was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WavError {
    #[error("not a RIFF file")]
    NotRiff,
    #[error("RIFF file is not of form WAVE")]
    NotWave,
    #[error("chunk `{0}` runs past the end of the file")]
    Truncated(String),
    #[error("no `fmt ` chunk before the data")]
    MissingFormat,
    #[error("no `data` chunk")]
    MissingData,
    #[error("`fmt ` chunk is {0} bytes, shorter than the 16 required")]
    ShortFormat(usize),
    #[error("format tag {0:#06x} is not PCM")]
    NotPcm(u16),
    #[error("{0} bits per sample: only 16-bit PCM is supported")]
    BitsPerSample(u16),
    #[error("{0} channels")]
    Channels(u16),
    #[error("sample rate {0} Hz is out of range (8000 to 48000 Hz)")]
    SampleRate(u32),
    #[error("{0} s of audio: a prompt may last at most 600 s")]
    TooLong(u64),
    #[error("block align {got} does not match {channels} channels of 16 bits")]
    BlockAlign { got: u16, channels: u16 },
    #[error("no samples in the `data` chunk")]
    Empty,
}

/// A decoded WAV file, mixed down to mono.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    pub sample_rate: u32,
    /// Channels in the file (the samples are already mixed down to one).
    pub channels: u16,
    pub samples: Vec<i16>,
}

#[derive(Debug, Clone, Copy)]
struct Format {
    sample_rate: u32,
    channels: u16,
}

/// Parses a whole WAV file held in memory.
pub fn parse(bytes: &[u8]) -> Result<Wav, WavError> {
    let (riff, rest) = take_chunk_header(bytes).ok_or(WavError::NotRiff)?;
    if &riff.0 != b"RIFF" {
        return Err(WavError::NotRiff);
    }
    let (form, mut rest) = rest.split_first_chunk::<4>().ok_or(WavError::NotWave)?;
    if form != b"WAVE" {
        return Err(WavError::NotWave);
    }
    // The RIFF size is often wrong in files written by streaming tools; the chunks themselves
    // are what counts.
    let mut format = None;
    while let Some(((id, size), body)) = take_chunk_header(rest) {
        let name = || WavError::Truncated(String::from_utf8_lossy(&id).into_owned());
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        match &id {
            b"fmt " => {
                let chunk = body.get(..size).ok_or_else(name)?;
                format = Some(parse_format(chunk)?);
            }
            b"data" => {
                let format = format.ok_or(WavError::MissingFormat)?;
                // Writers that stream (pipes) leave the data size at a placeholder such as
                // 0xFFFFFFFF: take what is there, whole frames only.
                let data = body.get(..size).unwrap_or(body);
                return decode(data, format);
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        let padded = size.saturating_add(size & 1);
        rest = body.get(padded..).ok_or_else(name)?;
    }
    Err(WavError::MissingData)
}

/// A chunk's four-character id and declared body size.
type ChunkHeader = ([u8; 4], u32);

fn take_chunk_header(bytes: &[u8]) -> Option<(ChunkHeader, &[u8])> {
    let (id, rest) = bytes.split_first_chunk::<4>()?;
    let (size, rest) = rest.split_first_chunk::<4>()?;
    Some(((*id, u32::from_le_bytes(*size)), rest))
}

fn parse_format(chunk: &[u8]) -> Result<Format, WavError> {
    let le16 = |at: usize| {
        chunk
            .get(at..)?
            .first_chunk::<2>()
            .map(|b| u16::from_le_bytes(*b))
    };
    let le32 = |at: usize| {
        chunk
            .get(at..)?
            .first_chunk::<4>()
            .map(|b| u32::from_le_bytes(*b))
    };
    let short = || WavError::ShortFormat(chunk.len());
    let mut tag = le16(0).ok_or_else(short)?;
    let channels = le16(2).ok_or_else(short)?;
    let sample_rate = le32(4).ok_or_else(short)?;
    let block_align = le16(12).ok_or_else(short)?;
    let bits = le16(14).ok_or_else(short)?;
    if tag == FORMAT_EXTENSIBLE {
        tag = le16(24).ok_or_else(short)?;
    }
    if tag != FORMAT_PCM {
        return Err(WavError::NotPcm(tag));
    }
    if bits != 16 {
        return Err(WavError::BitsPerSample(bits));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(WavError::Channels(channels));
    }
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        return Err(WavError::SampleRate(sample_rate));
    }
    if u32::from(block_align) != u32::from(channels) * 2 {
        return Err(WavError::BlockAlign {
            got: block_align,
            channels,
        });
    }
    Ok(Format {
        sample_rate,
        channels,
    })
}

fn decode(data: &[u8], format: Format) -> Result<Wav, WavError> {
    let channels = usize::from(format.channels);
    let frame_bytes = channels * 2;
    let frames = (data.len() / frame_bytes) as u64;
    if frames > u64::from(MAX_SECONDS) * u64::from(format.sample_rate) {
        return Err(WavError::TooLong(frames / u64::from(format.sample_rate)));
    }
    let samples: Vec<i16> = data
        .chunks_exact(frame_bytes)
        .map(|frame| {
            let sum: i32 = frame
                .chunks_exact(2)
                .map(|b| i32::from(i16::from_le_bytes([b[0], b[1]])))
                .sum();
            // The mean of i16 values is an i16.
            (sum / channels as i32) as i16
        })
        .collect();
    if samples.is_empty() {
        return Err(WavError::Empty);
    }
    Ok(Wav {
        sample_rate: format.sample_rate,
        channels: format.channels,
        samples,
    })
}

/// Writes mono 16-bit PCM as a canonical 44-byte-header WAV file; used by tests and tools
/// that produce override prompts.
pub fn encode(sample_rate: u32, samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&FORMAT_PCM.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stereo_file() -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF\0\0\0\0WAVE");
        // An unknown chunk of odd length, padded, before fmt.
        out.extend_from_slice(b"LIST\x03\0\0\0abc\0");
        out.extend_from_slice(b"fmt \x10\0\0\0");
        out.extend_from_slice(&[1, 0, 2, 0]);
        out.extend_from_slice(&44_100u32.to_le_bytes());
        out.extend_from_slice(&(44_100u32 * 4).to_le_bytes());
        out.extend_from_slice(&[4, 0, 16, 0]);
        out.extend_from_slice(b"data\x08\0\0\0");
        for s in [100i16, 300, -100, -300] {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    #[test]
    fn stereo_is_mixed_down_and_unknown_chunks_skipped() {
        let wav = parse(&stereo_file()).unwrap();
        assert_eq!(wav.sample_rate, 44_100);
        assert_eq!(wav.channels, 2);
        assert_eq!(wav.samples, vec![200, -200]);
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let samples: Vec<i16> = (0..100).map(|i| (i * 300 - 15_000) as i16).collect();
        let wav = parse(&encode(8000, &samples)).unwrap();
        assert_eq!(
            (wav.sample_rate, wav.channels, wav.samples),
            (8000, 1, samples)
        );
    }

    #[test]
    fn every_truncation_of_a_valid_file_is_an_error_not_a_panic() {
        let file = stereo_file();
        for len in 0..file.len() - 4 {
            assert!(
                parse(&file[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
    }

    #[test]
    fn randomly_corrupted_files_never_panic() {
        let original = stereo_file();
        let mut state = 0x1234_5678u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for _ in 0..20_000 {
            let mut file = original.clone();
            for _ in 0..1 + next() % 4 {
                let at = next() as usize % file.len();
                file[at] = next() as u8;
            }
            if let Ok(wav) = parse(&file) {
                assert!(!wav.samples.is_empty() && wav.sample_rate > 0);
            }
        }
    }

    #[test]
    fn eight_bit_pcm_is_refused() {
        let mut file = stereo_file();
        let at = file.windows(4).position(|w| w == b"fmt ").unwrap() + 8 + 14;
        file[at] = 8;
        assert_eq!(parse(&file), Err(WavError::BitsPerSample(8)));
    }

    #[test]
    fn data_size_placeholder_reads_what_is_present() {
        let mut file = encode(16_000, &[1, 2, 3]);
        file[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&file).unwrap().samples, vec![1, 2, 3]);
    }
}

#[cfg(test)]
mod bounds_tests {
    use super::*;

    #[test]
    fn rates_outside_speech_and_overlong_files_are_refused_quickly() {
        let one_hz = encode(1, &[0; 4]);
        assert_eq!(parse(&one_hz), Err(WavError::SampleRate(1)));
        assert_eq!(parse(&encode(96_000, &[0; 4])), Err(WavError::SampleRate(96_000)));
        assert!(parse(&encode(8_000, &[0; 4])).is_ok());
        assert!(parse(&encode(44_100, &[0; 4])).is_ok());
        let long = encode(8_000, &vec![0; 8_000 * 601]);
        assert_eq!(parse(&long), Err(WavError::TooLong(601)));
    }
}
