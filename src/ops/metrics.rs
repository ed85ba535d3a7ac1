//! Prometheus metrics (text exposition format 0.0.4), served on `GET /metrics`.
//!
//! A fixed set of series, all `dialin_` prefixed, each backed by an atomic so the SIP and
//! media paths count without locks or allocation. Label values come from closed sets
//! (SIP methods, response classes, call outcomes, PIN results), so the series count is
//! bounded whatever a peer sends. `dialin_calls_active` is read from the call registry at
//! scrape time, so it can never drift from the calls actually in progress.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::pins::source::SourceKind;
use crate::call::registry::{CallOutcome, CallRegistry};

/// Result of one PIN entry, the `result` label of `dialin_pin_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinResult {
    Accepted,
    Unknown,
    Revoked,
    NotYetValid,
    Expired,
    LockedOut,
}

impl PinResult {
    const ALL: [PinResult; 6] = [
        PinResult::Accepted,
        PinResult::Unknown,
        PinResult::Revoked,
        PinResult::NotYetValid,
        PinResult::Expired,
        PinResult::LockedOut,
    ];

    fn as_str(self) -> &'static str {
        match self {
            PinResult::Accepted => "accepted",
            PinResult::Unknown => "unknown",
            PinResult::Revoked => "revoked",
            PinResult::NotYetValid => "not_yet_valid",
            PinResult::Expired => "expired",
            PinResult::LockedOut => "locked_out",
        }
    }
}

/// SIP methods counted by name (RFC 3261 §7.1 and the extensions the gateway meets);
/// anything else is counted as `other`.
const SIP_METHODS: [&str; 13] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "PRACK",
    "UPDATE",
    "REFER",
    "NOTIFY",
    "SUBSCRIBE",
    "MESSAGE",
];

/// Upper bounds of the `dialin_call_setup_seconds` buckets: from INVITE to joined room,
/// which includes the time the caller takes to key the PIN.
const SETUP_BUCKETS_S: [f64; 10] = [0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0];

/// Upper bounds of the `dialin_pin_lookup_seconds` buckets: one PIN source's answer.
const LOOKUP_BUCKETS_S: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5];

/// Trunks with their own `dialin_pin_failures_total` series at most.
const MAX_TRUNK_SERIES: usize = 1000;
/// One sample a minute for an hour.
pub const CALL_HISTORY_SAMPLES: usize = 60;

/// Answers of a PIN source, the `result` label of `dialin_pin_lookups_total`.
const LOOKUP_RESULTS: [&str; 6] = ["found", "unknown", "revoked", "not_yet_valid", "expired", "error"];

/// A histogram with fixed buckets, all atomics.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64; 10],
    buckets: [AtomicU64; 10],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram::with_bounds(&SETUP_BUCKETS_S)
    }

    fn with_bounds(bounds: &'static [f64; 10]) -> Self {
        Histogram {
            bounds,
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Writes the series of `name` (with `labels`, e.g. `source="http",`).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut cumulative = 0;
        for (bound, c) in self.bounds.iter().zip(&self.buckets) {
            cumulative += load(c);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let count = load(&self.count);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let labels = labels.trim_end_matches(',');
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braced} {}",
            load(&self.sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braced} {count}");
    }

    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        // Cumulative buckets are summed at render time; store each observation once.
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// The gateway's metrics. One instance, shared (`Arc<Metrics>`) by every task.
#[derive(Debug)]
pub struct Metrics {
    calls_total: [AtomicU64; CallOutcome::ALL.len()],
    pin_attempts: [AtomicU64; PinResult::ALL.len()],
    sip_requests: [AtomicU64; SIP_METHODS.len() + 1],
    sip_responses: [AtomicU64; 6],
    rtp_packets_received: AtomicU64,
    rtp_packets_lost: AtomicU64,
    rtp_foreign_packets: AtomicU64,
    pin_entries_queued: AtomicU64,
    pin_entries_busy: AtomicU64,
    unmatched_source_dropped: AtomicU64,
    media_late_frames: AtomicU64,
    room_frames_dropped: AtomicU64,
    room_frames_missing: AtomicU64,
    trunk_pin_failure_alarms: AtomicU64,
    overloaded: AtomicU64,
    overload_refused: AtomicU64,
    call_setup: Histogram,
    pin_lookups: [[AtomicU64; LOOKUP_RESULTS.len()]; SourceKind::ALL.len()],
    /// Refused PIN entries per trunk (`dialin_pin_failures_total{trunk}`).
    pin_failures: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Calls in progress, sampled once a minute over the last hour (oldest first).
    call_history: std::sync::Mutex<std::collections::VecDeque<(chrono::DateTime<chrono::Utc>, usize)>>,
    pin_lookup_time: [Histogram; SourceKind::ALL.len()],
    /// The RTP port pool, once the SIP side has made it: its lease count is a gauge.
    ports: std::sync::OnceLock<dialin_media::ports::PortAllocator>,
    transports: std::sync::OnceLock<dialin_sip::transport::Transports>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            calls_total: Default::default(),
            pin_attempts: Default::default(),
            sip_requests: Default::default(),
            sip_responses: Default::default(),
            rtp_packets_received: AtomicU64::new(0),
            rtp_packets_lost: AtomicU64::new(0),
            rtp_foreign_packets: AtomicU64::new(0),
            pin_entries_queued: AtomicU64::new(0),
            pin_entries_busy: AtomicU64::new(0),
            unmatched_source_dropped: AtomicU64::new(0),
            media_late_frames: AtomicU64::new(0),
            room_frames_dropped: AtomicU64::new(0),
            room_frames_missing: AtomicU64::new(0),
            trunk_pin_failure_alarms: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            overload_refused: AtomicU64::new(0),
            call_setup: Histogram::new(),
            pin_lookups: Default::default(),
            pin_failures: Default::default(),
            call_history: Default::default(),
            pin_lookup_time: SourceKind::ALL.map(|_| Histogram::with_bounds(&LOOKUP_BUCKETS_S)),
            ports: std::sync::OnceLock::new(),
            transports: std::sync::OnceLock::new(),
        }
    }
}

fn bump(counter: Option<&AtomicU64>, n: u64) {
    if let Some(c) = counter {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    /// A call ended with this outcome.
    pub fn call_ended(&self, outcome: CallOutcome) {
        bump(self.calls_total.get(outcome as usize), 1);
    }

    /// A PIN entry on `trunk` was refused (unknown, revoked, out of its window, locked out).
    pub fn pin_failure(&self, trunk: &str) {
        if let Ok(mut map) = self.pin_failures.lock() {
            // Trunks come from the configuration or LiveKit: bounded, but not trusted blindly.
            if map.len() < MAX_TRUNK_SERIES || map.contains_key(trunk) {
                *map.entry(trunk.to_owned()).or_insert(0) += 1;
            }
        }
    }

    /// Refused PIN entries so far, per trunk.
    pub fn pin_failures_by_trunk(&self) -> std::collections::BTreeMap<String, u64> {
        self.pin_failures.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Records how many calls are in progress at `at` (one sample a minute is kept for an
    /// hour).
    pub fn sample_calls(&self, at: chrono::DateTime<chrono::Utc>, calls: usize) {
        if let Ok(mut h) = self.call_history.lock() {
            if h.len() == CALL_HISTORY_SAMPLES {
                h.pop_front();
            }
            h.push_back((at, calls));
        }
    }

    /// The samples of [`Metrics::sample_calls`], oldest first.
    pub fn call_history(&self) -> Vec<(chrono::DateTime<chrono::Utc>, usize)> {
        self.call_history
            .lock()
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether the node says it is overloaded (`dialin_overloaded`).
    pub fn is_overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed) != 0
    }

    /// A PIN source answered `result` (a [`LOOKUP_RESULTS`] label) after `took`.
    pub fn pin_lookup(&self, source: SourceKind, result: &str, took: Duration) {
        let i = source as usize;
        let r = LOOKUP_RESULTS.iter().position(|l| *l == result).unwrap_or(LOOKUP_RESULTS.len() - 1);
        bump(self.pin_lookups.get(i).and_then(|row| row.get(r)), 1);
        if let Some(h) = self.pin_lookup_time.get(i) {
            h.observe(took);
        }
    }

    /// A PIN was entered and resolved.
    pub fn pin_attempt(&self, result: PinResult) {
        bump(self.pin_attempts.get(result as usize), 1);
    }

    /// A SIP request was received (method as on the wire, case-sensitive per RFC 3261 §7.1).
    pub fn sip_request(&self, method: &str) {
        let i = SIP_METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(SIP_METHODS.len());
        bump(self.sip_requests.get(i), 1);
    }

    /// A SIP response was sent or received with this status code.
    pub fn sip_response(&self, status: u16) {
        if (100..700).contains(&status) {
            bump(self.sip_responses.get(usize::from(status / 100 - 1)), 1);
        }
    }

    pub fn rtp_packets_received(&self, n: u64) {
        self.rtp_packets_received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn rtp_packets_lost(&self, n: u64) {
        self.rtp_packets_lost.fetch_add(n, Ordering::Relaxed);
    }

    /// A PIN entry waited for its verdict slot (the trunk was under a guessing attack).
    pub fn pin_entry_queued(&self) {
        self.pin_entries_queued.fetch_add(1, Ordering::Relaxed);
    }

    /// A PIN entry found the verdict queue full and was not judged.
    pub fn pin_entry_busy(&self) {
        self.pin_entries_busy.fetch_add(1, Ordering::Relaxed);
    }

    /// A datagram reached a call's RTP port from a source that may not send its media.
    pub fn rtp_foreign_packet(&self) {
        self.rtp_foreign_packets.fetch_add(1, Ordering::Relaxed);
    }

    /// A packet from a source matching no trunk was dropped (rate limit exhausted).
    pub fn unmatched_source_dropped(&self) {
        self.unmatched_source_dropped
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Media frames that arrived too late for their playout slot.
    pub fn media_late_frames(&self, n: u64) {
        self.media_late_frames.fetch_add(n, Ordering::Relaxed);
    }

    /// Audio frames between a call and its room thrown away: a full channel between the call
    /// and the room session, or a remote track's buffer overflowing because the mix fell
    /// behind.
    pub fn room_frames_dropped(&self, n: u64) {
        self.room_frames_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Mix ticks at which a remote track that was sending had no frame ready: audio from the
    /// room arriving late or lost, heard as a gap.
    pub fn room_frames_missing(&self, n: u64) {
        self.room_frames_missing.fetch_add(n, Ordering::Relaxed);
    }

    /// A trunk crossed `trunk_alarm_failed_per_minute`.
    pub fn trunk_pin_failure_alarm(&self) {
        self.trunk_pin_failure_alarms
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the node is refusing new calls because its media loops run late.
    pub fn set_overloaded(&self, overloaded: bool) {
        self.overloaded
            .store(u64::from(overloaded), Ordering::Relaxed);
    }

    /// An INVITE was refused with `503` because the node is overloaded.
    pub fn overload_refused(&self) {
        self.overload_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Time from INVITE to joining the room.
    pub fn call_setup(&self, d: Duration) {
        self.call_setup.observe(d);
    }

    /// The text exposition of every series; `calls` supplies `dialin_calls_active`.
    /// Reports the pool's leased ports as `dialin_rtp_ports_in_use` (set once at start).
    /// Counts every SIP request received and response sent, as the transports see them.
    pub fn observer(self: &std::sync::Arc<Self>) -> dialin_sip::transport::Observer {
        dialin_sip::transport::Observer(self.clone())
    }

    /// Reads the SIP transports' connection counters at each scrape.
    pub fn watch_transports(&self, transports: dialin_sip::transport::Transports) {
        let _ = self.transports.set(transports);
    }

    pub fn watch_ports(&self, ports: dialin_media::ports::PortAllocator) {
        let _ = self.ports.set(ports);
    }

    pub fn render(&self, calls: &CallRegistry) -> String {
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);

        if let Some(ports) = self.ports.get() {
            header(
                &mut out,
                "dialin_rtp_ports_in_use",
                "gauge",
                "RTP ports leased to calls (a port pair counts once).",
            );
            let _ = writeln!(out, "dialin_rtp_ports_in_use {}", ports.in_use());
        }
        if let Some(t) = self.transports.get() {
            header(
                &mut out,
                "dialin_sip_connections_open",
                "gauge",
                "SIP stream (TCP/TLS) connections open.",
            );
            let _ = writeln!(out, "dialin_sip_connections_open {}", t.connection_count());
            let r = t.refused_connections();
            header(
                &mut out,
                "dialin_sip_connections_refused_total",
                "counter",
                "SIP stream connections refused at accept, by reason, or closed for not completing a message in time (timed_out).",
            );
            for (reason, n) in [
                ("per_source", r.per_source),
                ("untrusted", r.untrusted),
                ("limit", r.limit),
                ("accept_error", r.accept_errors),
                ("timed_out", r.timed_out),
            ] {
                let _ = writeln!(
                    out,
                    "dialin_sip_connections_refused_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            header(
                &mut out,
                "dialin_tasks_alive",
                "gauge",
                "Tasks alive in the gateway's async runtime (a leak shows as growth at rest).",
            );
            let _ = writeln!(
                out,
                "dialin_tasks_alive {}",
                runtime.metrics().num_alive_tasks()
            );
        }

        header(
            &mut out,
            "dialin_calls_active",
            "gauge",
            "Calls in progress on this node, by state.",
        );
        for (state, n) in calls.count_by_state() {
            let _ = writeln!(
                out,
                "dialin_calls_active{{state=\"{}\"}} {n}",
                state.as_str()
            );
        }

        header(
            &mut out,
            "dialin_calls_total",
            "counter",
            "Calls ended, by outcome.",
        );
        for (outcome, c) in CallOutcome::ALL.iter().zip(&self.calls_total) {
            let _ = writeln!(
                out,
                "dialin_calls_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                load(c)
            );
        }

        header(
            &mut out,
            "dialin_pin_attempts_total",
            "counter",
            "PIN entries, by result.",
        );
        for (result, c) in PinResult::ALL.iter().zip(&self.pin_attempts) {
            let _ = writeln!(
                out,
                "dialin_pin_attempts_total{{result=\"{}\"}} {}",
                result.as_str(),
                load(c)
            );
        }

        header(
            &mut out,
            "dialin_pin_failures_total",
            "counter",
            "Refused PIN entries, by trunk.",
        );
        for (trunk, n) in self.pin_failures_by_trunk() {
            let _ = writeln!(out, "dialin_pin_failures_total{{trunk=\"{trunk}\"}} {n}");
        }
        header(
            &mut out,
            "dialin_pin_lookups_total",
            "counter",
            "Answers of the PIN sources, by source and result.",
        );
        for (source, row) in SourceKind::ALL.iter().zip(&self.pin_lookups) {
            for (result, c) in LOOKUP_RESULTS.iter().zip(row) {
                let _ = writeln!(
                    out,
                    "dialin_pin_lookups_total{{source=\"{source}\",result=\"{result}\"}} {}",
                    load(c)
                );
            }
        }
        header(
            &mut out,
            "dialin_pin_lookup_seconds",
            "histogram",
            "Time a PIN source took to answer, by source.",
        );
        for (source, h) in SourceKind::ALL.iter().zip(&self.pin_lookup_time) {
            h.render(&mut out, "dialin_pin_lookup_seconds", &format!("source=\"{source}\","));
        }

        header(
            &mut out,
            "dialin_sip_requests_total",
            "counter",
            "SIP requests received, by method.",
        );
        for (method, c) in SIP_METHODS
            .iter()
            .chain(std::iter::once(&"other"))
            .zip(&self.sip_requests)
        {
            let _ = writeln!(
                out,
                "dialin_sip_requests_total{{method=\"{method}\"}} {}",
                load(c)
            );
        }

        header(
            &mut out,
            "dialin_sip_responses_total",
            "counter",
            "SIP responses, by status class.",
        );
        for (i, c) in self.sip_responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "dialin_sip_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                load(c)
            );
        }

        let simple = [
            (
                "dialin_rtp_packets_received_total",
                "RTP packets received from callers.",
                &self.rtp_packets_received,
            ),
            (
                "dialin_rtp_packets_lost_total",
                "RTP packets from callers never received.",
                &self.rtp_packets_lost,
            ),
            (
                "dialin_pin_entries_queued_total",
                "PIN entries that waited for a verdict slot while their trunk was under a guessing attack.",
                &self.pin_entries_queued,
            ),
            (
                "dialin_pin_entries_busy_total",
                "PIN entries not judged because the verdict queue of their trunk was full.",
                &self.pin_entries_busy,
            ),
            (
                "dialin_rtp_foreign_packets_total",
                "Datagrams on calls' RTP ports from sources other than the caller's media peer, dropped.",
                &self.rtp_foreign_packets,
            ),
            (
                "dialin_unmatched_source_dropped_total",
                "SIP messages from sources matching no trunk, dropped by the rate limit.",
                &self.unmatched_source_dropped,
            ),
            (
                "dialin_media_late_frames_total",
                "Media frames that missed their playout time.",
                &self.media_late_frames,
            ),
            (
                "dialin_room_frames_dropped_total",
                "Audio frames between calls and their rooms dropped (a full channel or track buffer).",
                &self.room_frames_dropped,
            ),
            (
                "dialin_room_frames_missing_total",
                "Mix ticks at which a sending remote track had no frame ready (late or lost room audio).",
                &self.room_frames_missing,
            ),
            (
                "dialin_trunk_pin_failure_alarms_total",
                "Times a trunk exceeded its failed-PIN-per-minute alarm threshold.",
                &self.trunk_pin_failure_alarms,
            ),
            (
                "dialin_overload_refused_total",
                "INVITEs refused with 503 because media ticks were running late.",
                &self.overload_refused,
            ),
        ];
        for (name, help, c) in simple {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", load(c));
        }

        header(
            &mut out,
            "dialin_overloaded",
            "gauge",
            "1 while new calls are refused because media ticks run late, else 0.",
        );
        let _ = writeln!(out, "dialin_overloaded {}", load(&self.overloaded));

        header(
            &mut out,
            "dialin_call_setup_seconds",
            "histogram",
            "Time from INVITE to joining the room.",
        );
        self.call_setup
            .render(&mut out, "dialin_call_setup_seconds", "");
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn leased_rtp_ports_are_a_gauge_that_falls_back_when_leases_end() {
        let m = Metrics::new();
        let text = m.render(&CallRegistry::default());
        assert_eq!(value(&text, "dialin_rtp_ports_in_use"), None);
        let ports = dialin_media::ports::PortAllocator::new(30000..=30009).unwrap();
        m.watch_ports(ports.clone());
        let a = ports.allocate().unwrap();
        let b = ports.allocate().unwrap();
        let text = m.render(&CallRegistry::default());
        assert_eq!(value(&text, "dialin_rtp_ports_in_use"), Some(2.0));
        drop(a);
        drop(b);
        let text = m.render(&CallRegistry::default());
        assert_eq!(value(&text, "dialin_rtp_ports_in_use"), Some(0.0));
    }

    #[test]
    fn counters_render_with_their_labels() {
        let m = Metrics::new();
        m.call_ended(CallOutcome::PinFailed);
        m.pin_attempt(PinResult::Unknown);
        m.pin_attempt(PinResult::Unknown);
        m.sip_request("INVITE");
        m.sip_request("FOO");
        m.sip_response(486);
        m.rtp_packets_received(50);
        let text = m.render(&CallRegistry::default());
        assert_eq!(
            value(&text, "dialin_calls_total{outcome=\"pin_failed\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "dialin_pin_attempts_total{result=\"unknown\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "dialin_sip_requests_total{method=\"INVITE\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "dialin_sip_requests_total{method=\"other\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "dialin_sip_responses_total{class=\"4xx\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "dialin_rtp_packets_received_total"),
            Some(50.0)
        );
        assert_eq!(
            value(&text, "dialin_calls_active{state=\"in_room\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.call_setup(Duration::from_millis(300));
        m.call_setup(Duration::from_secs(7));
        m.call_setup(Duration::from_secs(500));
        let text = m.render(&CallRegistry::default());
        assert_eq!(
            value(&text, "dialin_call_setup_seconds_bucket{le=\"0.5\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "dialin_call_setup_seconds_bucket{le=\"10\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "dialin_call_setup_seconds_bucket{le=\"120\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "dialin_call_setup_seconds_bucket{le=\"+Inf\"}"),
            Some(3.0)
        );
        assert_eq!(value(&text, "dialin_call_setup_seconds_count"), Some(3.0));
        assert_eq!(value(&text, "dialin_call_setup_seconds_sum"), Some(507.3));
    }

    #[test]
    fn out_of_range_status_is_ignored() {
        let m = Metrics::new();
        m.sip_response(99);
        m.sip_response(700);
        assert!(!m
            .render(&CallRegistry::default())
            .lines()
            .any(|l| l.starts_with("dialin_sip_responses_total") && !l.ends_with(" 0")));
    }
}

impl dialin_sip::transport::TransportObserver for Metrics {
    fn request_received(&self, method: &str) {
        self.sip_request(method);
    }

    fn response_sent(&self, status: u16) {
        self.sip_response(status);
    }
}
