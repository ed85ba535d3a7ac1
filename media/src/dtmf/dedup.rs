//! One key press, one digit: merges the digits reported by RFC 4733, in-band detection
//! and SIP INFO.
//!
//! Sits between the three digit sources and the IVR's PIN collector (DESIGN.md, call flow
//! step 3). Many gateways send a press both as `telephone-event` packets and as tones
//! left in the audio, and some also as SIP INFO, so the same press reaches us up to three
//! times, from different sources, a little apart in time.
//!
//! Rule: a report is a duplicate when a press of the same digit was accepted less than
//! the window ago **from another source** and that source has not yet been matched to
//! it. Each source already reports a press exactly once (the RFC 4733 receiver absorbs
//! repeated packets, the in-band state machine needs a pause between tones, SIP
//! transactions absorb retransmitted INFOs), so two reports from the *same* source are
//! always two presses, however close: a quick double press of `5` counts twice.
//!
//! Window: [`DEFAULT_WINDOW`] = 250 ms. The slowest path is in-band detection, which runs
//! on audio after the jitter buffer: up to 200 ms of buffering (the jitter buffer's
//! ceiling) plus about 40 ms for the detector to confirm a tone, while `telephone-event`
//! packets are handled on arrival. 250 ms covers that skew. A longer window costs nothing
//! for repeated presses (they come from the same source) and would only merge a press
//! that one source missed entirely with the next press of the same digit from the other.

use std::time::{Duration, Instant};

use super::Digit;

/// See the module documentation for how this value was chosen.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(250);

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigitSource {
    /// RFC 4733 `telephone-event` RTP packets.
    Rfc4733,
    /// Tones in the audio, found by the Goertzel detector.
    Inband,
    /// SIP INFO (`application/dtmf-relay` or `application/dtmf`).
    SipInfo,
}

impl DigitSource {
    fn bit(self) -> u8 {
        match self {
            DigitSource::Rfc4733 => 1,
            DigitSource::Inband => 2,
            DigitSource::SipInfo => 4,
        }
    }
}

/// Recent accepted presses kept for matching; three sources and a 250 ms window never
/// need more than a handful.
const HISTORY: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Press {
    digit: Digit,
    at: Instant,
    sources: u8,
}

/// Merges reports from several sources into one digit per press.
#[derive(Debug, Clone)]
pub struct DigitDeduplicator {
    window: Duration,
    history: [Option<Press>; HISTORY],
    next: usize,
}

impl Default for DigitDeduplicator {
    fn default() -> Self {
        DigitDeduplicator::new(DEFAULT_WINDOW)
    }
}

impl DigitDeduplicator {
    pub fn new(window: Duration) -> DigitDeduplicator {
        DigitDeduplicator {
            window,
            history: [None; HISTORY],
            next: 0,
        }
    }

    /// Reports a digit from `source` at `now`. Returns `true` when it is a new press that
    /// the IVR should act on, `false` when it repeats a press another source already
    /// reported.
    pub fn accept(&mut self, digit: Digit, source: DigitSource, now: Instant) -> bool {
        let window = self.window;
        // Match the oldest unmatched press so that, with several presses in flight, each
        // report pairs with the press it belongs to.
        let matched = self
            .history
            .iter_mut()
            .flatten()
            .filter(|p| {
                p.digit == digit
                    && p.sources & source.bit() == 0
                    && now.saturating_duration_since(p.at) <= window
            })
            .min_by_key(|p| p.at);
        if let Some(press) = matched {
            press.sources |= source.bit();
            return false;
        }
        if let Some(slot) = self.history.get_mut(self.next) {
            *slot = Some(Press {
                digit,
                at: now,
                sources: source.bit(),
            });
        }
        self.next = (self.next + 1) % HISTORY;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_press_reported_by_three_sources_counts_once() {
        let t0 = Instant::now();
        let mut d = DigitDeduplicator::default();
        assert!(d.accept(Digit::D3, DigitSource::Rfc4733, t0));
        assert!(!d.accept(Digit::D3, DigitSource::Inband, ms(t0, 60)));
        assert!(!d.accept(Digit::D3, DigitSource::SipInfo, ms(t0, 180)));
    }

    #[test]
    fn two_presses_of_the_same_digit_from_one_source_count_twice() {
        let t0 = Instant::now();
        let mut d = DigitDeduplicator::default();
        assert!(d.accept(Digit::D5, DigitSource::Rfc4733, t0));
        assert!(d.accept(Digit::D5, DigitSource::Rfc4733, ms(t0, 90)));
    }

    #[test]
    fn double_press_reported_by_two_sources_counts_twice() {
        let t0 = Instant::now();
        let mut d = DigitDeduplicator::default();
        let mut accepted = 0;
        // Press 1 at 0 ms and press 2 at 100 ms; in-band lags each by 70 ms.
        for (src, at) in [
            (DigitSource::Rfc4733, 0),
            (DigitSource::Inband, 70),
            (DigitSource::Rfc4733, 100),
            (DigitSource::Inband, 170),
        ] {
            accepted += usize::from(d.accept(Digit::D9, src, ms(t0, at)));
        }
        assert_eq!(accepted, 2);
    }

    #[test]
    fn lagging_source_matches_the_right_press_when_digits_interleave() {
        let t0 = Instant::now();
        let mut d = DigitDeduplicator::default();
        assert!(d.accept(Digit::D1, DigitSource::Rfc4733, t0));
        assert!(d.accept(Digit::D2, DigitSource::Rfc4733, ms(t0, 100)));
        assert!(!d.accept(Digit::D1, DigitSource::Inband, ms(t0, 130)));
        assert!(!d.accept(Digit::D2, DigitSource::Inband, ms(t0, 230)));
    }

    #[test]
    fn a_report_outside_the_window_is_a_new_press() {
        let t0 = Instant::now();
        let mut d = DigitDeduplicator::default();
        assert!(d.accept(Digit::Pound, DigitSource::SipInfo, t0));
        assert!(d.accept(Digit::Pound, DigitSource::Inband, ms(t0, 400)));
    }
}
