//! Sans-IO admission control for stream connections (TCP and TLS, RFC 3261 §18.3).
//!
//! A connection costs a file descriptor and a slot until it is closed, so a
//! gateway on a public address must decide who may hold one and for how long.
//! The pieces here are pure state the [`driver`](super::driver) consults:
//!
//! - [`Admission`]: at accept, whether a source IP may open one more connection
//!   (a cap per source, and a cap over all untrusted sources together, so
//!   sources with no trunk can never take the slots the trunks need);
//! - [`ReadDeadline`]: while reading, when the connection is given up: a message
//!   must be complete within `message_timeout` of its first octet (and a new
//!   connection's first one within that of the accept), otherwise the idle timeout;
//! - [`RefusalLog`]: refusals and deadline closes counted by reason, cumulatively
//!   and per log window, so an attack yields one summary line per window instead
//!   of one line per connection.
//!
//! Time is passed in (`now`); nothing here sleeps or reads the clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Why a stream connection was refused at accept or cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The source already holds `max_connections_per_source`.
    PerSource,
    /// Untrusted sources together hold `max_untrusted_connections`.
    Untrusted,
    /// All `max_connections` slots are taken.
    Limit,
    /// `accept` failed (e.g. EMFILE/ENFILE: out of file descriptors).
    AcceptError,
    /// Closed for not completing a message within `message_timeout`.
    TimedOut,
}

/// Open stream connections per source, and how many of them are untrusted.
#[derive(Debug)]
pub(crate) struct Admission {
    per_source: usize,
    untrusted_max: usize,
    open: HashMap<IpAddr, usize>,
    untrusted: usize,
}

impl Admission {
    pub(crate) fn new(per_source: usize, untrusted_max: usize) -> Admission {
        Admission {
            per_source,
            untrusted_max,
            open: HashMap::new(),
            untrusted: 0,
        }
    }

    /// Counts one more connection from `ip`, or says why it is refused. Every
    /// `Ok` must be matched by one [`Admission::release`] with the same arguments.
    pub(crate) fn admit(&mut self, ip: IpAddr, trusted: bool) -> Result<(), Refusal> {
        let from_ip = self.open.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.per_source {
            return Err(Refusal::PerSource);
        }
        if !trusted && self.untrusted >= self.untrusted_max {
            return Err(Refusal::Untrusted);
        }
        self.open.insert(ip, from_ip + 1);
        if !trusted {
            self.untrusted += 1;
        }
        Ok(())
    }

    /// A connection admitted with these arguments has closed.
    pub(crate) fn release(&mut self, ip: IpAddr, trusted: bool) {
        if let Some(n) = self.open.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Only sources with open connections are kept: the map is bounded by them.
                self.open.remove(&ip);
            }
        }
        if !trusted {
            self.untrusted = self.untrusted.saturating_sub(1);
        }
    }

    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> usize {
        self.open.get(&ip).copied().unwrap_or(0)
    }
}

/// Why a reader's [`ReadDeadline`] expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Nothing received for the idle timeout between messages.
    Idle,
    /// A message (or a new connection's first one) was not complete in time.
    Message,
}

/// When a stream connection's reader gives up. The driver asks
/// [`ReadDeadline::poll_timeout`] before each read and reports what each read
/// brought. Keep-alive CR/LFs between messages keep a connection from going idle
/// but never start the message deadline.
#[derive(Debug)]
pub(crate) struct ReadDeadline {
    message_timeout: Duration,
    idle_timeout: Duration,
    last_read: Instant,
    /// An accepted connection's first message is due by then.
    first_message_by: Option<Instant>,
    /// The message in progress is due by then.
    message_by: Option<Instant>,
}

impl ReadDeadline {
    /// A connection we accepted at `now`: its first message is due within
    /// `message_timeout`, so a peer that connects and says nothing, or only
    /// keep-alives, does not hold a slot.
    pub(crate) fn accepted(
        now: Instant,
        message_timeout: Duration,
        idle_timeout: Duration,
    ) -> ReadDeadline {
        ReadDeadline {
            first_message_by: Some(now + message_timeout),
            ..ReadDeadline::opened(now, message_timeout, idle_timeout)
        }
    }

    /// A connection we opened at `now`: the peer owes us nothing until we send.
    pub(crate) fn opened(
        now: Instant,
        message_timeout: Duration,
        idle_timeout: Duration,
    ) -> ReadDeadline {
        ReadDeadline {
            message_timeout,
            idle_timeout,
            last_read: now,
            first_message_by: None,
            message_by: None,
        }
    }

    /// A complete message was taken off the stream.
    pub(crate) fn on_message(&mut self) {
        self.first_message_by = None;
        self.message_by = None;
    }

    /// A read at `now` brought octets; after cutting out the complete messages
    /// (each reported with [`ReadDeadline::on_message`] first), `in_message` says
    /// whether a partial one is left. Its first octet came in this read unless a
    /// deadline already runs for it.
    pub(crate) fn on_read(&mut self, now: Instant, in_message: bool) {
        self.last_read = now;
        if in_message {
            self.message_by.get_or_insert(now + self.message_timeout);
        } else {
            self.message_by = None;
        }
    }

    /// When to give up if nothing more arrives, and why.
    pub(crate) fn poll_timeout(&self) -> (Instant, Expiry) {
        let idle_at = self.last_read + self.idle_timeout;
        let due = match (self.first_message_by, self.message_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match due {
            Some(at) if at <= idle_at => (at, Expiry::Message),
            _ => (idle_at, Expiry::Idle),
        }
    }
}

/// Stream connections refused, or closed for missing the message deadline,
/// by reason (cumulative from [`Transports::refused_connections`](super::Transports::refused_connections)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusedConnections {
    /// Over `max_connections_per_source`.
    pub per_source: u64,
    /// Over `max_untrusted_connections`.
    pub untrusted: u64,
    /// Over `max_connections`.
    pub limit: u64,
    /// `accept` failures (e.g. out of file descriptors).
    pub accept_errors: u64,
    /// Accepted, then closed for not completing a message within `message_timeout`.
    pub timed_out: u64,
}

impl RefusedConnections {
    /// Connections refused at accept (all reasons but `timed_out`).
    pub fn refused(&self) -> u64 {
        self.per_source + self.untrusted + self.limit + self.accept_errors
    }

    fn count(&mut self, why: Refusal) {
        let n = match why {
            Refusal::PerSource => &mut self.per_source,
            Refusal::Untrusted => &mut self.untrusted,
            Refusal::Limit => &mut self.limit,
            Refusal::AcceptError => &mut self.accept_errors,
            Refusal::TimedOut => &mut self.timed_out,
        };
        *n = n.saturating_add(1);
    }
}

/// Counts refusals; a window opens at the first refusal after a quiet spell and
/// is summarised once, `interval` later.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    interval: Duration,
    total: RefusedConnections,
    window: RefusedConnections,
    window_ends: Option<Instant>,
}

impl RefusalLog {
    pub(crate) fn new(interval: Duration) -> RefusalLog {
        RefusalLog {
            interval,
            total: RefusedConnections::default(),
            window: RefusedConnections::default(),
            window_ends: None,
        }
    }

    /// Counts one refusal at `now`. True when it opened a window: a summary is
    /// now due at [`RefusalLog::poll_timeout`].
    pub(crate) fn record(&mut self, why: Refusal, now: Instant) -> bool {
        self.total.count(why);
        self.window.count(why);
        if self.window_ends.is_none() {
            self.window_ends = Some(now + self.interval);
            return true;
        }
        false
    }

    /// When the open window is to be summarised; `None` when nothing was refused.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.window_ends
    }

    /// The counts of the window that ended by `now`, which closes it.
    pub(crate) fn poll_summary(&mut self, now: Instant) -> Option<RefusedConnections> {
        match self.window_ends {
            Some(end) if end <= now => {
                self.window_ends = None;
                Some(std::mem::take(&mut self.window))
            }
            _ => None,
        }
    }

    /// Everything counted so far.
    pub(crate) fn total(&self) -> RefusedConnections {
        self.total
    }

    /// The window length, for the summary line.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
    const C: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_source_over_its_cap_is_refused_until_one_of_its_connections_closes() {
        let mut a = Admission::new(2, 10);
        assert_eq!(a.admit(A, true), Ok(()));
        assert_eq!(a.admit(A, true), Ok(()));
        assert_eq!(a.admit(A, true), Err(Refusal::PerSource));
        assert_eq!(a.admit(B, true), Ok(()), "other sources are not affected");
        a.release(A, true);
        assert_eq!(a.admit(A, true), Ok(()));
        assert_eq!(a.open_from(A), 2);
    }

    #[test]
    fn untrusted_sources_share_one_cap_and_never_take_trusted_slots() {
        let mut a = Admission::new(32, 2);
        assert_eq!(a.admit(A, false), Ok(()));
        assert_eq!(a.admit(B, false), Ok(()));
        assert_eq!(a.admit(C, false), Err(Refusal::Untrusted));
        assert_eq!(a.admit(C, true), Ok(()), "a trunk still gets in");
        a.release(A, false);
        assert_eq!(a.admit(C, false), Ok(()));
    }

    #[test]
    fn released_sources_are_forgotten() {
        let mut a = Admission::new(1, 1);
        a.admit(A, false).unwrap();
        a.release(A, false);
        assert!(a.open.is_empty());
        assert_eq!(a.untrusted, 0);
        // A stray release (never admitted) does not underflow.
        a.release(B, false);
        assert_eq!(a.admit(B, false), Ok(()));
    }

    #[test]
    fn an_accepted_connection_must_complete_its_first_message_in_time() {
        let t0 = Instant::now();
        let mut d = ReadDeadline::accepted(t0, 10 * MS, 300 * MS);
        assert_eq!(d.poll_timeout(), (t0 + 10 * MS, Expiry::Message));
        // Keep-alives only: the first-message deadline stays.
        d.on_read(t0 + 5 * MS, false);
        assert_eq!(d.poll_timeout(), (t0 + 10 * MS, Expiry::Message));
        d.on_message();
        d.on_read(t0 + 6 * MS, false);
        assert_eq!(d.poll_timeout(), (t0 + 306 * MS, Expiry::Idle));
    }

    #[test]
    fn each_message_is_due_within_the_timeout_of_its_first_octet() {
        let t0 = Instant::now();
        let mut d = ReadDeadline::opened(t0, 10 * MS, 300 * MS);
        assert_eq!(d.poll_timeout(), (t0 + 300 * MS, Expiry::Idle));
        d.on_read(t0 + 100 * MS, true);
        // A trickle of octets does not move the deadline.
        d.on_read(t0 + 105 * MS, true);
        d.on_read(t0 + 109 * MS, true);
        assert_eq!(d.poll_timeout(), (t0 + 110 * MS, Expiry::Message));
        // The message completes and the next one starts in the same read.
        d.on_message();
        d.on_read(t0 + 109 * MS, true);
        assert_eq!(d.poll_timeout(), (t0 + 119 * MS, Expiry::Message));
        d.on_message();
        d.on_read(t0 + 112 * MS, false);
        assert_eq!(d.poll_timeout(), (t0 + 412 * MS, Expiry::Idle));
    }

    #[test]
    fn a_short_idle_timeout_wins_over_the_message_deadline() {
        let t0 = Instant::now();
        let d = ReadDeadline::accepted(t0, 10 * MS, 4 * MS);
        assert_eq!(d.poll_timeout(), (t0 + 4 * MS, Expiry::Idle));
    }

    #[test]
    fn refusals_are_summarised_once_per_window() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(10 * MS);
        assert_eq!(log.poll_timeout(), None);
        assert!(log.record(Refusal::PerSource, t0));
        assert!(!log.record(Refusal::PerSource, t0 + MS));
        assert!(!log.record(Refusal::AcceptError, t0 + 2 * MS));
        assert_eq!(log.poll_timeout(), Some(t0 + 10 * MS));
        assert_eq!(log.poll_summary(t0 + 9 * MS), None);
        let s = log.poll_summary(t0 + 10 * MS).unwrap();
        assert_eq!(
            s,
            RefusedConnections {
                per_source: 2,
                accept_errors: 1,
                ..RefusedConnections::default()
            }
        );
        assert_eq!(s.refused(), 3);
        // Quiet: nothing due, nothing to say.
        assert_eq!(log.poll_timeout(), None);
        assert_eq!(log.poll_summary(t0 + 100 * MS), None);
        // The next refusal opens a new window; totals keep counting.
        assert!(log.record(Refusal::TimedOut, t0 + 200 * MS));
        assert!(!log.record(Refusal::Untrusted, t0 + 201 * MS));
        assert!(!log.record(Refusal::Limit, t0 + 202 * MS));
        let s = log.poll_summary(t0 + 210 * MS).unwrap();
        assert_eq!(
            (s.timed_out, s.untrusted, s.limit, s.refused()),
            (1, 1, 1, 2)
        );
        assert_eq!(
            log.total(),
            RefusedConnections {
                per_source: 2,
                untrusted: 1,
                limit: 1,
                accept_errors: 1,
                timed_out: 1,
            }
        );
    }
}
