//! End-to-end calls through the real `dialin serve` binary with the in-tree test caller:
//! PIN entry by each DTMF method, two callers bridged in a local room, and each way a call
//! is refused or ends (DESIGN.md §Call flow). Every test starts its own gateway on its own
//! ports, so they run in parallel.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialin_media::prompt::{Language, PromptCatalog, PromptId, SampleRate};
use support::caller::{Call, Caller, Codec, DialOptions, DtmfMode};
use support::gateway::{outcome_label, Gateway, GatewayOptions, DEFAULT_TRUNK};
use support::tone;
use tokio::net::UdpSocket;

/// A PIN with ten distinct digits.
const PIN: &str = "2468013579";
const SECOND: Duration = Duration::from_secs(1);

fn pcmu(gw: &Gateway) -> DialOptions {
    DialOptions {
        codecs: vec![Codec::Pcmu],
        ..DialOptions::new(gw.sip)
    }
}

/// Whether the caller hears a prompt starting after `since`: sound, and speech-like.
async fn hears_speech(call: &Call, since: Instant, limit: Duration) -> bool {
    let Some(start) = call.wait_for_sound(since, -40.0, limit).await else {
        return false;
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let heard = call.recorded_between(start, start + Duration::from_millis(1200));
    tone::is_speech_like(&heard, call.sample_rate())
}

/// Normalised correlation of `prompt` with `heard` starting at `off` (1: the same waveform).
fn correlation(heard: &[i16], prompt: &[i16], off: usize) -> f64 {
    let Some(seg) = heard.get(off..off + prompt.len()) else {
        return 0.0;
    };
    let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
    for (&a, &b) in seg.iter().zip(prompt) {
        let (a, b) = (f64::from(a), f64::from(b));
        xy += a * b;
        xx += a * a;
        yy += b * b;
    }
    xy / (xx * yy).sqrt().max(1.0)
}

/// Level of each 20 ms frame, in dB.
fn envelope(pcm: &[i16]) -> Vec<f64> {
    pcm.chunks(160)
        .map(|c| {
            10.0 * (c.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / c.len() as f64 + 1.0)
                .log10()
        })
        .collect()
}

/// Where `prompt` (8 kHz samples) starts in `heard` (8 kHz), if it is there: the level
/// envelopes give the frame, the waveform the exact sample, and the whole prompt must then
/// correlate above 0.9 (G.711 keeps it near 1).
fn find_prompt(heard: &[i16], prompt: &[i16]) -> Option<usize> {
    let (eh, ep) = (envelope(heard), envelope(prompt));
    let mut coarse = (0usize, f64::MIN);
    for lag in 0..eh.len().saturating_sub(ep.len()) {
        let score: f64 = -ep
            .iter()
            .zip(&eh[lag..])
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>();
        if score > coarse.1 {
            coarse = (lag, score);
        }
    }
    find_prompt_near(heard, prompt, coarse.0 * 160)
}

/// Where `prompt` starts within a frame or two of `around`, if it is there.
fn find_prompt_near(heard: &[i16], prompt: &[i16], around: usize) -> Option<usize> {
    let (off, c) = (around.saturating_sub(320)..around + 320)
        .map(|o| (o, correlation(heard, prompt, o)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    (c > 0.9).then_some(off)
}

async fn dial_and_join(
    gw: &Gateway,
    opts: DialOptions,
    mode: DtmfMode,
) -> (Call, serde_json::Value) {
    let before: Vec<String> = gw
        .calls()
        .await
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    let t0 = Instant::now();
    let call = Caller::dial(opts).await.expect("the gateway answers");
    call.play_silence();
    assert!(
        hears_speech(&call, t0, 5 * SECOND).await,
        "no welcome prompt"
    );
    call.send_dtmf(&format!("{PIN}#"), mode)
        .await
        .expect("digits sent");
    let joined = gw
        .wait_for_call(5 * SECOND, |c| {
            c["state"] == "in_room" && !before.iter().any(|b| c["id"] == b.as_str())
        })
        .await
        .expect("the call reaches in_room");
    (call, joined)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_callers_with_the_same_pin_are_bridged_and_hear_each_other() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("standup", Some(PIN)).await;
    let catalog = PromptCatalog::load(Language::En, None).unwrap();
    let joining = catalog
        .get(PromptId::Joining)
        .samples(SampleRate::Hz8000)
        .clone();
    let first = catalog
        .get(PromptId::FirstParticipant)
        .samples(SampleRate::Hz8000)
        .clone();

    // A (G.711) joins first: "joining", "you are the first participant", then hold music.
    let keyed = Instant::now();
    let (a, a_info) = dial_and_join(&gw, pcmu(&gw), DtmfMode::Rfc4733).await;
    assert_eq!(a_info["room"], "standup");
    let prompts_len = Duration::from_millis(((joining.len() + first.len()) / 8) as u64);
    tokio::time::sleep(prompts_len + 3 * SECOND).await;
    let heard = a.recorded(keyed);
    let at = find_prompt(&heard, &joining).expect("A hears \"joining\"");
    assert!(
        find_prompt_near(&heard, &first, at + joining.len()).is_some(),
        "A hears \"you are the first participant\" after \"joining\""
    );
    let music_from = at + joining.len() + first.len() + 1600;
    let music = heard
        .get(music_from..music_from + 16000)
        .expect("two seconds after the prompts");
    assert!(
        tone::rms_dbfs(music) > -45.0,
        "hold music after the prompts, got {} dBFS",
        tone::rms_dbfs(music)
    );

    // B (Opus, if the gateway prefers it) joins with the same PIN.
    let (b, b_info) = dial_and_join(
        &gw,
        DialOptions {
            from_user: "+33698765432".into(),
            ..DialOptions::new(gw.sip)
        },
        DtmfMode::Rfc4733,
    )
    .await;
    assert_eq!(b_info["room"], "standup");
    a.play_tone(440.0, -12.0);
    b.play_tone(1000.0, -12.0);
    // B's "joining" plays first; then both hear the other.
    tokio::time::sleep(Duration::from_millis((joining.len() / 8) as u64) + 2 * SECOND).await;
    let from = Instant::now();
    tokio::time::sleep(SECOND).await;
    let b_heard = b.recorded(from);
    let a_heard = a.recorded(from);
    for (who, call) in [("A", &a), ("B", &b)] {
        let frames = call.recorded_chunks(from);
        let gaps = frames
            .iter()
            .filter(|(_, c)| tone::rms_dbfs(c) < -30.0)
            .count();
        assert!(
            frames.len() >= 40 && gaps * 20 <= frames.len(),
            "{who} hears the other without gaps: {gaps} quiet frames of {}",
            frames.len()
        );
    }
    let fb = tone::dominant_frequency(&b_heard, b.sample_rate());
    let fa = tone::dominant_frequency(&a_heard, a.sample_rate());
    assert!(
        (fb - 440.0).abs() <= 10.0,
        "B hears A's 440 Hz, measured {fb} Hz ({} dBFS)",
        tone::rms_dbfs(&b_heard)
    );
    assert!(
        (fa - 1000.0).abs() <= 10.0,
        "A hears B's 1000 Hz, measured {fa} Hz ({} dBFS)",
        tone::rms_dbfs(&a_heard)
    );
    assert!(
        tone::goertzel_level(&a_heard, a.sample_rate(), 440.0)
            < tone::goertzel_level(&a_heard, a.sample_rate(), 1000.0) - 20.0,
        "A does not hear itself"
    );

    // B leaves: A is alone again and hears the hold music.
    b.hangup().await.unwrap();
    tokio::time::sleep(SECOND).await;
    let alone = Instant::now();
    tokio::time::sleep(2 * SECOND).await;
    let after = a.recorded(alone);
    assert!(
        tone::rms_dbfs(&after) > -45.0,
        "hold music once alone, got {} dBFS",
        tone::rms_dbfs(&after)
    );
    assert!(
        tone::goertzel_level(&after, a.sample_rate(), 1000.0) < -40.0,
        "B is gone"
    );
    assert_eq!(gw.calls().await.len(), 1);

    // Hanging up frees everything and completes both records.
    a.hangup().await.unwrap();
    assert!(
        gw.wait_no_calls(5 * SECOND).await,
        "calls still listed: {:?}",
        gw.calls().await
    );
    for info in [&a_info, &b_info] {
        let rec = gw
            .completed_record(info["id"].as_str().unwrap(), 5 * SECOND)
            .await
            .expect("call record");
        assert_eq!(outcome_label(&rec), Some("caller_hangup"));
        assert_eq!(rec.room.as_deref(), Some("standup"));
        assert!(rec.answered_at.is_some() && rec.ended_at.is_some());
        assert!(rec.rtp.packets_received > 50, "RTP counted: {:?}", rec.rtp);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_keyed_with_sip_info_joins_the_room() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("info-room", Some(PIN)).await;
    let (call, info) = dial_and_join(&gw, DialOptions::new(gw.sip), DtmfMode::Info).await;
    assert_eq!(info["room"], "info-room");
    call.hangup().await.unwrap();
    assert!(gw.wait_no_calls(5 * SECOND).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_keyed_as_inband_tones_joins_the_room() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("inband-room", Some(PIN)).await;
    let opts = DialOptions {
        telephone_event: false,
        ..pcmu(&gw)
    };
    let (call, info) = dial_and_join(&gw, opts, DtmfMode::Inband).await;
    assert_eq!(info["room"], "inband-room");
    call.hangup().await.unwrap();
    assert!(gw.wait_no_calls(5 * SECOND).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_offer_call_gets_our_offer_in_the_200_and_joins() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("late", Some(PIN)).await;
    let opts = DialOptions {
        no_sdp_in_invite: true,
        ..DialOptions::new(gw.sip)
    };
    let (call, info) = dial_and_join(&gw, opts, DtmfMode::Rfc4733).await;
    assert_eq!(info["room"], "late");
    assert!(call.remote_sdp().is_some_and(|s| s.contains("m=audio")));
    call.hangup().await.unwrap();
    assert!(gw.wait_no_calls(5 * SECOND).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_hang_up_sends_bye_and_records_the_outcome() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("standup", Some(PIN)).await;
    let (call, info) = dial_and_join(&gw, DialOptions::new(gw.sip), DtmfMode::Rfc4733).await;
    let id = info["id"].as_str().unwrap();
    tokio::time::sleep(3 * SECOND).await;
    let asked = Instant::now();
    assert_eq!(gw.hang_up(id).await, 204);
    assert!(call.wait_for_bye(10 * SECOND).await, "the caller gets BYE");
    let told = call.recorded_between(asked, Instant::now());
    assert!(
        tone::is_speech_like(&told, call.sample_rate()),
        "the caller hears goodbye before the BYE"
    );
    assert!(gw.wait_no_calls(5 * SECOND).await);
    let rec = gw.completed_record(id, 5 * SECOND).await.unwrap();
    assert_eq!(outcome_label(&rec), Some("admin_hangup"));
    assert_eq!(gw.hang_up(id).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_from_a_source_matching_no_trunk_is_refused_with_403() {
    let trunks = r#"
[[trunk]]
id = "elsewhere"
allowed_addresses = ["10.0.0.0/8"]
"#;
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunks.into()),
        ..Default::default()
    })
    .await;
    let err = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect_err("refused");
    assert_eq!(err.status(), Some(403), "{err}");
    assert!(gw.calls().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_at_its_call_limit_refuses_with_503_and_retry_after() {
    let trunks = DEFAULT_TRUNK.replace("max_calls = 10", "max_calls = 1");
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunks),
        ..Default::default()
    })
    .await;
    let first = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("first call answered");
    first.play_silence();
    let err = Caller::dial(DialOptions {
        from_user: "+33698765432".into(),
        ..DialOptions::new(gw.sip)
    })
    .await
    .expect_err("second call refused");
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(
        err.retry_after().is_some_and(|s| s > 0),
        "Retry-After: {:?}",
        err.header("Retry-After")
    );
    first.hangup().await.unwrap();
    assert!(gw.wait_no_calls(5 * SECOND).await);
    // The slot is free again.
    let again = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("answered once the first call ended");
    again.hangup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_with_credentials_challenges_then_answers_the_right_ones() {
    let trunks =
        format!("{DEFAULT_TRUNK}auth = {{ username = \"carrier\", password = \"s3cret\" }}\n");
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunks),
        ..Default::default()
    })
    .await;
    let err = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect_err("challenged without credentials");
    assert_eq!(err.status(), Some(401), "{err}");
    let wrong = DialOptions {
        credentials: Some(("carrier".into(), "wrong".into())),
        ..DialOptions::new(gw.sip)
    };
    let err = Caller::dial(wrong)
        .await
        .expect_err("wrong password refused");
    assert!(matches!(err.status(), Some(401 | 403)), "{err}");
    let right = DialOptions {
        credentials: Some(("carrier".into(), "s3cret".into())),
        ..DialOptions::new(gw.sip)
    };
    let call = Caller::dial(right)
        .await
        .expect("answered with the right credentials");
    call.hangup().await.unwrap();
}

/// A SIP UAC written by hand on a UDP socket, for what the test caller will not do:
/// offer a codec nobody supports, or go silent on RTP.
struct RawUac {
    sock: UdpSocket,
    gw: SocketAddr,
    call_id: String,
}

impl RawUac {
    async fn new(gw: SocketAddr) -> RawUac {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        RawUac {
            sock,
            gw,
            call_id: format!("raw-{}@127.0.0.1", rand_u32()),
        }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    async fn invite(&self, sdp: &str) -> String {
        let port = self.port();
        let msg = format!(
            "INVITE sip:1000@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{b};rport\r\nMax-Forwards: 70\r\n\
From: <sip:+33612345678@127.0.0.1>;tag=raw1\r\nTo: <sip:1000@{gw}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:caller@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            gw = self.gw,
            b = rand_u32(),
            cid = self.call_id,
            len = sdp.len(),
        );
        self.sock.send_to(msg.as_bytes(), self.gw).await.unwrap();
        loop {
            let text = self
                .recv(5 * SECOND)
                .await
                .expect("a response to the INVITE");
            let status: u16 = text.get(8..11).and_then(|s| s.parse().ok()).unwrap_or(0);
            if status >= 200 {
                return text;
            }
        }
    }

    async fn recv(&self, limit: Duration) -> Option<String> {
        let mut buf = vec![0u8; 65535];
        let (n, _) = tokio::time::timeout(limit, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// ACK for a final response (RFC 3261 §17.1.1.3 for non-2xx, §13.2.2.4 for 2xx; on
    /// loopback without proxies both go straight to the gateway).
    async fn ack(&self, response: &str) {
        let to = header(response, "To").unwrap_or_default();
        let via = header(response, "Via").unwrap_or_default();
        let msg = format!(
            "ACK sip:1000@{gw} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:+33612345678@127.0.0.1>;tag=raw1\r\n\
To: {to}\r\nCall-ID: {cid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            gw = self.gw,
            cid = self.call_id,
        );
        self.sock.send_to(msg.as_bytes(), self.gw).await.unwrap();
    }
}

fn header(msg: &str, name: &str) -> Option<String> {
    msg.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}

fn sdp_offer(port: u16, formats: &str, rtpmaps: &str) -> String {
    format!(
        "v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n{rtpmaps}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_without_a_common_codec_is_refused_with_488() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    let uac = RawUac::new(gw.sip).await;
    let sdp = sdp_offer(uac.port() + 2, "18", "a=rtpmap:18 G729/8000\r\n");
    let resp = uac.invite(&sdp).await;
    assert!(resp.starts_with("SIP/2.0 488"), "{resp}");
    uac.ack(&resp).await;
    assert!(gw.calls().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_offer_to_a_gateway_listening_on_ipv4_only_is_refused_with_488_and_logged() {
    // Answering it with an IPv4 address would be a call in silence.
    let gw = Gateway::start(GatewayOptions::default()).await;
    let uac = RawUac::new(gw.sip).await;
    let sdp = sdp_offer(uac.port() + 2, "0", "a=rtpmap:0 PCMU/8000\r\n")
        .replace("IN IP4 127.0.0.1", "IN IP6 ::1");
    let resp = uac.invite(&sdp).await;
    assert!(resp.starts_with("SIP/2.0 488"), "{resp}");
    uac.ack(&resp).await;
    assert!(gw.calls().await.is_empty());
    let end = Instant::now() + 5 * SECOND;
    while !gw.logs().contains("address family") {
        assert!(Instant::now() < end, "no log line says why: {}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_that_stops_sending_rtp_is_hung_up_after_rtp_timeout() {
    let gw = Gateway::start(GatewayOptions {
        rtp_timeout_s: 2,
        first_digit_timeout_s: 30,
        ..Default::default()
    })
    .await;
    let uac = RawUac::new(gw.sip).await;
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sdp = sdp_offer(
        rtp.local_addr().unwrap().port(),
        "0",
        "a=rtpmap:0 PCMU/8000\r\n",
    );
    let ok = uac.invite(&sdp).await;
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    uac.ack(&ok).await;
    let call = gw
        .wait_for_call(5 * SECOND, |_| true)
        .await
        .expect("call listed");
    let id = call["id"].as_str().unwrap().to_owned();
    // Half a second of RTP to the port the answer named, then silence on the wire.
    let answer_port: u16 = ok
        .lines()
        .find_map(|l| l.strip_prefix("m=audio ")?.split(' ').next()?.parse().ok())
        .expect("m=audio in the answer");
    for seq in 0u16..25 {
        let mut pkt = vec![0x80, 0x00];
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        pkt.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        pkt.extend(std::iter::repeat(0xffu8).take(160));
        rtp.send_to(&pkt, ("127.0.0.1", answer_port)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = Instant::now();
    // The gateway's BYE arrives after rtp_timeout (it may retransmit its 2xx first).
    let bye = loop {
        let msg = uac.recv(6 * SECOND).await.expect("BYE from the gateway");
        if msg.starts_with("BYE ") {
            break msg;
        }
    };
    let waited = stopped.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < 5 * SECOND,
        "BYE after {waited:?}"
    );
    let reply = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        header(&bye, "Via").unwrap(),
        header(&bye, "From").unwrap(),
        header(&bye, "To").unwrap(),
        header(&bye, "Call-ID").unwrap(),
        header(&bye, "CSeq").unwrap(),
    );
    uac.sock.send_to(reply.as_bytes(), gw.sip).await.unwrap();
    assert!(gw.wait_no_calls(5 * SECOND).await);
    let rec = gw.completed_record(&id, 5 * SECOND).await.unwrap();
    assert_eq!(outcome_label(&rec), Some("rtp_timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_call_logged_at_trace_never_shows_the_pin_or_the_calling_number() {
    let mut gw = Gateway::start(GatewayOptions {
        rust_log: "trace".into(),
        ..Default::default()
    })
    .await;
    gw.create_pin("private", Some(PIN)).await;
    let (call, info) = dial_and_join(&gw, DialOptions::new(gw.sip), DtmfMode::Rfc4733).await;
    assert_eq!(
        info["caller"].as_str().map(|c| c.contains("612345678")),
        Some(false)
    );
    call.hangup().await.unwrap();
    assert!(gw.wait_no_calls(5 * SECOND).await);
    let log = gw.stop().await;
    assert!(
        log.contains("call ended"),
        "the trace log was captured ({} bytes)",
        log.len()
    );
    assert!(log.contains("••••5678"), "the caller is logged masked");
    for (what, secret) in [("calling number", "612345678"), ("PIN", PIN)] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(secret)).take(5).collect();
        assert!(
            lines.is_empty(),
            "the log shows the full {what}:\n{}",
            lines.join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g722_caller_over_tcp_keys_the_pin_and_joins() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("tcp-room", Some(PIN)).await;
    let opts = DialOptions {
        transport: support::caller::SipTransport::Tcp,
        codecs: vec![Codec::G722],
        ..DialOptions::new(gw.sip)
    };
    let (call, info) = dial_and_join(&gw, opts, DtmfMode::Rfc4733).await;
    assert_eq!(info["room"], "tcp-room");
    assert_eq!(call.codec(), Some(Codec::G722));
    call.hangup().await.unwrap();
    assert!(gw.wait_no_calls(5 * SECOND).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_putting_the_gateway_on_hold_gets_no_media_until_it_resumes() {
    let gw = Gateway::start(GatewayOptions {
        rtp_timeout_s: 2,
        ..Default::default()
    })
    .await;
    gw.create_pin("hold-room", Some(PIN)).await;
    let (call, _) = dial_and_join(&gw, DialOptions::new(gw.sip), DtmfMode::Rfc4733).await;
    assert_eq!(
        call.reinvite(dialin_sip::sdp::Direction::SendOnly)
            .await
            .unwrap(),
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = call.packets_received();
    // Longer than rtp_timeout: a held call is not hung up for its silence.
    tokio::time::sleep(3 * SECOND).await;
    assert!(
        call.packets_received() - held <= 2,
        "the gateway kept sending while held: {} packets",
        call.packets_received() - held
    );
    assert!(!call.bye_received());
    assert_eq!(
        call.reinvite(dialin_sip::sdp::Direction::SendRecv)
            .await
            .unwrap(),
        200
    );
    let resumed = call.packets_received();
    assert!(
        call.wait_for_packets(resumed + 25, 2 * SECOND).await,
        "media flows again after resume"
    );
    let calls = gw.calls().await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["state"], "in_room");
    call.hangup().await.unwrap();
    assert!(gw.wait_no_calls(5 * SECOND).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_calls_in_progress_with_goodbye_and_bye() {
    let mut gw = Gateway::start(GatewayOptions::default()).await;
    let call = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("answered");
    call.play_silence();
    let listed = gw
        .wait_for_call(5 * SECOND, |c| c["state"] == "collecting_pin")
        .await
        .expect("call listed");
    let log = gw.stop().await;
    assert!(
        call.wait_for_bye(5 * SECOND).await,
        "the caller gets BYE before the gateway exits:\n{log}"
    );
    let rec = gw
        .completed_record(listed["id"].as_str().unwrap(), 5 * SECOND)
        .await
        .expect("call record");
    assert_eq!(outcome_label(&rec), Some("shutdown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_caller_on_a_trunk_allowing_srtp_keys_the_pin_and_joins() {
    let trunks = format!("{DEFAULT_TRUNK}srtp = \"allow\"\n");
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunks),
        ..Default::default()
    })
    .await;
    gw.create_pin("secure", Some(PIN)).await;
    let opts = DialOptions {
        srtp: true,
        ..pcmu(&gw)
    };
    let (call, info) = dial_and_join(&gw, opts, DtmfMode::Rfc4733).await;
    assert_eq!(info["room"], "secure");
    assert!(
        call.remote_sdp()
            .is_some_and(|s| s.contains("RTP/SAVP") && s.contains("a=crypto")),
        "{:?}",
        call.remote_sdp()
    );
    call.hangup().await.unwrap();
    assert!(gw.wait_no_calls(5 * SECOND).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_reaching_its_maximum_duration_is_ended_with_bye() {
    let gw = Gateway::start(GatewayOptions {
        max_call_duration_s: 4,
        first_digit_timeout_s: 30,
        ..Default::default()
    })
    .await;
    let t0 = Instant::now();
    let call = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("answered");
    call.play_silence();
    let listed = gw
        .wait_for_call(5 * SECOND, |_| true)
        .await
        .expect("call listed");
    assert!(
        call.wait_for_bye(15 * SECOND).await,
        "BYE at the maximum duration"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(3800),
        "not before the limit: {:?}",
        t0.elapsed()
    );
    let rec = gw
        .completed_record(listed["id"].as_str().unwrap(), 5 * SECOND)
        .await
        .unwrap();
    assert_eq!(outcome_label(&rec), Some("max_duration"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calling_number_with_too_many_failed_pins_is_locked_out_even_with_the_right_pin() {
    let gw = Gateway::start(GatewayOptions {
        failed_pin_limit: 2,
        ..Default::default()
    })
    .await;
    gw.create_pin("standup", Some(PIN)).await;
    let t0 = Instant::now();
    let call = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("answered");
    call.play_silence();
    assert!(
        hears_speech(&call, t0, 5 * SECOND).await,
        "no welcome prompt"
    );
    let listed = gw
        .wait_for_call(5 * SECOND, |_| true)
        .await
        .expect("call listed");
    call.send_dtmf("1111111111#", DtmfMode::Info).await.unwrap();
    tokio::time::sleep(SECOND).await;
    call.send_dtmf("2222222222#", DtmfMode::Info).await.unwrap();
    assert!(
        call.wait_for_bye(15 * SECOND).await,
        "locked out after two failures"
    );
    let rec = gw
        .completed_record(listed["id"].as_str().unwrap(), 5 * SECOND)
        .await
        .unwrap();
    assert_eq!(outcome_label(&rec), Some("locked_out"));

    // The same number calls back with the right PIN: still refused, never joined.
    let again = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("answered");
    again.play_silence();
    let listed = gw
        .wait_for_call(5 * SECOND, |_| true)
        .await
        .expect("call listed");
    tokio::time::sleep(SECOND).await;
    again
        .send_dtmf(&format!("{PIN}#"), DtmfMode::Info)
        .await
        .unwrap();
    assert!(
        again.wait_for_bye(15 * SECOND).await,
        "locked-out caller hung up"
    );
    let rec = gw
        .completed_record(listed["id"].as_str().unwrap(), 5 * SECOND)
        .await
        .unwrap();
    assert_eq!(outcome_label(&rec), Some("locked_out"));
    assert_eq!(rec.room, None);

    // Another number is not affected.
    let other = DialOptions {
        from_user: "+33698765432".into(),
        ..DialOptions::new(gw.sip)
    };
    let (call, info) = dial_and_join(&gw, other, DtmfMode::Info).await;
    assert_eq!(info["room"], "standup");
    call.hangup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_to_a_number_the_trunk_does_not_serve_is_refused_with_403() {
    let trunks = DEFAULT_TRUNK.replace(
        "max_calls = 10",
        "max_calls = 10\nnumbers = [\"+33 1 23 45 67 89\"]",
    );
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunks),
        ..Default::default()
    })
    .await;
    let err = Caller::dial(DialOptions {
        to_user: "1000".into(),
        ..DialOptions::new(gw.sip)
    })
    .await
    .expect_err("refused");
    assert_eq!(err.status(), Some(403), "{err}");
    let served = Caller::dial(DialOptions {
        to_user: "+33123456789".into(),
        ..DialOptions::new(gw.sip)
    })
    .await
    .expect("the served number is answered");
    served.hangup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_in_french_greets_callers_with_the_french_prompt() {
    let trunks = DEFAULT_TRUNK.replace("max_calls = 10", "max_calls = 10\nlanguage = \"fr\"");
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunks),
        ..Default::default()
    })
    .await;
    let t0 = Instant::now();
    let call = Caller::dial(pcmu(&gw)).await.expect("answered");
    call.play_silence();
    let fr = PromptCatalog::load(Language::Fr, None).unwrap();
    let en = PromptCatalog::load(Language::En, None).unwrap();
    // The first two seconds of each welcome prompt, looked for in what the caller heard.
    let head = |c: &PromptCatalog| {
        c.get(PromptId::WelcomeEnterPin).samples(SampleRate::Hz8000)[..16000].to_vec()
    };
    tokio::time::sleep(3 * SECOND).await;
    let heard = call.recorded(t0);
    assert!(
        find_prompt(&heard, &head(&fr)).is_some(),
        "the French welcome plays"
    );
    assert!(
        find_prompt(&heard, &head(&en)).is_none(),
        "not the English one"
    );
    call.hangup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_calls_give_their_rtp_ports_back() {
    // Two even/odd pairs: two calls at a time.
    let gw = Gateway::start(GatewayOptions {
        rtp_ports: 4,
        ..Default::default()
    })
    .await;
    let (first, last) = gw.rtp_ports;
    let a = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("first call");
    let b = Caller::dial(DialOptions {
        from_user: "+33698765432".into(),
        ..DialOptions::new(gw.sip)
    })
    .await
    .expect("second call");
    let err = Caller::dial(DialOptions {
        from_user: "+33611111111".into(),
        ..DialOptions::new(gw.sip)
    })
    .await
    .expect_err("no RTP port left");
    assert_eq!(err.status(), Some(503), "{err}");
    a.hangup().await.unwrap();
    b.hangup().await.unwrap();
    assert!(gw.wait_no_calls(5 * SECOND).await);
    for port in (first..=last).step_by(2) {
        assert!(
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok(),
            "RTP port {port} still bound after the calls ended"
        );
    }
    // Many more calls than ports, one after the other.
    for i in 0..6 {
        let call = Caller::dial(DialOptions::new(gw.sip))
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        call.hangup().await.unwrap();
        assert!(gw.wait_no_calls(5 * SECOND).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtp_port_held_by_another_program_is_skipped() {
    let gw = Gateway::start(GatewayOptions {
        rtp_ports: 4,
        ..Default::default()
    })
    .await;
    let (first, _) = gw.rtp_ports;
    // The pair the pool would lease first is taken by someone else.
    let squatter = std::net::UdpSocket::bind(("127.0.0.1", first)).expect("squat the first port");
    let call = Caller::dial(DialOptions::new(gw.sip))
        .await
        .expect("the call gets the next pair");
    let sdp = call.remote_sdp().expect("an SDP answer");
    assert!(
        sdp.contains(&format!("m=audio {} ", first + 2)),
        "the answer names the next pair: {sdp}"
    );
    // Only the squatted pair is left: the next call is refused, not half set up.
    let err = Caller::dial(DialOptions {
        from_user: "+33698765432".into(),
        ..DialOptions::new(gw.sip)
    })
    .await
    .expect_err("no bindable RTP port left");
    assert_eq!(err.status(), Some(503), "{err}");
    drop(squatter);
    call.hangup().await.unwrap();
    assert!(gw.wait_no_calls(5 * SECOND).await);
}

/// A caller that puts the call on hold plays its hold music at us: it is not mixed into the
/// room. Resuming mixes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_on_hold_is_not_heard_in_the_room_until_it_resumes() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("hold-mix", Some(PIN)).await;
    let (a, _) = dial_and_join(&gw, pcmu(&gw), DtmfMode::Rfc4733).await;
    let (b, _) = dial_and_join(
        &gw,
        DialOptions {
            from_user: "+33698765432".into(),
            ..pcmu(&gw)
        },
        DtmfMode::Rfc4733,
    )
    .await;
    b.play_silence();
    a.play_tone(440.0, -12.0);
    let hears_a = |since: Instant| tone::goertzel_level(&b.recorded(since), 8000, 440.0);
    // B hears A.
    let end = Instant::now() + 10 * SECOND;
    while hears_a(Instant::now() - SECOND) < -30.0 {
        assert!(Instant::now() < end, "B never hears A");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A holds (and keeps sending its tone, as a phone plays hold music): B stops hearing it.
    assert_eq!(
        a.reinvite(dialin_sip::sdp::Direction::SendOnly).await.unwrap(),
        200
    );
    let held = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let from = Instant::now();
    tokio::time::sleep(SECOND).await;
    let level = tone::goertzel_level(&b.recorded_between(from, Instant::now()), 8000, 440.0);
    assert!(level < -50.0, "B hears the held caller at {level:.1} dBFS ({:?} after hold)", held.elapsed());
    // A resumes: B hears it again.
    assert_eq!(
        a.reinvite(dialin_sip::sdp::Direction::SendRecv).await.unwrap(),
        200
    );
    let end = Instant::now() + 5 * SECOND;
    while hears_a(Instant::now() - Duration::from_millis(500)) < -30.0 {
        assert!(Instant::now() < end, "B hears A again after it resumes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.hangup().await.unwrap();
    b.hangup().await.unwrap();
}

/// A trunk chooses the digest algorithms it is challenged with, and their order: MD5 first
/// for phones that give up on a SHA-256 first challenge, or MD5 alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_chooses_its_digest_algorithms_and_their_order() {
    for (algorithms, expected) in [
        (None, vec!["SHA-256", "MD5"]),
        (Some("[\"MD5\", \"SHA-256\"]"), vec!["MD5", "SHA-256"]),
        (Some("[\"MD5\"]"), vec!["MD5"]),
    ] {
        let auth = match algorithms {
            None => "auth = { username = \"carrier\", password = \"s3cret\" }\n".to_owned(),
            Some(a) => format!(
                "auth = {{ username = \"carrier\", password = \"s3cret\", algorithms = {a} }}\n"
            ),
        };
        let gw = Gateway::start(GatewayOptions {
            trunks: Some(format!("{DEFAULT_TRUNK}{auth}")),
            ..Default::default()
        })
        .await;
        let uac = RawUac::new(gw.sip).await;
        let resp = uac
            .invite(&sdp_offer(uac.port() + 2, "0", "a=rtpmap:0 PCMU/8000\r\n"))
            .await;
        assert!(resp.starts_with("SIP/2.0 401"), "{resp}");
        uac.ack(&resp).await;
        let offered: Vec<&str> = resp
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
            .map(|l| {
                l.split("algorithm=")
                    .nth(1)
                    .and_then(|a| a.split([',', ' ', '\r']).next())
                    .unwrap_or("")
                    .trim_matches('"')
            })
            .collect();
        assert_eq!(offered, expected, "{resp}");
        // The MD5-only trunk still admits a caller answering its challenge.
        if expected == ["MD5"] {
            let call = Caller::dial(DialOptions {
                credentials: Some(("carrier".into(), "s3cret".into())),
                ..DialOptions::new(gw.sip)
            })
            .await
            .expect("answered with the right credentials over MD5");
            call.hangup().await.unwrap();
        }
    }
}

/// `dialin_sip_requests_total{method}` counts every request, whatever its method, and
/// `dialin_sip_responses_total{class}` every response sent, provisional ones included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_metrics_count_every_method_and_every_response() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("metrics", Some(PIN)).await;
    let m = |s: &'static str| {
        let gw = &gw;
        async move { gw.metric(s).await.unwrap_or(0.0) }
    };
    // An OPTIONS probe from the trunk.
    let uac = RawUac::new(gw.sip).await;
    let probe = format!(
        "OPTIONS sip:{gw} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bKopt{r};rport\r\n\
         From: <sip:lb@127.0.0.1>;tag=o1\r\nTo: <sip:{gw}>\r\nCall-ID: opt{r}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        gw = gw.sip,
        p = uac.port(),
        r = rand_u32()
    );
    uac.sock.send_to(probe.as_bytes(), gw.sip).await.unwrap();
    assert!(uac.recv(5 * SECOND).await.is_some_and(|r| r.starts_with("SIP/2.0 200")));
    // A whole call: INVITE (100, 200), ACK, INFO digits, BYE (200).
    let (call, _) = dial_and_join(&gw, pcmu(&gw), DtmfMode::Info).await;
    call.hangup().await.unwrap();
    assert!(gw.wait_no_calls(5 * SECOND).await);
    assert_eq!(m("dialin_sip_requests_total{method=\"OPTIONS\"}").await, 1.0);
    assert_eq!(m("dialin_sip_requests_total{method=\"INVITE\"}").await, 1.0);
    assert!(m("dialin_sip_requests_total{method=\"ACK\"}").await >= 1.0);
    assert!(m("dialin_sip_requests_total{method=\"INFO\"}").await >= 11.0, "ten digits and #");
    assert_eq!(m("dialin_sip_requests_total{method=\"BYE\"}").await, 1.0);
    assert!(m("dialin_sip_responses_total{class=\"1xx\"}").await >= 1.0, "100 Trying");
    // 200 to OPTIONS, INVITE, every INFO and BYE.
    assert!(m("dialin_sip_responses_total{class=\"2xx\"}").await >= 14.0);
}
