//! G.722 wideband codec at 64 kbit/s (ITU-T G.722 (2012), mode 1).
//!
//! The wideband SIP leg: 16 kHz audio, one byte per pair of samples, RTP payload type 9
//! with an 8000 Hz RTP clock (RFC 3551 §4.5.2). Sub-band ADPCM: a 24-tap QMF splits
//! the signal into a 0–4 kHz band coded with 6 bits per sample and a 4–8 kHz band coded
//! with 2 bits, each with the backward-adaptive pole/zero predictor of G.722 §3. The
//! block names in comments (QUANTL, LOGSCL, ...) are those of the Recommendation's
//! figures, and the fixed-point arithmetic follows them exactly, so the bitstream is
//! the standard one.
//!
//! Written here rather than taken from `ezk-g722` because that crate returns a new
//! `Vec` for every frame and pulls an async media framework (tokio, RTP types) into
//! the dependency tree; the `codec_quality` test checks this implementation against it
//! bit for bit.

use super::plc::WaveformPlc;
use super::{ensure_room, CodecError, CodecKind, Decoder, Encoder, SampleRate};

/// QMF coefficients (G.722 table 11), symmetric half.
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];
/// Lower-band quantiser decision levels (table 6, 6-bit, positive half).
const Q6: [i32; 32] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0,
];
/// Lower-band codes for negative / positive differences by interval.
const ILN: [i32; 32] = [
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11,
    10, 9, 8, 7, 6, 5, 4, 0,
];
const ILP: [i32; 32] = [
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39,
    38, 37, 36, 35, 34, 33, 32, 0,
];
/// Lower-band log scale factor multipliers (table 14).
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
/// 4-bit code to WL index.
const RL42: [i32; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// Inverse log table (table 15).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// 4-bit inverse quantiser (feeds the predictor, table 7).
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
/// 6-bit inverse quantiser (reconstruction at 64 kbit/s, table 7).
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// Higher-band codes, inverse quantiser and scale factor multipliers (tables 8, 9, 16).
const IHN: [i32; 3] = [0, 1, 0];
const IHP: [i32; 3] = [0, 3, 2];
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
const WH: [i32; 3] = [0, -214, 798];
const RH2: [i32; 4] = [2, 1, 2, 1];

#[inline]
fn sat16(x: i32) -> i32 {
    x.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
}

/// Adaptive predictor state of one sub-band (G.722 §3.6, blocks 4L/4H).
#[derive(Debug, Clone, Default)]
struct Band {
    /// Predicted signal (PREDIC).
    s: i32,
    sp: i32,
    sz: i32,
    r: [i32; 3],
    a: [i32; 3],
    ap: [i32; 3],
    p: [i32; 3],
    d: [i32; 7],
    b: [i32; 7],
    bp: [i32; 7],
    /// Log scale factor (LOGSCL) and linear scale factor (SCALEL).
    nb: i32,
    det: i32,
}

impl Band {
    fn new(det: i32) -> Self {
        Band {
            det,
            ..Band::default()
        }
    }

    /// LOGSCL + SCALEL: adapt the quantiser scale from the transmitted code.
    fn adapt_scale(&mut self, multiplier: i32, max_nb: i32, shift_base: i32) {
        // 32512/32768 leakage = 127/128.
        self.nb = ((self.nb * 127) >> 7) + multiplier;
        self.nb = self.nb.clamp(0, max_nb);
        let frac = ((self.nb >> 6) & 31) as usize;
        let shift = shift_base - (self.nb >> 11);
        let lin = ILB[frac];
        let wd = if shift < 0 {
            lin << -shift
        } else {
            lin >> shift
        };
        self.det = wd << 2;
    }

    /// Block 4: reconstruct, update the pole and zero predictors, predict the next
    /// sample. `d` is the quantised difference signal.
    fn update(&mut self, d: i32) {
        // RECONS and PARREC.
        self.d[0] = d;
        self.r[0] = sat16(self.s + d);
        self.p[0] = sat16(self.sz + d);

        // UPPOL2: second pole coefficient.
        let sg0 = self.p[0] >> 15;
        let sg1 = self.p[1] >> 15;
        let sg2 = self.p[2] >> 15;
        let wd1 = sat16(self.a[1] << 2);
        let wd2 = if sg0 == sg1 { -wd1 } else { wd1 }.min(32767);
        let mut wd3 = if sg0 == sg2 { 128 } else { -128 };
        wd3 += wd2 >> 7;
        wd3 += (self.a[2] * 32512) >> 15;
        self.ap[2] = wd3.clamp(-12288, 12288);

        // UPPOL1: first pole coefficient, limited for stability.
        let wd1 = if sg0 == sg1 { 192 } else { -192 };
        let wd2 = (self.a[1] * 32640) >> 15;
        let limit = sat16(15360 - self.ap[2]);
        self.ap[1] = sat16(wd1 + wd2).clamp(-limit, limit);

        // UPZERO: six zero coefficients.
        let step = if d == 0 { 0 } else { 128 };
        let sgd = d >> 15;
        for i in 1..7 {
            let wd2 = if (self.d[i] >> 15) == sgd {
                step
            } else {
                -step
            };
            let wd3 = (self.b[i] * 32640) >> 15;
            self.bp[i] = sat16(wd2 + wd3);
        }

        // DELAYA: shift the histories.
        for i in (1..7).rev() {
            self.d[i] = self.d[i - 1];
            self.b[i] = self.bp[i];
        }
        for i in (1..3).rev() {
            self.r[i] = self.r[i - 1];
            self.p[i] = self.p[i - 1];
            self.a[i] = self.ap[i];
        }

        // FILTEP: pole section.
        let wd1 = (self.a[1] * sat16(self.r[1] + self.r[1])) >> 15;
        let wd2 = (self.a[2] * sat16(self.r[2] + self.r[2])) >> 15;
        self.sp = sat16(wd1 + wd2);

        // FILTEZ: zero section.
        let mut sz = 0;
        for i in (1..7).rev() {
            sz += (self.b[i] * sat16(self.d[i] + self.d[i])) >> 15;
        }
        self.sz = sat16(sz);

        // PREDIC.
        self.s = sat16(self.sp + self.sz);
    }
}

/// Initial scale factors (G.722 §6.2: DETL = 32, DETH = 8).
const DETL_INIT: i32 = 32;
const DETH_INIT: i32 = 8;

/// G.722 encoder state.
#[derive(Debug)]
pub(crate) struct G722Encoder {
    qmf: [i32; 24],
    low: Band,
    high: Band,
}

impl G722Encoder {
    pub(crate) fn new() -> Self {
        Self::with_initial_scale(DETL_INIT, DETH_INIT)
    }

    fn with_initial_scale(detl: i32, deth: i32) -> Self {
        G722Encoder {
            qmf: [0; 24],
            low: Band::new(detl),
            high: Band::new(deth),
        }
    }

    fn encode_pair(&mut self, x0: i16, x1: i16) -> u8 {
        // Transmit QMF: shift in two samples, keep one output per band.
        self.qmf.copy_within(2.., 0);
        self.qmf[22] = i32::from(x0);
        self.qmf[23] = i32::from(x1);
        let mut odd = 0;
        let mut even = 0;
        for i in 0..12 {
            odd += self.qmf[2 * i] * QMF[i];
            even += self.qmf[2 * i + 1] * QMF[11 - i];
        }
        let xlow = (even + odd) >> 14;
        let xhigh = (even - odd) >> 14;

        // Lower band. SUBTRA, QUANTL.
        let el = sat16(xlow - self.low.s);
        let mag = if el >= 0 { el } else { -(el + 1) };
        let mut m = 1;
        while m < 30 && mag >= (Q6[m] * self.low.det) >> 12 {
            m += 1;
        }
        let ilow = if el < 0 { ILN[m] } else { ILP[m] };
        // INVQAL: 4-bit inverse quantiser feeds the predictor.
        let ril = (ilow >> 2) as usize;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril] as usize], 18432, 8);
        self.low.update(dlow);

        // Higher band. SUBTRA, QUANTH.
        let eh = sat16(xhigh - self.high.s);
        let mag = if eh >= 0 { eh } else { -(eh + 1) };
        let mih = if mag >= (564 * self.high.det) >> 12 {
            2
        } else {
            1
        };
        let ihigh = if eh < 0 { IHN[mih] } else { IHP[mih] };
        // INVQAH.
        let dhigh = (self.high.det * QM2[ihigh as usize]) >> 15;
        self.high
            .adapt_scale(WH[RH2[ihigh as usize] as usize], 22528, 10);
        self.high.update(dhigh);

        ((ihigh << 6) | ilow) as u8
    }
}

impl Encoder for G722Encoder {
    fn kind(&self) -> CodecKind {
        CodecKind::G722
    }

    fn sample_rate(&self) -> SampleRate {
        SampleRate::Hz16000
    }

    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        if !pcm.len().is_multiple_of(2) {
            return Err(CodecError::FrameLength {
                kind: CodecKind::G722,
                len: pcm.len(),
            });
        }
        let n = pcm.len() / 2;
        ensure_room(n, out.len())?;
        for (o, pair) in out.iter_mut().zip(pcm.chunks_exact(2)) {
            *o = self.encode_pair(pair[0], pair[1]);
        }
        Ok(n)
    }
}

/// G.722 decoder state, with waveform-substitution concealment.
#[derive(Debug)]
pub(crate) struct G722Decoder {
    qmf: [i32; 24],
    low: Band,
    high: Band,
    plc: WaveformPlc,
}

impl G722Decoder {
    pub(crate) fn new() -> Self {
        Self::with_initial_scale(DETL_INIT, DETH_INIT)
    }

    fn with_initial_scale(detl: i32, deth: i32) -> Self {
        G722Decoder {
            qmf: [0; 24],
            low: Band::new(detl),
            high: Band::new(deth),
            plc: WaveformPlc::new(2),
        }
    }

    fn decode_byte(&mut self, code: u8) -> (i16, i16) {
        let ilow = usize::from(code & 0x3F);
        let ihigh = usize::from(code >> 6);

        // Lower band: INVQBL + RECONS for the output, INVQAL for the predictor.
        let wd = (self.low.det * QM6[ilow]) >> 15;
        let rlow = (self.low.s + wd).clamp(-16384, 16383);
        let ril = ilow >> 2;
        let dlow = (self.low.det * QM4[ril]) >> 15;
        self.low.adapt_scale(WL[RL42[ril] as usize], 18432, 8);
        self.low.update(dlow);

        // Higher band: INVQAH + RECONS.
        let dhigh = (self.high.det * QM2[ihigh]) >> 15;
        let rhigh = (dhigh + self.high.s).clamp(-16384, 16383);
        self.high.adapt_scale(WH[RH2[ihigh] as usize], 22528, 10);
        self.high.update(dhigh);

        // Receive QMF.
        self.qmf.copy_within(2.., 0);
        self.qmf[22] = rlow + rhigh;
        self.qmf[23] = rlow - rhigh;
        let mut x0 = 0;
        let mut x1 = 0;
        for i in 0..12 {
            x0 += self.qmf[2 * i + 1] * QMF[11 - i];
            x1 += self.qmf[2 * i] * QMF[i];
        }
        (sat16(x0 >> 11) as i16, sat16(x1 >> 11) as i16)
    }
}

impl Decoder for G722Decoder {
    fn kind(&self) -> CodecKind {
        CodecKind::G722
    }

    fn sample_rate(&self) -> SampleRate {
        SampleRate::Hz16000
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let n = payload.len() * 2;
        ensure_room(n, out.len())?;
        let out = &mut out[..n];
        for (pair, &code) in out.chunks_exact_mut(2).zip(payload) {
            let (a, b) = self.decode_byte(code);
            pair[0] = a;
            pair[1] = b;
        }
        self.plc.receive(out);
        Ok(n)
    }

    fn conceal(&mut self, out: &mut [i16]) -> Result<usize, CodecError> {
        let n = SampleRate::Hz16000.frame_samples();
        ensure_room(n, out.len())?;
        self.plc.conceal(&mut out[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ezk_g722::libg722::{
        decoder::Decoder as RefDecoder, encoder::Encoder as RefEncoder, Bitrate,
    };

    /// Speech-like test input: a few harmonics with a moving pitch and level.
    fn input() -> Vec<i16> {
        (0..16_000)
            .map(|i| {
                let t = f64::from(i) / 16_000.0;
                let f0 = 150.0 + 60.0 * (6.0 * t).sin();
                let mut s = 0.0;
                for h in 1..20 {
                    let h = f64::from(h);
                    s += (2.0 * std::f64::consts::PI * f0 * h * t).sin() / h;
                }
                (6000.0 * s * (0.6 + 0.4 * (25.0 * t).sin())) as i16
            })
            .collect()
    }

    // The reference (a port of a well-known C implementation) starts both scale
    // factors at 0 instead of G.722's reset values, so the comparison runs from that
    // state; every code word and every output sample must then agree.
    #[test]
    fn encoder_and_decoder_are_bit_exact_with_an_independent_implementation() {
        let pcm = input();
        let mut ours = G722Encoder::with_initial_scale(0, 0);
        let mut reference = RefEncoder::new(Bitrate::Mode1_64000, false, false);
        let mut our_bytes = Vec::new();
        let mut ref_bytes = Vec::new();
        for f in pcm.chunks_exact(320) {
            let mut buf = [0u8; 160];
            let n = ours.encode(f, &mut buf).unwrap();
            our_bytes.extend_from_slice(&buf[..n]);
            ref_bytes.extend(reference.encode(f));
        }
        assert_eq!(our_bytes, ref_bytes);

        let mut dec = G722Decoder::with_initial_scale(0, 0);
        let mut ref_dec = RefDecoder::new(Bitrate::Mode1_64000, false, false);
        let mut our_pcm = Vec::new();
        let mut ref_pcm = Vec::new();
        for p in ref_bytes.chunks_exact(160) {
            let mut buf = [0i16; 320];
            for (pair, &code) in buf.chunks_exact_mut(2).zip(p) {
                let (a, b) = dec.decode_byte(code);
                pair[0] = a;
                pair[1] = b;
            }
            our_pcm.extend_from_slice(&buf);
            ref_pcm.extend(ref_dec.decode(p));
        }
        assert_eq!(our_pcm, ref_pcm);
    }

    #[test]
    fn odd_sample_count_is_refused() {
        let mut enc = G722Encoder::new();
        assert!(enc.encode(&[0; 3], &mut [0; 4]).is_err());
    }
}
