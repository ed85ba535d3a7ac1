//! What a LiveKit session hears: the room's subscribed tracks, which of them are decoded, and
//! the mix ([`RoomMix`]).
//!
//! Sits between the subscriber peer connection (str0m hands over each track's Opus packets)
//! and the calls (a lone call hears [`RoomMix::everyone`]; the calls of a shared room, module
//! `share`, are inputs of the same mixer and each hears [`RoomMix::output_for`] itself:
//! everyone but itself). Sans-IO: time comes in as `Instant`s, so a benchmark and the tests
//! drive it without a network.
//!
//! Per 20 ms tick every track's packet is taken from its jitter buffer, but only the audible
//! few are decoded ([`choose_audible`]): the cost of a tick follows who can be heard, not how
//! many are in the room. Decoders are taken when a track enters the few and given back
//! [`DECODER_HOLD`] ticks after it leaves, so memory does not grow with the room either.

use std::time::{Duration, Instant};

use dialin_media::codec::{new_decoder, CodecConfig, CodecKind, Decoder, SampleRate};
use dialin_media::jitter::{JitterBuffer, JitterConfig, PacketInfo, Playout};
use dialin_media::mixer::{Mixer, ParticipantId, DEFAULT_MAX_SPEAKERS};
use str0m::media::Mid;
use tracing::debug;

use crate::room::MAX_OPUS_PAYLOAD;
use crate::tick::TICK;

/// A decoded packet may carry up to 120 ms (RFC 6716 §3.2.5): 1920 samples at 16 kHz.
const MAX_DECODED: usize = 1920;
/// Each remote track's jitter buffer: Opus's 48 kHz RTP clock, 20 ms frames, a delay that
/// follows the measured jitter between 20 and 200 ms (beyond that a conversation suffers,
/// ITU-T G.114), 14 slots (280 ms: the largest delay plus reordering) of at most
/// [`MAX_OPUS_PAYLOAD`] bytes (160 kbit/s in 20 ms frames; LiveKit's clients send speech at
/// 24 to 64 kbit/s). A larger packet is counted as dropped.
const TRACK_JITTER: JitterConfig = JitterConfig {
    clock_rate: 48_000,
    frame: TICK,
    min_delay: TICK,
    max_delay: Duration::from_millis(200),
    capacity: 14,
    max_payload: MAX_OPUS_PAYLOAD,
};

/// A subscribed remote audio track: its adaptive jitter buffer, a decoder while it is among
/// the audible few, and the decoded audio of the packet being played.
///
/// Packets go into the jitter buffer as str0m hands them over (with their sequence
/// number, RTP time and arrival time); one frame per mix tick comes out. Only tracks that
/// can be heard are decoded (see [`choose_audible`]): the others' frames are taken from the
/// buffer and dropped undecoded, so a silent web user (Opus DTX: no packets) or a quiet one
/// beyond the loudest few costs no decode and no concealment. A frame the buffer reports
/// missing on a decoded track is concealed by the Opus decoder (RFC 6716 §4.4). A packet
/// longer than 20 ms is played over as many ticks.
struct Track {
    mid: Mid,
    id: ParticipantId,
    jitter: JitterBuffer,
    /// Held while the track is among the audible few; a fresh one each time it enters.
    decoder: Option<Box<dyn Decoder>>,
    /// Decoded audio of the last packet; `pcm[at..len]` is still to play.
    pcm: Box<[i16; MAX_DECODED]>,
    at: usize,
    len: usize,
    /// This tick's packet, taken from the jitter buffer before the audible few are chosen.
    pending: Box<[u8; MAX_OPUS_PAYLOAD]>,
    pulled: Pulled,
    /// Smoothed size of the track's packets, in sixteenths of a byte: speech is tens of
    /// bytes per 20 ms, comfort noise and DTX a few or nothing.
    activity: u32,
    /// Ticks since the track was last among the chosen few (while it holds a decoder).
    unchosen: u32,
    /// LiveKit reports the track's participant as an active speaker (`SpeakersChanged`).
    speaking: bool,
    /// The next decoded frame fades in (a decoder just taken: no click).
    fade_in: bool,
    /// Jitter-buffer counters already reported, to report only what is new.
    reported: Losses,
}

/// What a track lost, as the jitter buffer counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Losses {
    /// Frames thrown away: over the buffer's size or delay, too large, or flushed.
    pub dropped: u64,
    /// Frames whose packet had not come when their turn to play came.
    pub missing: u64,
}

/// What a track has for this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pulled {
    /// The rest of a packet longer than 20 ms, already decoded.
    Leftover,
    /// A packet of this many bytes, in `pending`.
    Packet(usize),
    /// The buffer says this frame's packet is missing.
    Missing,
    /// Nothing to play (not started, DTX, between talkspurts).
    Empty,
}

/// Tracks decoded at once: the mix takes the loudest [`DEFAULT_MAX_SPEAKERS`]; one more
/// lets a new speaker in while another fades.
const AUDIBLE: usize = DEFAULT_MAX_SPEAKERS + 1;
/// A track whose packets average fewer bytes than this carries no speech (Opus DTX
/// comfort-noise frames are 1 to 3 bytes), in sixteenths of a byte.
const MIN_ACTIVITY: u32 = 8 * 16;
/// A decoder stays with a track this many ticks after it was last chosen (400 ms), so that
/// the ends of words and short pauses are not cut.
const DECODER_HOLD: u32 = 20;

/// Which tracks get a decoder this tick. `tracks` holds each track's activity, whether it
/// holds a decoder, and whether LiveKit reports it as speaking; `chosen` (same length) is
/// written. Among the tracks with [`MIN_ACTIVITY`], those LiveKit reports as speaking come
/// first (its speaker detection reads the senders' audio levels, which the packets we
/// receive do not carry), then by activity, where a decoder holder counts as a bit louder so
/// that two close speakers do not swap every tick; up to [`AUDIBLE`] are chosen. No
/// allocation: `order` is the caller's scratch.
fn choose_audible(tracks: &[(u32, bool, bool)], chosen: &mut Vec<bool>, order: &mut Vec<usize>) {
    chosen.clear();
    chosen.resize(tracks.len(), false);
    order.clear();
    order.extend((0..tracks.len()).filter(|&i| tracks[i].0 >= MIN_ACTIVITY));
    let score = |i: usize| {
        let (activity, holding, speaking) = tracks[i];
        let activity = if holding {
            activity + activity / 4
        } else {
            activity
        };
        (speaking, activity)
    };
    order.sort_unstable_by(|&a, &b| score(b).cmp(&score(a)));
    for &i in order.iter().take(AUDIBLE) {
        chosen[i] = true;
    }
}

impl Track {
    /// A track's buffer, made once when the track first appears; its decoder comes when it
    /// is first heard.
    fn new(mid: Mid, id: ParticipantId) -> Track {
        Track {
            mid,
            id,
            jitter: JitterBuffer::new(TRACK_JITTER),
            decoder: None,
            pcm: Box::new([0; MAX_DECODED]),
            at: 0,
            len: 0,
            pending: Box::new([0; MAX_OPUS_PAYLOAD]),
            pulled: Pulled::Empty,
            activity: 0,
            unchosen: 0,
            speaking: false,
            fade_in: false,
            reported: Losses::default(),
        }
    }

    /// Stores a packet that arrived at `arrival`.
    fn push(&mut self, seq: u16, rtp_time: u32, payload: &[u8], arrival: Instant) {
        let info = PacketInfo {
            // str0m hands over one SSRC's packets per m-line; a new sender shows as a
            // sequence discontinuity, which restarts the buffer.
            ssrc: 0,
            seq,
            timestamp: rtp_time,
            // str0m does not pass the marker bit on; a talkspurt after silence restarts
            // the buffer anyway (an underrun idles it).
            marker: false,
        };
        self.jitter.push(info, payload, arrival);
    }

    /// Takes this tick's packet from the buffer (undecoded) and updates the activity.
    fn pull(&mut self, len: usize, now: Instant) {
        if self.decoder.is_some() && self.at + len <= self.len {
            self.pulled = Pulled::Leftover;
            return;
        }
        self.at = 0;
        self.len = 0;
        let bytes = match self.jitter.pop(now) {
            Playout::Frame(frame) => {
                let n = frame.payload.len().min(MAX_OPUS_PAYLOAD);
                self.pending[..n].copy_from_slice(&frame.payload[..n]);
                self.pulled = Pulled::Packet(n);
                n
            }
            Playout::Missing => {
                self.pulled = Pulled::Missing;
                0
            }
            Playout::Empty => {
                self.pulled = Pulled::Empty;
                0
            }
        };
        // A quarter of the way to this packet's size: about 100 ms to rise or fall.
        let target = u32::try_from(bytes).unwrap_or(u32::MAX).saturating_mul(16);
        self.activity = self.activity - self.activity / 4 + target / 4;
    }

    /// Gives the track a fresh decoder, or takes it away.
    fn set_decoding(&mut self, on: bool, rate: SampleRate) {
        match (on, self.decoder.is_some()) {
            (true, false) => {
                self.decoder = new_decoder(CodecKind::Opus, rate, &CodecConfig::default()).ok();
                self.fade_in = true;
                self.unchosen = 0;
            }
            (false, true) => {
                self.decoder = None;
                self.at = 0;
                self.len = 0;
            }
            _ => {}
        }
    }

    /// The track's `len` samples for this tick's mix, when it holds a decoder and has
    /// something to play.
    fn decoded(&mut self, len: usize) -> Option<&[i16]> {
        let decoder = self.decoder.as_mut()?;
        if self.pulled != Pulled::Leftover {
            let decoded = match self.pulled {
                Pulled::Packet(n) => match decoder.decode(&self.pending[..n], &mut self.pcm[..]) {
                    Ok(n) => Ok(n),
                    Err(e) => {
                        debug!(error = %e, "Opus decode");
                        decoder.conceal(&mut self.pcm[..])
                    }
                },
                Pulled::Missing => decoder.conceal(&mut self.pcm[..]),
                Pulled::Empty | Pulled::Leftover => return None,
            };
            self.at = 0;
            self.len = decoded.ok()?.min(MAX_DECODED);
            if self.len < len {
                self.len = 0;
                return None;
            }
            if std::mem::take(&mut self.fade_in) {
                // 5 ms linear fade-in: a decoder that starts mid-stream begins cleanly.
                let ramp = (len / 4).max(1);
                for (i, s) in self.pcm[..ramp].iter_mut().enumerate() {
                    *s = (i32::from(*s) * i as i32 / ramp as i32) as i16;
                }
            }
        }
        let frame = self.pcm.get(self.at..self.at + len)?;
        self.at += len;
        Some(frame)
    }

    /// What the track lost since the last call.
    fn take_losses(&mut self) -> Losses {
        let s = self.jitter.stats();
        let now = Losses {
            dropped: s.dropped + s.too_large,
            missing: s.lost,
        };
        let new = Losses {
            dropped: now.dropped.saturating_sub(self.reported.dropped),
            missing: now.missing.saturating_sub(self.reported.missing),
        };
        self.reported = now;
        new
    }
}

/// The receiving side of a session: the room's tracks, their decoders and one mixer.
pub struct RoomMix {
    rate: SampleRate,
    frame_len: usize,
    tracks: Vec<Track>,
    /// Scratch of the audible choice, reused every tick.
    activity: Vec<(u32, bool, bool)>,
    chosen: Vec<bool>,
    order: Vec<usize>,
    next_id: u32,
    mixer: Mixer,
    /// An input that never speaks: what it hears is the mix of everyone.
    everyone: ParticipantId,
}

impl RoomMix {
    /// An empty room heard at `rate` (Opus decodes to it natively).
    pub fn new(rate: SampleRate) -> RoomMix {
        let frame_len = usize::try_from(rate.hz() / 50).unwrap_or(320).min(320);
        let mut mixer = Mixer::new(frame_len);
        let everyone = ParticipantId(0);
        // A new mixer has room for its first input.
        let _ = mixer.add(everyone);
        RoomMix {
            rate,
            frame_len,
            tracks: Vec::new(),
            activity: Vec::new(),
            chosen: Vec::new(),
            order: Vec::new(),
            next_id: 1,
            mixer,
            everyone,
        }
    }

    /// Samples per 20 ms frame.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Whether any track was ever received (since the last [`clear_tracks`](Self::clear_tracks)).
    pub fn has_tracks(&self) -> bool {
        !self.tracks.is_empty()
    }

    /// Tracks received.
    pub fn tracks(&self) -> usize {
        self.tracks.len()
    }

    /// Tracks holding a decoder now.
    pub fn decoding(&self) -> usize {
        self.tracks.iter().filter(|t| t.decoder.is_some()).count()
    }

    /// A new PCM input (a call of a shared room): `None` when the mixer is full.
    pub fn add_input(&mut self) -> Option<ParticipantId> {
        let id = ParticipantId(self.next_id);
        self.next_id += 1;
        self.mixer.add(id).ok().map(|()| id)
    }

    pub fn remove_input(&mut self, id: ParticipantId) {
        let _ = self.mixer.remove(id);
    }

    /// An input's frame for the next [`mix`](Self::mix).
    pub fn push_input(&mut self, id: ParticipantId, pcm: &[i16]) {
        let _ = self.mixer.push(id, pcm);
    }

    /// A packet of the track on m-line `mid`, which arrived at `arrival`; a track's buffer
    /// is made when its first packet comes. Returns whether the track is new.
    pub fn push_packet(
        &mut self,
        mid: Mid,
        seq: u16,
        rtp_time: u32,
        payload: &[u8],
        arrival: Instant,
    ) -> bool {
        let (at, new) = match self.tracks.iter().position(|t| t.mid == mid) {
            Some(at) => (at, false),
            None => {
                let id = ParticipantId(self.next_id);
                self.next_id += 1;
                if self.mixer.add(id).is_err() {
                    return false;
                }
                self.tracks.push(Track::new(mid, id));
                (self.tracks.len() - 1, true)
            }
        };
        if let Some(track) = self.tracks.get_mut(at) {
            track.push(seq, rtp_time, payload, arrival);
        }
        new
    }

    /// Marks the tracks LiveKit reports as speaking (`speaking(mid)`), the others not;
    /// returns how many are.
    pub fn mark_speakers(&mut self, speaking: impl Fn(Mid) -> bool) -> usize {
        let mut marked = 0;
        for t in &mut self.tracks {
            t.speaking = speaking(t.mid);
            marked += usize::from(t.speaking);
        }
        marked
    }

    /// Forgets every track (a new participant session subscribes afresh); inputs stay.
    pub fn clear_tracks(&mut self) {
        for t in self.tracks.drain(..) {
            let _ = self.mixer.remove(t.id);
        }
    }

    /// One tick: every track's packet is taken, the audible few are decoded, and the tracks
    /// and the inputs pushed since the last tick are mixed. Returns what the tracks lost.
    pub fn mix(&mut self, now: Instant) -> Losses {
        let len = self.frame_len;
        let mut lost = Losses::default();
        for t in &mut self.tracks {
            t.pull(len, now);
        }
        self.activity.clear();
        self.activity.extend(
            self.tracks
                .iter()
                .map(|t| (t.activity, t.decoder.is_some(), t.speaking)),
        );
        choose_audible(&self.activity, &mut self.chosen, &mut self.order);
        let mut holding = self.tracks.iter().filter(|t| t.decoder.is_some()).count();
        // Decoders of tracks left out long enough go first, so that newcomers find one.
        for (t, &chosen) in self.tracks.iter_mut().zip(&self.chosen) {
            if chosen {
                t.unchosen = 0;
            } else if t.decoder.is_some() {
                t.unchosen += 1;
                if t.unchosen > DECODER_HOLD {
                    t.set_decoding(false, self.rate);
                    holding -= 1;
                }
            }
        }
        for (t, &chosen) in self.tracks.iter_mut().zip(&self.chosen) {
            if chosen && t.decoder.is_none() && holding < AUDIBLE {
                t.set_decoding(true, self.rate);
                holding += 1;
            }
        }
        for t in &mut self.tracks {
            let id = t.id;
            if let Some(frame) = t.decoded(len) {
                let _ = self.mixer.push(id, frame);
            }
            let l = t.take_losses();
            lost.dropped += l.dropped;
            lost.missing += l.missing;
        }
        self.mixer.mix();
        lost
    }

    /// What input `id` hears of the last mix: everyone mixed but itself.
    pub fn output_for(&self, id: ParticipantId) -> Option<&[i16]> {
        self.mixer.output_for(id)
    }

    /// The last mix of everyone (what a lone call hears).
    pub fn everyone(&self) -> Option<&[i16]> {
        self.mixer.output_for(self.everyone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialin_media::codec::new_encoder;

    /// One 20 ms Opus packet at 8 kHz holding a tone, from our own encoder.
    fn packets(n: usize) -> Vec<Vec<u8>> {
        let rate = SampleRate::Hz8000;
        let mut enc =
            new_encoder(CodecKind::Opus, rate, &CodecConfig::default()).expect("an Opus encoder");
        (0..n)
            .map(|k| {
                let pcm: Vec<i16> = (0..160)
                    .map(|i| {
                        let t = (k * 160 + i) as f64 / 8000.0;
                        (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
                    })
                    .collect();
                let mut out = [0u8; 400];
                let len = enc.encode(&pcm, &mut out).expect("encode");
                out[..len].to_vec()
            })
            .collect()
    }

    fn track() -> Track {
        Track::new(Mid::from("0"), ParticipantId(1))
    }

    impl Track {
        /// One tick of a track that is always heard.
        fn next(&mut self, len: usize, now: Instant) -> Option<&[i16]> {
            self.pull(len, now);
            self.set_decoding(true, SampleRate::Hz8000);
            self.decoded(len)
        }
    }

    #[test]
    fn the_loudest_few_with_speech_are_chosen_and_holders_keep_a_small_edge() {
        let (mut chosen, mut order) = (Vec::new(), Vec::new());
        // Ten tracks: sizes 0 (DTX), 2 bytes (comfort noise), then speech of growing size.
        let tracks: Vec<(u32, bool, bool)> = [0u32, 2, 20, 30, 40, 50, 60, 70, 80, 90]
            .iter()
            .map(|b| (b * 16, false, false))
            .collect();
        choose_audible(&tracks, &mut chosen, &mut order);
        assert_eq!(chosen.iter().filter(|c| **c).count(), AUDIBLE);
        assert!(!chosen[0] && !chosen[1], "silent tracks are never decoded");
        assert!(chosen[5..].iter().all(|c| *c), "the five loudest");
        // A holder a little quieter than a newcomer keeps its decoder.
        let close = [
            (60 * 16, true, false),
            (65 * 16, false, false),
            (90 * 16, false, false),
            (90 * 16, false, false),
            (90 * 16, false, false),
            (90 * 16, false, false),
        ];
        choose_audible(&close, &mut chosen, &mut order);
        assert!(
            chosen[0] && !chosen[1],
            "no swap for a few bytes: {chosen:?}"
        );
        // Fewer speakers than slots: every one of them.
        choose_audible(
            &[(40 * 16, false, false), (0, true, false)],
            &mut chosen,
            &mut order,
        );
        assert_eq!(chosen, vec![true, false]);
    }

    #[test]
    fn tracks_livekit_hears_speaking_come_first_but_never_without_packets() {
        let (mut chosen, mut order) = (Vec::new(), Vec::new());
        // Seven tracks with speech-sized packets (noisy microphones without DTX look alike);
        // LiveKit's speaker detection names two of them, the quietest by packet size.
        let mut tracks: Vec<(u32, bool, bool)> = [90u32, 85, 80, 75, 70, 30, 25]
            .iter()
            .map(|b| (b * 16, false, false))
            .collect();
        tracks[5].2 = true;
        tracks[6].2 = true;
        choose_audible(&tracks, &mut chosen, &mut order);
        assert!(
            chosen[5] && chosen[6],
            "the reported speakers are decoded: {chosen:?}"
        );
        assert!(!chosen[4], "one of the unreported gives way: {chosen:?}");
        // A reported speaker whose packets say silence (DTX) is not decoded.
        let quiet = [(0, false, true), (40 * 16, false, false)];
        choose_audible(&quiet, &mut chosen, &mut order);
        assert_eq!(chosen, vec![false, true]);
    }

    #[test]
    fn an_unheard_track_is_not_decoded_but_its_buffer_keeps_moving() {
        let mut t = track();
        let t0 = Instant::now();
        for (k, p) in packets(10).iter().enumerate() {
            let now = t0 + TICK * k as u32;
            t.push(k as u16, (k * 960) as u32, p, now);
            t.pull(160, now);
            assert!(t.decoded(160).is_none(), "no decoder, nothing decoded");
        }
        assert!(t.decoder.is_none());
        assert!(
            t.activity >= MIN_ACTIVITY,
            "speech-sized packets count as activity"
        );
        assert!(
            t.jitter.stats().played >= 8,
            "frames were taken from the buffer"
        );
        // Taking a decoder mid-stream starts with a fade-in, then plays.
        let now = t0 + TICK * 10;
        t.push(10, 9600, &packets(11)[10], now);
        t.pull(160, now);
        t.set_decoding(true, SampleRate::Hz8000);
        let first = t.decoded(160).expect("a frame").to_vec();
        assert_eq!(first[0], 0, "starts from silence");
    }

    #[test]
    fn a_track_plays_nothing_before_its_first_packet() {
        let mut t = track();
        assert!(t.next(160, Instant::now()).is_none());
        assert_eq!(t.take_losses(), Losses::default());
    }

    #[test]
    fn a_track_buffers_then_plays_one_frame_per_tick() {
        let mut t = track();
        let t0 = Instant::now();
        let ps = packets(10);
        let mut played = 0;
        for (k, p) in ps.iter().enumerate() {
            let now = t0 + TICK * k as u32;
            t.push(k as u16, (k * 960) as u32, p, now);
            if let Some(frame) = t.next(160, now) {
                assert_eq!(frame.len(), 160);
                played += 1;
            }
        }
        // The buffer holds its target delay (at least one frame) before playing.
        assert!((8..=9).contains(&played), "{played} frames played");
        assert_eq!(t.take_losses(), Losses::default(), "nothing lost on time");
    }

    #[test]
    fn a_lost_packet_is_concealed_and_counted_missing() {
        let mut t = track();
        let t0 = Instant::now();
        let ps = packets(20);
        let mut gaps = 0;
        for (k, p) in ps.iter().enumerate() {
            let now = t0 + TICK * k as u32;
            if k != 10 {
                t.push(k as u16, (k * 960) as u32, p, now);
            }
            if k > 3 && t.next(160, now).is_none() {
                gaps += 1;
            }
        }
        assert_eq!(gaps, 0, "the lost frame was concealed, not left silent");
        assert_eq!(
            t.take_losses(),
            Losses {
                dropped: 0,
                missing: 1
            }
        );
        assert_eq!(t.take_losses(), Losses::default(), "counted once");
    }

    #[test]
    fn the_delay_follows_the_measured_jitter() {
        let mut t = track();
        let t0 = Instant::now();
        let before = t.jitter.target_delay();
        for (k, p) in packets(100).iter().enumerate() {
            // Every other packet 30 ms late: about 15 ms of RFC 3550 jitter.
            let late = if k % 2 == 1 { 30 } else { 0 };
            let arrival = t0 + TICK * k as u32 + Duration::from_millis(late);
            t.push(k as u16, (k * 960) as u32, p, arrival);
        }
        let after = t.jitter.target_delay();
        assert_eq!(before, TICK, "an idle track aims for one frame");
        assert!(after >= Duration::from_millis(50), "target delay {after:?}");
        assert!(after <= TRACK_JITTER.max_delay);
    }

    #[test]
    fn a_packet_of_40_ms_is_played_over_two_ticks() {
        let rate = SampleRate::Hz8000;
        let config = CodecConfig::default();
        let mut enc = new_encoder(CodecKind::Opus, rate, &config).expect("an Opus encoder");
        let mut out = [0u8; 400];
        let len = enc.encode(&[1000; 320], &mut out).expect("40 ms encode");
        let mut t = track();
        let t0 = Instant::now();
        t.push(0, 0, &out[..len], t0);
        let mut frames = 0;
        // The first tick buffers (the target delay), the next two play the packet.
        for k in 0..3u32 {
            if t.next(160, t0 + TICK * k).is_some() {
                frames += 1;
            }
        }
        assert_eq!(frames, 2, "two ticks played");
        let s = t.jitter.stats();
        assert_eq!((s.played, s.inserted), (1, 0), "from one packet");
    }

    #[test]
    fn a_room_of_ten_decodes_its_two_speakers_and_an_input_hears_everyone_but_itself() {
        let speech = packets(60);
        let mut enc = new_encoder(CodecKind::Opus, SampleRate::Hz8000, &CodecConfig::default())
            .expect("an Opus encoder");
        let mut quiet = [0u8; 400];
        let quiet_len = enc.encode(&[0i16; 160], &mut quiet).expect("encode");
        let mids: Vec<Mid> = (0..10)
            .map(|k| Mid::from(format!("{k}").as_str()))
            .collect();
        let mut room = RoomMix::new(SampleRate::Hz8000);
        let me = room.add_input().expect("an input");
        let mine = [1000i16; 160];
        let t0 = Instant::now();
        for tick in 0..60u16 {
            let now = t0 + TICK * u32::from(tick);
            let rtp = u32::from(tick) * 960;
            for (k, mid) in mids.iter().enumerate() {
                if k < 2 {
                    room.push_packet(*mid, tick, rtp, &speech[usize::from(tick)], now);
                } else if tick % 20 == 0 {
                    // The others are silent: a small packet every 400 ms, as DTX sends.
                    room.push_packet(*mid, tick / 20, rtp, &quiet[..quiet_len], now);
                }
            }
            room.push_input(me, &mine);
            room.mix(now);
        }
        assert_eq!(room.tracks(), 10);
        assert_eq!(room.decoding(), 2, "only the speakers hold a decoder");
        let heard = room.output_for(me).expect("the input's mix");
        let everyone = room.everyone().expect("the room's mix");
        assert!(
            heard.iter().any(|&x| x.unsigned_abs() > 2000),
            "the speakers are heard"
        );
        assert!(
            everyone
                .iter()
                .zip(heard)
                .all(|(&e, &h)| i32::from(e) - i32::from(h) == 1000 || e.unsigned_abs() == 32767),
            "the input hears everyone but itself"
        );
        room.clear_tracks();
        assert!(!room.has_tracks() && room.decoding() == 0);
        room.remove_input(me);
        assert!(room.output_for(me).is_none());
    }
}
