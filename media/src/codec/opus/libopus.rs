//! Opus through the system libopus (cargo feature `libopus`), for the fastest encoder.
//!
//! Same place in the call flow and same contract as the parent module: mono 20 ms
//! packets (RFC 7587), PCM at the SIP leg's rate, concealment (RFC 6716 §4.4) and
//! in-band FEC recovery (§2.1.7). Only the engine differs: libopus's C encoder, about
//! a fifth cheaper than the pure-Rust one at 8 kHz (README, Performance).
//!
//! The binding is written by hand rather than taken from a crate: the gateway calls
//! nine functions of opus.h, an API stable since libopus 1.0, while the binding
//! crates (`opus`, `audiopus`, their `-sys` crates) bring build scripts that fall
//! back to compiling a bundled libopus with cmake. Declaring the few functions here and
//! linking the distribution's library (Debian `libopus-dev`) keeps the tree lean.
//!
//! State is allocated once, by Rust, at setup: `opus_*_get_size` says how large it is
//! and `opus_*_init` fills a buffer we own, so libopus never calls `malloc` for it and
//! nothing needs freeing on the C side. Encoding and decoding then allocate nothing:
//! libopus keeps its per-frame scratch on the stack, and in its shared library only the
//! `*_create` functions, never called here, reach `malloc`.

use super::{check_config, check_frame_length, rate_i32};
use crate::codec::{ensure_room, CodecConfig, CodecError, CodecKind, Decoder, Encoder, SampleRate};
use std::ffi::{c_int, c_uchar};

/// The part of opus.h (libopus 1.3) the gateway uses, with its constants from
/// opus_defines.h.
mod ffi {
    use std::ffi::{c_char, c_int, c_uchar};

    /// libopus's encoder state; only ever handled through a pointer.
    #[repr(C)]
    pub(super) struct OpusEncoder {
        _opaque: [u8; 0],
    }

    /// libopus's decoder state; only ever handled through a pointer.
    #[repr(C)]
    pub(super) struct OpusDecoder {
        _opaque: [u8; 0],
    }

    pub(super) const OPUS_OK: c_int = 0;
    pub(super) const OPUS_BAD_ARG: c_int = -1;
    pub(super) const OPUS_BUFFER_TOO_SMALL: c_int = -2;
    pub(super) const OPUS_INTERNAL_ERROR: c_int = -3;
    pub(super) const OPUS_INVALID_PACKET: c_int = -4;
    pub(super) const OPUS_UNIMPLEMENTED: c_int = -5;
    pub(super) const OPUS_INVALID_STATE: c_int = -6;
    pub(super) const OPUS_ALLOC_FAIL: c_int = -7;

    /// Tuned for speech intelligibility, the mode for telephony.
    pub(super) const OPUS_APPLICATION_VOIP: c_int = 2048;
    pub(super) const OPUS_SET_BITRATE_REQUEST: c_int = 4002;
    pub(super) const OPUS_SET_COMPLEXITY_REQUEST: c_int = 4010;
    pub(super) const OPUS_SET_INBAND_FEC_REQUEST: c_int = 4012;
    pub(super) const OPUS_SET_PACKET_LOSS_PERC_REQUEST: c_int = 4014;
    pub(super) const OPUS_SET_SIGNAL_REQUEST: c_int = 4024;
    pub(super) const OPUS_SIGNAL_VOICE: c_int = 3001;

    #[link(name = "opus")]
    extern "C" {
        pub(super) fn opus_encoder_get_size(channels: c_int) -> c_int;
        pub(super) fn opus_encoder_init(
            st: *mut OpusEncoder,
            fs: i32,
            channels: c_int,
            application: c_int,
        ) -> c_int;
        pub(super) fn opus_encode(
            st: *mut OpusEncoder,
            pcm: *const i16,
            frame_size: c_int,
            data: *mut c_uchar,
            max_data_bytes: i32,
        ) -> i32;
        /// Variadic in C; every request used here takes one `opus_int32`.
        pub(super) fn opus_encoder_ctl(st: *mut OpusEncoder, request: c_int, ...) -> c_int;
        pub(super) fn opus_decoder_get_size(channels: c_int) -> c_int;
        pub(super) fn opus_decoder_init(st: *mut OpusDecoder, fs: i32, channels: c_int) -> c_int;
        pub(super) fn opus_decode(
            st: *mut OpusDecoder,
            data: *const c_uchar,
            len: i32,
            pcm: *mut i16,
            frame_size: c_int,
            decode_fec: c_int,
        ) -> c_int;
        pub(super) fn opus_packet_get_nb_samples(
            packet: *const c_uchar,
            len: i32,
            fs: i32,
        ) -> c_int;
        pub(super) fn opus_get_version_string() -> *const c_char;
    }
}

/// Mono: RFC 7587 §7 lets the SDP ask for stereo, but a phone leg has one channel.
const CHANNELS: c_int = 1;

/// The largest frame Opus can code (RFC 6716 §3.2.1: 1275 bytes), so an output buffer
/// this large always holds a 20 ms packet.
const MAX_FRAME_BYTES: usize = 1275;

/// The libopus version linked at run time, e.g. "libopus 1.3.1", for the logs.
fn version() -> &'static str {
    // SAFETY: libopus returns a pointer to a static, NUL-terminated string.
    let raw = unsafe { std::ffi::CStr::from_ptr(ffi::opus_get_version_string()) };
    raw.to_str().unwrap_or("libopus (unreadable version)")
}

/// What a negative libopus return code means (opus_defines.h, "Error codes").
fn error_from_code(code: c_int) -> CodecError {
    let internal = |reason| CodecError::Internal {
        kind: CodecKind::Opus,
        reason,
    };
    match code {
        ffi::OPUS_INVALID_PACKET => CodecError::MalformedPayload {
            kind: CodecKind::Opus,
            reason: "libopus found the packet corrupted or unsupported",
        },
        ffi::OPUS_BAD_ARG => internal("libopus refused an argument"),
        ffi::OPUS_BUFFER_TOO_SMALL => internal("libopus found a buffer too small"),
        ffi::OPUS_INTERNAL_ERROR => internal("libopus internal error"),
        ffi::OPUS_UNIMPLEMENTED => internal("libopus does not implement the request"),
        ffi::OPUS_INVALID_STATE => internal("libopus state is invalid or freed"),
        ffi::OPUS_ALLOC_FAIL => internal("libopus could not allocate"),
        _ => internal("libopus returned an unknown error code"),
    }
}

/// Turns a libopus "count or negative error" return into a count.
fn count_or_error(ret: c_int) -> Result<usize, CodecError> {
    usize::try_from(ret).map_err(|_| error_from_code(ret))
}

/// A block of state memory aligned like `malloc`'s, which libopus's states expect
/// (they hold floats and pointers, 16 bytes covers both on every target).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Block([u8; 16]);

/// Zeroed, aligned memory of at least `size` bytes for a libopus state.
fn state_memory(size: c_int) -> Result<Box<[Block]>, CodecError> {
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .ok_or(CodecError::Internal {
            kind: CodecKind::Opus,
            reason: "libopus reported no state size",
        })?;
    let blocks = size.div_ceil(std::mem::size_of::<Block>());
    Ok(vec![Block([0; 16]); blocks].into_boxed_slice())
}

/// Opus encoder for mono speech, on libopus.
pub(crate) struct OpusEncoder {
    /// libopus's `OpusEncoder`, in memory we own; it never moves (boxed) and is only
    /// touched through `&mut self`, so it is `Send` without being shared.
    state: Box<[Block]>,
    rate: SampleRate,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("backend", &"libopus")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    pub(crate) fn new(rate: SampleRate, config: &CodecConfig) -> Result<Self, CodecError> {
        check_config(config)?;
        // SAFETY: a pure size query.
        let size = unsafe { ffi::opus_encoder_get_size(CHANNELS) };
        let mut encoder = OpusEncoder {
            state: state_memory(size)?,
            rate,
        };
        // SAFETY: `state` holds `size` writable, aligned bytes, as opus_encoder_init
        // requires; the rate is one Opus supports and the channel count is 1.
        let rc = unsafe {
            let application = ffi::OPUS_APPLICATION_VOIP;
            ffi::opus_encoder_init(encoder.raw(), rate_i32(rate), CHANNELS, application)
        };
        if rc != ffi::OPUS_OK {
            return Err(error_from_code(rc));
        }
        // `check_config` bounds the bitrate far below i32::MAX.
        let bitrate = i32::try_from(config.opus_bitrate)
            .map_err(|_| CodecError::InvalidConfig("opus_bitrate must be 500 to 512000 bit/s"))?;
        encoder.set(
            ffi::OPUS_SET_COMPLEXITY_REQUEST,
            i32::from(config.opus_complexity),
        )?;
        encoder.set(ffi::OPUS_SET_BITRATE_REQUEST, bitrate)?;
        encoder.set(ffi::OPUS_SET_INBAND_FEC_REQUEST, i32::from(config.fec))?;
        let loss = i32::from(config.expected_loss_percent);
        encoder.set(ffi::OPUS_SET_PACKET_LOSS_PERC_REQUEST, loss)?;
        encoder.set(ffi::OPUS_SET_SIGNAL_REQUEST, ffi::OPUS_SIGNAL_VOICE)?;
        tracing::debug!(
            engine = version(),
            rate = rate.hz(),
            "Opus encoder on the system libopus"
        );
        Ok(encoder)
    }

    fn raw(&mut self) -> *mut ffi::OpusEncoder {
        self.state.as_mut_ptr().cast()
    }

    /// One `OPUS_SET_*` request taking an `opus_int32`.
    fn set(&mut self, request: c_int, value: i32) -> Result<(), CodecError> {
        // SAFETY: the state was initialised by opus_encoder_init; every request passed
        // here is a setter whose single variadic argument is an opus_int32.
        let rc = unsafe { ffi::opus_encoder_ctl(self.raw(), request, value) };
        if rc == ffi::OPUS_OK {
            Ok(())
        } else {
            Err(error_from_code(rc))
        }
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
        if out.is_empty() {
            return Err(CodecError::OutputTooSmall {
                needed: MAX_FRAME_BYTES,
                available: 0,
            });
        }
        // At most 120 ms at 48 kHz after the check above.
        let frame_size = c_int::try_from(pcm.len()).map_err(|_| CodecError::FrameLength {
            kind: CodecKind::Opus,
            len: pcm.len(),
        })?;
        // libopus reads no more than it needs; a larger buffer only lifts a cap.
        let max_bytes = i32::try_from(out.len()).unwrap_or(i32::MAX);
        // SAFETY: the state is initialised; `pcm` holds `frame_size` mono samples and
        // `out` has `max_bytes` writable bytes; libopus keeps neither pointer.
        let ret = unsafe {
            ffi::opus_encode(
                self.raw(),
                pcm.as_ptr(),
                frame_size,
                out.as_mut_ptr(),
                max_bytes,
            )
        };
        if ret == ffi::OPUS_BUFFER_TOO_SMALL {
            let available = out.len();
            return Err(CodecError::OutputTooSmall {
                needed: MAX_FRAME_BYTES,
                available,
            });
        }
        count_or_error(ret)
    }
}

/// Opus decoder writing mono PCM at the leg's rate, on libopus.
pub(crate) struct OpusDecoder {
    /// libopus's `OpusDecoder`, in memory we own (as for the encoder's).
    state: Box<[Block]>,
    rate: SampleRate,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("backend", &"libopus")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// Decode a real packet (`decode_fec = 0`) or the FEC it carries for the frame before.
#[derive(Clone, Copy)]
enum Payload {
    Frame,
    ForwardErrorCorrection,
}

impl OpusDecoder {
    pub(crate) fn new(rate: SampleRate) -> Result<Self, CodecError> {
        // SAFETY: a pure size query.
        let size = unsafe { ffi::opus_decoder_get_size(CHANNELS) };
        let mut decoder = OpusDecoder {
            state: state_memory(size)?,
            rate,
        };
        // SAFETY: `state` holds `size` writable, aligned bytes; supported rate, mono.
        let rc = unsafe { ffi::opus_decoder_init(decoder.raw(), rate_i32(rate), CHANNELS) };
        if rc != ffi::OPUS_OK {
            return Err(error_from_code(rc));
        }
        Ok(decoder)
    }

    fn raw(&mut self) -> *mut ffi::OpusDecoder {
        self.state.as_mut_ptr().cast()
    }

    /// Runs opus_decode over a packet from the network, with every length checked
    /// first so libopus only ever sees buffers as large as it is told.
    fn decode_packet(
        &mut self,
        payload: &[u8],
        out: &mut [i16],
        what: Payload,
    ) -> Result<usize, CodecError> {
        let malformed = |reason| CodecError::MalformedPayload {
            kind: CodecKind::Opus,
            reason,
        };
        if payload.is_empty() {
            // An empty payload would mean "lost" to the library; from the network it is
            // a malformed packet (RFC 6716 §3.1: a packet has at least a TOC byte).
            return Err(malformed("empty packet"));
        }
        let len = i32::try_from(payload.len()).map_err(|_| malformed("packet too long"))?;
        let frame_size = match what {
            Payload::Frame => {
                // SAFETY: `payload` holds `len` readable bytes; this only parses the
                // TOC and frame count (RFC 6716 §3.1) and keeps no pointer.
                let samples = unsafe {
                    ffi::opus_packet_get_nb_samples(payload.as_ptr(), len, rate_i32(self.rate))
                };
                let samples = count_or_error(samples)?;
                if samples == 0 {
                    // A code 3 packet may declare zero frames (RFC 6716 §3.2.5, R5).
                    return Err(malformed("packet holds no frames"));
                }
                ensure_room(samples, out.len())?;
                samples
            }
            Payload::ForwardErrorCorrection => {
                // FEC rebuilds exactly the one lost 20 ms frame.
                let n = self.rate.frame_samples();
                ensure_room(n, out.len())?;
                n
            }
        };
        let frame_c = c_int::try_from(frame_size).map_err(|_| malformed("packet too long"))?;
        let fec = c_int::from(matches!(what, Payload::ForwardErrorCorrection));
        // SAFETY: the state is initialised; `payload` has `len` readable bytes and
        // `out` at least `frame_size` writable samples (checked above); libopus keeps
        // neither pointer.
        let ret = unsafe {
            ffi::opus_decode(
                self.raw(),
                payload.as_ptr(),
                len,
                out.as_mut_ptr(),
                frame_c,
                fec,
            )
        };
        count_or_error(ret)
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
        self.decode_packet(payload, out, Payload::Frame)
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let n = self.rate.frame_samples();
        ensure_room(n, out.len())?;
        let frame_c = c_int::try_from(n).map_err(|_| CodecError::Internal {
            kind: CodecKind::Opus,
            reason: "frame length out of range",
        })?;
        // SAFETY: the state is initialised; a null packet of length 0 asks libopus for
        // concealment of `n` samples, and `out` has at least `n` writable samples.
        let ret = unsafe {
            let lost = std::ptr::null::<c_uchar>();
            ffi::opus_decode(self.raw(), lost, 0, out.as_mut_ptr(), frame_c, 0)
        };
        count_or_error(ret)
    }

    fn recover(&mut self, next_payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        if next_payload.is_empty() {
            return self.conceal(out);
        }
        self.decode_packet(next_payload, out, Payload::ForwardErrorCorrection)
    }
}
