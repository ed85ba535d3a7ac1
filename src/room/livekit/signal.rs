//! The LiveKit signal connection: one WebSocket to `{url}/rtc`, one protobuf
//! `SignalRequest` per binary frame up, one `SignalResponse` per binary frame down.
//!
//! Sits between `LiveKitRooms::join` (which opens it and waits for the
//! `JoinResponse`) and the call's session task (which keeps it, pings it and resumes it with
//! `reconnect=1&sid=` when it drops). Query parameters follow what LiveKit's client SDKs send.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livekit_protocol as proto;
use prost::Message as _;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// Signalling protocol version we speak. Explicit, because a server picks single- or
/// two-peer-connection behaviour from it; 16 keeps the two peer connections (publisher,
/// subscriber) with every LiveKit server from 1.8 on.
pub(crate) const PROTOCOL_VERSION: u32 = 16;

/// What we say we are in `sdk=`/`version=` (the server logs it, never acts on it).
const SDK: &str = "rust";

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why the signal connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignalError {
    /// TCP/WebSocket failure or timeout: the server is down or unreachable.
    #[error("signal connection to {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered the upgrade with an HTTP error (bad token, no permission).
    #[error("signal connection refused with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    /// The server closed or sent a `Leave` instead of the `JoinResponse`.
    #[error("the server did not send a JoinResponse: {0}")]
    NoJoin(String),
}

/// `{base}/rtc?...`, with `reconnect=1&sid=` when resuming a session. Without
/// `auto_subscribe` the server subscribes the participant to nothing by itself
/// (`auto_subscribe=0`): it subscribes with `UpdateSubscription`, or not at all.
pub(crate) fn rtc_url(
    base: &str,
    token: &str,
    resume_sid: Option<&str>,
    auto_subscribe: bool,
) -> String {
    let base = base.trim_end_matches('/');
    let mut url = format!(
        "{base}/rtc?access_token={token}&protocol={PROTOCOL_VERSION}&auto_subscribe={}&sdk={SDK}&version={}",
        u8::from(auto_subscribe),
        env!("CARGO_PKG_VERSION")
    );
    if let Some(sid) = resume_sid {
        url.push_str("&reconnect=1&sid=");
        url.push_str(sid);
    }
    url
}

/// The TLS client for `wss://` URLs: rustls on ring with Mozilla's root certificates, built
/// once per backend. Explicit, so that the process-wide rustls provider (ambiguous when
/// several crates enable one) is never consulted.
pub(crate) fn tls_connector() -> Result<Connector, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(std::sync::Arc::new(config)))
}

/// Opens the WebSocket within `timeout`. The URL (it carries the token) is never logged.
/// Read buffer of the signal WebSocket. tungstenite zeroes its whole read buffer on every
/// read attempt, and the session polls the socket on every 20 ms tick and media packet: with
/// the default 128 KiB that memset was the largest single cost of a bridged call (15 % of the
/// gateway's CPU in a 50-call load run) and 128 KiB of resident memory per call. Signal
/// messages are a few hundred bytes; a larger one is read in several pieces.
const WS_READ_BUFFER: usize = 4 * 1024;
/// The largest signal message accepted: a `JoinResponse` for a big room is tens of KiB.
const WS_MAX_MESSAGE: usize = 4 << 20;

fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(Some(WS_MAX_MESSAGE))
        .max_frame_size(Some(WS_MAX_MESSAGE))
}

pub(crate) async fn connect(
    base: &str,
    token: &str,
    resume_sid: Option<&str>,
    auto_subscribe: bool,
    timeout: Duration,
    tls: &Connector,
) -> Result<Ws, SignalError> {
    let url = rtc_url(base, token, resume_sid, auto_subscribe);
    let unreachable = |reason: String| SignalError::Unreachable {
        url: base.to_owned(),
        reason,
    };
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        url,
        Some(ws_config()),
        false,
        Some(tls.clone()),
    );
    match tokio::time::timeout(timeout, connecting).await {
        Err(_) => Err(unreachable(format!("no answer within {timeout:?}"))),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).chars().take(200).collect())
                .unwrap_or_default();
            Err(SignalError::Refused { status, body })
        }
        Ok(Err(e)) => Err(unreachable(e.to_string())),
    }
}

/// The local IP address of the signal connection's TCP socket.
pub(crate) fn local_ip(ws: &Ws) -> Option<std::net::IpAddr> {
    let tcp = match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s,
        MaybeTlsStream::Rustls(s) => s.get_ref().0,
        _ => return None,
    };
    tcp.local_addr().ok().map(|a| a.ip())
}

/// Waits for the `JoinResponse`, the server's first message. Anything else before it is
/// handed back so that the session task can replay it (a subscriber offer may race ahead).
pub(crate) async fn await_join(
    ws: &mut Ws,
    timeout: Duration,
) -> Result<(proto::JoinResponse, Vec<Resp>), SignalError> {
    let mut early = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, recv(ws))
            .await
            .map_err(|_| SignalError::NoJoin(format!("nothing within {timeout:?}")))?;
        match msg {
            Some(Resp::Join(j)) => return Ok((j, early)),
            Some(Resp::Leave(l)) => {
                return Err(SignalError::NoJoin(format!("Leave (reason {})", l.reason)))
            }
            Some(other) => early.push(other),
            None => return Err(SignalError::NoJoin("the WebSocket closed".into())),
        }
    }
}

/// The next `SignalResponse`; `None` when the WebSocket is closed or failed. Frames that are
/// not protobuf `SignalResponse`s are skipped (the server never sends them).
pub(crate) async fn recv(ws: &mut Ws) -> Option<Resp> {
    loop {
        match ws.next().await? {
            Ok(WsMessage::Binary(b)) => {
                if let Ok(proto::SignalResponse { message: Some(m) }) =
                    proto::SignalResponse::decode(b.as_ref())
                {
                    return Some(m);
                }
            }
            Ok(WsMessage::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// How long closing waits for the server's side of the close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Closes the WebSocket the way RFC 6455 §7.1.1 asks: our close frame, then what the server
/// still sends is read until it closes too (at most [`CLOSE_WAIT`]). A socket dropped with
/// unread data is reset rather than closed (RFC 1122 §4.2.2.13), and a reset may make the
/// server discard what we sent just before it, such as our `Leave`.
pub(crate) async fn close(ws: &mut Ws) {
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Sends one request; `false` when the WebSocket is gone.
pub(crate) async fn send(ws: &mut Ws, req: Req) -> bool {
    let frame = proto::SignalRequest { message: Some(req) }.encode_to_vec();
    ws.send(WsMessage::Binary(frame.into())).await.is_ok()
}

/// A `Trickle` request's `candidateInit`: the JSON of a browser `RTCIceCandidateInit`, the
/// form LiveKit servers parse.
pub(crate) fn candidate_init(candidate_sdp: &str) -> String {
    serde_json::json!({ "candidate": candidate_sdp, "sdpMid": "0", "sdpMLineIndex": 0 }).to_string()
}

/// The candidate line from a server `Trickle`'s `candidateInit`, if it has one.
pub(crate) fn candidate_from_init(init: &str) -> Option<str0m::Candidate> {
    let v: serde_json::Value = serde_json::from_str(init).ok()?;
    let c = v.get("candidate")?.as_str()?;
    if c.is_empty() {
        return None;
    }
    str0m::Candidate::from_sdp_string(c.trim_start_matches("a=")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtc_url_carries_protocol_version_and_resume_sid() {
        let u = rtc_url("ws://lk.example:7880/", "TOK", Some("PA_1"), true);
        assert!(u.starts_with(
            "ws://lk.example:7880/rtc?access_token=TOK&protocol=16&auto_subscribe=1&sdk=rust"
        ));
        assert!(u.ends_with("&reconnect=1&sid=PA_1"));
        assert!(!rtc_url("ws://h", "T", None, true).contains("reconnect"));
        assert!(rtc_url("ws://h", "T", None, false).contains("&auto_subscribe=0&"));
    }

    #[test]
    fn candidate_init_round_trips_and_garbage_is_ignored() {
        let c = str0m::Candidate::host("127.0.0.1:4000".parse().unwrap(), "udp").unwrap();
        let back = candidate_from_init(&candidate_init(&c.to_sdp_string())).unwrap();
        assert_eq!(back.addr(), c.addr());
        assert!(candidate_from_init("{").is_none());
        assert!(candidate_from_init(r#"{"candidate":""}"#).is_none());
        assert!(candidate_from_init(r#"{"candidate":"nonsense"}"#).is_none());
    }
}
