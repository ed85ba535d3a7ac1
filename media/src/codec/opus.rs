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
//! Two backends keep that one contract. By default the pure-Rust `opus-rs` crate (a
//! port of libopus 1.6), which builds anywhere. With the `libopus` cargo feature, the
//! system libopus through the `libopus` submodule.
//!
//! Why `opus-rs` and not `opus-pure`, which DESIGN.md first chose: both are pure Rust
//! and cost about the same per frame (measured side by side in one run at 8 and 16 kHz:
//! at complexity 0 to 5 `opus-rs` encodes 3–6 % cheaper and decodes 4–9 % dearer; at
//! complexity 10 it encodes 18 % dearer), but `opus-pure` 0.2 allocates three times per
//! encoded frame and four times per concealed SILK frame, while `opus-rs` keeps its
//! state in buffers allocated at construction and allocates nothing per frame, which
//! the hot path requires. Its decoder's output is the same as libopus's, sample for
//! sample (`tests/opus_interop.rs`).
//!
//! Settings checks and the frame lengths Opus accepts are shared here so both backends
//! refuse the same inputs.

use super::{CodecConfig, CodecError, CodecKind, SampleRate};

#[cfg(feature = "libopus")]
mod libopus;
pub(crate) mod pure;
#[cfg(feature = "libopus")]
pub(crate) use libopus::{OpusDecoder, OpusEncoder};
#[cfg(not(feature = "libopus"))]
pub(crate) use pure::{OpusDecoder, OpusEncoder};

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
