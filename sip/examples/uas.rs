//! A tiny answering UAS on dialin-sip's endpoint: the peer of the SIPp tests
//! and of the signalling benchmark.
//!
//! Answers every INVITE with a fixed PCMU SDP answer (488 when PCMU is not
//! offered, our PCMU offer when the INVITE has no SDP), optionally challenges
//! with MD5 digest first (`--auth user:pass`, RFC 2617/RFC 3261 §22), can ring
//! before answering (`--ring-ms N`), and answers re-INVITE holds per RFC 3264
//! §6.1 (sendonly → recvonly, inactive → inactive, sendrecv → sendrecv).
//!
//! ```text
//! cargo run -p dialin-sip --release --example uas -- --listen 127.0.0.1:5060 [--auth alice:secret] [--ring-ms 500]
//! ```

#![allow(dead_code)]

use bytes::Bytes;
use dialin_sip::endpoint::{CallKey, EndpointConfig, EndpointDriver, EndpointHandle, Event};
use dialin_sip::header::HeaderName;
use dialin_sip::message::{Request, StatusCode, Text};
use dialin_sip::transport::{ListenAddr, Transport, TransportConfig, Transports};
use md5::{Digest, Md5};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

/// What the UAS does.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Address bound for both UDP and TCP (port 0: ephemeral, distinct per transport).
    pub listen: Option<SocketAddr>,
    /// `(user, password)` for a digest challenge on every INVITE.
    pub auth: Option<(String, String)>,
    /// Send 180 Ringing and answer after this long.
    pub ring: Option<Duration>,
}

/// Counters the tests read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub answered: u64,
    pub challenged: u64,
    pub cancelled: u64,
    pub byes: u64,
    pub reinvites: u64,
}

/// A running UAS.
pub struct Uas {
    pub addrs: Vec<ListenAddr>,
    pub stats: std::sync::Arc<std::sync::Mutex<Stats>>,
    transports: Transports,
    handle: EndpointHandle,
}

impl Uas {
    pub fn addr(&self, t: Transport) -> Option<SocketAddr> {
        self.addrs.iter().find(|l| l.transport == t).map(|l| l.addr)
    }
    pub fn stats(&self) -> Stats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }
    pub fn stop(&self) {
        let _ = self.handle.shutdown();
        self.transports.shutdown();
    }
}

const REALM: &str = "dialin";

/// Binds and starts answering; returns once the sockets are bound.
pub async fn start(opts: Options) -> Result<Uas, Box<dyn std::error::Error + Send + Sync>> {
    let addr = opts
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)));
    let mut tc = TransportConfig::default();
    tc.listen = vec![
        ListenAddr {
            transport: Transport::Udp,
            addr,
        },
        ListenAddr {
            transport: Transport::Tcp,
            addr,
        },
    ];
    tc.incoming_capacity = tc.incoming_capacity.max(8192);
    let (transports, incoming) = Transports::bind(tc).await?;
    let addrs = transports.local_addrs().to_vec();
    let (handle, mut events) =
        EndpointDriver::spawn(transports.clone(), incoming, EndpointConfig::default());
    let stats = std::sync::Arc::new(std::sync::Mutex::new(Stats::default()));
    let st = stats.clone();
    let h = handle.clone();
    tokio::spawn(async move {
        let mut app = App {
            opts,
            handle: h,
            nonces: HashSet::new(),
            versions: HashMap::new(),
            stats: st,
        };
        while let Some(ev) = events.recv().await {
            app.on_event(ev);
        }
    });
    Ok(Uas {
        addrs,
        stats,
        transports,
        handle,
    })
}

struct App {
    opts: Options,
    handle: EndpointHandle,
    nonces: HashSet<String>,
    versions: HashMap<CallKey, u32>,
    stats: std::sync::Arc<std::sync::Mutex<Stats>>,
}

impl App {
    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::IncomingCall { key, request, .. } => self.on_invite(key, &request),
            Event::ReInvite { key, body, .. } => {
                self.bump(|s| s.reinvites += 1);
                let v = self.versions.entry(key).or_insert(1);
                *v += 1;
                let version = *v;
                let answer = match pcmu_offered(&body) {
                    true => Ok(sdp(version, answer_direction(&body))),
                    false => Err(StatusCode::NOT_ACCEPTABLE_HERE),
                };
                let _ = self.handle.respond_reinvite(key, answer);
            }
            Event::Cancelled { .. } => self.bump(|s| s.cancelled += 1),
            Event::Bye { .. } => self.bump(|s| s.byes += 1),
            Event::CallEnded { key, .. } => {
                self.versions.remove(&key);
            }
            Event::Acked { .. }
            | Event::AckTimeout { .. }
            | Event::Info { .. }
            | Event::SessionExpired { .. } => {}
        }
    }

    fn on_invite(&mut self, key: CallKey, req: &Request) {
        if let Some((user, pass)) = self.opts.auth.clone() {
            let ok = req
                .headers
                .authorization()
                .is_some_and(|a| verify_digest(a, "INVITE", &user, &pass, &self.nonces));
            if !ok {
                let nonce = format!("{:032x}", rand::random::<u128>());
                self.nonces.insert(nonce.clone());
                let challenge = format!(
                    "Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\""
                );
                self.bump(|s| s.challenged += 1);
                let _ = self.handle.reject(
                    key,
                    StatusCode::UNAUTHORIZED,
                    None,
                    vec![(HeaderName::WwwAuthenticate, Text::from(challenge))],
                );
                return;
            }
        }
        if !req.body.is_empty() && !pcmu_offered(&req.body) {
            let _ = self
                .handle
                .reject(key, StatusCode::NOT_ACCEPTABLE_HERE, None, Vec::new());
            return;
        }
        self.versions.insert(key, 1);
        let answer = sdp(1, "sendrecv");
        self.bump(|s| s.answered += 1);
        match self.opts.ring {
            Some(delay) => {
                let _ = self.handle.ringing(key);
                let h = self.handle.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = h.answer(key, Some(answer), Vec::new());
                });
            }
            None => {
                let _ = self.handle.answer(key, Some(answer), Vec::new());
            }
        }
    }
}

/// True when the SDP offers PCMU (static payload type 0, RFC 3551) on its audio line.
pub fn pcmu_offered(sdp: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(sdp) else {
        return false;
    };
    s.lines().any(|l| {
        let l = l.trim();
        (l.starts_with("m=audio") && l.split_whitespace().skip(3).any(|f| f == "0"))
            || l.to_ascii_uppercase().starts_with("A=RTPMAP:")
                && l.to_ascii_uppercase().contains(" PCMU/8000")
    })
}

/// RFC 3264 §6.1: the direction answering the offer's.
pub fn answer_direction(offer: &[u8]) -> &'static str {
    let s = std::str::from_utf8(offer).unwrap_or("");
    let has = |a: &str| s.lines().any(|l| l.trim() == a);
    if has("a=sendonly") {
        "recvonly"
    } else if has("a=inactive") {
        "inactive"
    } else if has("a=recvonly") {
        "sendonly"
    } else {
        "sendrecv"
    }
}

/// Our PCMU session description.
pub fn sdp(version: u32, direction: &str) -> Bytes {
    Bytes::from(format!(
        "v=0\r\no=dialin 1 {version} IN IP4 127.0.0.1\r\ns=dialin\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
    ))
}

fn md5_hex(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits `Digest a="b", c=d` into its parameters.
fn digest_params(v: &str) -> Option<HashMap<String, String>> {
    let rest = v.trim().strip_prefix("Digest")?.trim();
    let mut out = HashMap::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut parts = Vec::new();
    for (i, c) in rest.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                parts.push(rest.get(start..i)?);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(rest.get(start..)?);
    for p in parts {
        let (k, v) = p.split_once('=')?;
        out.insert(
            k.trim().to_ascii_lowercase(),
            v.trim().trim_matches('"').to_owned(),
        );
    }
    Some(out)
}

/// Checks an MD5 digest `Authorization` (RFC 2617 §3.2.2, with or without qop=auth).
pub fn verify_digest(
    header: &str,
    method: &str,
    user: &str,
    pass: &str,
    nonces: &HashSet<String>,
) -> bool {
    let Some(p) = digest_params(header) else {
        return false;
    };
    let get = |k: &str| p.get(k).map(String::as_str);
    let (Some(u), Some(realm), Some(nonce), Some(uri), Some(resp)) = (
        get("username"),
        get("realm"),
        get("nonce"),
        get("uri"),
        get("response"),
    ) else {
        return false;
    };
    if u != user || realm != REALM || !nonces.contains(nonce) {
        return false;
    }
    let ha1 = md5_hex(&format!("{user}:{realm}:{pass}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let expected = match (get("qop"), get("nc"), get("cnonce")) {
        (Some(q), Some(nc), Some(cn)) => md5_hex(&format!("{ha1}:{nonce}:{nc}:{cn}:{q}:{ha2}")),
        _ => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    };
    expected.eq_ignore_ascii_case(resp)
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => {
                o.listen = Some(
                    val()?
                        .parse()
                        .map_err(|_| "bad --listen address".to_owned())?,
                )
            }
            "--auth" => {
                let v = val()?;
                let (u, p) = v.split_once(':').ok_or("--auth is user:pass")?;
                o.auth = Some((u.to_owned(), p.to_owned()));
            }
            "--ring-ms" => {
                o.ring = Some(Duration::from_millis(
                    val()?.parse().map_err(|_| "bad --ring-ms")?,
                ))
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("uas: {e}\nusage: uas [--listen IP:PORT] [--auth user:pass] [--ring-ms N]");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("uas: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        match start(opts).await {
            Ok(uas) => {
                for a in &uas.addrs {
                    println!("uas listening on {a}");
                }
                let _ = tokio::signal::ctrl_c().await;
                let s = uas.stats();
                println!(
                    "uas: answered {} challenged {} cancelled {} byes {}",
                    s.answered, s.challenged, s.cancelled, s.byes
                );
                uas.stop();
            }
            Err(e) => {
                eprintln!("uas: {e}");
                std::process::exit(1);
            }
        }
    });
}
