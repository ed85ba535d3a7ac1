//! One server-side peer connection (a str0m [`Rtc`]) and the subscriber-side negotiation that
//! LiveKit layers on top of it. A participant has two: the *publisher* PC, which the client
//! offers (server answers, ICE controlled, RFC 8445 §6.1.1: the offerer controls) and the
//! *subscriber* PC, which the server offers (ICE controlling) with one sendonly audio m-line per
//! forwarded track and the `_reliable`/`_lossy`/`_data_track` data channels.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::{Candidate, Rtc, RtcError};

/// Why a peer-connection step failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("webrtc: {0}")]
    Rtc(#[from] RtcError),
    #[error("sdp: {0}")]
    Sdp(String),
    #[error("local candidate: {0}")]
    Candidate(String),
    #[error("answer without an outstanding offer")]
    NoOutstandingOffer,
}

/// Labels of the data channels LiveKit clients and servers agree on.
pub(crate) const RELIABLE_LABEL: &str = "_reliable";
pub(crate) const LOSSY_LABEL: &str = "_lossy";
pub(crate) const DATA_TRACK_LABEL: &str = "_data_track";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    Publisher,
    Subscriber,
}

pub(crate) struct Peer {
    pub rtc: Rtc,
    pub next_timeout: Instant,
    /// Has inputs or API calls whose outputs were not polled yet.
    pub dirty: bool,
    pub connected: bool,
    /// Data channels by label, once open.
    pub channels: HashMap<String, ChannelId>,
}

impl Peer {
    pub(crate) fn new(local: SocketAddr, now: Instant) -> Result<Self, PeerError> {
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(now);
        let cand =
            Candidate::host(local, "udp").map_err(|e| PeerError::Candidate(e.to_string()))?;
        rtc.add_local_candidate(cand);
        Ok(Self {
            rtc,
            next_timeout: now,
            dirty: true,
            connected: false,
            channels: HashMap::new(),
        })
    }

    pub(crate) fn channel_for(&self, label: &str) -> Option<ChannelId> {
        self.channels.get(label).copied()
    }
}

/// The subscriber PC plus the renegotiation queue: LiveKit's server sends a new offer whenever
/// a track must be added or removed, one offer at a time (the next waits for the answer).
pub(crate) struct Subscriber {
    pub peer: Peer,
    /// Forwarded track sid → sendonly m-line.
    pub track_mids: HashMap<String, Mid>,
    to_add: Vec<(String, String)>,
    to_remove: Vec<String>,
    pending: Option<SdpPendingOffer>,
    offer_id: u32,
    channels_added: bool,
    ice_restart: bool,
    /// The server's candidate was trickled (once, after the first offer).
    pub trickled: bool,
}

impl Subscriber {
    pub(crate) fn new(peer: Peer) -> Self {
        Self {
            peer,
            track_mids: HashMap::new(),
            to_add: Vec::new(),
            to_remove: Vec::new(),
            pending: None,
            offer_id: 0,
            channels_added: false,
            ice_restart: false,
            trickled: false,
        }
    }

    /// Queue a sendonly m-line for `track_sid`; the msid stream id is `participant_sid|track_sid`
    /// as LiveKit writes it, the msid track id is the track sid.
    pub(crate) fn add_track(&mut self, track_sid: &str, participant_sid: &str) {
        if self.track_mids.contains_key(track_sid)
            || self.to_add.iter().any(|(t, _)| t == track_sid)
        {
            return;
        }
        self.to_remove.retain(|t| t != track_sid);
        self.to_add.push((
            track_sid.to_owned(),
            format!("{participant_sid}|{track_sid}"),
        ));
    }

    pub(crate) fn remove_track(&mut self, track_sid: &str) {
        self.to_add.retain(|(t, _)| t != track_sid);
        if self.track_mids.contains_key(track_sid) && !self.to_remove.iter().any(|t| t == track_sid)
        {
            self.to_remove.push(track_sid.to_owned());
        }
    }

    pub(crate) fn request_ice_restart(&mut self) {
        self.ice_restart = true;
    }

    /// The next offer to send, if something changed and no offer is outstanding. Returns
    /// (sdp, offer id, mid → track sid).
    pub(crate) fn next_offer(&mut self) -> Option<(String, u32, HashMap<String, String>)> {
        if self.pending.is_some() {
            return None;
        }
        if self.channels_added
            && self.to_add.is_empty()
            && self.to_remove.is_empty()
            && !self.ice_restart
        {
            return None;
        }
        let mut api = self.peer.rtc.sdp_api();
        if !self.channels_added {
            api.add_channel_with_config(ChannelConfig {
                label: RELIABLE_LABEL.into(),
                ..Default::default()
            });
            api.add_channel_with_config(ChannelConfig {
                label: LOSSY_LABEL.into(),
                ordered: false,
                reliability: Reliability::MaxRetransmits { retransmits: 0 },
                ..Default::default()
            });
            api.add_channel_with_config(ChannelConfig {
                label: DATA_TRACK_LABEL.into(),
                ordered: false,
                reliability: Reliability::MaxRetransmits { retransmits: 0 },
                ..Default::default()
            });
            self.channels_added = true;
        }
        for (track_sid, stream_id) in self.to_add.drain(..) {
            let mid = api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                Some(stream_id),
                Some(track_sid.clone()),
                None,
            );
            self.track_mids.insert(track_sid, mid);
        }
        for track_sid in self.to_remove.drain(..) {
            if let Some(mid) = self.track_mids.remove(&track_sid) {
                api.stop_media(mid);
            }
        }
        if std::mem::take(&mut self.ice_restart) {
            api.ice_restart(true);
        }
        let (offer, pending) = api.apply()?;
        self.pending = Some(pending);
        self.peer.dirty = true;
        self.offer_id += 1;
        let mids = self
            .track_mids
            .iter()
            .map(|(t, m)| (m.to_string(), t.clone()))
            .collect();
        Some((offer.to_sdp_string(), self.offer_id, mids))
    }

    /// Apply the client's answer to our outstanding offer.
    pub(crate) fn accept_answer(&mut self, sdp: &str) -> Result<(), PeerError> {
        let Some(pending) = self.pending.take() else {
            return Err(PeerError::NoOutstandingOffer);
        };
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        self.peer.dirty = true;
        Ok(self.peer.rtc.sdp_api().accept_answer(pending, answer)?)
    }
}

/// Answer a client's publisher offer.
pub(crate) fn answer_offer(peer: &mut Peer, sdp: &str) -> Result<String, PeerError> {
    let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
    let answer = peer.rtc.sdp_api().accept_offer(offer)?;
    peer.dirty = true;
    Ok(answer.to_sdp_string())
}

/// A candidate as the `candidateInit` JSON of a LiveKit `TrickleRequest` (a WebRTC
/// `RTCIceCandidateInit`).
pub(crate) fn candidate_init(c: &Candidate) -> String {
    serde_json::json!({
        "candidate": c.to_sdp_string(),
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": serde_json::Value::Null,
    })
    .to_string()
}

/// Parse a `candidateInit`; `None` for end-of-candidates or anything unparsable.
pub(crate) fn parse_candidate_init(init: &str) -> Option<Candidate> {
    let v: serde_json::Value = serde_json::from_str(init).ok()?;
    let c = v.get("candidate")?.as_str()?;
    let c = c.trim().trim_start_matches("a=");
    if c.is_empty() {
        return None;
    }
    Candidate::from_sdp_string(c).ok()
}
