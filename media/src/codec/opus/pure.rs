//! The pure-Rust Opus backend, on `opus-rs`: the default build's engine, and with the
//! `libopus` feature still built so that benchmarks and tests can set the two side by
//! side.

use super::super::{ensure_room, Decoder, Encoder};
use super::{check_config, check_frame_length, rate_i32};
use crate::codec::{CodecConfig, CodecError, CodecKind, SampleRate};

/// What an `opus-rs` error means to us. The crate reports plain messages; on the
/// decode side every one of them is about the packet (its framing or its TOC), the
/// frame sizes it could refuse for our own reasons being checked before the call.
fn malformed(reason: &'static str) -> CodecError {
    CodecError::MalformedPayload {
        kind: CodecKind::Opus,
        reason,
    }
}

fn internal(reason: &'static str) -> CodecError {
    CodecError::Internal {
        kind: CodecKind::Opus,
        reason,
    }
}

/// Longest packet Opus carries: 120 ms (RFC 6716 §3.2.5).
const MAX_PACKET_MS: usize = 120;

/// Opus encoder for mono speech, on `opus-rs`.
pub(crate) struct OpusEncoder {
    inner: opus_rs::OpusEncoder,
    rate: SampleRate,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    pub(crate) fn new(rate: SampleRate, config: &CodecConfig) -> Result<Self, CodecError> {
        check_config(config)?;
        let mut inner = opus_rs::OpusEncoder::new(rate_i32(rate), 1, opus_rs::Application::Voip)
            .map_err(internal)?;
        inner.complexity = i32::from(config.opus_complexity);
        inner.bitrate_bps = config.opus_bitrate as i32;
        inner.use_inband_fec = config.fec;
        inner.packet_loss_perc = i32::from(config.expected_loss_percent);
        Ok(OpusEncoder { inner, rate })
    }
}

impl Encoder for OpusEncoder {
    fn kind(&self) -> CodecKind {
        CodecKind::Opus
    }

    fn sample_rate(&self) -> SampleRate {
        self.rate
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        check_frame_length(self.rate, pcm.len())?;
        // The encoder needs room for a TOC byte and a frame; it reports a short buffer
        // only as text, so say how short here.
        ensure_room(2, out.len())?;
        self.inner.encode_i16(pcm, pcm.len(), out).map_err(internal)
    }
}

/// Opus decoder writing mono PCM at the leg's rate, on `opus-rs`.
///
/// The crate decodes to `f32`; `scratch` (one longest packet at the leg's rate,
/// allocated once) takes that and is converted to 16-bit PCM as libopus's
/// `opus_decode` does (scale by 32768, round, saturate).
pub(crate) struct OpusDecoder {
    inner: opus_rs::OpusDecoder,
    rate: SampleRate,
    scratch: Box<[f32]>,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    pub(crate) fn new(rate: SampleRate) -> Result<Self, CodecError> {
        let inner = opus_rs::OpusDecoder::new(rate_i32(rate), 1).map_err(internal)?;
        let longest = rate.hz() as usize * MAX_PACKET_MS / 1000;
        Ok(OpusDecoder {
            inner,
            rate,
            scratch: vec![0.0; longest].into_boxed_slice(),
        })
    }

    /// Converts `n` decoded samples from `scratch` into `out`.
    fn to_pcm(&self, n: usize, out: &mut [i16]) -> Result<usize, CodecError> {
        ensure_room(n, out.len())?;
        for (o, &x) in out[..n].iter_mut().zip(&self.scratch[..n]) {
            // `as` saturates a float to the integer range (and maps NaN to 0).
            *o = (x * 32768.0).round() as i16;
        }
        Ok(n)
    }

    /// How many samples a call may ask for: what `out` holds, up to `scratch`.
    fn capacity(&self, out: &[i16]) -> usize {
        out.len().min(self.scratch.len())
    }
}

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
            return Err(malformed("empty packet"));
        }
        let room = self.capacity(out);
        let n = self
            .inner
            .decode(payload, room, &mut self.scratch[..room])
            .map_err(malformed)?;
        self.to_pcm(n, out)
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let n = self.rate.frame_samples();
        ensure_room(n, out.len())?;
        let n = self
            .inner
            .decode(&[], n, &mut self.scratch[..n])
            .map_err(internal)?;
        self.to_pcm(n, out)
    }

    fn recover(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let n = self.rate.frame_samples();
        ensure_room(n, out.len())?;
        if next_payload.is_empty() {
            return self.conceal(out);
        }
        let n = self
            .inner
            .decode_fec(next_payload, n, &mut self.scratch[..n])
            .map_err(malformed)?;
        self.to_pcm(n, out)
    }
}
