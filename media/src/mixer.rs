//! Conference mixer: N participants in, N "everyone but me" mixes out, one 20 ms frame at a time.
//!
//! Sits after decode and before encode in the media path of a room:
//! `decode → Mixer::push → Mixer::mix → Mixer::output_for → encode`. It is the mixer of the
//! `local` room backend and the place where room audio is mixed down for a caller.
//!
//! Each frame the mixer picks at most `max_speakers` loudest participants (default 4), the way
//! MCUs bound their cost (RFC 7667 §3.6, "Point to Multipoint Using Mixer"), sums only those
//! into an `i32` total, and gives each selected speaker `total − own` so nobody hears their own
//! voice; everyone else hears the total. The cost per frame is therefore one energy pass over
//! every input plus `max_speakers + 1` mixes, flat however large the room grows.
//!
//! Selection has hysteresis so that two speakers at about the same level do not flap in and out
//! (which is audible as chopped syllables): a challenger replaces the quietest selected speaker
//! only after being clearly louder (`SWITCH_MARGIN`) for `SWITCH_HOLD_FRAMES` frames in a row.
//!
//! Steady state allocates nothing: every buffer is sized when a participant is added.

use std::collections::HashMap;

use thiserror::Error;

/// How many speakers are mixed at most when not configured otherwise. Four simultaneous talkers
/// is already past what a listener can follow; more only adds noise and cost.
pub const DEFAULT_MAX_SPEAKERS: usize = 4;

/// A challenger must be this many times more energetic than the quietest selected speaker
/// (2× energy ≈ 3 dB) to count a frame towards replacing it.
const SWITCH_MARGIN: u64 = 2;

/// Frames in a row (5 × 20 ms = 100 ms) a challenger must stay clearly louder before it takes
/// the place of a selected speaker: long enough to ride over a syllable, short enough that a
/// new talker is heard from their first word.
const SWITCH_HOLD_FRAMES: u32 = 5;

/// Mean energy per sample below which a participant is treated as silent and never takes a
/// free speaker slot. 16² ≈ −66 dBFS: under the noise floor of any phone line.
const SILENCE_MEAN_ENERGY: u64 = 16 * 16;

/// A participant of one mixer, chosen by the caller of the mixer (a call, a room track).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u32);

/// What can go wrong when driving the mixer.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MixerError {
    #[error("participant {0:?} is already in the mixer")]
    AlreadyPresent(ParticipantId),
    #[error("participant {0:?} is not in the mixer")]
    UnknownParticipant(ParticipantId),
    #[error("frame has {got} samples, the mixer's frame is {expected}")]
    FrameLength { expected: usize, got: usize },
}

/// One participant's buffers and selection state.
#[derive(Debug)]
struct Slot {
    id: ParticipantId,
    /// The frame pushed for the coming `mix`, valid when `has_input`.
    input: Vec<i16>,
    has_input: bool,
    /// Energy of the input frame (sum of squares) used this frame.
    frame_energy: u64,
    /// Peak-hold energy with a slow decay, so that the short pauses between words do not
    /// drop a talker.
    level: u64,
    selected: bool,
    /// Consecutive frames this (unselected) participant has been clearly louder than a
    /// selected speaker.
    challenge_frames: u32,
    /// `total − own` for a selected speaker; unused (stale) otherwise.
    output: Vec<i16>,
}

/// Mixes a room's participants, one frame at a time.
#[derive(Debug)]
pub struct Mixer {
    frame_len: usize,
    max_speakers: usize,
    slots: Vec<Slot>,
    index: HashMap<ParticipantId, usize>,
    total: Vec<i32>,
    /// What every participant who is not a selected speaker hears.
    everyone: Vec<i16>,
    /// Scratch lists of slot indices for the selection, capacity kept across frames.
    challengers: Vec<usize>,
    incumbents: Vec<usize>,
}

impl Mixer {
    /// A mixer of frames of `frame_len` samples (160 for 20 ms at 8 kHz, 320 at 16 kHz) that
    /// mixes at most [`DEFAULT_MAX_SPEAKERS`] speakers.
    pub fn new(frame_len: usize) -> Self {
        Self::with_max_speakers(frame_len, DEFAULT_MAX_SPEAKERS)
    }

    /// A mixer that mixes at most `max_speakers` speakers (at least one).
    pub fn with_max_speakers(frame_len: usize, max_speakers: usize) -> Self {
        Self {
            frame_len,
            max_speakers: max_speakers.max(1),
            slots: Vec::new(),
            index: HashMap::new(),
            total: vec![0; frame_len],
            everyone: vec![0; frame_len],
            challengers: Vec::new(),
            incumbents: Vec::new(),
        }
    }

    /// Samples per frame.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the mixer has no participants.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds a participant; they hear silence until others speak. Allocates their buffers.
    pub fn add(&mut self, id: ParticipantId) -> Result<(), MixerError> {
        if self.index.contains_key(&id) {
            return Err(MixerError::AlreadyPresent(id));
        }
        self.index.insert(id, self.slots.len());
        self.slots.push(Slot {
            id,
            input: vec![0; self.frame_len],
            has_input: false,
            frame_energy: 0,
            level: 0,
            selected: false,
            challenge_frames: 0,
            output: vec![0; self.frame_len],
        });
        self.challengers.reserve(self.slots.len());
        self.incumbents.reserve(self.slots.len());
        Ok(())
    }

    /// Removes a participant; their speaker slot, if any, frees up for the next frame.
    pub fn remove(&mut self, id: ParticipantId) -> Result<(), MixerError> {
        let at = self
            .index
            .remove(&id)
            .ok_or(MixerError::UnknownParticipant(id))?;
        self.slots.swap_remove(at);
        if let Some(moved) = self.slots.get(at) {
            self.index.insert(moved.id, at);
        }
        Ok(())
    }

    /// Whether `id` is in the mixer.
    pub fn contains(&self, id: ParticipantId) -> bool {
        self.index.contains_key(&id)
    }

    /// Hands in `id`'s frame for the next [`mix`](Self::mix). A participant who pushed nothing
    /// since the last mix (lost packet, muted, not yet started) counts as silent.
    pub fn push(&mut self, id: ParticipantId, frame: &[i16]) -> Result<(), MixerError> {
        if frame.len() != self.frame_len {
            return Err(MixerError::FrameLength {
                expected: self.frame_len,
                got: frame.len(),
            });
        }
        let at = *self
            .index
            .get(&id)
            .ok_or(MixerError::UnknownParticipant(id))?;
        let slot = self
            .slots
            .get_mut(at)
            .ok_or(MixerError::UnknownParticipant(id))?;
        slot.input.copy_from_slice(frame);
        slot.has_input = true;
        Ok(())
    }

    /// Mixes the frames pushed since the last call; afterwards [`output_for`](Self::output_for)
    /// gives each participant's mix until the next call.
    pub fn mix(&mut self) {
        for slot in &mut self.slots {
            slot.frame_energy = if slot.has_input {
                energy(&slot.input)
            } else {
                0
            };
            // Peak hold, decaying by 1/4 per frame (≈ −1.25 dB per 20 ms): rides over the
            // gaps between words, yet a talker who stopped is 15 dB down within 250 ms and
            // yields the seat to someone who started.
            slot.level = slot.frame_energy.max(slot.level - slot.level / 4);
        }
        self.select_speakers();

        self.total.fill(0);
        for slot in self.slots.iter().filter(|s| s.selected && s.has_input) {
            for (t, &x) in self.total.iter_mut().zip(&slot.input) {
                *t += i32::from(x);
            }
        }
        for (e, &t) in self.everyone.iter_mut().zip(&self.total) {
            *e = saturate(t);
        }
        for slot in self.slots.iter_mut().filter(|s| s.selected) {
            if slot.has_input {
                for ((o, &t), &own) in slot.output.iter_mut().zip(&self.total).zip(&slot.input) {
                    *o = saturate(t - i32::from(own));
                }
            } else {
                slot.output.copy_from_slice(&self.everyone);
            }
        }
        for slot in &mut self.slots {
            slot.has_input = false;
        }
    }

    /// What `id` hears for the last mixed frame: everyone selected but themselves.
    pub fn output_for(&self, id: ParticipantId) -> Option<&[i16]> {
        let slot = self.slots.get(*self.index.get(&id)?)?;
        Some(if slot.selected {
            &slot.output
        } else {
            &self.everyone
        })
    }

    /// Whether `id` is one of the speakers mixed in the last frame.
    pub fn is_speaker(&self, id: ParticipantId) -> bool {
        self.index
            .get(&id)
            .and_then(|&at| self.slots.get(at))
            .is_some_and(|s| s.selected)
    }

    /// The speakers mixed in the last frame, in no particular order.
    pub fn speakers(&self) -> impl Iterator<Item = ParticipantId> + '_ {
        self.slots.iter().filter(|s| s.selected).map(|s| s.id)
    }

    /// Chooses the speakers for this frame.
    ///
    /// Free slots go straight to the loudest non-silent participants. When all slots are taken,
    /// the i-th loudest challenger is compared with the i-th quietest incumbent; a challenger
    /// that has been `SWITCH_MARGIN` times louder for `SWITCH_HOLD_FRAMES` frames takes the seat.
    fn select_speakers(&mut self) {
        let silence = SILENCE_MEAN_ENERGY.saturating_mul(self.frame_len as u64);
        self.challengers.clear();
        self.incumbents.clear();
        for (at, slot) in self.slots.iter().enumerate() {
            if slot.selected {
                self.incumbents.push(at);
            } else {
                self.challengers.push(at);
            }
        }
        let slots = &mut self.slots;
        let level = |slots: &[Slot], at: usize| slots.get(at).map_or(0, |s| s.level);
        self.challengers
            .sort_unstable_by_key(|&at| std::cmp::Reverse(level(slots, at)));
        self.incumbents.sort_unstable_by_key(|&at| level(slots, at));

        let free = self.max_speakers.saturating_sub(self.incumbents.len());
        let mut rest = self.challengers.as_slice();
        for _ in 0..free {
            let Some((&at, tail)) = rest.split_first() else {
                break;
            };
            let Some(slot) = slots.get_mut(at) else { break };
            if slot.level <= silence {
                break;
            }
            slot.selected = true;
            slot.challenge_frames = 0;
            rest = tail;
        }

        let mut seats = self.incumbents.iter();
        for &at in rest {
            let challenger = level(slots, at);
            let seat = seats.next().copied();
            let wins = seat.is_some_and(|seat| {
                challenger > silence
                    && challenger > level(slots, seat).saturating_mul(SWITCH_MARGIN)
            });
            let Some(slot) = slots.get_mut(at) else {
                continue;
            };
            if !wins {
                slot.challenge_frames = 0;
                continue;
            }
            slot.challenge_frames += 1;
            if slot.challenge_frames < SWITCH_HOLD_FRAMES {
                continue;
            }
            slot.challenge_frames = 0;
            slot.selected = true;
            if let Some(loser) = seat.and_then(|seat| slots.get_mut(seat)) {
                loser.selected = false;
                loser.challenge_frames = 0;
            }
        }
    }
}

/// Sum of squares of a frame. Cannot overflow: each square is at most 2³⁰, so a `u64` holds
/// 2³⁴ of them, far beyond the 960 samples of 20 ms at 48 kHz.
fn energy(frame: &[i16]) -> u64 {
    frame
        .iter()
        .map(|&x| (i64::from(x) * i64::from(x)) as u64)
        .sum()
}

/// Clamps a mixed sample to the i16 range: clipping is audible but wrapping is a loud crack.
fn saturate(x: i32) -> i16 {
    x.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_of_full_scale_frame_does_not_overflow() {
        let frame = vec![i16::MIN; 960];
        assert_eq!(energy(&frame), 960 * 32768 * 32768);
    }

    #[test]
    fn saturate_clamps_both_ends() {
        assert_eq!(saturate(40_000), i16::MAX);
        assert_eq!(saturate(-40_000), i16::MIN);
        assert_eq!(saturate(-5), -5);
    }
}
