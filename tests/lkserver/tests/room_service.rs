//! LiveKit's RoomService over Twirp, as a server SDK or `curl` calls it: JSON and protobuf
//! bodies, livekit-server's refusals, and what an admin's mute or permission change does to a
//! connected client.
mod common;

use std::time::Duration;

use common::{token, ClientOptions, TestClient, API_KEY, API_SECRET};
use dialin_lkserver::proto::signal_request::Message as Req;
use dialin_lkserver::proto::signal_response::Message as Resp;
use dialin_lkserver::{proto, EngineConfig, ServerOptions, Signal, TestServer};
use livekit_api::access_token::{AccessToken, VideoGrants};
use prost::Message as _;
use serde_json::{json, Value};

const SECS: Duration = Duration::from_secs(30);
const JSON: &str = "application/json";
const PROTOBUF: &str = "application/protobuf";

struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn post(
    server: &TestServer,
    method: &str,
    content_type: &str,
    authorization: Option<String>,
    body: Vec<u8>,
) -> Reply {
    let url = format!("{}/twirp/livekit.RoomService/{method}", server.http_url());
    let mut req = reqwest::Client::new()
        .post(url)
        .header("Content-Type", content_type)
        .body(body);
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let resp = req.send().await.expect("HTTP exchange");
    Reply {
        status: resp.status().as_u16(),
        content_type: resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

async fn post_json(server: &TestServer, method: &str, room: &str, body: Value) -> Reply {
    let bearer = format!("Bearer {}", server.admin_token(room).unwrap());
    post(
        server,
        method,
        JSON,
        Some(bearer),
        body.to_string().into_bytes(),
    )
    .await
}

fn client(server: &TestServer, room: &str, identity: &str) -> ClientOptions {
    ClientOptions {
        url: server.url().into(),
        token: token(room, identity),
        publish_tone: None,
        ping: true,
        auto_resume: false,
    }
}

/// Join `identity` and announce a microphone track (no media is sent: the track stays
/// pending, which is enough for a mute). Returns the client and the track's sid.
async fn join_with_track(server: &TestServer, room: &str, identity: &str) -> (TestClient, String) {
    let c = TestClient::connect(client(server, room, identity)).await;
    assert!(c.wait(SECS, |s| s.join.is_some()).await, "joined");
    c.send(Req::AddTrack(proto::AddTrackRequest {
        cid: "mic".into(),
        r#type: proto::TrackType::Audio as i32,
        source: proto::TrackSource::Microphone as i32,
        ..Default::default()
    }));
    let published = |m: &Resp| matches!(m, Resp::TrackPublished(t) if t.cid == "mic");
    assert!(
        c.wait(SECS, |s| s.messages.iter().any(published)).await,
        "TrackPublished"
    );
    let sid = c
        .state()
        .messages
        .iter()
        .find_map(|m| match m {
            Resp::TrackPublished(t) if t.cid == "mic" => t.track.as_ref().map(|t| t.sid.clone()),
            _ => None,
        })
        .unwrap();
    (c, sid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_participants_answers_in_json_with_proto_names_and_in_protobuf() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    server
        .add_synthetic_participant("r", "alice", Signal::Silence)
        .await
        .unwrap();
    server
        .update_participant(proto::UpdateParticipantRequest {
            room: "r".into(),
            identity: "alice".into(),
            attributes: [("sip.callID".to_owned(), "c1".to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let reply = post_json(&server, "ListParticipants", "r", json!({ "room": "r" })).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.content_type, JSON);
    let v = reply.json();
    let alice = &v["participants"][0];
    assert_eq!(alice["identity"], "alice");
    assert_eq!(alice["attributes"]["sip.callID"], "c1");
    assert!(alice["sid"].as_str().unwrap().starts_with("PA_"));
    assert_eq!(alice["is_publisher"], true, "proto field names: {v}");
    assert_eq!(alice["tracks"][0]["mime_type"], "audio/opus");
    assert_eq!(alice["tracks"][0]["source"], "MICROPHONE");
    assert_eq!(alice["permission"]["can_publish"], true);

    let body = proto::ListParticipantsRequest { room: "r".into() }.encode_to_vec();
    let bearer = format!("Bearer {}", server.admin_token("r").unwrap());
    let reply = post(&server, "ListParticipants", PROTOBUF, Some(bearer), body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, PROTOBUF);
    let list = proto::ListParticipantsResponse::decode(reply.body.as_slice()).unwrap();
    assert_eq!(list.participants.len(), 1);
    assert_eq!(list.participants[0].identity, "alice");
    assert_eq!(list.participants[0].attributes["sip.callID"], "c1");
    assert_eq!(list.participants[0].tracks.len(), 1);

    // As livekit-server's single-node store: a room nobody is in lists nobody.
    let reply = post_json(
        &server,
        "ListParticipants",
        "empty",
        json!({ "room": "empty" }),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_room_admin_on_that_room_or_with_a_bad_token_are_refused() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let body = || json!({ "room": "r" }).to_string().into_bytes();
    let unauthenticated = |r: &Reply| {
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["code"], "unauthenticated");
        assert_eq!(r.json()["msg"], "permissions denied");
    };

    // No token at all: Twirp's answer, JSON.
    unauthenticated(&post(&server, "ListParticipants", JSON, None, body()).await);
    // roomAdmin, but for another room.
    let other = format!("Bearer {}", server.admin_token("other").unwrap());
    unauthenticated(&post(&server, "ListParticipants", JSON, Some(other), body()).await);
    // A participant's token (roomJoin, no roomAdmin).
    let join = format!("Bearer {}", token("r", "bob"));
    unauthenticated(&post(&server, "ListParticipants", JSON, Some(join), body()).await);

    // A token signed with another secret: the API-key middleware answers in plain text.
    let forged = AccessToken::with_api_key(API_KEY, "not-the-secret")
        .with_grants(VideoGrants {
            room_admin: true,
            room: "r".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    let r = post(
        &server,
        "ListParticipants",
        JSON,
        Some(format!("Bearer {forged}")),
        body(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.text().starts_with("invalid authorization token"),
        "{}",
        r.text()
    );
    let r = post(
        &server,
        "ListParticipants",
        JSON,
        Some("Basic abc".into()),
        body(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("Must start with Bearer"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twirp_routing_and_decoding_errors() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let bearer = || Some(format!("Bearer {}", server.admin_token("r").unwrap()));

    let r = post(
        &server,
        "ListParticipants",
        "text/plain",
        bearer(),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (404, json!("bad_route"))
    );
    let r = post(&server, "NoSuchMethod", JSON, bearer(), b"{}".to_vec()).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (404, json!("bad_route"))
    );
    let r = post(&server, "DeleteRoom", JSON, bearer(), b"{}".to_vec()).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (501, json!("unimplemented"))
    );
    let r = post(&server, "ListParticipants", JSON, bearer(), b"{".to_vec()).await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, json!("malformed"))
    );
    let r = post(
        &server,
        "ListParticipants",
        PROTOBUF,
        bearer(),
        vec![0xff, 0xff],
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, json!("malformed"))
    );

    let url = format!(
        "{}/twirp/livekit.RoomService/ListParticipants",
        server.http_url()
    );
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["code"], "bad_route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mute_reaches_the_client_as_a_mute_signal_and_unmute_needs_remote_unmute() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let (c, track) = join_with_track(&server, "r", "gw").await;

    let reply = post_json(
        &server,
        "MutePublishedTrack",
        "r",
        json!({ "room": "r", "identity": "gw", "track_sid": track, "muted": true }),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["track"]["sid"], track.as_str());
    assert_eq!(reply.json()["track"]["muted"], true);
    let muted = |m: &Resp| matches!(m, Resp::Mute(r) if r.sid == track && r.muted);
    assert!(
        c.wait(SECS, |s| s.messages.iter().any(muted)).await,
        "Mute signal"
    );

    // livekit-server refuses a remote unmute unless `room.enable_remote_unmute`.
    let unmute = json!({ "room": "r", "identity": "gw", "trackSid": track, "muted": false });
    let reply = post_json(&server, "MutePublishedTrack", "r", unmute.clone()).await;
    assert_eq!(reply.status, 412);
    assert_eq!(reply.json()["code"], "failed_precondition");
    assert_eq!(reply.json()["msg"], "remote unmute not enabled");

    let absent = json!({ "room": "r", "identity": "nobody", "track_sid": track, "muted": true });
    let reply = post_json(&server, "MutePublishedTrack", "r", absent).await;
    assert_eq!(
        (reply.status, reply.json()["code"].clone()),
        (404, json!("not_found"))
    );
    let no_room = json!({ "room": "gone", "identity": "gw", "track_sid": track, "muted": true });
    let reply = post_json(&server, "MutePublishedTrack", "gone", no_room).await;
    assert_eq!(
        (reply.status, reply.json()["code"].clone()),
        (404, json!("not_found"))
    );
    assert_eq!(reply.json()["msg"], "requested room does not exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_unmute_when_enabled_reaches_the_client() {
    let mut o = ServerOptions::new(API_KEY, API_SECRET);
    o.engine = EngineConfig {
        remote_unmute: true,
        ..Default::default()
    };
    let server = TestServer::start_with(o).await.unwrap();
    let (c, track) = join_with_track(&server, "r", "gw").await;
    let hooked = server
        .mute_published_track("r", "gw", &track, true)
        .await
        .unwrap();
    assert!(hooked.is_some_and(|t| t.muted));

    let body = proto::MuteRoomTrackRequest {
        room: "r".into(),
        identity: "gw".into(),
        track_sid: track.clone(),
        muted: false,
    }
    .encode_to_vec();
    let bearer = format!("Bearer {}", server.admin_token("r").unwrap());
    let reply = post(&server, "MutePublishedTrack", PROTOBUF, Some(bearer), body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let resp = proto::MuteRoomTrackResponse::decode(reply.body.as_slice()).unwrap();
    assert!(resp.track.is_some_and(|t| !t.muted));
    let unmuted = |m: &Resp| matches!(m, Resp::Mute(r) if r.sid == track && !r.muted);
    assert!(
        c.wait(SECS, |s| s.messages.iter().any(unmuted)).await,
        "unmute signal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_participant_tells_the_client_it_lost_can_publish() {
    let server = TestServer::start(API_KEY, API_SECRET).await.unwrap();
    let c = TestClient::connect(client(&server, "r", "gw")).await;
    assert!(c.wait(SECS, |s| s.join.is_some()).await, "joined");
    let sid = c.sid();

    let reply = post_json(
        &server,
        "UpdateParticipant",
        "r",
        json!({
            "room": "r",
            "identity": "gw",
            "attributes": { "sip.callStatus": "muted-by-host" },
            "permission": { "can_subscribe": true, "can_publish": false, "can_publish_data": true },
        }),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["identity"], "gw");
    assert_eq!(v["attributes"]["sip.callStatus"], "muted-by-host");
    // Twirp's JSON leaves a false field out here; its absence is `false`.
    assert_ne!(v["permission"]["can_publish"], true);
    assert_eq!(v["permission"]["can_subscribe"], true);

    let lost_publish = |m: &Resp| {
        matches!(m, Resp::Update(u) if u.participants.iter().any(|p| p.sid == sid
            && p.permission.as_ref().is_some_and(|perm| !perm.can_publish && perm.can_subscribe)
            && p.attributes.get("sip.callStatus").map(String::as_str) == Some("muted-by-host")))
    };
    assert!(
        c.wait(SECS, |s| s.messages.iter().any(lost_publish)).await,
        "ParticipantUpdate about itself with the new permission"
    );

    // No more publishing: an AddTrack is ignored.
    c.send(Req::AddTrack(proto::AddTrackRequest {
        cid: "mic".into(),
        r#type: proto::TrackType::Audio as i32,
        ..Default::default()
    }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.count(|m| matches!(m, Resp::TrackPublished(_))), 0);

    let reply = post_json(
        &server,
        "UpdateParticipant",
        "r",
        json!({ "room": "r", "identity": "x" }),
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["code"].clone()),
        (404, json!("not_found"))
    );
}
