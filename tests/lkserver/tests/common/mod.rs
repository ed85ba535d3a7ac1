//! Shared test pieces: a real LiveKit client built from str0m and the protocol messages (the
//! join sequence a LiveKit SDK uses), a Goertzel tone meter, token helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dialin_lkserver::proto;
use futures_util::{SinkExt, StreamExt};
use livekit_api::access_token::{AccessToken, VideoGrants};
use opus_pure::{Application, OpusDecoder, OpusEncoder};
use prost::Message as _;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Tests that encode and decode audio in real time take this lock, so that they do not starve
/// each other of CPU on a small machine (Opus in a debug build is slow).
pub async fn media_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

pub const API_KEY: &str = "devkey";
pub const API_SECRET: &str = "secret";

/// Fraction of the signal's energy at `hz` (Goertzel, one bin over the whole block): about 1.0
/// for a pure tone at `hz`, near 0 when the tone is elsewhere.
pub fn tone_energy_fraction(samples: &[i16], rate: f64, hz: f64) -> f64 {
    let n = samples.len() as f64;
    if samples.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * hz / rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0f64;
    for &x in samples {
        let x = f64::from(x);
        energy += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if energy == 0.0 {
        return 0.0;
    }
    power / (n * energy / 2.0)
}

/// The last `secs` seconds of 48 kHz audio.
pub fn tail(samples: &[i16], secs: f64) -> &[i16] {
    let n = (secs * 48_000.0) as usize;
    &samples[samples.len().saturating_sub(n)..]
}

pub fn token(room: &str, identity: &str) -> String {
    AccessToken::with_api_key(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_name(&format!("{identity} name"))
        .with_ttl(Duration::from_secs(600))
        .with_grants(VideoGrants {
            room_join: true,
            room: room.into(),
            can_update_own_metadata: Some(true),
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}

/// An HS256 JWT with exactly these claims, signed with `secret`.
pub fn raw_jwt(claims: &serde_json::Value, secret: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let head = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64.encode(claims.to_string());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{head}.{body}").as_bytes());
    let sig = b64.encode(mac.finalize().into_bytes());
    format!("{head}.{body}.{sig}")
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn rtc_url(base: &str, token: &str, extra: &str) -> String {
    format!("{base}/rtc?access_token={token}&protocol=16&auto_subscribe=1&sdk=rust&version=0.0.1{extra}")
}

/// Wait until `f` holds, polling every 20 ms.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

#[derive(Default)]
pub struct ClientState {
    pub join: Option<proto::JoinResponse>,
    /// Every SignalResponse received, in order (across resumes).
    pub messages: Vec<Resp>,
    /// Decoded audio received on the subscriber PC, 48 kHz mono.
    pub audio: Vec<i16>,
    pub publisher_connected: bool,
    pub subscriber_connected: bool,
    pub subscriber_channels: Vec<String>,
    pub data: Vec<proto::DataPacket>,
    pub signal_connections: u32,
    /// The session is over (Leave received or stopped).
    pub ended: bool,
    pub track_published: Option<proto::TrackPublishedResponse>,
    pub rtp_sent: u64,
}

pub enum ClientCmd {
    Signal(Req),
    Data(proto::DataPacket, bool),
    Stop,
}

pub struct ClientOptions {
    pub url: String,
    pub token: String,
    /// Publish this tone (Hz) as a microphone track.
    pub publish_tone: Option<f64>,
    /// Send `PingReq` every `ping_interval` from the JoinResponse.
    pub ping: bool,
    /// On an unexpected WebSocket close, resume with `reconnect=1&sid=`.
    pub auto_resume: bool,
}

pub struct TestClient {
    state: Arc<Mutex<ClientState>>,
    cmd: mpsc::UnboundedSender<ClientCmd>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestClient {
    pub async fn connect(opts: ClientOptions) -> TestClient {
        let state = Arc::new(Mutex::new(ClientState::default()));
        let (cmd, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_client(opts, state.clone(), rx));
        TestClient { state, cmd, task }
    }

    pub fn state(&self) -> MutexGuard<'_, ClientState> {
        self.state.lock().unwrap()
    }

    pub fn send(&self, req: Req) {
        let _ = self.cmd.send(ClientCmd::Signal(req));
    }

    pub fn send_data(&self, pkt: proto::DataPacket, lossy: bool) {
        let _ = self.cmd.send(ClientCmd::Data(pkt, lossy));
    }

    pub fn stop(&self) {
        let _ = self.cmd.send(ClientCmd::Stop);
    }

    pub async fn wait(&self, timeout: Duration, f: impl Fn(&ClientState) -> bool) -> bool {
        eventually(timeout, || f(&self.state())).await
    }

    pub fn sid(&self) -> String {
        self.state()
            .join
            .as_ref()
            .and_then(|j| j.participant.as_ref())
            .map(|p| p.sid.clone())
            .unwrap_or_default()
    }

    pub fn count(&self, f: impl Fn(&Resp) -> bool) -> usize {
        self.state().messages.iter().filter(|m| f(m)).count()
    }
}

struct Pc {
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    timeout: Instant,
}

impl Pc {
    async fn new() -> Pc {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Pc {
            rtc,
            sock,
            addr,
            timeout: Instant::now(),
        }
    }

    fn drain(&mut self, events: &mut Vec<Event>) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.sock.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => events.push(e),
                Err(_) => {
                    self.timeout = Instant::now() + Duration::from_millis(100);
                    return;
                }
            }
        }
    }

    fn candidate_init(&self) -> String {
        let c = Candidate::host(self.addr, "udp").unwrap();
        format!(
            r#"{{"candidate":"{}","sdpMid":"0","sdpMLineIndex":0}}"#,
            c.to_sdp_string()
        )
    }
}

fn cand_from_init(init: &str) -> Option<Candidate> {
    let v: serde_json::Value = serde_json::from_str(init).ok()?;
    let c = v.get("candidate")?.as_str()?;
    Candidate::from_sdp_string(c.trim_start_matches("a=")).ok()
}

fn encode(req: Req) -> WsMessage {
    WsMessage::Binary(
        proto::SignalRequest { message: Some(req) }
            .encode_to_vec()
            .into(),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run_client(
    opts: ClientOptions,
    state: Arc<Mutex<ClientState>>,
    mut rx: mpsc::UnboundedReceiver<ClientCmd>,
) {
    let url = rtc_url(&opts.url, &opts.token, "");
    let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await else {
        state.lock().unwrap().ended = true;
        return;
    };
    state.lock().unwrap().signal_connections += 1;
    let (mut sink, mut stream) = ws.split();
    let mut publ = Pc::new().await;
    let mut subs = Pc::new().await;
    let mut pending: Option<SdpPendingOffer> = None;
    let mut mic: Option<Mid> = None;
    let mut pub_channels: Vec<(String, ChannelId)> = Vec::new();
    let mut sub_channels: Vec<(String, ChannelId)> = Vec::new();
    let mut sid = String::new();
    let mut ping_every = Duration::from_secs(5);
    let mut next_ping = Instant::now() + Duration::from_secs(3600);
    let mut next_media = Instant::now() + Duration::from_secs(3600);
    let mut encoder = OpusEncoder::new(48_000, 1, Application::Voip).unwrap();
    let mut decoder = OpusDecoder::new(48_000, 1).unwrap();
    let mut phase = 0.0f64;
    let mut rtp_time = 0u64;
    let mut sub_trickled = false;
    let mut buf1 = vec![0u8; 2048];
    let mut buf2 = vec![0u8; 2048];
    let mut events = Vec::new();

    loop {
        let deadline = publ
            .timeout
            .min(subs.timeout)
            .min(next_ping)
            .min(next_media)
            .min(Instant::now() + Duration::from_millis(50));
        let mut ws_closed = false;
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(WsMessage::Binary(b))) => {
                    let Ok(resp) = proto::SignalResponse::decode(b.as_ref()) else { continue };
                    let Some(m) = resp.message else { continue };
                    state.lock().unwrap().messages.push(m.clone());
                    match m {
                        Resp::Join(j) => {
                            sid = j.participant.as_ref().map(|p| p.sid.clone()).unwrap_or_default();
                            if j.ping_interval > 0 {
                                ping_every = Duration::from_secs(j.ping_interval as u64);
                            }
                            if opts.ping {
                                next_ping = Instant::now();
                            }
                            state.lock().unwrap().join = Some(j);
                            // AddTrack before the publisher offer, as LiveKit SDKs do.
                            {
                                let mut api = publ.rtc.sdp_api();
                                if let Some(hz) = opts.publish_tone {
                                    let _ = hz;
                                    let _ = sink.send(encode(Req::AddTrack(proto::AddTrackRequest {
                                        cid: "mic-1".into(),
                                        name: "microphone".into(),
                                        r#type: proto::TrackType::Audio as i32,
                                        source: proto::TrackSource::Microphone as i32,
                                        ..Default::default()
                                    }))).await;
                                    mic = Some(api.add_media(MediaKind::Audio, Direction::SendOnly, Some("stream-1".into()), Some("mic-1".into()), None));
                                }
                                api.add_channel("_reliable".into());
                                api.add_channel("_lossy".into());
                                let (offer, p) = api.apply().unwrap();
                                pending = Some(p);
                                let _ = sink.send(encode(Req::Offer(proto::SessionDescription { r#type: "offer".into(), sdp: offer.to_sdp_string(), id: 1, ..Default::default() }))).await;
                                let _ = sink.send(encode(Req::Trickle(proto::TrickleRequest { candidate_init: publ.candidate_init(), target: proto::SignalTarget::Publisher as i32, r#final: false }))).await;
                            }
                        }
                        Resp::Answer(sd) => {
                            if let Some(p) = pending.take() {
                                let ans = SdpAnswer::from_sdp_string(&sd.sdp).unwrap();
                                publ.rtc.sdp_api().accept_answer(p, ans).unwrap();
                            }
                        }
                        Resp::Offer(sd) => {
                            let offer = SdpOffer::from_sdp_string(&sd.sdp).unwrap();
                            let ans = subs.rtc.sdp_api().accept_offer(offer).unwrap();
                            let _ = sink.send(encode(Req::Answer(proto::SessionDescription { r#type: "answer".into(), sdp: ans.to_sdp_string(), id: sd.id, ..Default::default() }))).await;
                            if !sub_trickled {
                                sub_trickled = true;
                                let _ = sink.send(encode(Req::Trickle(proto::TrickleRequest { candidate_init: subs.candidate_init(), target: proto::SignalTarget::Subscriber as i32, r#final: false }))).await;
                            }
                        }
                        Resp::Trickle(t) => {
                            if let Some(c) = cand_from_init(&t.candidate_init) {
                                if t.target == proto::SignalTarget::Publisher as i32 { publ.rtc.add_remote_candidate(c) } else { subs.rtc.add_remote_candidate(c) }
                            }
                        }
                        Resp::TrackPublished(tp) => state.lock().unwrap().track_published = Some(tp),
                        Resp::Reconnect(_) => {
                            // Resume: restart ICE on the publisher PC, as the JS SDK does.
                            let mut api = publ.rtc.sdp_api();
                            api.ice_restart(true);
                            if let Some((offer, p)) = api.apply() {
                                pending = Some(p);
                                let _ = sink.send(encode(Req::Offer(proto::SessionDescription { r#type: "offer".into(), sdp: offer.to_sdp_string(), id: 2, ..Default::default() }))).await;
                            }
                        }
                        Resp::Leave(_) => {
                            state.lock().unwrap().ended = true;
                            return;
                        }
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => ws_closed = true,
            },
            c = rx.recv() => match c {
                Some(ClientCmd::Signal(r)) => { let _ = sink.send(encode(r)).await; }
                Some(ClientCmd::Data(pkt, lossy)) => {
                    let label = if lossy { "_lossy" } else { "_reliable" };
                    if let Some((_, id)) = pub_channels.iter().find(|(l, _)| l == label) {
                        if let Some(mut ch) = publ.rtc.channel(*id) {
                            let _ = ch.write(true, &pkt.encode_to_vec());
                        }
                    }
                }
                Some(ClientCmd::Stop) | None => {
                    let _ = sink.close().await;
                    state.lock().unwrap().ended = true;
                    return;
                }
            },
            r = publ.sock.recv_from(&mut buf1) => if let Ok((n, src)) = r {
                let _ = publ.rtc.handle_input(Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source: src, destination: publ.addr, contents: buf1[..n].try_into().unwrap() }));
            },
            r = subs.sock.recv_from(&mut buf2) => if let Ok((n, src)) = r {
                let _ = subs.rtc.handle_input(Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source: src, destination: subs.addr, contents: buf2[..n].try_into().unwrap() }));
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        if ws_closed {
            if !opts.auto_resume || state.lock().unwrap().ended {
                state.lock().unwrap().ended = true;
                return;
            }
            // Resume the same session on a new WebSocket.
            let url = rtc_url(&opts.url, &opts.token, &format!("&reconnect=1&sid={sid}"));
            match tokio_tungstenite::connect_async(&url).await {
                Ok((ws, _)) => {
                    let ws: Ws = ws;
                    let (s, r) = ws.split();
                    sink = s;
                    stream = r;
                    state.lock().unwrap().signal_connections += 1;
                }
                Err(_) => {
                    state.lock().unwrap().ended = true;
                    return;
                }
            }
        }
        let now = Instant::now();
        if now >= publ.timeout {
            let _ = publ.rtc.handle_input(Input::Timeout(now));
        }
        if now >= subs.timeout {
            let _ = subs.rtc.handle_input(Input::Timeout(now));
        }
        if now >= next_ping {
            next_ping = now + ping_every;
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let _ = sink
                .send(encode(Req::PingReq(proto::Ping {
                    timestamp: ts,
                    rtt: 0,
                })))
                .await;
        }
        if now >= next_media {
            next_media += Duration::from_millis(20);
            if let (Some(hz), Some(mid)) = (opts.publish_tone, mic) {
                let mut pcm = [0i16; 960];
                let step = 2.0 * std::f64::consts::PI * hz / 48_000.0;
                for s in pcm.iter_mut() {
                    *s = (0.3 * 32767.0 * phase.sin()) as i16;
                    phase = (phase + step) % (2.0 * std::f64::consts::PI);
                }
                let mut pkt = [0u8; 1500];
                let n = encoder.encode_s16(&pcm, 960, &mut pkt).unwrap();
                rtp_time += 960;
                let pt = publ
                    .rtc
                    .writer(mid)
                    .and_then(|w| w.payload_params().next().map(|p| p.pt()));
                if let (Some(pt), Some(w)) = (pt, publ.rtc.writer(mid)) {
                    if w.write(
                        pt,
                        now,
                        MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ),
                        pkt[..n].to_vec(),
                    )
                    .is_ok()
                    {
                        state.lock().unwrap().rtp_sent += 1;
                    }
                }
            }
        }
        publ.drain(&mut events);
        for e in events.drain(..) {
            match e {
                Event::Connected => {
                    state.lock().unwrap().publisher_connected = true;
                    next_media = Instant::now();
                }
                Event::ChannelOpen(id, label) => pub_channels.push((label, id)),
                _ => {}
            }
        }
        subs.drain(&mut events);
        for e in events.drain(..) {
            match e {
                Event::Connected => state.lock().unwrap().subscriber_connected = true,
                Event::ChannelOpen(id, label) => {
                    state
                        .lock()
                        .unwrap()
                        .subscriber_channels
                        .push(label.clone());
                    sub_channels.push((label, id));
                }
                Event::ChannelData(d) => {
                    if let Ok(pkt) = proto::DataPacket::decode(d.data.as_slice()) {
                        state.lock().unwrap().data.push(pkt);
                    }
                }
                Event::MediaData(d) => {
                    let mut pcm = [0i16; 5760];
                    if let Ok(n) = decoder.decode_s16(&d.data, 5760, &mut pcm) {
                        state.lock().unwrap().audio.extend_from_slice(&pcm[..n]);
                    }
                }
                _ => {}
            }
        }
    }
}
