//! The gateway's LiveKit server API clients against the in-process LiveKit test server:
//! `RoomService.ListParticipants` and `SIP.ListSIPDispatchRule`/`ListSIPInboundTrunk` over
//! Twirp (protobuf), paging, and their typed failures.

use std::time::Duration;

use dialin::config::{LiveKitConfig, Secret};
use dialin::room::livekit::api::{ApiError, RoomServiceClient, SipClient, TwirpCode, API_TIMEOUT};
use dialin_lkserver::{proto, Signal, SipOutage, TestServer};

const KEY: &str = "devkey";
const SECRET: &str = "test-secret-for-dialin-livekit-api";

#[tokio::test]
async fn list_participants_sees_a_participant_with_its_attributes() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let alice = server
        .add_synthetic_participant("lobby", "alice", Signal::Silence)
        .await
        .unwrap();
    server
        .update_participant(proto::UpdateParticipantRequest {
            room: "lobby".into(),
            identity: "alice".into(),
            attributes: [("role".to_owned(), "host".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // From `[livekit]` as configured: the ws:// signal URL.
    let config = LiveKitConfig {
        url: server.url().to_owned(),
        api_key: KEY.to_owned(),
        api_secret: Some(Secret::new(SECRET)),
        ..LiveKitConfig::default()
    };
    let client = RoomServiceClient::from_config(&config).unwrap();
    let participants = client.list_participants("lobby").await.unwrap();
    assert_eq!(participants.len(), 1);
    let p = &participants[0];
    assert_eq!(p.identity, "alice");
    assert_eq!(p.sid, alice.sid());
    assert_eq!(p.attributes.get("role").map(String::as_str), Some("host"));
    assert_eq!(p.tracks.len(), 1, "its microphone track");

    // Nobody in a room that does not exist (livekit-server's answer too).
    assert!(client.list_participants("empty").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wrong_secret_is_refused_as_unauthenticated() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let client = RoomServiceClient::new(server.url(), KEY, "not-the-secret").unwrap();
    match client.list_participants("lobby").await {
        Err(ApiError::Refused { status, code, .. }) => {
            assert_eq!(status, 401);
            assert_eq!(code, TwirpCode::Unauthenticated);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unreachable() {
    // A port nothing listens on: bound, then released.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = RoomServiceClient::new(&format!("ws://{addr}"), KEY, SECRET).unwrap();
    let started = std::time::Instant::now();
    let result = client.list_participants("lobby").await;
    assert!(
        matches!(result, Err(ApiError::Unreachable { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "within the API timeout"
    );
}

#[tokio::test]
async fn a_failed_tls_handshake_is_unreachable() {
    // wss:// means HTTPS (rustls); a peer that closes at once fails the handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let client = RoomServiceClient::new(&format!("wss://{addr}"), KEY, SECRET).unwrap();
    let result = client.list_participants("lobby").await;
    assert!(
        matches!(result, Err(ApiError::Unreachable { .. })),
        "{result:?}"
    );
}

#[test]
fn a_config_without_a_secret_or_with_a_bad_url_is_refused_up_front() {
    let no_secret = LiveKitConfig {
        api_secret: None,
        ..LiveKitConfig::default()
    };
    assert!(matches!(
        RoomServiceClient::from_config(&no_secret),
        Err(ApiError::Config(_))
    ));
    assert!(matches!(
        RoomServiceClient::new("sip:lk.example.com", KEY, SECRET),
        Err(ApiError::Config(_))
    ));
}

// LiveKit's SIP service: dispatch rules and inbound trunks, read whole.

fn direct_rule(trunks: &[&str], room: &str, pin: &str) -> proto::SipDispatchRuleInfo {
    proto::SipDispatchRuleInfo {
        rule: Some(proto::SipDispatchRule {
            rule: Some(proto::sip_dispatch_rule::Rule::DispatchRuleDirect(
                proto::SipDispatchRuleDirect {
                    room_name: room.into(),
                    pin: pin.into(),
                },
            )),
        }),
        trunk_ids: trunks.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn sip_dispatch_rules_and_inbound_trunks_are_listed() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let trunk = server
        .create_sip_inbound_trunk(proto::SipInboundTrunkInfo {
            name: "carrier".into(),
            numbers: vec!["+15550100".into()],
            allowed_addresses: vec!["192.0.2.0/24".into()],
            ..Default::default()
        })
        .unwrap();
    let standup = server
        .create_sip_dispatch_rule(direct_rule(&[&trunk.sip_trunk_id], "standup", "1234"))
        .unwrap();
    let lobby = server
        .create_sip_dispatch_rule(direct_rule(&[], "lobby", ""))
        .unwrap();

    let config = LiveKitConfig {
        url: server.url().to_owned(),
        api_key: KEY.to_owned(),
        api_secret: Some(Secret::new(SECRET)),
        ..LiveKitConfig::default()
    };
    let client = SipClient::from_config(&config).unwrap();
    let mut expected = vec![standup, lobby];
    expected.sort_by(|a, b| a.sip_dispatch_rule_id.cmp(&b.sip_dispatch_rule_id));
    assert_eq!(client.list_dispatch_rules().await.unwrap(), expected);
    assert_eq!(client.list_inbound_trunks().await.unwrap(), [trunk]);
    let calls = server.sip_api_calls();
    assert_eq!(calls.get("ListSIPDispatchRule"), Some(&1), "one short page");
    assert_eq!(calls.get("ListSIPInboundTrunk"), Some(&1));
}

#[tokio::test]
async fn sip_lists_are_followed_over_several_pages() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    for i in 0..7 {
        server
            .create_sip_dispatch_rule(direct_rule(&[], &format!("room{i}"), &format!("{i:04}")))
            .unwrap();
        server
            .create_sip_inbound_trunk(proto::SipInboundTrunkInfo {
                numbers: vec![format!("+1555010{i}")],
                ..Default::default()
            })
            .unwrap();
    }
    let client = SipClient::with_page_limit(server.url(), KEY, SECRET, 3).unwrap();
    let rules = client.list_dispatch_rules().await.unwrap();
    assert_eq!(
        rules,
        server.sip_dispatch_rules(),
        "all 7, by id, none twice"
    );
    let trunks = client.list_inbound_trunks().await.unwrap();
    assert_eq!(trunks, server.sip_inbound_trunks());
    // 3 + 3 + 1: the short page ends the listing.
    assert_eq!(server.sip_api_calls().get("ListSIPDispatchRule"), Some(&3));

    // An exact multiple of the page takes one more, empty, page.
    let client = SipClient::with_page_limit(server.url(), KEY, SECRET, 7).unwrap();
    assert_eq!(client.list_dispatch_rules().await.unwrap().len(), 7);
    assert_eq!(server.sip_api_calls().get("ListSIPDispatchRule"), Some(&5));
}

#[tokio::test]
async fn sip_lists_with_a_wrong_secret_are_refused_as_unauthenticated() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let client = SipClient::new(server.url(), KEY, "not-the-secret").unwrap();
    match client.list_dispatch_rules().await {
        Err(ApiError::Refused { status, code, .. }) => {
            assert_eq!(status, 401);
            assert_eq!(code, TwirpCode::Unauthenticated);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn sip_lists_fail_typed_when_the_service_is_down_or_slow() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let client = SipClient::new(server.url(), KEY, SECRET).unwrap();

    server.set_sip_outage(Some(SipOutage::Unavailable));
    match client.list_inbound_trunks().await {
        Err(ApiError::Refused { status, code, .. }) => {
            assert_eq!(status, 503);
            assert_eq!(code, TwirpCode::Unavailable);
        }
        other => panic!("expected unavailable, got {other:?}"),
    }

    server.set_sip_outage(Some(SipOutage::Hang));
    let started = std::time::Instant::now();
    let result = client.list_dispatch_rules().await;
    assert!(
        matches!(result, Err(ApiError::Unreachable { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < API_TIMEOUT + Duration::from_secs(2));

    server.set_sip_outage(None);
    assert!(client.list_dispatch_rules().await.unwrap().is_empty());
}

#[tokio::test]
async fn sip_lists_from_an_unreachable_server_are_unreachable() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = SipClient::new(&format!("ws://{addr}"), KEY, SECRET).unwrap();
    let result = client.list_dispatch_rules().await;
    assert!(
        matches!(result, Err(ApiError::Unreachable { .. })),
        "{result:?}"
    );
}
