//! Opus (RFC 6716): the room leg's codec, behind [`Encoder`](super::Encoder) and
//! [`Decoder`](super::Decoder).
//!
//! The room leg: LiveKit carries Opus, so a caller's audio is encoded here and the
//! room's is decoded here, at the SIP leg's own rate (8 kHz beside G.711, 16 kHz beside
//! G.722). Opus codes internally at its own bandwidths and decodes to any of its
//! rates (RFC 6716 §2), so no resampler sits on the call path and the encoder has
//! fewer samples to analyse. Packets follow RFC 7587: one mono 20 ms frame each.
//!
//! Lost packets are concealed by the decoder itself (RFC 6716 §4.4); when the packet
//! after a loss carries in-band FEC (LBRR, §2.1.7),
//! [`Decoder::recover`](super::Decoder::recover) rebuilds the lost frame from it instead.
//!
//! Two backends keep that one contract. By default the pure-Rust `opus-pure` crate,
//! which builds anywhere. With the `libopus` cargo feature, the system libopus through
//! the `libopus` submodule, for the fastest encoder. Settings checks and the frame
//! lengths Opus accepts are shared here so both refuse the same inputs.

#[cfg(not(feature = "libopus"))]
use super::{ensure_room, Decoder, Encoder};
use super::{CodecConfig, CodecError, CodecKind, SampleRate};

#[cfg(feature = "libopus")]
mod libopus;
#[cfg(feature = "libopus")]
pub(crate) use libopus::{OpusDecoder, OpusEncoder};

/// Largest complexity Opus defines (RFC 6716 §2.1.5 — 0 to 10).
const MAX_COMPLEXITY: u8 = 10;
/// Bitrate bounds libopus accepts (`OPUS_SET_BITRATE`: 500 to 512 000 bit/s).
const BITRATE_RANGE: std::ops::RangeInclusive<u32> = 500..=512_000;

/// Refuses settings outside what Opus defines, before any backend sees them.
fn check_config(config: &CodecConfig) -> Result<(), CodecError> {
    if config.opus_complexity > MAX_COMPLEXITY {
        return Err(CodecError::InvalidConfig("opus_complexity must be 0 to 10"));
    }
    if !BITRATE_RANGE.contains(&config.opus_bitrate) {
        return Err(CodecError::InvalidConfig(
            "opus_bitrate must be 500 to 512000 bit/s",
        ));
    }
    if config.expected_loss_percent > 100 {
        return Err(CodecError::InvalidConfig(
            "expected_loss_percent must be 0 to 100",
        ));
    }
    Ok(())
}

/// Refuses PCM that is not one Opus frame duration at `rate`.
fn check_frame_length(rate: SampleRate, len: usize) -> Result<(), CodecError> {
    // Opus accepts 2.5, 5, 10, 20, 40 and 60 ms (and multiples up to 120 ms);
    // anything else would be an argument error deep in the library.
    let per_2_5_ms = rate.hz() as usize / 400;
    let units = len / per_2_5_ms;
    let valid =
        len.is_multiple_of(per_2_5_ms) && matches!(units, 1 | 2 | 4 | 8 | 16 | 24 | 32 | 40 | 48);
    if valid {
        Ok(())
    } else {
        Err(CodecError::FrameLength {
            kind: CodecKind::Opus,
            len,
        })
    }
}

fn rate_i32(rate: SampleRate) -> i32 {
    // Every `SampleRate` is an Opus rate (8, 16 or 48 kHz).
    rate.hz() as i32
}

#[cfg(not(feature = "libopus"))]
fn map_err(e: opus_pure::Error) -> CodecError {
    use opus_pure::Error as E;
    match e {
        E::InvalidPacket(reason) => CodecError::MalformedPayload {
            kind: CodecKind::Opus,
            reason,
        },
        E::BufferTooSmall {
            needed, provided, ..
        } => CodecError::OutputTooSmall {
            needed,
            available: provided,
        },
        E::InvalidArgument(reason) | E::Internal(reason) => CodecError::Internal {
            kind: CodecKind::Opus,
            reason,
        },
        _ => CodecError::Internal {
            kind: CodecKind::Opus,
            reason: "unexpected error",
        },
    }
}

/// Opus encoder for mono speech, on `opus-pure`.
#[cfg(not(feature = "libopus"))]
pub(crate) struct OpusEncoder {
    inner: opus_pure::OpusEncoder,
    rate: SampleRate,
}

#[cfg(not(feature = "libopus"))]
impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

#[cfg(not(feature = "libopus"))]
impl OpusEncoder {
    pub(crate) fn new(rate: SampleRate, config: &CodecConfig) -> Result<Self, CodecError> {
        check_config(config)?;
        let mut inner =
            opus_pure::OpusEncoder::new(rate_i32(rate), 1, opus_pure::Application::Voip)
                .map_err(map_err)?;
        inner.complexity = i32::from(config.opus_complexity);
        inner.bitrate_bps = config.opus_bitrate as i32;
        inner.use_inband_fec = config.fec;
        inner.packet_loss_perc = i32::from(config.expected_loss_percent);
        inner.signal_type = Some(opus_pure::Signal::Voice);
        Ok(OpusEncoder { inner, rate })
    }
}

#[cfg(not(feature = "libopus"))]
impl Encoder for OpusEncoder {
    fn kind(&self) -> CodecKind {
        CodecKind::Opus
    }

    fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_frame_length(self.rate, pcm.len())?;
        self.inner.encode_s16(pcm, pcm.len(), out).map_err(map_err)
    }
}

/// Opus decoder writing mono PCM at the leg's rate, on `opus-pure`.
#[cfg(not(feature = "libopus"))]
pub(crate) struct OpusDecoder {
    inner: opus_pure::OpusDecoder,
    rate: SampleRate,
}

#[cfg(not(feature = "libopus"))]
impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

#[cfg(not(feature = "libopus"))]
impl OpusDecoder {
    pub(crate) fn new(rate: SampleRate) -> Result<Self, CodecError> {
        let inner = opus_pure::OpusDecoder::new(rate_i32(rate), 1).map_err(map_err)?;
        Ok(OpusDecoder { inner, rate })
    }
}

#[cfg(not(feature = "libopus"))]
impl Decoder for OpusDecoder {
    fn kind(&self) -> CodecKind {
        CodecKind::Opus
    }

    fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if payload.is_empty() {
            // An empty payload would mean "lost" to the library; from the network it is
            // a malformed packet (RFC 6716 §3.1: a packet has at least a TOC byte).
            return Err(CodecError::MalformedPayload {
                kind: CodecKind::Opus,
                reason: "empty packet",
            });
        }
        self.inner
            .decode_s16(payload, out.len(), out)
            .map_err(map_err)
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let n = self.rate.frame_samples();
        ensure_room(n, out.len())?;
        self.inner
            .decode_s16(&[], n, &mut out[..n])
            .map_err(map_err)
    }

    fn recover(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let n = self.rate.frame_samples();
        ensure_room(n, out.len())?;
        if next_payload.is_empty() {
            return self.conceal(out);
        }
        self.inner
            .decode_fec_s16(next_payload, n, &mut out[..n])
            .map_err(map_err)
    }
}
