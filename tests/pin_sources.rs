//! PINs from LiveKit's dispatch rules when LiveKit's API misbehaves, through the real
//! `dialin serve` binary and the in-tree caller: down, slow and refusing the key each make
//! the caller hear "service unavailable" (never "not valid": the PIN may exist), a rule
//! created after the gateway read the rules still works, and the store keeps answering
//! before LiveKit is asked.

mod support;

use std::time::{Duration, Instant};

use dialin_lkserver::{proto, SipOutage, TestServer};
use dialin_media::prompt::{Language, PromptCatalog, PromptId, SampleRate};
use support::caller::{Call, Caller, Codec, DialOptions, DtmfMode};
use support::gateway::{Gateway, GatewayOptions};
use support::tone;

const PIN: &str = "2468013579";
const SECOND: Duration = Duration::from_secs(1);
const KEY: &str = "devkey";
const SECRET: &str = "pin-sources-test-secret";

fn prompt_8k(id: PromptId) -> Vec<i16> {
    PromptCatalog::load(Language::En, None)
        .expect("the built-in prompts")
        .get(id)
        .samples(SampleRate::Hz8000)
        .to_vec()
}

fn direct_rule(room: &str, pin: &str) -> proto::SipDispatchRuleInfo {
    proto::SipDispatchRuleInfo {
        rule: Some(proto::SipDispatchRule {
            rule: Some(proto::sip_dispatch_rule::Rule::DispatchRuleDirect(
                proto::SipDispatchRuleDirect {
                    room_name: room.into(),
                    pin: pin.into(),
                },
            )),
        }),
        ..Default::default()
    }
}

/// A gateway with local rooms whose PINs come from `sources`, LiveKit's rules read with
/// `secret`.
async fn gateway(server: &TestServer, sources: &str, secret: &str) -> Gateway {
    Gateway::start(GatewayOptions {
        rooms: Some(format!(
            "[livekit]\nurl = \"{}\"\napi_key = \"{KEY}\"\napi_secret = \"{secret}\"\n\n[pins]\nsources = {sources}\n\n[pins.livekit]\nrefresh_s = 3600\nmiss_refresh_s = 0\n",
            server.url()
        )),
        ..GatewayOptions::default()
    })
    .await
}

/// Dials, keys `PIN#` once the welcome prompt plays.
async fn dial_and_key(gw: &Gateway) -> Call {
    let t0 = Instant::now();
    let call = Caller::dial(DialOptions {
        codecs: vec![Codec::Pcmu],
        ..DialOptions::new(gw.sip)
    })
    .await
    .expect("the gateway answers");
    call.play_silence();
    assert!(
        call.wait_for_sound(t0, -40.0, 5 * SECOND).await.is_some(),
        "no welcome prompt"
    );
    call.send_dtmf(&format!("{PIN}#"), DtmfMode::Rfc4733)
        .await
        .expect("digits sent");
    call
}

/// The caller hears "service unavailable" and the gateway hangs up.
async fn told_unavailable(gw: &Gateway, call: &Call) {
    assert!(call.wait_for_bye(30 * SECOND).await, "the caller gets BYE:\n{}", gw.logs());
    let heard = call.recorded_all();
    assert!(
        tone::find_clip(&heard, &prompt_8k(PromptId::ServiceUnavailable), 0).is_some(),
        "the caller hears \"service unavailable\""
    );
    assert!(
        tone::find_clip(&heard, &prompt_8k(PromptId::InvalidPin), 0).is_none(),
        "never \"not valid\": the PIN may exist"
    );
    assert!(!gw.logs().contains(PIN), "the PIN never appears in the log");
    let errors = gw
        .metric("dialin_pin_lookups_total{source=\"livekit\",result=\"error\"}")
        .await;
    assert_eq!(errors, Some(1.0), "the failed lookup is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_api_down_makes_the_pin_lookup_unavailable_not_invalid() {
    let server = TestServer::start(KEY, SECRET).await.expect("server");
    server
        .create_sip_dispatch_rule(direct_rule("standup", PIN))
        .expect("rule");
    server.set_sip_outage(Some(SipOutage::Unavailable));
    let gw = gateway(&server, "[\"livekit\"]", SECRET).await;
    let call = dial_and_key(&gw).await;
    told_unavailable(&gw, &call).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_api_not_answering_makes_the_pin_lookup_unavailable() {
    let server = TestServer::start(KEY, SECRET).await.expect("server");
    server
        .create_sip_dispatch_rule(direct_rule("standup", PIN))
        .expect("rule");
    server.set_sip_outage(Some(SipOutage::Hang));
    let gw = gateway(&server, "[\"livekit\"]", SECRET).await;
    let call = dial_and_key(&gw).await;
    told_unavailable(&gw, &call).await;
    server.set_sip_outage(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_refusing_the_key_makes_the_pin_lookup_unavailable() {
    let server = TestServer::start(KEY, SECRET).await.expect("server");
    server
        .create_sip_dispatch_rule(direct_rule("standup", PIN))
        .expect("rule");
    let gw = gateway(&server, "[\"livekit\"]", "a-secret-livekit-does-not-know").await;
    let call = dial_and_key(&gw).await;
    told_unavailable(&gw, &call).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_created_after_the_rules_were_read_works_at_once() {
    let server = TestServer::start(KEY, SECRET).await.expect("server");
    server
        .create_sip_dispatch_rule(direct_rule("other", "1357913579"))
        .expect("rule");
    let gw = gateway(&server, "[\"store\", \"livekit\"]", SECRET).await;
    // A first caller makes the gateway read the rules (and finds its room by them).
    let first = Caller::dial(DialOptions {
        codecs: vec![Codec::Pcmu],
        ..DialOptions::new(gw.sip)
    })
    .await
    .expect("answered");
    let t0 = Instant::now();
    first.play_silence();
    assert!(first.wait_for_sound(t0, -40.0, 5 * SECOND).await.is_some());
    first
        .send_dtmf("1357913579#", DtmfMode::Rfc4733)
        .await
        .expect("digits");
    assert!(
        gw.wait_for_call(10 * SECOND, |c| c["room"] == "other" && c["state"] == "in_room")
            .await
            .is_some(),
        "the rule's PIN joins its room"
    );
    let reads = || {
        server
            .sip_api_calls()
            .get("ListSIPDispatchRule")
            .copied()
            .unwrap_or(0)
    };
    let before = reads();
    assert!(before >= 1, "the rules were read");
    // The app creates a rule now; the gateway read the rules before (refresh_s is an hour),
    // and a PIN that no cached rule has makes it read them again.
    server
        .create_sip_dispatch_rule(direct_rule("standup", PIN))
        .expect("rule");
    let call = dial_and_key(&gw).await;
    let joined = gw
        .wait_for_call(10 * SECOND, |c| c["room"] == "standup" && c["state"] == "in_room")
        .await;
    assert!(joined.is_some(), "the new rule's PIN joins:\n{}", gw.logs());
    assert!(reads() > before, "read again on the miss");
    call.hangup().await.expect("hang up");
    first.hangup().await.expect("hang up");
}
