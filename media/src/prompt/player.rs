//! Per-call prompt player: a queue of shared sample buffers played out in 20 ms frames.
//!
//! Sits on the outbound side of a call leg during the IVR (DESIGN "Call flow" step 3) and
//! whenever the gateway speaks to the caller: `next_frame → encode → RTP`. It is sans-IO: the
//! call's media driver asks for a frame every 20 ms of its own clock. Barge-in (a digit while
//! a prompt plays) is [`PromptPlayer::interrupt`], which silences the very next frame.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{ClipList, Prompt, PromptCatalog, SampleRate};

/// Queue depth reserved up front so that IVR sequences ("invalid PIN" then "welcome") and
/// in-room clip lists (the help listing: four phrases, each followed by "star" and a digit)
/// never allocate while a call runs. Holds any one [`ClipList`] and then some.
const QUEUE_CAPACITY: usize = 32;

#[derive(Debug, Clone)]
struct Item {
    samples: Arc<[i16]>,
    looping: bool,
}

/// Plays queued prompts to one call leg at one sample rate.
#[derive(Debug)]
pub struct PromptPlayer {
    rate: SampleRate,
    queue: VecDeque<Item>,
    /// Position in the item at the head of the queue.
    position: usize,
}

impl PromptPlayer {
    pub fn new(rate: SampleRate) -> Self {
        Self {
            rate,
            queue: VecDeque::with_capacity(QUEUE_CAPACITY),
            position: 0,
        }
    }

    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// Queues `prompt` at the player's rate, after whatever is already queued.
    pub fn play(&mut self, prompt: &Prompt) {
        self.play_samples(Arc::clone(prompt.samples(self.rate)));
    }

    /// Queues every clip of `clips`, back to back, after whatever is already queued. A clip
    /// the catalog cannot resolve (a number word its language does not use) is skipped. Shares
    /// the catalog's samples: nothing is copied, and nothing allocated while the queue stays
    /// within its reserved depth.
    pub fn play_clips(&mut self, catalog: &PromptCatalog, clips: &ClipList) {
        for clip in clips {
            if let Some(samples) = catalog.clip(clip, self.rate) {
                self.play_samples(Arc::clone(samples));
            }
        }
    }

    /// Queues raw samples at the player's rate. Empty buffers are ignored.
    pub fn play_samples(&mut self, samples: Arc<[i16]>) {
        if !samples.is_empty() {
            self.queue.push_back(Item {
                samples,
                looping: false,
            });
        }
    }

    /// Queues samples that repeat until [`interrupt`](Self::interrupt) (hold music). Anything
    /// queued after a loop never plays. Empty buffers are ignored.
    pub fn play_looped(&mut self, samples: Arc<[i16]>) {
        if !samples.is_empty() {
            self.queue.push_back(Item {
                samples,
                looping: true,
            });
        }
    }

    /// Stops at once and forgets the queue (barge-in, or the call moves on).
    pub fn interrupt(&mut self) {
        self.queue.clear();
        self.position = 0;
    }

    /// Whether anything remains to play.
    pub fn is_playing(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Fills `frame` with the next samples, going straight from one queued item to the next,
    /// and with silence once the queue runs out. Returns whether any queued audio was written.
    pub fn next_frame(&mut self, frame: &mut [i16]) -> bool {
        let mut written = 0;
        while written < frame.len() {
            let Some(item) = self.queue.front() else {
                break;
            };
            let rest = item.samples.get(self.position..).unwrap_or_default();
            let n = rest.len().min(frame.len() - written);
            if let (Some(dst), Some(src)) = (frame.get_mut(written..written + n), rest.get(..n)) {
                dst.copy_from_slice(src);
            }
            written += n;
            self.position += n;
            if self.position >= item.samples.len() {
                self.position = 0;
                if !item.looping {
                    self.queue.pop_front();
                }
            }
        }
        if let Some(tail) = frame.get_mut(written..) {
            tail.fill(0);
        }
        written > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_item_starts_within_the_same_frame() {
        let mut player = PromptPlayer::new(SampleRate::Hz8000);
        player.play_samples(Arc::from(vec![1i16; 100]));
        player.play_samples(Arc::from(vec![2i16; 100]));
        let mut frame = [0i16; 160];
        assert!(player.next_frame(&mut frame));
        assert!(frame[..100].iter().all(|&s| s == 1));
        assert!(frame[100..].iter().all(|&s| s == 2));
        assert!(player.next_frame(&mut frame));
        assert!(frame[..40].iter().all(|&s| s == 2));
        assert!(frame[40..].iter().all(|&s| s == 0));
        assert!(!player.is_playing());
        assert!(!player.next_frame(&mut frame));
    }

    #[test]
    fn short_loop_fills_whole_frames() {
        let mut player = PromptPlayer::new(SampleRate::Hz8000);
        player.play_looped(Arc::from(vec![1i16, 2, 3]));
        let mut frame = [0i16; 160];
        for _ in 0..3 {
            assert!(player.next_frame(&mut frame));
            assert!(!frame.contains(&0));
        }
        assert!(player.is_playing());
    }
}
