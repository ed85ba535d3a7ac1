//! Voice prompts: the catalog of what callers hear in the IVR, and the player that feeds it to
//! a call leg in 20 ms frames.
//!
//! At start-up the gateway loads one [`PromptCatalog`] per configured language: the prompts
//! shipped in the binary (generated with espeak-ng, see `media/prompts/README.md`), each
//! optionally replaced by a WAV file of the same name in an operator's directory. Every prompt
//! is resampled once to 8 kHz and 16 kHz and kept in shared, immutable buffers, so thousands
//! of calls play from one copy. Per call, a [`PromptPlayer`] queues prompts and hands out
//! frames to the encoder (`player.next_frame → encode → RTP`); a digit typed during a prompt
//! calls [`PromptPlayer::interrupt`] (barge-in, DESIGN "Call flow" step 3). In the room, keypad
//! controls answer with a [`ClipList`] (prompts, composed number words, keys, chimes) that
//! [`PromptPlayer::play_clips`] queues without allocating.

mod catalog;
mod clip;
mod player;
mod resample;
pub mod wav;

use std::time::Duration;

pub use catalog::{Language, Prompt, PromptCatalog, PromptError, PromptId, UnknownLanguage};
pub use clip::{count_speech, key_speech, number_speech, Clip, ClipList, NumberWord};
pub use player::PromptPlayer;

/// Length of one media frame: 20 ms, the packetisation of every codec the gateway uses
/// (RFC 3551 §4.2 default for G.711 and G.722; RFC 7587 recommends 20 ms for Opus).
pub const FRAME_DURATION: Duration = Duration::from_millis(20);

/// Sample rates a call leg or a room runs at: narrowband (G.711) or wideband (G.722, and Opus
/// as the gateway encodes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleRate {
    Hz8000,
    Hz16000,
}

impl SampleRate {
    /// Samples per second.
    pub const fn hz(self) -> u32 {
        match self {
            SampleRate::Hz8000 => 8_000,
            SampleRate::Hz16000 => 16_000,
        }
    }

    /// Samples in one 20 ms frame: 160 or 320.
    pub const fn frame_len(self) -> usize {
        (self.hz() / 50) as usize
    }
}
