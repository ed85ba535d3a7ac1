//! End-to-end calls through the real `dialin serve` binary with the in-tree test caller:
//! PIN entry by each DTMF method, two callers bridged in a local room, and every way a call
//! is refused or ends (DESIGN.md §Call flow).

mod support;

use std::time::{Duration, Instant};

use support::caller::{Call, Caller, DialOptions, DtmfMode};
use support::gateway::{Gateway, GatewayOptions};
use support::tone;

/// Waits for the welcome prompt: speech-like audio on the caller's RTP.
async fn hears_speech(call: &Call, since: Instant, limit: Duration) -> bool {
    let Some(start) = call.wait_for_sound(since, -40.0, limit).await else { return false };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let rate = call.sample_rate();
    let heard = call.recorded_between(start, start + Duration::from_millis(1200));
    tone::is_speech_like(&heard, rate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_keys_the_pin_and_is_joined_to_the_room() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    let pin = gw.create_pin("standup", Some("2468013579")).await;
    let t0 = Instant::now();
    let call = Caller::dial(DialOptions::new(gw.sip)).await.expect("call answered");
    call.play_silence();
    assert!(hears_speech(&call, t0, Duration::from_secs(5)).await, "no welcome prompt");
    call.send_dtmf(&format!("{pin}#"), DtmfMode::Rfc4733).await.unwrap();
    let joined = gw.wait_for_call(Duration::from_secs(5), |c| c["state"] == "in_room").await;
    let joined = joined.expect("call in_room");
    assert_eq!(joined["room"], "standup");
    call.hangup().await.unwrap();
    assert!(gw.wait_no_calls(Duration::from_secs(5)).await);
    let id = joined["id"].as_str().unwrap();
    let rec = gw.completed_record(id, Duration::from_secs(5)).await.expect("record");
    assert_eq!(support::gateway::outcome_label(&rec), Some("caller_hangup"));
}
