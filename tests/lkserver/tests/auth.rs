//! The door: tokens are checked before the WebSocket upgrade, answered with HTTP statuses.
mod common;

use std::time::Duration;

use common::{rtc_url, token, API_KEY, API_SECRET};
use dialin_lkserver::TestServer;
use livekit_api::access_token::{AccessToken, VideoGrants};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Error as WsError;

/// Status and body of a refused upgrade, or `None` if it was accepted.
async fn upgrade_status(url: &str) -> Option<(u16, String)> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => None,
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Some((resp.status().as_u16(), body))
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

async fn http_get(addr: std::net::SocketAddr, target: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn token_signed_with_another_secret_is_refused_with_401_before_upgrade() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let bad = AccessToken::with_api_key(API_KEY, "not-the-secret")
        .with_identity("x")
        .with_grants(VideoGrants {
            room_join: true,
            room: "r".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    let (status, body) = upgrade_status(&rtc_url(server.url(), &bad, ""))
        .await
        .expect("must be refused");
    assert_eq!(status, 401);
    assert!(body.contains("invalid token"), "body: {body}");
    assert!(server.participants("r").await.unwrap().is_empty());
}

#[tokio::test]
async fn garbage_and_missing_tokens_are_refused_with_401() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    assert_eq!(
        upgrade_status(&rtc_url(server.url(), "not.a.jwt", ""))
            .await
            .map(|r| r.0),
        Some(401)
    );
    let url = format!("{}/rtc?protocol=16", server.url());
    assert_eq!(upgrade_status(&url).await.map(|r| r.0), Some(401));
}

#[tokio::test]
async fn expired_token_is_refused_with_401() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let now = common::unix_now();
    let claims = serde_json::json!({
        "exp": now - 120, "nbf": now - 600, "iss": API_KEY, "sub": "x",
        "video": {"roomJoin": true, "room": "r"}
    });
    let t = common::raw_jwt(&claims, API_SECRET);
    assert_eq!(
        upgrade_status(&rtc_url(server.url(), &t, ""))
            .await
            .map(|r| r.0),
        Some(401)
    );
    // The same claims, not yet expired, are accepted: the refusal was the expiry.
    let fresh = serde_json::json!({
        "exp": now + 600, "nbf": now - 600, "iss": API_KEY, "sub": "x",
        "video": {"roomJoin": true, "room": "r"}
    });
    assert!(upgrade_status(&rtc_url(
        server.url(),
        &common::raw_jwt(&fresh, API_SECRET),
        ""
    ))
    .await
    .is_none());
}

#[tokio::test]
async fn token_without_room_join_or_for_another_room_is_refused_with_401() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let no_join = AccessToken::with_api_key(API_KEY, API_SECRET)
        .with_identity("x")
        .with_grants(VideoGrants {
            room_join: false,
            room: "r".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    assert_eq!(
        upgrade_status(&rtc_url(server.url(), &no_join, ""))
            .await
            .map(|r| r.0),
        Some(401)
    );
    let (status, body) = upgrade_status(&rtc_url(server.url(), &token("r", "x"), "&room=other"))
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("permission denied"), "body: {body}");
}

#[tokio::test]
async fn token_without_identity_is_refused_with_400() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let now = common::unix_now();
    let anon = common::raw_jwt(
        &serde_json::json!({"exp": now + 600, "nbf": now - 10, "iss": API_KEY, "video": {"roomJoin": true, "room": "r"}}),
        API_SECRET,
    );
    assert_eq!(
        upgrade_status(&rtc_url(server.url(), &anon, ""))
            .await
            .map(|r| r.0),
        Some(400)
    );
}

#[tokio::test]
async fn rtc_validate_answers_200_for_a_good_token_and_401_for_a_bad_one() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let (ok, body) = http_get(
        server.http_addr(),
        &format!("/rtc/validate?access_token={}", token("r", "x")),
    )
    .await;
    assert_eq!(ok, 200, "{body}");
    let (bad, _) = http_get(server.http_addr(), "/rtc/validate?access_token=nope").await;
    assert_eq!(bad, 401);
    // validate never joins anyone
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(server.participants("r").await.unwrap().is_empty());
}

#[tokio::test]
async fn good_token_upgrades() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    assert!(upgrade_status(&rtc_url(server.url(), &token("r", "x"), ""))
        .await
        .is_none());
}
