//! A phone caller's controls in a local room, through the real `dialin serve` binary and the
//! in-tree caller: `*6` mute and unmute (heard by the others, measured on a tone), `*1` the
//! participant count spoken, join cues, and a participant PIN whose room waits for its host.

mod support;

use std::time::{Duration, Instant};

use dialin_media::prompt::{
    Clip, Language, NumberWord, PromptCatalog, PromptId, SampleRate,
};
use serde_json::json;
use support::caller::{Call, Caller, Codec, DialOptions, DtmfMode};
use support::gateway::{Gateway, GatewayOptions};
use support::tone;

/// A PIN with ten distinct digits.
const PIN: &str = "3692581470";
const HOST_PIN: &str = "8520741963";
const SECOND: Duration = Duration::from_secs(1);

fn from(gw: &Gateway, number: &str) -> DialOptions {
    DialOptions {
        codecs: vec![Codec::Pcmu],
        from_user: number.to_owned(),
        ..DialOptions::new(gw.sip)
    }
}

fn catalog() -> PromptCatalog {
    PromptCatalog::load(Language::En, None).expect("the built-in prompts")
}

fn clip_8k(clip: Clip) -> Vec<i16> {
    catalog()
        .clip(clip, SampleRate::Hz8000)
        .expect("a shipped clip")
        .to_vec()
}

fn prompt_8k(id: PromptId) -> Vec<i16> {
    clip_8k(Clip::Prompt(id))
}

/// Dials, waits for the welcome prompt, keys `pin#` and waits until the gateway has the new
/// call in `state`.
async fn dial_and_key(gw: &Gateway, opts: DialOptions, pin: &str, state: &str) -> Call {
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
        call.wait_for_sound(t0, -40.0, 5 * SECOND).await.is_some(),
        "no welcome prompt"
    );
    call.send_dtmf(&format!("{pin}#"), DtmfMode::Rfc4733)
        .await
        .expect("digits sent");
    gw.wait_for_call(10 * SECOND, |c| {
        c["state"] == state && !before.iter().any(|b| c["id"] == b.as_str())
    })
    .await
    .unwrap_or_else(|| panic!("the call reaches {state}: {:?}", before));
    call
}

/// Waits until `call` has heard `clip` after `since`; where it starts in `recorded(since)`.
async fn wait_to_hear(call: &Call, since: Instant, clip: &[i16], limit: Duration) -> Option<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let heard = call.recorded(since);
        if let Some(at) = tone::find_clip(&heard, clip, 0) {
            return Some(at);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the level of `hz` over the last `window` of what `call` hears passes `test`.
async fn wait_for_level(
    call: &Call,
    hz: f64,
    window: Duration,
    limit: Duration,
    test: impl Fn(f64) -> bool,
) -> Result<f64, f64> {
    let deadline = Instant::now() + limit;
    let mut level;
    loop {
        let now = Instant::now();
        level = tone::goertzel_level(&call.recorded_between(now - window, now), 8000, hz);
        if test(level) {
            return Ok(level);
        }
        if now >= deadline {
            return Err(level);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_six_takes_a_caller_out_of_the_mix_and_back() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("mute-room", Some(PIN)).await;
    let a = dial_and_key(&gw, from(&gw, "+33611111111"), PIN, "in_room").await;
    let b = dial_and_key(&gw, from(&gw, "+33622222222"), PIN, "in_room").await;
    b.play_silence();
    a.play_tone(440.0, -12.0);
    let window = Duration::from_millis(500);
    wait_for_level(&b, 440.0, window, 10 * SECOND, |l| l > -30.0)
        .await
        .unwrap_or_else(|l| panic!("B never hears A's tone (last {l:.1} dBFS)"));

    // *6: A hears "you are muted", and B stops hearing A although A keeps sending its tone.
    let pressed = Instant::now();
    a.send_dtmf("*6", DtmfMode::Rfc4733).await.expect("keys sent");
    assert!(
        wait_to_hear(&a, pressed, &prompt_8k(PromptId::Muted), 5 * SECOND)
            .await
            .is_some(),
        "A hears the mute confirmation"
    );
    let muted = wait_for_level(&b, 440.0, window, 5 * SECOND, |l| l < -50.0)
        .await
        .unwrap_or_else(|l| panic!("B still hears the muted caller at {l:.1} dBFS"));
    // And keeps not hearing it: a whole second of B's audio, once recorded.
    let from_t = Instant::now();
    tokio::time::sleep(SECOND).await;
    let level = tone::goertzel_level(&b.recorded_between(from_t, Instant::now()), 8000, 440.0);
    assert!(level < -50.0, "muted A reached B at {level:.1} dBFS (first {muted:.1})");

    // *6 again: "you are no longer muted", and B hears A again.
    let pressed = Instant::now();
    a.send_dtmf("*6", DtmfMode::Rfc4733).await.expect("keys sent");
    assert!(
        wait_to_hear(&a, pressed, &prompt_8k(PromptId::Unmuted), 5 * SECOND)
            .await
            .is_some(),
        "A hears the unmute confirmation"
    );
    wait_for_level(&b, 440.0, window, 5 * SECOND, |l| l > -30.0)
        .await
        .unwrap_or_else(|l| panic!("B does not hear A again after *6 (last {l:.1} dBFS)"));
    a.hangup().await.expect("A hangs up");
    b.hangup().await.expect("B hangs up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_one_in_a_room_of_three_says_three_participants() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin("count-room", Some(PIN)).await;
    let a = dial_and_key(&gw, from(&gw, "+33611111111"), PIN, "in_room").await;
    let b = dial_and_key(&gw, from(&gw, "+33622222222"), PIN, "in_room").await;
    // A hears B arrive: the rising cue, never the room's audio.
    let joined_at = Instant::now() - 5 * SECOND;
    assert!(
        wait_to_hear(&a, joined_at, &clip_8k(Clip::JoinTone), 5 * SECOND)
            .await
            .is_some(),
        "A hears the join cue when B comes in"
    );
    let c = dial_and_key(&gw, from(&gw, "+33633333333"), PIN, "in_room").await;
    let pressed = Instant::now();
    c.send_dtmf("*1", DtmfMode::Rfc4733).await.expect("keys sent");
    let there_are = wait_to_hear(&c, pressed, &prompt_8k(PromptId::ThereAre), 5 * SECOND)
        .await
        .expect("C hears \"there are\"");
    let participants = wait_to_hear(&c, pressed, &prompt_8k(PromptId::Participants), 5 * SECOND)
        .await
        .expect("C hears \"participants\"");
    let heard = c.recorded(pressed);
    let three = tone::find_clip(&heard, &clip_8k(Clip::Word(NumberWord::Three)), there_are)
        .expect("C hears \"three\" after \"there are\"");
    assert!(
        there_are < three && three < participants,
        "\"there are\" ({there_are}), \"three\" ({three}), \"participants\" ({participants}) in order"
    );
    for call in [a, b, c] {
        call.hangup().await.expect("hang up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_waits_for_its_host_holds_participants_until_the_host_joins() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.create_pin_with(json!({ "room": "hosted", "pin": PIN, "wait_for_host": true }))
        .await;
    gw.create_pin_with(json!({ "room": "hosted", "pin": HOST_PIN, "role": "host" }))
        .await;
    let t0 = Instant::now();
    let p = dial_and_key(&gw, from(&gw, "+33611111111"), PIN, "waiting_for_host").await;
    assert!(
        wait_to_hear(&p, t0, &prompt_8k(PromptId::WaitForHost), 10 * SECOND)
            .await
            .is_some(),
        "the participant hears \"the meeting will start when the host joins\""
    );
    // Hold music, not silence, while waiting; and still waiting.
    assert!(
        p.wait_for_sound(Instant::now(), -50.0, 5 * SECOND).await.is_some(),
        "the waiting participant hears hold music"
    );
    let calls = gw.calls().await;
    assert!(
        calls.iter().any(|c| c["state"] == "waiting_for_host"),
        "the participant is still waiting: {calls:?}"
    );
    // The host keys its PIN: the participant is let in, and they hear each other.
    let h = dial_and_key(&gw, from(&gw, "+33622222222"), HOST_PIN, "in_room").await;
    gw.wait_for_calls_in("in_room", 2, 10 * SECOND).await;
    h.play_tone(440.0, -12.0);
    wait_for_level(&p, 440.0, Duration::from_millis(500), 10 * SECOND, |l| l > -30.0)
        .await
        .unwrap_or_else(|l| panic!("the participant never hears the host (last {l:.1} dBFS)"));
    p.hangup().await.expect("hang up");
    h.hangup().await.expect("hang up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_zero_speaks_the_keys_and_keys_can_be_changed_per_trunk() {
    // This trunk mutes with ## instead of *6.
    let trunk = r###"
[[trunk]]
id = "default"
allowed_addresses = ["127.0.0.0/8"]
pin_namespace = "default"
pin_length = 10
max_calls = 10
keys = { mute = "##" }
"###;
    let gw = Gateway::start(GatewayOptions {
        trunks: Some(trunk.to_owned()),
        ..GatewayOptions::default()
    })
    .await;
    gw.create_pin("help-room", Some(PIN)).await;
    let a = dial_and_key(&gw, from(&gw, "+33611111111"), PIN, "in_room").await;
    let pressed = Instant::now();
    a.send_dtmf("*0", DtmfMode::Rfc4733).await.expect("keys sent");
    let help = wait_to_hear(&a, pressed, &prompt_8k(PromptId::HelpMute), 5 * SECOND)
        .await
        .expect("the caller hears how to mute");
    // "To mute or unmute, press hash hash": the configured keys, spoken.
    let heard = {
        let deadline = Instant::now() + 10 * SECOND;
        loop {
            let heard = a.recorded(pressed);
            if tone::find_clip(&heard, &prompt_8k(PromptId::HelpCount), help).is_some()
                || Instant::now() >= deadline
            {
                break heard;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let hash = tone::find_clip(&heard, &prompt_8k(PromptId::KeyHash), help)
        .expect("\"hash\" follows the mute phrase");
    let next = tone::find_clip(&heard, &prompt_8k(PromptId::HelpCount), help)
        .expect("then how to hear the count");
    assert!(help < hash && hash < next, "mute phrase, its keys, then the next phrase");
    // ## mutes on this trunk.
    let pressed = Instant::now();
    a.send_dtmf("##", DtmfMode::Rfc4733).await.expect("keys sent");
    assert!(
        wait_to_hear(&a, pressed, &prompt_8k(PromptId::Muted), 5 * SECOND)
            .await
            .is_some(),
        "## mutes"
    );
    a.hangup().await.expect("hang up");
}
