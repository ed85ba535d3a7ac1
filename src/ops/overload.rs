//! Admission control from the health of the media loops (DESIGN.md §Call flow step 1:
//! "over a limit → `503 Service Unavailable` with `Retry-After`").
//!
//! Concurrent-call limits are a guess at capacity made in advance; what callers actually
//! hear is whether each call's 20 ms media tick runs on time. Every call task reports how
//! late its tick fired ([`OverloadMonitor::record_tick`]); when too many ticks over the
//! last second were later than [`LATE_TICK`], the node is overloaded and the SIP front
//! refuses new INVITEs with `503` + `Retry-After` (RFC 3261 §21.5.4) until the ticks are
//! back on time. A frame more than 10 ms late is half a packet time behind: the caller's
//! jitter buffer starts to run dry and the room hears gaps. Calls already up are never
//! touched: refusing new work is what lets them recover.
//!
//! The monitor is lock-free (a ring of ten 100 ms slots of atomic counters), since every
//! call writes to it every 20 ms from whichever worker thread runs it. It is sans-IO: the
//! caller passes `now`, so tests drive it with simulated time. Hysteresis (enter above
//! [`ENTER_LATE_FRACTION`], leave at or below [`LEAVE_LATE_FRACTION`]) keeps it from
//! flapping at the boundary.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A tick later than this is late: half of the 20 ms packet time (RFC 3551 §4.5).
pub const LATE_TICK: Duration = Duration::from_millis(10);
/// Overloaded when more than this share of the last second's ticks were late (the 90th
/// percentile of tick lateness is over [`LATE_TICK`]).
pub const ENTER_LATE_FRACTION: f64 = 0.10;
/// Back to normal when at most this share of the last second's ticks were late.
pub const LEAVE_LATE_FRACTION: f64 = 0.02;
/// Ticks needed in the window before judging: five calls' worth (50 ticks/s each). A node
/// with fewer calls is not loaded by its calls; if its ticks run late, something else on
/// the machine is to blame and refusing calls would not help.
pub const MIN_TICKS: u32 = 250;

/// A task of the runtime that could not run for this long, while calls are up, is proof of a
/// starved node even when no late tick made it into the window yet: a process given a few
/// milliseconds of CPU every second or two records its late ticks in bursts that the
/// one-second window can miss entirely.
pub const STALL: Duration = Duration::from_millis(500);

/// Media ticks per call per second (one per 20 ms).
const TICKS_PER_CALL: u32 = 50;
/// A starved process records few ticks (each late); this many are enough to judge when
/// the calls in progress should have produced [`MIN_TICKS`].
const MIN_SAMPLE: u32 = 10;

/// Width of one slot of the window.
const SLOT: Duration = Duration::from_millis(100);
/// Slots in the window: 10 × 100 ms = the last second.
const SLOTS: usize = 10;

#[derive(Debug, Default)]
struct Slot {
    /// Which 100 ms period (since `origin`) the counters belong to.
    period: AtomicU64,
    ticks: AtomicU32,
    late: AtomicU32,
}

/// Tick counts over the last second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickLoad {
    pub ticks: u32,
    pub late: u32,
}

impl TickLoad {
    /// Share of late ticks, 0 when there were none.
    pub fn late_fraction(&self) -> f64 {
        if self.ticks == 0 {
            0.0
        } else {
            f64::from(self.late) / f64::from(self.ticks)
        }
    }
}

/// Shared by every call task (`Arc<OverloadMonitor>` in [`crate::serve::Services`]).
#[derive(Debug)]
pub struct OverloadMonitor {
    origin: Instant,
    slots: [Slot; SLOTS],
    overloaded: AtomicBool,
}

impl OverloadMonitor {
    pub fn new(origin: Instant) -> OverloadMonitor {
        OverloadMonitor {
            origin,
            slots: Default::default(),
            overloaded: AtomicBool::new(false),
        }
    }

    fn period(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_millis();
        u64::try_from(since / SLOT.as_millis()).unwrap_or(u64::MAX)
    }

    fn slot(&self, period: u64) -> Option<&Slot> {
        self.slots
            .get(usize::try_from(period % SLOTS as u64).unwrap_or(0))
    }

    /// A call's media tick fired `lateness` after its scheduled time. Hot path: three
    /// relaxed atomic operations, no allocation, no lock.
    pub fn record_tick(&self, lateness: Duration, now: Instant) {
        let period = self.period(now);
        let Some(slot) = self.slot(period) else {
            return;
        };
        let seen = slot.period.load(Ordering::Acquire);
        if seen != period
            && slot
                .period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This slot last held a period a second or more ago: start it afresh. A tick
            // counted by another thread between the exchange and these stores is lost,
            // which an estimate over thousands of ticks can afford.
            slot.ticks.store(0, Ordering::Relaxed);
            slot.late.store(0, Ordering::Relaxed);
        }
        slot.ticks.fetch_add(1, Ordering::Relaxed);
        if lateness > LATE_TICK {
            slot.late.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ticks counted over the second up to `now`.
    pub fn load(&self, now: Instant) -> TickLoad {
        let current = self.period(now);
        let oldest = current.saturating_sub(SLOTS as u64 - 1);
        let mut load = TickLoad::default();
        for slot in &self.slots {
            let p = slot.period.load(Ordering::Acquire);
            if (oldest..=current).contains(&p) {
                load.ticks = load
                    .ticks
                    .saturating_add(slot.ticks.load(Ordering::Relaxed));
                load.late = load.late.saturating_add(slot.late.load(Ordering::Relaxed));
            }
        }
        load
    }

    /// Judges the last second, with `calls` calls in progress, and returns whether the
    /// node is overloaded now; new calls must be refused while it is. A node starved of CPU
    /// for whole seconds records few ticks, all late: when the calls in progress should
    /// have produced [`MIN_TICKS`], a small sample is enough to judge.
    pub fn check(&self, now: Instant, calls: usize) -> bool {
        let load = self.load(now);
        let was = self.overloaded.load(Ordering::Acquire);
        let fraction = load.late_fraction();
        let expected = u32::try_from(calls)
            .unwrap_or(u32::MAX)
            .saturating_mul(TICKS_PER_CALL);
        let enough = load.ticks >= MIN_TICKS || (expected >= MIN_TICKS && load.ticks >= MIN_SAMPLE);
        let is = if !enough {
            // Too few ticks to judge. With calls in progress that should have ticked, the
            // silence is no evidence of recovery: a process starved for whole seconds
            // records nothing at all between its bursts of late ticks, so keep the verdict.
            // With few calls, the node is not loaded by its calls.
            was && expected >= MIN_TICKS
        } else if was {
            fraction > LEAVE_LATE_FRACTION
        } else {
            fraction > ENTER_LATE_FRACTION
        };
        if is != was {
            self.overloaded.store(is, Ordering::Release);
        }
        is
    }

    /// A task of the node (the overload watcher) woke `stall` after it was due, with `calls`
    /// calls in progress. A stall of [`STALL`] or more with enough calls to judge
    /// ([`MIN_TICKS`] ticks a second) puts the node in overload; [`OverloadMonitor::check`]
    /// then keeps it there until the calls' ticks are back on time. Returns the state.
    pub fn record_stall(&self, stall: Duration, calls: usize) -> bool {
        let expected = u32::try_from(calls)
            .unwrap_or(u32::MAX)
            .saturating_mul(TICKS_PER_CALL);
        if stall >= STALL && expected >= MIN_TICKS {
            self.overloaded.store(true, Ordering::Release);
        }
        self.is_overloaded()
    }

    /// The state the last [`OverloadMonitor::check`] found.
    pub fn is_overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON_TIME: Duration = Duration::from_millis(1);
    const LATE: Duration = Duration::from_millis(25);

    /// `calls` calls tick every 20 ms for `d`, `late_every`-th tick of each late (0: none).
    fn run(
        m: &OverloadMonitor,
        start: Instant,
        d: Duration,
        calls: u32,
        late_every: u32,
    ) -> Instant {
        let mut t = start;
        let mut n = 0u32;
        while t < start + d {
            for _ in 0..calls {
                n += 1;
                let lateness = if late_every > 0 && n % late_every == 0 {
                    LATE
                } else {
                    ON_TIME
                };
                m.record_tick(lateness, t);
            }
            t += Duration::from_millis(20);
        }
        t
    }

    #[test]
    fn ticks_on_time_never_overload() {
        let t0 = Instant::now();
        let m = OverloadMonitor::new(t0);
        let t = run(&m, t0, Duration::from_secs(3), 200, 0);
        assert_eq!(m.load(t).late, 0);
        assert!(!m.check(t, 20));
    }

    #[test]
    fn many_late_ticks_over_the_last_second_overload_the_node() {
        let t0 = Instant::now();
        let m = OverloadMonitor::new(t0);
        let t = run(&m, t0, Duration::from_secs(1), 20, 4);
        let load = m.load(t);
        assert!(load.late_fraction() > ENTER_LATE_FRACTION, "{load:?}");
        assert!(m.check(t, 20));
        assert!(m.is_overloaded());
    }

    #[test]
    fn a_few_late_ticks_do_not_overload() {
        let t0 = Instant::now();
        let m = OverloadMonitor::new(t0);
        // One tick in 20 late: 5 %, under the 10 % that marks overload.
        let t = run(&m, t0, Duration::from_secs(2), 20, 20);
        assert!(!m.check(t, 20));
    }

    #[test]
    fn one_lone_call_running_late_is_too_few_ticks_to_judge() {
        let t0 = Instant::now();
        let m = OverloadMonitor::new(t0);
        let t = run(&m, t0, Duration::from_secs(2), 1, 1);
        assert!(m.load(t).ticks < MIN_TICKS);
        assert!(!m.check(t, 1));
    }

    #[test]
    fn overload_clears_once_the_late_second_has_passed() {
        let t0 = Instant::now();
        let m = OverloadMonitor::new(t0);
        let t = run(&m, t0, Duration::from_secs(1), 20, 2);
        assert!(m.check(t, 20));
        // Half a second of on-time ticks: the late half-second is still in the window.
        let t = run(&m, t, Duration::from_millis(500), 20, 0);
        assert!(
            m.check(t, 20),
            "still overloaded while late ticks remain in the last second"
        );
        let t = run(&m, t, Duration::from_millis(1100), 20, 0);
        assert!(!m.check(t, 20), "recovered: {:?}", m.load(t));
    }

    #[test]
    fn hysteresis_keeps_overload_between_the_two_thresholds() {
        let t0 = Instant::now();
        let m = OverloadMonitor::new(t0);
        let t = run(&m, t0, Duration::from_secs(1), 20, 2);
        assert!(m.check(t, 20));
        // 1 tick in 20 late (5 %): below the entry threshold, above the exit one.
        let t = run(&m, t, Duration::from_secs(2), 20, 20);
        assert!(m.check(t, 20), "stays overloaded at 5 %: {:?}", m.load(t));
        let fresh = OverloadMonitor::new(t0);
        let t = run(&fresh, t0, Duration::from_secs(2), 20, 20);
        assert!(!fresh.check(t, 20), "but 5 % does not enter overload");
    }

    #[test]
    fn idle_node_recovers_when_calls_stop_ticking() {
        let t0 = Instant::now();
        let m = OverloadMonitor::new(t0);
        let t = run(&m, t0, Duration::from_secs(1), 20, 1);
        assert!(m.check(t, 20));
        assert!(
            !m.check(t + Duration::from_secs(2), 0),
            "no ticks in the last second"
        );
    }

    #[test]
    fn starved_node_with_many_calls_is_judged_on_the_few_ticks_it_records() {
        let t0 = Instant::now();
        let m = OverloadMonitor::new(t0);
        // 20 calls should tick 1000 times a second; a starved process ran 12 ticks, all late.
        let mut t = t0;
        for _ in 0..12 {
            m.record_tick(Duration::from_millis(400), t);
            t += Duration::from_millis(80);
        }
        assert!(m.check(t, 20), "{:?}", m.load(t));
        let m = OverloadMonitor::new(t0);
        for i in 0..12 {
            m.record_tick(ON_TIME, t0 + Duration::from_millis(10 * i));
        }
        assert!(
            !m.check(t0 + Duration::from_millis(120), 20),
            "new calls ticking on time are not overload"
        );
    }

    #[test]
    fn a_node_starved_for_whole_seconds_stays_overloaded_through_its_silences() {
        let t0 = Instant::now();
        let m = OverloadMonitor::new(t0);
        // 16 calls; the process runs once every few seconds and then fires late ticks.
        for i in 0..24 {
            m.record_tick(Duration::from_secs(2), t0 + Duration::from_millis(i));
        }
        let t = t0 + Duration::from_millis(30);
        assert!(m.check(t, 16));
        // Two seconds without a single tick recorded: still overloaded.
        let t = t + Duration::from_secs(2);
        assert_eq!(m.load(t).ticks, 0);
        assert!(m.check(t, 16), "no ticks while calls are up is no recovery");
        // Back on time: cleared.
        let t = run(&m, t, Duration::from_secs(2), 16, 0);
        assert!(!m.check(t, 16), "recovered: {:?}", m.load(t));
        // Silence alone never enters overload, and with the calls gone it is none.
        let t = t + Duration::from_secs(2);
        assert!(!m.check(t, 16));
        let starved = OverloadMonitor::new(t0);
        for i in 0..24 {
            starved.record_tick(Duration::from_secs(2), t0 + Duration::from_millis(i));
        }
        assert!(starved.check(t0 + Duration::from_millis(30), 16));
        assert!(!starved.check(t0 + Duration::from_secs(3), 0));
    }

    #[test]
    fn a_stalled_runtime_with_calls_up_is_overloaded_until_ticks_run_on_time() {
        let t0 = Instant::now();
        let m = OverloadMonitor::new(t0);
        // The watcher woke 2 s late with 16 calls up, before any late tick was recorded.
        assert!(m.record_stall(Duration::from_secs(2), 16));
        assert!(
            m.check(t0 + Duration::from_secs(2), 16),
            "silence keeps the verdict"
        );
        let t = run(
            &m,
            t0 + Duration::from_secs(2),
            Duration::from_secs(2),
            16,
            0,
        );
        assert!(!m.check(t, 16), "ticks back on time clear it");
        // A short delay, or a stall with too few calls to judge, is not overload.
        let fresh = OverloadMonitor::new(t0);
        assert!(!fresh.record_stall(Duration::from_millis(100), 16));
        assert!(!fresh.record_stall(Duration::from_secs(2), 2));
    }

    #[test]
    fn window_counts_only_the_last_second() {
        let t0 = Instant::now();
        let m = OverloadMonitor::new(t0);
        let t = run(&m, t0, Duration::from_secs(5), 10, 0);
        // 10 calls × 50 ticks/s; the slot being filled may be partial.
        let ticks = m.load(t - Duration::from_millis(1)).ticks;
        assert!((450..=500).contains(&ticks), "{ticks}");
    }
}
