//! Synthetic participants through the forwarding path only (no WebRTC client involved).
mod common;

use std::time::Duration;

use common::{tail, tone_energy_fraction, API_KEY, API_SECRET};
use dialin_lkserver::{Signal, TestServer, SAMPLE_RATE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_synthetic_participants_hear_each_others_tones() {
    let _media = common::media_lock().await;
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let a = server
        .add_synthetic_participant(
            "r",
            "alice",
            Signal::Tone {
                hz: 440.0,
                amplitude: 0.3,
            },
        )
        .await
        .unwrap();
    let b = server
        .add_synthetic_participant(
            "r",
            "bob",
            Signal::Tone {
                hz: 1000.0,
                amplitude: 0.3,
            },
        )
        .await
        .unwrap();
    let rate = f64::from(SAMPLE_RATE);
    assert!(
        common::eventually(Duration::from_secs(30), || a
            .received_audio_from("bob")
            .len()
            > rate as usize
            && b.received_audio_from("alice").len() > rate as usize)
        .await,
        "each should receive a second of audio"
    );
    let at_a = a.received_audio_from("bob");
    let at_b = b.received_audio_from("alice");
    let (a1000, a440) = (
        tone_energy_fraction(tail(&at_a, 0.5), rate, 1000.0),
        tone_energy_fraction(tail(&at_a, 0.5), rate, 440.0),
    );
    let (b440, b1000) = (
        tone_energy_fraction(tail(&at_b, 0.5), rate, 440.0),
        tone_energy_fraction(tail(&at_b, 0.5), rate, 1000.0),
    );
    println!("alice hears 1000 Hz {a1000:.3} (440 Hz {a440:.3}); bob hears 440 Hz {b440:.3} (1000 Hz {b1000:.3})");
    assert!(
        a1000 > 0.5 && a440 < 0.05,
        "alice should hear bob's 1000 Hz tone"
    );
    assert!(
        b440 > 0.5 && b1000 < 0.05,
        "bob should hear alice's 440 Hz tone"
    );
    assert_eq!(
        a.heard_from(),
        vec!["bob".to_string()],
        "nobody hears themselves"
    );

    let counters = server.counters().await.unwrap();
    let alice = counters.iter().find(|c| c.identity == "alice").unwrap();
    assert!(
        alice.packets_in >= 50 && alice.packets_out >= 50,
        "counters count frames both ways: {alice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_participants_are_listed_and_removable() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let _a = server
        .add_synthetic_participant("r", "alice", Signal::Silence)
        .await
        .unwrap();
    let list = server.participants("r").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].identity, "alice");
    assert!(list[0].synthetic);
    assert_eq!(
        list[0].tracks.len(),
        1,
        "a synthetic participant publishes one audio track"
    );
    assert!(list[0].tracks[0].sid.starts_with("TR_"));
    assert!(
        server
            .add_synthetic_participant("r", "alice", Signal::Silence)
            .await
            .is_err(),
        "identity is unique per room"
    );
    assert!(server.remove_participant("r", "alice").await.unwrap());
    assert!(server.participants("r").await.unwrap().is_empty());
}
