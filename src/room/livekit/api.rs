//! LiveKit's server API, as its server SDKs call it: Twirp over HTTP/1.1, `POST
//! {http(s)}/twirp/<package.Service>/<Method>` with a protobuf body (`application/protobuf`)
//! and `Authorization: Bearer <JWT>`; a failure is a JSON `{"code", "msg"}` with the HTTP
//! status the Twirp spec gives the code.
//!
//! ```text
//!  RoomServiceClient::list_participants(room)
//!      └─ mint a short-lived token (roomAdmin on that room)
//!      └─ Twirp::call("livekit.RoomService", "ListParticipants", token, request)
//!             ──POST /twirp/livekit.RoomService/ListParticipants──► LiveKit
//!             ◄── 200 protobuf ListParticipantsResponse | 4xx/5xx Twirp error ──
//! ```
//!
//! [`Twirp::call`] is service-agnostic: [`SipClient`] reads `livekit.SIP`'s dispatch rules and
//! inbound trunks over it, with a token carrying the SIP admin grant, following the list
//! pages (`Pagination{after_id, limit}`) to the end.
//!
//! ```text
//!  SipClient::list_dispatch_rules()
//!      └─ loop: Twirp::call("livekit.SIP", "ListSIPDispatchRule", token,
//!                           {page: {after_id: <last id so far>, limit}})
//!               until an answer has fewer than `limit` items
//! ```
//!
//! The URL is `[livekit] url` with `ws://` read as `http://` and `wss://` as `https://`; HTTPS
//! goes through reqwest's rustls on ring with Mozilla's roots compiled in, like the signal
//! WebSocket, so no system TLS library or certificate store is needed. Redirects are not
//! followed (a Twirp client must not turn a POST into a GET), and every call gives up after
//! [`API_TIMEOUT`].

use std::time::Duration;

use livekit_api::access_token::{AccessToken, SIPGrants, VideoGrants};
use livekit_protocol as proto;
use prost::Message;

use crate::config::{redact_url, LiveKitConfig};

/// How long one API call may take, connection included. LiveKit's server SDKs default to
/// 10 s; the gateway asks while a caller waits, so it gives up sooner.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of the token minted for each call: long enough for the call and modest clock
/// skew, short enough that a leaked one is soon worthless.
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Twirp's default route prefix.
const TWIRP_PREFIX: &str = "/twirp";
const PROTOBUF: &str = "application/protobuf";
/// The largest answer read (a room of thousands of participants is a few MB).
const MAX_RESPONSE: usize = 16 << 20;
/// How much of a non-Twirp error body is kept in [`ApiError::Refused`].
const MAX_ERROR_TEXT: usize = 256;
/// Items asked for per list page. livekit-server reads its store 1000 at a time and answers
/// everything after `after_id` whatever the limit; a server that honours the limit is asked
/// again after the last id of each full page.
const SIP_PAGE_LIMIT: usize = 500;
/// A list longer than this is taken for a server that never stops paging.
const MAX_LIST_ITEMS: usize = 100_000;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The client could not be built: no secret, a URL that is not ws(s):// or http(s)://.
    #[error("LiveKit API client: {0}")]
    Config(String),
    /// Minting the access token failed.
    #[error("minting the LiveKit API token: {0}")]
    Token(String),
    /// No answer: connection refused or reset, DNS or TLS failure, or no reply within
    /// [`API_TIMEOUT`].
    #[error("LiveKit API at {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error: a Twirp error, or an HTTP error from something in
    /// front of Twirp (LiveKit's API-key check answers a bad token with a plain-text 401),
    /// whose code is then derived from the status as Twirp clients do.
    #[error("LiveKit API refused {method}: HTTP {status}, {code}: {msg}")]
    Refused {
        method: String,
        status: u16,
        code: TwirpCode,
        msg: String,
    },
    /// A success whose body is not the expected protobuf message.
    #[error("LiveKit API answer to {method} is malformed: {reason}")]
    Malformed { method: String, reason: String },
}

/// Twirp's error codes (the Twirp wire protocol, "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TwirpCode {
    Canceled,
    Unknown,
    InvalidArgument,
    Malformed,
    DeadlineExceeded,
    NotFound,
    BadRoute,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
}

impl TwirpCode {
    const ALL: [TwirpCode; 18] = [
        TwirpCode::Canceled,
        TwirpCode::Unknown,
        TwirpCode::InvalidArgument,
        TwirpCode::Malformed,
        TwirpCode::DeadlineExceeded,
        TwirpCode::NotFound,
        TwirpCode::BadRoute,
        TwirpCode::AlreadyExists,
        TwirpCode::PermissionDenied,
        TwirpCode::Unauthenticated,
        TwirpCode::ResourceExhausted,
        TwirpCode::FailedPrecondition,
        TwirpCode::Aborted,
        TwirpCode::OutOfRange,
        TwirpCode::Unimplemented,
        TwirpCode::Internal,
        TwirpCode::Unavailable,
        TwirpCode::DataLoss,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TwirpCode::Canceled => "canceled",
            TwirpCode::Unknown => "unknown",
            TwirpCode::InvalidArgument => "invalid_argument",
            TwirpCode::Malformed => "malformed",
            TwirpCode::DeadlineExceeded => "deadline_exceeded",
            TwirpCode::NotFound => "not_found",
            TwirpCode::BadRoute => "bad_route",
            TwirpCode::AlreadyExists => "already_exists",
            TwirpCode::PermissionDenied => "permission_denied",
            TwirpCode::Unauthenticated => "unauthenticated",
            TwirpCode::ResourceExhausted => "resource_exhausted",
            TwirpCode::FailedPrecondition => "failed_precondition",
            TwirpCode::Aborted => "aborted",
            TwirpCode::OutOfRange => "out_of_range",
            TwirpCode::Unimplemented => "unimplemented",
            TwirpCode::Internal => "internal",
            TwirpCode::Unavailable => "unavailable",
            TwirpCode::DataLoss => "dataloss",
        }
    }

    pub fn parse(s: &str) -> Option<TwirpCode> {
        TwirpCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The code of an HTTP error that did not come from Twirp (a proxy, or LiveKit's
    /// middleware), as Twirp clients derive it.
    pub fn from_intermediary_status(status: u16) -> TwirpCode {
        match status {
            // Redirects are not followed: one is an unexpected answer.
            300..=399 => TwirpCode::Internal,
            400 => TwirpCode::Internal,
            401 => TwirpCode::Unauthenticated,
            403 => TwirpCode::PermissionDenied,
            404 => TwirpCode::BadRoute,
            429 | 502 | 503 | 504 => TwirpCode::Unavailable,
            _ => TwirpCode::Unknown,
        }
    }
}

impl std::fmt::Display for TwirpCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API key and its secret: what signs each call's token.
#[derive(Clone)]
struct Credentials {
    api_key: String,
    api_secret: String,
}

impl Credentials {
    /// `[livekit]`'s API key and secret (which must be set).
    fn from_config(config: &LiveKitConfig) -> Result<Credentials, ApiError> {
        let secret = config
            .api_secret
            .as_ref()
            .map(|s| s.expose())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::Config("livekit.api_secret is not set".into()))?;
        Ok(Credentials {
            api_key: config.api_key.clone(),
            api_secret: secret.to_owned(),
        })
    }

    fn mint(&self, grant: impl FnOnce(AccessToken) -> AccessToken) -> Result<String, ApiError> {
        grant(AccessToken::with_api_key(&self.api_key, &self.api_secret).with_ttl(TOKEN_TTL))
            .to_jwt()
            .map_err(|e| ApiError::Token(e.to_string()))
    }

    fn token(&self, video: VideoGrants) -> Result<String, ApiError> {
        self.mint(|t| t.with_grants(video))
    }

    /// What every `livekit.SIP` management method asks for (livekit-server's
    /// `EnsureSIPAdminPermission`).
    fn sip_admin_token(&self) -> Result<String, ApiError> {
        self.mint(|t| {
            t.with_sip_grants(SIPGrants {
                admin: true,
                call: false,
            })
        })
    }
}

/// One LiveKit server's Twirp endpoint; each service client is a thin layer over
/// [`Twirp::call`].
#[derive(Clone)]
pub(crate) struct Twirp {
    /// `http(s)://host[:port][/path]`, no trailing slash.
    base: String,
    http: reqwest::Client,
}

impl Twirp {
    /// `url` is LiveKit's URL as configured (`ws(s)://` or `http(s)://`).
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Twirp, ApiError> {
        let base = http_base(url)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Config(e.to_string()))?;
        Ok(Twirp { base, http })
    }

    /// Call `service`'s `method` with `request`, authorised by `token`.
    pub(crate) async fn call<Req, Resp>(
        &self,
        service: &str,
        method: &str,
        token: &str,
        request: &Req,
    ) -> Result<Resp, ApiError>
    where
        Req: Message,
        Resp: Message + Default,
    {
        let url = format!("{}{TWIRP_PREFIX}/{service}/{method}", self.base);
        let unreachable = |e: reqwest::Error| ApiError::Unreachable {
            url: redact_url(&url),
            reason: if e.is_timeout() {
                "no answer in time".to_owned()
            } else {
                error_chain(&e)
            },
        };
        let mut resp = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, PROTOBUF)
            .bearer_auth(token)
            .body(request.encode_to_vec())
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_RESPONSE {
                return Err(ApiError::Malformed {
                    method: method.to_owned(),
                    reason: format!("answer larger than {MAX_RESPONSE} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(refused(method, status.as_u16(), &body));
        }
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case(PROTOBUF) {
            return Err(ApiError::Malformed {
                method: method.to_owned(),
                reason: format!("Content-Type {content_type:?}, not {PROTOBUF}"),
            });
        }
        Resp::decode(body.as_slice()).map_err(|e| ApiError::Malformed {
            method: method.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// LiveKit's `RoomService`: what is in a room, as the server sees it.
#[derive(Clone)]
pub struct RoomServiceClient {
    twirp: Twirp,
    credentials: Credentials,
}

impl RoomServiceClient {
    const SERVICE: &'static str = "livekit.RoomService";

    /// For the server at `url` (`ws(s)://` or `http(s)://`, as configured) and this API key.
    pub fn new(url: &str, api_key: &str, api_secret: &str) -> Result<RoomServiceClient, ApiError> {
        Ok(RoomServiceClient {
            twirp: Twirp::new(url, API_TIMEOUT)?,
            credentials: Credentials {
                api_key: api_key.to_owned(),
                api_secret: api_secret.to_owned(),
            },
        })
    }

    /// For `[livekit]`: its URL, API key and secret (which must be set).
    pub fn from_config(config: &LiveKitConfig) -> Result<RoomServiceClient, ApiError> {
        Ok(RoomServiceClient {
            twirp: Twirp::new(&config.url, API_TIMEOUT)?,
            credentials: Credentials::from_config(config)?,
        })
    }

    /// Everyone in `room` (`RoomService.ListParticipants`; a room that does not exist has
    /// nobody in it).
    pub async fn list_participants(
        &self,
        room: &str,
    ) -> Result<Vec<proto::ParticipantInfo>, ApiError> {
        let token = self.credentials.token(VideoGrants {
            room_admin: true,
            room: room.to_owned(),
            ..Default::default()
        })?;
        let request = proto::ListParticipantsRequest {
            room: room.to_owned(),
        };
        let response: proto::ListParticipantsResponse = self
            .twirp
            .call(Self::SERVICE, "ListParticipants", &token, &request)
            .await?;
        Ok(response.participants)
    }
}

/// LiveKit's `SIP` service: the dispatch rules and inbound trunks configured in LiveKit, read
/// whole (every page).
#[derive(Clone)]
pub struct SipClient {
    twirp: Twirp,
    credentials: Credentials,
    /// Items asked for per page (`Pagination.limit`), at least 1.
    page_limit: usize,
}

impl SipClient {
    const SERVICE: &'static str = "livekit.SIP";

    /// For the server at `url` (`ws(s)://` or `http(s)://`, as configured) and this API key.
    pub fn new(url: &str, api_key: &str, api_secret: &str) -> Result<SipClient, ApiError> {
        SipClient::with_page_limit(url, api_key, api_secret, SIP_PAGE_LIMIT)
    }

    /// For `[livekit]`: its URL, API key and secret (which must be set).
    pub fn from_config(config: &LiveKitConfig) -> Result<SipClient, ApiError> {
        Ok(SipClient {
            twirp: Twirp::new(&config.url, API_TIMEOUT)?,
            credentials: Credentials::from_config(config)?,
            page_limit: SIP_PAGE_LIMIT,
        })
    }

    /// [`SipClient::new`] asking for `page_limit` items a page, so that tests can page over
    /// a few items.
    #[doc(hidden)]
    pub fn with_page_limit(
        url: &str,
        api_key: &str,
        api_secret: &str,
        page_limit: usize,
    ) -> Result<SipClient, ApiError> {
        Ok(SipClient {
            twirp: Twirp::new(url, API_TIMEOUT)?,
            credentials: Credentials {
                api_key: api_key.to_owned(),
                api_secret: api_secret.to_owned(),
            },
            page_limit: page_limit.clamp(1, i32::MAX as usize),
        })
    }

    /// Every dispatch rule, sorted by id (`SIP.ListSIPDispatchRule`, page after page).
    pub async fn list_dispatch_rules(&self) -> Result<Vec<proto::SipDispatchRuleInfo>, ApiError> {
        self.list_all(
            "ListSIPDispatchRule",
            |page| proto::ListSipDispatchRuleRequest {
                page: Some(page),
                ..Default::default()
            },
            |resp: proto::ListSipDispatchRuleResponse| resp.items,
            |rule| &rule.sip_dispatch_rule_id,
        )
        .await
    }

    /// Every inbound trunk, sorted by id (`SIP.ListSIPInboundTrunk`, page after page).
    pub async fn list_inbound_trunks(&self) -> Result<Vec<proto::SipInboundTrunkInfo>, ApiError> {
        self.list_all(
            "ListSIPInboundTrunk",
            |page| proto::ListSipInboundTrunkRequest {
                page: Some(page),
                ..Default::default()
            },
            |resp: proto::ListSipInboundTrunkResponse| resp.items,
            |trunk| &trunk.sip_trunk_id,
        )
        .await
    }

    /// Call a list `method` from the first page until one comes back short, each page asked
    /// for after the last id of the one before.
    async fn list_all<Req, Resp, T>(
        &self,
        method: &str,
        request: impl Fn(proto::Pagination) -> Req,
        items: impl Fn(Resp) -> Vec<T>,
        id: impl Fn(&T) -> &String,
    ) -> Result<Vec<T>, ApiError>
    where
        Req: Message,
        Resp: Message + Default,
    {
        let limit = i32::try_from(self.page_limit).unwrap_or(i32::MAX);
        let malformed = |reason: String| ApiError::Malformed {
            method: method.to_owned(),
            reason,
        };
        let mut all = Vec::new();
        let mut after_id = String::new();
        loop {
            // One token a page: a long listing must not outlive the token's short life.
            let token = self.credentials.sip_admin_token()?;
            let page = proto::Pagination {
                after_id: after_id.clone(),
                limit,
            };
            let response: Resp = self
                .twirp
                .call(Self::SERVICE, method, &token, &request(page))
                .await?;
            let page = items(response);
            let full = page.len() >= self.page_limit;
            let last = page.last().map(|item| id(item).clone());
            all.extend(page);
            if !full {
                return Ok(all);
            }
            if all.len() > MAX_LIST_ITEMS {
                return Err(malformed(format!("more than {MAX_LIST_ITEMS} items")));
            }
            match last {
                // Ids only grow from page to page; a server that ignores `after_id` would
                // otherwise be asked for the same page forever.
                Some(last) if last > after_id => after_id = last,
                _ => {
                    return Err(malformed(format!(
                        "a full page that does not move past {after_id:?}"
                    )))
                }
            }
        }
    }
}

/// The HTTP base of a LiveKit URL as configured: the signal URL's scheme mapped to HTTP's.
fn http_base(url: &str) -> Result<String, ApiError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| ApiError::Config(format!("{:?} is not a URL", redact_url(url))))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => {
            return Err(ApiError::Config(format!(
                "{:?} is not a ws://, wss://, http:// or https:// URL",
                redact_url(url)
            )))
        }
    };
    let base = format!("{scheme}://{}", rest.trim_end_matches('/'));
    reqwest::Url::parse(&base)
        .map_err(|e| ApiError::Config(format!("{:?}: {e}", redact_url(url))))?;
    Ok(base)
}

/// A non-2xx answer: the Twirp error in its body, or one derived from the status.
fn refused(method: &str, status: u16, body: &[u8]) -> ApiError {
    #[derive(serde::Deserialize)]
    struct TwirpErrorBody {
        code: String,
        #[serde(default)]
        msg: String,
    }
    let twirp = serde_json::from_slice::<TwirpErrorBody>(body)
        .ok()
        .and_then(|b| TwirpCode::parse(&b.code).map(|c| (c, b.msg)));
    let (code, msg) = twirp.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(MAX_ERROR_TEXT).collect();
        (TwirpCode::from_intermediary_status(status), text)
    });
    ApiError::Refused {
        method: method.to_owned(),
        status,
        code,
        msg,
    }
}

/// reqwest's error and its causes ("error sending request: connection refused").
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

    #[test]
    fn signal_urls_map_to_http_bases() {
        assert_eq!(
            http_base("ws://127.0.0.1:7880").unwrap(),
            "http://127.0.0.1:7880"
        );
        assert_eq!(
            http_base("wss://lk.example.com/").unwrap(),
            "https://lk.example.com"
        );
        assert_eq!(
            http_base("https://lk.example.com/base").unwrap(),
            "https://lk.example.com/base"
        );
        assert!(matches!(http_base("ftp://x"), Err(ApiError::Config(_))));
        assert!(matches!(
            http_base("lk.example.com"),
            Err(ApiError::Config(_))
        ));
    }

    #[test]
    fn twirp_error_body_gives_code_and_message() {
        let e = refused(
            "M",
            404,
            br#"{"code":"not_found","msg":"participant does not exist"}"#,
        );
        assert!(matches!(
            e,
            ApiError::Refused { status: 404, code: TwirpCode::NotFound, ref msg, .. }
                if msg == "participant does not exist"
        ));
    }

    #[test]
    fn plain_text_errors_take_their_code_from_the_status() {
        let e = refused("M", 401, b"invalid authorization token: bad signature\n");
        assert!(matches!(
            e,
            ApiError::Refused { status: 401, code: TwirpCode::Unauthenticated, ref msg, .. }
                if msg == "invalid authorization token: bad signature"
        ));
        let e = refused("M", 502, b"<html>bad gateway</html>");
        assert!(matches!(
            e,
            ApiError::Refused {
                code: TwirpCode::Unavailable,
                ..
            }
        ));
    }

    #[test]
    fn every_code_parses_back() {
        for c in TwirpCode::ALL {
            assert_eq!(TwirpCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(TwirpCode::parse("nope"), None);
    }
}
