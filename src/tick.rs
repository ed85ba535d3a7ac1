//! The process-wide 20 ms media tick grid.
//!
//! Every call task, LiveKit session and local room does its per-frame work on a 20 ms timer.
//! Left to start whenever each call did, those timers spread over the whole period, and the
//! runtime wakes (a thread switch, a futex, an epoll round) for nearly each of them. On a
//! grid, the ticks fall on a few instants and the runtime serves each instant's ticks in one
//! wake-up. The grid has [`PHASES`] instants per period, handed out in turn: all ticks on one
//! instant would make the last served of a large batch late by the whole batch's work (at
//! 160 bridged calls on 2 cores, a tenth of the ticks over 10 ms, which admission control
//! rightly reads as overload), while a few phases keep each batch short and still save most
//! of the wake-ups (README, Performance).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The media tick: one 20 ms frame (RFC 3551 §4.5 default packetisation).
pub const TICK: Duration = Duration::from_millis(20);

/// The grid's origin: the first time anyone asked.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Instants per tick period on the grid.
pub const PHASES: u32 = 2;

/// The first instant at or after `at` of the next phase in turn: a new timer's first tick.
pub fn next_tick(at: Instant) -> Instant {
    static TURN: AtomicU32 = AtomicU32::new(0);
    let phase = TURN.fetch_add(1, Ordering::Relaxed) % PHASES;
    tick_of_phase(at, phase)
}

/// The first instant of `phase` at or after `at`.
fn tick_of_phase(at: Instant, phase: u32) -> Instant {
    let origin = epoch() + TICK / PHASES * phase;
    let tick = TICK.as_nanos();
    let since = at.saturating_duration_since(origin).as_nanos();
    let periods = since.div_ceil(tick);
    origin + Duration::from_nanos(u64::try_from(periods * tick).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_the_phases_of_one_grid() {
        let now = Instant::now();
        let step = (TICK / PHASES).as_nanos();
        let mut phases = std::collections::BTreeSet::new();
        for i in 0..(2 * PHASES) {
            let t = next_tick(now + Duration::from_millis(u64::from(i) * 7));
            assert!(t >= now);
            let offset = t.duration_since(epoch()).as_nanos();
            assert_eq!(offset % step, 0, "on the grid");
            phases.insert((offset / step) % u128::from(PHASES));
        }
        assert_eq!(phases.len(), PHASES as usize, "every phase handed out");
        for phase in 0..PHASES {
            let t = tick_of_phase(now, phase);
            assert!(t >= now && t < now + TICK);
            assert_eq!(tick_of_phase(t, phase), t, "a grid instant is its own tick");
        }
    }
}
