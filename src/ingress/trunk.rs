//! The trunk table: which carriers and PBXs may send calls, and step 1 of the call flow,
//! matching an INVITE to a trunk by its source address and called number.
//!
//! Matching follows DESIGN.md §"Call flow (inbound)": the source address must fall in one
//! of the trunk's `allowed_addresses`, and the called number (the Request-URI user, else
//! the `To` user, or a `tel:` number) must be one of its `numbers` (empty = any). Numbers
//! are compared in normalised E.164 form (ITU-T E.164, separators per E.123 / RFC 3966
//! §5.1.1 "visual separators" removed). Digest authentication is the SIP layer's job.
//!
//! The table is immutable; a SIGHUP builds a new one and [`SharedTrunkTable::replace`]
//! swaps it in. Calls in progress keep the `Arc` of the table they matched against.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::TrunkConfig;
use crate::privacy::normalize_number;

/// A trunk's `id`: 1 to 64 characters of `[A-Za-z0-9_.-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrunkId(String);

impl TrunkId {
    pub fn parse(s: &str) -> Result<TrunkId, String> {
        if s.is_empty()
            || s.len() > 64
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "{s:?} is not a trunk id (1 to 64 of A-Z a-z 0-9 - _ .)"
            ));
        }
        Ok(TrunkId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A number a trunk accepts calls for, kept normalised (see `PhoneNumber::new`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CalledNumber(String);

impl CalledNumber {
    /// Normalises a number from configuration or from a Request-URI.
    pub fn new(raw: &str) -> CalledNumber {
        CalledNumber(normalize_number(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CalledNumber {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n = CalledNumber::new(s);
        let digits = n.0.strip_prefix('+').unwrap_or(&n.0);
        // E.164 §6.1: at most 15 digits; a short service number is still a number.
        if digits.is_empty() || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("{s:?} is not a phone number (digits, optional leading + or 00, separators - . ( ) space)"));
        }
        Ok(n)
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address is the
/// host network (`/32` or `/128`). Host bits must be zero, so a typo such as
/// `10.1.0.0/8` is refused instead of silently widened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// True when `ip` is in the network. An IPv4-mapped IPv6 source (`::ffff:a.b.c.d`,
    /// seen on dual-stack sockets) is compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNetwork {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IP network (CIDR such as 10.0.0.0/8, or an address)");
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        let net = IpNetwork { addr, prefix };
        let host_bits_zero = match addr {
            IpAddr::V4(a) => {
                u32::from(a) & !u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0) == 0
            }
            IpAddr::V6(a) => {
                u128::from(a) & !u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0) == 0
            }
        };
        if !host_bits_zero {
            return Err(format!(
                "{s:?} has host bits set after the /{prefix} prefix"
            ));
        }
        Ok(net)
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

macro_rules! serde_via_str {
    ($t:ty, $show:expr) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&($show)(self))
            }
        }
    };
}
serde_via_str!(IpNetwork, |n: &IpNetwork| n.to_string());
serde_via_str!(CalledNumber, |n: &CalledNumber| n.0.clone());
serde_via_str!(TrunkId, |n: &TrunkId| n.0.clone());

impl FromStr for TrunkId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TrunkId::parse(s)
    }
}

/// The outcome of matching an INVITE against the trunk table.
#[derive(Debug, Clone, Copy)]
pub enum TrunkMatch<'a> {
    /// This trunk takes the call (its digest credentials, if any, are still to check).
    Matched(&'a TrunkConfig),
    /// No trunk allows the source address: refuse before doing any work.
    NoTrunkForSource,
    /// Some trunk allows the source, but none accepts the called number: `403`/`404`.
    NumberNotAccepted,
}

/// The trunks in force, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct TrunkTable {
    trunks: Vec<TrunkConfig>,
}

impl TrunkTable {
    pub fn new(trunks: Vec<TrunkConfig>) -> TrunkTable {
        TrunkTable { trunks }
    }

    /// Matches a call. `called` is the Request-URI user (else the `To` user), or a `tel:`
    /// URI; it is normalised before comparison. The first trunk, in file order, that
    /// allows the source and accepts the number wins.
    pub fn match_call(&self, source: IpAddr, called: &str) -> TrunkMatch<'_> {
        self.match_call_from(source, called, None)
    }

    /// [`TrunkTable::match_call`], also checking the calling number against the trunks'
    /// `allowed_callers` (LiveKit's `allowed_numbers`) when it is given.
    pub fn match_call_from(
        &self,
        source: IpAddr,
        called: &str,
        caller: Option<&str>,
    ) -> TrunkMatch<'_> {
        let called = CalledNumber::new(called);
        let caller = caller.map(CalledNumber::new);
        let mut source_known = false;
        for trunk in self
            .trunks
            .iter()
            .filter(|t| t.allowed_addresses.iter().any(|n| n.contains(source)))
        {
            source_known = true;
            let caller_ok = trunk.allowed_callers.is_empty()
                || caller
                    .as_ref()
                    .is_some_and(|c| trunk.allowed_callers.contains(c));
            if (trunk.numbers.is_empty() || trunk.numbers.contains(&called)) && caller_ok {
                return TrunkMatch::Matched(trunk);
            }
        }
        if source_known {
            TrunkMatch::NumberNotAccepted
        } else {
            TrunkMatch::NoTrunkForSource
        }
    }

    /// True when `ip` belongs to a configured trunk. Per-source lockouts never fall on such
    /// an address: all of a carrier's callers share it.
    pub fn is_trunk_address(&self, ip: IpAddr) -> bool {
        self.trunks
            .iter()
            .any(|t| t.allowed_addresses.iter().any(|n| n.contains(ip)))
    }

    pub fn get(&self, id: &TrunkId) -> Option<&TrunkConfig> {
        self.trunks.iter().find(|t| &t.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &TrunkConfig> {
        self.trunks.iter()
    }

    pub fn len(&self) -> usize {
        self.trunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.trunks.is_empty()
    }
}

/// The current trunk table, swapped whole on reload. Reads take a short read lock to
/// clone an `Arc` (once per INVITE, never per packet).
#[derive(Debug, Default)]
pub struct SharedTrunkTable {
    current: RwLock<Arc<TrunkTable>>,
}

impl SharedTrunkTable {
    pub fn new(table: TrunkTable) -> SharedTrunkTable {
        SharedTrunkTable {
            current: RwLock::new(Arc::new(table)),
        }
    }

    /// The table in force now.
    pub fn load(&self) -> Arc<TrunkTable> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            // A writer cannot panic while holding the lock (it only assigns an Arc), but
            // a poisoned lock still holds a valid table.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts a new table in force; calls already matched keep their old one.
    pub fn replace(&self, table: TrunkTable) {
        let table = Arc::new(table);
        match self.current.write() {
            Ok(mut guard) => *guard = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }
}

/// Per-source token bucket for SIP messages from sources that match no trunk
/// (`[security.unmatched_source]`). Such sources are refused before any work; this
/// bounds even the refusals, so a scanner gets a few `403`s and then silence, and the
/// rest are dropped and counted (`dialin_unmatched_source_dropped_total`).
///
/// Sans-IO: the caller passes `now`. Memory is bounded by `max_sources`: UDP sources
/// can be spoofed, so a flood of new addresses must not grow the table without end;
/// when it is full, unknown sources are dropped until `prune` frees room.
#[derive(Debug)]
pub struct SourceRateLimiter {
    burst: f64,
    per_second: f64,
    max_sources: usize,
    buckets: dashmap::DashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: std::time::Instant,
}

impl SourceRateLimiter {
    /// Sources tracked at most; 100 000 buckets take a few MiB.
    pub const DEFAULT_MAX_SOURCES: usize = 100_000;

    pub fn new(burst: u32, per_second: u32, max_sources: usize) -> SourceRateLimiter {
        SourceRateLimiter {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_second),
            max_sources,
            buckets: dashmap::DashMap::new(),
        }
    }

    /// True when a message from `source` may be answered now.
    pub fn allow(&self, source: IpAddr, now: std::time::Instant) -> bool {
        if let Some(mut b) = self.buckets.get_mut(&source) {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
            b.last = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= self.max_sources {
            return false;
        }
        self.buckets.insert(
            source,
            Bucket {
                tokens: self.burst - 1.0,
                last: now,
            },
        );
        true
    }

    /// Forgets sources whose bucket has refilled: they are as if never seen.
    pub fn prune(&self, now: std::time::Instant) {
        let (burst, rate) = (self.burst, self.per_second);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
        });
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// Failed PINs per trunk per minute, for the alarm of DESIGN.md "Privacy and security
/// defaults": a trunk's callers share the carrier's address, so guessing spread over
/// many numbers is only visible per trunk. Sans-IO; fixed one-minute windows.
#[derive(Debug)]
pub struct TrunkFailureAlarm {
    threshold: u32,
    windows: dashmap::DashMap<TrunkId, (std::time::Instant, u32)>,
}

impl TrunkFailureAlarm {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

    /// `threshold` is `[security] trunk_alarm_failed_per_minute`.
    pub fn new(threshold: u32) -> TrunkFailureAlarm {
        TrunkFailureAlarm {
            threshold: threshold.max(1),
            windows: dashmap::DashMap::new(),
        }
    }

    /// Failed PINs per minute tolerated before the alarm.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// Counts a failed PIN on `trunk`; true exactly once per minute window, when the
    /// count goes over the threshold (raise the metric and log the alarm then).
    pub fn record_failure(&self, trunk: &TrunkId, now: std::time::Instant) -> bool {
        let mut w = self.windows.entry(trunk.clone()).or_insert((now, 0));
        if now.saturating_duration_since(w.0) >= Self::WINDOW {
            *w = (now, 0);
        }
        w.1 = w.1.saturating_add(1);
        w.1 == self.threshold + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trunk(id: &str, nets: &[&str], numbers: &[&str]) -> TrunkConfig {
        let toml = format!("id = {id:?}\nallowed_addresses = {nets:?}\nnumbers = {numbers:?}\n",);
        toml::from_str(&toml).unwrap()
    }

    #[test]
    fn cidr_contains_addresses_in_its_prefix_only() {
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.7")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::5")));
        assert!(net("::1").contains(ip("::1")));
        assert!(!net("10.0.0.0/8").contains(ip("::1")));
    }

    #[test]
    fn ipv4_mapped_source_matches_ipv4_network() {
        assert!(net("192.0.2.0/24").contains(ip("::ffff:192.0.2.10")));
    }

    #[test]
    fn cidr_refuses_malformed_networks_and_host_bits() {
        assert!("10.0.0/8".parse::<IpNetwork>().is_err());
        assert!("10.0.0.0/33".parse::<IpNetwork>().is_err());
        assert!("10.1.0.0/8".parse::<IpNetwork>().is_err());
        assert!("example.com".parse::<IpNetwork>().is_err());
    }

    #[test]
    fn call_from_unknown_source_matches_no_trunk() {
        let table = TrunkTable::new(vec![trunk("a", &["192.0.2.0/24"], &[])]);
        assert!(matches!(
            table.match_call(ip("198.51.100.1"), "+33123456789"),
            TrunkMatch::NoTrunkForSource
        ));
    }

    #[test]
    fn called_number_is_compared_in_normalised_form() {
        let table = TrunkTable::new(vec![trunk("a", &["192.0.2.0/24"], &["+33 1 23 45 67 89"])]);
        for called in [
            "+33123456789",
            "0033123456789",
            "tel:+33-1-23-45-67-89",
            "+33 (1) 23.45.67.89",
        ] {
            assert!(
                matches!(table.match_call(ip("192.0.2.1"), called), TrunkMatch::Matched(t) if t.id.as_str() == "a"),
                "{called}"
            );
        }
        assert!(matches!(
            table.match_call(ip("192.0.2.1"), "+33999999999"),
            TrunkMatch::NumberNotAccepted
        ));
    }

    #[test]
    fn first_trunk_accepting_the_number_wins() {
        let table = TrunkTable::new(vec![
            trunk("sales", &["192.0.2.0/24"], &["+15550100"]),
            trunk("catchall", &["192.0.2.0/24"], &[]),
        ]);
        let id = |called| match table.match_call(ip("192.0.2.9"), called) {
            TrunkMatch::Matched(t) => t.id.as_str().to_owned(),
            other => format!("{other:?}"),
        };
        assert_eq!(id("+1 555 0100"), "sales");
        assert_eq!(id("+15550199"), "catchall");
    }

    #[test]
    fn trunk_addresses_are_recognised_for_the_lockout_rule() {
        let table = TrunkTable::new(vec![trunk("a", &["192.0.2.0/24", "::1"], &[])]);
        assert!(table.is_trunk_address(ip("192.0.2.200")));
        assert!(table.is_trunk_address(ip("::1")));
        assert!(!table.is_trunk_address(ip("198.51.100.1")));
    }

    #[test]
    fn replaced_table_is_seen_by_new_readers_while_old_readers_keep_theirs() {
        let shared =
            SharedTrunkTable::new(TrunkTable::new(vec![trunk("old", &["192.0.2.0/24"], &[])]));
        let before = shared.load();
        shared.replace(TrunkTable::new(vec![trunk("new", &["192.0.2.0/24"], &[])]));
        assert!(before.get(&TrunkId::parse("old").unwrap()).is_some());
        assert!(shared.load().get(&TrunkId::parse("new").unwrap()).is_some());
    }

    #[test]
    fn unmatched_source_gets_its_burst_then_its_rate() {
        let limiter = SourceRateLimiter::new(3, 2, 100);
        let t = std::time::Instant::now();
        let scanner = ip("203.0.113.9");
        let allowed = (0..10).filter(|_| limiter.allow(scanner, t)).count();
        assert_eq!(allowed, 3);
        assert!(!limiter.allow(scanner, t + std::time::Duration::from_millis(400)));
        assert!(
            limiter.allow(scanner, t + std::time::Duration::from_millis(1000)),
            "2 tokens/s refilled"
        );
        assert!(
            limiter.allow(ip("203.0.113.10"), t),
            "another source has its own bucket"
        );
    }

    #[test]
    fn source_table_is_bounded_and_pruned_when_buckets_refill() {
        let limiter = SourceRateLimiter::new(2, 1, 2);
        let t = std::time::Instant::now();
        assert!(limiter.allow(ip("203.0.113.1"), t));
        assert!(limiter.allow(ip("203.0.113.2"), t));
        assert!(
            !limiter.allow(ip("203.0.113.3"), t),
            "table full: new sources are dropped"
        );
        limiter.prune(t + std::time::Duration::from_secs(5));
        assert_eq!(limiter.tracked(), 0);
        assert!(limiter.allow(ip("203.0.113.3"), t + std::time::Duration::from_secs(5)));
    }

    #[test]
    fn trunk_alarm_fires_once_per_minute_over_the_threshold() {
        let alarm = TrunkFailureAlarm::new(3);
        let trunk = TrunkId::parse("carrier").unwrap();
        let t = std::time::Instant::now();
        let fired: Vec<bool> = (0..6).map(|_| alarm.record_failure(&trunk, t)).collect();
        assert_eq!(fired, [false, false, false, true, false, false]);
        let later = t + std::time::Duration::from_secs(61);
        let fired: Vec<bool> = (0..4)
            .map(|_| alarm.record_failure(&trunk, later))
            .collect();
        assert_eq!(
            fired,
            [false, false, false, true],
            "a new minute starts a new count"
        );
    }
}
