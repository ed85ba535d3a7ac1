//! The gateway's PIN menu driven by SIPp, a real SIP peer, keying digits with the RFC 2833
//! captures SIPp ships (`dtmf_2833_<key>.pcap`: one `telephone-event` press each, payload
//! type 101, one SSRC, a fixed RTP timestamp per key), plus the no-input path heard through
//! the in-tree caller (DESIGN.md §Call flow steps 3–4).
//!
//! The captures reuse their timestamps, and an RFC 4733 receiver rightly takes a packet
//! carrying an already-seen or slightly older timestamp for a late retransmission of that
//! press. The key sequences below are therefore chosen so that each press carries a newer
//! timestamp than the one before (the captures' order is 1 0 2 3 4 5 6 7 8 9 * #) or one
//! far enough back, and no key repeats within a call.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::caller::{Caller, Codec, DialOptions};
use support::gateway::{outcome_label, Gateway, GatewayOptions};
use support::sipp::{self, free_media_port, free_port, ScratchDir, SippProcess};
use support::tone;

const SECOND: Duration = Duration::from_secs(1);
/// Where Debian's sip-tester package puts SIPp's captures.
const PCAP_DIR: &str = "/usr/share/sip-tester";
/// Pause after each press: the capture lasts 140 ms; a person keys about three a second.
const BETWEEN_KEYS_MS: u64 = 300;

/// One step of a SIPp caller after the call is answered.
enum Step {
    /// Key these digits (`0`-`9`, `*`, `#`), one capture each.
    Keys(&'static str),
    Pause(Duration),
    /// Wait for the gateway's BYE and answer 200.
    AwaitBye(Duration),
    /// Hang up with BYE.
    Bye,
}

fn trunk(pin_length: usize) -> String {
    format!(
        r#"
[[trunk]]
id = "carrier"
allowed_addresses = ["127.0.0.0/8"]
pin_length = {pin_length}
max_attempts = 3
"#
    )
}

/// The capture SIPp plays for `key`, if SIPp's captures are installed (skip/strict rule).
fn capture(key: char) -> Option<PathBuf> {
    let name = match key {
        '#' => "pound".to_owned(),
        '*' => "star".to_owned(),
        d => d.to_string(),
    };
    let p = Path::new(PCAP_DIR).join(format!("dtmf_2833_{name}.pcap"));
    if p.is_file() {
        return Some(p);
    }
    if sipp::strict() {
        panic!(
            "SIPp's RFC 2833 captures are required ({}=1) but {} is missing",
            sipp::STRICT_ENV,
            p.display()
        );
    }
    eprintln!("skipping: {} is missing (install sip-tester)", p.display());
    None
}

/// A UAC scenario: INVITE offering PCMU and telephone-event/8000 as 101, ACK, then `steps`.
fn scenario(steps: &[Step]) -> Option<String> {
    let mut body = String::from(INVITE_AND_ACK);
    for step in steps {
        match step {
            Step::Keys(keys) => {
                for key in keys.chars() {
                    let pcap = capture(key)?;
                    body.push_str(&format!(
                        "  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n  <pause milliseconds=\"{BETWEEN_KEYS_MS}\"/>\n",
                        pcap.display()
                    ));
                }
            }
            Step::Pause(d) => {
                body.push_str(&format!("  <pause milliseconds=\"{}\"/>\n", d.as_millis()))
            }
            Step::AwaitBye(limit) => {
                body.push_str(&AWAIT_BYE.replace("LIMIT_MS", &limit.as_millis().to_string()))
            }
            Step::Bye => body.push_str(SEND_BYE),
        }
    }
    body.push_str("</scenario>\n");
    Some(body)
}

/// Starts SIPp calling the gateway with `steps`; `None` when SIPp or its captures are missing.
fn start_sipp(gw: &Gateway, steps: &[Step]) -> Option<SippProcess> {
    start_sipp_to(gw, steps, "1000")
}

/// [`start_sipp`] dialling `number`.
fn start_sipp_to(gw: &Gateway, steps: &[Step], number: &str) -> Option<SippProcess> {
    let bin = sipp::sipp_or_skip()?;
    let xml = scenario(steps)?;
    let dir = ScratchDir::new("gw-sipp").expect("scratch dir");
    let sf = dir
        .write("uac.xml", xml.as_bytes())
        .expect("scenario written");
    let args: Vec<String> = [
        gw.sip.to_string(),
        "-sf".into(),
        sf.to_string_lossy().into_owned(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        free_port().to_string(),
        "-t".into(),
        "u1".into(),
        "-m".into(),
        "1".into(),
        "-s".into(),
        number.into(),
        "-mi".into(),
        "127.0.0.1".into(),
        "-mp".into(),
        free_media_port().to_string(),
        "-timeout".into(),
        "40s".into(),
        "-timeout_error".into(),
    ]
    .into_iter()
    .collect();
    Some(SippProcess::spawn_in(&bin, &args, gw.sip, dir).expect("sipp starts"))
}

fn keys_duration(keys: &str) -> Duration {
    Duration::from_millis(BETWEEN_KEYS_MS * keys.len() as u64)
}

/// A gateway (with the `[rooms]` table `rooms`, else local rooms) where PIN 1023456789 leads to
/// `weekly`, and SIPp calling it: a second of silence, the PIN and `#`, five seconds in the
/// room, BYE. Also how long the gateway may take to put the call in its room. `None` when SIPp
/// or its captures are missing.
async fn weekly_pin_call(rooms: Option<String>) -> Option<(Gateway, SippProcess, Duration)> {
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunk(10)),
        rooms,
        ..Default::default()
    })
    .await;
    gw.create_pin("weekly", Some("1023456789")).await;
    let steps = [
        Step::Pause(SECOND),
        Step::Keys("1023456789#"),
        Step::Pause(5 * SECOND),
        Step::Bye,
    ];
    let sipp = start_sipp(&gw, &steps)?;
    let limit = SECOND + keys_duration("1023456789#") + 4 * SECOND;
    Some((gw, sipp, limit))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_keying_the_right_pin_with_rfc2833_joins_the_room() {
    let Some((gw, sipp, limit)) = weekly_pin_call(None).await else {
        return;
    };
    let joined = gw.wait_for_call(limit, |c| c["state"] == "in_room").await;
    let outcome = sipp.wait(20 * SECOND).await;
    let joined = joined.unwrap_or_else(|| panic!("never in_room; sipp: {outcome:?}"));
    assert_eq!(joined["room"], "weekly");
    assert!(outcome.success(), "{outcome:?}");
    assert!(gw.wait_no_calls(5 * SECOND).await);
    let rec = gw
        .completed_record(joined["id"].as_str().unwrap(), 5 * SECOND)
        .await
        .unwrap();
    assert_eq!(outcome_label(&rec), Some("caller_hangup"));
    assert_eq!(rec.room.as_deref(), Some("weekly"));
}

/// The same SIPp caller with `rooms.backend = "livekit"`: after the PIN, the LiveKit test
/// server has a participant of kind SIP for the call, named and tagged per DESIGN.md
/// §Participant in the room, with the calling number masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_keying_the_right_pin_joins_the_livekit_room_as_a_sip_participant() {
    const SECRET: &str = "sipp-livekit-test-secret";
    let server = dialin_lkserver::TestServer::start("devkey", SECRET)
        .await
        .expect("LiveKit test server");
    let rooms = format!(
        "[rooms]\nbackend = \"livekit\"\n\n[livekit]\nurl = \"{}\"\napi_key = \"devkey\"\napi_secret = \"{SECRET}\"\n",
        server.url()
    );
    let Some((gw, sipp, limit)) = weekly_pin_call(Some(rooms)).await else {
        return;
    };
    let joined = gw.wait_for_call(limit, |c| c["state"] == "in_room").await;
    let participant = server
        .wait_for_participant("weekly", |p| p.publisher_connected, 5 * SECOND)
        .await
        .expect("test server answers");
    let outcome = sipp.wait(20 * SECOND).await;
    let joined = joined.unwrap_or_else(|| panic!("never in_room; sipp: {outcome:?}"));
    let p = participant.expect("a participant in the LiveKit room, publishing");
    let id = joined["id"].as_str().expect("call id");
    assert_eq!(p.identity, format!("sip_{id}"));
    assert_eq!(p.kind, dialin_lkserver::ParticipantKind::Sip);
    assert_eq!(p.name, "Phone ••••5678");
    let attr = |k: &str| p.attributes.get(k).map(String::as_str);
    assert_eq!(attr("sip.phoneNumber"), Some("••••5678"), "masked number");
    assert_eq!(attr("sip.callID"), Some(id));
    assert_eq!(attr("sip.trunkID"), Some("carrier"));
    assert_eq!(attr("sip.callStatus"), Some("active"));
    assert!(outcome.success(), "{outcome:?}");
    assert!(gw.wait_no_calls(5 * SECOND).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_keying_three_wrong_pins_is_told_goodbye_and_hung_up() {
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunk(4)),
        rtp_timeout_s: 30,
        ..Default::default()
    })
    .await;
    gw.create_pin("weekly", Some("9876")).await;
    // Three wrong entries: ended by `#`, then twice by the inter-digit timeout (2 s).
    let steps = [
        Step::Pause(SECOND),
        Step::Keys("1023#"),
        Step::Pause(SECOND),
        Step::Keys("4567"),
        Step::Pause(3 * SECOND),
        Step::Keys("89"),
        Step::AwaitBye(15 * SECOND),
    ];
    let Some(sipp) = start_sipp(&gw, &steps) else {
        return;
    };
    let call = gw
        .wait_for_call(5 * SECOND, |_| true)
        .await
        .expect("call listed");
    let outcome = sipp.wait(30 * SECOND).await;
    assert!(
        outcome.success(),
        "the gateway hangs up with BYE: {outcome:?}"
    );
    assert!(outcome.messages.contains("BYE sip:"), "{outcome:?}");
    assert!(gw.wait_no_calls(5 * SECOND).await);
    let rec = gw
        .completed_record(call["id"].as_str().unwrap(), 5 * SECOND)
        .await
        .unwrap();
    assert_eq!(outcome_label(&rec), Some("pin_failed"));
    assert_eq!(rec.pin_attempts, 3);
    assert_eq!(rec.room, None);
    assert_eq!(
        gw.metric("dialin_calls_total{outcome=\"pin_failed\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        gw.metric("dialin_pin_attempts_total{result=\"unknown\"}")
            .await,
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_star_clears_the_entry_and_the_right_pin_then_joins() {
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunk(4)),
        ..Default::default()
    })
    .await;
    gw.create_pin("retro", Some("5678")).await;
    // "12" alone would be a wrong PIN; `*` throws it away, so the next entry is the first attempt.
    let steps = [
        Step::Pause(SECOND),
        Step::Keys("12*"),
        Step::Pause(SECOND),
        Step::Keys("5678#"),
        Step::Pause(5 * SECOND),
        Step::Bye,
    ];
    let Some(sipp) = start_sipp(&gw, &steps) else {
        return;
    };
    let limit = 2 * SECOND + keys_duration("12*5678#") + 4 * SECOND;
    let joined = gw.wait_for_call(limit, |c| c["state"] == "in_room").await;
    let outcome = sipp.wait(20 * SECOND).await;
    let joined = joined.unwrap_or_else(|| panic!("never in_room; sipp: {outcome:?}"));
    assert_eq!(joined["room"], "retro");
    assert!(outcome.success(), "{outcome:?}");
    let rec = gw
        .completed_record(joined["id"].as_str().unwrap(), 5 * SECOND)
        .await
        .unwrap();
    assert_eq!(outcome_label(&rec), Some("caller_hangup"));
    assert_eq!(
        rec.pin_attempts, 1,
        "the right PIN is the one attempt: the cleared entry was not one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_keying_nothing_is_told_goodbye_and_hung_up() {
    let gw = Gateway::start(GatewayOptions {
        rtp_timeout_s: 60,
        ..Default::default()
    })
    .await;
    let steps = [Step::AwaitBye(30 * SECOND)];
    let Some(sipp) = start_sipp(&gw, &steps) else {
        return;
    };
    let call = gw
        .wait_for_call(5 * SECOND, |c| c["state"] == "collecting_pin")
        .await
        .expect("call in the PIN menu");
    let outcome = sipp.wait(40 * SECOND).await;
    assert!(
        outcome.success(),
        "the gateway hangs up with BYE: {outcome:?}"
    );
    let rec = gw
        .completed_record(call["id"].as_str().unwrap(), 5 * SECOND)
        .await
        .unwrap();
    assert_eq!(outcome_label(&rec), Some("no_input"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_keying_nothing_hears_the_welcome_prompt_again_then_goodbye() {
    let gw = Gateway::start(GatewayOptions {
        first_digit_timeout_s: 2,
        max_prompt_replays: 1,
        ..Default::default()
    })
    .await;
    let t0 = Instant::now();
    let call = Caller::dial(DialOptions {
        codecs: vec![Codec::Pcmu],
        ..DialOptions::new(gw.sip)
    })
    .await
    .expect("answered");
    call.play_silence();
    assert!(
        call.wait_for_bye(40 * SECOND).await,
        "the gateway hangs up after the replays"
    );
    let bye_at = Instant::now();
    // Sound, a silent gap of about first_digit_timeout, sound again (the replay), a gap, the goodbye.
    let chunks = call.recorded_chunks(t0);
    let loud: Vec<bool> = chunks
        .iter()
        .map(|(_, s)| tone::rms_dbfs(s) > -45.0)
        .collect();
    let mut bursts: Vec<(Instant, Instant)> = Vec::new();
    let mut quiet_since: Option<Instant> = None;
    for ((at, _), &is_loud) in chunks.iter().zip(&loud) {
        if is_loud {
            match bursts.last_mut() {
                Some(b)
                    if quiet_since
                        .is_none_or(|q| at.duration_since(q) < Duration::from_millis(1200)) =>
                {
                    b.1 = *at
                }
                _ => bursts.push((*at, *at)),
            }
            quiet_since = None;
        } else if quiet_since.is_none() {
            quiet_since = Some(*at);
        }
    }
    assert_eq!(
        bursts.len(),
        3,
        "welcome, welcome again, goodbye: {bursts:?} (t0 {t0:?}, bye {bye_at:?})"
    );
    for w in bursts.windows(2) {
        let gap = w[1].0.duration_since(w[0].1);
        assert!(
            gap >= Duration::from_millis(1700) && gap <= Duration::from_millis(3500),
            "gap of {gap:?} between prompts"
        );
    }
    let rate = call.sample_rate();
    let welcome = call.recorded_between(bursts[0].0, bursts[0].1);
    let replay = call.recorded_between(bursts[1].0, bursts[1].1);
    assert!(tone::is_speech_like(&welcome, rate) && tone::is_speech_like(&replay, rate));
    let (l0, l1) = (welcome.len() as f64, replay.len() as f64);
    assert!(
        (l0 - l1).abs() / l0 < 0.1,
        "the replay is the same prompt ({l0} vs {l1} samples)"
    );
}

const INVITE_AND_ACK: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="dialin PIN caller">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+33612345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+33612345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"#;

const SEND_BYE: &str = r#"  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+33612345678@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
"#;

const AWAIT_BYE: &str = r#"  <recv request="BYE" timeout="LIMIT_MS"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"#;

/// The steps of a caller keying [`PIN_CALL`] and staying five seconds.
const PIN_CALL: &str = "1023456789";

fn pin_call_steps() -> [Step; 4] {
    [
        Step::Pause(SECOND),
        Step::Keys("1023456789#"),
        Step::Pause(5 * SECOND),
        Step::Bye,
    ]
}

const LK_SECRET: &str = "sipp-livekit-sources-secret";

/// `[rooms]` and `[livekit]` for the test server, plus `extra` tables.
fn livekit_tables(server: &dialin_lkserver::TestServer, extra: &str) -> String {
    format!(
        "[rooms]\nbackend = \"livekit\"\n\n[livekit]\nurl = \"{}\"\napi_key = \"devkey\"\napi_secret = \"{LK_SECRET}\"\n\n{extra}",
        server.url()
    )
}

/// A Twirp call to the test server's SIP service, in JSON, as a meeting app makes it.
async fn sip_api(
    server: &dialin_lkserver::TestServer,
    method: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let token = server.sip_admin_token().expect("token");
    let resp = reqwest::Client::new()
        .post(format!("{}/twirp/livekit.SIP/{method}", server.http_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("the SIP API answers");
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(status, 200, "{method}: {v}");
    v
}

/// An app provisions a trunk for its number and a direct dispatch rule with a PIN, only
/// through LiveKit's SIP API; dialin reads both, and a SIPp caller to that number keying the
/// PIN is in the rule's room with the rule's attributes and metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_to_a_livekit_provisioned_trunk_keys_a_dispatch_rule_pin_and_joins_its_room() {
    let server = dialin_lkserver::TestServer::start("devkey", LK_SECRET)
        .await
        .expect("LiveKit test server");
    let trunk = sip_api(
        &server,
        "CreateSIPInboundTrunk",
        serde_json::json!({ "trunk": {
            "name": "carrier",
            "numbers": ["+33123456789"],
            "allowed_addresses": ["127.0.0.0/8"],
        }}),
    )
    .await;
    let trunk_id = trunk["sip_trunk_id"].as_str().expect("trunk id").to_owned();
    sip_api(
        &server,
        "CreateSIPDispatchRule",
        serde_json::json!({ "dispatch_rule": {
            "rule": { "dispatch_rule_direct": { "room_name": "meet-abc", "pin": PIN_CALL } },
            "trunk_ids": [trunk_id],
            "name": "meet-abc",
            "attributes": { "meet.room": "abc" },
            "metadata": "{\"app\":\"meet\"}",
        }}),
    )
    .await;
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(String::new()),
        rooms: Some(livekit_tables(
            &server,
            "[trunks]\nsource = \"livekit\"\n\n[pins]\nsources = [\"livekit\"]\n",
        )),
        ..Default::default()
    })
    .await;
    let Some(sipp) = start_sipp_to(&gw, &pin_call_steps(), "+33123456789") else {
        return;
    };
    let joined = gw
        .wait_for_call(15 * SECOND, |c| c["state"] == "in_room")
        .await;
    let participant = server
        .wait_for_participant("meet-abc", |p| p.publisher_connected, 10 * SECOND)
        .await
        .expect("test server answers");
    let outcome = sipp.wait(20 * SECOND).await;
    let joined =
        joined.unwrap_or_else(|| panic!("never in_room; sipp: {outcome:?}\n{}", gw.logs()));
    assert_eq!(joined["room"], "meet-abc");
    let p = participant.expect("the caller in the rule's room");
    let attr = |k: &str| p.attributes.get(k).map(String::as_str);
    assert_eq!(attr("meet.room"), Some("abc"), "the rule's attributes");
    assert_eq!(
        attr("sip.trunkID"),
        Some(trunk_id.as_str()),
        "the LiveKit trunk's id"
    );
    assert_eq!(p.metadata, "{\"app\":\"meet\"}", "the rule's metadata");
    assert!(outcome.success(), "{outcome:?}");
    let text = gw
        .metric("dialin_pin_lookups_total{source=\"livekit\",result=\"found\"}")
        .await;
    assert_eq!(text, Some(1.0), "the lookup is counted per source");
}

/// A resolver in the meeting app, on loopback: dialin's signed POST, or Jitsi's mapper.
async fn start_resolver(
    jitsi: bool,
    secret: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use axum::http::{HeaderMap, StatusCode};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let app = if jitsi {
        axum::Router::new().route(
            "/mapper",
            axum::routing::get(move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                let log = log.clone();
                async move {
                    let id = q.get("id").cloned().unwrap_or_default();
                    if let Ok(mut l) = log.lock() {
                        l.push(id.clone());
                    }
                    if id == PIN_CALL {
                        (StatusCode::OK, axum::Json(serde_json::json!({"id": 1023456789u64, "conference": "jitsiroom@conference.meet.example"})))
                    } else {
                        (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"message": "No conference mapping was found"})))
                    }
                }
            }),
        )
    } else {
        axum::Router::new().route(
            "/resolve",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let log = log.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    if !dialin::pins::http::verify(
                        secret.as_bytes(),
                        &h("x-dialin-timestamp"),
                        &h("x-dialin-signature"),
                        &body,
                        now,
                        300,
                    ) {
                        return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({})));
                    }
                    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    if let Ok(mut l) = log.lock() {
                        l.push(req.to_string());
                    }
                    if req["pin"] == PIN_CALL {
                        (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({
                                "room": "app-room",
                                "participant_name": "Ada (phone)",
                                "attributes": { "app.seat": "12" },
                            })),
                        )
                    } else {
                        (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({})))
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

/// The meeting app resolves the PIN over HTTP (dialin's signed format): the SIPp caller is in
/// the room the app names, with the app's name and attributes; the app saw a verified request
/// with the masked calling number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_keys_a_pin_the_meeting_app_resolves_over_signed_http() {
    const SECRET: &str = "resolver-secret-for-tests";
    let (addr, seen) = start_resolver(false, SECRET).await;
    let server = dialin_lkserver::TestServer::start("devkey", LK_SECRET)
        .await
        .expect("LiveKit test server");
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunk(10)),
        rooms: Some(livekit_tables(
            &server,
            &format!("[pins]\nsources = [\"store\", \"http\"]\n\n[pins.http]\nurl = \"http://{addr}/resolve\"\nsecret = \"{SECRET}\"\n"),
        )),
        ..Default::default()
    })
    .await;
    let Some(sipp) = start_sipp(&gw, &pin_call_steps()) else {
        return;
    };
    let joined = gw
        .wait_for_call(15 * SECOND, |c| c["state"] == "in_room")
        .await;
    let participant = server
        .wait_for_participant("app-room", |p| p.publisher_connected, 10 * SECOND)
        .await
        .expect("test server answers");
    let outcome = sipp.wait(20 * SECOND).await;
    joined.unwrap_or_else(|| panic!("never in_room; sipp: {outcome:?}\n{}", gw.logs()));
    let p = participant.expect("the caller in the app's room");
    assert_eq!(p.name, "Ada (phone)");
    assert_eq!(p.attributes.get("app.seat").map(String::as_str), Some("12"));
    let requests = seen.lock().map(|l| l.clone()).unwrap_or_default();
    assert_eq!(requests.len(), 1, "one verified request: {requests:?}");
    let req: serde_json::Value = serde_json::from_str(&requests[0]).expect("JSON");
    assert_eq!(req["caller"], "••••5678", "the caller's number is masked");
    assert_eq!(req["trunk"], "carrier");
    assert!(outcome.success(), "{outcome:?}");
    assert!(
        !gw.logs().contains(PIN_CALL),
        "the PIN never appears in the log"
    );
}

/// Jitsi's conference mapper as it is: `GET ?id=PIN` → `room@conference.domain`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_caller_keys_a_pin_a_jitsi_conference_mapper_resolves() {
    let (addr, seen) = start_resolver(true, "unused").await;
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunk(10)),
        rooms: Some(format!(
            "[pins]\nsources = [\"http\"]\n\n[pins.http]\nurl = \"http://{addr}/mapper\"\nformat = \"jitsi-mapper\"\n"
        )),
        ..Default::default()
    })
    .await;
    let Some(sipp) = start_sipp(&gw, &pin_call_steps()) else {
        return;
    };
    let joined = gw
        .wait_for_call(15 * SECOND, |c| c["state"] == "in_room")
        .await;
    let outcome = sipp.wait(20 * SECOND).await;
    let joined =
        joined.unwrap_or_else(|| panic!("never in_room; sipp: {outcome:?}\n{}", gw.logs()));
    assert_eq!(
        joined["room"], "jitsiroom",
        "the part of the conference before @"
    );
    assert_eq!(
        seen.lock().map(|l| l.clone()).unwrap_or_default(),
        vec![PIN_CALL.to_owned()]
    );
    assert!(outcome.success(), "{outcome:?}");
}
