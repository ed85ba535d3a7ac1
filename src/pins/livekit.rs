//! PINs from LiveKit's SIP dispatch rules (`[pins] sources = [.., "livekit"]`): the rules a
//! meeting app already provisions for LiveKit's own SIP service, applied as that service
//! would apply them, so the app changes nothing when dialin answers its number.
//!
//! The rules are read with `ListSIPDispatchRule` (module `room::livekit::api`) and cached;
//! they are read again every `pins.livekit.refresh_s`, and at once when a keyed PIN matches
//! none (a rule created a second ago works), at most once per `miss_refresh_s`. When LiveKit
//! cannot be read, a cache younger than ten refresh periods keeps serving; an older one, or
//! none, makes the lookup fail ("service unavailable"), never "not valid".
//!
//! A rule applies to a call when its PIN is the keyed one, its `trunk_ids` are empty or
//! name the call's trunk, its `numbers` are empty or hold the called number, and its
//! `inbound_numbers` are empty or hold the calling number (numbers compared in E.164 form).
//! A rule naming the trunk wins over one for any trunk. **A rule without a PIN never
//! matches**: LiveKit's SIP service would let anyone who dials into its room; dialin exists
//! to ask for the PIN.
//!
//! What the rule gives the participant: the room (direct: `room_name`; individual:
//! `room_prefix` + `_` + the caller's last four digits (all of them when the trunk exposes
//! numbers) + `_` + a random suffix unless `no_randomness`; callee: `room_prefix` + `_` + the
//! called number, random suffix if `randomize`), its `attributes` and `metadata`,
//! `hide_phone_number` (no `sip.phoneNumber`), and its `room_config` (in the participant's
//! token, used by LiveKit if the caller creates the room). Differences from LiveKit's SIP
//! service: the individual room carries the last four digits, not the full number (dialin's
//! privacy rule); the rule's `name` is not shown to the room; `room_preset`, `media`,
//! `krisp_enabled` and `media_encryption` are not applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use livekit_protocol::sip_dispatch_rule::Rule;
use tokio::sync::Mutex;

use crate::ingress::trunk::CalledNumber;
use crate::pins::source::{
    Grant, PinSource, SourceError, SourceFuture, SourceKind, SourceQuery, SourceVerdict,
};
use crate::pins::RoomName;

/// Reads the rules (LiveKit's API in production; a list in tests).
pub trait RuleReader: Send + Sync {
    fn read(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<proto::SipDispatchRuleInfo>, String>> + Send + '_>,
    >;
}

impl RuleReader for crate::room::livekit::api::SipClient {
    fn read(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<proto::SipDispatchRuleInfo>, String>> + Send + '_>,
    > {
        Box::pin(async move { self.list_dispatch_rules().await.map_err(|e| e.to_string()) })
    }
}

/// How long a cache may keep serving while LiveKit cannot be read, in refresh periods.
const STALE_PERIODS: u32 = 10;

struct Cache {
    rules: Vec<proto::SipDispatchRuleInfo>,
    read_at: Option<Instant>,
    /// When a miss last made the rules be read again.
    miss_read_at: Option<Instant>,
}

/// LiveKit's dispatch rules as a PIN source.
pub struct DispatchRules {
    reader: Arc<dyn RuleReader>,
    refresh: Duration,
    miss_refresh: Duration,
    cache: Mutex<Cache>,
}

impl DispatchRules {
    pub fn new(reader: Arc<dyn RuleReader>, refresh: Duration, miss_refresh: Duration) -> DispatchRules {
        DispatchRules {
            reader,
            refresh,
            miss_refresh,
            cache: Mutex::new(Cache {
                rules: Vec::new(),
                read_at: None,
                miss_read_at: None,
            }),
        }
    }

    /// Reads the rules into the cache; on failure keeps a cache that is not too old.
    async fn read(&self, cache: &mut Cache, now: Instant) -> Result<(), SourceError> {
        match self.reader.read().await {
            Ok(rules) => {
                cache.rules = rules;
                cache.read_at = Some(now);
                Ok(())
            }
            Err(e) => {
                let usable = cache
                    .read_at
                    .is_some_and(|at| now.saturating_duration_since(at) < self.refresh * STALE_PERIODS);
                if usable {
                    tracing::warn!(error = %e, "LiveKit dispatch rules could not be read; the cached ones serve");
                    Ok(())
                } else {
                    Err(SourceError::new(SourceKind::Livekit, format!("reading dispatch rules: {e}")))
                }
            }
        }
    }

    async fn lookup(&self, query: &SourceQuery<'_>) -> Result<SourceVerdict, SourceError> {
        let now = Instant::now();
        let mut cache = self.cache.lock().await;
        let fresh = cache
            .read_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.refresh);
        if !fresh {
            self.read(&mut cache, now).await?;
        }
        if let Some(rule) = best_rule(&cache.rules, query) {
            return grant(rule, query).map(SourceVerdict::Room);
        }
        // A rule created since the last read: read again, not too often.
        let may_reread = cache
            .miss_read_at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.miss_refresh);
        if fresh && may_reread {
            cache.miss_read_at = Some(now);
            self.read(&mut cache, now).await?;
            if let Some(rule) = best_rule(&cache.rules, query) {
                return grant(rule, query).map(SourceVerdict::Room);
            }
        }
        Ok(SourceVerdict::Unknown)
    }
}

impl PinSource for DispatchRules {
    fn kind(&self) -> SourceKind {
        SourceKind::Livekit
    }

    fn resolve<'a>(&'a self, query: &'a SourceQuery<'a>) -> SourceFuture<'a> {
        Box::pin(self.lookup(query))
    }
}

fn rule_pin(rule: &proto::SipDispatchRuleInfo) -> Option<&str> {
    let pin = match rule.rule.as_ref()?.rule.as_ref()? {
        Rule::DispatchRuleDirect(d) => &d.pin,
        Rule::DispatchRuleIndividual(i) => &i.pin,
        Rule::DispatchRuleCallee(c) => &c.pin,
    };
    (!pin.is_empty()).then_some(pin.as_str())
}

fn numbers_allow(list: &[String], number: Option<&str>) -> bool {
    list.is_empty()
        || number.is_some_and(|n| {
            let n = CalledNumber::new(n);
            list.iter().any(|l| CalledNumber::new(l) == n)
        })
}

/// The rule that applies to this call and PIN: one naming the trunk first.
pub fn best_rule<'r>(
    rules: &'r [proto::SipDispatchRuleInfo],
    query: &SourceQuery<'_>,
) -> Option<&'r proto::SipDispatchRuleInfo> {
    let caller = query.caller.expose();
    let trunk = query.trunk.as_str();
    let applies = |r: &&proto::SipDispatchRuleInfo| {
        rule_pin(r) == Some(query.pin.expose())
            && (r.trunk_ids.is_empty() || r.trunk_ids.iter().any(|t| t == trunk))
            && numbers_allow(&r.numbers, query.called)
            && numbers_allow(&r.inbound_numbers, Some(caller))
    };
    rules
        .iter()
        .filter(applies)
        .find(|r| !r.trunk_ids.is_empty())
        .or_else(|| rules.iter().find(applies))
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..4)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)]))
        .collect()
}

/// Digits of a number, for a room name.
fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// What `rule` gives this call.
pub fn grant(rule: &proto::SipDispatchRuleInfo, query: &SourceQuery<'_>) -> Result<Grant, SourceError> {
    let bad = |m: String| SourceError::new(SourceKind::Livekit, m);
    let room = match rule.rule.as_ref().and_then(|r| r.rule.as_ref()) {
        Some(Rule::DispatchRuleDirect(d)) => d.room_name.clone(),
        Some(Rule::DispatchRuleIndividual(i)) => {
            let all = digits(query.caller.expose());
            let shown = if query.expose_caller {
                all
            } else {
                all.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect()
            };
            let mut room = format!("{}_{}", i.room_prefix, shown);
            if !i.no_randomness {
                room.push('_');
                room.push_str(&random_suffix());
            }
            room
        }
        Some(Rule::DispatchRuleCallee(c)) => {
            let mut room = format!("{}_{}", c.room_prefix, digits(query.called.unwrap_or_default()));
            if c.randomize {
                room.push('_');
                room.push_str(&random_suffix());
            }
            room
        }
        None => return Err(bad(format!("rule {} has no rule type", rule.sip_dispatch_rule_id))),
    };
    RoomName::parse(&room).map_err(|e| {
        bad(format!(
            "rule {} gives a room name dialin cannot use: {e}",
            rule.sip_dispatch_rule_id
        ))
    })?;
    Ok(Grant {
        room,
        attributes: rule
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        metadata: (!rule.metadata.is_empty()).then(|| rule.metadata.clone()),
        hide_phone_number: rule.hide_phone_number,
        room_config: rule.room_config.clone(),
        ..Grant::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::trunk::TrunkId;
    use crate::pins::{Pin, PinNamespace};
    use crate::privacy::PhoneNumber;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn direct(id: &str, room: &str, pin: &str, trunks: &[&str]) -> proto::SipDispatchRuleInfo {
        proto::SipDispatchRuleInfo {
            sip_dispatch_rule_id: id.into(),
            rule: Some(proto::SipDispatchRule {
                rule: Some(Rule::DispatchRuleDirect(proto::SipDispatchRuleDirect {
                    room_name: room.into(),
                    pin: pin.into(),
                })),
            }),
            trunk_ids: trunks.iter().map(|t| (*t).to_owned()).collect(),
            ..Default::default()
        }
    }

    struct Query {
        pin: Pin,
        ns: PinNamespace,
        trunk: TrunkId,
        caller: PhoneNumber,
        called: String,
    }

    impl Query {
        fn new(pin: &str) -> Query {
            Query {
                pin: Pin::parse(pin).expect("pin"),
                ns: PinNamespace::default(),
                trunk: TrunkId::parse("ST_main").expect("trunk"),
                caller: PhoneNumber::new("+33612345678"),
                called: "+33100000000".into(),
            }
        }
        fn q(&self) -> SourceQuery<'_> {
            SourceQuery {
                pin: &self.pin,
                namespace: &self.ns,
                trunk: &self.trunk,
                called: Some(&self.called),
                caller: &self.caller,
                expose_caller: false,
                call_id: "CA_1",
                now: chrono::Utc::now(),
            }
        }
    }

    #[test]
    fn a_rule_applies_by_pin_trunk_and_numbers_and_a_trunk_rule_wins() {
        let q = Query::new("1234567890");
        let rules = vec![
            direct("any", "lobby", "1234567890", &[]),
            direct("other-trunk", "elsewhere", "1234567890", &["ST_other"]),
            direct("mine", "standup", "1234567890", &["ST_main"]),
            direct("no-pin", "open", "", &[]),
        ];
        let r = best_rule(&rules, &q.q()).expect("a rule");
        assert_eq!(r.sip_dispatch_rule_id, "mine");
        let only_any = &rules[..2];
        assert_eq!(best_rule(only_any, &q.q()).map(|r| r.sip_dispatch_rule_id.as_str()), Some("any"));
        assert!(best_rule(&rules[3..], &Query::new("0000").q()).is_none(), "no PIN never matches");
        let mut numbered = direct("numbered", "sales", "1234567890", &[]);
        numbered.numbers = vec!["+33 1 99 99 99 99".into()];
        assert!(best_rule(std::slice::from_ref(&numbered), &q.q()).is_none(), "another called number");
        numbered.numbers = vec!["0033100000000".into()];
        assert!(best_rule(std::slice::from_ref(&numbered), &q.q()).is_some(), "E.164 forms compare equal");
        numbered.inbound_numbers = vec!["+33700000000".into()];
        assert!(best_rule(std::slice::from_ref(&numbered), &q.q()).is_none(), "a caller not listed");
    }

    #[test]
    fn individual_rooms_carry_the_last_digits_and_a_suffix() {
        let q = Query::new("1234567890");
        let mut rule = direct("ind", "", "1234567890", &[]);
        rule.rule = Some(proto::SipDispatchRule {
            rule: Some(Rule::DispatchRuleIndividual(proto::SipDispatchRuleIndividual {
                room_prefix: "call".into(),
                pin: "1234567890".into(),
                no_randomness: false,
            })),
        });
        rule.attributes.insert("app.team".into(), "blue".into());
        rule.metadata = "{\"x\":1}".into();
        rule.hide_phone_number = true;
        let g = grant(&rule, &q.q()).expect("grant");
        assert!(g.room.starts_with("call_5678_") && g.room.len() == "call_5678_".len() + 4, "{}", g.room);
        assert!(!g.room.contains("612345678"), "never the full number");
        assert_eq!(g.attributes.get("app.team").map(String::as_str), Some("blue"));
        assert_eq!(g.metadata.as_deref(), Some("{\"x\":1}"));
        assert!(g.hide_phone_number);
    }

    struct Counting {
        rules: std::sync::Mutex<Vec<proto::SipDispatchRuleInfo>>,
        reads: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    impl RuleReader for Counting {
        fn read(
            &self,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Vec<proto::SipDispatchRuleInfo>, String>> + Send + '_>,
        > {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let out = if self.down.load(Ordering::SeqCst) {
                Err("unreachable".to_owned())
            } else {
                Ok(self.rules.lock().map(|r| r.clone()).unwrap_or_default())
            };
            Box::pin(async move { out })
        }
    }

    #[tokio::test]
    async fn rules_are_cached_and_a_miss_reads_them_again_at_a_bounded_rate() {
        let reader = Arc::new(Counting {
            rules: std::sync::Mutex::new(vec![direct("a", "standup", "1111111111", &[])]),
            reads: AtomicUsize::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
        });
        let source = DispatchRules::new(reader.clone(), Duration::from_secs(30), Duration::from_secs(60));
        let hit = Query::new("1111111111");
        for _ in 0..3 {
            assert!(matches!(source.resolve(&hit.q()).await, Ok(SourceVerdict::Room(_))));
        }
        assert_eq!(reader.reads.load(Ordering::SeqCst), 1, "cached");
        // A rule created after the first read: the miss reads again and finds it.
        if let Ok(mut rules) = reader.rules.lock() {
            rules.push(direct("b", "review", "2222222222", &[]));
        }
        let new = Query::new("2222222222");
        match source.resolve(&new.q()).await {
            Ok(SourceVerdict::Room(g)) => assert_eq!(g.room, "review"),
            other => panic!("the new rule is found: {other:?}"),
        }
        assert_eq!(reader.reads.load(Ordering::SeqCst), 2);
        // Misses do not make LiveKit be read at every wrong PIN.
        for _ in 0..5 {
            assert_eq!(source.resolve(&Query::new("9999999999").q()).await, Ok(SourceVerdict::Unknown));
        }
        assert_eq!(reader.reads.load(Ordering::SeqCst), 2, "at most one read per miss_refresh");
    }

    #[tokio::test]
    async fn livekit_down_with_no_cache_is_an_error_not_an_unknown_pin() {
        let reader = Arc::new(Counting {
            rules: std::sync::Mutex::new(vec![]),
            reads: AtomicUsize::new(0),
            down: std::sync::atomic::AtomicBool::new(true),
        });
        let source = DispatchRules::new(reader, Duration::from_secs(30), Duration::from_secs(2));
        let got = source.resolve(&Query::new("1111111111").q()).await;
        assert!(matches!(got, Err(SourceError { source_kind: SourceKind::Livekit, .. })), "{got:?}");
    }
}
