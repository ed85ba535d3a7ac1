//! Synthetic participants: room members that live inside the server instead of behind a
//! WebSocket and two peer connections. Every 20 ms (one Opus frame, RFC 7587 §4.2) each one
//! encodes its [`Signal`] and the engine forwards the frame exactly as it forwards a remote
//! publisher's RTP payload; audio forwarded *to* one is decoded (48 kHz mono) and recorded, and
//! so are the data packets addressed to it. Tests read the recordings through
//! [`SyntheticParticipant`](crate::SyntheticParticipant).

use std::collections::HashMap;
use std::f64::consts::TAU;
use std::sync::{Arc, Mutex, MutexGuard};

use livekit_protocol::DataPacket;
use opus_pure::{Application, OpusDecoder, OpusEncoder, MAX_PACKET_BYTES};

/// Sample rate of what synthetic participants send and of what they record.
pub const SAMPLE_RATE: u32 = 48_000;
/// One 20 ms Opus frame at [`SAMPLE_RATE`] (RFC 7587 §4.2: 20 ms is the WebRTC default ptime).
pub const FRAME_SAMPLES: usize = 960;
/// Longest stretch of received audio kept per source: 60 s at 48 kHz.
const MAX_RECORDED_SAMPLES: usize = 60 * SAMPLE_RATE as usize;
/// Frames in one second: a tone with a whole number of hertz repeats exactly after it, so a
/// synthetic participant encodes its first second and then replays it (cheap load runs).
const LOOP_FRAMES: usize = 50;
/// Data packets kept per synthetic participant.
const MAX_RECORDED_PACKETS: usize = 10_000;

/// What a synthetic participant publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// A sine tone; `amplitude` is a fraction of full scale (0.0..=1.0).
    Tone { hz: f64, amplitude: f64 },
    /// Digital silence (still sent as Opus frames, as a muted-but-live microphone would be).
    Silence,
}

/// What a synthetic participant heard, shared with the test through its handle.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    /// Decoded 48 kHz mono audio, per sending participant identity, in arrival order.
    pub audio: HashMap<String, Vec<i16>>,
    /// Identities in the order they were first heard.
    pub sources: Vec<String>,
    pub data: Vec<DataPacket>,
}

impl Recording {
    fn push_audio(&mut self, from: &str, pcm: &[i16]) {
        let buf = match self.audio.get_mut(from) {
            Some(b) => b,
            None => {
                self.sources.push(from.to_owned());
                self.audio.entry(from.to_owned()).or_default()
            }
        };
        buf.extend_from_slice(pcm);
        if buf.len() > MAX_RECORDED_SAMPLES {
            let excess = buf.len() - MAX_RECORDED_SAMPLES;
            buf.drain(..excess);
        }
    }

    pub(crate) fn push_data(&mut self, pkt: DataPacket) {
        if self.data.len() < MAX_RECORDED_PACKETS {
            self.data.push(pkt);
        }
    }

    /// All sources summed sample by sample, each aligned on its first received sample.
    pub(crate) fn mixed(&self) -> Vec<i16> {
        let len = self.audio.values().map(Vec::len).max().unwrap_or(0);
        let mut mix = vec![0i32; len];
        for buf in self.audio.values() {
            for (m, s) in mix.iter_mut().zip(buf) {
                *m += i32::from(*s);
            }
        }
        mix.into_iter()
            .map(|s| s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16)
            .collect()
    }
}

pub(crate) type SharedRecording = Arc<Mutex<Recording>>;

/// Lock a recording even if a panicking test thread poisoned it.
pub(crate) fn lock(rec: &SharedRecording) -> MutexGuard<'_, Recording> {
    rec.lock().unwrap_or_else(|p| p.into_inner())
}

/// The engine-side state of one synthetic participant.
pub(crate) struct Synthetic {
    signal: Signal,
    phase: f64,
    encoder: OpusEncoder,
    decoders: HashMap<String, OpusDecoder>,
    pcm: Vec<i16>,
    packet: Vec<u8>,
    decoded: Vec<i16>,
    /// The first second of encoded frames, replayed once complete.
    replay: Vec<Arc<[u8]>>,
    frame_index: usize,
    /// RTP time of the next frame, in 48 kHz ticks.
    pub rtp_time: u64,
    pub recording: SharedRecording,
}

#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub(crate) struct CodecError(String);

impl Synthetic {
    pub(crate) fn new(signal: Signal, recording: SharedRecording) -> Result<Self, CodecError> {
        let mut encoder = OpusEncoder::new(SAMPLE_RATE as i32, 1, Application::Voip)
            .map_err(|e| CodecError(e.to_string()))?;
        encoder.bitrate_bps = 32_000;
        Ok(Self {
            signal,
            phase: 0.0,
            encoder,
            decoders: HashMap::new(),
            pcm: vec![0; FRAME_SAMPLES],
            packet: vec![0; MAX_PACKET_BYTES],
            // 120 ms is the longest Opus packet (RFC 6716 §3.2.1).
            decoded: vec![0; 5760],
            replay: Vec::with_capacity(LOOP_FRAMES),
            frame_index: 0,
            rtp_time: 0,
            recording,
        })
    }

    /// The RFC 6464 level (dBov, -127 silence) a client would send with this signal's frames.
    pub(crate) fn level_dbov(&self) -> i8 {
        match self.signal {
            Signal::Tone { amplitude, .. } if amplitude > 0.0 => {
                // A sine's RMS is its peak over √2.
                let rms = amplitude.clamp(0.0, 1.0) / std::f64::consts::SQRT_2;
                (20.0 * rms.log10()).clamp(-127.0, 0.0).round() as i8
            }
            _ => -127,
        }
    }

    pub(crate) fn set_signal(&mut self, signal: Signal) {
        self.signal = signal;
        self.replay.clear();
        self.frame_index = 0;
    }

    fn loops_each_second(&self) -> bool {
        match self.signal {
            Signal::Tone { hz, .. } => hz.fract() == 0.0,
            Signal::Silence => true,
        }
    }

    /// Produce the next 20 ms frame as an Opus packet.
    pub(crate) fn next_frame(&mut self) -> Result<Arc<[u8]>, CodecError> {
        self.rtp_time += FRAME_SAMPLES as u64;
        if self.replay.len() == LOOP_FRAMES {
            let frame = self.replay.get(self.frame_index % LOOP_FRAMES).cloned();
            self.frame_index = (self.frame_index + 1) % LOOP_FRAMES;
            if let Some(f) = frame {
                return Ok(f);
            }
        }
        match self.signal {
            Signal::Tone { hz, amplitude } => {
                let step = TAU * hz / f64::from(SAMPLE_RATE);
                let amp = amplitude.clamp(0.0, 1.0) * f64::from(i16::MAX);
                for s in self.pcm.iter_mut() {
                    *s = (amp * self.phase.sin()) as i16;
                    self.phase = (self.phase + step) % TAU;
                }
            }
            Signal::Silence => self.pcm.iter_mut().for_each(|s| *s = 0),
        }
        let n = self
            .encoder
            .encode_s16(&self.pcm, FRAME_SAMPLES, &mut self.packet)
            .map_err(|e| CodecError(e.to_string()))?;
        let frame: Arc<[u8]> = Arc::from(
            self.packet
                .get(..n)
                .ok_or_else(|| CodecError("encoder overran its buffer".into()))?,
        );
        if self.loops_each_second() {
            self.replay.push(frame.clone());
        }
        Ok(frame)
    }

    /// Decode a frame forwarded from `from` and record it.
    pub(crate) fn receive(&mut self, from: &str, payload: &[u8]) {
        if !self.decoders.contains_key(from) {
            match OpusDecoder::new(SAMPLE_RATE as i32, 1) {
                Ok(d) => {
                    self.decoders.insert(from.to_owned(), d);
                }
                Err(e) => {
                    tracing::warn!("synthetic decoder: {e}");
                    return;
                }
            }
        }
        let Some(dec) = self.decoders.get_mut(from) else {
            return;
        };
        let max = self.decoded.len();
        match dec.decode_s16(payload, max, &mut self.decoded) {
            Ok(n) => {
                if let Some(pcm) = self.decoded.get(..n) {
                    lock(&self.recording).push_audio(from, pcm);
                }
            }
            Err(e) => tracing::debug!("synthetic decode from {from}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synth(signal: Signal) -> Synthetic {
        Synthetic::new(signal, Arc::new(Mutex::new(Recording::default()))).unwrap()
    }

    #[test]
    fn whole_hertz_tone_replays_its_first_second() {
        let mut s = synth(Signal::Tone {
            hz: 1000.0,
            amplitude: 0.3,
        });
        let first: Vec<_> = (0..LOOP_FRAMES).map(|_| s.next_frame().unwrap()).collect();
        let again = s.next_frame().unwrap();
        assert!(Arc::ptr_eq(&first[0], &again));
        assert_eq!(
            s.rtp_time,
            (LOOP_FRAMES as u64 + 1) * FRAME_SAMPLES as u64,
            "RTP time keeps advancing"
        );
    }

    #[test]
    fn fractional_tone_is_encoded_every_frame() {
        let mut s = synth(Signal::Tone {
            hz: 440.5,
            amplitude: 0.3,
        });
        for _ in 0..LOOP_FRAMES + 1 {
            s.next_frame().unwrap();
        }
        assert!(s.replay.is_empty());
    }

    #[test]
    fn received_frames_are_decoded_per_source() {
        let mut tx = synth(Signal::Tone {
            hz: 1000.0,
            amplitude: 0.3,
        });
        let mut rx = synth(Signal::Silence);
        for _ in 0..10 {
            let f = tx.next_frame().unwrap();
            rx.receive("a", &f);
        }
        rx.receive("b", &[0xff, 0x00]);
        let rec = lock(&rx.recording);
        assert_eq!(rec.audio.get("a").map(Vec::len), Some(10 * FRAME_SAMPLES));
        assert_eq!(rec.sources.first().map(String::as_str), Some("a"));
    }
}
