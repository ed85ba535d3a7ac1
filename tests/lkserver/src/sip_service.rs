//! LiveKit's `SIP` service (livekit_sip.proto), served over Twirp (module `twirp`):
//! `POST /twirp/livekit.SIP/<Method>`. It keeps the inbound trunks and dispatch rules a SIP
//! bridge asks about when a call comes in; here they live in memory, sorted by id, which is
//! the order livekit-server lists them in. Every method needs a token whose `sip` grant has
//! `admin` (livekit-server's `EnsureSIPAdminPermission`).
//!
//! Served: `CreateSIPInboundTrunk`, `GetSIPInboundTrunk`, `ListSIPInboundTrunk`,
//! `DeleteSIPTrunk`, `CreateSIPDispatchRule`, `ListSIPDispatchRule`, `DeleteSIPDispatchRule`,
//! with livekit-server 1.11's validation (livekit/protocol's `Validate`,
//! `sip.ValidateTrunksIter`, `sip.ValidateDispatchRulesIter`) and its error texts. The other
//! methods answer `unimplemented`.
//!
//! For tests of a client that must live with the service being down or slow, a
//! [`SipOutage`] answers every SIP request `503 unavailable`, holds it unanswered, or delays
//! it; every request is counted by method before anything else looks at it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use livekit_protocol as proto;
use proto::sip_dispatch_rule::Rule;
use tokio::sync::watch;

use crate::twirp::{Answer, Call, Code, TwirpError, PATH_PREFIX};

pub(crate) const SERVICE: &str = "livekit.SIP";
/// SIP service methods this server does not serve (livekit_sip.proto).
const UNSERVED: &[&str] = &[
    "ListSIPTrunk",
    "CreateSIPOutboundTrunk",
    "UpdateSIPInboundTrunk",
    "UpdateSIPOutboundTrunk",
    "GetSIPOutboundTrunk",
    "ListSIPOutboundTrunk",
    "UpdateSIPDispatchRule",
    "CreateSIPParticipant",
    "TransferSIPParticipant",
];
/// livekit/protocol's `guid` prefixes.
const TRUNK_PREFIX: &str = "ST_";
const RULE_PREFIX: &str = "SDR_";

/// How the SIP service misbehaves while a test wants it to (see
/// [`crate::TestServer::set_sip_outage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipOutage {
    /// Every request is answered `503` with Twirp's `unavailable` error, before its token is
    /// looked at: the service is down.
    Unavailable,
    /// Every request is read and left unanswered until the outage ends (then answered).
    Hang,
    /// Every request is answered as usual, this much later.
    Slow(Duration),
}

/// Why the SIP service refused a request; the text is livekit-server's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipServiceError {
    #[error("missing trunk")]
    MissingTrunk,
    #[error("trunk id must not be set")]
    TrunkIdSet,
    #[error("for security, one of the fields must be set: AuthUsername+AuthPassword, AllowedAddresses or Numbers")]
    TrunkUnprotected,
    /// Two trunks for the same called numbers, neither restricted by calling number.
    #[error("Conflicting inbound SIP Trunks: {trunk:?} and {other:?}, using the same number(s) {numbers} without AllowedNumbers set")]
    TrunkConflict {
        trunk: String,
        other: String,
        numbers: String,
    },
    /// Two trunks for the same called numbers and the same calling number.
    #[error("Conflicting inbound SIP Trunks: {trunk:?} and {other:?}, using the same number(s) {numbers} and AllowedNumber {allowed_number:?}")]
    TrunkAllowedNumberConflict {
        trunk: String,
        other: String,
        numbers: String,
        allowed_number: String,
    },
    #[error("trunk ID is required")]
    TrunkIdRequired,
    #[error("requested sip trunk does not exist")]
    TrunkNotFound,
    #[error("rule id must not be set")]
    RuleIdSet,
    #[error("missing rule")]
    MissingRule,
    /// A `rule` with none of direct, individual or callee set.
    #[error("Unsupported SIP Dispatch Rule: <nil>")]
    UnsupportedRule,
    /// A rule for the same trunk, calling and called numbers and PIN as an existing one.
    #[error("Dispatch rule for the same trunk, inbound number, number, and PIN combination already exists in dispatch rule {rule:?} {name:?}")]
    RuleConflict { rule: String, name: String },
    #[error("dispatch rule ID is required")]
    RuleIdRequired,
    #[error("requested sip dispatch rule does not exist")]
    RuleNotFound,
}

impl SipServiceError {
    fn code(&self) -> Code {
        match self {
            SipServiceError::TrunkNotFound | SipServiceError::RuleNotFound => Code::NotFound,
            // A plain Go error in livekit-server, which Twirp answers as `internal`.
            SipServiceError::UnsupportedRule => Code::Internal,
            _ => Code::InvalidArgument,
        }
    }
}

impl From<SipServiceError> for TwirpError {
    fn from(e: SipServiceError) -> Self {
        TwirpError::new(e.code(), e.to_string())
    }
}

/// The method of a SIP service path, if it is one.
pub(crate) fn method_of(path: &str) -> Option<&str> {
    path.strip_prefix(PATH_PREFIX)?
        .strip_prefix(SERVICE)?
        .strip_prefix('/')
}

/// The SIP service's state, shared by the connections calling it and the test hooks.
#[derive(Clone)]
pub(crate) struct SipShared(Arc<Shared>);

struct Shared {
    store: Mutex<SipStore>,
    /// Requests per method, counted on arrival.
    calls: Mutex<BTreeMap<String, u64>>,
    outage: watch::Sender<Option<SipOutage>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SipShared {
    pub(crate) fn new() -> Self {
        SipShared(Arc::new(Shared {
            store: Mutex::new(SipStore::default()),
            calls: Mutex::new(BTreeMap::new()),
            outage: watch::Sender::new(None),
        }))
    }

    fn store(&self) -> MutexGuard<'_, SipStore> {
        lock(&self.0.store)
    }

    pub(crate) fn set_outage(&self, outage: Option<SipOutage>) {
        self.0.outage.send_replace(outage);
    }

    pub(crate) fn calls(&self) -> BTreeMap<String, u64> {
        lock(&self.0.calls).clone()
    }

    pub(crate) fn create_inbound_trunk(
        &self,
        trunk: proto::SipInboundTrunkInfo,
    ) -> Result<proto::SipInboundTrunkInfo, SipServiceError> {
        self.store().create_inbound_trunk(Some(trunk))
    }

    pub(crate) fn create_dispatch_rule(
        &self,
        rule: proto::SipDispatchRuleInfo,
    ) -> Result<proto::SipDispatchRuleInfo, SipServiceError> {
        self.store()
            .create_dispatch_rule(proto::CreateSipDispatchRuleRequest {
                dispatch_rule: Some(rule),
                ..Default::default()
            })
    }

    pub(crate) fn inbound_trunks(&self) -> Vec<proto::SipInboundTrunkInfo> {
        self.store().trunks.values().cloned().collect()
    }

    pub(crate) fn dispatch_rules(&self) -> Vec<proto::SipDispatchRuleInfo> {
        self.store().rules.values().cloned().collect()
    }

    /// Count a request to `method` and let it through, or not, as the outage says.
    pub(crate) async fn admit(&self, method: &str) -> Result<(), TwirpError> {
        *lock(&self.0.calls).entry(method.to_owned()).or_default() += 1;
        let mut outage = self.0.outage.subscribe();
        loop {
            let now = *outage.borrow_and_update();
            match now {
                None => return Ok(()),
                Some(SipOutage::Unavailable) => {
                    return Err(TwirpError::new(Code::Unavailable, "service unavailable"))
                }
                Some(SipOutage::Slow(delay)) => {
                    tokio::time::sleep(delay).await;
                    return Ok(());
                }
                Some(SipOutage::Hang) => {
                    if outage.changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// `method` of the SIP service, or `None` if there is no such method.
    pub(crate) fn call(&self, call: Call<'_>) -> Answer {
        let Call {
            method,
            encoding: enc,
            body,
            claims,
        } = call;
        let admin = || match claims {
            Some(c) if c.sip.admin => Ok(()),
            _ => Err(TwirpError::permissions_denied()),
        };
        let out = match method {
            "CreateSIPInboundTrunk" => {
                let req: proto::CreateSipInboundTrunkRequest = enc.decode(body)?;
                admin()?;
                enc.encode(&self.store().create_inbound_trunk(req.trunk)?)?
            }
            "GetSIPInboundTrunk" => {
                let req: proto::GetSipInboundTrunkRequest = enc.decode(body)?;
                admin()?;
                let trunk = self.store().inbound_trunk(&req.sip_trunk_id)?;
                enc.encode(&proto::GetSipInboundTrunkResponse { trunk: Some(trunk) })?
            }
            "ListSIPInboundTrunk" => {
                let req: proto::ListSipInboundTrunkRequest = enc.decode(body)?;
                admin()?;
                let items = self.store().list_inbound_trunks(&req);
                enc.encode(&proto::ListSipInboundTrunkResponse { items })?
            }
            "DeleteSIPTrunk" => {
                let req: proto::DeleteSipTrunkRequest = enc.decode(body)?;
                admin()?;
                enc.encode(&self.store().delete_trunk(&req.sip_trunk_id)?)?
            }
            "CreateSIPDispatchRule" => {
                let req: proto::CreateSipDispatchRuleRequest = enc.decode(body)?;
                admin()?;
                enc.encode(&self.store().create_dispatch_rule(req)?)?
            }
            "ListSIPDispatchRule" => {
                let req: proto::ListSipDispatchRuleRequest = enc.decode(body)?;
                admin()?;
                let items = self.store().list_dispatch_rules(&req);
                enc.encode(&proto::ListSipDispatchRuleResponse { items })?
            }
            "DeleteSIPDispatchRule" => {
                let req: proto::DeleteSipDispatchRuleRequest = enc.decode(body)?;
                admin()?;
                enc.encode(
                    &self
                        .store()
                        .delete_dispatch_rule(&req.sip_dispatch_rule_id)?,
                )?
            }
            m if UNSERVED.contains(&m) => {
                return Err(TwirpError::new(
                    Code::Unimplemented,
                    format!("{SERVICE}.{m} is not served by this test server"),
                ))
            }
            _ => return Ok(None),
        };
        Ok(Some(out))
    }
}

/// Inbound trunks and dispatch rules, by id.
#[derive(Default)]
struct SipStore {
    trunks: BTreeMap<String, proto::SipInboundTrunkInfo>,
    rules: BTreeMap<String, proto::SipDispatchRuleInfo>,
}

impl SipStore {
    /// livekit-server's `CreateSIPInboundTrunk`: the request's `Validate`, then the new trunk
    /// checked against those for the same numbers, then an id.
    fn create_inbound_trunk(
        &mut self,
        trunk: Option<proto::SipInboundTrunkInfo>,
    ) -> Result<proto::SipInboundTrunkInfo, SipServiceError> {
        let mut trunk = trunk.ok_or(SipServiceError::MissingTrunk)?;
        if !trunk.sip_trunk_id.is_empty() {
            return Err(SipServiceError::TrunkIdSet);
        }
        let has_auth = !trunk.auth_username.is_empty() || !trunk.auth_password.is_empty();
        if !has_auth && trunk.allowed_addresses.is_empty() && trunk.numbers.is_empty() {
            return Err(SipServiceError::TrunkUnprotected);
        }
        let same_numbers = proto::ListSipInboundTrunkRequest {
            numbers: trunk.numbers.clone(),
            ..Default::default()
        };
        let existing = self.list_inbound_trunks(&same_numbers);
        check_trunks(existing.iter().chain(std::iter::once(&trunk)))?;
        trunk.sip_trunk_id = random_id(TRUNK_PREFIX);
        self.trunks
            .insert(trunk.sip_trunk_id.clone(), trunk.clone());
        Ok(trunk)
    }

    fn inbound_trunk(&self, id: &str) -> Result<proto::SipInboundTrunkInfo, SipServiceError> {
        if id.is_empty() {
            return Err(SipServiceError::TrunkIdRequired);
        }
        self.trunks
            .get(id)
            .cloned()
            .ok_or(SipServiceError::TrunkNotFound)
    }

    fn list_inbound_trunks(
        &self,
        req: &proto::ListSipInboundTrunkRequest,
    ) -> Vec<proto::SipInboundTrunkInfo> {
        page(&self.trunks, req.page.as_ref(), |t| {
            (req.trunk_ids.is_empty() || req.trunk_ids.contains(&t.sip_trunk_id))
                && (req.numbers.is_empty()
                    || t.numbers.is_empty()
                    || t.numbers.iter().any(|n| {
                        req.numbers.contains(n)
                            || req
                                .numbers
                                .iter()
                                .any(|r| normalize_number(r) == normalize_number(n))
                    }))
        })
    }

    /// An unknown id is no error: livekit-server deletes it from its store whether it is
    /// there or not, and answers with the id.
    fn delete_trunk(&mut self, id: &str) -> Result<proto::SipTrunkInfo, SipServiceError> {
        if id.is_empty() {
            return Err(SipServiceError::TrunkIdRequired);
        }
        self.trunks.remove(id);
        Ok(proto::SipTrunkInfo {
            sip_trunk_id: id.to_owned(),
            ..Default::default()
        })
    }

    /// livekit-server's `CreateSIPDispatchRule`: the new `dispatch_rule`, or one made of the
    /// deprecated top-level fields when it is absent; then the new rule checked against the
    /// others, then an id.
    // The deprecated fields are read because livekit-server still accepts them.
    #[allow(deprecated)]
    fn create_dispatch_rule(
        &mut self,
        req: proto::CreateSipDispatchRuleRequest,
    ) -> Result<proto::SipDispatchRuleInfo, SipServiceError> {
        let legacy_trunks = req.trunk_ids.clone();
        let mut rule = match req.dispatch_rule {
            Some(rule) => {
                if !rule.sip_dispatch_rule_id.is_empty() {
                    return Err(SipServiceError::RuleIdSet);
                }
                rule
            }
            None => proto::SipDispatchRuleInfo {
                rule: req.rule,
                trunk_ids: req.trunk_ids,
                inbound_numbers: req.inbound_numbers,
                hide_phone_number: req.hide_phone_number,
                name: req.name,
                metadata: req.metadata,
                attributes: req.attributes,
                room_preset: req.room_preset,
                room_config: req.room_config,
                ..Default::default()
            },
        };
        if rule.rule.is_none() {
            return Err(SipServiceError::MissingRule);
        }
        // livekit-server narrows the rules it checks by the deprecated `trunk_ids` only;
        // the narrowing never hides a conflict.
        let others = self.list_dispatch_rules(&proto::ListSipDispatchRuleRequest {
            trunk_ids: legacy_trunks,
            ..Default::default()
        });
        check_rules(others.iter().chain(std::iter::once(&rule)))?;
        rule.sip_dispatch_rule_id = random_id(RULE_PREFIX);
        self.rules
            .insert(rule.sip_dispatch_rule_id.clone(), rule.clone());
        Ok(rule)
    }

    /// Filters as livekit/protocol's `ListSIPDispatchRuleRequest.Filter`: a rule for all
    /// trunks (no `trunk_ids`) matches any trunk filter. Missing `dispatch_rule_ids` are left
    /// out (livekit-server does not answer them with empty items, as the proto comment says).
    fn list_dispatch_rules(
        &self,
        req: &proto::ListSipDispatchRuleRequest,
    ) -> Vec<proto::SipDispatchRuleInfo> {
        page(&self.rules, req.page.as_ref(), |r| {
            (req.dispatch_rule_ids.is_empty()
                || req.dispatch_rule_ids.contains(&r.sip_dispatch_rule_id))
                && (req.trunk_ids.is_empty()
                    || r.trunk_ids.is_empty()
                    || r.trunk_ids.iter().any(|t| req.trunk_ids.contains(t)))
        })
    }

    fn delete_dispatch_rule(
        &mut self,
        id: &str,
    ) -> Result<proto::SipDispatchRuleInfo, SipServiceError> {
        if id.is_empty() {
            return Err(SipServiceError::RuleIdRequired);
        }
        self.rules.remove(id).ok_or(SipServiceError::RuleNotFound)
    }
}

/// The items after `page.after_id` that `keep` keeps, at most `page.limit` of them (all of
/// them without a page or a limit).
fn page<T: Clone>(
    items: &BTreeMap<String, T>,
    page: Option<&proto::Pagination>,
    keep: impl Fn(&T) -> bool,
) -> Vec<T> {
    let after = page.map(|p| p.after_id.as_str()).unwrap_or_default();
    let limit = page
        .and_then(|p| usize::try_from(p.limit).ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    items
        .iter()
        .filter(|(id, _)| after.is_empty() || id.as_str() > after)
        .map(|(_, v)| v)
        .filter(|v| keep(v))
        .take(limit)
        .cloned()
        .collect()
}

/// livekit/protocol's `sip.ValidateTrunksIter`: per called number (or none), at most one
/// trunk without `allowed_numbers`, and at most one per calling number.
fn check_trunks<'a>(
    trunks: impl Iterator<Item = &'a proto::SipInboundTrunkInfo>,
) -> Result<(), SipServiceError> {
    let mut by_number: HashMap<&str, HashMap<String, &proto::SipInboundTrunkInfo>> = HashMap::new();
    for t in trunks {
        let numbers: Vec<&str> = if t.numbers.is_empty() {
            vec![""]
        } else {
            t.numbers.iter().map(String::as_str).collect()
        };
        for number in numbers {
            let by_caller = by_number.entry(number).or_default();
            let conflict = |other: &proto::SipInboundTrunkInfo| {
                (
                    print_id(&t.sip_trunk_id),
                    print_id(&other.sip_trunk_id),
                    print_numbers(&t.numbers),
                )
            };
            if t.allowed_numbers.is_empty() {
                if let Some(other) = by_caller.get("") {
                    let (trunk, other, numbers) = conflict(other);
                    return Err(SipServiceError::TrunkConflict {
                        trunk,
                        other,
                        numbers,
                    });
                }
                by_caller.insert(String::new(), t);
            } else {
                for caller in &t.allowed_numbers {
                    let key = normalize_number(caller);
                    if let Some(other) = by_caller.get(&key) {
                        let (trunk, other, numbers) = conflict(other);
                        return Err(SipServiceError::TrunkAllowedNumberConflict {
                            trunk,
                            other,
                            numbers,
                            allowed_number: caller.clone(),
                        });
                    }
                    by_caller.insert(key, t);
                }
            }
        }
    }
    Ok(())
}

/// livekit/protocol's `sip.ValidateDispatchRulesIter`: no two rules for the same PIN, trunk
/// (none: all trunks), calling number and called number.
fn check_rules<'a>(
    rules: impl Iterator<Item = &'a proto::SipDispatchRuleInfo>,
) -> Result<(), SipServiceError> {
    let mut seen: HashMap<(&str, &str, String, String), &proto::SipDispatchRuleInfo> =
        HashMap::new();
    let or_any = |v: &'a [String]| -> Vec<&'a str> {
        if v.is_empty() {
            vec![""]
        } else {
            v.iter().map(String::as_str).collect()
        }
    };
    for r in rules {
        let pin = match r.rule.as_ref().and_then(|r| r.rule.as_ref()) {
            Some(Rule::DispatchRuleDirect(d)) => d.pin.as_str(),
            Some(Rule::DispatchRuleIndividual(i)) => i.pin.as_str(),
            Some(Rule::DispatchRuleCallee(c)) => c.pin.as_str(),
            None => return Err(SipServiceError::UnsupportedRule),
        };
        for trunk in or_any(&r.trunk_ids) {
            for caller in or_any(&r.inbound_numbers) {
                for called in or_any(&r.numbers) {
                    let key = (
                        pin,
                        trunk,
                        normalize_number(caller),
                        normalize_number(called),
                    );
                    if let Some(other) = seen.get(&key) {
                        return Err(SipServiceError::RuleConflict {
                            rule: print_id(&other.sip_dispatch_rule_id),
                            name: if other.name.is_empty() {
                                "<blank name>".to_owned()
                            } else {
                                other.name.clone()
                            },
                        });
                    }
                    seen.insert(key, r);
                }
            }
        }
    }
    Ok(())
}

/// livekit/protocol's `NormalizeNumber`: a phone number (`+`, digits, spaces, dashes,
/// parentheses) without its punctuation and with a leading `+`; anything else as it is.
fn normalize_number(num: &str) -> String {
    let body = num.strip_prefix('+').unwrap_or(num);
    let phone = !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | ' ' | '(' | ')'));
    if !phone {
        return num.to_owned();
    }
    let digits: String = body
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '(' | ')'))
        .collect();
    format!("+{digits}")
}

/// How livekit/protocol names a trunk or rule in its errors ("<new>" before it has an id).
fn print_id(id: &str) -> String {
    if id.is_empty() {
        "<new>".to_owned()
    } else {
        id.to_owned()
    }
}

/// Go's `%q` of the numbers, or "<any>".
fn print_numbers(numbers: &[String]) -> String {
    if numbers.is_empty() {
        return "<any>".to_owned();
    }
    let quoted: Vec<String> = numbers.iter().map(|n| format!("{n:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

fn random_id(prefix: &str) -> String {
    use rand::Rng;
    // livekit/protocol's `guid`: 12 base62 characters after the prefix.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(prefix.len() + 12);
    s.push_str(prefix);
    for _ in 0..12 {
        let i = rng.gen_range(0..ALPHABET.len());
        s.push(char::from(ALPHABET.get(i).copied().unwrap_or(b'x')));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(room: &str, pin: &str) -> Option<proto::SipDispatchRule> {
        Some(proto::SipDispatchRule {
            rule: Some(Rule::DispatchRuleDirect(proto::SipDispatchRuleDirect {
                room_name: room.into(),
                pin: pin.into(),
            })),
        })
    }

    fn rule(trunks: &[&str], pin: &str) -> proto::SipDispatchRuleInfo {
        proto::SipDispatchRuleInfo {
            rule: direct("r", pin),
            trunk_ids: trunks.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    fn create(
        store: &mut SipStore,
        r: proto::SipDispatchRuleInfo,
    ) -> Result<String, SipServiceError> {
        store
            .create_dispatch_rule(proto::CreateSipDispatchRuleRequest {
                dispatch_rule: Some(r),
                ..Default::default()
            })
            .map(|r| r.sip_dispatch_rule_id)
    }

    #[test]
    fn numbers_normalize_as_livekit_protocol_does() {
        assert_eq!(normalize_number("+1 (555) 010-0000"), "+15550100000");
        assert_eq!(normalize_number("15550100000"), "+15550100000");
        assert_eq!(normalize_number("alice"), "alice");
        assert_eq!(normalize_number(""), "");
        assert_eq!(print_numbers(&["+1".into(), "+2".into()]), r#"["+1" "+2"]"#);
    }

    #[test]
    fn a_rule_for_all_trunks_conflicts_only_with_another_for_all_trunks() {
        let mut store = SipStore::default();
        let first = create(&mut store, rule(&[], "1234")).unwrap();
        assert!(create(&mut store, rule(&["ST_a"], "1234")).is_ok());
        assert!(create(&mut store, rule(&[], "")).is_ok(), "another PIN");
        match create(&mut store, rule(&[], "1234")) {
            Err(SipServiceError::RuleConflict { rule, name }) => {
                assert_eq!(rule, first);
                assert_eq!(name, "<blank name>");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            create(&mut store, rule(&["ST_b", "ST_a"], "1234")).map(|_| ()),
            Err(SipServiceError::RuleConflict {
                rule: store
                    .rules
                    .values()
                    .find(|r| r.trunk_ids == ["ST_a"])
                    .unwrap()
                    .sip_dispatch_rule_id
                    .clone(),
                name: "<blank name>".into()
            })
        );
    }

    #[test]
    fn trunks_for_the_same_number_need_distinct_calling_numbers() {
        let mut store = SipStore::default();
        let trunk = |numbers: &[&str], allowed: &[&str]| proto::SipInboundTrunkInfo {
            numbers: numbers.iter().map(|n| n.to_string()).collect(),
            allowed_numbers: allowed.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        };
        let a = store
            .create_inbound_trunk(Some(trunk(&["+1555"], &[])))
            .unwrap();
        match store.create_inbound_trunk(Some(trunk(&["+1555"], &[]))) {
            Err(e @ SipServiceError::TrunkConflict { .. }) => assert_eq!(
                e.to_string(),
                format!("Conflicting inbound SIP Trunks: \"<new>\" and {:?}, using the same number(s) [\"+1555\"] without AllowedNumbers set", a.sip_trunk_id)
            ),
            other => panic!("{other:?}"),
        }
        store
            .create_inbound_trunk(Some(trunk(&["+1555"], &["+1 666"])))
            .unwrap();
        assert!(matches!(
            store.create_inbound_trunk(Some(trunk(&["+1555"], &["+1666"]))),
            Err(SipServiceError::TrunkAllowedNumberConflict { .. })
        ));
        assert!(store
            .create_inbound_trunk(Some(trunk(&["+1777"], &[])))
            .is_ok());
        assert_eq!(
            store.create_inbound_trunk(Some(trunk(&[], &[]))),
            Err(SipServiceError::TrunkUnprotected)
        );
    }
}
