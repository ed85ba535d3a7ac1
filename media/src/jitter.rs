//! Adaptive jitter buffer: turns RTP packets that arrive early, late, twice or out of order
//! into one frame per packetisation interval for the decoder.
//!
//! Sits on the caller → room path: `recv → rtp::Packet::parse → jitter → decode → mix`.
//! Sans-IO: [`JitterBuffer::push`] takes a packet's header fields, its payload and the
//! arrival time; the media task calls [`JitterBuffer::pop`] once per frame interval
//! (ptime, 20 ms) and gets a [`Playout::Frame`] to decode, [`Playout::Missing`] when the
//! frame was lost (run the codec's packet-loss concealment), or [`Playout::Empty`] when
//! nothing is being played (before the first talkspurt, during silence suppression).
//!
//! Payloads are copied into a ring of slots allocated once, so steady-state operation
//! does not allocate.
//!
//! Delay. Interarrival jitter is measured as in RFC 3550 §6.4.1 / §A.8. The target delay
//! is `clamp(3·J_peak + frame, min_delay, max_delay)` where `J_peak` follows the RFC 3550
//! estimate up at once and back down slowly (about 3 s half-life), so a burst of jitter
//! raises the delay immediately and calm lets it sink. For delays spread uniformly over
//! a range `X`, the RFC 3550 estimate is `X/3`, hence the factor 3. The buffer moves
//! toward the target without time-stretching: at the start of each talkspurt it buffers
//! exactly the target, while playing it repeats a concealed frame (`Missing`) when it
//! holds less than the target and drops one frame per second when it has held more than
//! the target for a whole second.
//!
//! Discontinuities: a new SSRC, or a sequence number jump beyond RFC 3550 §A.1's
//! `MAX_DROPOUT`/`MAX_MISORDER` limits (scaled to 20 ms frames), restarts the buffer; a
//! timestamp jump that does not match elapsed time (a sender or B2BUA switching sources)
//! restarts the jitter measurement so the delay target is not blown up by it.

use std::time::{Duration, Instant};

/// Settings of one buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate of the payload format (8000 for PCMU, PCMA and G.722, 48000 for Opus).
    pub clock_rate: u32,
    /// Packetisation interval (SDP `ptime`); also the cadence of [`JitterBuffer::pop`].
    pub frame: Duration,
    /// Lowest target delay.
    pub min_delay: Duration,
    /// Highest target delay: more than this and a conversation suffers (ITU-T G.114
    /// puts 150 ms one-way as the limit for most applications; the network adds its own).
    pub max_delay: Duration,
    /// Number of packet slots; must cover `max_delay` plus reordering.
    pub capacity: usize,
    /// Largest payload accepted (Opus: 1275 bytes per frame, RFC 6716 §3.4 R2).
    pub max_payload: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            clock_rate: 8000,
            frame: Duration::from_millis(20),
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            capacity: 32,
            max_payload: 1500,
        }
    }
}

/// The RTP header fields the buffer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    /// RFC 3551 §4.1: set on the first packet of a talkspurt.
    pub marker: bool,
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for playout.
    Buffered,
    /// Stored after the buffer restarted (new SSRC or sequence discontinuity).
    Resynced,
    /// Already stored or played.
    Duplicate,
    /// Its playout time has passed; dropped.
    Late,
    /// Larger than `max_payload`; dropped.
    TooLarge,
}

/// One frame to decode, borrowed from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a [u8],
}

/// Result of [`JitterBuffer::pop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The next frame.
    Frame(Frame<'a>),
    /// The next frame is lost or not there yet: conceal it (codec PLC).
    Missing,
    /// Nothing is playing: before the first packet, while buffering, or in silence.
    Empty,
}

/// Counters and current state, for call-quality records and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets stored.
    pub received: u64,
    /// Frames handed out.
    pub played: u64,
    /// Frames reported `Missing` because the packet never came in time.
    pub lost: u64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Packets over `max_payload`.
    pub too_large: u64,
    /// Frames discarded to shrink the delay, on overflow, or flushed by a restart.
    pub dropped: u64,
    /// Concealed frames inserted to grow the delay or ride out an underrun.
    pub inserted: u64,
    /// Restarts (SSRC change, sequence or timestamp discontinuity).
    pub resyncs: u64,
    /// RFC 3550 interarrival jitter.
    pub jitter: Duration,
    /// Delay the buffer aims for.
    pub target_delay: Duration,
    /// Audio currently held, from the next frame to play to the newest packet.
    pub current_delay: Duration,
}

/// RFC 3550 §A.1 `MAX_DROPOUT` (3000 packets) is sized for high packet rates; at 50
/// packets a second a jump of more than 2 s of packets is a restarted or switched
/// stream rather than loss.
const MAX_DROPOUT: i64 = 100;
/// RFC 3550 §A.1 `MAX_MISORDER`: packets this far behind mean the sender restarted.
const MAX_MISORDER: i64 = 100;
/// A transit-time change larger than this is a timestamp discontinuity, not jitter.
const TIMESTAMP_JUMP: Duration = Duration::from_secs(1);
/// Target delay = JITTER_FACTOR · J_peak + frame (see the module documentation).
const JITTER_FACTOR: f64 = 3.0;
/// Per-packet decay of the peak jitter estimate: 0.9954^150 ≈ 0.5, a 3 s half-life at
/// 50 packets a second.
const PEAK_DECAY: f64 = 0.9954;
/// Concealed frames played on an empty buffer before declaring silence.
const UNDERRUN_FRAMES: u32 = 3;
/// Frames over which the buffer's low-water mark is measured before shrinking (1 s).
const SHRINK_WINDOW: u32 = 50;
/// Minimum spacing of inserted frames when growing (100 ms at 20 ms frames).
const INSERT_SPACING: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Empty,
    Filled,
    Played,
}

#[derive(Debug)]
struct Slot {
    state: SlotState,
    ext_seq: u64,
    timestamp: u32,
    marker: bool,
    len: usize,
    data: Box<[u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing to play: no stream yet, or silence after a talkspurt.
    Idle,
    /// Collecting the first packets of a talkspurt until the target delay is reached.
    Buffering {
        since: Instant,
    },
    Playing,
}

/// Adaptive jitter buffer for one RTP stream.
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    slots: Vec<Slot>,
    mode: Mode,
    ssrc: Option<u32>,
    /// Extended sequence number of the next frame to play.
    next: Option<u64>,
    highest: Option<u64>,
    filled: usize,
    // Jitter measurement (RFC 3550 §A.8), in timestamp units.
    epoch: Option<Instant>,
    last_arrival: f64,
    last_timestamp: Option<u32>,
    jitter: f64,
    jitter_peak: f64,
    // Adaptation.
    underruns: u32,
    window_pops: u32,
    window_min_depth: u64,
    since_insert: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(config: JitterConfig) -> JitterBuffer {
        let capacity = config.capacity.max(4);
        let slots = (0..capacity)
            .map(|_| Slot {
                state: SlotState::Empty,
                ext_seq: 0,
                timestamp: 0,
                marker: false,
                len: 0,
                data: vec![0u8; config.max_payload].into_boxed_slice(),
            })
            .collect();
        let mut jb = JitterBuffer {
            config: JitterConfig { capacity, ..config },
            slots,
            mode: Mode::Idle,
            ssrc: None,
            next: None,
            highest: None,
            filled: 0,
            epoch: None,
            last_arrival: 0.0,
            last_timestamp: None,
            jitter: 0.0,
            jitter_peak: 0.0,
            underruns: 0,
            window_pops: 0,
            window_min_depth: u64::MAX,
            since_insert: 0,
            stats: JitterStats::default(),
        };
        jb.stats.target_delay = jb.target_delay();
        jb
    }

    /// Counters and current delays.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            jitter: self.units_to_duration(self.jitter),
            target_delay: self.target_delay(),
            current_delay: self.frame_duration(self.depth()),
            ..self.stats
        }
    }

    /// Delay the buffer currently aims for.
    pub fn target_delay(&self) -> Duration {
        let wanted = self.units_to_duration(JITTER_FACTOR * self.jitter_peak) + self.config.frame;
        wanted.clamp(
            self.config.min_delay,
            self.config.max_delay.max(self.config.min_delay),
        )
    }

    /// Stores a packet that arrived at `now`.
    pub fn push(&mut self, info: PacketInfo, payload: &[u8], now: Instant) -> PushOutcome {
        if payload.len() > self.config.max_payload {
            self.stats.too_large += 1;
            return PushOutcome::TooLarge;
        }
        let mut resynced = false;
        if self.ssrc.is_some_and(|s| s != info.ssrc) {
            self.restart();
            resynced = true;
        }
        self.ssrc = Some(info.ssrc);

        let ext = match self.highest {
            None => (1u64 << 32) + u64::from(info.seq),
            Some(highest) => {
                let delta = i64::from(info.seq.wrapping_sub(highest as u16) as i16);
                if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&delta) {
                    self.restart();
                    resynced = true;
                    (1u64 << 32) + u64::from(info.seq)
                } else {
                    highest.saturating_add_signed(delta)
                }
            }
        };

        if let Some(next) = self.next {
            if ext < next {
                if self.mode == Mode::Playing || self.mode == Mode::Idle {
                    return self.reject_old(ext);
                }
                // Still buffering: an earlier packet arrived after a later one.
                let newest = self.highest.unwrap_or(ext);
                if newest - ext >= self.slots.len() as u64 {
                    return self.reject_old(ext);
                }
            }
        }
        if self
            .slot(ext)
            .is_some_and(|s| s.ext_seq == ext && s.state != SlotState::Empty)
        {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }

        self.measure_jitter(info.timestamp, now);

        match self.mode {
            Mode::Idle => {
                // First packet of the stream or of a new talkspurt: buffer to the target.
                self.mode = Mode::Buffering { since: now };
                self.next = Some(ext);
                self.flush();
            }
            Mode::Buffering { .. } => {
                if self.next.is_none_or(|n| ext < n) {
                    self.next = Some(ext);
                }
            }
            Mode::Playing => {}
        }
        self.make_room_for(ext);

        let index = self.index(ext);
        let Some(slot) = self.slots.get_mut(index) else {
            return PushOutcome::Late;
        };
        let Some(dst) = slot.data.get_mut(..payload.len()) else {
            return PushOutcome::TooLarge;
        };
        dst.copy_from_slice(payload);
        // Overwriting an unplayed frame that fell out of the window.
        let overwritten = slot.state == SlotState::Filled;
        slot.len = payload.len();
        slot.state = SlotState::Filled;
        slot.ext_seq = ext;
        slot.timestamp = info.timestamp;
        slot.marker = info.marker;
        if overwritten {
            self.stats.dropped += 1;
        } else {
            self.filled += 1;
        }
        self.stats.received += 1;
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        if resynced {
            self.stats.resyncs += 1;
            PushOutcome::Resynced
        } else {
            PushOutcome::Buffered
        }
    }

    /// Next frame for the decoder; call once per frame interval.
    pub fn pop(&mut self, now: Instant) -> Playout<'_> {
        match self.mode {
            Mode::Idle => return Playout::Empty,
            Mode::Buffering { since } => {
                let buffered = self.frame_duration(self.depth());
                let waited = now.saturating_duration_since(since);
                if waited < self.target_delay()
                    && buffered < self.target_delay() + self.config.frame
                {
                    return Playout::Empty;
                }
                self.mode = Mode::Playing;
                self.underruns = 0;
                self.window_pops = 0;
                self.window_min_depth = u64::MAX;
                self.since_insert = 0;
            }
            Mode::Playing => {}
        }
        let Some(next) = self.next else {
            self.mode = Mode::Idle;
            return Playout::Empty;
        };

        if self.filled == 0 {
            // Underrun: conceal a few frames without moving on, in case the next packet
            // is merely late; then treat it as the end of a talkspurt.
            self.underruns += 1;
            if self.underruns > UNDERRUN_FRAMES {
                self.mode = Mode::Idle;
                return Playout::Empty;
            }
            self.stats.inserted += 1;
            return Playout::Missing;
        }
        self.underruns = 0;

        let depth = self.depth();
        self.window_min_depth = self.window_min_depth.min(depth);
        self.window_pops += 1;
        self.since_insert = self.since_insert.saturating_add(1);
        let target_frames = self.duration_frames(self.target_delay());

        // Grow: hold the playout position one frame when the buffer runs below target.
        if depth + 1 < target_frames && self.since_insert >= INSERT_SPACING {
            self.since_insert = 0;
            self.stats.inserted += 1;
            return Playout::Missing;
        }
        // Shrink: the buffer never went below target + 1 frame for a whole window.
        let mut next = next;
        if self.window_pops >= SHRINK_WINDOW {
            if self.window_min_depth > target_frames + 1 && depth > 1 {
                if let Some(slot) = self.slot_mut(next) {
                    if slot.ext_seq == next && slot.state == SlotState::Filled {
                        slot.state = SlotState::Played;
                        self.filled = self.filled.saturating_sub(1);
                    }
                }
                self.stats.dropped += 1;
                next += 1;
            }
            self.window_pops = 0;
            self.window_min_depth = u64::MAX;
        }

        self.next = Some(next + 1);
        let index = self.index(next);
        let Some(slot) = self.slots.get_mut(index) else {
            return Playout::Missing;
        };
        if slot.ext_seq == next && slot.state == SlotState::Filled {
            slot.state = SlotState::Played;
            self.filled = self.filled.saturating_sub(1);
            self.stats.played += 1;
            let payload = slot.data.get(..slot.len).unwrap_or(&[]);
            Playout::Frame(Frame {
                seq: next as u16,
                timestamp: slot.timestamp,
                marker: slot.marker,
                payload,
            })
        } else {
            self.stats.lost += 1;
            Playout::Missing
        }
    }

    fn reject_old(&mut self, ext: u64) -> PushOutcome {
        if self
            .slot(ext)
            .is_some_and(|s| s.ext_seq == ext && s.state != SlotState::Empty)
        {
            self.stats.duplicates += 1;
            PushOutcome::Duplicate
        } else {
            self.stats.late += 1;
            PushOutcome::Late
        }
    }

    /// RFC 3550 §A.8 interarrival jitter, in timestamp units.
    fn measure_jitter(&mut self, timestamp: u32, now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival =
            now.saturating_duration_since(epoch).as_secs_f64() * f64::from(self.config.clock_rate);
        if let Some(last_ts) = self.last_timestamp {
            let ts_delta = f64::from(timestamp.wrapping_sub(last_ts) as i32);
            let d = ((arrival - self.last_arrival) - ts_delta).abs();
            let jump = TIMESTAMP_JUMP.as_secs_f64() * f64::from(self.config.clock_rate);
            if d > jump {
                // The sender's clock jumped: restart the measurement, keep the estimate.
                self.stats.resyncs += 1;
            } else {
                self.jitter += (d - self.jitter) / 16.0;
            }
        }
        self.jitter_peak = (self.jitter_peak * PEAK_DECAY).max(self.jitter);
        self.last_arrival = arrival;
        self.last_timestamp = Some(timestamp);
    }

    /// Makes sure `ext` fits in the ring, dropping the oldest unplayed frames if the
    /// playout position has fallen too far behind.
    fn make_room_for(&mut self, ext: u64) {
        let capacity = self.slots.len() as u64;
        let Some(next) = self.next else { return };
        if ext >= next + capacity {
            let new_next = ext + 1 - capacity;
            for seq in next..new_next.min(next + capacity) {
                if let Some(slot) = self.slot_mut(seq) {
                    if slot.ext_seq == seq && slot.state == SlotState::Filled {
                        slot.state = SlotState::Played;
                        self.filled = self.filled.saturating_sub(1);
                        self.stats.dropped += 1;
                    }
                }
            }
            self.next = Some(new_next);
        }
    }

    /// Forgets the stream: new SSRC or a sequence discontinuity.
    fn restart(&mut self) {
        self.flush();
        self.mode = Mode::Idle;
        self.next = None;
        self.highest = None;
        self.last_timestamp = None;
    }

    /// Drops every stored frame.
    fn flush(&mut self) {
        for slot in self.slots.iter_mut() {
            if slot.state == SlotState::Filled {
                self.stats.dropped += 1;
            }
            slot.state = SlotState::Empty;
        }
        self.filled = 0;
    }

    /// Frames from the next to play to the newest stored, inclusive.
    fn depth(&self) -> u64 {
        match (self.next, self.highest) {
            (Some(next), Some(highest)) if self.filled > 0 && highest >= next => highest - next + 1,
            _ => 0,
        }
    }

    fn index(&self, ext: u64) -> usize {
        (ext % self.slots.len() as u64) as usize
    }

    fn slot(&self, ext: u64) -> Option<&Slot> {
        self.slots.get(self.index(ext))
    }

    fn slot_mut(&mut self, ext: u64) -> Option<&mut Slot> {
        let i = self.index(ext);
        self.slots.get_mut(i)
    }

    fn frame_duration(&self, frames: u64) -> Duration {
        self.config
            .frame
            .saturating_mul(u32::try_from(frames).unwrap_or(u32::MAX))
    }

    fn duration_frames(&self, d: Duration) -> u64 {
        let frame = self.config.frame.as_micros().max(1);
        (d.as_micros().div_ceil(frame)) as u64
    }

    fn units_to_duration(&self, units: f64) -> Duration {
        let seconds = units / f64::from(self.config.clock_rate.max(1));
        if !seconds.is_finite() {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(seconds.clamp(0.0, 3600.0))
    }
}
