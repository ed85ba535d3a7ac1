//! The `livekit` room backend against the in-process LiveKit test server: the caller's
//! participant as LiveKit apps see it, audio both ways over real WebRTC, DTMF data packets,
//! the room ending the call, and the signal connection resuming after a drop.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dialin::config::{LiveKitConfig, Secret};
use dialin::room::livekit::{LiveKitRooms, LIVEKIT_SAMPLE_RATE};
use dialin::room::{AudioFrame, JoinRequest, RoomBackend, RoomError, RoomEvent, RoomHandle};
use dialin_lkserver::{proto, ParticipantKind, Signal, TestServer, SAMPLE_RATE};
use support::tone::{goertzel_level, sine};

const KEY: &str = "devkey";
const SECRET: &str = "test-secret-for-dialin-livekit-rooms";

fn rooms_for(url: &str, secret: &str) -> LiveKitRooms {
    let config = LiveKitConfig {
        url: url.to_owned(),
        api_key: KEY.to_owned(),
        api_secret: Some(Secret::new(secret)),
        token_ttl_s: 60,
        ice_servers: Vec::new(),
    };
    LiveKitRooms::new(&config).expect("configured backend")
}

fn request(room: &str, call: &str) -> JoinRequest {
    let mut attributes = BTreeMap::new();
    attributes.insert("sip.callID".to_owned(), call.to_owned());
    attributes.insert("sip.trunkID".to_owned(), "default".to_owned());
    attributes.insert("sip.phoneNumber".to_owned(), "••••1234".to_owned());
    attributes.insert("sip.callStatus".to_owned(), "active".to_owned());
    JoinRequest { room: room.to_owned(), identity: format!("sip_{call}"), name: "Phone ••••1234".to_owned(), attributes }
}

async fn join(rooms: &LiveKitRooms, room: &str, call: &str) -> RoomHandle {
    tokio::time::timeout(Duration::from_secs(10), rooms.join(request(room, call)))
        .await
        .expect("join within 10 s")
        .expect("join succeeds")
}

/// Feeds `tone` into `to_room` in 20 ms frames for `dur`, collecting `from_room` meanwhile.
async fn exchange(handle: &mut RoomHandle, hz: Option<f64>, dur: Duration) -> Vec<i16> {
    let frame_len = (LIVEKIT_SAMPLE_RATE / 50) as usize;
    let tone = sine(LIVEKIT_SAMPLE_RATE, hz.unwrap_or(440.0), -12.0, frame_len * 50);
    let mut heard = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let end = Instant::now() + dur;
    let mut i = 0usize;
    while Instant::now() < end {
        tick.tick().await;
        if hz.is_some() {
            let at = (i % 50) * frame_len;
            let _ = handle.to_room.try_send(AudioFrame::from_samples(&tone[at..at + frame_len]));
            i += 1;
        }
        while let Ok(f) = handle.from_room.try_recv() {
            heard.extend_from_slice(f.samples());
        }
    }
    heard
}

fn last(samples: &[i16], rate: u32, secs: f64) -> &[i16] {
    let n = (secs * f64::from(rate)) as usize;
    &samples[samples.len().saturating_sub(n)..]
}

async fn next_event(handle: &mut RoomHandle, timeout: Duration) -> Option<RoomEvent> {
    tokio::time::timeout(timeout, handle.events.recv()).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_appears_as_a_sip_participant_with_masked_number() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let handle = join(&rooms, "standup", "c1").await;
    assert_eq!(handle.sample_rate, 16_000);
    let p = server
        .wait_for_participant("standup", |p| p.identity == "sip_c1" && p.publisher_connected && !p.tracks.is_empty(), Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the caller's participant publishes its microphone");
    assert_eq!(p.kind, ParticipantKind::Sip);
    assert_eq!(p.name, "Phone ••••1234");
    assert_eq!(p.attributes.get("sip.phoneNumber").map(String::as_str), Some("••••1234"));
    assert_eq!(p.attributes.get("sip.callID").map(String::as_str), Some("c1"));
    assert_eq!(p.attributes.get("sip.trunkID").map(String::as_str), Some("default"));
    assert_eq!(p.attributes.get("sip.callStatus").map(String::as_str), Some("active"));
    assert_eq!(p.tracks.first().map(|t| t.source), Some(proto::TrackSource::Microphone as i32));
    drop(handle);
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while server.participants("standup").await.unwrap().iter().any(|p| p.identity == "sip_c1") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "dropping the handle leaves the room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_audio_reaches_the_caller_and_caller_audio_reaches_the_room() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let synth = server.add_synthetic_participant("audio", "alice", Signal::Tone { hz: 1000.0, amplitude: 0.3 }).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let mut handle = join(&rooms, "audio", "c2").await;
    assert_eq!(handle.others_at_join, 1);
    let heard = exchange(&mut handle, Some(440.0), Duration::from_secs(4)).await;

    let tail = last(&heard, LIVEKIT_SAMPLE_RATE, 1.0);
    let at_1k = goertzel_level(tail, LIVEKIT_SAMPLE_RATE, 1000.0);
    let at_440 = goertzel_level(tail, LIVEKIT_SAMPLE_RATE, 440.0);
    println!("caller heard {} samples; 1000 Hz at {at_1k:.1} dBFS, 440 Hz at {at_440:.1} dBFS", heard.len());
    assert!(tail.len() >= LIVEKIT_SAMPLE_RATE as usize / 2, "at least half a second of room audio");
    assert!(at_1k > -20.0, "the room's 1000 Hz tone reaches the caller ({at_1k:.1} dBFS)");
    assert!(at_1k - at_440 > 30.0, "the caller does not hear itself");

    let room_heard = synth.received_audio_from("sip_c2");
    let rtail = last(&room_heard, SAMPLE_RATE, 1.0);
    let r440 = goertzel_level(rtail, SAMPLE_RATE, 440.0);
    println!("room heard {} samples from the caller; 440 Hz at {r440:.1} dBFS", room_heard.len());
    assert!(rtail.len() >= SAMPLE_RATE as usize / 2, "at least half a second of the caller's audio in the room");
    assert!(r440 > -20.0, "the caller's 440 Hz tone reaches the room ({r440:.1} dBFS)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_dtmf_becomes_a_sip_dtmf_data_packet() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let handle = join(&rooms, "keys", "c3").await;
    server
        .wait_for_participant("keys", |p| p.identity == "sip_c3" && p.publisher_connected, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("publisher connected");
    let dtmf = handle.dtmf.clone().expect("livekit rooms take DTMF");
    for _ in 0..100 {
        // The reliable channel opens a moment after the publisher connects.
        let _ = dtmf.try_send('5');
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !server.data_packets("keys").await.unwrap().is_empty() {
            break;
        }
    }
    let _ = dtmf.try_send('#');
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found = server.data_packets("keys").await.unwrap();
    let digits: Vec<(u32, String)> = found
        .iter()
        .filter_map(|p| match &p.value {
            Some(proto::data_packet::Value::SipDtmf(d)) => Some((d.code, d.digit.clone())),
            _ => None,
        })
        .collect();
    assert!(digits.contains(&(5, "5".to_owned())), "digit 5 arrives: {digits:?}");
    assert!(digits.contains(&(11, "#".to_owned())), "# arrives with RFC 4733 code 11: {digits:?}");
    #[allow(deprecated)] // the server stamps the kind of the channel a packet came on
    let all_reliable = found.iter().all(|p| p.kind == proto::data_packet::Kind::Reliable as i32);
    assert!(all_reliable, "DTMF goes on the reliable channel");
    drop(handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_room_ends_the_call_with_closed() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let mut handle = join(&rooms, "closing", "c4").await;
    server.wait_for_participant("closing", |p| p.identity == "sip_c4", Duration::from_secs(5)).await.unwrap().expect("joined");
    assert!(server.close_room("closing").await.unwrap());
    assert_eq!(next_event(&mut handle, Duration::from_secs(5)).await, Some(RoomEvent::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_participant_ends_the_call_with_removed() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let mut handle = join(&rooms, "kick", "c5").await;
    server.wait_for_participant("kick", |p| p.identity == "sip_c5", Duration::from_secs(5)).await.unwrap().expect("joined");
    assert!(server.remove_participant("kick", "sip_c5").await.unwrap());
    assert_eq!(next_event(&mut handle, Duration::from_secs(5)).await, Some(RoomEvent::Removed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_joining_and_leaving_are_reported() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let mut handle = join(&rooms, "lobby", "c6").await;
    assert_eq!(handle.others_at_join, 0);
    server.wait_for_participant("lobby", |p| p.identity == "sip_c6", Duration::from_secs(5)).await.unwrap().expect("joined");
    let bob = server.add_synthetic_participant("lobby", "bob", Signal::Silence).await.unwrap();
    assert_eq!(next_event(&mut handle, Duration::from_secs(5)).await, Some(RoomEvent::ParticipantJoined { identity: "bob".into() }));
    assert!(server.remove_participant("lobby", bob.identity()).await.unwrap());
    assert_eq!(next_event(&mut handle, Duration::from_secs(5)).await, Some(RoomEvent::ParticipantLeft { identity: "bob".into() }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_websocket_is_resumed_without_ending_the_call() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let synth = server.add_synthetic_participant("resume", "carol", Signal::Tone { hz: 1000.0, amplitude: 0.3 }).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let mut handle = join(&rooms, "resume", "c7").await;
    let _ = exchange(&mut handle, Some(440.0), Duration::from_secs(2)).await;
    assert!(server.drop_websocket("sip_c7").await.unwrap());
    let resumed = server
        .wait_for_participant("resume", |p| p.identity == "sip_c7" && p.signal_connected, Duration::from_secs(8))
        .await
        .unwrap();
    // Let the first check see the disconnection before it is resumed.
    assert!(resumed.is_some(), "the signal connection is resumed");
    let before = synth.received_audio_from("sip_c7").len();
    let heard = exchange(&mut handle, Some(440.0), Duration::from_secs(2)).await;
    assert!(handle.events.try_recv().is_err(), "no Closed after a resumed WebSocket");
    let at_1k = goertzel_level(last(&heard, LIVEKIT_SAMPLE_RATE, 1.0), LIVEKIT_SAMPLE_RATE, 1000.0);
    assert!(at_1k > -20.0, "room audio still reaches the caller after the resume ({at_1k:.1} dBFS)");
    assert!(synth.received_audio_from("sip_c7").len() > before + SAMPLE_RATE as usize / 2, "caller audio still reaches the room");
}

#[tokio::test]
async fn unreachable_server_fails_the_join() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let rooms = rooms_for(&format!("ws://127.0.0.1:{port}"), SECRET);
    let started = Instant::now();
    let r = rooms.join(request("nowhere", "c8")).await;
    assert!(matches!(r, Err(RoomError::Unreachable(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn wrong_api_secret_is_refused() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), "not-the-secret-the-server-knows");
    let r = rooms.join(request("standup", "c9")).await;
    assert!(matches!(r, Err(RoomError::Refused(_))), "{r:?}");
}
