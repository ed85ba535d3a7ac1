//! The `http` PIN source: the meeting app answers "where does this PIN lead?" from its own
//! endpoint (`[pins.http]`), so its PINs never have to be copied into dialin's store.
//!
//! ```text
//!  caller keys PIN#  ─►  PinSources::resolve ─► HttpSource::resolve
//!                            build_request(query, now)           (no IO)
//!                            ──POST url  {"pin", …}  + X-Dialin-Signature ──► meeting app
//!                            ◄── 200 {"room", …} | 404 | anything else ──
//!                            parse_answer(status, body)          (no IO)
//!                        ◄─  Room(Grant) | Unknown | SourceError
//! ```
//!
//! The request is built and the answer read by pure functions (`build_request`,
//! `parse_answer`); [`HttpSource`] only carries them over reqwest (rustls on ring, Mozilla's
//! roots compiled in, as the LiveKit API client), follows no redirect and gives up after
//! `timeout_ms`, connection included. An answer is read up to [`MAX_ANSWER`] bytes.
//!
//! # Format `dialin`
//!
//! `POST url` with `Content-Type: application/json` and the body
//! `{"pin", "namespace", "trunk", "called_number", "caller", "call_id"}`: `called_number` is
//! `null` when the Request-URI had no number, and `caller` is masked (`••••5678`) unless the
//! trunk sets `expose_phone_number`. Two headers sign it:
//!
//! - `X-Dialin-Timestamp`: the Unix time of the request, in seconds;
//! - `X-Dialin-Signature`: `v1=` and the lowercase hex HMAC-SHA256, keyed with
//!   `[pins.http] secret`, of the timestamp, a `.`, and the raw body bytes ([`sign`]).
//!
//! A resolver verifies a request before it looks at the PIN ([`verify`] does all three
//! steps): it recomputes the HMAC over `"<X-Dialin-Timestamp>.<raw body>"`, using the body
//! exactly as received (before any JSON parsing, which could reorder or re-space it); it
//! compares its result with the header in constant time (a plain `==` leaks, through its
//! timing, how many leading characters matched); and it refuses a timestamp more than
//! [`SIGNATURE_WINDOW_S`] (5 minutes) away from its own clock, so that a recorded request
//! cannot be replayed later. For example, with the secret `s3cret-s3cret-s3cret`, a request
//! sent at 1700000000 with the body `{"pin":"1234"}` carries
//! `X-Dialin-Timestamp: 1700000000` and, the HMAC-SHA256 of `1700000000.{"pin":"1234"}`,
//! `X-Dialin-Signature: v1=5d4c8383123b2dac09563ea98bf546251366b7941d4d92300af0740996ed44ff`
//! (`printf '%s' '1700000000.{"pin":"1234"}' | openssl dgst -sha256 -hmac s3cret-s3cret-s3cret`
//! gives the same hex); a resolver with a 5-minute window accepts it from 1699999700 to
//! 1700000300 and refuses it after.
//!
//! The resolver answers:
//!
//! - `200` with `{"room", "participant_name"?, "participant_identity"?, "attributes"?,
//!   "metadata"?, "role"? ("participant" | "host"), "wait_for_host"? (bool)}`: the PIN
//!   leads to `room`. `room` must be a valid room name and `participant_name` a valid
//!   participant name; `attributes` is an object of strings, at most [`MAX_ATTRIBUTES`]
//!   entries, keys up to [`MAX_ATTRIBUTE_KEY`] bytes, values up to [`MAX_ATTRIBUTE_VALUE`]
//!   bytes. Attribute keys starting with `sip.` (in any case) are dropped: they are
//!   dialin's own (`sip.trunk`, `sip.role`, …), which a resolver cannot overwrite.
//! - `404`: the PIN is unknown.
//! - Anything else (another status, a redirect, JSON that does not fit, a body over
//!   [`MAX_ANSWER`] bytes, no answer in time, no connection) is a [`SourceError`]: the
//!   source could not answer, and the caller is told the service is unavailable rather than
//!   that the PIN is wrong.
//!
//! # Format `jitsi-mapper`
//!
//! Jitsi's conference mapper API, as Jigasi deployments already run it: `GET url?id=<PIN>`
//! (appended with `&` when the URL has a query), answered
//! `200 {"message", "id", "conference": "room@conference.meet.example"}`. The room is the
//! part of `conference` before `@`, kept as the mapper spells it (neither lowercased nor
//! URL-decoded: the LiveKit room must be named the same) and checked as a room name. The
//! reference mapper and its clones answer an unknown id with a `200` too,
//! `{"message": "No conference mapping was found", "id": …, "conference": false}`; that, a
//! `conference` that is missing, `null` or empty, and a `404` are all "unknown". The format has no signature of its own; when a secret is configured
//! dialin still sends the two headers, signed over an empty body, so that a proxy in front
//! of the mapper can check that the request comes from dialin and is fresh (the signature
//! does not cover the id in the URL).
//!
//! Nothing this module reports (errors, logs) holds the PIN or the caller's full number.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::{HttpPinFormat, PinsHttpConfig};
use crate::pins::source::{
    Grant, PinSource, SourceError, SourceFuture, SourceKind, SourceQuery, SourceVerdict,
};
use crate::pins::{ParticipantName, PinError, PinRole, RoomName};

/// Header carrying the request's Unix time, in seconds.
pub const TIMESTAMP_HEADER: &str = "X-Dialin-Timestamp";
/// Header carrying `v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "X-Dialin-Signature";
/// How far a resolver should let a request's timestamp be from its clock: wide enough for
/// clock skew and a slow network, narrow enough that a recorded request soon expires.
pub const SIGNATURE_WINDOW_S: u64 = 300;
/// Largest answer read: a grant is a few hundred bytes, its attributes at most ~36 KiB.
pub const MAX_ANSWER: usize = 64 * 1024;
/// Most attributes an answer may give the participant.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest attribute key, in bytes.
pub const MAX_ATTRIBUTE_KEY: usize = 128;
/// Longest attribute value, in bytes.
pub const MAX_ATTRIBUTE_VALUE: usize = 1024;
/// Longest participant identity, in bytes (LiveKit identities are short opaque strings).
const MAX_IDENTITY: usize = 256;
/// The signature scheme's version tag; a new scheme would be `v2=` alongside.
const SIGNATURE_VERSION: &str = "v1=";
/// Attribute prefix reserved to dialin's own participant attributes.
const RESERVED_ATTRIBUTE_PREFIX: &str = "sip.";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Dialin-Signature` value for a request sent at `timestamp` (Unix seconds) with
/// `body`: `v1=` and the lowercase hex HMAC-SHA256 of `"<timestamp>.<body>"` keyed with
/// `secret`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    let mut out = String::with_capacity(SIGNATURE_VERSION.len() + tag.len() * 2);
    out.push_str(SIGNATURE_VERSION);
    for b in tag {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Checks a request as a resolver receives it: `timestamp_header` must be Unix seconds
/// within `window_s` of `now_unix` (either way), and `signature_header` must be
/// [`sign`]`(secret, timestamp, body)`, compared in constant time. `body` is the raw body,
/// as received.
pub fn verify(
    secret: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_unix: u64,
    window_s: u64,
) -> bool {
    let Ok(timestamp) = timestamp_header.trim().parse::<u64>() else {
        return false;
    };
    if timestamp.abs_diff(now_unix) > window_s {
        return false;
    }
    let Some(hex) = signature_header.trim().strip_prefix(SIGNATURE_VERSION) else {
        return false;
    };
    let Some(tag) = decode_hex(hex) else {
        return false;
    };
    // `verify_slice` compares in constant time (and refuses a tag of the wrong length).
    mac(secret, timestamp, body).verify_slice(&tag).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let pairs = hex.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| match pair {
            [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
            _ => None,
        })
        .collect()
}

/// Why an answer was not understood. Messages name the problem, never a value the
/// resolver sent (which could echo the PIN).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AnswerError {
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer is not the expected JSON ({0})")]
    Json(String),
    #[error("answer's room: {0}")]
    Room(PinError),
    #[error("answer's participant_name: {0}")]
    ParticipantName(PinError),
    #[error("answer's participant_identity must be 1 to {MAX_IDENTITY} bytes without control characters")]
    ParticipantIdentity,
    #[error("answer has more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    #[error("answer has an attribute key that is empty or longer than {MAX_ATTRIBUTE_KEY} bytes")]
    AttributeKey,
    #[error("answer has an attribute value longer than {MAX_ATTRIBUTE_VALUE} bytes")]
    AttributeValue,
    #[error("answer's conference is neither a string nor false")]
    Conference,
}

/// The request body of the `dialin` format.
#[derive(Serialize)]
struct DialinRequest<'a> {
    pin: &'a str,
    namespace: &'a str,
    trunk: &'a str,
    called_number: Option<&'a str>,
    caller: String,
    call_id: &'a str,
}

/// A `200` answer of the `dialin` format.
#[derive(Deserialize)]
struct DialinAnswer {
    room: String,
    #[serde(default)]
    participant_name: Option<String>,
    #[serde(default)]
    participant_identity: Option<String>,
    #[serde(default)]
    attributes: Option<BTreeMap<String, String>>,
    #[serde(default)]
    metadata: Option<String>,
    #[serde(default)]
    role: Option<PinRole>,
    #[serde(default)]
    wait_for_host: Option<bool>,
}

/// An HTTP method this source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
}

/// One request to the resolver, built without IO.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) url: reqwest::Url,
    /// Extra headers (signature, content type).
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

/// The request asking `url` (in `format`) where `query`'s PIN leads, signed with `secret`
/// when there is one. The timestamp is `query.now`.
pub(crate) fn build_request(
    format: HttpPinFormat,
    url: &reqwest::Url,
    secret: Option<&[u8]>,
    query: &SourceQuery<'_>,
) -> Request {
    let timestamp = u64::try_from(query.now.timestamp()).unwrap_or(0);
    let (method, url, body) = match format {
        HttpPinFormat::Dialin => {
            let body = DialinRequest {
                pin: query.pin.expose(),
                namespace: query.namespace.as_str(),
                trunk: query.trunk.as_str(),
                called_number: query.called,
                caller: query.caller_for_source(),
                call_id: query.call_id,
            };
            // Serialising strings into a Vec cannot fail.
            let body = serde_json::to_vec(&body).unwrap_or_default();
            (Method::Post, url.clone(), body)
        }
        HttpPinFormat::JitsiMapper => {
            let mut url = url.clone();
            url.query_pairs_mut().append_pair("id", query.pin.expose());
            (Method::Get, url, Vec::new())
        }
    };
    let mut headers = Vec::new();
    if method == Method::Post {
        headers.push(("Content-Type", "application/json".to_owned()));
    }
    if let Some(secret) = secret {
        headers.push((TIMESTAMP_HEADER, timestamp.to_string()));
        headers.push((SIGNATURE_HEADER, sign(secret, timestamp, &body)));
    }
    Request {
        method,
        url,
        headers,
        body,
    }
}

/// What the resolver's answer (`status`, `body`) says, in `format`.
pub(crate) fn parse_answer(
    format: HttpPinFormat,
    status: u16,
    body: &[u8],
) -> Result<SourceVerdict, AnswerError> {
    match (status, format) {
        (404, _) => Ok(SourceVerdict::Unknown),
        (200, HttpPinFormat::Dialin) => parse_dialin(body),
        (200, HttpPinFormat::JitsiMapper) => parse_mapper(body),
        (other, _) => Err(AnswerError::Status(other)),
    }
}

/// serde_json's message names the problem ("missing field `room`", "invalid type") but can
/// quote a value of the body; only its category and position are kept, plus the field name
/// of a missing or unknown field.
fn json_error(e: &serde_json::Error) -> AnswerError {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Eof => "truncated",
        serde_json::error::Category::Data => {
            let text = e.to_string();
            if let Some(field) = text
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                if field.len() <= 64 && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return AnswerError::Json(format!("missing field `{field}`"));
                }
            }
            "a field has the wrong type or value"
        }
    };
    if e.line() == 0 {
        return AnswerError::Json(what.to_owned());
    }
    AnswerError::Json(format!("{what} at line {} column {}", e.line(), e.column()))
}

/// The answer's top-level JSON object (a derived struct would also take an array).
fn json_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, AnswerError> {
    match serde_json::from_slice(body).map_err(|e| json_error(&e))? {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(AnswerError::Json("not a JSON object".to_owned())),
    }
}

fn parse_dialin(body: &[u8]) -> Result<SourceVerdict, AnswerError> {
    let answer = DialinAnswer::deserialize(serde_json::Value::Object(json_object(body)?))
        .map_err(|e| json_error(&e))?;
    let room = RoomName::parse(&answer.room).map_err(AnswerError::Room)?;
    let participant_name = answer
        .participant_name
        .as_deref()
        .map(ParticipantName::parse)
        .transpose()
        .map_err(AnswerError::ParticipantName)?;
    if let Some(identity) = &answer.participant_identity {
        if identity.is_empty()
            || identity.len() > MAX_IDENTITY
            || identity.chars().any(char::is_control)
        {
            return Err(AnswerError::ParticipantIdentity);
        }
    }
    let attributes = answer.attributes.unwrap_or_default();
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(AnswerError::TooManyAttributes);
    }
    if attributes
        .keys()
        .any(|k| k.is_empty() || k.len() > MAX_ATTRIBUTE_KEY)
    {
        return Err(AnswerError::AttributeKey);
    }
    if attributes.values().any(|v| v.len() > MAX_ATTRIBUTE_VALUE) {
        return Err(AnswerError::AttributeValue);
    }
    let received = attributes.len();
    let attributes: BTreeMap<String, String> = attributes
        .into_iter()
        .filter(|(k, _)| !is_reserved_attribute(k))
        .collect();
    if attributes.len() < received {
        tracing::warn!(
            dropped = received - attributes.len(),
            "http PIN source: ignored attributes starting with `sip.` (reserved to dialin)"
        );
    }
    Ok(SourceVerdict::Room(Grant {
        room: room.as_str().to_owned(),
        participant_name: participant_name.map(|n| n.as_str().to_owned()),
        participant_identity: answer.participant_identity,
        attributes,
        metadata: answer.metadata,
        role: answer.role.unwrap_or_default(),
        wait_for_host: answer.wait_for_host.unwrap_or(false),
        ..Grant::default()
    }))
}

fn is_reserved_attribute(key: &str) -> bool {
    key.get(..RESERVED_ATTRIBUTE_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_ATTRIBUTE_PREFIX))
}

fn parse_mapper(body: &[u8]) -> Result<SourceVerdict, AnswerError> {
    let mut answer = json_object(body)?;
    // The reference mapper's "No conference mapping was found" has `conference: false`.
    let conference = match answer.remove("conference") {
        None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => {
            return Ok(SourceVerdict::Unknown)
        }
        Some(serde_json::Value::String(s)) if s.is_empty() => return Ok(SourceVerdict::Unknown),
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(AnswerError::Conference),
    };
    let room = conference
        .split_once('@')
        .map_or(conference.as_str(), |(room, _)| room);
    let room = RoomName::parse(room).map_err(AnswerError::Room)?;
    Ok(SourceVerdict::Room(Grant {
        room: room.as_str().to_owned(),
        ..Grant::default()
    }))
}

/// The meeting app's HTTP resolver, as a [`PinSource`].
pub struct HttpSource {
    url: reqwest::Url,
    /// `url` without credentials or query, for messages.
    shown_url: String,
    secret: Option<Vec<u8>>,
    format: HttpPinFormat,
    timeout: Duration,
    http: reqwest::Client,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("url", &self.shown_url)
            .field("format", &self.format)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// A source for `[pins.http]`: `url` must be `http://` or `https://`, `timeout_ms`
    /// positive, and the `dialin` format needs a secret.
    pub fn new(config: &PinsHttpConfig) -> Result<HttpSource, String> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| format!("pins.http.url: not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err("pins.http.url: must be an http:// or https:// URL with a host".to_owned());
        }
        let secret = config
            .secret
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec())
            .filter(|s| !s.is_empty());
        if config.format == HttpPinFormat::Dialin && secret.is_none() {
            return Err(
                "pins.http.secret: the dialin format signs its requests and needs a secret"
                    .to_owned(),
            );
        }
        if config.timeout_ms == 0 {
            return Err("pins.http.timeout_ms: must be positive".to_owned());
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("pins.http: cannot build the HTTP client ({e})"))?;
        let mut shown = url.clone();
        // Neither can fail on an http(s) URL with a host.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        shown.set_fragment(None);
        Ok(HttpSource {
            url,
            shown_url: shown.to_string(),
            secret,
            format: config.format,
            timeout,
            http,
        })
    }

    async fn ask(&self, query: &SourceQuery<'_>) -> Result<SourceVerdict, String> {
        let request = build_request(self.format, &self.url, self.secret.as_deref(), query);
        let (verb, builder) = match request.method {
            Method::Get => ("GET", self.http.get(request.url)),
            Method::Post => ("POST", self.http.post(request.url)),
        };
        let unreachable = |e: reqwest::Error| {
            if e.is_timeout() {
                format!(
                    "{verb} {}: no answer within {} ms",
                    self.shown_url,
                    self.timeout.as_millis()
                )
            } else {
                // Without the URL: the jitsi-mapper one holds the PIN.
                format!(
                    "{verb} {}: {}",
                    self.shown_url,
                    error_chain(&e.without_url())
                )
            }
        };
        let mut builder = builder.body(request.body);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        let mut resp = builder.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
            return Err(format!(
                "{verb} {}: answer larger than {MAX_ANSWER} bytes",
                self.shown_url
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(format!(
                    "{verb} {}: answer larger than {MAX_ANSWER} bytes",
                    self.shown_url
                ));
            }
            body.extend_from_slice(&chunk);
        }
        parse_answer(self.format, status, &body)
            .map_err(|e| format!("{verb} {}: {e}", self.shown_url))
    }
}

impl PinSource for HttpSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Http
    }

    fn resolve<'a>(&'a self, query: &'a SourceQuery<'a>) -> SourceFuture<'a> {
        Box::pin(async move {
            self.ask(query)
                .await
                .map_err(|message| SourceError::new(SourceKind::Http, scrub(message, query)))
        })
    }
}

/// Belt and braces: masks the PIN and the caller's full number should a lower layer ever
/// have put them in a message (the configured URL could, in its path).
fn scrub(message: String, query: &SourceQuery<'_>) -> String {
    let mut message = message;
    let pin = query.pin.expose();
    if message.contains(pin) {
        message = message.replace(pin, &query.pin.to_string());
    }
    let caller = query.caller.expose();
    if caller.len() > 4 && message.contains(caller) {
        message = message.replace(caller, &query.caller.masked());
    }
    message
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::trunk::TrunkId;
    use crate::pins::{Pin, PinNamespace};
    use crate::privacy::PhoneNumber;
    use chrono::{TimeZone, Utc};

    const SECRET: &[u8] = b"s3cret-s3cret-s3cret";
    const NOW: u64 = 1_700_000_000;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body_in_lowercase_hex() {
        // Computed independently: printf '1700000000.{"pin":"1234"}' |
        //   openssl dgst -sha256 -hmac s3cret-s3cret-s3cret
        assert_eq!(
            sign(SECRET, NOW, br#"{"pin":"1234"}"#),
            "v1=5d4c8383123b2dac09563ea98bf546251366b7941d4d92300af0740996ed44ff"
        );
    }

    #[test]
    fn a_fresh_untampered_request_verifies() {
        let body = br#"{"pin":"1234"}"#;
        let sig = sign(SECRET, NOW, body);
        assert!(verify(
            SECRET,
            "1700000000",
            &sig,
            body,
            NOW,
            SIGNATURE_WINDOW_S
        ));
        assert!(verify(
            SECRET,
            "1700000000",
            &sig.to_uppercase().replace("V1=", "v1="),
            body,
            NOW + 299,
            300
        ));
        assert!(
            verify(SECRET, "1700000000", &sig, body, NOW - 300, 300),
            "a clock behind by the window"
        );
    }

    #[test]
    fn a_tampered_body_fails_verification() {
        let sig = sign(SECRET, NOW, br#"{"pin":"1234"}"#);
        assert!(!verify(
            SECRET,
            "1700000000",
            &sig,
            br#"{"pin":"1235"}"#,
            NOW,
            300
        ));
        assert!(
            !verify(SECRET, "1700000001", &sig, br#"{"pin":"1234"}"#, NOW, 300),
            "timestamp is signed"
        );
    }

    #[test]
    fn a_stale_or_future_timestamp_fails_verification() {
        let body = b"{}";
        let sig = sign(SECRET, NOW, body);
        assert!(
            !verify(SECRET, "1700000000", &sig, body, NOW + 301, 300),
            "replayed later"
        );
        assert!(
            !verify(SECRET, "1700000000", &sig, body, NOW - 301, 300),
            "from the future"
        );
        assert!(!verify(SECRET, "-1", &sig, body, NOW, 300));
        assert!(!verify(SECRET, "", &sig, body, NOW, 300));
    }

    #[test]
    fn a_wrong_secret_or_malformed_signature_fails_verification() {
        let body = b"{}";
        let sig = sign(SECRET, NOW, body);
        assert!(!verify(
            b"another-secret-entirely",
            "1700000000",
            &sig,
            body,
            NOW,
            300
        ));
        assert!(
            !verify(
                SECRET,
                "1700000000",
                sig.trim_start_matches("v1="),
                body,
                NOW,
                300
            ),
            "no version tag"
        );
        assert!(
            !verify(SECRET, "1700000000", &sig[..sig.len() - 2], body, NOW, 300),
            "truncated"
        );
        assert!(!verify(SECRET, "1700000000", "v1=zz", body, NOW, 300));
        assert!(!verify(SECRET, "1700000000", "v1=", body, NOW, 300));
    }

    fn with_query<T>(
        called: Option<&str>,
        expose: bool,
        f: impl FnOnce(&SourceQuery<'_>) -> T,
    ) -> T {
        let pin = Pin::parse("4815162342").expect("pin");
        let ns = PinNamespace::default();
        let trunk = TrunkId::parse("carrier").expect("trunk");
        let caller = PhoneNumber::new("+33612345678");
        let q = SourceQuery {
            pin: &pin,
            namespace: &ns,
            trunk: &trunk,
            called,
            caller: &caller,
            expose_caller: expose,
            call_id: "CA_1",
            now: Utc.timestamp_opt(NOW as i64, 0).single().expect("time"),
        };
        f(&q)
    }

    fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn dialin_request_is_a_signed_json_post_with_the_masked_caller() {
        let url = reqwest::Url::parse("https://app.example/pins").expect("url");
        let r = with_query(None, false, |q| {
            build_request(HttpPinFormat::Dialin, &url, Some(SECRET), q)
        });
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.url.as_str(), "https://app.example/pins");
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"pin": "4815162342", "namespace": "default", "trunk": "carrier",
                "called_number": null, "caller": "••••5678", "call_id": "CA_1"})
        );
        assert_eq!(header(&r, TIMESTAMP_HEADER), Some("1700000000"));
        let sig = header(&r, SIGNATURE_HEADER).expect("signature");
        assert!(verify(SECRET, "1700000000", sig, &r.body, NOW, 300));
        assert_eq!(header(&r, "Content-Type"), Some("application/json"));
    }

    #[test]
    fn dialin_request_carries_the_full_caller_only_when_the_trunk_exposes_it() {
        let url = reqwest::Url::parse("https://app.example/pins").expect("url");
        let r = with_query(Some("+3315551234"), true, |q| {
            build_request(HttpPinFormat::Dialin, &url, Some(SECRET), q)
        });
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(body["caller"], "+33612345678");
        assert_eq!(body["called_number"], "+3315551234");
    }

    #[test]
    fn mapper_request_appends_the_id_to_the_query() {
        let plain = reqwest::Url::parse("https://jitsi.example/conferenceMapper").expect("url");
        let r = with_query(None, false, |q| {
            build_request(HttpPinFormat::JitsiMapper, &plain, None, q)
        });
        assert_eq!(r.method, Method::Get);
        assert_eq!(
            r.url.as_str(),
            "https://jitsi.example/conferenceMapper?id=4815162342"
        );
        assert!(r.body.is_empty() && r.headers.is_empty());
        let with = reqwest::Url::parse("https://jitsi.example/map?tenant=a").expect("url");
        let r = with_query(None, false, |q| {
            build_request(HttpPinFormat::JitsiMapper, &with, Some(SECRET), q)
        });
        assert_eq!(
            r.url.as_str(),
            "https://jitsi.example/map?tenant=a&id=4815162342"
        );
        let sig = header(&r, SIGNATURE_HEADER).expect("signed when a secret is set");
        assert!(verify(SECRET, "1700000000", sig, b"", NOW, 300));
    }

    fn dialin(status: u16, body: &str) -> Result<SourceVerdict, AnswerError> {
        parse_answer(HttpPinFormat::Dialin, status, body.as_bytes())
    }

    fn mapper(status: u16, body: &str) -> Result<SourceVerdict, AnswerError> {
        parse_answer(HttpPinFormat::JitsiMapper, status, body.as_bytes())
    }

    #[test]
    fn dialin_answer_with_a_room_is_a_grant() {
        let got = dialin(
            200,
            r#"{"room": "Weekly sync", "participant_name": "Phone guest",
                "participant_identity": "guest-7", "attributes": {"team": "blue"},
                "metadata": "{\"x\":1}", "role": "host", "wait_for_host": false}"#,
        );
        assert_eq!(
            got,
            Ok(SourceVerdict::Room(Grant {
                room: "Weekly sync".into(),
                participant_name: Some("Phone guest".into()),
                participant_identity: Some("guest-7".into()),
                attributes: BTreeMap::from([("team".into(), "blue".into())]),
                metadata: Some("{\"x\":1}".into()),
                role: PinRole::Host,
                wait_for_host: false,
                ..Grant::default()
            }))
        );
        let minimal = dialin(
            200,
            r#"{"room": "r", "attributes": null, "unknown_field": 1}"#,
        );
        assert_eq!(
            minimal,
            Ok(SourceVerdict::Room(Grant {
                room: "r".into(),
                ..Grant::default()
            }))
        );
    }

    #[test]
    fn dialin_answer_drops_attributes_reserved_to_dialin() {
        let got = dialin(
            200,
            r#"{"room": "r", "attributes": {"sip.trunk": "x", "SIP.role": "host", "team": "a", "sipx": "b"}}"#,
        );
        let Ok(SourceVerdict::Room(grant)) = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            grant.attributes.keys().collect::<Vec<_>>(),
            ["sipx", "team"]
        );
    }

    #[test]
    fn dialin_404_is_unknown_and_other_statuses_are_errors() {
        assert_eq!(dialin(404, "not found"), Ok(SourceVerdict::Unknown));
        assert_eq!(dialin(500, ""), Err(AnswerError::Status(500)));
        assert_eq!(dialin(302, ""), Err(AnswerError::Status(302)));
        assert_eq!(dialin(204, ""), Err(AnswerError::Status(204)));
    }

    #[test]
    fn dialin_answer_that_does_not_fit_is_an_error_that_quotes_nothing() {
        assert!(matches!(dialin(200, "<html>"), Err(AnswerError::Json(_))));
        assert!(
            matches!(dialin(200, r#"["r"]"#), Err(AnswerError::Json(_))),
            "an array is not an answer"
        );
        assert_eq!(
            dialin(200, "{}"),
            Err(AnswerError::Json("missing field `room`".into()))
        );
        let echoed = dialin(200, r#"{"room": 4815162342}"#);
        let Err(AnswerError::Json(message)) = &echoed else {
            panic!("{echoed:?}")
        };
        assert!(!message.contains("4815162342"), "{message}");
        assert!(matches!(
            dialin(200, r#"{"room": "r", "role": "admin"}"#),
            Err(AnswerError::Json(_))
        ));
        assert!(matches!(
            dialin(200, r#"{"room": "r", "attributes": {"a": 1}}"#),
            Err(AnswerError::Json(_))
        ));
    }

    #[test]
    fn dialin_answer_names_are_checked() {
        assert!(matches!(
            dialin(200, r#"{"room": ""}"#),
            Err(AnswerError::Room(_))
        ));
        assert!(matches!(
            dialin(200, r#"{"room": "a\u202eb"}"#),
            Err(AnswerError::Room(_))
        ));
        assert!(matches!(
            dialin(200, r#"{"room": "r", "participant_name": "a\nb"}"#),
            Err(AnswerError::ParticipantName(_))
        ));
        assert_eq!(
            dialin(200, r#"{"room": "r", "participant_identity": ""}"#),
            Err(AnswerError::ParticipantIdentity)
        );
    }

    #[test]
    fn dialin_answer_attributes_are_bounded() {
        let many: BTreeMap<String, String> = (0..=MAX_ATTRIBUTES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let body = serde_json::json!({"room": "r", "attributes": many}).to_string();
        assert_eq!(dialin(200, &body), Err(AnswerError::TooManyAttributes));
        let body = serde_json::json!({"room": "r", "attributes": {"k".repeat(MAX_ATTRIBUTE_KEY + 1): "v"}}).to_string();
        assert_eq!(dialin(200, &body), Err(AnswerError::AttributeKey));
        let body = serde_json::json!({"room": "r", "attributes": {"k": "v".repeat(MAX_ATTRIBUTE_VALUE + 1)}}).to_string();
        assert_eq!(dialin(200, &body), Err(AnswerError::AttributeValue));
        let full: BTreeMap<String, String> = (0..MAX_ATTRIBUTES)
            .map(|i| {
                (
                    format!("{i:0>width$}", width = MAX_ATTRIBUTE_KEY),
                    "v".repeat(MAX_ATTRIBUTE_VALUE),
                )
            })
            .collect();
        let body = serde_json::json!({"room": "r", "attributes": full}).to_string();
        assert!(body.len() < MAX_ANSWER, "the largest valid answer fits");
        assert!(matches!(dialin(200, &body), Ok(SourceVerdict::Room(_))));
    }

    #[test]
    fn mapper_answer_room_is_the_conference_before_the_at() {
        let got = mapper(
            200,
            r#"{"message": "Successfully retrieved conference mapping", "id": 4815162342,
                "conference": "weeklysync@conference.meet.example"}"#,
        );
        assert_eq!(
            got,
            Ok(SourceVerdict::Room(Grant {
                room: "weeklysync".into(),
                ..Grant::default()
            }))
        );
        let string_id = mapper(
            200,
            r#"{"id": "4815162342", "conference": "Room@conference.x"}"#,
        );
        assert_eq!(
            string_id,
            Ok(SourceVerdict::Room(Grant {
                room: "Room".into(),
                ..Grant::default()
            }))
        );
    }

    #[test]
    fn mapper_unknown_id_shapes_are_unknown() {
        let reference = r#"{"message": "No conference mapping was found", "id": 4815162342, "conference": false}"#;
        assert_eq!(mapper(200, reference), Ok(SourceVerdict::Unknown));
        assert_eq!(
            mapper(200, r#"{"id": 1, "conference": ""}"#),
            Ok(SourceVerdict::Unknown)
        );
        assert_eq!(
            mapper(200, r#"{"id": 1, "conference": null}"#),
            Ok(SourceVerdict::Unknown)
        );
        assert_eq!(
            mapper(200, r#"{"message": "No conference or id provided"}"#),
            Ok(SourceVerdict::Unknown)
        );
        assert_eq!(mapper(404, ""), Ok(SourceVerdict::Unknown));
    }

    #[test]
    fn mapper_answer_that_does_not_fit_is_an_error() {
        assert_eq!(
            mapper(200, r#"{"conference": true}"#),
            Err(AnswerError::Conference)
        );
        assert!(matches!(
            mapper(200, r#"{"conference": "@conference.x"}"#),
            Err(AnswerError::Room(_))
        ));
        assert!(matches!(mapper(200, "[]"), Err(AnswerError::Json(_))));
        assert_eq!(mapper(503, ""), Err(AnswerError::Status(503)));
    }

    #[test]
    fn scrub_masks_the_pin_and_the_callers_number() {
        with_query(None, false, |q| {
            let got = scrub("GET https://x/4815162342?c=+33612345678".into(), q);
            assert!(
                !got.contains("4815162342") && !got.contains("+33612345678"),
                "{got}"
            );
        });
    }
}
