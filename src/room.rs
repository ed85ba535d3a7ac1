//! Room backends: where a caller goes once the PIN resolved (DESIGN.md §Call flow step 5).
//!
//! A call joins a room through [`RoomBackend::join`] and gets a [`RoomHandle`]: a sender for
//! the caller's audio (20 ms frames at the backend's rate), a receiver for what the caller should
//! hear (the room mixed down, without the caller's own voice), and a receiver of
//! [`RoomEvent`]s (others joined or left, the room closed, the participant was removed).
//! Dropping the handle leaves the room.
//!
//! Two backends implement it: `local` ([`local::LocalRooms`], an in-process mixer: callers who
//! keyed the same PIN hear each other; the embedded default) and `livekit` (a participant per
//! call on a LiveKit server). Audio moves over bounded channels of fixed-size frames: a frame
//! is copied, never allocated, and a full channel drops the frame and counts it rather than
//! letting latency grow.

pub mod livekit;
pub mod local;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;

use crate::ingress::trunk::TrunkId;
use crate::pins::PinRole;

/// Samples in the largest 20 ms frame a backend exchanges (16 kHz).
pub const MAX_FRAME_SAMPLES: usize = 320;

/// Largest Opus payload an [`AudioFrame`] carries: a 20 ms voice packet is well under it.
pub const MAX_OPUS_PAYLOAD: usize = 400;

/// One 20 ms frame of 16-bit PCM, by value so that channels carry it without allocating.
/// From an Opus caller it also carries the Opus packet the PCM was decoded from, which an
/// Opus room publishes as is (DESIGN.md §Architecture: no transcoding when the codecs match).
#[derive(Clone, Copy)]
pub struct AudioFrame {
    samples: [i16; MAX_FRAME_SAMPLES],
    len: u16,
    opus: [u8; MAX_OPUS_PAYLOAD],
    opus_len: u16,
}

impl AudioFrame {
    /// A frame holding a copy of `pcm` (truncated to [`MAX_FRAME_SAMPLES`]).
    pub fn from_samples(pcm: &[i16]) -> AudioFrame {
        let len = pcm.len().min(MAX_FRAME_SAMPLES);
        let mut samples = [0i16; MAX_FRAME_SAMPLES];
        samples[..len].copy_from_slice(&pcm[..len]);
        AudioFrame {
            samples,
            len: len as u16,
            opus: [0; MAX_OPUS_PAYLOAD],
            opus_len: 0,
        }
    }

    /// Attaches the Opus packet the PCM came from; one larger than [`MAX_OPUS_PAYLOAD`] is
    /// not attached (the room then encodes the PCM).
    pub fn with_opus(mut self, payload: &[u8]) -> AudioFrame {
        if let Some(slot) = self.opus.get_mut(..payload.len()) {
            slot.copy_from_slice(payload);
            self.opus_len = payload.len() as u16;
        }
        self
    }

    pub fn samples(&self) -> &[i16] {
        &self.samples[..usize::from(self.len)]
    }

    /// The caller's Opus packet behind these samples, when it came from one.
    pub fn opus(&self) -> Option<&[u8]> {
        match self.opus_len {
            0 => None,
            n => self.opus.get(..usize::from(n)),
        }
    }
}

impl std::fmt::Debug for AudioFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AudioFrame({} samples)", self.len)
    }
}

/// Who joins and how they appear to the others.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub room: String,
    /// Unique per call.
    pub identity: String,
    pub name: String,
    /// The participant's metadata (a PIN source's), if any.
    pub metadata: Option<String>,
    /// LiveKit: how the room is created if this participant is its first.
    pub room_config: Option<livekit_protocol::RoomConfiguration>,
    /// `sip.*` attributes (LiveKit conventions); `local` keeps them for listing only.
    pub attributes: BTreeMap<String, String>,
    /// The caller's PCM rate (8000 for G.711, 16000 for G.722 and Opus). A backend that
    /// exchanges frames at this rate spares the call a resampler on every frame: `livekit`
    /// does (its Opus codes 8 and 16 kHz natively); `local` mixes at its own rate. The
    /// handle's [`RoomHandle::sample_rate`] says which rate the backend chose.
    pub sample_rate: u32,
    /// A host opens rooms whose participant PINs wait for one.
    pub role: PinRole,
}

/// Something that happened in the room, from the caller's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    ParticipantJoined {
        identity: String,
    },
    ParticipantLeft {
        identity: String,
    },
    /// The room was closed: play "the meeting has ended" and hang up.
    Closed,
    /// This participant was removed from the room: same as `Closed` for the caller.
    Removed,
    /// A room admin muted (true) or unmuted (false) the caller's published track.
    MutedByRoom { muted: bool },
    /// The room changed whether this participant may publish audio.
    CanPublish(bool),
}

/// A participant attribute the call sets on itself (`None` removes it). Static, so that a
/// key press never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeUpdate {
    pub key: &'static str,
    pub value: Option<&'static str>,
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error("room backend unreachable: {0}")]
    Unreachable(String),
    #[error("room backend refused the join: {0}")]
    Refused(String),
}

/// Frames [`next_frame`] lets wait behind the one it takes: 40 ms at most.
pub const FRAMES_WAITING: usize = 2;

/// The frame to play at this tick from a stream of one frame per tick between two tasks.
///
/// Both tasks tick on the process-wide grid ([`crate::tick`]), so within a tick either may
/// run first, and on a loaded machine a tick may come late: a frame can wait a tick or two.
/// The oldest frame is taken, up to [`FRAMES_WAITING`] more may stay waiting, and any beyond
/// are dropped so that latency cannot build up. Returns the frame and how many were dropped.
pub fn next_frame(rx: &mut mpsc::Receiver<AudioFrame>) -> (Option<AudioFrame>, u64) {
    let Ok(frame) = rx.try_recv() else {
        return (None, 0);
    };
    let mut dropped = 0;
    while rx.len() > FRAMES_WAITING && rx.try_recv().is_ok() {
        dropped += 1;
    }
    (Some(frame), dropped)
}

/// A caller's membership of a room; dropping it leaves the room.
pub struct RoomHandle {
    /// Sample rate of the frames both ways.
    pub sample_rate: u32,
    /// Participants already in the room when this one joined.
    pub others_at_join: usize,
    /// The caller's audio, one frame per 20 ms; use `try_send` and count a full channel.
    pub to_room: mpsc::Sender<AudioFrame>,
    /// What the caller hears, one frame per 20 ms while anyone else is in the room.
    pub from_room: mpsc::Receiver<AudioFrame>,
    pub events: mpsc::Receiver<RoomEvent>,
    /// Sends the caller's DTMF digits to the room (LiveKit SIP DTMF data packets).
    pub dtmf: Option<mpsc::Sender<char>>,
    /// Mutes (true) or unmutes the call's track where the room shows it (LiveKit); `None`
    /// where not mixing the caller is all there is to it (local rooms).
    pub mute: Option<mpsc::Sender<bool>>,
    /// Sets the caller's own participant attributes where the room shows them (LiveKit).
    pub attributes: Option<mpsc::Sender<AttributeUpdate>>,
    /// Kept alive for the membership; dropping it tells the backend the caller left.
    pub(crate) _membership: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for RoomHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomHandle")
            .field("sample_rate", &self.sample_rate)
            .field("others_at_join", &self.others_at_join)
            .finish_non_exhaustive()
    }
}

/// Future returned by [`RoomBackend::join`].
pub type JoinFuture<'a> = Pin<Box<dyn Future<Output = Result<RoomHandle, RoomError>> + Send + 'a>>;

/// Future returned by [`RoomBackend::wait_for_host`].
pub type HostFuture<'a> = Pin<Box<dyn Future<Output = Result<(), RoomError>> + Send + 'a>>;

/// A place calls can be bridged into.
pub trait RoomBackend: Send + Sync {
    /// Joins `req.room` as a new participant.
    fn join(&self, req: JoinRequest) -> JoinFuture<'_>;
    /// Resolves once `room` has a host (a caller who keyed a host PIN, or for LiveKit a
    /// participant matching `livekit.host`), without joining it. Dropping it stops watching.
    /// `trunk` is the call's trunk (its LiveKit override, if any, is where to look).
    fn wait_for_host(&self, room: String, trunk: TrunkId) -> HostFuture<'_>;
    /// Name for logs and `/readyz`.
    fn name(&self) -> &'static str;
}
