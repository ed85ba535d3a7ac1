//! The `livekit` room backend against the in-process LiveKit test server: the caller's
//! participant as LiveKit apps see it, audio both ways over real WebRTC, DTMF data packets,
//! the room ending the call, and the signal connection resuming after a drop.
//!
//! Two levels: the backend alone ([`LiveKitRooms::join`] driven by the test, as a call task
//! would), then whole calls through the real `dialin serve` binary configured with
//! `rooms.backend = "livekit"`, placed by the in-tree SIP caller (DESIGN.md §Call flow,
//! §Participant in the room).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dialin::config::{IceServer, IceTransportPolicy, LiveKitConfig, Secret};
use dialin::room::livekit::{LiveKitRooms, LIVEKIT_SAMPLE_RATE, NARROWBAND_SAMPLE_RATE};
use dialin::room::{AudioFrame, JoinRequest, RoomBackend, RoomError, RoomEvent, RoomHandle};
use dialin_lkserver::{
    proto, ParticipantKind, ServerOptions, Signal, SyntheticParticipant, TestServer, SAMPLE_RATE,
};
use support::tone::{goertzel_level, sine};

const KEY: &str = "devkey";
const SECRET: &str = "test-secret-for-dialin-livekit-rooms";

fn rooms_for(url: &str, secret: &str) -> LiveKitRooms {
    let config = LiveKitConfig {
        url: url.to_owned(),
        api_key: KEY.to_owned(),
        api_secret: Some(Secret::new(secret)),
        token_ttl_s: 60,
        ..LiveKitConfig::default()
    };
    LiveKitRooms::new(&config).expect("configured backend")
}

fn request(room: &str, call: &str) -> JoinRequest {
    request_at(room, call, LIVEKIT_SAMPLE_RATE)
}

/// A join for a caller whose audio is at `sample_rate`.
fn request_at(room: &str, call: &str, sample_rate: u32) -> JoinRequest {
    let mut attributes = BTreeMap::new();
    attributes.insert("sip.callID".to_owned(), call.to_owned());
    attributes.insert("sip.trunkID".to_owned(), "default".to_owned());
    attributes.insert("sip.phoneNumber".to_owned(), "••••1234".to_owned());
    attributes.insert("sip.callStatus".to_owned(), "active".to_owned());
    JoinRequest {
        room: room.to_owned(),
        identity: format!("sip_{call}"),
        name: "Phone ••••1234".to_owned(),
        attributes,
        sample_rate,
        role: dialin::pins::PinRole::Participant,
        metadata: None,
        room_config: None,
    }
}

async fn join(rooms: &LiveKitRooms, room: &str, call: &str) -> RoomHandle {
    tokio::time::timeout(Duration::from_secs(10), rooms.join(request(room, call)))
        .await
        .expect("join within 10 s")
        .expect("join succeeds")
}

/// Feeds `tone` into `to_room` in 20 ms frames at the handle's rate for `dur`, collecting
/// `from_room` meanwhile.
async fn exchange(handle: &mut RoomHandle, hz: Option<f64>, dur: Duration) -> Vec<i16> {
    let frame_len = (handle.sample_rate / 50) as usize;
    let tone = sine(
        handle.sample_rate,
        hz.unwrap_or(440.0),
        -12.0,
        frame_len * 50,
    );
    let mut heard = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let end = Instant::now() + dur;
    let mut i = 0usize;
    while Instant::now() < end {
        tick.tick().await;
        if hz.is_some() {
            let at = (i % 50) * frame_len;
            let _ = handle
                .to_room
                .try_send(AudioFrame::from_samples(&tone[at..at + frame_len]));
            i += 1;
        }
        while let Ok(f) = handle.from_room.try_recv() {
            heard.extend_from_slice(f.samples());
        }
    }
    heard
}

/// Median over the 20 ms frames of `samples` of the level at `hz` (dBFS).
fn frame_level(samples: &[i16], rate: u32, hz: f64) -> f64 {
    let mut levels: Vec<f64> = samples
        .chunks_exact(rate as usize / 50)
        .map(|f| goertzel_level(f, rate, hz))
        .collect();
    levels.sort_by(f64::total_cmp);
    levels
        .get(levels.len() / 2)
        .copied()
        .unwrap_or(f64::NEG_INFINITY)
}

/// The median level of `hz` over 100 ms chunks of `samples`.
fn median_level(samples: &[i16], rate: u32, hz: f64) -> f64 {
    let mut levels: Vec<f64> = samples
        .chunks_exact(rate as usize / 10)
        .map(|c| goertzel_level(c, rate, hz))
        .collect();
    levels.sort_by(f64::total_cmp);
    levels
        .get(levels.len() / 2)
        .copied()
        .unwrap_or(f64::NEG_INFINITY)
}

fn last(samples: &[i16], rate: u32, secs: f64) -> &[i16] {
    let n = (secs * f64::from(rate)) as usize;
    &samples[samples.len().saturating_sub(n)..]
}

async fn next_event(handle: &mut RoomHandle, timeout: Duration) -> Option<RoomEvent> {
    tokio::time::timeout(timeout, handle.events.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_appears_as_a_sip_participant_with_masked_number() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let handle = join(&rooms, "standup", "c1").await;
    assert_eq!(handle.sample_rate, 16_000);
    let p = server
        .wait_for_participant(
            "standup",
            |p| p.identity == "sip_c1" && p.publisher_connected && !p.tracks.is_empty(),
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .expect("the caller's participant publishes its microphone");
    assert_eq!(p.kind, ParticipantKind::Sip);
    assert_eq!(p.name, "Phone ••••1234");
    assert_eq!(
        p.attributes.get("sip.phoneNumber").map(String::as_str),
        Some("••••1234")
    );
    assert_eq!(
        p.attributes.get("sip.callID").map(String::as_str),
        Some("c1")
    );
    assert_eq!(
        p.attributes.get("sip.trunkID").map(String::as_str),
        Some("default")
    );
    assert_eq!(
        p.attributes.get("sip.callStatus").map(String::as_str),
        Some("active")
    );
    assert_eq!(
        p.tracks.first().map(|t| t.source),
        Some(proto::TrackSource::Microphone as i32)
    );
    drop(handle);
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while server
            .participants("standup")
            .await
            .unwrap()
            .iter()
            .any(|p| p.identity == "sip_c1")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "dropping the handle leaves the room");
    let departed = server.departed("standup").await.unwrap();
    let left = departed
        .iter()
        .find(|p| p.identity == "sip_c1")
        .expect("the server saw the participant leave");
    assert_eq!(
        left.attributes.get("sip.callStatus").map(String::as_str),
        Some("hangup"),
        "the participant leaves with sip.callStatus = hangup"
    );
    assert_eq!(
        left.attributes.get("sip.phoneNumber").map(String::as_str),
        Some("••••1234"),
        "the other attributes are kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_audio_reaches_the_caller_and_caller_audio_reaches_the_room() {
    audio_both_ways(LIVEKIT_SAMPLE_RATE, "c2").await;
}

/// A G.711 caller's frames are exchanged at 8 kHz (no resampling on the call path): Opus
/// codes them natively and the room still hears and is heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowband_caller_exchanges_8_khz_frames_with_the_room() {
    audio_both_ways(NARROWBAND_SAMPLE_RATE, "c8").await;
}

async fn audio_both_ways(rate: u32, call: &str) {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let synth = tone_participant(&server, "audio", "alice").await;
    let rooms = rooms_for(server.url(), SECRET);
    let mut handle = tokio::time::timeout(
        Duration::from_secs(10),
        rooms.join(request_at("audio", call, rate)),
    )
    .await
    .expect("join within 10 s")
    .expect("join succeeds");
    assert_eq!(handle.sample_rate, rate, "frames at the caller's rate");
    assert_eq!(handle.others_at_join, 1);
    let heard = exchange(&mut handle, Some(440.0), Duration::from_secs(4)).await;

    let tail = last(&heard, rate, 1.0);
    // Levels per 20 ms frame (the median): the synthetic participant replays a loop of
    // packets, and the phase jump where the loop restarts would blur a one-second measure.
    let at_1k = frame_level(tail, rate, 1000.0);
    let at_440 = frame_level(tail, rate, 440.0);
    println!(
        "caller heard {} samples; 1000 Hz at {at_1k:.1} dBFS, 440 Hz at {at_440:.1} dBFS",
        heard.len()
    );
    assert!(
        tail.len() >= rate as usize / 2,
        "at least half a second of room audio"
    );
    assert!(
        at_1k > -20.0,
        "the room's 1000 Hz tone reaches the caller ({at_1k:.1} dBFS)"
    );
    assert!(at_1k - at_440 > 30.0, "the caller does not hear itself");

    // The audio-level extension LiveKit's speaker detection reads: the -12 dBFS sine is
    // -15 dBov RMS, and voice.
    let counters = server.counters().await.unwrap();
    let mine = counters
        .iter()
        .find(|c| c.identity == format!("sip_{call}"))
        .expect("the caller's counters");
    assert!(
        mine.audio_level.is_some_and(|l| (-17..=-13).contains(&l)),
        "audio level of the caller's packets: {:?}",
        mine.audio_level
    );
    assert_eq!(mine.voice_activity, Some(true));

    let room_heard = synth.received_audio_from(&format!("sip_{call}"));
    let rtail = last(&room_heard, SAMPLE_RATE, 1.0);
    let r440 = median_level(rtail, SAMPLE_RATE, 440.0);
    println!(
        "room heard {} samples from the caller; 440 Hz at {r440:.1} dBFS",
        room_heard.len()
    );
    assert!(
        rtail.len() >= SAMPLE_RATE as usize / 2,
        "at least half a second of the caller's audio in the room"
    );
    assert!(
        r440 > -20.0,
        "the caller's 440 Hz tone reaches the room ({r440:.1} dBFS)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_dtmf_becomes_a_sip_dtmf_data_packet() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let handle = join(&rooms, "keys", "c3").await;
    server
        .wait_for_participant(
            "keys",
            |p| p.identity == "sip_c3" && p.publisher_connected,
            Duration::from_secs(10),
        )
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
    assert!(
        digits.contains(&(5, "5".to_owned())),
        "digit 5 arrives: {digits:?}"
    );
    assert!(
        digits.contains(&(11, "#".to_owned())),
        "# arrives with RFC 4733 code 11: {digits:?}"
    );
    #[allow(deprecated)] // the server stamps the kind of the channel a packet came on
    let all_reliable = found
        .iter()
        .all(|p| p.kind == proto::data_packet::Kind::Reliable as i32);
    assert!(all_reliable, "DTMF goes on the reliable channel");
    drop(handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_room_ends_the_call_with_closed() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let mut handle = join(&rooms, "closing", "c4").await;
    server
        .wait_for_participant(
            "closing",
            |p| p.identity == "sip_c4",
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .expect("joined");
    assert!(server.close_room("closing").await.unwrap());
    assert_eq!(
        next_event(&mut handle, Duration::from_secs(5)).await,
        Some(RoomEvent::Closed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_participant_ends_the_call_with_removed() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let mut handle = join(&rooms, "kick", "c5").await;
    server
        .wait_for_participant("kick", |p| p.identity == "sip_c5", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("joined");
    assert!(server.remove_participant("kick", "sip_c5").await.unwrap());
    assert_eq!(
        next_event(&mut handle, Duration::from_secs(5)).await,
        Some(RoomEvent::Removed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_joining_and_leaving_are_reported() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let mut handle = join(&rooms, "lobby", "c6").await;
    assert_eq!(handle.others_at_join, 0);
    server
        .wait_for_participant("lobby", |p| p.identity == "sip_c6", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("joined");
    let bob = server
        .add_synthetic_participant("lobby", "bob", Signal::Silence)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut handle, Duration::from_secs(5)).await,
        Some(RoomEvent::ParticipantJoined {
            identity: "bob".into()
        })
    );
    assert!(server
        .remove_participant("lobby", bob.identity())
        .await
        .unwrap());
    assert_eq!(
        next_event(&mut handle, Duration::from_secs(5)).await,
        Some(RoomEvent::ParticipantLeft {
            identity: "bob".into()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_websocket_is_resumed_without_ending_the_call() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let synth = tone_participant(&server, "resume", "carol").await;
    let rooms = rooms_for(server.url(), SECRET);
    let mut handle = join(&rooms, "resume", "c7").await;
    let _ = exchange(&mut handle, Some(440.0), Duration::from_secs(2)).await;
    let sid = server
        .participants("resume")
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.identity == "sip_c7")
        .map(|p| p.sid);
    assert!(server.drop_websocket("sip_c7").await.unwrap());
    // The hook marks the participant's signal connection gone before it answers, so only a
    // new WebSocket makes this true again.
    let resumed = server
        .wait_for_participant(
            "resume",
            |p| p.identity == "sip_c7" && p.signal_connected,
            Duration::from_secs(8),
        )
        .await
        .unwrap();
    let resumed = resumed.expect("the signal connection is resumed");
    assert_eq!(
        Some(resumed.sid),
        sid,
        "the same participant session goes on (reconnect=1&sid=, not a new join)"
    );
    let before = synth.received_audio_from("sip_c7").len();
    let heard = exchange(&mut handle, Some(440.0), Duration::from_secs(2)).await;
    assert!(
        handle.events.try_recv().is_err(),
        "no Closed after a resumed WebSocket"
    );
    let at_1k = median_level(
        last(&heard, LIVEKIT_SAMPLE_RATE, 1.0),
        LIVEKIT_SAMPLE_RATE,
        1000.0,
    );
    assert!(
        at_1k > -20.0,
        "room audio still reaches the caller after the resume ({at_1k:.1} dBFS)"
    );
    assert!(
        synth.received_audio_from("sip_c7").len() > before + SAMPLE_RATE as usize / 2,
        "caller audio still reaches the room"
    );
    // As LiveKit's SDKs do after a resume: the publisher connection offered again with an
    // ICE restart (new credentials), media going on meanwhile.
    let p = server
        .participants("resume")
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.identity == "sip_c7")
        .expect("still in the room");
    assert_eq!(
        p.publisher_ufrags.len(),
        2,
        "the first offer and one ICE restart: {:?}",
        p.publisher_ufrags
    );
    assert_ne!(
        p.publisher_ufrags[0], p.publisher_ufrags[1],
        "new ICE credentials"
    );
    assert!(p.publisher_connected);
}

/// A call in `room` with a synthetic participant playing 1000 Hz, audio flowing both ways
/// for 2 s; returns the participant, the call's handle and its participant session id.
async fn bridged_call(
    server: &TestServer,
    room: &str,
    call: &str,
) -> (SyntheticParticipant, RoomHandle, String) {
    let synth = tone_participant(&server, room, "tone").await;
    let rooms = rooms_for(server.url(), SECRET);
    let mut handle = join(&rooms, room, call).await;
    let _ = exchange(&mut handle, Some(440.0), Duration::from_secs(2)).await;
    let sid = server
        .participants(room)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.identity == format!("sip_{call}"))
        .expect("in the room")
        .sid;
    (synth, handle, sid)
}

/// The call joins `room` again as a new participant session within `within`, the call is not
/// ended, and audio flows both ways again.
async fn joins_again_and_audio_flows(
    server: &TestServer,
    synth: &SyntheticParticipant,
    handle: &mut RoomHandle,
    (room, call, old): (&str, &str, &str),
    within: Duration,
) {
    let identity = format!("sip_{call}");
    let started = Instant::now();
    let again = server
        .wait_for_participant(
            room,
            |p| p.identity == identity && p.sid != old && p.publisher_connected,
            within,
        )
        .await
        .unwrap();
    assert!(
        again.is_some(),
        "the backend joins again as a new participant session"
    );
    println!("joined again after {:?}", started.elapsed());
    let before = synth.received_audio_from(&identity).len();
    let heard = exchange(handle, Some(440.0), Duration::from_secs(3)).await;
    while let Ok(ev) = handle.events.try_recv() {
        assert!(
            !matches!(ev, RoomEvent::Closed | RoomEvent::Removed),
            "the call is not ended: {ev:?}"
        );
    }
    let at_1k = median_level(
        last(&heard, LIVEKIT_SAMPLE_RATE, 1.0),
        LIVEKIT_SAMPLE_RATE,
        1000.0,
    );
    assert!(
        at_1k > -20.0,
        "room audio reaches the caller again ({at_1k:.1} dBFS)"
    );
    let room_audio = synth.received_audio_from(&identity);
    assert!(
        room_audio.len() > before + SAMPLE_RATE as usize,
        "caller audio reaches the room again"
    );
    let r440 = median_level(last(&room_audio, SAMPLE_RATE, 1.0), SAMPLE_RATE, 440.0);
    assert!(
        r440 > -20.0,
        "the caller's tone after the rejoin ({r440:.1} dBFS)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_reconnect_asked_by_the_server_joins_again_and_audio_flows_again() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let (synth, mut handle, old) = bridged_call(&server, "rejoin", "c11").await;
    // Leave{action: RECONNECT} and the participant is gone from the server.
    assert!(server.kill_peer_connection("sip_c11").await.unwrap());
    let case = ("rejoin", "c11", old.as_str());
    joins_again_and_audio_flows(&server, &synth, &mut handle, case, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_path_lost_with_the_signal_up_joins_again_and_audio_flows_again() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let (synth, mut handle, old) = bridged_call(&server, "outage", "c12").await;
    // Every datagram of this session is dropped, both ways; the signal connection stays up
    // and nobody tells the gateway. Its ICE checks go unanswered and the media path fails.
    assert!(server.blackhole_media("sip_c12", true).await.unwrap());
    let case = ("outage", "c12", old.as_str());
    joins_again_and_audio_flows(&server, &synth, &mut handle, case, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_alone_and_silent_keeps_its_session() {
    // Nothing to hear and nothing said: only ICE consent checks cross the peer
    // connections. That quiet is not a failed media path.
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let mut handle = join(&rooms, "quiet", "c13").await;
    let sid = || async {
        server
            .participants("quiet")
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.identity == "sip_c13")
            .map(|p| p.sid)
    };
    let first = sid().await.expect("in the room");
    let silence = vec![0i16; (handle.sample_rate / 50) as usize];
    let end = Instant::now() + Duration::from_secs(12);
    while Instant::now() < end {
        let _ = handle.to_room.try_send(AudioFrame::from_samples(&silence));
        while handle.from_room.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sid().await, Some(first), "the same session all along");
    while let Ok(ev) = handle.events.try_recv() {
        assert!(
            !matches!(ev, RoomEvent::Closed | RoomEvent::Removed),
            "the call goes on: {ev:?}"
        );
    }
}

/// A backend that offers relayed candidates only (`livekit.ice_transport_policy = "relay"`),
/// with `ice_servers` as given.
fn relay_rooms(url: &str, ice_servers: Vec<IceServer>) -> LiveKitRooms {
    let config = LiveKitConfig {
        url: url.to_owned(),
        api_key: KEY.to_owned(),
        api_secret: Some(Secret::new(SECRET)),
        token_ttl_s: 60,
        ice_servers,
        ice_transport_policy: IceTransportPolicy::Relay,
        ..LiveKitConfig::default()
    };
    LiveKitRooms::new(&config).expect("configured backend")
}

fn server_with_turn() -> ServerOptions {
    let mut opts = ServerOptions::new(KEY, SECRET);
    opts.turn = true;
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_media_goes_through_the_turn_server_livekit_announces() {
    let server = TestServer::start_with(server_with_turn()).await.unwrap();
    let fay = tone_participant(&server, "relayed", "fay").await;
    // No TURN server of our own: the one in the JoinResponse, with its credential.
    let rooms = relay_rooms(server.url(), Vec::new());
    let mut handle = join(&rooms, "relayed", "c14").await;
    let mut heard = exchange(&mut handle, Some(440.0), Duration::from_secs(3)).await;
    // Relayed connectivity takes longer to come up on a loaded machine: go on exchanging, a
    // second at a time, until two seconds of packets have gone through the relay.
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.turn_stats().is_some_and(|t| t.to_peers <= 100) && Instant::now() < deadline {
        heard.extend(exchange(&mut handle, Some(440.0), Duration::from_secs(1)).await);
    }
    let at_1k = median_level(
        last(&heard, LIVEKIT_SAMPLE_RATE, 1.0),
        LIVEKIT_SAMPLE_RATE,
        1000.0,
    );
    assert!(
        at_1k > -20.0,
        "room audio reaches the caller ({at_1k:.1} dBFS)"
    );
    let room = fay.received_audio_from("sip_c14");
    let r440 = median_level(last(&room, SAMPLE_RATE, 1.0), SAMPLE_RATE, 440.0);
    assert!(
        r440 > -20.0,
        "caller audio reaches the room ({r440:.1} dBFS)"
    );

    let p = server
        .participants("relayed")
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.identity == "sip_c14")
        .expect("in the room");
    for target in [
        proto::SignalTarget::Publisher,
        proto::SignalTarget::Subscriber,
    ] {
        let offered: Vec<&String> = p
            .trickled
            .iter()
            .filter(|(t, _)| *t == target)
            .map(|(_, c)| c)
            .collect();
        assert!(
            offered.iter().any(|c| c.contains("typ relay")),
            "a relayed candidate for {target:?}: {offered:?}"
        );
        assert!(
            offered.iter().all(|c| c.contains("typ relay")),
            "nothing but relays for {target:?}: {offered:?}"
        );
    }
    let turn = server.turn_stats().expect("the TURN server runs");
    println!("TURN: {turn:?}");
    // The call's two peer connections, and the subscriber connection of the room's listener
    // on this node (its publisher connection carries nothing and allocates nothing).
    assert_eq!(turn.allocations, 3, "one allocation per peer connection in use");
    assert_eq!(turn.refused, 0);
    // Two seconds of 20 ms packets and more, through the relay.
    assert!(
        turn.to_peers > 100,
        "to LiveKit through the relay: {turn:?}"
    );
    assert!(
        turn.to_clients > 100,
        "from LiveKit through the relay: {turn:?}"
    );

    drop(handle);
    let mut released = 0;
    for _ in 0..50 {
        released = server.turn_stats().map(|t| t.released).unwrap_or(0);
        if released == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(released, 3, "every allocation given back on leaving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_with_a_refused_turn_credential_ends_the_call_instead_of_leaving_it_silent() {
    let server = TestServer::start_with(server_with_turn()).await.unwrap();
    let turn_url = server
        .join_ice_servers()
        .into_iter()
        .flat_map(|s| s.urls)
        .find(|u| u.starts_with("turn:"))
        .expect("the TURN server is announced");
    // Our own entry comes first, with a credential the server refuses.
    let rooms = relay_rooms(
        server.url(),
        vec![IceServer {
            url: turn_url,
            username: Some("livekit-turn".to_owned()),
            credential: Some(Secret::new("not-the-password")),
        }],
    );
    let mut handle = join(&rooms, "refused", "c15").await;
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match handle.events.recv().await {
                Some(RoomEvent::Closed) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(ended, Ok(true), "the call is told its room is gone");
    println!("ended {:?} after the join", started.elapsed());
    let turn = server.turn_stats().expect("the TURN server runs");
    assert!(turn.refused >= 2, "both allocations refused: {turn:?}");
    assert_eq!(turn.allocations, 0);
}

#[tokio::test]
async fn unreachable_server_fails_the_join() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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

// ---------------------------------------------------------------------------------------------
// Whole calls: SIP caller → dialin serve → LiveKit (test server).

use dialin_media::prompt::{Language, PromptCatalog, PromptId, SampleRate};
use support::caller::{Call, Caller, Codec, DialOptions, DtmfMode};
use support::gateway::{outcome_label, Gateway, GatewayOptions};
use support::tone;

const PIN: &str = "2468013579";
const NAMED_PIN: &str = "1357924680";
const SECOND: Duration = Duration::from_secs(1);

/// A gateway whose rooms are on the LiveKit server at `url`, signing tokens with `secret`.
async fn livekit_gateway(url: &str, secret: &str) -> Gateway {
    let rooms = format!(
        "[rooms]\nbackend = \"livekit\"\n\n[livekit]\nurl = \"{url}\"\napi_key = \"{KEY}\"\napi_secret = \"{secret}\"\ntoken_ttl_s = 60\n"
    );
    Gateway::start(GatewayOptions {
        rooms: Some(rooms),
        ..GatewayOptions::default()
    })
    .await
}

/// A test server with alice in `room` playing a 1000 Hz tone, a gateway on it, and [`PIN`]
/// leading to `room`.
async fn gateway_and_alice(room: &str) -> (TestServer, SyntheticParticipant, Gateway) {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let alice = tone_participant(&server, room, "alice").await;
    let gw = livekit_gateway(server.url(), SECRET).await;
    gw.create_pin(room, Some(PIN)).await;
    (server, alice, gw)
}

/// A G.711 call from `from`: every prompt and tone is compared at 8 kHz.
fn pcmu_from(gw: &Gateway, from: &str) -> DialOptions {
    DialOptions {
        codecs: vec![Codec::Pcmu],
        from_user: from.to_owned(),
        ..DialOptions::new(gw.sip)
    }
}

/// Dials, waits for the welcome prompt and keys `pin#`; returns the call when the gateway
/// has it in a room (`joined`) or after the keys are sent (`!joined`).
async fn dial_and_key(
    gw: &Gateway,
    opts: DialOptions,
    pin: &str,
    joined: bool,
) -> (Call, Option<serde_json::Value>) {
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
    if !joined {
        return (call, None);
    }
    let info = gw
        .wait_for_call(10 * SECOND, |c| {
            c["state"] == "in_room" && !before.iter().any(|b| c["id"] == b.as_str())
        })
        .await
        .expect("the call reaches in_room");
    (call, Some(info))
}

fn identity_of(info: &Option<serde_json::Value>) -> (String, String) {
    let id = info
        .as_ref()
        .and_then(|i| i["id"].as_str())
        .expect("call id")
        .to_owned();
    (format!("sip_{id}"), id)
}

/// Normalised correlation of `prompt` with `heard` at `off` (1: the same waveform).
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

/// Whether `prompt` (8 kHz) is in `heard` (8 kHz): its first 20 ms frame of sound located by
/// waveform, then the whole prompt must correlate above 0.9 (G.711 keeps it near 1).
fn contains_prompt(heard: &[i16], prompt: &[i16]) -> bool {
    let Some(lead) = prompt.chunks(160).position(|c| tone::rms_dbfs(c) > -40.0) else {
        return false;
    };
    let probe = &prompt[lead * 160..(lead * 160 + 800).min(prompt.len())];
    (0..heard.len().saturating_sub(prompt.len()))
        .filter(|&o| correlation(heard, probe, o + lead * 160) > 0.8)
        .any(|o| correlation(heard, prompt, o) > 0.9)
}

fn prompt_8k(id: PromptId) -> Vec<i16> {
    let catalog = PromptCatalog::load(Language::En, None).expect("the built-in prompts");
    catalog.get(id).samples(SampleRate::Hz8000).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_keying_a_pin_joins_livekit_as_a_sip_participant_named_and_tagged_per_call() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let gw = livekit_gateway(server.url(), SECRET).await;
    gw.create_pin("standup", Some(PIN)).await;
    gw.create_named_pin("standup", NAMED_PIN, "Front desk")
        .await;

    let (_a, a_info) = dial_and_key(&gw, pcmu_from(&gw, "+33612345678"), PIN, true).await;
    let (_b, b_info) = dial_and_key(&gw, pcmu_from(&gw, "+33698765432"), NAMED_PIN, true).await;
    let (a_identity, a_call) = identity_of(&a_info);
    let (b_identity, b_call) = identity_of(&b_info);
    assert_ne!(a_identity, b_identity, "identity is unique per call");

    let wait = |identity: String| {
        let server = &server;
        async move {
            server
                .wait_for_participant(
                    "standup",
                    |p| p.identity == identity && p.publisher_connected && !p.tracks.is_empty(),
                    10 * SECOND,
                )
                .await
                .unwrap()
                .unwrap_or_else(|| {
                    panic!("{identity} publishes its microphone in the LiveKit room")
                })
        }
    };
    let pa = wait(a_identity).await;
    let pb = wait(b_identity).await;
    for (p, call, number, name) in [
        (&pa, &a_call, "••••5678", "Phone ••••5678"),
        (&pb, &b_call, "••••5432", "Front desk"),
    ] {
        assert_eq!(p.kind, ParticipantKind::Sip, "kind SIP");
        assert_eq!(
            p.name, name,
            "name: the PIN's participant_name, else Phone and the masked number"
        );
        assert_eq!(
            p.attributes.get("sip.callID"),
            Some(call),
            "sip.callID is the call's id"
        );
        assert_eq!(
            p.attributes.get("sip.trunkID").map(String::as_str),
            Some("default")
        );
        assert_eq!(
            p.attributes.get("sip.phoneNumber").map(String::as_str),
            Some(number),
            "masked number"
        );
        assert_eq!(
            p.attributes.get("sip.callStatus").map(String::as_str),
            Some("active")
        );
        assert!(
            !p.attributes
                .values()
                .chain([&p.name, &p.metadata])
                .any(|v| v.contains("612345678") || v.contains("698765432")),
            "the full number appears nowhere"
        );
        assert_eq!(
            p.tracks.first().map(|t| t.source),
            Some(proto::TrackSource::Microphone as i32)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_tone_reaches_the_caller_and_caller_tone_reaches_the_room() {
    let (_server, alice, gw) = gateway_and_alice("audio").await;
    let (call, info) = dial_and_key(&gw, pcmu_from(&gw, "+33612345678"), PIN, true).await;
    let (identity, _) = identity_of(&info);
    call.play_tone(440.0, -12.0);
    // "joining" plays over the room at first; measure well after it.
    let joining = prompt_8k(PromptId::Joining);
    tokio::time::sleep(Duration::from_millis((joining.len() / 8) as u64) + 2 * SECOND).await;
    let from = Instant::now();
    tokio::time::sleep(SECOND).await;

    let heard = call.recorded(from);
    let f = tone::dominant_frequency(&heard, call.sample_rate());
    // Median of 100 ms levels: alice's synthetic tone restarts its phase every second (the
    // server replays its first second), and one Goertzel over a whole second would read the
    // two phases cancelling each other as a quiet tone.
    let (at_1k, at_440) = (
        median_level(&heard, 8000, 1000.0),
        median_level(&heard, 8000, 440.0),
    );
    println!("caller heard {} samples: dominant {f} Hz, 1000 Hz at {at_1k:.1} dBFS, 440 Hz at {at_440:.1} dBFS", heard.len());
    assert!(
        heard.len() >= 6000,
        "about a second of audio on the caller's RTP"
    );
    assert!(
        (f - 1000.0).abs() <= 10.0,
        "the caller hears alice's 1000 Hz tone, measured {f} Hz"
    );
    assert!(at_1k > -25.0, "at a useful level ({at_1k:.1} dBFS)");
    assert!(at_1k - at_440 > 20.0, "the caller does not hear itself");

    let room = alice.received_audio_from(&identity);
    let tail = last(&room, SAMPLE_RATE, 1.0);
    let (r440, r1k) = (
        median_level(tail, SAMPLE_RATE, 440.0),
        median_level(tail, SAMPLE_RATE, 1000.0),
    );
    println!("alice heard {} samples from the caller: 440 Hz at {r440:.1} dBFS, 1000 Hz at {r1k:.1} dBFS", room.len());
    assert!(
        tail.len() >= SAMPLE_RATE as usize / 2,
        "alice hears the caller"
    );
    assert!(
        r440 > -25.0,
        "alice hears the caller's 440 Hz tone ({r440:.1} dBFS)"
    );
    assert!(r440 - r1k > 20.0, "and not her own tone back");
    // The bridge accounts for the frames it loses; on an idle loopback, next to none.
    for series in [
        "dialin_room_frames_dropped_total",
        "dialin_room_frames_missing_total",
    ] {
        let lost = gw.metric(series).await;
        println!("{series} {lost:?}");
        assert!(
            lost.is_some_and(|v| v < 50.0),
            "{series} is exported and small on loopback: {lost:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_closed_by_livekit_plays_meeting_ended_then_bye() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let gw = livekit_gateway(server.url(), SECRET).await;
    gw.create_pin("closing", Some(PIN)).await;
    let (call, info) = dial_and_key(&gw, pcmu_from(&gw, "+33612345678"), PIN, true).await;
    let (identity, id) = identity_of(&info);
    server
        .wait_for_participant("closing", |p| p.identity == identity, 10 * SECOND)
        .await
        .unwrap()
        .expect("in the room");
    // Let "joining" and "you are the first participant" end; hold music plays meanwhile.
    tokio::time::sleep(5 * SECOND).await;
    let closed = Instant::now();
    assert!(server.close_room("closing").await.unwrap());
    assert!(
        call.wait_for_bye(15 * SECOND).await,
        "the caller gets BYE after the room closed"
    );
    let heard = call.recorded(closed);
    assert!(
        contains_prompt(&heard, &prompt_8k(PromptId::MeetingEnded)),
        "the caller hears \"the meeting has ended\" before the BYE"
    );
    let rec = gw
        .completed_record(&id, 5 * SECOND)
        .await
        .expect("call record");
    assert_eq!(outcome_label(&rec), Some("room_ended"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_keyed_in_the_room_reaches_livekit_as_sip_dtmf_data_packets() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let gw = livekit_gateway(server.url(), SECRET).await;
    gw.create_pin("keys", Some(PIN)).await;
    let (call, info) = dial_and_key(&gw, pcmu_from(&gw, "+33612345678"), PIN, true).await;
    let (identity, _) = identity_of(&info);
    call.send_dtmf("7*", DtmfMode::Rfc4733)
        .await
        .expect("digits sent");
    let mut digits = Vec::new();
    let deadline = Instant::now() + 10 * SECOND;
    while Instant::now() < deadline && digits.len() < 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        digits = server
            .data_packets("keys")
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p.participant_identity == identity)
            .filter_map(|p| match p.value {
                Some(proto::data_packet::Value::SipDtmf(d)) => Some((d.code, d.digit)),
                _ => None,
            })
            .collect();
    }
    assert_eq!(
        digits,
        vec![(7, "7".to_owned()), (10, "*".to_owned())],
        "each key once, in order, RFC 4733 codes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_unreachable_at_join_plays_service_unavailable_then_bye() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = livekit_gateway(&format!("ws://127.0.0.1:{port}"), SECRET).await;
    join_fails_with_service_unavailable(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_refusing_the_token_at_join_plays_service_unavailable_then_bye() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let gw = livekit_gateway(server.url(), "a-secret-the-livekit-server-does-not-know").await;
    join_fails_with_service_unavailable(&gw).await;
    assert!(
        server.participants("standup").await.unwrap().is_empty(),
        "nobody joined"
    );
}

async fn join_fails_with_service_unavailable(gw: &Gateway) {
    gw.create_pin("standup", Some(PIN)).await;
    let (call, _) = dial_and_key(gw, pcmu_from(gw, "+33612345678"), PIN, false).await;
    assert!(call.wait_for_bye(20 * SECOND).await, "the caller gets BYE");
    // A refused join is quick: the prompt may start while the last key is still going out.
    let heard = call.recorded_all();
    assert!(
        contains_prompt(&heard, &prompt_8k(PromptId::ServiceUnavailable)),
        "the caller hears \"service unavailable\" before the BYE"
    );
    assert!(
        !contains_prompt(&heard, &prompt_8k(PromptId::MeetingEnded)),
        "and not another farewell"
    );
    let mut ended = None;
    for _ in 0..50 {
        ended = gw
            .metric("dialin_calls_total{outcome=\"join_failed\"}")
            .await
            .filter(|&n| n >= 1.0);
        if ended.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ended, Some(1.0), "the call is recorded as join_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_websocket_dropped_mid_call_is_resumed_and_the_call_goes_on() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let carol = tone_participant(&server, "resume", "carol").await;
    let gw = livekit_gateway(server.url(), SECRET).await;
    gw.create_pin("resume", Some(PIN)).await;
    let (call, info) = dial_and_key(&gw, pcmu_from(&gw, "+33612345678"), PIN, true).await;
    let (identity, _) = identity_of(&info);
    call.play_tone(440.0, -12.0);
    let p = server
        .wait_for_participant(
            "resume",
            |p| p.identity == identity && p.publisher_connected,
            10 * SECOND,
        )
        .await
        .unwrap()
        .expect("in the room");
    tokio::time::sleep(2 * SECOND).await;

    assert!(server.drop_websocket(&identity).await.unwrap());
    let resumed = server
        .wait_for_participant(
            "resume",
            |p| p.identity == identity && p.signal_connected,
            10 * SECOND,
        )
        .await
        .unwrap()
        .expect("the gateway resumes the signal connection");
    assert_eq!(
        resumed.sid, p.sid,
        "the same participant session (reconnect=1&sid=), not a new join"
    );

    let before = carol.received_audio_from(&identity).len();
    tokio::time::sleep(SECOND).await;
    let from = Instant::now();
    tokio::time::sleep(2 * SECOND).await;
    assert!(!call.bye_received(), "the call goes on");
    let heard = call.recorded(from);
    let f = tone::dominant_frequency(&heard, call.sample_rate());
    assert!(
        (f - 1000.0).abs() <= 10.0,
        "the caller still hears carol after the resume, measured {f} Hz"
    );
    let room = carol.received_audio_from(&identity);
    assert!(
        room.len() > before + SAMPLE_RATE as usize,
        "carol still hears the caller after the resume"
    );
    let r440 = median_level(last(&room, SAMPLE_RATE, 1.0), SAMPLE_RATE, 440.0);
    assert!(
        r440 > -25.0,
        "the caller's tone after the resume ({r440:.1} dBFS)"
    );
    let calls = gw.calls().await;
    assert!(
        calls.iter().any(|c| c["state"] == "in_room"),
        "the call is still in the room: {calls:?}"
    );
}

#[tokio::test]
async fn wss_url_is_joined_over_tls_and_a_failed_handshake_is_unreachable() {
    // A loopback server that answers plain HTTP 403: over TLS that is a failed handshake
    // (Unreachable), whereas a client speaking plain ws:// would read an HTTP refusal.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let rooms = rooms_for(&format!("wss://127.0.0.1:{port}"), SECRET);
    let r = rooms.join(request("tls", "c10")).await;
    server.abort();
    match r {
        Err(RoomError::Unreachable(e)) => println!("as expected: {e}"),
        other => panic!("expected a failed TLS handshake, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_with_its_own_livekit_sends_its_calls_there() {
    let main = TestServer::start(KEY, SECRET).await.unwrap();
    let other = TestServer::start("otherkey", "the-other-projects-secret")
        .await
        .unwrap();
    let trunks = format!(
        "{}livekit = {{ url = \"{}\", api_key = \"otherkey\", api_secret = \"the-other-projects-secret\" }}\n",
        support::gateway::DEFAULT_TRUNK,
        other.url()
    );
    let rooms = format!(
        "[rooms]\nbackend = \"livekit\"\n\n[livekit]\nurl = \"{}\"\napi_key = \"{KEY}\"\napi_secret = \"{SECRET}\"\n",
        main.url()
    );
    let gw = Gateway::start(GatewayOptions {
        rooms: Some(rooms),
        trunks: Some(trunks),
        ..GatewayOptions::default()
    })
    .await;
    gw.create_pin("elsewhere", Some(PIN)).await;
    let (_call, info) = dial_and_key(&gw, pcmu_from(&gw, "+33612345678"), PIN, true).await;
    let (identity, _) = identity_of(&info);
    let p = other
        .wait_for_participant("elsewhere", |p| p.identity == identity, 10 * SECOND)
        .await
        .unwrap();
    assert!(
        p.is_some(),
        "the call joined the trunk's LiveKit server with the trunk's key"
    );
    assert!(
        main.participants("elsewhere").await.unwrap().is_empty(),
        "and not the default one"
    );
}

/// An Opus caller's packets are published as they came (DESIGN.md §Architecture: no
/// transcoding when the caller's codec is the room's): the room still hears the caller's
/// tone, and the session reports almost every frame it published as forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_caller_is_published_without_transcoding() {
    let (_server, alice, gw) = gateway_and_alice("opus").await;
    let opts = DialOptions {
        codecs: vec![Codec::Opus],
        from_user: "+33612345678".to_owned(),
        ..DialOptions::new(gw.sip)
    };
    let (call, info) = dial_and_key(&gw, opts, PIN, true).await;
    assert_eq!(call.codec(), Some(Codec::Opus), "the call runs on Opus");
    let (identity, _) = identity_of(&info);
    call.play_tone(440.0, -12.0);
    tokio::time::sleep(3 * SECOND).await;

    let room = alice.received_audio_from(&identity);
    let tail = last(&room, SAMPLE_RATE, 1.0);
    let (r440, r1k) = (
        frame_level(tail, SAMPLE_RATE, 440.0),
        frame_level(tail, SAMPLE_RATE, 1000.0),
    );
    println!("alice heard the Opus caller: 440 Hz at {r440:.1} dBFS, 1000 Hz at {r1k:.1} dBFS");
    assert!(
        r440 > -25.0,
        "alice hears the caller's 440 Hz tone ({r440:.1} dBFS)"
    );
    assert!(r440 - r1k > 20.0, "and not her own tone back");

    call.hangup().await.expect("hang up");
    assert!(gw.wait_no_calls(10 * SECOND).await, "the call ends");
    let deadline = Instant::now() + 5 * SECOND;
    let line = loop {
        let logs = gw.logs();
        if let Some(l) = logs.lines().find(|l| l.contains("left the LiveKit room")) {
            break l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the session logs its counts when it leaves:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let count = |field: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(field)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{field} in {line}"))
    };
    let (sent, forwarded) = (count("frames_sent"), count("frames_forwarded"));
    println!("published {sent} frames, {forwarded} of them the caller's own packets");
    assert!(
        sent >= 100,
        "about three seconds of frames published: {sent}"
    );
    assert!(
        forwarded * 100 >= sent * 95,
        "at least 95 % of the frames forwarded without transcoding: {forwarded} of {sent}"
    );
}

/// A STUN server listed in `livekit.ice_servers` tells each peer connection the address a NAT
/// gives it; the backend trickles it to LiveKit as a server-reflexive candidate of that peer
/// connection, next to its host candidate, and the call connects as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_server_in_ice_servers_adds_server_reflexive_candidates() {
    // The STUN server maps every client to 127.0.0.3, as a NAT maps it to its public address.
    let stun_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stun_addr = stun_sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, src)) = stun_sock.recv_from(&mut buf).await {
            // A Binding request: type 0x0001, magic cookie, transaction id.
            if n < 20 || buf[..2] != [0, 1] || buf[4..8] != [0x21, 0x12, 0xa4, 0x42] {
                continue;
            }
            let mut r = vec![0x01, 0x01, 0, 12, 0x21, 0x12, 0xa4, 0x42];
            r.extend_from_slice(&buf[8..20]);
            // XOR-MAPPED-ADDRESS, IPv4, 127.0.0.3 and the source port.
            r.extend_from_slice(&[0x00, 0x20, 0, 8, 0, 1]);
            r.extend_from_slice(&(src.port() ^ 0x2112).to_be_bytes());
            r.extend(
                [127u8, 0, 0, 3]
                    .iter()
                    .zip([0x21, 0x12, 0xa4, 0x42])
                    .map(|(a, k)| a ^ k),
            );
            let _ = stun_sock.send_to(&r, src).await;
        }
    });
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let config = LiveKitConfig {
        url: server.url().to_owned(),
        api_key: KEY.to_owned(),
        api_secret: Some(Secret::new(SECRET)),
        token_ttl_s: 60,
        ice_servers: vec![
            IceServer {
                url: format!("stun:{stun_addr}"),
                username: None,
                credential: None,
            },
            // A TURN server that never answers: the call goes on without a relay.
            IceServer {
                url: "turn:127.0.0.1:9?transport=udp".to_owned(),
                username: Some("user".to_owned()),
                credential: Some(Secret::new("pass")),
            },
        ],
        ..LiveKitConfig::default()
    };
    let rooms = LiveKitRooms::new(&config).expect("configured backend");
    let handle = join(&rooms, "nat", "c20").await;
    let srflx_for = |p: &dialin_lkserver::ParticipantSnapshot, target: proto::SignalTarget| {
        p.trickled
            .iter()
            .any(|(t, c)| *t == target && c.contains("typ srflx") && c.contains("127.0.0.3"))
    };
    let p = server
        .wait_for_participant(
            "nat",
            |p| {
                p.identity == "sip_c20"
                    && srflx_for(p, proto::SignalTarget::Publisher)
                    && srflx_for(p, proto::SignalTarget::Subscriber)
                    && p.publisher_connected
                    && p.subscriber_connected
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let seen = server.participants("nat").await.unwrap();
    assert!(
        p.is_some(),
        "a srflx candidate for each peer connection, and both connected: {:?}",
        seen.iter().map(|p| &p.trickled).collect::<Vec<_>>()
    );
    drop(handle);
}

/// A phone that puts the call on hold (`sendonly` from its side, playing its hold music) is
/// shown muted in LiveKit and sends nothing into the room; resuming unmutes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_on_hold_is_muted_in_livekit_and_sends_nothing() {
    let (server, _alice, gw) = gateway_and_alice("hold").await;
    let (call, info) = dial_and_key(&gw, pcmu_from(&gw, "+33612345678"), PIN, true).await;
    let (identity, _) = identity_of(&info);
    call.play_tone(440.0, -12.0);
    let muted = |want: bool| {
        let server = &server;
        let identity = identity.clone();
        async move {
            let end = Instant::now() + 10 * SECOND;
            loop {
                let ps = server.participants("hold").await.unwrap();
                let track_muted = ps
                    .iter()
                    .find(|p| p.identity == identity)
                    .and_then(|p| p.tracks.first().map(|t| t.muted));
                if track_muted == Some(want) {
                    return true;
                }
                if Instant::now() > end {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let packets_in = || {
        let server = &server;
        let identity = identity.clone();
        async move {
            server
                .counters()
                .await
                .unwrap()
                .iter()
                .find(|c| c.identity == identity)
                .map_or(0, |c| c.packets_in)
        }
    };
    assert!(muted(false).await, "the caller's track is published, not muted");

    assert_eq!(
        call.reinvite(dialin_sip::sdp::Direction::SendOnly).await.unwrap(),
        200
    );
    assert!(muted(true).await, "LiveKit shows the held caller muted");
    // Nothing more reaches LiveKit from the held caller (a packet or two in flight).
    let before = packets_in().await;
    let t = Instant::now();
    while t.elapsed() < SECOND {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = packets_in().await - before;
    assert!(during <= 2, "{during} packets reached LiveKit while on hold");

    assert_eq!(
        call.reinvite(dialin_sip::sdp::Direction::SendRecv).await.unwrap(),
        200
    );
    assert!(muted(false).await, "resumed: unmuted");
    let resumed = packets_in().await;
    let end = Instant::now() + 5 * SECOND;
    while packets_in().await < resumed + 25 {
        assert!(Instant::now() < end, "media flows again after resuming");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    call.hangup().await.unwrap();
}

/// Audio payloads the server has received from `identity` so far.
async fn packets_from(server: &TestServer, identity: &str) -> u64 {
    server
        .counters()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.identity == identity)
        .map_or(0, |c| c.packets_in)
}

/// Waits until the server has received more than `than` audio payloads from `identity`.
async fn wait_for_packets_from(server: &TestServer, identity: &str, than: u64) -> bool {
    let deadline = Instant::now() + 10 * SECOND;
    while Instant::now() < deadline {
        if packets_from(server, identity).await > than {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Waits until the server shows `identity`'s microphone track muted (or not).
async fn wait_for_track_muted(server: &TestServer, room: &str, identity: &str, muted: bool) {
    server
        .wait_for_participant(
            room,
            |p| p.identity == identity && p.tracks.first().is_some_and(|t| t.muted == muted),
            10 * SECOND,
        )
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the server sees the track muted = {muted}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_six_mutes_the_published_track_and_nothing_is_sent_while_muted() {
    let (server, _alice, gw) = gateway_and_alice("mute-lk").await;
    let (call, info) = dial_and_key(&gw, pcmu_from(&gw, "+33612345678"), PIN, true).await;
    let (identity, _) = identity_of(&info);
    call.play_tone(440.0, -12.0);
    wait_for_track_muted(&server, "mute-lk", &identity, false).await;
    assert!(
        wait_for_packets_from(&server, &identity, 0).await,
        "the caller's audio reaches the server"
    );

    call.send_dtmf("*6", DtmfMode::Rfc4733).await.expect("keys sent");
    wait_for_track_muted(&server, "mute-lk", &identity, true).await;
    // Packets already on their way when the mute went out may still land; then nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = packets_from(&server, &identity).await;
    tokio::time::sleep(SECOND).await;
    let after = packets_from(&server, &identity).await;
    assert_eq!(before, after, "no audio is sent while muted");

    call.send_dtmf("*6", DtmfMode::Rfc4733).await.expect("keys sent");
    wait_for_track_muted(&server, "mute-lk", &identity, false).await;
    assert!(
        wait_for_packets_from(&server, &identity, after).await,
        "audio flows again once unmuted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_nine_raises_and_lowers_the_hand_as_a_participant_attribute() {
    let (server, _alice, gw) = gateway_and_alice("hands").await;
    let (call, info) = dial_and_key(&gw, pcmu_from(&gw, "+33612345678"), PIN, true).await;
    let (identity, _) = identity_of(&info);
    let hand = |raised: bool| {
        let (server, identity) = (&server, identity.clone());
        async move {
            server
                .wait_for_participant(
                    "hands",
                    |p| {
                        p.identity == identity
                            && p.attributes.get("sip.handRaised").map(String::as_str)
                                == raised.then_some("true")
                    },
                    10 * SECOND,
                )
                .await
                .unwrap()
        }
    };
    call.send_dtmf("*9", DtmfMode::Rfc4733).await.expect("keys sent");
    let p = hand(true).await.expect("sip.handRaised = true");
    assert_eq!(
        p.attributes.get("sip.callStatus").map(String::as_str),
        Some("active"),
        "the other attributes stay"
    );
    call.send_dtmf("*9", DtmfMode::Rfc4733).await.expect("keys sent");
    hand(false).await.expect("sip.handRaised removed when lowered");
}

/// The sid of `identity`'s published microphone track.
async fn track_sid(server: &TestServer, room: &str, identity: &str) -> String {
    server
        .wait_for_participant(
            room,
            |p| p.identity == identity && !p.tracks.is_empty(),
            10 * SECOND,
        )
        .await
        .unwrap()
        .and_then(|p| p.tracks.first().map(|t| t.sid.clone()))
        .expect("the caller publishes its microphone")
}

/// Waits until `call` has heard `id` since `since`.
async fn wait_to_hear(call: &Call, since: Instant, id: PromptId) -> bool {
    let prompt = prompt_8k(id);
    let deadline = Instant::now() + 10 * SECOND;
    while Instant::now() < deadline {
        if support::tone::find_clip(&call.recorded(since), &prompt, 0).is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_admin_mute_is_heard_by_the_caller_and_star_six_lifts_it() {
    let (server, _alice, gw) = gateway_and_alice("admin-mute").await;
    let (call, info) = dial_and_key(&gw, pcmu_from(&gw, "+33612345678"), PIN, true).await;
    let (identity, _) = identity_of(&info);
    let sid = track_sid(&server, "admin-mute", &identity).await;
    let t = Instant::now();
    server
        .mute_published_track("admin-mute", &identity, &sid, true)
        .await
        .unwrap()
        .expect("the track is there");
    assert!(
        wait_to_hear(&call, t, PromptId::MutedByRoom).await,
        "the caller hears \"you have been muted\""
    );
    // Allowed to publish: *6 unmutes.
    let t = Instant::now();
    call.send_dtmf("*6", DtmfMode::Rfc4733).await.expect("keys sent");
    wait_for_track_muted(&server, "admin-mute", &identity, false).await;
    assert!(wait_to_hear(&call, t, PromptId::Unmuted).await, "\"you are no longer muted\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_the_room_may_not_hear_cannot_unmute_itself() {
    let (server, _alice, gw) = gateway_and_alice("no-publish").await;
    let (call, info) = dial_and_key(&gw, pcmu_from(&gw, "+33612345678"), PIN, true).await;
    let (identity, _) = identity_of(&info);
    let sid = track_sid(&server, "no-publish", &identity).await;
    // The admin mutes the caller, then takes its right to publish away.
    let t = Instant::now();
    server
        .mute_published_track("no-publish", &identity, &sid, true)
        .await
        .unwrap()
        .expect("the track is there");
    assert!(wait_to_hear(&call, t, PromptId::MutedByRoom).await, "\"you have been muted\"");
    server
        .update_participant(proto::UpdateParticipantRequest {
            room: "no-publish".into(),
            identity: identity.clone(),
            permission: Some(proto::ParticipantPermission {
                can_publish: false,
                can_subscribe: true,
                can_publish_data: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("permission changed");
    let t = Instant::now();
    call.send_dtmf("*6", DtmfMode::Rfc4733).await.expect("keys sent");
    assert!(
        wait_to_hear(&call, t, PromptId::UnmuteNotAllowed).await,
        "the caller hears that it may not unmute itself"
    );
    let p = server
        .participants("no-publish")
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.identity == identity)
        .expect("still in the room");
    assert!(
        p.tracks.iter().all(|t| t.muted),
        "no live track after the refused unmute: {:?}",
        p.tracks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_waits_outside_the_livekit_room_until_a_host_is_there() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let gw = livekit_gateway(server.url(), SECRET).await;
    gw.create_pin_with(serde_json::json!({ "room": "lecture", "pin": PIN, "wait_for_host": true }))
        .await;
    let t0 = Instant::now();
    let (call, _) = dial_and_key(&gw, pcmu_from(&gw, "+33612345678"), PIN, false).await;
    gw.wait_for_call(10 * SECOND, |c| c["state"] == "waiting_for_host")
        .await
        .expect("the call waits for the host");
    assert!(
        wait_to_hear(&call, t0, PromptId::WaitForHost).await,
        "\"the meeting will start when the host joins\""
    );
    assert!(
        server.participants("lecture").await.unwrap().is_empty(),
        "a waiting caller is not in the LiveKit room"
    );
    // A web user (not SIP) joins: the host, by the default rule.
    let _teacher = tone_participant(&server, "lecture", "teacher").await;
    let joined = gw
        .wait_for_call(15 * SECOND, |c| c["state"] == "in_room")
        .await
        .expect("the host's arrival lets the caller in");
    let (identity, _) = identity_of(&Some(joined));
    server
        .wait_for_participant("lecture", |p| p.identity == identity, 10 * SECOND)
        .await
        .unwrap()
        .expect("the caller is in the LiveKit room");
}

/// Two calls of this node in one room with a web user: the node's hidden listener subscribes
/// to the web user's track only, each caller hears the web user and the other caller but not
/// itself, the callers' own participants are forwarded nothing, nobody in the room is told
/// about the listener, and the listener leaves with the last call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_of_one_room_share_one_hidden_listener_and_hear_each_other_through_the_node() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let alice = tone_participant(&server, "shared", "alice").await;
    let rooms = rooms_for(server.url(), SECRET);
    let mut one = join(&rooms, "shared", "s1").await;
    let mut two = join(&rooms, "shared", "s2").await;
    assert_eq!(one.others_at_join, 1, "the first caller sees alice only");
    assert_eq!(two.others_at_join, 2, "the second sees alice and the first, not the listener");

    let (heard_one, heard_two) = tokio::join!(
        exchange(&mut one, Some(440.0), Duration::from_secs(4)),
        exchange(&mut two, Some(700.0), Duration::from_secs(4)),
    );
    let rate = LIVEKIT_SAMPLE_RATE;
    for (who, heard, own, other) in [("s1", &heard_one, 440.0, 700.0), ("s2", &heard_two, 700.0, 440.0)] {
        let tail = last(heard, rate, 1.0);
        let (alice_db, other_db, own_db) = (
            median_level(tail, rate, 1000.0),
            median_level(tail, rate, other),
            median_level(tail, rate, own),
        );
        println!("{who} hears alice at {alice_db:.1}, the other caller at {other_db:.1}, itself at {own_db:.1} dBFS");
        assert!(tail.len() >= rate as usize / 2, "{who}: half a second of room audio");
        assert!(alice_db > -25.0, "{who} hears the web user ({alice_db:.1} dBFS)");
        assert!(other_db > -25.0, "{who} hears the other caller ({other_db:.1} dBFS)");
        assert!(other_db - own_db > 30.0, "{who} does not hear itself ({own_db:.1} dBFS)");
    }

    let participants = server.participants("shared").await.unwrap();
    let listeners: Vec<_> = participants.iter().filter(|p| p.hidden).collect();
    assert_eq!(listeners.len(), 1, "one hidden listener for the room: {participants:?}");
    let listener = listeners[0].identity.clone();
    assert!(listener.starts_with("sip_"), "never taken for a host: {listener}");
    assert!(listeners[0].tracks.is_empty(), "the listener publishes nothing");
    // The web user is told about the two callers, never about the listener.
    let heard_by_alice = alice.heard_from();
    assert!(heard_by_alice.contains(&"sip_s1".to_owned()) && heard_by_alice.contains(&"sip_s2".to_owned()));
    let room_heard = alice.received_audio_from("sip_s1");
    assert!(
        median_level(last(&room_heard, SAMPLE_RATE, 1.0), SAMPLE_RATE, 440.0) > -25.0,
        "the room still hears each caller's own track"
    );

    let counters = server.counters().await.unwrap();
    let of = |id: &str| counters.iter().find(|c| c.identity == id).cloned().unwrap_or_default();
    let (c1, c2, l, a) = (of("sip_s1"), of("sip_s2"), of(&listener), of("alice"));
    println!(
        "forwarded to: s1 {}, s2 {}, listener {}; alice sent {}; the callers sent {} and {}",
        c1.packets_out, c2.packets_out, l.packets_out, a.packets_in, c1.packets_in, c2.packets_in
    );
    assert_eq!(c1.packets_out + c2.packets_out, 0, "the callers' participants subscribe to nothing");
    assert!(c1.packets_in > 100 && c2.packets_in > 100, "each caller publishes its track");
    assert!(l.packets_out > 100, "the listener receives the web user's track");
    assert!(
        l.packets_out <= a.packets_in,
        "and only it: {} forwarded, alice sent {}",
        l.packets_out,
        a.packets_in
    );

    drop(one);
    drop(two);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = server.participants("shared").await.unwrap();
        if left.iter().all(|p| p.synthetic) {
            break;
        }
        assert!(Instant::now() < deadline, "the listener leaves with the last call: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The room's listener is told to join again (its peer connections lost): it comes back as a
/// new participant session, subscribes again, and the calls it mixes hear the web user again
/// without being ended; they heard each other all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_asked_to_reconnect_joins_again_and_its_calls_hear_the_room_again() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let _alice = tone_participant(&server, "relisten", "alice").await;
    let rooms = rooms_for(server.url(), SECRET);
    let mut one = join(&rooms, "relisten", "r1").await;
    let mut two = join(&rooms, "relisten", "r2").await;
    let _ = tokio::join!(
        exchange(&mut one, Some(440.0), Duration::from_secs(2)),
        exchange(&mut two, Some(700.0), Duration::from_secs(2)),
    );
    let listener = server
        .participants("relisten")
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.hidden)
        .expect("the room's listener");
    assert!(server.kill_peer_connection(&listener.identity).await.unwrap());
    let again = server
        .wait_for_participant(
            "relisten",
            |p| p.hidden && p.identity == listener.identity && p.sid != listener.sid && p.subscriber_connected,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(again.is_some(), "the listener joins again as a new participant session");
    // Exchange until the web user is heard again (the new subscription takes a moment).
    let rate = LIVEKIT_SAMPLE_RATE;
    let (heard_one, heard_two) = exchange_pair_until((&mut one, 440.0), (&mut two, 700.0), |h1, _| {
        median_level(h1, rate, 1000.0) > -25.0
    })
    .await;
    assert!(median_level(&heard_one, rate, 1000.0) > -25.0, "the first caller hears the web user again");
    assert!(median_level(&heard_two, rate, 1000.0) > -25.0, "so does the second");
    assert!(median_level(&heard_one, rate, 700.0) > -25.0, "and they hear each other");
    for handle in [&mut one, &mut two] {
        while let Ok(ev) = handle.events.try_recv() {
            assert!(
                !matches!(ev, RoomEvent::Closed | RoomEvent::Removed),
                "no call ended: {ev:?}"
            );
        }
    }
    let counters = server.counters().await.unwrap();
    let forwarded: u64 = counters
        .iter()
        .filter(|c| c.identity == "sip_r1" || c.identity == "sip_r2")
        .map(|c| c.packets_out)
        .sum();
    assert_eq!(forwarded, 0, "the calls still subscribe to nothing");
}

/// A G.711 caller and a wideband caller of this node in one room: each rate has its own
/// listener, which subscribes to the other rate's caller, so the two hear each other through
/// LiveKit; a caller who mutes is no longer heard by the other, and hears again once unmuted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_of_two_rates_hear_each_other_and_a_muted_caller_is_not_heard() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let join_at = |call: &'static str, rate: u32| {
        let rooms = &rooms;
        async move {
            tokio::time::timeout(Duration::from_secs(10), rooms.join(request_at("rates", call, rate)))
                .await
                .expect("join within 10 s")
                .expect("join succeeds")
        }
    };
    let mut narrow = join_at("n1", NARROWBAND_SAMPLE_RATE).await;
    let mut wide = join_at("w1", LIVEKIT_SAMPLE_RATE).await;
    assert_eq!(narrow.sample_rate, NARROWBAND_SAMPLE_RATE);
    assert_eq!(wide.sample_rate, LIVEKIT_SAMPLE_RATE);
    let listeners = server
        .participants("rates")
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.hidden)
        .count();
    assert_eq!(listeners, 2, "one listener per rate");

    // Exchange until each hears the other (the subscriptions take a moment).
    let (nb, wb) = (NARROWBAND_SAMPLE_RATE, LIVEKIT_SAMPLE_RATE);
    let (hn, hw) = exchange_pair_until((&mut narrow, 440.0), (&mut wide, 1000.0), |hn, hw| {
        median_level(hn, nb, 1000.0) > -25.0 && median_level(hw, wb, 440.0) > -25.0
    })
    .await;
    let (n_hears, w_hears) = (median_level(&hn, nb, 1000.0), median_level(&hw, wb, 440.0));
    println!("narrowband hears the wideband caller at {n_hears:.1}, wideband hears narrowband at {w_hears:.1} dBFS");
    assert!(n_hears > -25.0, "the G.711 caller hears the wideband one ({n_hears:.1} dBFS)");
    assert!(w_hears > -25.0, "the wideband caller hears the G.711 one ({w_hears:.1} dBFS)");

    // The wideband caller mutes: the other stops hearing it.
    wide.mute.as_ref().expect("a LiveKit handle mutes").send(true).await.unwrap();
    let (hn, _) = exchange_pair_until((&mut narrow, 440.0), (&mut wide, 1000.0), |hn, _| {
        median_level(hn, nb, 1000.0) < -50.0
    })
    .await;
    let muted_level = median_level(&hn, nb, 1000.0);
    assert!(muted_level < -50.0, "a muted caller is not heard ({muted_level:.1} dBFS)");
    wide.mute.as_ref().expect("a LiveKit handle mutes").send(false).await.unwrap();
    let (hn, _) = exchange_pair_until((&mut narrow, 440.0), (&mut wide, 1000.0), |hn, _| {
        median_level(hn, nb, 1000.0) > -25.0
    })
    .await;
    let again = median_level(&hn, nb, 1000.0);
    assert!(again > -25.0, "heard again once unmuted ({again:.1} dBFS)");
}

/// Two callers of this node in one room, muting: the one who mutes is no longer heard by the
/// other through the node's mix either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_caller_is_not_heard_by_the_other_callers_of_its_node() {
    let server = TestServer::start(KEY, SECRET).await.unwrap();
    let rooms = rooms_for(server.url(), SECRET);
    let mut one = join(&rooms, "mutes", "m1").await;
    let mut two = join(&rooms, "mutes", "m2").await;
    let (_, heard) = tokio::join!(
        exchange(&mut one, Some(440.0), Duration::from_secs(2)),
        exchange(&mut two, Some(700.0), Duration::from_secs(2)),
    );
    let before = median_level(last(&heard, LIVEKIT_SAMPLE_RATE, 1.0), LIVEKIT_SAMPLE_RATE, 440.0);
    assert!(before > -25.0, "the second caller hears the first ({before:.1} dBFS)");
    one.mute.as_ref().expect("a LiveKit handle mutes").send(true).await.unwrap();
    let rate = LIVEKIT_SAMPLE_RATE;
    let (_, heard) = exchange_pair_until((&mut one, 440.0), (&mut two, 700.0), |_, h2| {
        median_level(h2, rate, 440.0) < -50.0
    })
    .await;
    let after = median_level(&heard, rate, 440.0);
    println!("the first caller heard at {before:.1} dBFS, then muted at {after:.1} dBFS");
    assert!(after < -50.0, "a muted caller is not heard ({after:.1} dBFS)");
}

/// Plays `hz_a` on `a` and `hz_b` on `b`, a second at a time, until `done` holds for what
/// each heard in that second (at most 10 s); returns that last second of each.
async fn exchange_pair_until(
    (a, hz_a): (&mut RoomHandle, f64),
    (b, hz_b): (&mut RoomHandle, f64),
    done: impl Fn(&[i16], &[i16]) -> bool,
) -> (Vec<i16>, Vec<i16>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ha, hb) = tokio::join!(
            exchange(a, Some(hz_a), Duration::from_secs(1)),
            exchange(b, Some(hz_b), Duration::from_secs(1)),
        );
        if done(&ha, &hb) || Instant::now() > deadline {
            return (ha, hb);
        }
    }
}

/// A web user in `room` publishing a 1000 Hz tone at 0.3 of full scale.
async fn tone_participant(server: &TestServer, room: &str, identity: &str) -> SyntheticParticipant {
    server
        .add_synthetic_participant(
            room,
            identity,
            Signal::Tone {
                hz: 1000.0,
                amplitude: 0.3,
            },
        )
        .await
        .unwrap()
}
