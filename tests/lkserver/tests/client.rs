//! A real WebRTC client (str0m + livekit-protocol, the LiveKit SDK join sequence) against the
//! stand-in server.
mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{tail, token, tone_energy_fraction, ClientOptions, TestClient, API_KEY, API_SECRET};
use dialin_lkserver::proto::signal_request::Message as Req;
use dialin_lkserver::proto::signal_response::Message as Resp;
use dialin_lkserver::{proto, EngineConfig, ParticipantKind, ServerOptions, Signal, TestServer};
use livekit_api::access_token::{AccessToken, VideoGrants};

/// Generous: a loaded CI machine runs these in a debug build.
const SECS: Duration = Duration::from_secs(30);

fn opts(server: &TestServer, room: &str, identity: &str, tone: Option<f64>) -> ClientOptions {
    ClientOptions {
        url: server.url().into(),
        token: token(room, identity),
        publish_tone: tone,
        ping: true,
        auto_resume: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_and_synthetic_participant_hear_each_others_tones() {
    let _media = common::media_lock().await;
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let synth = server
        .add_synthetic_participant(
            "r",
            "synth",
            Signal::Tone {
                hz: 1000.0,
                amplitude: 0.3,
            },
        )
        .await
        .unwrap();
    let client = TestClient::connect(opts(&server, "r", "gw", Some(440.0))).await;

    assert!(
        client
            .wait(SECS, |s| s.publisher_connected && s.subscriber_connected)
            .await,
        "both PCs connect"
    );
    assert!(
        client.wait(SECS, |s| s.audio.len() > 48_000).await,
        "client receives a second of audio"
    );
    assert!(
        common::eventually(SECS, || synth.received_audio_from("gw").len() > 48_000).await,
        "synthetic receives the client's audio"
    );

    let at_client = client.state().audio.clone();
    let at_synth = synth.received_audio_from("gw");
    let c1000 = tone_energy_fraction(tail(&at_client, 0.5), 48_000.0, 1000.0);
    let c440 = tone_energy_fraction(tail(&at_client, 0.5), 48_000.0, 440.0);
    let s440 = tone_energy_fraction(tail(&at_synth, 0.5), 48_000.0, 440.0);
    let s1000 = tone_energy_fraction(tail(&at_synth, 0.5), 48_000.0, 1000.0);
    println!("client hears 1000 Hz {c1000:.3} (440 Hz {c440:.3}); synthetic hears 440 Hz {s440:.3} (1000 Hz {s1000:.3})");
    assert!(c1000 > 0.5 && c440 < 0.05);
    assert!(s440 > 0.5 && s1000 < 0.05);

    assert!(
        client
            .wait(SECS, |s| s.subscriber_channels.len() >= 3)
            .await,
        "subscriber data channels open"
    );
    let (tp, channels) = {
        let st = client.state();
        (
            st.track_published.clone().expect("TrackPublished"),
            st.subscriber_channels.clone(),
        )
    };
    assert_eq!(tp.cid, "mic-1");
    let track = tp.track.as_ref().unwrap();
    assert!(track.sid.starts_with("TR_"));
    assert_eq!(track.mime_type, "audio/opus");
    assert_eq!(track.source, proto::TrackSource::Microphone as i32);
    for label in ["_reliable", "_lossy", "_data_track"] {
        assert!(
            channels.iter().any(|l| l == label),
            "server opens {label} on the subscriber PC"
        );
    }
    let counters = server.counters().await.unwrap();
    let gw = counters.iter().find(|c| c.identity == "gw").unwrap();
    assert!(gw.packets_in > 40 && gw.packets_out > 40, "{gw:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_response_describes_room_participant_and_server() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let _synth = server
        .add_synthetic_participant("r", "synth", Signal::Silence)
        .await
        .unwrap();
    let t = AccessToken::with_api_key(API_KEY, API_SECRET)
        .with_identity("sip_1")
        .with_name("Phone ••••1234")
        .with_kind("sip")
        .with_metadata("{\"m\":1}")
        .with_attributes([("sip.callID", "abc"), ("sip.phoneNumber", "••••1234")])
        .with_grants(VideoGrants {
            room_join: true,
            room: "r".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    let client = TestClient::connect(ClientOptions {
        url: server.url().into(),
        token: t,
        publish_tone: None,
        ping: false,
        auto_resume: false,
    })
    .await;
    assert!(client.wait(SECS, |s| s.join.is_some()).await);
    let (first, j) = {
        let st = client.state();
        (st.messages.first().cloned(), st.join.clone().unwrap())
    };
    assert!(
        matches!(first, Some(Resp::Join(_))),
        "JoinResponse comes first"
    );
    let room = j.room.unwrap();
    assert_eq!(room.name, "r");
    assert!(room.sid.starts_with("RM_"));
    let me = j.participant.unwrap();
    assert!(me.sid.starts_with("PA_"));
    assert_eq!(me.identity, "sip_1");
    assert_eq!(me.name, "Phone ••••1234");
    assert_eq!(me.kind, ParticipantKind::Sip as i32);
    assert_eq!(me.metadata, "{\"m\":1}");
    assert_eq!(
        me.attributes.get("sip.callID").map(String::as_str),
        Some("abc")
    );
    assert_eq!(j.other_participants.len(), 1);
    assert_eq!(j.other_participants[0].identity, "synth");
    assert_eq!(j.other_participants[0].tracks.len(), 1);
    assert!(j.subscriber_primary && j.fast_publish);
    assert!(j.ping_interval > 0 && j.ping_timeout > j.ping_interval);
    let info = j.server_info.unwrap();
    assert_eq!(info.protocol, 17);
    assert!(!j.server_version.is_empty());
    let snap = server
        .wait_for_participant("r", |p| p.identity == "sip_1", SECS)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.kind, ParticipantKind::Sip);
    assert_eq!(
        snap.attributes.get("sip.phoneNumber").map(String::as_str),
        Some("••••1234")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_req_is_answered_with_pong_resp_and_legacy_ping_with_pong() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let client = TestClient::connect(ClientOptions {
        ping: false,
        ..opts(&server, "r", "gw", None)
    })
    .await;
    assert!(client.wait(SECS, |s| s.join.is_some()).await);
    client.send(Req::PingReq(proto::Ping {
        timestamp: 12345,
        rtt: 7,
    }));
    client.send(Req::Ping(999));
    assert!(client.wait(SECS, |s| s.messages.iter().any(|m| matches!(m, Resp::PongResp(p) if p.last_ping_timestamp == 12345 && p.timestamp > 0))).await);
    assert!(
        client
            .wait(SECS, |s| s
                .messages
                .iter()
                .any(|m| matches!(m, Resp::Pong(t) if *t > 0)))
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_past_ping_timeout_closes_the_session_and_grace_removes_the_participant() {
    let mut o = ServerOptions::new(API_KEY, API_SECRET);
    o.engine = EngineConfig {
        ping_interval: Duration::from_secs(1),
        ping_timeout: Duration::from_secs(3),
        resume_grace: Duration::from_millis(500),
        ..Default::default()
    };
    let server = TestServer::start_with(o).await.unwrap();
    let client = TestClient::connect(ClientOptions {
        ping: false,
        auto_resume: false,
        ..opts(&server, "r", "quiet", None)
    })
    .await;
    assert!(client.wait(SECS, |s| s.join.is_some()).await);
    assert!(
        client.wait(SECS, |s| s.ended).await,
        "signal connection closed after the ping timeout"
    );
    let mut empty = false;
    for _ in 0..100 {
        if server.participants("r").await.unwrap().is_empty() {
            empty = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(empty, "participant removed once the resume grace expired");

    // A pinging client stays.
    let pinger = TestClient::connect(opts(&server, "r", "pinger", None)).await;
    assert!(pinger.wait(SECS, |s| s.join.is_some()).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !pinger.state().ended,
        "pinging every second keeps a 3 s timeout at bay"
    );
    assert_eq!(server.participants("r").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_with_sid_resumes_the_same_participant_and_media_keeps_flowing() {
    let _media = common::media_lock().await;
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let synth = server
        .add_synthetic_participant(
            "r",
            "synth",
            Signal::Tone {
                hz: 1000.0,
                amplitude: 0.3,
            },
        )
        .await
        .unwrap();
    let client = TestClient::connect(opts(&server, "r", "gw", Some(440.0))).await;
    assert!(
        client
            .wait(SECS, |s| s.publisher_connected && s.subscriber_connected)
            .await
    );
    let sid = client.sid();
    assert!(common::eventually(SECS, || synth.received_audio_from("gw").len() > 24_000).await);

    assert!(server.drop_websocket("gw").await.unwrap());
    assert!(
        client
            .wait(SECS, |s| s
                .messages
                .iter()
                .any(|m| matches!(m, Resp::Reconnect(_))))
            .await,
        "ReconnectResponse after resume"
    );
    assert_eq!(client.state().signal_connections, 2);
    let p = server
        .wait_for_participant("r", |p| p.identity == "gw" && p.signal_connected, SECS)
        .await
        .unwrap()
        .expect("resumed");
    assert_eq!(p.sid, sid, "same participant");
    assert_eq!(
        server.participants("r").await.unwrap().len(),
        2,
        "no duplicate participant"
    );

    let heard = synth.received_audio_from("gw").len();
    let client_heard = client.state().audio.len();
    assert!(
        common::eventually(SECS, || synth.received_audio_from("gw").len()
            > heard + 48_000)
        .await,
        "client audio still forwarded"
    );
    assert!(
        client
            .wait(SECS, |s| s.audio.len() > client_heard + 48_000)
            .await,
        "synthetic audio still reaches the client"
    );
    let s440 = tone_energy_fraction(tail(&synth.received_audio_from("gw"), 0.5), 48_000.0, 440.0);
    assert!(s440 > 0.5, "{s440}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_of_an_unknown_session_is_told_to_reconnect() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let url = common::rtc_url(
        server.url(),
        &token("r", "gw"),
        "&reconnect=1&sid=PA_nosuch",
    );
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures_util::StreamExt;
    use prost::Message as _;
    let (_, mut rx) = ws.split();
    let first = tokio::time::timeout(SECS, rx.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let resp = proto::SignalResponse::decode(first.into_data().as_ref()).unwrap();
    match resp.message {
        Some(Resp::Leave(l)) => {
            assert_eq!(l.action, proto::leave_request::Action::Reconnect as i32)
        }
        other => panic!("expected Leave, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_room_sends_leave_with_room_deleted_to_every_client() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let a = TestClient::connect(opts(&server, "r", "a", None)).await;
    let b = TestClient::connect(opts(&server, "r", "b", None)).await;
    assert!(a.wait(SECS, |s| s.join.is_some()).await && b.wait(SECS, |s| s.join.is_some()).await);
    assert!(server.close_room("r").await.unwrap());
    for c in [&a, &b] {
        assert!(c.wait(SECS, |s| s.ended).await);
        assert_eq!(
            c.count(|m| matches!(m, Resp::Leave(l) if l.reason == proto::DisconnectReason::RoomDeleted as i32)),
            1
        );
    }
    assert!(server.participants("r").await.unwrap().is_empty());
    assert!(
        !server.close_room("r").await.unwrap(),
        "closing it again finds nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_participant_gets_leave_and_the_others_see_it_disconnected() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let a = TestClient::connect(opts(&server, "r", "a", None)).await;
    assert!(a.wait(SECS, |s| s.join.is_some()).await);
    let b = TestClient::connect(opts(&server, "r", "b", None)).await;
    assert!(b.wait(SECS, |s| s.join.is_some()).await);
    assert!(
        a.wait(SECS, |s| s.messages.iter().any(
            |m| matches!(m, Resp::Update(u) if u.participants.iter().any(|p| p.identity == "b"))
        ))
        .await,
        "a told that b joined"
    );
    assert!(server.remove_participant("r", "b").await.unwrap());
    assert!(b.wait(SECS, |s| s.ended).await);
    assert_eq!(b.count(|m| matches!(m, Resp::Leave(l) if l.reason == proto::DisconnectReason::ParticipantRemoved as i32)), 1);
    assert!(a.wait(SECS, |s| s.messages.iter().any(|m| matches!(m, Resp::Update(u) if u.participants.iter().any(|p| p.identity == "b" && p.state == proto::participant_info::State::Disconnected as i32)))).await);
    assert!(a.wait(SECS, |s| s.messages.iter().any(|m| matches!(m, Resp::RoomUpdate(r) if r.room.as_ref().is_some_and(|r| r.num_participants == 1)))).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leave_removes_the_participant() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let a = TestClient::connect(opts(&server, "r", "a", None)).await;
    assert!(a.wait(SECS, |s| s.join.is_some()).await);
    a.send(Req::Leave(proto::LeaveRequest {
        reason: proto::DisconnectReason::ClientInitiated as i32,
        ..Default::default()
    }));
    let mut gone = false;
    for _ in 0..100 {
        if server.participants("r").await.unwrap().is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_attribute_updates_reach_the_server_and_the_others() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let a = TestClient::connect(opts(&server, "r", "a", None)).await;
    let b = TestClient::connect(opts(&server, "r", "b", None)).await;
    assert!(a.wait(SECS, |s| s.join.is_some()).await && b.wait(SECS, |s| s.join.is_some()).await);
    a.send(Req::UpdateMetadata(proto::UpdateParticipantMetadata {
        name: "Alice".into(),
        attributes: HashMap::from([("sip.callStatus".to_string(), "active".to_string())]),
        request_id: 5,
        ..Default::default()
    }));
    let p = server
        .wait_for_participant("r", |p| p.identity == "a" && p.name == "Alice", SECS)
        .await
        .unwrap()
        .expect("updated");
    assert_eq!(
        p.attributes.get("sip.callStatus").map(String::as_str),
        Some("active")
    );
    assert!(b.wait(SECS, |s| s.messages.iter().any(|m| matches!(m, Resp::Update(u) if u.participants.iter().any(|p| p.identity == "a" && p.attributes.get("sip.callStatus").is_some_and(|v| v == "active"))))).await);
    assert!(
        a.wait(SECS, |s| s.messages.iter().any(
            |m| matches!(m, Resp::RequestResponse(r) if r.request_id == 5 && r.reason == 0)
        ))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_packets_are_stamped_recorded_and_forwarded_both_ways() {
    let _media = common::media_lock().await;
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let synth = server
        .add_synthetic_participant("r", "synth", Signal::Silence)
        .await
        .unwrap();
    let client = TestClient::connect(opts(&server, "r", "gw", None)).await;
    assert!(
        client
            .wait(SECS, |s| s.publisher_connected
                && s.subscriber_channels.iter().any(|l| l == "_reliable"))
            .await
    );
    // Channels on the client's publisher PC open a moment after DTLS.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dtmf = proto::DataPacket {
        value: Some(proto::data_packet::Value::SipDtmf(proto::SipDtmf {
            code: 5,
            digit: "5".into(),
        })),
        ..Default::default()
    };
    client.send_data(dtmf, false);
    assert!(
        common::eventually(SECS, || !synth.received_data().is_empty()).await,
        "synthetic receives the DTMF packet"
    );
    let got = synth.received_data().remove(0);
    assert_eq!(got.participant_identity, "gw", "server stamps the sender");
    assert!(matches!(got.value, Some(proto::data_packet::Value::SipDtmf(ref d)) if d.digit == "5"));
    assert_eq!(server.data_packets("r").await.unwrap().len(), 1);

    let user = proto::DataPacket {
        value: Some(proto::data_packet::Value::User(proto::UserPacket {
            payload: b"hello".to_vec(),
            topic: Some("t".into()),
            ..Default::default()
        })),
        ..Default::default()
    };
    assert!(synth.send_data(user, false).await.unwrap());
    assert!(
        client
            .wait(SECS, |s| s
                .data
                .iter()
                .any(|p| p.participant_identity == "synth"))
            .await,
        "client receives it on its subscriber PC"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_peer_connection_asks_the_client_for_a_full_reconnect() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let client = TestClient::connect(opts(&server, "r", "gw", None)).await;
    assert!(client.wait(SECS, |s| s.subscriber_connected).await);
    assert!(server.kill_peer_connection("gw").await.unwrap());
    assert!(client.wait(SECS, |s| s.ended).await);
    assert_eq!(client.count(|m| matches!(m, Resp::Leave(l) if l.action == proto::leave_request::Action::Reconnect as i32)), 1);
    assert!(server.participants("r").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_join_with_the_same_identity_replaces_the_first() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let a1 = TestClient::connect(opts(&server, "r", "a", None)).await;
    assert!(a1.wait(SECS, |s| s.join.is_some()).await);
    let a2 = TestClient::connect(opts(&server, "r", "a", None)).await;
    assert!(a2.wait(SECS, |s| s.join.is_some()).await);
    assert!(a1.wait(SECS, |s| s.ended).await);
    assert_eq!(a1.count(|m| matches!(m, Resp::Leave(l) if l.reason == proto::DisconnectReason::DuplicateIdentity as i32)), 1);
    let list = server.participants("r").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].sid, a2.sid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_real_clients_hear_each_other_and_a_late_joiner_gets_existing_tracks() {
    let _media = common::media_lock().await;
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let a = TestClient::connect(opts(&server, "r", "a", Some(440.0))).await;
    assert!(a.wait(SECS, |s| s.publisher_connected).await);
    server
        .wait_for_participant("r", |p| p.identity == "a" && !p.tracks.is_empty(), SECS)
        .await
        .unwrap()
        .expect("a publishes");
    // b joins after a's track is live: it must be in b's first subscriber offer.
    let b = TestClient::connect(opts(&server, "r", "b", Some(1000.0))).await;
    assert!(a.wait(SECS, |s| s.audio.len() > 48_000).await, "a hears b");
    assert!(b.wait(SECS, |s| s.audio.len() > 48_000).await, "b hears a");
    let at_a = a.state().audio.clone();
    let at_b = b.state().audio.clone();
    let a1000 = tone_energy_fraction(tail(&at_a, 0.5), 48_000.0, 1000.0);
    let b440 = tone_energy_fraction(tail(&at_b, 0.5), 48_000.0, 440.0);
    println!("client a hears 1000 Hz {a1000:.3}; client b hears 440 Hz {b440:.3}");
    assert!(a1000 > 0.5 && b440 > 0.5);
    let b_offers = b.count(|m| matches!(m, Resp::Offer(sd) if sd.mid_to_track_id.len() == 1));
    assert!(b_offers >= 1, "b's subscriber offer carries a's track");

    // When b leaves, a gets a new subscriber offer that stops b's m-line.
    let offers_before = a.count(|m| matches!(m, Resp::Offer(_)));
    b.send(Req::Leave(proto::LeaveRequest {
        reason: proto::DisconnectReason::ClientInitiated as i32,
        ..Default::default()
    }));
    b.stop();
    assert!(
        a.wait(SECS, |s| s
            .messages
            .iter()
            .filter(|m| matches!(m, Resp::Offer(_)))
            .count()
            > offers_before)
            .await,
        "renegotiation after unpublish"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_media_stops_audio_and_lifting_it_lets_it_resume() {
    let _media = common::media_lock().await;
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let synth = server
        .add_synthetic_participant(
            "r",
            "synth",
            Signal::Tone {
                hz: 1000.0,
                amplitude: 0.3,
            },
        )
        .await
        .unwrap();
    let client = TestClient::connect(opts(&server, "r", "gw", Some(440.0))).await;
    assert!(client.wait(SECS, |s| s.audio.len() > 24_000).await);
    assert!(server.blackhole_media("gw", true).await.unwrap());
    let dropped = || async {
        server
            .counters()
            .await
            .unwrap()
            .iter()
            .find(|c| c.identity == "gw")
            .map(|c| c.datagrams_blackholed)
            .unwrap_or(0)
    };
    // What the server receives from the client is dropped on arrival: the synthetic
    // participant stops hearing it at once (give in-flight frames 100 ms).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s0 = synth.received_audio_from("gw").len();
    let d0 = dropped().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        synth.received_audio_from("gw").len(),
        s0,
        "no audio from the client is forwarded"
    );
    assert!(
        dropped().await > d0 + 20,
        "the client's datagrams (and those to it) are dropped"
    );
    let c0 = client.state().audio.len();
    assert!(server.blackhole_media("gw", false).await.unwrap());
    assert!(
        client.wait(SECS, |s| s.audio.len() > c0 + 24_000).await,
        "audio flows to the client again"
    );
    assert!(
        common::eventually(SECS, || synth.received_audio_from("gw").len() > s0 + 24_000).await,
        "and from it"
    );
    assert!(
        !client.state().ended,
        "the signal connection was never touched"
    );
}

/// Speaker detection: a participant playing a tone is announced as an active speaker with a
/// quantized level, and as inactive (level 0) once it falls silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speakers_changed_announces_who_speaks_and_who_stopped() {
    let _media = common::media_lock().await;
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let alice = server
        .add_synthetic_participant(
            "speakers",
            "alice",
            Signal::Tone {
                hz: 440.0,
                amplitude: 0.3,
            },
        )
        .await
        .unwrap();
    let client = TestClient::connect(opts(&server, "speakers", "listener", None)).await;
    let sid = alice.sid().to_owned();
    let speaking = |st: &common::ClientState, active: bool| {
        st.messages.iter().any(|m| match m {
            Resp::SpeakersChanged(sc) => sc
                .speakers
                .iter()
                .any(|s| s.sid == sid && s.active == active),
            _ => false,
        })
    };
    assert!(
        client.wait(Duration::from_secs(5), |st| speaking(st, true)).await,
        "alice is announced as speaking"
    );
    let level = client
        .state()
        .messages
        .iter()
        .find_map(|m| match m {
            Resp::SpeakersChanged(sc) => sc.speakers.iter().find(|s| s.sid == sid).map(|s| s.level),
            _ => None,
        })
        .expect("alice's level");
    // A sine of peak 0.3 is 0.21 RMS, -13.5 dBov; quantized up to eighths.
    assert_eq!(level, 0.25);
    assert!(alice.set_signal(Signal::Silence).await.unwrap());
    assert!(
        client.wait(Duration::from_secs(5), |st| speaking(st, false)).await,
        "alice is announced as no longer speaking"
    );
}
