//! The `http` PIN source against a meeting app's resolver on loopback: the signed `dialin`
//! request is verified the way the README tells apps to, each kind of answer gives its
//! verdict or error, and no error message ever holds the PIN or the caller's number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Notify;

use dialin::config::{HttpPinFormat, PinsHttpConfig, Secret};
use dialin::ingress::trunk::TrunkId;
use dialin::pins::http::{
    verify, HttpSource, SIGNATURE_HEADER, SIGNATURE_WINDOW_S, TIMESTAMP_HEADER,
};
use dialin::pins::source::{Grant, PinSource, SourceError, SourceKind, SourceQuery, SourceVerdict};
use dialin::pins::{Pin, PinNamespace, PinRole};
use dialin::privacy::PhoneNumber;

const SECRET: &str = "resolver-shared-secret";
const PIN: &str = "4815162342";
const CALLER: &str = "+33612345678";

/// What the resolver saw of the last signed request.
#[derive(Default)]
struct Seen {
    body: Option<serde_json::Value>,
    mapper_query: Option<HashMap<String, String>>,
}

#[derive(Clone)]
struct Resolver {
    seen: Arc<Mutex<Seen>>,
    /// Never notified: the slow route waits on it forever.
    never: Arc<Notify>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies the request as an app would; `None` if it is not dialin's.
fn verified(headers: &HeaderMap, body: &[u8]) -> Option<serde_json::Value> {
    let ts = headers.get(TIMESTAMP_HEADER)?.to_str().ok()?;
    let sig = headers.get(SIGNATURE_HEADER)?.to_str().ok()?;
    if !verify(
        SECRET.as_bytes(),
        ts,
        sig,
        body,
        now_unix(),
        SIGNATURE_WINDOW_S,
    ) {
        return None;
    }
    serde_json::from_slice(body).ok()
}

async fn room(
    State(r): State<Resolver>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, StatusCode> {
    let request = verified(&headers, &body).ok_or(StatusCode::UNAUTHORIZED)?;
    if request["pin"] != PIN {
        return Err(StatusCode::NOT_FOUND);
    }
    r.seen
        .lock()
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .body = Some(request);
    Ok(Json(json!({
        "room": "Weekly sync",
        "participant_name": "Phone guest",
        "participant_identity": "guest-42",
        "attributes": {"team": "blue", "sip.trunk": "forged", "sip.phoneNumber": "forged"},
        "metadata": "{\"source\":\"app\"}",
        "role": "host",
        "wait_for_host": false
    })))
}

async fn slow(State(r): State<Resolver>) -> StatusCode {
    r.never.notified().await;
    StatusCode::OK
}

async fn mapper(
    State(r): State<Resolver>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<serde_json::Value> {
    let id = query.get("id").cloned().unwrap_or_default();
    if let Ok(mut seen) = r.seen.lock() {
        seen.mapper_query = Some(query);
    }
    if id == PIN {
        Json(json!({
            "message": "Successfully retrieved conference mapping",
            "id": 4815162342u64,
            "conference": "weeklysync@conference.example"
        }))
    } else {
        // The reference mapper's answer to an id it does not know.
        Json(json!({"message": "No conference mapping was found", "id": id, "conference": false}))
    }
}

/// Starts the resolver; its base URL.
async fn start(resolver: Resolver) -> String {
    let app = Router::new()
        .route("/room", post(room))
        .route("/unknown", post(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/fail",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, PIN) }),
        )
        .route("/slow", post(slow))
        .route(
            "/badjson",
            post(|| async {
                (
                    [("content-type", "application/json")],
                    format!("{{\"room\": {PIN}"),
                )
            }),
        )
        .route("/mapper", get(mapper))
        .with_state(resolver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn resolver() -> (Resolver, String) {
    let r = Resolver {
        seen: Arc::default(),
        never: Arc::new(Notify::new()),
    };
    let base = start(r.clone()).await;
    (r, base)
}

fn source(url: &str, format: HttpPinFormat, timeout_ms: u64) -> HttpSource {
    let config = PinsHttpConfig {
        url: url.to_owned(),
        secret: Some(Secret::new(SECRET)),
        timeout_ms,
        format,
    };
    HttpSource::new(&config).expect("source")
}

async fn ask(source: &HttpSource, pin: &str) -> Result<SourceVerdict, SourceError> {
    let pin = Pin::parse(pin).expect("pin");
    let namespace = PinNamespace::default();
    let trunk = TrunkId::parse("carrier").expect("trunk");
    let caller = PhoneNumber::new(CALLER);
    let query = SourceQuery {
        pin: &pin,
        namespace: &namespace,
        trunk: &trunk,
        called: Some("+3315550000"),
        caller: &caller,
        expose_caller: false,
        call_id: "CA_http_1",
        now: chrono::Utc::now(),
    };
    source.resolve(&query).await
}

/// The error, checked to be the http source's and to hold neither the PIN nor the number.
fn failure(got: Result<SourceVerdict, SourceError>) -> String {
    let e = match got {
        Err(e) => e,
        Ok(v) => panic!("expected an error, got {v:?}"),
    };
    assert_eq!(e.source_kind, SourceKind::Http);
    let text = e.to_string();
    assert!(!text.contains(PIN), "the PIN leaked: {text}");
    assert!(!text.contains(CALLER), "the number leaked: {text}");
    text
}

#[tokio::test]
async fn a_signed_request_is_verified_and_its_room_granted_without_reserved_attributes() {
    let (r, base) = resolver().await;
    let source = source(&format!("{base}/room"), HttpPinFormat::Dialin, 2000);
    assert_eq!(source.kind(), SourceKind::Http);
    let got = ask(&source, PIN).await.expect("answer");
    assert_eq!(
        got,
        SourceVerdict::Room(Grant {
            room: "Weekly sync".into(),
            participant_name: Some("Phone guest".into()),
            participant_identity: Some("guest-42".into()),
            attributes: [("team".to_owned(), "blue".to_owned())].into(),
            metadata: Some("{\"source\":\"app\"}".into()),
            role: PinRole::Host,
            wait_for_host: false,
            ..Grant::default()
        })
    );
    let seen = r
        .seen
        .lock()
        .expect("lock")
        .body
        .clone()
        .expect("a verified request");
    assert_eq!(
        seen,
        json!({"pin": PIN, "namespace": "default", "trunk": "carrier",
            "called_number": "+3315550000", "caller": "••••5678", "call_id": "CA_http_1"})
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_resolver_and_reported_as_an_error() {
    let (_, base) = resolver().await;
    let config = PinsHttpConfig {
        url: format!("{base}/room"),
        secret: Some(Secret::new("not-the-resolver-secret")),
        timeout_ms: 2000,
        format: HttpPinFormat::Dialin,
    };
    let source = HttpSource::new(&config).expect("source");
    let text = failure(ask(&source, PIN).await);
    assert!(text.contains("401"), "{text}");
}

#[tokio::test]
async fn a_404_is_an_unknown_pin() {
    let (_, base) = resolver().await;
    let source = source(&format!("{base}/unknown"), HttpPinFormat::Dialin, 2000);
    assert_eq!(ask(&source, PIN).await, Ok(SourceVerdict::Unknown));
    // The resolver's own 404 for a PIN it does not have.
    let source2 = self::source(&format!("{base}/room"), HttpPinFormat::Dialin, 2000);
    assert_eq!(ask(&source2, "0000").await, Ok(SourceVerdict::Unknown));
}

#[tokio::test]
async fn a_500_is_an_error() {
    let (_, base) = resolver().await;
    let source = source(&format!("{base}/fail"), HttpPinFormat::Dialin, 2000);
    let text = failure(ask(&source, PIN).await);
    assert!(text.contains("HTTP 500"), "{text}");
}

#[tokio::test]
async fn a_resolver_slower_than_timeout_ms_is_an_error() {
    let (_, base) = resolver().await;
    let source = source(&format!("{base}/slow"), HttpPinFormat::Dialin, 200);
    let started = std::time::Instant::now();
    let text = failure(ask(&source, PIN).await);
    assert!(text.contains("no answer within 200 ms"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "gave up in time"
    );
}

#[tokio::test]
async fn bad_json_is_an_error_that_does_not_echo_the_body() {
    let (_, base) = resolver().await;
    let source = source(&format!("{base}/badjson"), HttpPinFormat::Dialin, 2000);
    let text = failure(ask(&source, PIN).await);
    assert!(text.contains("JSON"), "{text}");
}

#[tokio::test]
async fn a_refused_connection_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let source = source(&format!("http://{addr}/room"), HttpPinFormat::Dialin, 2000);
    failure(ask(&source, PIN).await);
}

#[tokio::test]
async fn jitsi_mapper_sends_the_id_and_takes_the_room_before_the_at() {
    let (r, base) = resolver().await;
    let source = source(
        &format!("{base}/mapper?tenant=acme"),
        HttpPinFormat::JitsiMapper,
        2000,
    );
    let got = ask(&source, PIN).await;
    assert_eq!(
        got,
        Ok(SourceVerdict::Room(Grant {
            room: "weeklysync".into(),
            ..Grant::default()
        }))
    );
    let query = r
        .seen
        .lock()
        .expect("lock")
        .mapper_query
        .clone()
        .expect("a request");
    assert_eq!(query.get("id").map(String::as_str), Some(PIN));
    assert_eq!(query.get("tenant").map(String::as_str), Some("acme"));
}

#[tokio::test]
async fn jitsi_mapper_unknown_id_is_an_unknown_pin() {
    let (_, base) = resolver().await;
    let source = source(&format!("{base}/mapper"), HttpPinFormat::JitsiMapper, 2000);
    assert_eq!(ask(&source, "1234567").await, Ok(SourceVerdict::Unknown));
}

#[tokio::test]
async fn jitsi_mapper_errors_do_not_leak_the_id_in_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let source = source(
        &format!("http://{addr}/mapper"),
        HttpPinFormat::JitsiMapper,
        2000,
    );
    failure(ask(&source, PIN).await);
}

#[test]
fn the_dialin_format_needs_a_secret_and_an_http_url() {
    let config = |url: &str, secret: Option<&str>| PinsHttpConfig {
        url: url.to_owned(),
        secret: secret.map(Secret::new),
        timeout_ms: 2000,
        format: HttpPinFormat::Dialin,
    };
    assert!(HttpSource::new(&config("https://app.example/pins", None)).is_err());
    assert!(HttpSource::new(&config("ftp://app.example/pins", Some(SECRET))).is_err());
    assert!(HttpSource::new(&config("not a url", Some(SECRET))).is_err());
    assert!(HttpSource::new(&config("https://app.example/pins", Some(SECRET))).is_ok());
}
