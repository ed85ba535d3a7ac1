//! Trunks from LiveKit (`[trunks] source = "livekit"`): the SIP inbound trunks a meeting app
//! already created for LiveKit's SIP service, read with `ListSIPInboundTrunk` and matched
//! as that service matches them.
//!
//! Each LiveKit trunk becomes a dialin trunk whose id is its `sip_trunk_id` (so dispatch
//! rules' `trunk_ids` name it): `numbers` (called numbers; empty accepts any),
//! `allowed_addresses` (empty: any source, as LiveKit; a warning is logged when such a trunk
//! has no credentials either), `allowed_numbers` (calling numbers), `auth_username` /
//! `auth_password` (digest) and `headers_to_attributes`. dialin's own settings
//! (language, PIN length and namespace, limits, keypad...) come from the `[[trunk]]` table
//! with the same `id` when there is one, else from their defaults. Trunks listing the called
//! number are tried before those accepting any number, as LiveKit prefers the most specific.
//! Not carried over: `headers`, `attributes_to_headers`, `include_headers`, `auth_realm`
//! (dialin's realm is its own), `ringing_timeout`, `max_call_duration`, `krisp_enabled`,
//! `media_encryption`, `media`, `metadata`.
//!
//! The table is read at start and every `trunks.refresh_s`; a failed read keeps the trunks in
//! force (calls keep coming) and is logged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use livekit_protocol as proto;

use crate::config::{Secret, TrunkAuth, TrunkConfig};
use crate::ingress::trunk::{CalledNumber, IpNetwork, SharedTrunkTable, TrunkId, TrunkTable};

/// Reads LiveKit's inbound trunks (its API in production; a list in tests).
pub trait TrunkReader: Send + Sync {
    fn read(&self) -> Pin<Box<dyn Future<Output = Result<Vec<proto::SipInboundTrunkInfo>, String>> + Send + '_>>;
}

impl TrunkReader for crate::room::livekit::api::SipClient {
    fn read(&self) -> Pin<Box<dyn Future<Output = Result<Vec<proto::SipInboundTrunkInfo>, String>> + Send + '_>> {
        Box::pin(async move { self.list_inbound_trunks().await.map_err(|e| e.to_string()) })
    }
}

/// A trunk config with every default and this id.
fn defaults(id: &TrunkId) -> Option<TrunkConfig> {
    serde_json::from_value(serde_json::json!({ "id": id.as_str() })).ok()
}

/// The dialin trunk for LiveKit's `info`, with `overrides`' table of the same id as the base.
pub fn convert(info: &proto::SipInboundTrunkInfo, overrides: &[TrunkConfig]) -> Result<TrunkConfig, String> {
    let id = TrunkId::parse(&info.sip_trunk_id)?;
    let mut t = match overrides.iter().find(|o| o.id == id) {
        Some(o) => o.clone(),
        None => defaults(&id).ok_or_else(|| format!("trunk {id}: no defaults"))?,
    };
    t.numbers = info.numbers.iter().map(|n| CalledNumber::new(n)).collect();
    let mut nets = Vec::new();
    for a in &info.allowed_addresses {
        match a.parse::<IpNetwork>() {
            Ok(n) => nets.push(n),
            Err(e) => tracing::warn!(trunk = %id, address = %a, error = %e, "LiveKit trunk: allowed address ignored"),
        }
    }
    if info.allowed_addresses.is_empty() {
        // LiveKit: no list accepts any source.
        nets = ["0.0.0.0/0", "::/0"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
    } else if nets.is_empty() {
        return Err(format!("trunk {id}: none of its allowed addresses is usable"));
    }
    t.allowed_addresses = nets;
    t.allowed_callers = info.allowed_numbers.iter().map(|n| CalledNumber::new(n)).collect();
    t.auth = if info.auth_username.is_empty() {
        None
    } else {
        // The file's algorithm order for this trunk, else the default one.
        let algorithms = match t.auth.take() {
            Some(a) => a.algorithms,
            None => serde_json::from_value::<TrunkAuth>(serde_json::json!({"username": "u", "password": "p"}))
                .map(|a| a.algorithms)
                .unwrap_or_default(),
        };
        Some(TrunkAuth {
            username: info.auth_username.clone(),
            password: Secret::new(info.auth_password.clone()),
            algorithms,
        })
    };
    if info.allowed_addresses.is_empty() && t.auth.is_none() {
        tracing::warn!(trunk = %id, "LiveKit trunk with no allowed addresses and no credentials: any source may call it");
    }
    t.headers_to_attributes = info
        .headers_to_attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(t)
}

/// The table for LiveKit's trunks: those listing numbers first, then the rest, each group in
/// LiveKit's order. A trunk that cannot be converted is left out and logged.
pub fn table(infos: &[proto::SipInboundTrunkInfo], overrides: &[TrunkConfig]) -> TrunkTable {
    let mut specific = Vec::new();
    let mut any = Vec::new();
    for info in infos {
        match convert(info, overrides) {
            Ok(t) if t.numbers.is_empty() => any.push(t),
            Ok(t) => specific.push(t),
            Err(e) => tracing::warn!(error = %e, "LiveKit trunk left out"),
        }
    }
    specific.extend(any);
    TrunkTable::new(specific)
}

/// Reads LiveKit's trunks into `shared` now and then every `every`, for ever.
pub async fn keep_in_sync(
    reader: Arc<dyn TrunkReader>,
    overrides: Vec<TrunkConfig>,
    shared: Arc<SharedTrunkTable>,
    every: Duration,
) {
    loop {
        match reader.read().await {
            Ok(infos) => {
                let t = table(&infos, &overrides);
                tracing::debug!(trunks = t.len(), "LiveKit inbound trunks read");
                shared.replace(t);
            }
            Err(e) => tracing::warn!(error = %e, "LiveKit inbound trunks could not be read; the trunks in force stay"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::trunk::TrunkMatch;

    fn info(id: &str) -> proto::SipInboundTrunkInfo {
        proto::SipInboundTrunkInfo {
            sip_trunk_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_livekit_trunk_becomes_a_dialin_trunk_with_the_file_s_settings_for_its_id() {
        let mut lk = info("ST_abc");
        lk.numbers = vec!["+33 1 23 45 67 89".into()];
        lk.allowed_addresses = vec!["192.0.2.0/24".into()];
        lk.allowed_numbers = vec!["+33612345678".into()];
        lk.auth_username = "carrier".into();
        lk.auth_password = "secret".into();
        lk.headers_to_attributes.insert("X-Account".into(), "app.account".into());
        let mut over = defaults(&TrunkId::parse("ST_abc").expect("id")).expect("defaults");
        over.language = crate::config::Language::Fr;
        over.pin_length = 6;
        let t = convert(&lk, &[over]).expect("converted");
        assert_eq!(t.language, crate::config::Language::Fr, "the file's settings for that id");
        assert_eq!(t.pin_length, 6);
        assert_eq!(t.auth.as_ref().map(|a| a.username.as_str()), Some("carrier"));
        assert!(t.auth.as_ref().is_some_and(|a| !a.algorithms.is_empty()));
        assert_eq!(t.headers_to_attributes.get("X-Account").map(String::as_str), Some("app.account"));
        let table = TrunkTable::new(vec![t]);
        let ip = |s: &str| s.parse().expect("ip");
        assert!(matches!(
            table.match_call_from(ip("192.0.2.7"), "0033123456789", Some("+33612345678")),
            TrunkMatch::Matched(_)
        ));
        assert!(matches!(
            table.match_call_from(ip("192.0.2.7"), "+33123456789", Some("+33700000000")),
            TrunkMatch::NumberNotAccepted
        ), "a calling number the trunk does not allow");
        assert!(matches!(
            table.match_call_from(ip("198.51.100.1"), "+33123456789", Some("+33612345678")),
            TrunkMatch::NoTrunkForSource
        ));
    }

    #[test]
    fn trunks_with_numbers_are_tried_before_catch_alls() {
        let mut catch_all = info("ST_any");
        catch_all.allowed_addresses = vec!["192.0.2.0/24".into()];
        let mut sales = info("ST_sales");
        sales.allowed_addresses = vec!["192.0.2.0/24".into()];
        sales.numbers = vec!["+33100000001".into()];
        let t = table(&[catch_all, sales], &[]);
        let id = |called| match t.match_call_from("192.0.2.1".parse().expect("ip"), called, None) {
            TrunkMatch::Matched(t) => t.id.as_str().to_owned(),
            _ => String::new(),
        };
        assert_eq!(id("+33100000001"), "ST_sales");
        assert_eq!(id("+33100000009"), "ST_any");
    }

    #[test]
    fn no_addresses_means_any_source_and_unusable_ones_leave_the_trunk_out() {
        let open = convert(&info("ST_open"), &[]).expect("converted");
        assert_eq!(open.allowed_addresses.len(), 2, "0.0.0.0/0 and ::/0");
        let mut broken = info("ST_broken");
        broken.allowed_addresses = vec!["not-an-address".into()];
        assert!(convert(&broken, &[]).is_err());
        assert!(table(&[broken], &[]).is_empty());
        assert!(convert(&info("bad id with spaces"), &[]).is_err());
    }
}
