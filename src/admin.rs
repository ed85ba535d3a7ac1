//! The admin HTTP API (DESIGN.md §"Admin HTTP API"): PINs for room owners, calls and
//! trunks for telephony admins, health, readiness and metrics for operations.
//!
//! JSON in and out; every error is `{ "error": "<code>", "reason": "<human text>" }`.
//! `/v1/*` needs `Authorization: Bearer <token>` (RFC 6750 §2.1), compared in constant
//! time; `/healthz`, `/readyz` and `/metrics` are open, so that load balancers and
//! Prometheus need no secret. Request bodies are parsed here, at the edge, into typed
//! values (`Pin`, `RoomName`, ...), so a bad request is refused with the field it is about.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

mod console;

use crate::call::registry::{CallId, CallRegistry};
use crate::config::{Language, SrtpPolicy};
use crate::ops::metrics::Metrics;
use crate::pins::{ParticipantName, Pin, PinNamespace, PinRole, RoomName};
use crate::store::{NewPin, PinFilter, Store, StoreError};
use crate::ingress::trunk::{SharedTrunkTable, TrunkId};

/// Largest request body accepted; a PIN request is a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long `/readyz` waits for the store before calling it unreachable.
const STORE_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the node should receive new calls: what `/readyz` reports, and what a SIP
/// load balancer's probe should follow.
#[derive(Debug, Default)]
pub struct Readiness {
    transports_bound: AtomicBool,
    draining: AtomicBool,
    /// Why the transports are not bound, when known (e.g. a bind error).
    transport_problem: Mutex<Option<String>>,
    /// Why the store cannot serve calls, as the store probe last found; `None` when it can.
    store_problem: Mutex<Option<String>>,
}

impl Readiness {
    pub fn new() -> Arc<Readiness> {
        Arc::new(Readiness::default())
    }

    /// The SIP transports are listening (set by the SIP driver once bound).
    pub fn set_transports_bound(&self, bound: bool) {
        self.transports_bound.store(bound, Ordering::Release);
        if bound {
            self.set_transport_problem(None);
        }
    }

    /// Records why the transports could not be bound.
    pub fn set_transport_problem(&self, problem: Option<String>) {
        if let Ok(mut p) = self.transport_problem.lock() {
            *p = problem;
        }
    }

    /// The node is shutting down: refuse new calls (`503`), finish the ones in progress.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Records what the store probe found (`None`: the store takes writes).
    pub fn set_store_problem(&self, problem: Option<String>) {
        if let Ok(mut p) = self.store_problem.lock() {
            *p = problem;
        }
    }

    /// Why the store cannot serve calls, if it cannot.
    pub fn store_problem(&self) -> Option<String> {
        self.store_problem.lock().ok().and_then(|p| p.clone())
    }

    pub fn transports_bound(&self) -> bool {
        self.transports_bound.load(Ordering::Acquire)
    }

    /// Why the node is not ready, leaving the store aside; `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.is_draining() {
            return Some("draining for shutdown".to_owned());
        }
        if !self.transports_bound() {
            let problem = self.transport_problem.lock().ok().and_then(|p| p.clone());
            return Some(match problem {
                Some(p) => format!("SIP transports not bound: {p}"),
                None => "SIP transports not bound".to_owned(),
            });
        }
        None
    }
}

/// The admin bearer token, kept as its SHA-256 digest so that comparing it takes the
/// same time whatever the presented token's length or content.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken(Sha256::digest(token.as_bytes()).into())
    }

    /// Constant-time check of a presented token.
    pub fn verify(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

/// What the admin API reads and acts on.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub trunks: Arc<SharedTrunkTable>,
    pub calls: Arc<CallRegistry>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// Replaced in place when SIGHUP brings a new `admin.token`.
    pub token: Arc<std::sync::RwLock<AdminToken>>,
}

/// A JSON error response.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    error: &'static str,
    reason: String,
}

impl ApiError {
    fn bad_request(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            reason: reason.into(),
        }
    }

    fn not_found(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            reason: reason.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.error, "reason": self.reason })),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::PinTaken { .. } => ApiError {
                status: StatusCode::CONFLICT,
                error: "pin_taken",
                reason: e.to_string(),
            },
            StoreError::InvalidWindow(reason) => ApiError::bad_request(reason),
            StoreError::HostCannotWait => ApiError::bad_request(e.to_string()),
            StoreError::PinSpaceExhausted { .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "pin_space_exhausted",
                reason: e.to_string(),
            },
            other => {
                tracing::error!(error = %other, "store error in admin API");
                ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    error: "store_error",
                    reason: "the PIN store failed; see the gateway log".to_owned(),
                }
            }
        }
    }
}

/// Builds the admin API.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/pins", get(list_pins).post(create_pin))
        .route("/v1/pins/{namespace}/{pin}", delete(revoke_pin))
        .route("/v1/calls", get(list_calls))
        .route("/v1/calls/{id}", delete(hang_up_call))
        .route("/v1/trunks", get(list_trunks))
        .route("/v1/stats", get(stats))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(v1)
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/ui", get(console::redirect))
        .route("/ui/", get(console::index))
        .route("/ui/{file}", get(console::asset))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the admin API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// Serves the admin API until `shutdown` completes, then finishes requests in flight.
pub async fn serve_with_shutdown(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match presented {
        Some(token)
            if state
                .token
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .verify(token.trim()) =>
        {
            next.run(request).await
        }
        _ => {
            let mut response = ApiError {
                status: StatusCode::UNAUTHORIZED,
                error: "unauthorized",
                reason: "a valid Authorization: Bearer token is required".to_owned(),
            }
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dialin\""),
            );
            response
        }
    }
}

/// `POST /v1/pins` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePin {
    room: RoomName,
    #[serde(default)]
    namespace: Option<PinNamespace>,
    #[serde(default)]
    pin: Option<Pin>,
    #[serde(default)]
    valid_from: Option<DateTime<Utc>>,
    #[serde(default)]
    valid_until: Option<DateTime<Utc>>,
    #[serde(default)]
    participant_name: Option<ParticipantName>,
    /// `participant` unless given.
    #[serde(default, deserialize_with = "role")]
    role: PinRole,
    /// Only for a participant PIN: its callers hold until a host is in the room.
    #[serde(default)]
    wait_for_host: bool,
}

/// A PIN role from the request: anything but `participant` or `host` (another word, another
/// case, `null`, a number) is refused with a reason naming the two there are.
fn role<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PinRole, D::Error> {
    struct Role;
    impl serde::de::Visitor<'_> for Role {
        type Value = PinRole;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a PIN role, `participant` or `host`")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<PinRole, E> {
            s.parse().map_err(E::custom)
        }
    }
    d.deserialize_str(Role)
}

async fn create_pin(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: CreatePin =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let namespace = req.namespace.unwrap_or_default();
    let Some(length) = state
        .trunks
        .load()
        .iter()
        .find(|t| t.pin_namespace == namespace)
        .map(|t| t.pin_length)
    else {
        return Err(ApiError::bad_request(format!(
            "no trunk uses PIN namespace {:?}, so no caller could use this PIN",
            namespace.as_str()
        )));
    };
    if let Some(pin) = &req.pin {
        if pin.len() != length {
            return Err(ApiError::bad_request(format!(
                "PIN namespace {:?} uses {length}-digit PINs, this PIN has {} digits",
                namespace.as_str(),
                pin.len()
            )));
        }
    }
    let record = state
        .store
        .create_pin(
            NewPin {
                namespace,
                room: req.room,
                pin: req.pin,
                length,
                valid_from: req.valid_from,
                valid_until: req.valid_until,
                participant_name: req.participant_name,
                role: req.role,
                wait_for_host: req.wait_for_host,
            },
            Utc::now(),
        )
        .await?;
    tracing::info!(
        namespace = %record.namespace,
        pin = %record.pin,
        room = %record.room,
        role = %record.role,
        wait_for_host = record.wait_for_host,
        "PIN created"
    );
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// `GET /v1/pins` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListPins {
    room: Option<String>,
    namespace: Option<String>,
    include_revoked: Option<bool>,
    /// PINs per page (default 100, at most 1000).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// PINs per page of `GET /v1/pins` unless asked otherwise, and at most.
const PIN_PAGE_DEFAULT: u32 = 100;
const PIN_PAGE_MAX: u32 = 1000;

/// The opaque cursor of a page: the last (namespace, pin) it held, hex-encoded.
fn encode_cursor(namespace: &str, pin: &str) -> String {
    format!("{namespace}/{pin}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(cursor: &str) -> Option<(String, String)> {
    if cursor.len() % 2 != 0 || cursor.len() > 512 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (ns, pin) = text.split_once('/')?;
    Some((ns.to_owned(), pin.to_owned()))
}

async fn list_pins(
    State(state): State<AppState>,
    query: Result<Query<ListPins>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let filter = PinFilter {
        room: non_empty(q.room)
            .map(|r| RoomName::parse(&r))
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("room: {e}")))?,
        namespace: non_empty(q.namespace)
            .map(|n| PinNamespace::parse(&n))
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("namespace: {e}")))?,
        include_revoked: q.include_revoked.unwrap_or(false),
    };
    let limit = match q.limit {
        None => PIN_PAGE_DEFAULT,
        Some(n) if (1..=PIN_PAGE_MAX).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "limit: {n} is not between 1 and {PIN_PAGE_MAX}"
            )))
        }
    };
    let after = match non_empty(q.cursor) {
        None => None,
        Some(c) => Some(
            decode_cursor(&c)
                .ok_or_else(|| ApiError::bad_request("cursor: not a cursor from this API"))?,
        ),
    };
    let pins = state
        .store
        .list_pins_page(
            &filter,
            after.as_ref().map(|(n, p)| (n.as_str(), p.as_str())),
            limit,
        )
        .await?;
    let next = (pins.len() == limit as usize)
        .then(|| pins.last().map(|p| encode_cursor(p.namespace.as_str(), p.pin.expose())))
        .flatten();
    Ok(Json(json!({ "pins": pins, "next_cursor": next })).into_response())
}

async fn revoke_pin(
    State(state): State<AppState>,
    Path((namespace, pin)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let namespace = PinNamespace::parse(&namespace)
        .map_err(|e| ApiError::bad_request(format!("namespace: {e}")))?;
    let pin = Pin::parse(&pin).map_err(|e| ApiError::bad_request(format!("pin: {e}")))?;
    if state.store.revoke(&namespace, &pin, Utc::now()).await? {
        tracing::info!(namespace = %namespace, pin = %pin, "PIN revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "no such PIN in this namespace (or already revoked)",
        ))
    }
}

async fn list_calls(State(state): State<AppState>) -> Response {
    Json(json!({ "calls": state.calls.list() })).into_response()
}

async fn hang_up_call(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = CallId::new(id);
    if state.calls.hang_up(&id) {
        tracing::info!(call_id = %id, "call hung up by admin");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such call in progress"))
    }
}

/// A trunk as the admin API shows it: everything but credentials.
#[derive(Debug, Serialize)]
struct TrunkView {
    id: TrunkId,
    numbers: Vec<String>,
    allowed_addresses: Vec<String>,
    digest_auth: bool,
    pin_namespace: PinNamespace,
    pin_length: usize,
    max_attempts: u32,
    language: Language,
    max_calls: u32,
    active_calls: usize,
    srtp: SrtpPolicy,
    expose_phone_number: bool,
    livekit_url: Option<String>,
}

async fn list_trunks(State(state): State<AppState>) -> Response {
    let table = state.trunks.load();
    let trunks: Vec<TrunkView> = table
        .iter()
        .map(|t| TrunkView {
            id: t.id.clone(),
            numbers: t.numbers.iter().map(|n| n.as_str().to_owned()).collect(),
            allowed_addresses: t
                .allowed_addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            digest_auth: t.auth.is_some(),
            pin_namespace: t.pin_namespace.clone(),
            pin_length: t.pin_length,
            max_attempts: t.max_attempts,
            language: t.language,
            max_calls: t.max_calls,
            active_calls: state.calls.count_for_trunk(&t.id),
            srtp: t.srtp,
            expose_phone_number: t.expose_phone_number,
            livekit_url: t.livekit.as_ref().and_then(|l| l.url.clone()),
        })
        .collect();
    Json(json!({ "trunks": trunks })).into_response()
}

/// The OpenAPI 3.1 description of this API, kept in the repository (`configs/openapi.json`)
/// and checked against the running API by schemathesis in CI.
pub const OPENAPI: &str = include_str!("../configs/openapi.json");

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        OPENAPI,
    )
        .into_response()
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason })),
        )
            .into_response()
    };
    if let Some(reason) = state.readiness.not_ready_reason() {
        return not_ready(reason);
    }
    if let Some(problem) = state.readiness.store_problem() {
        return not_ready(format!("store: {problem}"));
    }
    match tokio::time::timeout(STORE_PING_TIMEOUT, state.store.health_check(chrono::Utc::now())).await {
        Ok(Ok(())) => Json(json!({ "ready": true })).into_response(),
        Ok(Err(e @ StoreError::FileProblem { .. })) => not_ready(format!("store: {e}")),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "store unreachable");
            not_ready("store unreachable".to_owned())
        }
        Err(_) => not_ready("store did not answer in time".to_owned()),
    }
}

/// What the console's health page shows, from the counters behind `/metrics`.
async fn stats(State(state): State<AppState>) -> Response {
    let by_state: serde_json::Map<String, serde_json::Value> = state
        .calls
        .count_by_state()
        .iter()
        .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
        .collect();
    let history: Vec<serde_json::Value> = state
        .metrics
        .call_history()
        .into_iter()
        .map(|(at, calls)| json!({ "at": at, "calls": calls }))
        .collect();
    let ready = state.readiness.not_ready_reason().is_none() && state.readiness.store_problem().is_none();
    Json(json!({
        "calls_now": state.calls.len(),
        "calls_by_state": by_state,
        "history": history,
        "pin_failures_by_trunk": state.metrics.pin_failures_by_trunk(),
        "overloaded": state.metrics.is_overloaded(),
        "ready": ready,
    }))
    .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(&state.calls),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_verification_accepts_only_the_exact_token() {
        let t = AdminToken::new("s3cret");
        assert!(t.verify("s3cret"));
        assert!(!t.verify("s3cre"));
        assert!(!t.verify("s3cret "));
        assert!(!t.verify(""));
    }

    #[test]
    fn readiness_reports_draining_before_unbound_transports() {
        let r = Readiness::default();
        assert_eq!(
            r.not_ready_reason().as_deref(),
            Some("SIP transports not bound")
        );
        r.set_transports_bound(true);
        assert_eq!(r.not_ready_reason(), None);
        r.set_draining(true);
        assert_eq!(
            r.not_ready_reason().as_deref(),
            Some("draining for shutdown")
        );
    }
}
