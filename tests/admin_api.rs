//! The admin HTTP API over a real TCP listener on loopback: every endpoint, bearer-token
//! auth, and the 400/401/404/409 answers, all as JSON.

use std::sync::Arc;

use chrono::Utc;
use dialin::admin::{self, AdminToken, AppState, Readiness};
use dialin::call::registry::{CallCommand, CallId, CallRegistry, CallState, NewCall};
use dialin::config::Config;
use dialin::ops::metrics::Metrics;
use dialin::pins::RoomName;
use dialin::privacy::PhoneNumber;
use dialin::store::Store;
use dialin::ingress::trunk::{SharedTrunkTable, TrunkId, TrunkTable};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "test-token-0123";

const CONFIG: &str = r#"
[admin]
token = "unused-here"

[[trunk]]
id = "carrier"
numbers = ["+33 1 23 45 67 89"]
allowed_addresses = ["192.0.2.0/24"]
auth = { username = "carrier-user", password = "hunter2-secret" }
pin_length = 6

[[trunk]]
id = "pbx"
allowed_addresses = ["198.51.100.7"]
pin_namespace = "office"
pin_length = 4
language = "fr"
"#;

struct Api {
    base: String,
    client: reqwest::Client,
    state: AppState,
}

impl Api {
    async fn start() -> Api {
        let config = Config::parse(CONFIG, |_| None).unwrap();
        let state = AppState {
            store: Store::open("sqlite::memory:", 1).await.unwrap(),
            trunks: Arc::new(SharedTrunkTable::new(TrunkTable::new(config.trunks))),
            calls: CallRegistry::new(),
            metrics: Arc::new(Metrics::new()),
            readiness: Readiness::new(),
            token: std::sync::Arc::new(std::sync::RwLock::new(AdminToken::new(TOKEN))),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(admin::serve(listener, state.clone()));
        // Loopback only: never let an environment proxy see the requests.
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Api {
            base,
            client,
            state,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

fn assert_json_error(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a reason is given: {body}"
    );
}

#[tokio::test]
async fn healthz_answers_without_a_token() {
    let api = Api::start().await;
    let resp = api.client.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_v1_endpoint_refuses_a_missing_or_wrong_token_with_json_401() {
    let api = Api::start().await;
    let endpoints = [
        (reqwest::Method::GET, "/v1/pins"),
        (reqwest::Method::POST, "/v1/pins"),
        (reqwest::Method::DELETE, "/v1/pins/default/123456"),
        (reqwest::Method::GET, "/v1/calls"),
        (reqwest::Method::DELETE, "/v1/calls/abc"),
        (reqwest::Method::GET, "/v1/trunks"),
        (reqwest::Method::GET, "/v1/stats"),
    ];
    for (method, path) in endpoints {
        for auth in [
            None,
            Some("Bearer wrong-token"),
            Some("Basic dGVzdDp0ZXN0"),
            Some(TOKEN),
        ] {
            let mut req = api.client.request(method.clone(), api.url(path));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            assert!(resp.headers().get("www-authenticate").is_some());
            let body: Value = resp.json().await.unwrap();
            assert_json_error(&body, "unauthorized");
        }
    }
}

#[tokio::test]
async fn created_pin_is_drawn_with_its_namespace_length_and_returned_with_201() {
    let api = Api::start().await;
    let (status, body) = api.post("/v1/pins", r#"{"room": "standup"}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let pin = body["pin"].as_str().unwrap();
    assert_eq!(pin.len(), 6, "namespace default uses 6 digits");
    assert!(pin.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(body["namespace"], "default");
    assert_eq!(body["room"], "standup");

    let (status, body) = api
        .post(
            "/v1/pins",
            r#"{"room": "board", "namespace": "office", "participant_name": "Reception",
                "valid_from": "2030-01-01T09:00:00Z", "valid_until": "2030-01-01T11:00:00+01:00"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["pin"].as_str().unwrap().len(), 4);
    assert_eq!(body["participant_name"], "Reception");
    assert_eq!(
        body["valid_until"], "2030-01-01T10:00:00Z",
        "times are normalised to UTC"
    );
}

#[tokio::test]
async fn explicit_pin_already_taken_gets_409() {
    let api = Api::start().await;
    let (status, body) = api
        .post("/v1/pins", r#"{"room": "a", "pin": "012345"}"#)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["pin"], "012345");
    let (status, body) = api
        .post("/v1/pins", r#"{"room": "b", "pin": "012345"}"#)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_json_error(&body, "pin_taken");
}

#[tokio::test]
async fn bad_pin_requests_get_400_with_a_reason() {
    let api = Api::start().await;
    let cases = [
        (r#"{"room": "a", "pin": "12ab56"}"#, "digits"),
        (r#"{"room": "a", "pin": "12345"}"#, "6-digit"),
        (r#"{"room": "a", "pin": 123456}"#, "invalid type"),
        (r#"{"room": "a", "colour": "blue"}"#, "unknown field"),
        (r#"{"namespace": "default"}"#, "missing field `room`"),
        (r#"{"room": ""}"#, "room name"),
        (
            r#"{"room": "a", "namespace": "nobody-uses-this"}"#,
            "no trunk uses",
        ),
        (
            r#"{"room": "a", "valid_from": "2030-01-02T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"}"#,
            "later than",
        ),
        (
            r#"{"room": "a", "valid_until": "2001-01-01T00:00:00Z"}"#,
            "past",
        ),
        (r#"{"room": "a", "valid_from": "tomorrow"}"#, "input"),
        (r#"{"room": "a""#, "EOF"),
    ];
    for (body, expected) in cases {
        let (status, answer) = api.post("/v1/pins", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_json_error(&answer, "bad_request");
        let reason = answer["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(expected),
            "{body}: reason {reason:?} should mention {expected:?}"
        );
    }
}

#[tokio::test]
async fn pins_carry_their_role_and_wait_for_host_from_create_to_list() {
    let api = Api::start().await;
    let (status, host) = api
        .post(
            "/v1/pins",
            r#"{"room": "board", "pin": "100001", "role": "host"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{host}");
    assert_eq!(
        (&host["role"], &host["wait_for_host"]),
        (&json!("host"), &json!(false))
    );
    let (status, waiting) = api
        .post(
            "/v1/pins",
            r#"{"room": "board", "pin": "100002", "role": "participant", "wait_for_host": true}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{waiting}");
    assert_eq!(
        (&waiting["role"], &waiting["wait_for_host"]),
        (&json!("participant"), &json!(true))
    );
    let (status, plain) = api
        .post("/v1/pins", r#"{"room": "board", "pin": "100003"}"#)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    assert_eq!(
        (&plain["role"], &plain["wait_for_host"]),
        (&json!("participant"), &json!(false)),
        "a participant that does not wait unless asked"
    );

    let (status, page) = api.get("/v1/pins?room=board").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        page["pins"],
        json!([host, waiting, plain]),
        "read back as created"
    );
    let (_, first) = api.get("/v1/pins?room=board&limit=1").await;
    assert_eq!(first["pins"][0]["role"], "host");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = api
        .get(&format!("/v1/pins?room=board&limit=1&cursor={cursor}"))
        .await;
    assert_eq!(second["pins"][0]["wait_for_host"], true);
}

#[tokio::test]
async fn a_host_pin_that_waits_and_an_unknown_role_get_400_with_a_reason() {
    let api = Api::start().await;
    let (status, body) = api
        .post(
            "/v1/pins",
            r#"{"room": "a", "role": "host", "wait_for_host": true}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_json_error(&body, "bad_request");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("wait_for_host applies to participant PINs"),
        "{reason}"
    );

    for bad in [r#""owner""#, r#""Host""#, "null", "1"] {
        let request = format!(r#"{{"room": "a", "role": {bad}}}"#);
        let (status, body) = api.post("/v1/pins", &request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request} -> {body}");
        assert_json_error(&body, "bad_request");
        let reason = body["reason"].as_str().unwrap();
        assert!(
            reason.contains("participant") && reason.contains("host"),
            "{request}: reason {reason:?} should name the roles there are"
        );
    }
    let (status, body) = api
        .post("/v1/pins", r#"{"room": "a", "wait_for_host": "yes"}"#)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        api.get("/v1/pins").await.1["pins"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was created"
    );
}

#[tokio::test]
async fn pin_list_filters_by_room_and_namespace() {
    let api = Api::start().await;
    for body in [
        r#"{"room": "x", "pin": "111111"}"#,
        r#"{"room": "y", "pin": "222222"}"#,
        r#"{"room": "x", "namespace": "office", "pin": "3333"}"#,
    ] {
        assert_eq!(api.post("/v1/pins", body).await.0, StatusCode::CREATED);
    }
    let pins = |v: Value| -> Vec<String> {
        v["pins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pin"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        pins(api.get("/v1/pins").await.1),
        ["111111", "222222", "3333"]
    );
    assert_eq!(pins(api.get("/v1/pins?room=x").await.1), ["111111", "3333"]);
    assert_eq!(pins(api.get("/v1/pins?namespace=office").await.1), ["3333"]);
    assert_eq!(
        pins(api.get("/v1/pins?room=x&namespace=default").await.1),
        ["111111"]
    );
    assert_eq!(
        pins(api.get("/v1/pins?room=&namespace=").await.1).len(),
        3,
        "empty filters mean no filter"
    );
    let (status, body) = api.get("/v1/pins?colour=blue").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_json_error(&body, "bad_request");
}

#[tokio::test]
async fn revoking_a_pin_answers_204_then_404() {
    let api = Api::start().await;
    assert_eq!(
        api.post("/v1/pins", r#"{"room": "x", "pin": "654321"}"#)
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, body) = api.delete("/v1/pins/default/654321").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = api.delete("/v1/pins/default/654321").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_json_error(&body, "not_found");
    assert_eq!(
        api.delete("/v1/pins/office/654321").await.0,
        StatusCode::NOT_FOUND,
        "other namespace"
    );
    let (status, body) = api.delete("/v1/pins/default/65x321").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_json_error(&body, "bad_request");
    assert!(
        api.get("/v1/pins").await.1["pins"]
            .as_array()
            .unwrap()
            .is_empty(),
        "revoked PINs are not listed"
    );
    assert_eq!(
        api.get("/v1/pins?include_revoked=true").await.1["pins"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn calls_are_listed_masked_and_can_be_hung_up() {
    let api = Api::start().await;
    let (guard, mut commands) = api
        .state
        .calls
        .register(NewCall {
            id: CallId::new("call-1@192.0.2.10"),
            trunk: TrunkId::parse("carrier").unwrap(),
            caller: PhoneNumber::new("+33612345678"),
            started_at: Utc::now(),
            node_limit: 10,
            trunk_limit: 10,
        })
        .unwrap();
    guard.set_state(CallState::CollectingPin);
    let (status, body) = api.get("/v1/calls").await;
    assert_eq!(status, StatusCode::OK);
    let call = &body["calls"][0];
    assert_eq!(call["id"], "call-1@192.0.2.10");
    assert_eq!(call["trunk"], "carrier");
    assert_eq!(call["caller"], "••••5678");
    assert_eq!(call["state"], "collecting_pin");
    assert_eq!(call["room"], Value::Null);
    assert!(call["started_at"].as_str().is_some());
    assert!(
        !body.to_string().contains("612345678"),
        "no full number: {body}"
    );

    guard.set_state(CallState::InRoom);
    guard.set_room(Some(RoomName::parse("standup").unwrap()));
    guard.set_quality(dialin::call::registry::CallQuality {
        packets_received: 500,
        packets_lost: 5,
        late_frames: 2,
        jitter_ms: 3.5,
    });
    let (_, body) = api.get("/v1/calls").await;
    assert_eq!(body["calls"][0]["state"], "in_room");
    assert_eq!(body["calls"][0]["room"], "standup");
    assert_eq!(
        body["calls"][0]["quality"],
        json!({ "packets_received": 500, "packets_lost": 5, "late_frames": 2, "jitter_ms": 3.5 }),
        "the call's audio figures"
    );
    let (status, stats) = api.get("/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["calls_now"], 1);
    assert_eq!(stats["calls_by_state"]["in_room"], 1);
    assert_eq!(stats["calls_by_state"]["collecting_pin"], 0);

    assert_eq!(
        api.delete("/v1/calls/call-1@192.0.2.10").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(commands.recv().await, Some(CallCommand::HangUp));
    let (status, body) = api.delete("/v1/calls/no-such-call").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_json_error(&body, "not_found");

    drop(guard);
    assert_eq!(api.get("/v1/calls").await.1, json!({ "calls": [] }));
}

#[tokio::test]
async fn trunks_are_listed_without_secrets() {
    let api = Api::start().await;
    let (status, body) = api.get("/v1/trunks").await;
    assert_eq!(status, StatusCode::OK);
    let text = body.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("carrier-user"), "{text}");
    let trunks = body["trunks"].as_array().unwrap();
    assert_eq!(trunks.len(), 2);
    assert_eq!(trunks[0]["id"], "carrier");
    assert_eq!(trunks[0]["numbers"], json!(["+33123456789"]));
    assert_eq!(trunks[0]["allowed_addresses"], json!(["192.0.2.0/24"]));
    assert_eq!(trunks[0]["digest_auth"], true);
    assert_eq!(trunks[1]["pin_namespace"], "office");
    assert_eq!(trunks[1]["language"], "fr");
    assert_eq!(trunks[1]["allowed_addresses"], json!(["198.51.100.7/32"]));
}

#[tokio::test]
async fn readyz_follows_transports_draining_and_the_store() {
    let api = Api::start().await;
    let ready = || async {
        let resp = api.client.get(api.url("/readyz")).send().await.unwrap();
        (resp.status(), resp.json::<Value>().await.unwrap())
    };
    let (status, body) = ready().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["reason"].as_str().unwrap().contains("transports"),
        "{body}"
    );

    api.state.readiness.set_transports_bound(true);
    assert_eq!(ready().await.0, StatusCode::OK);

    api.state.readiness.set_draining(true);
    let (status, body) = ready().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["reason"].as_str().unwrap().contains("draining"),
        "{body}"
    );

    api.state.readiness.set_draining(false);
    api.state.store.close().await;
    let (status, body) = ready().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["reason"].as_str().unwrap().contains("store"), "{body}");
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text_format_without_a_token() {
    let api = Api::start().await;
    api.state.metrics.sip_request("INVITE");
    let resp = api.client.get(api.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("dialin_sip_requests_total{method=\"INVITE\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE dialin_calls_active gauge"));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("dialin_"), "{line}");
    }
}

#[tokio::test]
async fn unknown_endpoint_gets_a_json_404() {
    let api = Api::start().await;
    let (status, body) = api.get("/v2/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_json_error(&body, "not_found");
}

#[tokio::test]
async fn stats_follow_the_counters_behind_metrics() {
    let api = Api::start().await;
    let (status, stats) = api.get("/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["calls_now"], 0);
    assert_eq!(stats["history"], json!([]), "no sample yet");
    assert_eq!(stats["overloaded"], false);
    api.state.metrics.pin_failure("carrier");
    api.state.metrics.pin_failure("carrier");
    api.state.metrics.pin_failure("pbx");
    api.state.metrics.set_overloaded(true);
    let at = Utc::now();
    api.state.metrics.sample_calls(at, 7);
    let (_, stats) = api.get("/v1/stats").await;
    assert_eq!(stats["pin_failures_by_trunk"], json!({ "carrier": 2, "pbx": 1 }));
    assert_eq!(stats["overloaded"], true);
    assert_eq!(stats["history"][0]["calls"], 7);
    let text = api
        .client
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("dialin_pin_failures_total{trunk=\"carrier\"} 2"), "the same counters: {text}");
    // An hour of samples is kept, no more.
    for i in 0..100 {
        api.state.metrics.sample_calls(at + chrono::Duration::minutes(i), i as usize);
    }
    let (_, stats) = api.get("/v1/stats").await;
    assert_eq!(stats["history"].as_array().map(Vec::len), Some(60));
    assert_eq!(stats["history"][59]["calls"], 99);
}

#[tokio::test]
async fn the_console_is_served_with_its_content_security_policy_and_no_token() {
    let api = Api::start().await;
    let resp = api.client.get(api.url("/ui/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(
        resp.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8")
    );
    for file in ["console.js", "console.css", "i18n.js"] {
        let resp = api.client.get(api.url(&format!("/ui/{file}"))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{file}");
        assert!(resp.headers().get("content-security-policy").is_some(), "{file}");
    }
    for bad in ["/ui/..%2Fadmin.rs", "/ui/nope.js"] {
        let resp = api.client.get(api.url(bad)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{bad}");
    }
}
