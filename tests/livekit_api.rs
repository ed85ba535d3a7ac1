//! The gateway's LiveKit server API client against the in-process LiveKit test server:
//! `RoomService.ListParticipants` over Twirp (protobuf), and its typed failures.

use std::time::Duration;

use dialin::config::{LiveKitConfig, Secret};
use dialin::room::livekit::api::{ApiError, RoomServiceClient, TwirpCode};
use dialin_lkserver::{proto, Signal, TestServer};

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
