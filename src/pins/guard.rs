//! The PIN guard: how a keyed PIN becomes a verdict, with a bound on verdicts per trunk that
//! holds whatever calling numbers an attacker presents and however many calls it places.
//!
//! The per-number lockout (`[security.lockout]`) stops one number from guessing, but the
//! calling number is the attacker's choice. So every PIN entry on a trunk also goes through
//! a guard kept in the shared store (all nodes see one guard per trunk):
//!
//! 1. A locked-out number is refused at once (no verdict).
//! 2. The entry is counted as a failure on the trunk's failure GCRA *before* it is judged
//!    (one `interval` onto its theoretical arrival time); a right PIN gives it back. An entry
//!    whose count cannot be written is not judged ("service unavailable"), so the store's
//!    count is never behind the verdicts.
//! 3. More than `burst` intervals ahead of now means an attack on the trunk. While it lasts
//!    (until `cooldown` after its last failure), every entry waits for a verdict slot, one
//!    per `interval` for the whole trunk, in order: the caller hears "please hold" and hold
//!    music, never silence. Right and wrong PINs wait alike, so the time of a verdict does
//!    not tell which it is. A queue longer than `max_wait` takes no more entries: those
//!    callers hear "service unavailable" and get no verdict.
//! 4. A number that joined a room with a valid PIN on the trunk within `trusted_for` skips
//!    the queue (a regular caller is not held up by an attack) and its wrong PIN does not
//!    count towards an attack; its first wrong PIN withdraws that trust, so a spoofed trusted
//!    number buys an attacker one verdict per genuine join of that number.
//!
//! With no attack under way nobody waits: regular traffic of any volume, with wrong PINs from
//! first-time callers below one per interval sustained (1.5 a minute) plus bursts of `burst`,
//! never starts one. The figure: sustained judged guesses per trunk are
//! at most one per `interval` (40 s by default: 90 an hour), plus `burst` (10) once per
//! `cooldown` (15 min) of silence. Against 10,000 live 10-digit PINs (one chance in a million
//! per guess) an attacker expects to need 1,000,000 guesses, that is 463 days at 90 an hour,
//! with any number of calling numbers and parallel calls.
//!
//! Numbers are kept only as keyed hashes ([`NumberKey`]).

use std::time::Duration;

use chrono::Utc;
use tracing::{debug, warn};

use crate::call::ivr::Lookup;
use crate::ops::metrics::{Metrics, PinResult};
use crate::pins::{Pin, PinNamespace};
use crate::pins::source::{PinSources, SourceQuery, SourceVerdict};
use crate::privacy::{NumberKey, PhoneNumber};
use crate::store::{GuardPolicy, GuardTurn, LockoutKey, Store};
use crate::config::LockoutConfig;
use crate::ingress::trunk::TrunkId;

/// Name of the store's shared secret that keys number hashes when none is configured.
pub const NUMBER_KEY_SECRET: &str = "number_key";

/// Everything a verdict needs; shared by every call.
#[derive(Debug, Clone)]
pub struct PinGuard {
    store: Store,
    key: NumberKey,
    policy: GuardPolicy,
    lockout: LockoutConfig,
    trusted_for: Duration,
    /// Where PINs are looked up (`[pins] sources`); the store alone by default.
    sources: PinSources,
}

/// One PIN entry to judge.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub trunk: &'a TrunkId,
    pub namespace: &'a PinNamespace,
    pub caller: &'a PhoneNumber,
    pub digits: &'a str,
    /// The number dialled, when known (sources may filter on it).
    pub called: Option<&'a str>,
    /// Whether sources may see the caller's full number (the trunk's `expose_phone_number`).
    pub expose_caller: bool,
    pub call_id: &'a str,
}

impl PinGuard {
    pub fn new(
        store: Store,
        key: NumberKey,
        policy: GuardPolicy,
        lockout: LockoutConfig,
        trusted_for: Duration,
    ) -> PinGuard {
        PinGuard {
            sources: PinSources::store_only(store.clone()),
            store,
            key,
            policy,
            lockout,
            trusted_for,
        }
    }

    /// Looks PINs up in `sources` (in order) instead of the store alone.
    pub fn with_sources(mut self, sources: PinSources) -> PinGuard {
        self.sources = sources;
        self
    }

    /// The key of `caller`'s lockout counter on `trunk`.
    pub fn lockout_key(&self, trunk: &TrunkId, caller: &PhoneNumber) -> LockoutKey {
        LockoutKey::for_caller(&self.key, trunk, caller)
    }

    fn trust_key(&self, trunk: &TrunkId, caller: &PhoneNumber) -> String {
        format!("{trunk}:{}", self.key.hash("trust", trunk.as_str(), caller))
    }

    /// Judges one entry. `queued` is called once if the entry must wait its turn (the call
    /// then plays "please hold" and music); the verdict comes when the turn is reached.
    pub async fn judge(&self, entry: Entry<'_>, metrics: &Metrics, queued: impl FnOnce()) -> Lookup {
        let lockout_key = self.lockout_key(entry.trunk, entry.caller);
        let trust_key = self.trust_key(entry.trunk, entry.caller);
        let now = Utc::now();
        match self.store.locked_until(&lockout_key, now).await {
            Ok(Some(_)) => {
                metrics.pin_attempt(PinResult::LockedOut);
                return Lookup::LockedOut;
            }
            Ok(None) => {}
            Err(_) => return Lookup::Unavailable,
        }
        let trusted = match self.store.is_trusted(&trust_key, now).await {
            Ok(t) => t,
            Err(_) => return Lookup::Unavailable,
        };
        let turn = match self
            .store
            .guard_reserve(entry.trunk, now, &self.policy, !trusted)
            .await
        {
            Ok(t) => t,
            // Not counted, so not judged.
            Err(_) => return Lookup::Unavailable,
        };
        match turn {
            GuardTurn::Now => {}
            GuardTurn::At(at) => {
                metrics.pin_entry_queued();
                queued();
                let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                debug!(trunk = %entry.trunk, wait_ms = wait.as_millis() as u64, "PIN entry waits its turn");
                tokio::time::sleep(wait).await;
            }
            GuardTurn::Busy => {
                metrics.pin_entry_busy();
                warn!(trunk = %entry.trunk, "PIN guard queue full: the caller is told to retry later");
                let _ = self
                    .store
                    .guard_settle(entry.trunk, Utc::now(), &self.policy, false)
                    .await;
                return Lookup::Unavailable;
            }
        }

        let now = Utc::now();
        let verdict = match Pin::parse(entry.digits) {
            Ok(pin) => {
                let query = SourceQuery {
                    pin: &pin,
                    namespace: entry.namespace,
                    trunk: entry.trunk,
                    called: entry.called,
                    caller: entry.caller,
                    expose_caller: entry.expose_caller,
                    call_id: entry.call_id,
                    now,
                };
                match self.sources.resolve(&query, metrics).await {
                    Ok((_, v)) => v,
                    Err(_) => {
                        // Not judged: the entry's count is given back.
                        let _ = self.store.guard_settle(entry.trunk, now, &self.policy, false).await;
                        return Lookup::Unavailable;
                    }
                }
            }
            Err(_) => SourceVerdict::Unknown,
        };
        let result = match &verdict {
            SourceVerdict::Room(_) => PinResult::Accepted,
            SourceVerdict::Unknown => PinResult::Unknown,
            SourceVerdict::Revoked => PinResult::Revoked,
            SourceVerdict::NotYetValid => PinResult::NotYetValid,
            SourceVerdict::Expired => PinResult::Expired,
        };
        metrics.pin_attempt(result);
        match verdict {
            SourceVerdict::Room(grant) => {
                let _ = self.store.guard_settle(entry.trunk, now, &self.policy, false).await;
                let until = now
                    + chrono::Duration::from_std(self.trusted_for).unwrap_or(chrono::Duration::zero());
                if let Err(e) = self.store.trust_caller(&trust_key, until).await {
                    debug!(error = %e, "could not record the caller as trusted");
                }
                Lookup::Room(grant)
            }
            _ => {
                if trusted {
                    // Bounded by genuine joins instead: the trust goes with this failure.
                    let _ = self.store.untrust_caller(&trust_key).await;
                }
                let _ = self
                    .store
                    .guard_settle(entry.trunk, now, &self.policy, !trusted)
                    .await;
                match self
                    .store
                    .record_failed_attempt(&lockout_key, now, &self.lockout)
                    .await
                {
                    Ok(state) if state.is_locked(now) => Lookup::LockedOut,
                    Ok(_) => Lookup::Invalid,
                    Err(_) => Lookup::Unavailable,
                }
            }
        }
    }
}
