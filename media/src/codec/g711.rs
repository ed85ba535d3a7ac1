//! G.711 µ-law (PCMU) and A-law (PCMA), ITU-T G.711 (1988).
//!
//! The narrowband leg of a call: one byte per 8 kHz sample, RTP payload types 0 and 8
//! (RFC 3551 §4.5.14). Both directions are single table look-ups; the tables are built
//! at compile time by `const fn` from the companding rules of G.711 §2–3 (the same
//! arithmetic as the ITU-T G.191 reference `g711.c`), so decoding and encoding a
//! frame is 160 loads. Lost frames are concealed by [`WaveformPlc`] (G.711 Appendix I).

use super::plc::WaveformPlc;
use super::{ensure_room, CodecError, CodecKind, Decoder, Encoder, SampleRate};

/// Which G.711 companding law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Law {
    /// µ-law (North America, Japan).
    Mu,
    /// A-law (Europe, most of the rest of the world).
    A,
}

/// µ-law bias added to the 14-bit magnitude before segment search (G.711 §3, the
/// `33` of G.191 `ulaw_compress`).
const MU_BIAS: i32 = 33;

/// µ-law code for a 16-bit sample whose top 14 bits are `x14` (−8192..=8191).
const fn mu_compress(x14: i32) -> u8 {
    // One's-complement magnitude, as G.191 does, so that −1 and 0 code alike.
    let mut mag = if x14 < 0 {
        (!x14) + MU_BIAS
    } else {
        x14 + MU_BIAS
    };
    if mag > 0x1FFF {
        mag = 0x1FFF;
    }
    let mut segment = 1;
    let mut rest = mag >> 6;
    while rest != 0 {
        segment += 1;
        rest >>= 1;
    }
    let high = 8 - segment;
    let low = 0x0F - ((mag >> segment) & 0x0F);
    let code = (high << 4) | low;
    (if x14 >= 0 { code | 0x80 } else { code }) as u8
}

/// 16-bit linear sample for a µ-law code (G.711 table 2a, scaled to 16 bits).
const fn mu_expand(code: u8) -> i16 {
    let inverted = !(code as i32);
    let exponent = (inverted >> 4) & 0x07;
    let mantissa = inverted & 0x0F;
    let step = 4 << (exponent + 1);
    let mag = (0x80 << exponent) + step * mantissa + step / 2 - 4 * MU_BIAS;
    (if code & 0x80 != 0 { mag } else { -mag }) as i16
}

/// A-law code for a 16-bit sample whose top 12 bits are `x12` (−2048..=2047).
const fn a_compress(x12: i32) -> u8 {
    let mut mag = if x12 < 0 { !x12 } else { x12 };
    if mag > 15 {
        let mut exponent = 1;
        while mag > 16 + 15 {
            mag >>= 1;
            exponent += 1;
        }
        mag -= 16;
        mag += exponent << 4;
    }
    if x12 >= 0 {
        mag |= 0x80;
    }
    // G.711 §2: even bits are inverted on the line.
    (mag ^ 0x55) as u8
}

/// 16-bit linear sample for an A-law code (G.711 table 1a, scaled to 16 bits).
const fn a_expand(code: u8) -> i16 {
    let v = (code ^ 0x55) as i32 & 0x7F;
    let exponent = v >> 4;
    let mut mantissa = v & 0x0F;
    if exponent > 0 {
        mantissa += 16;
    }
    mantissa = (mantissa << 4) + 0x08;
    if exponent > 1 {
        mantissa <<= exponent - 1;
    }
    (if code & 0x80 != 0 {
        mantissa
    } else {
        -mantissa
    }) as i16
}

/// µ-law encoding table indexed by `(sample >> 2) + 8192`.
static MU_ENCODE: [u8; 1 << 14] = {
    let mut t = [0u8; 1 << 14];
    let mut i = 0;
    while i < t.len() {
        t[i] = mu_compress(i as i32 - 8192);
        i += 1;
    }
    t
};

/// A-law encoding table indexed by `(sample >> 4) + 2048`.
static A_ENCODE: [u8; 1 << 12] = {
    let mut t = [0u8; 1 << 12];
    let mut i = 0;
    while i < t.len() {
        t[i] = a_compress(i as i32 - 2048);
        i += 1;
    }
    t
};

static MU_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = mu_expand(i as u8);
        i += 1;
    }
    t
};

static A_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = a_expand(i as u8);
        i += 1;
    }
    t
};

impl Law {
    fn kind(self) -> CodecKind {
        match self {
            Law::Mu => CodecKind::Pcmu,
            Law::A => CodecKind::Pcma,
        }
    }

    #[inline]
    fn encode_sample(self, s: i16) -> u8 {
        // The shifts leave 14 (µ) or 12 (A) signed bits, so the offset index is
        // always in range; `get` keeps that a proof rather than a hope.
        match self {
            Law::Mu => MU_ENCODE
                .get(((i32::from(s) >> 2) + 8192) as usize)
                .copied()
                .unwrap_or(0),
            Law::A => A_ENCODE
                .get(((i32::from(s) >> 4) + 2048) as usize)
                .copied()
                .unwrap_or(0),
        }
    }

    #[inline]
    fn decode_sample(self, b: u8) -> i16 {
        match self {
            Law::Mu => MU_DECODE[usize::from(b)],
            Law::A => A_DECODE[usize::from(b)],
        }
    }
}

/// G.711 encoder; stateless apart from its law.
#[derive(Debug)]
pub(crate) struct G711Encoder {
    law: Law,
}

impl G711Encoder {
    pub(crate) fn new(law: Law) -> Self {
        G711Encoder { law }
    }
}

impl Encoder for G711Encoder {
    fn kind(&self) -> CodecKind {
        self.law.kind()
    }

    fn sample_rate(&self) -> SampleRate {
        SampleRate::Hz8000
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        ensure_room(pcm.len(), out.len())?;
        let law = self.law;
        for (o, &s) in out.iter_mut().zip(pcm) {
            *o = law.encode_sample(s);
        }
        Ok(pcm.len())
    }
}

/// G.711 decoder with Appendix I concealment (output delayed by 3.75 ms).
#[derive(Debug)]
pub(crate) struct G711Decoder {
    law: Law,
    plc: WaveformPlc,
}

impl G711Decoder {
    pub(crate) fn new(law: Law) -> Self {
        G711Decoder {
            law,
            plc: WaveformPlc::new(1),
        }
    }
}

impl Decoder for G711Decoder {
    fn kind(&self) -> CodecKind {
        self.law.kind()
    }

    fn sample_rate(&self) -> SampleRate {
        SampleRate::Hz8000
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        ensure_room(payload.len(), out.len())?;
        let law = self.law;
        let out = &mut out[..payload.len()];
        for (o, &b) in out.iter_mut().zip(payload) {
            *o = law.decode_sample(b);
        }
        self.plc.receive(out);
        Ok(payload.len())
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let n = SampleRate::Hz8000.frame_samples();
        ensure_room(n, out.len())?;
        self.plc.conceal(&mut out[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mu_law_code_survives_expand_then_compress() {
        for code in 0..=255u8 {
            let lin = mu_expand(code);
            let back = Law::Mu.encode_sample(lin);
            // 0x7F and 0xFF both mean zero (negative and positive zero).
            if code == 0x7F {
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, code, "code {code:#x} -> {lin}");
            }
        }
    }

    #[test]
    fn every_a_law_code_survives_expand_then_compress() {
        for code in 0..=255u8 {
            let lin = a_expand(code);
            assert_eq!(Law::A.encode_sample(lin), code, "code {code:#x} -> {lin}");
        }
    }

    #[test]
    fn silence_codes_as_the_standard_idle_patterns() {
        // G.711: µ-law zero is 0xFF, A-law zero (positive) is 0xD5.
        assert_eq!(Law::Mu.encode_sample(0), 0xFF);
        assert_eq!(Law::A.encode_sample(0), 0xD5);
    }

    #[test]
    fn full_scale_codes_to_the_end_segments() {
        assert_eq!(Law::Mu.encode_sample(i16::MAX), 0x80);
        assert_eq!(Law::Mu.encode_sample(i16::MIN), 0x00);
        assert_eq!(Law::A.encode_sample(i16::MAX), 0xAA);
        assert_eq!(Law::A.encode_sample(i16::MIN), 0x2A);
        assert_eq!(mu_expand(0x80), 32124);
        assert_eq!(a_expand(0xAA), 32256);
    }

    #[test]
    fn quantisation_error_stays_within_half_a_step() {
        for law in [Law::Mu, Law::A] {
            for s in (i16::MIN..=i16::MAX).step_by(7) {
                let back = law.decode_sample(law.encode_sample(s));
                let err = (i32::from(s) - i32::from(back)).abs();
                // The largest segment step is 1024 (µ) / 1024 (A) at 16-bit scale;
                // the error is at most half a step plus the clipped top.
                let bound = (i32::from(s).abs() / 16).max(8) + 260;
                assert!(err <= bound, "{law:?} {s} -> {back}");
            }
        }
    }
}
