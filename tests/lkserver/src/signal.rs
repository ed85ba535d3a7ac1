//! The HTTP side: `GET /rtc/validate`, the `/rtc` WebSocket and `POST /twirp/...` (handed to
//! module `twirp`). The request head is read (peeked) first so that a bad token is
//! refused with a plain HTTP status and a text body before any upgrade, as livekit-server does;
//! an accepted `/rtc` connection then carries binary protobuf `SignalRequest`/`SignalResponse`
//! frames (livekit_rtc.proto) between the client and the engine task.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livekit_protocol::SignalRequest;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::engine::{Command, ConnId, JoinParams, WsOut};
use crate::sip_service::SipShared;
use crate::token::{TokenCheck, TokenError};

/// Largest request head accepted (headers of a browser upgrade are ~1 KiB).
const MAX_HEAD: usize = 16 * 1024;
/// A client that has not sent its request head by then is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn serve(
    listener: TcpListener,
    tokens: TokenCheck,
    engine: mpsc::UnboundedSender<Command>,
    sip: SipShared,
) {
    let mut next_conn = 1u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnId(next_conn);
        next_conn += 1;
        let tokens = tokens.clone();
        let engine = engine.clone();
        let sip = sip.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, conn, tokens, engine, sip).await {
                tracing::debug!("http connection: {e}");
            }
        });
    }
}

/// The parts of a request head we use.
pub(crate) struct Head {
    /// Bytes up to and including the blank line.
    pub len: usize,
    pub method: String,
    pub path: String,
    query: Vec<(String, String)>,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// Its token, when it is `Bearer <token>`.
    pub bearer: Option<String>,
    pub content_type: Option<String>,
    pub content_length: Option<usize>,
}

impl Head {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Head>> {
    let mut buf = vec![0u8; MAX_HEAD];
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
        let seen = buf.get(..n).unwrap_or_default();
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(parse_head(seen.get(..end).unwrap_or_default(), end + 4));
        }
        if n == 0 || n >= MAX_HEAD {
            return Ok(None);
        }
        // Partial head: peek returns the same bytes until more arrive.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn parse_head(head: &[u8], len: usize) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?;
    let target = first.next()?;
    let (path, qs) = target.split_once('?').unwrap_or((target, ""));
    let query = qs
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| (*v).to_owned())
    };
    let authorization = header("authorization");
    let bearer = authorization
        .as_deref()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    Some(Head {
        len,
        method: method.to_owned(),
        path: path.trim_end_matches('/').to_owned(),
        query,
        authorization,
        bearer,
        content_type: header("content-type"),
        content_length: header("content-length").and_then(|v| v.parse().ok()),
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b),
                }
            }
            b'+' => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn respond(
    stream: &mut TcpStream,
    head_len: usize,
    status: u16,
    body: &str,
) -> std::io::Result<()> {
    let mut discard = vec![0u8; head_len];
    stream.read_exact(&mut discard).await?;
    write_response(
        stream,
        status,
        "text/plain; charset=utf-8",
        format!("{body}\n").as_bytes(),
    )
    .await
}

/// Write a whole response and close: one request per connection.
pub(crate) async fn write_response(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

async fn handle(
    mut stream: TcpStream,
    conn: ConnId,
    tokens: TokenCheck,
    engine: mpsc::UnboundedSender<Command>,
    sip: SipShared,
) -> std::io::Result<()> {
    let Some(head) = read_head(&mut stream).await? else {
        return Ok(());
    };
    let token = head
        .param("access_token")
        .map(str::to_owned)
        .or_else(|| head.bearer.clone());
    let checked = || tokens.check(token.as_deref(), head.param("room"));
    if head.path.starts_with(crate::twirp::PATH_PREFIX) {
        return crate::twirp::serve(stream, head, &tokens, &engine, &sip).await;
    }
    match head.path.as_str() {
        "/rtc/validate" => match checked() {
            Ok(_) => respond(&mut stream, head.len, 200, "success").await,
            Err(e) => respond(&mut stream, head.len, e.http_status(), &e.to_string()).await,
        },
        "/rtc" => {
            let grant = match checked() {
                Ok(g) => g,
                Err(e) => return refuse(&mut stream, head.len, &e).await,
            };
            let params = JoinParams {
                reconnect: matches!(head.param("reconnect"), Some("1" | "true")),
                sid: head
                    .param("sid")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
                auto_subscribe: !matches!(head.param("auto_subscribe"), Some("0" | "false")),
                protocol: head
                    .param("protocol")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0),
            };
            // A small read buffer: tungstenite zeroes all of it on every read attempt, which
            // at the default 128 KiB dominated the server's CPU in load runs.
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(4096);
            let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config))
                .await
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            session(ws, conn, grant, params, engine).await;
            Ok(())
        }
        _ => respond(&mut stream, head.len, 404, "not found").await,
    }
}

async fn refuse(stream: &mut TcpStream, head_len: usize, e: &TokenError) -> std::io::Result<()> {
    tracing::debug!("refused /rtc: {e}");
    respond(stream, head_len, e.http_status(), &e.to_string()).await
}

async fn session(
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    conn: ConnId,
    grant: crate::token::JoinGrant,
    params: JoinParams,
    engine: mpsc::UnboundedSender<Command>,
) {
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let mut write_failed = false;
    if engine
        .send(Command::Connect {
            conn,
            grant: Box::new(grant),
            params,
            out: out_tx,
        })
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(WsMessage::Binary(b))) => match SignalRequest::decode(b.as_ref()) {
                    Ok(SignalRequest { message: Some(m) }) => {
                        let _ = engine.send(Command::Signal { conn, msg: Box::new(m) });
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!("undecodable SignalRequest: {e}"),
                },
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            out = out_rx.recv() => match out {
                Some(WsOut::Send(resp)) => {
                    // A failed write (the client is closing) does not end the connection:
                    // what the client sent before its close (a `Leave`) is still read, as
                    // livekit-server's separate reader and writer do.
                    if !write_failed
                        && sink.send(WsMessage::Binary(resp.encode_to_vec().into())).await.is_err()
                    {
                        write_failed = true;
                    }
                }
                Some(WsOut::Close) | None => {
                    let _ = sink.close().await;
                    // Signal the engine only if it did not initiate this close.
                    return;
                }
            },
        }
    }
    let _ = engine.send(Command::WsClosed { conn });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_yields_path_query_and_bearer() {
        let raw = b"GET /rtc/?access_token=a.b.c&reconnect=1&sid=PA_x&sdk=js%20sdk HTTP/1.1\r\nHost: h\r\nauthorization: Bearer tok\r\n";
        let head = parse_head(raw, raw.len() + 2).unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/rtc");
        assert_eq!(head.param("access_token"), Some("a.b.c"));
        assert_eq!(head.param("reconnect"), Some("1"));
        assert_eq!(head.param("sdk"), Some("js sdk"));
        assert_eq!(head.bearer.as_deref(), Some("tok"));
    }

    #[test]
    fn request_head_yields_content_type_and_length() {
        let raw = b"POST /twirp/livekit.RoomService/ListParticipants HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 12\r\nAuthorization: Basic x\r\n";
        let head = parse_head(raw, raw.len() + 2).unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.content_type.as_deref(), Some("application/json"));
        assert_eq!(head.content_length, Some(12));
        assert_eq!(head.authorization.as_deref(), Some("Basic x"));
        assert_eq!(head.bearer, None);
    }

    #[test]
    fn malformed_percent_escapes_are_kept_verbatim() {
        assert_eq!(percent_decode("a%zzb%4"), "a%zzb%4");
        assert_eq!(percent_decode("%41+b"), "A b");
    }

    #[test]
    fn garbage_request_line_is_rejected() {
        assert!(parse_head(b"\xff\xfe", 2).is_none());
        assert!(parse_head(b"GET", 3).is_none());
    }
}
