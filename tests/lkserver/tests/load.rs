//! Load run (ignored by default): N rooms, each with one real client publishing a tone and one
//! synthetic participant, for a fixed time; prints the engine's busy fraction and packet counts.
//! `cargo test --release -p dialin-lkserver --test load -- --ignored --nocapture`
//! (`LKSERVER_LOAD_ROOMS`, `LKSERVER_LOAD_SECS` override the size).
mod common;

use std::time::{Duration, Instant};

use common::{token, ClientOptions, TestClient, API_KEY, API_SECRET};
use dialin_lkserver::{Signal, TestServer};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "load run; prints numbers"]
async fn load_rooms_with_a_client_and_a_synthetic_participant_each() {
    let rooms = env_or("LKSERVER_LOAD_ROOMS", 20);
    let secs = env_or("LKSERVER_LOAD_SECS", 10);
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let mut synths = Vec::new();
    let mut clients = Vec::new();
    for i in 0..rooms {
        let room = format!("room-{i}");
        synths.push(
            server
                .add_synthetic_participant(
                    &room,
                    "synth",
                    Signal::Tone {
                        hz: 1000.0,
                        amplitude: 0.3,
                    },
                )
                .await
                .unwrap(),
        );
        clients.push(
            TestClient::connect(ClientOptions {
                url: server.url().into(),
                token: token(&room, "gw"),
                publish_tone: Some(440.0),
                ping: true,
                auto_resume: false,
            })
            .await,
        );
    }
    for c in &clients {
        assert!(
            c.wait(Duration::from_secs(30), |s| s.publisher_connected
                && s.subscriber_connected)
                .await
        );
    }
    let sent = |cs: &[TestClient]| cs.iter().map(|c| c.state().rtp_sent).sum::<u64>();
    let sent0 = sent(&clients);
    let before = server.stats().await.unwrap();
    let c0 = server.counters().await.unwrap();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let elapsed = t0.elapsed();
    let after = server.stats().await.unwrap();
    let c1 = server.counters().await.unwrap();
    let client_frames = sent(&clients) - sent0;
    let into_server = |c: &[dialin_lkserver::ParticipantCounters]| {
        c.iter()
            .filter(|c| c.identity == "gw")
            .map(|c| c.packets_in)
            .sum::<u64>()
    };
    println!(
        "clients wrote {client_frames} frames ({:.0}% of real time), server received {} of them",
        client_frames as f64 * 100.0 / (rooms * 50) as f64 / elapsed.as_secs_f64(),
        into_server(&c1) - into_server(&c0)
    );
    let sum =
        |c: &[dialin_lkserver::ParticipantCounters]| c.iter().map(|c| c.packets_out).sum::<u64>();
    let forwarded = sum(&c1) - sum(&c0);
    let busy = (after.busy - before.busy).as_secs_f64() / elapsed.as_secs_f64();
    println!(
        "rooms={rooms} peer_connections={} forwarded={forwarded} ({:.0}/s) datagrams in/out {}/{} engine busy {:.1}% of one core ({:.3}% per PC)",
        after.peer_connections,
        forwarded as f64 / elapsed.as_secs_f64(),
        after.datagrams_in - before.datagrams_in,
        after.datagrams_out - before.datagrams_out,
        busy * 100.0,
        busy * 100.0 / after.peer_connections.max(1) as f64,
    );
    let expected = rooms * 2 * secs * 50;
    assert!(
        forwarded as f64 > expected as f64 * 0.9,
        "forwarded {forwarded} of ~{expected} frames"
    );
}
