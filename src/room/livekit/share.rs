//! Calls of one node in one room share what they hear (`livekit.share_rooms`, on by default).
//!
//! Without sharing, every call's participant subscribes to every other track of its room: a
//! room of M phone callers costs LiveKit M·(M−1) forwarded tracks and the gateway as many
//! jitter buffers and, for the audible ones, decodes. With sharing, a node keeps one *listener*
//! per room and sample rate: a hidden participant (`video.hidden`, so apps and the other
//! participants never see it; subscribe-only) that joins with `auto_subscribe=0` and asks with
//! `UpdateSubscription` for the tracks of everyone who is not one of this node's callers in
//! that room. It decodes the audible few of those once (the same choice as a lone call makes)
//! and mixes them with this node's callers' own voices in one [`Mixer`](dialin_media::mixer::Mixer):
//! each caller gets the loudest few but itself (mix-minus).
//!
//! Each call keeps its own participant (identity, attributes, mute, DTMF, hold, events) and its
//! own published track, and subscribes to nothing (`auto_subscribe=0`). Its voice goes both to
//! its track and, as PCM, to the listener. So callers of one node hear each other through the
//! node, not through LiveKit: a pair of callers on one node costs LiveKit two published tracks
//! and nothing forwarded, and the gateway no decode at all.
//!
//! This module holds the parts without I/O: what a call hands the listener ([`Join`]), the
//! listener's members, and which room tracks the listener wants ([`Subscriptions`]). The
//! listener itself is a `session::Session` in its listener role; the registry of listeners is
//! in `LiveKitRooms`.

use std::collections::{HashMap, HashSet};

use dialin_media::mixer::ParticipantId;
use livekit_protocol as proto;
use tokio::sync::{mpsc, oneshot};

use crate::room::{AudioFrame, RoomEvent};

/// Prefix of listener identities: `sip_` like the calls' identities, so that a listener is
/// never taken for a room's host, then `node_` and a random part.
pub(crate) const LISTENER_PREFIX: &str = "sip_node_";

/// A call asking to be mixed by the room's listener.
pub(crate) struct Join {
    /// The call's participant identity: its tracks are never subscribed to.
    pub identity: String,
    /// The caller's voice, one frame per tick while not muted.
    pub voice: mpsc::Receiver<AudioFrame>,
    /// What the caller hears.
    pub out: mpsc::Sender<AudioFrame>,
    /// The call's room events: told when the listener's session ends.
    pub events: mpsc::Sender<RoomEvent>,
    /// Answered once the listener mixes the call; dropped if the listener is ending.
    pub accepted: oneshot::Sender<()>,
}

/// A call the listener mixes.
pub(crate) struct Member {
    pub identity: String,
    pub id: ParticipantId,
    pub voice: mpsc::Receiver<AudioFrame>,
    pub out: mpsc::Sender<AudioFrame>,
    pub events: mpsc::Sender<RoomEvent>,
}

impl Member {
    /// The call let go of its side: it left the room.
    pub fn gone(&self) -> bool {
        (self.voice.is_closed() && self.voice.is_empty()) || self.out.is_closed()
    }
}

/// The listener's side of the sharing: its members and the calls waiting to join.
pub(crate) struct Shared {
    pub joins: mpsc::Receiver<Join>,
    pub members: Vec<Member>,
    pub subscriptions: Subscriptions,
    /// Whether the wanted subscriptions may have changed since they were last sent.
    pub dirty: bool,
    /// Whether a member ever joined: a listener whose members have all gone ends.
    pub had_members: bool,
}

impl Shared {
    pub fn new(joins: mpsc::Receiver<Join>) -> Shared {
        Shared {
            joins,
            members: Vec::new(),
            subscriptions: Subscriptions::default(),
            dirty: true,
            had_members: false,
        }
    }

    /// Whether the listener has nothing left to do: every member it had has gone.
    pub fn finished(&self) -> bool {
        self.had_members && self.members.is_empty()
    }

    /// Refuses any further join and drops those not taken yet (their calls join a new
    /// listener).
    pub fn close(&mut self) {
        self.joins.close();
        while self.joins.try_recv().is_ok() {}
    }
}

/// Which tracks of the room the listener wants: every audio track of a participant that is
/// not one of its members. Fed with the participants the server reports; says what to
/// subscribe to and unsubscribe from.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    /// Every audio track the room has: track sid → (publisher's sid, publisher's identity).
    tracks: HashMap<String, (String, String)>,
    /// The tracks asked for with `UpdateSubscription`.
    subscribed: HashSet<String>,
}

impl Subscriptions {
    /// What the server said about one participant (`JoinResponse.other_participants`,
    /// `ParticipantUpdate`): its audio tracks replace what was known of it.
    pub fn on_participant(&mut self, p: &proto::ParticipantInfo) {
        use proto::participant_info::State;
        self.tracks.retain(|_, (owner, _)| *owner != p.sid);
        if p.state == State::Disconnected as i32 {
            return;
        }
        for t in &p.tracks {
            if t.r#type == proto::TrackType::Audio as i32 {
                self.tracks
                    .insert(t.sid.clone(), (p.sid.clone(), p.identity.clone()));
            }
        }
    }

    /// After a new join (a new participant session): nothing is known or subscribed.
    pub fn reset(&mut self) {
        self.tracks.clear();
        self.subscribed.clear();
    }

    /// The tracks to subscribe to and to unsubscribe from now, given which identities are
    /// this node's calls; both are taken as done. Tracks that went away are forgotten (the
    /// server ends those subscriptions itself).
    pub fn changes(&mut self, is_member: impl Fn(&str) -> bool) -> (Vec<String>, Vec<String>) {
        let tracks = &self.tracks;
        self.subscribed.retain(|sid| tracks.contains_key(sid));
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for (sid, (_, identity)) in &self.tracks {
            let want = !is_member(identity);
            let have = self.subscribed.contains(sid);
            if want && !have {
                subscribe.push(sid.clone());
            } else if !want && have {
                unsubscribe.push(sid.clone());
            }
        }
        for sid in &subscribe {
            self.subscribed.insert(sid.clone());
        }
        for sid in &unsubscribe {
            self.subscribed.remove(sid);
        }
        subscribe.sort();
        unsubscribe.sort();
        (subscribe, unsubscribe)
    }

    /// How many tracks are subscribed.
    pub fn len(&self) -> usize {
        self.subscribed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::participant_info::State;

    fn participant(
        sid: &str,
        identity: &str,
        tracks: &[(&str, proto::TrackType)],
    ) -> proto::ParticipantInfo {
        proto::ParticipantInfo {
            sid: sid.into(),
            identity: identity.into(),
            state: State::Active as i32,
            tracks: tracks
                .iter()
                .map(|(sid, kind)| proto::TrackInfo {
                    sid: (*sid).into(),
                    r#type: *kind as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn audio_tracks_of_others_are_subscribed_and_members_tracks_never() {
        let mut s = Subscriptions::default();
        s.on_participant(&participant(
            "PA_w",
            "web",
            &[
                ("TR_a", proto::TrackType::Audio),
                ("TR_v", proto::TrackType::Video),
            ],
        ));
        s.on_participant(&participant(
            "PA_c",
            "sip_1",
            &[("TR_c", proto::TrackType::Audio)],
        ));
        let member = |id: &str| id == "sip_1";
        assert_eq!(s.changes(member), (vec!["TR_a".to_owned()], vec![]));
        assert_eq!(s.changes(member), (vec![], vec![]), "asked once");
        assert_eq!(s.len(), 1);
        // The web user publishes a second track and the call leaves this node's listener.
        s.on_participant(&participant(
            "PA_w",
            "web",
            &[
                ("TR_a", proto::TrackType::Audio),
                ("TR_b", proto::TrackType::Audio),
            ],
        ));
        assert_eq!(
            s.changes(|_| false),
            (vec!["TR_b".to_owned(), "TR_c".to_owned()], vec![])
        );
        // The caller is a member again (a call of the same identity joined).
        assert_eq!(s.changes(member), (vec![], vec!["TR_c".to_owned()]));
    }

    #[test]
    fn a_participant_who_leaves_is_forgotten_without_an_unsubscribe() {
        let mut s = Subscriptions::default();
        s.on_participant(&participant(
            "PA_w",
            "web",
            &[("TR_a", proto::TrackType::Audio)],
        ));
        assert_eq!(s.changes(|_| false).0, vec!["TR_a".to_owned()]);
        let mut gone = participant("PA_w", "web", &[("TR_a", proto::TrackType::Audio)]);
        gone.state = State::Disconnected as i32;
        s.on_participant(&gone);
        assert_eq!(s.changes(|_| false), (vec![], vec![]));
        assert_eq!(s.len(), 0);
        // Back with a new session: subscribed afresh.
        s.on_participant(&participant(
            "PA_w2",
            "web",
            &[("TR_a2", proto::TrackType::Audio)],
        ));
        assert_eq!(s.changes(|_| false).0, vec!["TR_a2".to_owned()]);
        s.reset();
        assert_eq!(s.len(), 0);
        assert_eq!(s.changes(|_| false), (vec![], vec![]));
    }

    #[test]
    fn a_listener_ends_once_its_members_have_gone_and_then_refuses_joins() {
        let (tx, rx) = mpsc::channel(4);
        let mut shared = Shared::new(rx);
        assert!(
            !shared.finished(),
            "a new listener waits for its first member"
        );
        let (_voice_tx, voice) = mpsc::channel(1);
        let (out, out_rx) = mpsc::channel(1);
        let (events, _events_rx) = mpsc::channel(1);
        shared.members.push(Member {
            identity: "sip_1".into(),
            id: ParticipantId(1),
            voice,
            out,
            events,
        });
        shared.had_members = true;
        drop(out_rx);
        assert!(shared.members[0].gone(), "the call dropped what it hears");
        shared.members.clear();
        assert!(shared.finished());
        let (accepted, _) = oneshot::channel();
        let (_, voice) = mpsc::channel(1);
        let (out, _) = mpsc::channel(1);
        let (events, _) = mpsc::channel(1);
        let pending = Join {
            identity: "sip_2".into(),
            voice,
            out,
            events,
            accepted,
        };
        assert!(tx.try_send(pending).is_ok());
        shared.close();
        assert!(tx.is_closed(), "a closed listener takes no call");
    }
}
