//! The process-wide 20 ms media tick grid.
//!
//! Every call task and every LiveKit session does its per-frame work on a 20 ms timer. Left
//! to start whenever each call did, those timers spread over the whole period, and the
//! runtime wakes (a thread switch, a futex, an epoll round) for nearly each of them. Put on
//! one grid, all the ticks of a period fall on the same instant and the runtime serves them
//! in one wake-up. In a load run of 50 bridged calls the thread switching this saves was
//! about a fifth of the gateway's CPU (README, Performance).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The media tick: one 20 ms frame (RFC 3551 §4.5 default packetisation).
pub const TICK: Duration = Duration::from_millis(20);

/// The grid's origin: the first time anyone asked.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The first grid instant at or after `at`.
pub fn next_tick(at: Instant) -> Instant {
    let epoch = epoch();
    let since = at.saturating_duration_since(epoch);
    let tick = TICK.as_nanos();
    let periods = since.as_nanos().div_ceil(tick);
    epoch + Duration::from_nanos(u64::try_from(periods * tick).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_one_grid_whenever_they_are_asked_for() {
        let now = Instant::now();
        let a = next_tick(now);
        let b = next_tick(now + Duration::from_millis(7));
        let c = next_tick(now + Duration::from_millis(33));
        assert!(a >= now && a < now + TICK);
        for t in [b, c] {
            let offset = t.duration_since(a).as_nanos() % TICK.as_nanos();
            assert_eq!(offset, 0, "on the grid");
        }
        assert_eq!(next_tick(a), a, "a grid instant is its own next tick");
    }
}
