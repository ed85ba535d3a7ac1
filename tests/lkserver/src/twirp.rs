//! Twirp, the RPC protocol of LiveKit's server API, on the same HTTP listener as `/rtc`:
//! `POST /twirp/<package.Service>/<Method>` with a JSON (`application/json`) or protobuf
//! (`application/protobuf`) body, answered in the same encoding. This module reads the
//! request, applies livekit-server's middleware and Twirp's routing, and hands the decoded
//! method to its service (modules `room_service` and `sip_service`).
//!
//! ```text
//!  POST /twirp/S/M ──► body limit ─► SIP outage? ─► API-key check ─► route, Content-Type
//!  (Bearer JWT)         (413 text)    (test hook)     (401 text)       (bad_route)
//!                     ─► service S: decode ─► grant check ─► method
//!                                (malformed)  (unauthenticated)  (not_found, invalid_argument, ...)
//! ```
//!
//! The order and the answers are livekit-server's: its request-body limiter and API-key
//! middleware answer in plain text before Twirp sees the request; everything after is a Twirp
//! error, JSON `{"code", "msg"}` with the status the Twirp spec gives the code. A missing or
//! insufficient grant is `unauthenticated` ("permissions denied"), not `permission_denied`:
//! livekit-server wraps every grant failure that way (`twirpAuthError`).

use std::time::Duration;

use livekit_api::access_token::Claims;
use prost::Message;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::engine::Command;
use crate::signal::{write_response, Head};
use crate::sip_service::SipShared;
use crate::token::TokenCheck;

/// Twirp's default route prefix.
pub(crate) const PATH_PREFIX: &str = "/twirp/";
/// livekit-server's `limit.max_api_request_body_size` default (10 MiB).
const MAX_BODY: usize = 10 << 20;
/// A client that has not sent its whole body by then is dropped.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Map-valued fields of the messages served (their protojson names): their keys are data,
/// not field names.
const MAP_FIELDS: &[&str] = &[
    "attributes",
    "headers",
    "headersToAttributes",
    "attributesToHeaders",
];

/// The Twirp error codes this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    BadRoute,
    Malformed,
    InvalidArgument,
    Unauthenticated,
    NotFound,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
}

impl Code {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Code::BadRoute => "bad_route",
            Code::Malformed => "malformed",
            Code::InvalidArgument => "invalid_argument",
            Code::Unauthenticated => "unauthenticated",
            Code::NotFound => "not_found",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
        }
    }

    /// The HTTP status the Twirp spec gives each code.
    pub(crate) fn http_status(self) -> u16 {
        match self {
            Code::BadRoute | Code::NotFound => 404,
            Code::Malformed | Code::InvalidArgument => 400,
            Code::Unauthenticated => 401,
            Code::FailedPrecondition => 412,
            Code::Unimplemented => 501,
            Code::Internal => 500,
            Code::Unavailable => 503,
        }
    }
}

/// One Twirp error response.
#[derive(Debug)]
pub(crate) struct TwirpError {
    pub(crate) code: Code,
    pub(crate) msg: String,
    /// `twirp_invalid_route` for `bad_route`.
    route: Option<String>,
}

impl TwirpError {
    pub(crate) fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            route: None,
        }
    }

    /// What livekit-server answers a token without the grant a method needs.
    pub(crate) fn permissions_denied() -> Self {
        TwirpError::new(Code::Unauthenticated, "permissions denied")
    }

    fn bad_route(msg: String, head: &Head) -> Self {
        Self {
            code: Code::BadRoute,
            msg,
            route: Some(format!("{} {}", head.method, head.path)),
        }
    }

    pub(crate) fn body(&self) -> Vec<u8> {
        let mut v = serde_json::json!({ "code": self.code.as_str(), "msg": self.msg });
        if let (Some(route), Some(obj)) = (&self.route, v.as_object_mut()) {
            obj.insert(
                "meta".into(),
                serde_json::json!({ "twirp_invalid_route": route }),
            );
        }
        v.to_string().into_bytes()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    /// Twirp ignores parameters (`; charset=utf-8`) and case.
    fn from_content_type(ct: &str) -> Option<Self> {
        let media = ct.split(';').next().unwrap_or_default().trim();
        if media.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else if media.eq_ignore_ascii_case("application/protobuf") {
            Some(Encoding::Protobuf)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/protobuf",
        }
    }

    pub(crate) fn decode<T>(self, body: &[u8]) -> Result<T, TwirpError>
    where
        T: Message + Default + serde::de::DeserializeOwned,
    {
        match self {
            Encoding::Json => serde_json::from_slice(body).map_err(|e| {
                TwirpError::new(
                    Code::Malformed,
                    format!("the json request could not be decoded: {e}"),
                )
            }),
            Encoding::Protobuf => T::decode(body).map_err(|_| {
                TwirpError::new(Code::Malformed, "the protobuf request could not be decoded")
            }),
        }
    }

    pub(crate) fn encode<T: Message + serde::Serialize>(
        self,
        msg: &T,
    ) -> Result<Vec<u8>, TwirpError> {
        match self {
            Encoding::Json => serde_json::to_value(msg)
                .map(|v| proto_names(v).to_string().into_bytes())
                .map_err(|e| TwirpError::new(Code::Internal, e.to_string())),
            Encoding::Protobuf => Ok(msg.encode_to_vec()),
        }
    }
}

/// livekit-protocol's serde impls write protojson's lowerCamelCase names; Twirp servers write
/// the original proto field names (`UseProtoNames`). Readers accept both.
fn proto_names(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = if MAP_FIELDS.contains(&k.as_str()) {
                        v
                    } else {
                        proto_names(v)
                    };
                    (snake_case(&k), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(proto_names).collect()),
        other => other,
    }
}

fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// What a service's method needs from the request.
pub(crate) struct Call<'a> {
    pub(crate) method: &'a str,
    pub(crate) encoding: Encoding,
    pub(crate) body: &'a [u8],
    /// The verified token's claims; `None` when the request carried no token.
    pub(crate) claims: Option<&'a Claims>,
}

/// A service's answer: the encoded response, or `None` when it has no such method (Twirp's
/// `bad_route`, made by the router).
pub(crate) type Answer = Result<Option<Vec<u8>>, TwirpError>;

/// Answer one request on `stream` (whose head has been peeked, not read) and close it.
pub(crate) async fn serve(
    mut stream: TcpStream,
    head: Head,
    tokens: &TokenCheck,
    engine: &mpsc::UnboundedSender<Command>,
    sip: &SipShared,
) -> std::io::Result<()> {
    let text = "text/plain; charset=utf-8";
    let declared = head.content_length.unwrap_or(0);
    if declared > MAX_BODY {
        return write_response(&mut stream, 413, text, b"request body too large").await;
    }
    // The whole request is read before any answer: closing a socket with unread bytes would
    // reset the connection under the response.
    let mut request = vec![0u8; head.len + declared];
    tokio::time::timeout(BODY_TIMEOUT, stream.read_exact(&mut request))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request body"))??;
    let body = request.get(head.len..).unwrap_or_default();

    // A SIP outage (test hook) stands for the service being down or slow in front of
    // everything, the way a load balancer or an overloaded node would answer.
    if let Some(method) = crate::sip_service::method_of(&head.path) {
        if let Err(e) = sip.admit(method).await {
            return write_error(&mut stream, &head, &e).await;
        }
    }

    // livekit-server's API-key middleware: a bad token never reaches Twirp.
    let claims = match (&head.authorization, &head.bearer) {
        (Some(_), None) => {
            let msg = "invalid authorization header. Must start with Bearer ";
            return write_response(&mut stream, 401, text, msg.as_bytes()).await;
        }
        (_, bearer) => match bearer.as_deref().or_else(|| head.param("access_token")) {
            Some(token) if !token.is_empty() => match tokens.verify(token) {
                Ok(c) => Some(c),
                Err(e) => {
                    let msg = format!("invalid authorization token: {e}");
                    return write_response(&mut stream, 401, text, msg.as_bytes()).await;
                }
            },
            _ => None,
        },
    };

    match route(&head, body, claims.as_ref(), engine, sip).await {
        Ok((enc, out)) => write_response(&mut stream, 200, enc.content_type(), &out).await,
        Err(e) => write_error(&mut stream, &head, &e).await,
    }
}

async fn write_error(stream: &mut TcpStream, head: &Head, e: &TwirpError) -> std::io::Result<()> {
    tracing::debug!(path = %head.path, code = e.code.as_str(), "twirp: {}", e.msg);
    write_response(stream, e.code.http_status(), "application/json", &e.body()).await
}

/// Twirp's routing, then the service's method.
async fn route(
    head: &Head,
    body: &[u8],
    claims: Option<&Claims>,
    engine: &mpsc::UnboundedSender<Command>,
    sip: &SipShared,
) -> Result<(Encoding, Vec<u8>), TwirpError> {
    if head.method != "POST" {
        let msg = format!(
            "unsupported method {:?} (only POST is allowed)",
            head.method
        );
        return Err(TwirpError::bad_route(msg, head));
    }
    let no_handler = || TwirpError::bad_route(format!("no handler for path {:?}", head.path), head);
    let (service, method) = head
        .path
        .strip_prefix(PATH_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(no_handler)?;
    let ct = head.content_type.as_deref().unwrap_or_default();
    let encoding = Encoding::from_content_type(ct)
        .ok_or_else(|| TwirpError::bad_route(format!("unexpected Content-Type: {ct:?}"), head))?;
    let call = Call {
        method,
        encoding,
        body,
        claims,
    };
    let out = match service {
        crate::room_service::SERVICE => crate::room_service::call(call, engine).await?,
        crate::sip_service::SERVICE => sip.call(call)?,
        _ => None,
    };
    out.map(|out| (encoding, out)).ok_or_else(no_handler)
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_protocol as proto;

    #[test]
    fn json_is_written_with_proto_field_names_but_attribute_keys_kept() {
        let info = proto::ParticipantInfo {
            identity: "sip_1".into(),
            joined_at_ms: 5,
            is_publisher: true,
            attributes: [("sip.callID".to_owned(), "x".to_owned())].into(),
            ..Default::default()
        };
        let out = Encoding::Json.encode(&info).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["joined_at_ms"], "5");
        assert_eq!(v["is_publisher"], true);
        assert_eq!(v["attributes"]["sip.callID"], "x");
        // What a Twirp server writes, livekit-protocol reads back.
        let back: proto::ParticipantInfo = Encoding::Json.decode(&out).unwrap();
        assert_eq!(back, info);
    }

    #[test]
    fn sip_header_maps_keep_their_keys() {
        let trunk = proto::SipInboundTrunkInfo {
            sip_trunk_id: "ST_1".into(),
            headers_to_attributes: [("X-Conf-Id".to_owned(), "conf.id".to_owned())].into(),
            allowed_addresses: vec!["10.0.0.0/8".into()],
            ..Default::default()
        };
        let out = Encoding::Json.encode(&trunk).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["sip_trunk_id"], "ST_1");
        assert_eq!(v["headers_to_attributes"]["X-Conf-Id"], "conf.id");
        let back: proto::SipInboundTrunkInfo = Encoding::Json.decode(&out).unwrap();
        assert_eq!(back, trunk);
    }

    #[test]
    fn both_json_spellings_of_a_request_are_read() {
        let a: proto::MuteRoomTrackRequest = Encoding::Json
            .decode(br#"{"room":"r","identity":"i","track_sid":"TR_1","muted":true}"#)
            .unwrap();
        let b: proto::MuteRoomTrackRequest = Encoding::Json
            .decode(br#"{"room":"r","identity":"i","trackSid":"TR_1","muted":true}"#)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.track_sid, "TR_1");
    }

    #[test]
    fn content_type_parameters_and_case_are_ignored() {
        assert_eq!(
            Encoding::from_content_type("Application/JSON; charset=utf-8"),
            Some(Encoding::Json)
        );
        assert_eq!(
            Encoding::from_content_type("application/protobuf"),
            Some(Encoding::Protobuf)
        );
        assert_eq!(Encoding::from_content_type("text/plain"), None);
    }

    #[test]
    fn error_codes_carry_the_twirp_spec_status() {
        assert_eq!(Code::InvalidArgument.http_status(), 400);
        assert_eq!(Code::Unavailable.http_status(), 503);
        let v: Value = serde_json::from_slice(&TwirpError::permissions_denied().body()).unwrap();
        assert_eq!(v["code"], "unauthenticated");
        assert_eq!(v["msg"], "permissions denied");
    }
}
