//! SIP timer values (RFC 3261 §17 and Table 4 of Appendix A).
//!
//! Transactions and dialogs never read a clock: they compute deadlines from the
//! `now` they are given plus the durations here. Only T1, T2 and T4 are
//! configurable; every other timer is derived from them as the RFC does.

use std::time::Duration;

/// RFC 3261 §17.1.1.1: T1, the RTT estimate, defaults to 500 ms.
pub const DEFAULT_T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.2.2: T2, the cap on non-INVITE and 2xx retransmit intervals, 4 s.
pub const DEFAULT_T2: Duration = Duration::from_secs(4);
/// RFC 3261 §17.1.2.2: T4, the time a message may stay in the network, 5 s.
pub const DEFAULT_T4: Duration = Duration::from_secs(5);
/// RFC 3261 §17.2.1: a provisional response must be sent within 200 ms of an
/// INVITE; we send 100 Trying at once, this bound is what tests hold us to.
pub const TRYING_WITHIN: Duration = Duration::from_millis(200);
/// RFC 3261 §17.1.1.2: Timer D is at least 32 s for unreliable transports.
pub const TIMER_D_UNRELIABLE: Duration = Duration::from_secs(32);

/// The base timer values T1, T2 and T4, and the timers derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            t1: DEFAULT_T1,
            t2: DEFAULT_T2,
            t4: DEFAULT_T4,
        }
    }
}

impl Timers {
    /// 64·T1: Timers B, F, H, L, J (unreliable), and the 2xx-without-ACK limit
    /// (RFC 3261 §13.3.1.4).
    pub fn transaction_timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Next retransmit interval with the T2 cap (Timers E and G, 2xx
    /// retransmission): double, at most T2.
    pub fn backoff_capped(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.t2)
    }

    /// Timer I (INVITE server, after the ACK): T4 unreliable, 0 reliable.
    pub fn timer_i(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }

    /// Timer J (non-INVITE server, after the final response): 64·T1 unreliable, 0 reliable.
    pub fn timer_j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.transaction_timeout()
        }
    }

    /// Timer K (non-INVITE client, after the final response): T4 unreliable, 0 reliable.
    pub fn timer_k(&self, reliable: bool) -> Duration {
        self.timer_i(reliable)
    }

    /// Timer D (INVITE client, after a non-2xx final): ≥ 32 s unreliable, 0 reliable.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            TIMER_D_UNRELIABLE.max(self.transaction_timeout() / 2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_timers_follow_rfc3261_table_4() {
        let t = Timers::default();
        assert_eq!(t.transaction_timeout(), Duration::from_secs(32));
        assert_eq!(t.timer_i(false), Duration::from_secs(5));
        assert_eq!(t.timer_i(true), Duration::ZERO);
        assert_eq!(t.timer_j(false), Duration::from_secs(32));
        assert_eq!(t.timer_d(false), Duration::from_secs(32));
        assert_eq!(
            t.backoff_capped(Duration::from_secs(4)),
            Duration::from_secs(4)
        );
    }
}
