//! Audio codecs behind one pair of traits.
//!
//! In the call flow this sits between the jitter buffer and the mixer:
//! `rtp payload → Decoder::decode → 16-bit PCM → mixer` on the way in and
//! `mixer → 16-bit PCM → Encoder::encode → rtp payload` on the way out, once per
//! 20 ms frame per direction. A lost frame is filled by [`Decoder::conceal`]
//! (packet-loss concealment) so the caller hears a continuation, not a gap.
//!
//! Four codecs are carried, in the order DESIGN.md prefers them in the SDP answer:
//! Opus (RFC 6716, RTP payload format RFC 7587), G.722 (ITU-T G.722, RTP clock per
//! RFC 3551 §4.5.2), PCMU and PCMA (ITU-T G.711). Encoders and decoders are built once
//! at call setup by [`new_encoder`] / [`new_decoder`]; after that, encoding and decoding
//! a frame allocate nothing (the `codec_alloc` test counts it).
//!
//! PCM is always mono, signed 16-bit, at the codec's [`SampleRate`]: 8 kHz for G.711,
//! 16 kHz for G.722, and 8 or 16 kHz for Opus so that a room leg needs no resampler
//! (Opus decodes to any of its rates natively, RFC 6716 §2).

mod g711;
mod g722;
mod opus;
mod plc;

use std::fmt;

/// Packet duration used on every leg (RFC 3551 §4.5: 20 ms is the default `ptime`
/// for the audio payload types carried here).
pub const FRAME_MS: u32 = 20;

/// The codecs the gateway can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// ITU-T G.711 µ-law, RTP payload type 0 (RFC 3551 §6).
    Pcmu,
    /// ITU-T G.711 A-law, RTP payload type 8 (RFC 3551 §6).
    Pcma,
    /// ITU-T G.722 at 64 kbit/s, RTP payload type 9 (RFC 3551 §6).
    G722,
    /// Opus (RFC 6716), dynamic payload type (RFC 7587).
    Opus,
}

impl CodecKind {
    /// The RTP clock rate announced in SDP `a=rtpmap` and used for RTP timestamps.
    ///
    /// G.722 samples at 16 kHz but keeps an 8000 Hz RTP clock for historical reasons
    /// (RFC 3551 §4.5.2); Opus always uses 48000 Hz whatever rate it codes at
    /// (RFC 7587 §4.1).
    pub const fn rtp_clock_rate(self) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma | CodecKind::G722 => 8000,
            CodecKind::Opus => 48_000,
        }
    }

    /// RTP timestamp increment for one [`FRAME_MS`] frame.
    pub const fn rtp_timestamp_step(self) -> u32 {
        self.rtp_clock_rate() / 1000 * FRAME_MS
    }

    /// The static RTP payload type, if the codec has one (RFC 3551 §6, table 4).
    pub const fn static_payload_type(self) -> Option<u8> {
        match self {
            CodecKind::Pcmu => Some(0),
            CodecKind::Pcma => Some(8),
            CodecKind::G722 => Some(9),
            CodecKind::Opus => None,
        }
    }

    /// The encoding name used in SDP `a=rtpmap` (RFC 3551 §6, RFC 7587 §7).
    pub const fn encoding_name(self) -> &'static str {
        match self {
            CodecKind::Pcmu => "PCMU",
            CodecKind::Pcma => "PCMA",
            CodecKind::G722 => "G722",
            CodecKind::Opus => "opus",
        }
    }

    /// The PCM rate the codec works at by default: the rate of its audio band.
    pub const fn default_sample_rate(self) -> SampleRate {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => SampleRate::Hz8000,
            CodecKind::G722 | CodecKind::Opus => SampleRate::Hz16000,
        }
    }

    /// Whether PCM at `rate` can be fed to and read from this codec without resampling.
    pub const fn supports(self, rate: SampleRate) -> bool {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => matches!(rate, SampleRate::Hz8000),
            CodecKind::G722 => matches!(rate, SampleRate::Hz16000),
            CodecKind::Opus => true,
        }
    }
}

impl fmt::Display for CodecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encoding_name())
    }
}

/// The rate of the 16-bit mono PCM going into an encoder and out of a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleRate {
    /// Narrowband telephony (G.711, Opus NB).
    Hz8000,
    /// Wideband telephony (G.722, Opus WB).
    Hz16000,
    /// Fullband (Opus only; what WebRTC peers decode to).
    Hz48000,
}

impl SampleRate {
    /// Samples per second.
    pub const fn hz(self) -> u32 {
        match self {
            SampleRate::Hz8000 => 8000,
            SampleRate::Hz16000 => 16_000,
            SampleRate::Hz48000 => 48_000,
        }
    }

    /// PCM samples in one [`FRAME_MS`] frame at this rate.
    pub const fn frame_samples(self) -> usize {
        (self.hz() / 1000 * FRAME_MS) as usize
    }
}

/// Settings fixed at call setup. Only Opus reads them today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecConfig {
    /// Opus encoder complexity, 0 (cheapest) to 10. The default was chosen by
    /// measurement: see [`DEFAULT_OPUS_COMPLEXITY`].
    pub opus_complexity: u8,
    /// Opus target bitrate in bit/s (RFC 7587 §3.1.1 recommends 8–12 kbit/s for NB
    /// speech and 16–20 kbit/s for WB speech; we default a little above for margin).
    pub opus_bitrate: u32,
    /// Put in-band FEC (LBRR) in Opus packets so the receiver can rebuild a lost one
    /// from the next (RFC 6716 §2.1.7).
    pub fec: bool,
    /// Expected packet loss in percent; tunes how much the Opus encoder spends on FEC.
    pub expected_loss_percent: u8,
}

/// Default Opus complexity, chosen by measurement (`codec` benchmark, thread CPU time,
/// and the `codec_quality` complexity sweep, speech-like input at 24 kbit/s): from 0
/// to 10 the encode cost per 20 ms frame grows about 3.7x (8 kHz: 65 -> 238 µs;
/// 16 kHz: 86 -> 459 µs) while the segmental SNR moves by 0.2 dB at 8 kHz
/// (13.6 -> 13.8) and 1 dB at 16 kHz (11.6 -> 12.6). Segmental SNR cannot credit
/// SILK's perceptual noise shaping, so this is a cost-led choice. Only complexity 0 keeps the
/// narrowband caller-to-room path near the 100 µs per frame budget, so it is the
/// default; raise it per deployment where CPU is plentiful.
pub const DEFAULT_OPUS_COMPLEXITY: u8 = 0;

impl Default for CodecConfig {
    fn default() -> Self {
        CodecConfig {
            opus_complexity: DEFAULT_OPUS_COMPLEXITY,
            opus_bitrate: 24_000,
            fec: true,
            expected_loss_percent: 5,
        }
    }
}

/// What went wrong encoding or decoding a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The codec cannot work with PCM at this rate without resampling.
    #[error("{kind} does not support {rate:?} PCM")]
    UnsupportedRate {
        /// The codec asked for.
        kind: CodecKind,
        /// The rate asked for.
        rate: SampleRate,
    },
    /// A configuration value is outside what the codec accepts.
    #[error("invalid codec configuration: {0}")]
    InvalidConfig(&'static str),
    /// The PCM handed to an encoder is not a length the codec can code.
    #[error("{kind} cannot encode {len} samples in one packet")]
    FrameLength {
        /// The codec.
        kind: CodecKind,
        /// The number of samples handed in.
        len: usize,
    },
    /// The output buffer cannot hold the result.
    #[error("output buffer too small: need {needed}, have {available}")]
    OutputTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements available.
        available: usize,
    },
    /// A received payload is malformed (the peer sent garbage).
    #[error("malformed {kind} payload: {reason}")]
    MalformedPayload {
        /// The codec.
        kind: CodecKind,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The codec library failed for a reason other than its input.
    #[error("{kind} codec failure: {reason}")]
    Internal {
        /// The codec.
        kind: CodecKind,
        /// What the library reported.
        reason: &'static str,
    },
}

/// Turns 16-bit PCM frames into RTP payloads.
pub trait Encoder: Send {
    /// The codec this encoder produces.
    fn kind(&self) -> CodecKind;
    /// The PCM rate [`encode`](Encoder::encode) expects.
    fn sample_rate(&self) -> SampleRate;
    /// Encodes one packet's worth of PCM (normally one [`FRAME_MS`] frame) into `out`
    /// and returns the payload length in bytes.
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError>;
}

/// Turns RTP payloads back into 16-bit PCM, and fills in for lost ones.
pub trait Decoder: Send {
    /// The codec this decoder reads.
    fn kind(&self) -> CodecKind;
    /// The PCM rate the decoder writes.
    fn sample_rate(&self) -> SampleRate;
    /// Decodes one payload into `out` and returns how many samples were written.
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError>;
    /// Writes one [`FRAME_MS`] frame of concealment for a packet that never came, and
    /// returns how many samples were written. Successive calls fade out towards
    /// silence; the next [`decode`](Decoder::decode) blends back into real audio.
    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError>;
    /// Rebuilds the lost frame that precedes `next_payload` from the forward error
    /// correction it carries, when the codec has any (Opus in-band FEC), and
    /// conceals otherwise. `next_payload` must still be decoded normally afterwards.
    fn recover(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let _ = next_payload;
        self.conceal(out)
    }
}

/// Builds an encoder for `kind` taking PCM at `rate`. Allocates; call at setup.
pub fn new_encoder(
    kind: CodecKind,
    rate: SampleRate,
    config: &CodecConfig,
) -> Result<Box<dyn Encoder>, CodecError> {
    if !kind.supports(rate) {
        return Err(CodecError::UnsupportedRate { kind, rate });
    }
    Ok(match kind {
        CodecKind::Pcmu => Box::new(g711::G711Encoder::new(g711::Law::Mu)),
        CodecKind::Pcma => Box::new(g711::G711Encoder::new(g711::Law::A)),
        CodecKind::G722 => Box::new(g722::G722Encoder::new()),
        CodecKind::Opus => Box::new(opus::OpusEncoder::new(rate, config)?),
    })
}

/// Builds a decoder for `kind` writing PCM at `rate`. Allocates; call at setup.
pub fn new_decoder(
    kind: CodecKind,
    rate: SampleRate,
    config: &CodecConfig,
) -> Result<Box<dyn Decoder>, CodecError> {
    if !kind.supports(rate) {
        return Err(CodecError::UnsupportedRate { kind, rate });
    }
    let _ = config;
    Ok(match kind {
        CodecKind::Pcmu => Box::new(g711::G711Decoder::new(g711::Law::Mu)),
        CodecKind::Pcma => Box::new(g711::G711Decoder::new(g711::Law::A)),
        CodecKind::G722 => Box::new(g722::G722Decoder::new()),
        CodecKind::Opus => Box::new(opus::OpusDecoder::new(rate)?),
    })
}

/// The pure-Rust Opus encoder (the default build's), in a build whose Opus is libopus:
/// for benchmarks and tests that compare the two engines. Allocates; call at setup.
#[cfg(feature = "libopus")]
pub fn new_pure_rust_opus_encoder(
    rate: SampleRate,
    config: &CodecConfig,
) -> Result<Box<dyn Encoder>, CodecError> {
    Ok(Box::new(opus::pure::OpusEncoder::new(rate, config)?))
}

/// The pure-Rust Opus decoder (the default build's), in a build whose Opus is libopus.
#[cfg(feature = "libopus")]
pub fn new_pure_rust_opus_decoder(rate: SampleRate) -> Result<Box<dyn Decoder>, CodecError> {
    Ok(Box::new(opus::pure::OpusDecoder::new(rate)?))
}

/// Checks that `out` has room for `needed` elements.
fn ensure_room(needed: usize, available: usize) -> Result<(), CodecError> {
    if available < needed {
        Err(CodecError::OutputTooSmall { needed, available })
    } else {
        Ok(())
    }
}
