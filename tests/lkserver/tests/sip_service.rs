//! LiveKit's SIP service over Twirp, as a server SDK or `curl` calls it: inbound trunks and
//! dispatch rules created, listed (filters, pages) and deleted in JSON and protobuf,
//! livekit-server's refusals, and the outage switch that stands for the service being down or
//! slow.

use std::time::Duration;

use dialin_lkserver::proto::sip_dispatch_rule::Rule;
use dialin_lkserver::{proto, SipOutage, TestServer};
use livekit_api::access_token::{AccessToken, VideoGrants};
use serde_json::{json, Value};

const API_KEY: &str = "devkey";
const API_SECRET: &str = "secret";
const JSON: &str = "application/json";
const PROTOBUF: &str = "application/protobuf";

struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn decode<T: prost::Message + Default>(&self) -> T {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.content_type, PROTOBUF);
        T::decode(self.body.as_slice()).expect("protobuf answer")
    }
}

async fn post(
    server: &TestServer,
    method: &str,
    content_type: &str,
    token: Option<String>,
    body: Vec<u8>,
) -> Reply {
    let url = format!("{}/twirp/livekit.SIP/{method}", server.http_url());
    let mut req = reqwest::Client::new()
        .post(url)
        .header("Content-Type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.expect("HTTP exchange");
    Reply {
        status: resp.status().as_u16(),
        content_type: resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

async fn post_json(server: &TestServer, method: &str, body: Value) -> Reply {
    let token = server.sip_admin_token().unwrap();
    post(
        server,
        method,
        JSON,
        Some(token),
        body.to_string().into_bytes(),
    )
    .await
}

async fn post_proto(server: &TestServer, method: &str, body: &impl prost::Message) -> Reply {
    let token = server.sip_admin_token().unwrap();
    post(server, method, PROTOBUF, Some(token), body.encode_to_vec()).await
}

fn direct(room: &str, pin: &str) -> Option<proto::SipDispatchRule> {
    Some(proto::SipDispatchRule {
        rule: Some(Rule::DispatchRuleDirect(proto::SipDispatchRuleDirect {
            room_name: room.into(),
            pin: pin.into(),
        })),
    })
}

fn rule_info(trunks: &[&str], room: &str, pin: &str) -> proto::SipDispatchRuleInfo {
    proto::SipDispatchRuleInfo {
        rule: direct(room, pin),
        trunk_ids: trunks.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    }
}

fn ids(items: &[Value], field: &str) -> Vec<String> {
    items
        .iter()
        .map(|v| v[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn inbound_trunks_are_created_listed_filtered_and_deleted_in_json() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let created = post_json(
        &server,
        "CreateSIPInboundTrunk",
        json!({"trunk": {
            "name": "carrier",
            "numbers": ["+15550100"],
            "allowed_addresses": ["192.0.2.0/24"],
            "headers_to_attributes": {"X-Conf": "conf.id"},
        }}),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.json());
    assert_eq!(created.content_type, JSON);
    let a = created.json();
    let a_id = a["sip_trunk_id"].as_str().unwrap().to_owned();
    assert!(a_id.starts_with("ST_") && a_id.len() == 15, "{a_id}");
    assert_eq!(a["name"], "carrier");
    assert_eq!(a["headers_to_attributes"]["X-Conf"], "conf.id");
    // camelCase is read too, as protojson readers do.
    let b = post_json(
        &server,
        "CreateSIPInboundTrunk",
        json!({"trunk": {"authUsername": "u", "authPassword": "p", "numbers": ["+1 (555) 0200"]}}),
    )
    .await
    .json();
    let b_id = b["sip_trunk_id"].as_str().unwrap().to_owned();
    let c_id = post_json(
        &server,
        "CreateSIPInboundTrunk",
        json!({"trunk": {"allowed_addresses": ["198.51.100.7"]}}),
    )
    .await
    .json()["sip_trunk_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let all = post_json(&server, "ListSIPInboundTrunk", json!({}))
        .await
        .json();
    let items = all["items"].as_array().unwrap();
    assert_eq!(
        ids(items, "sip_trunk_id"),
        sorted(vec![a_id.clone(), b_id.clone(), c_id.clone()]),
        "every trunk, sorted by id"
    );

    let by_id = post_json(&server, "ListSIPInboundTrunk", json!({"trunk_ids": [b_id]}))
        .await
        .json();
    assert_eq!(
        ids(by_id["items"].as_array().unwrap(), "sip_trunk_id"),
        std::slice::from_ref(&b_id)
    );
    // A number filter matches normalised numbers, and keeps trunks for any number.
    let by_number = post_json(
        &server,
        "ListSIPInboundTrunk",
        json!({"numbers": ["+15550200"]}),
    )
    .await
    .json();
    assert_eq!(
        ids(by_number["items"].as_array().unwrap(), "sip_trunk_id"),
        sorted(vec![b_id.clone(), c_id.clone()])
    );

    let got = post_json(&server, "GetSIPInboundTrunk", json!({"sip_trunk_id": a_id})).await;
    assert_eq!(got.json()["trunk"]["name"], "carrier");

    let deleted = post_json(&server, "DeleteSIPTrunk", json!({"sip_trunk_id": a_id})).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json()["sip_trunk_id"], a_id);
    assert_eq!(server.sip_inbound_trunks().len(), 2);
    // livekit-server deletes an unknown trunk without complaint.
    let again = post_json(&server, "DeleteSIPTrunk", json!({"sip_trunk_id": a_id})).await;
    assert_eq!(again.status, 200);
    let missing = post_json(&server, "GetSIPInboundTrunk", json!({"sip_trunk_id": a_id})).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], "not_found");
    assert_eq!(missing.json()["msg"], "requested sip trunk does not exist");
}

#[tokio::test]
async fn trunks_are_validated_as_livekit_server_validates_them() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let refused = |r: Reply, msg: &str| {
        assert_eq!(r.status, 400);
        let v = r.json();
        assert_eq!(v["code"], "invalid_argument");
        assert_eq!(v["msg"], msg);
    };
    refused(
        post_json(&server, "CreateSIPInboundTrunk", json!({})).await,
        "missing trunk",
    );
    refused(
        post_json(&server, "CreateSIPInboundTrunk", json!({"trunk": {"name": "open"}})).await,
        "for security, one of the fields must be set: AuthUsername+AuthPassword, AllowedAddresses or Numbers",
    );
    refused(
        post_json(
            &server,
            "CreateSIPInboundTrunk",
            json!({"trunk": {"sip_trunk_id": "ST_mine", "numbers": ["+1"]}}),
        )
        .await,
        "trunk id must not be set",
    );
    let first = server
        .create_sip_inbound_trunk(proto::SipInboundTrunkInfo {
            numbers: vec!["+15550100".into()],
            ..Default::default()
        })
        .unwrap();
    refused(
        post_json(
            &server,
            "CreateSIPInboundTrunk",
            json!({"trunk": {"numbers": ["+15550100"]}}),
        )
        .await,
        &format!(
            "Conflicting inbound SIP Trunks: \"<new>\" and \"{}\", using the same number(s) [\"+15550100\"] without AllowedNumbers set",
            first.sip_trunk_id
        ),
    );
    // The same number is fine for calls from a given caller.
    let r = post_json(
        &server,
        "CreateSIPInboundTrunk",
        json!({"trunk": {"numbers": ["+15550100"], "allowed_numbers": ["+15559999"]}}),
    )
    .await;
    assert_eq!(r.status, 200);
    refused(
        post_json(&server, "DeleteSIPTrunk", json!({})).await,
        "trunk ID is required",
    );
}

#[tokio::test]
#[allow(deprecated)] // the deprecated top-level fields are what the test is about
async fn dispatch_rules_in_protobuf_with_the_new_and_the_deprecated_fields() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let new_style: proto::SipDispatchRuleInfo = post_proto(
        &server,
        "CreateSIPDispatchRule",
        &proto::CreateSipDispatchRuleRequest {
            dispatch_rule: Some(proto::SipDispatchRuleInfo {
                name: "standup".into(),
                ..rule_info(&["ST_a"], "standup", "1234")
            }),
            ..Default::default()
        },
    )
    .await
    .decode();
    assert!(new_style.sip_dispatch_rule_id.starts_with("SDR_"));
    assert_eq!(new_style.name, "standup");
    assert_eq!(new_style.trunk_ids, ["ST_a"]);

    // Deprecated top-level fields, no trunks: a rule for every trunk.
    let legacy: proto::SipDispatchRuleInfo = post_proto(
        &server,
        "CreateSIPDispatchRule",
        &proto::CreateSipDispatchRuleRequest {
            rule: direct("lobby", "1234"),
            name: "lobby".into(),
            metadata: "m".into(),
            ..Default::default()
        },
    )
    .await
    .decode();
    assert!(legacy.trunk_ids.is_empty());
    assert_eq!(legacy.name, "lobby");
    assert_eq!(legacy.metadata, "m");
    assert_eq!(legacy.rule, direct("lobby", "1234"));

    let other = server
        .create_sip_dispatch_rule(rule_info(&["ST_b"], "b", ""))
        .unwrap();

    let list = |req: proto::ListSipDispatchRuleRequest| {
        let server = &server;
        async move {
            let resp: proto::ListSipDispatchRuleResponse =
                post_proto(server, "ListSIPDispatchRule", &req)
                    .await
                    .decode();
            resp.items
                .into_iter()
                .map(|r| r.sip_dispatch_rule_id)
                .collect::<Vec<_>>()
        }
    };
    let all = list(Default::default()).await;
    assert_eq!(
        all,
        sorted(vec![
            new_style.sip_dispatch_rule_id.clone(),
            legacy.sip_dispatch_rule_id.clone(),
            other.sip_dispatch_rule_id.clone()
        ])
    );
    // A trunk filter keeps the rules for every trunk.
    let for_a = list(proto::ListSipDispatchRuleRequest {
        trunk_ids: vec!["ST_a".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(
        for_a,
        sorted(vec![
            new_style.sip_dispatch_rule_id.clone(),
            legacy.sip_dispatch_rule_id.clone()
        ])
    );
    let by_id = list(proto::ListSipDispatchRuleRequest {
        dispatch_rule_ids: vec![other.sip_dispatch_rule_id.clone(), "SDR_gone".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(by_id, std::slice::from_ref(&other.sip_dispatch_rule_id));

    let deleted: proto::SipDispatchRuleInfo = post_proto(
        &server,
        "DeleteSIPDispatchRule",
        &proto::DeleteSipDispatchRuleRequest {
            sip_dispatch_rule_id: other.sip_dispatch_rule_id.clone(),
        },
    )
    .await
    .decode();
    assert_eq!(deleted, other, "the deleted rule comes back");
    let again = post_proto(
        &server,
        "DeleteSIPDispatchRule",
        &proto::DeleteSipDispatchRuleRequest {
            sip_dispatch_rule_id: other.sip_dispatch_rule_id.clone(),
        },
    )
    .await;
    assert_eq!(again.status, 404);
    assert_eq!(
        again.json()["msg"],
        "requested sip dispatch rule does not exist"
    );
    assert_eq!(server.sip_dispatch_rules().len(), 2);
}

#[tokio::test]
async fn a_rule_for_the_same_trunk_and_pin_is_refused_at_creation() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let first = server
        .create_sip_dispatch_rule(proto::SipDispatchRuleInfo {
            name: "weekly".into(),
            ..rule_info(&["ST_a"], "weekly", "4321")
        })
        .unwrap();
    let r = post_json(
        &server,
        "CreateSIPDispatchRule",
        json!({"dispatch_rule": {
            "rule": {"dispatch_rule_direct": {"room_name": "other", "pin": "4321"}},
            "trunk_ids": ["ST_b", "ST_a"],
        }}),
    )
    .await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["code"], "invalid_argument");
    assert_eq!(
        v["msg"],
        format!(
            "Dispatch rule for the same trunk, inbound number, number, and PIN combination already exists in dispatch rule \"{}\" \"weekly\"",
            first.sip_dispatch_rule_id
        )
    );
    // Another PIN on the same trunk, or the same PIN for every trunk, is a distinct rule.
    for body in [
        json!({"dispatch_rule": {"rule": {"dispatch_rule_direct": {"room_name": "x", "pin": "9999"}}, "trunk_ids": ["ST_a"]}}),
        json!({"dispatch_rule": {"rule": {"dispatch_rule_direct": {"room_name": "y", "pin": "4321"}}}}),
    ] {
        let r = post_json(&server, "CreateSIPDispatchRule", body).await;
        assert_eq!(r.status, 200, "{}", r.json());
    }
    let r = post_json(
        &server,
        "CreateSIPDispatchRule",
        json!({"dispatch_rule": {"name": "no rule"}}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["msg"], "missing rule");
}

#[tokio::test]
async fn lists_are_paged_by_after_id_and_limit() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    for i in 0..5 {
        server
            .create_sip_dispatch_rule(rule_info(&[], &format!("room{i}"), &format!("{i}")))
            .unwrap();
    }
    let all: Vec<String> = server
        .sip_dispatch_rules()
        .into_iter()
        .map(|r| r.sip_dispatch_rule_id)
        .collect();
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page: proto::ListSipDispatchRuleResponse = post_proto(
            &server,
            "ListSIPDispatchRule",
            &proto::ListSipDispatchRuleRequest {
                page: Some(proto::Pagination {
                    after_id: after.clone(),
                    limit: 2,
                }),
                ..Default::default()
            },
        )
        .await
        .decode();
        assert!(page.items.len() <= 2);
        let Some(last) = page.items.last() else { break };
        after = last.sip_dispatch_rule_id.clone();
        seen.extend(page.items.into_iter().map(|r| r.sip_dispatch_rule_id));
    }
    assert_eq!(seen, all);
    assert_eq!(server.sip_api_calls().get("ListSIPDispatchRule"), Some(&4));
}

#[tokio::test]
async fn without_the_sip_admin_grant_every_method_is_refused() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let room_admin = AccessToken::with_api_key(API_KEY, API_SECRET)
        .with_grants(VideoGrants {
            room_admin: true,
            room: "r".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    for token in [None, Some(room_admin)] {
        for method in [
            "ListSIPDispatchRule",
            "ListSIPInboundTrunk",
            "CreateSIPDispatchRule",
        ] {
            let r = post(&server, method, JSON, token.clone(), b"{}".to_vec()).await;
            assert_eq!(r.status, 401, "{method}");
            assert_eq!(r.json()["code"], "unauthenticated");
            assert_eq!(r.json()["msg"], "permissions denied");
        }
    }
    // A token signed with another secret never reaches Twirp: plain text, as livekit-server.
    let forged = AccessToken::with_api_key(API_KEY, "another-secret")
        .with_sip_grants(livekit_api::access_token::SIPGrants {
            admin: true,
            call: false,
        })
        .to_jwt()
        .unwrap();
    let r = post(
        &server,
        "ListSIPDispatchRule",
        JSON,
        Some(forged),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.content_type.starts_with("text/plain"),
        "{}",
        r.content_type
    );
    assert!(server.sip_dispatch_rules().is_empty());

    let r = post_json(&server, "CreateSIPParticipant", json!({})).await;
    assert_eq!(r.status, 501);
    assert_eq!(r.json()["code"], "unimplemented");
    let r = post_json(&server, "NoSuchMethod", json!({})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "bad_route");
}

#[tokio::test]
async fn an_outage_makes_the_service_unavailable_hang_or_slow() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    server
        .create_sip_dispatch_rule(rule_info(&[], "lobby", "1234"))
        .unwrap();
    let list = || post_json(&server, "ListSIPDispatchRule", json!({}));

    server.set_sip_outage(Some(SipOutage::Unavailable));
    let r = list().await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["code"], "unavailable");

    server.set_sip_outage(Some(SipOutage::Hang));
    let held = tokio::spawn({
        let url = format!(
            "{}/twirp/livekit.SIP/ListSIPDispatchRule",
            server.http_url()
        );
        let token = server.sip_admin_token().unwrap();
        async move {
            reqwest::Client::new()
                .post(url)
                .header("Content-Type", JSON)
                .bearer_auth(token)
                .body("{}")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "held while the outage lasts");
    server.set_sip_outage(None);
    let status = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("answered once the outage ends")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);

    server.set_sip_outage(Some(SipOutage::Slow(Duration::from_millis(300))));
    let started = std::time::Instant::now();
    let r = list().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"].as_array().map(Vec::len), Some(1));
    assert!(started.elapsed() >= Duration::from_millis(300));

    server.set_sip_outage(None);
    assert_eq!(list().await.status, 200);
    // Every request was counted, whatever its answer.
    assert_eq!(server.sip_api_calls().get("ListSIPDispatchRule"), Some(&4));
}
