//! The registry of calls in progress on this node: what `GET /v1/calls` lists, what
//! `DELETE /v1/calls/{id}` hangs up, and where the global and per-trunk concurrent call
//! limits of call flow step 1 are enforced (`503` + `Retry-After` when full).
//!
//! Each call is owned by one task (DESIGN.md "One owner per call"). That task registers
//! the call with [`CallRegistry::register`] and keeps the returned [`CallGuard`]; the
//! guard updates the state and room as the call moves on, and removes the entry when it is
//! dropped, however the call ends. Hang-up requests reach the owner over a channel it
//! receives ([`CallCommand`]), so the owner still plays the goodbye, sends BYE and completes
//! the call record itself.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::pins::RoomName;
use crate::privacy::PhoneNumber;
use crate::ingress::trunk::TrunkId;

/// Commands queued per call; a hang-up is the only one, so a tiny queue suffices.
const COMMAND_QUEUE: usize = 4;

/// Identifies a call: the SIP Call-ID of its dialog (RFC 3261 §8.1.1.4).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CallId(String);

impl CallId {
    pub fn new(id: impl Into<String>) -> CallId {
        CallId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Where a call is in the call flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// INVITE accepted, answer being sent.
    Answering,
    /// The IVR is prompting for and collecting the PIN.
    CollectingPin,
    /// PIN resolved, connecting to the room.
    Joining,
    /// A participant PIN of a room that waits for its host: on hold music until one is there.
    WaitingForHost,
    /// Bridged into the room.
    InRoom,
}

impl CallState {
    pub const ALL: [CallState; 5] = [
        CallState::Answering,
        CallState::CollectingPin,
        CallState::Joining,
        CallState::WaitingForHost,
        CallState::InRoom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Answering => "answering",
            CallState::CollectingPin => "collecting_pin",
            CallState::Joining => "joining",
            CallState::WaitingForHost => "waiting_for_host",
            CallState::InRoom => "in_room",
        }
    }
}

/// How a call ended: the `outcome` of its call record and of `dialin_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// The caller hung up after joining a room.
    CallerHangup,
    /// The caller hung up before joining a room.
    AbandonedInIvr,
    /// The room closed or removed the participant.
    RoomEnded,
    /// An admin hung up the call.
    AdminHangup,
    /// No RTP from the caller for `rtp_timeout`.
    RtpTimeout,
    /// `max_call_duration` reached.
    MaxDuration,
    /// `max_attempts` wrong PINs.
    PinFailed,
    /// The calling number is locked out after too many failed PINs.
    LockedOut,
    /// No digits, or the IVR took too long.
    NoInput,
    /// Joining the room failed.
    JoinFailed,
    /// The gateway is shutting down.
    Shutdown,
    /// Any other failure (media, signalling).
    Error,
    /// The node died during the call; its record was closed when the node started again.
    Interrupted,
}

impl CallOutcome {
    pub const ALL: [CallOutcome; 13] = [
        CallOutcome::CallerHangup,
        CallOutcome::AbandonedInIvr,
        CallOutcome::RoomEnded,
        CallOutcome::AdminHangup,
        CallOutcome::RtpTimeout,
        CallOutcome::MaxDuration,
        CallOutcome::PinFailed,
        CallOutcome::LockedOut,
        CallOutcome::NoInput,
        CallOutcome::JoinFailed,
        CallOutcome::Shutdown,
        CallOutcome::Error,
        CallOutcome::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::CallerHangup => "caller_hangup",
            CallOutcome::AbandonedInIvr => "abandoned_in_ivr",
            CallOutcome::RoomEnded => "room_ended",
            CallOutcome::AdminHangup => "admin_hangup",
            CallOutcome::RtpTimeout => "rtp_timeout",
            CallOutcome::MaxDuration => "max_duration",
            CallOutcome::PinFailed => "pin_failed",
            CallOutcome::LockedOut => "locked_out",
            CallOutcome::NoInput => "no_input",
            CallOutcome::JoinFailed => "join_failed",
            CallOutcome::Shutdown => "shutdown",
            CallOutcome::Error => "error",
            CallOutcome::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<CallOutcome> {
        CallOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// A request to a call's owning task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallCommand {
    /// End the call (admin `DELETE /v1/calls/{id}`): play nothing more, send BYE.
    HangUp,
}

/// Why a call could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("the node is at its limit of {limit} concurrent calls")]
    NodeFull { limit: usize },
    #[error("trunk {trunk} is at its limit of {limit} concurrent calls")]
    TrunkFull { trunk: TrunkId, limit: usize },
    #[error("call {0} is already registered")]
    Duplicate(CallId),
}

/// A call as listed by the admin API. The caller's number is masked.
#[derive(Debug, Clone, Serialize)]
pub struct CallInfo {
    pub id: CallId,
    pub trunk: TrunkId,
    /// `••••1234`
    pub caller: String,
    pub state: CallState,
    pub room: Option<RoomName>,
    pub started_at: DateTime<Utc>,
    /// The caller's audio so far, updated about once a second.
    pub quality: CallQuality,
}

/// How the caller's audio is doing: what the admin API and the console show per call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CallQuality {
    pub packets_received: u64,
    pub packets_lost: u64,
    /// Packets that came too late for the jitter buffer.
    pub late_frames: u64,
    pub jitter_ms: f64,
}

struct Registered {
    info: CallInfo,
    commands: mpsc::Sender<CallCommand>,
}

/// What [`CallRegistry::register`] needs to know about a new call.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub id: CallId,
    pub trunk: TrunkId,
    pub caller: PhoneNumber,
    pub started_at: DateTime<Utc>,
    /// Concurrent calls allowed on this node (`[limits] max_calls`).
    pub node_limit: usize,
    /// Concurrent calls allowed on the trunk (`[[trunk]] max_calls`).
    pub trunk_limit: usize,
}

/// Calls in progress on this node.
#[derive(Default)]
pub struct CallRegistry {
    calls: DashMap<CallId, Registered>,
    per_trunk: DashMap<TrunkId, usize>,
    total: AtomicUsize,
}

impl fmt::Debug for CallRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallRegistry")
            .field("calls", &self.len())
            .finish()
    }
}

impl CallRegistry {
    pub fn new() -> Arc<CallRegistry> {
        Arc::new(CallRegistry::default())
    }

    /// Registers a call in state `answering`, if the node and trunk limits allow it. The
    /// guard removes the call when dropped; the receiver delivers admin commands.
    pub fn register(
        self: &Arc<Self>,
        call: NewCall,
    ) -> Result<(CallGuard, mpsc::Receiver<CallCommand>), RegisterError> {
        // Reserve a node slot first; give it back on any refusal.
        let previous = self.total.fetch_add(1, Ordering::AcqRel);
        if previous >= call.node_limit {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(RegisterError::NodeFull {
                limit: call.node_limit,
            });
        }
        {
            let mut count = self.per_trunk.entry(call.trunk.clone()).or_insert(0);
            if *count >= call.trunk_limit {
                drop(count);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(RegisterError::TrunkFull {
                    trunk: call.trunk,
                    limit: call.trunk_limit,
                });
            }
            *count += 1;
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let info = CallInfo {
            id: call.id.clone(),
            trunk: call.trunk.clone(),
            caller: call.caller.masked(),
            state: CallState::Answering,
            room: None,
            started_at: call.started_at,
            quality: CallQuality::default(),
        };
        match self.calls.entry(call.id.clone()) {
            Entry::Occupied(_) => {
                self.release_slot(&call.trunk);
                Err(RegisterError::Duplicate(call.id))
            }
            Entry::Vacant(v) => {
                v.insert(Registered { info, commands: tx });
                Ok((
                    CallGuard {
                        registry: Arc::clone(self),
                        id: call.id,
                        trunk: call.trunk,
                    },
                    rx,
                ))
            }
        }
    }

    fn release_slot(&self, trunk: &TrunkId) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(mut count) = self.per_trunk.get_mut(trunk) {
            *count = count.saturating_sub(1);
        }
    }

    /// Asks a call's owner to hang up. False when no such call is in progress.
    pub fn hang_up(&self, id: &CallId) -> bool {
        let Some(entry) = self.calls.get(id) else {
            return false;
        };
        // A full queue already holds a hang-up; a closed one means the owner is ending
        // the call anyway. Either way the call is going away.
        let _ = entry.commands.try_send(CallCommand::HangUp);
        true
    }

    /// A snapshot of the calls in progress, oldest first.
    pub fn list(&self) -> Vec<CallInfo> {
        let mut calls: Vec<CallInfo> = self.calls.iter().map(|e| e.info.clone()).collect();
        calls.sort_by(|a, b| {
            a.started_at
                .cmp(&b.started_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        calls
    }

    pub fn get(&self, id: &CallId) -> Option<CallInfo> {
        self.calls.get(id).map(|e| e.info.clone())
    }

    /// Calls in progress on this node.
    pub fn len(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls in progress on one trunk.
    pub fn count_for_trunk(&self, trunk: &TrunkId) -> usize {
        self.per_trunk.get(trunk).map_or(0, |c| *c)
    }

    /// Calls in progress per state, in [`CallState::ALL`] order (for `dialin_calls_active`).
    pub fn count_by_state(&self) -> [(CallState, usize); CallState::ALL.len()] {
        let mut counts = CallState::ALL.map(|s| (s, 0));
        for e in self.calls.iter() {
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == e.info.state) {
                slot.1 += 1;
            }
        }
        counts
    }

    /// Asks every call to hang up (shutdown after the drain period).
    pub fn hang_up_all(&self) -> usize {
        let mut n = 0;
        for e in self.calls.iter() {
            let _ = e.commands.try_send(CallCommand::HangUp);
            n += 1;
        }
        n
    }
}

/// Held by a call's owning task; the call stays listed while it lives.
pub struct CallGuard {
    registry: Arc<CallRegistry>,
    id: CallId,
    trunk: TrunkId,
}

impl fmt::Debug for CallGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallGuard").field("id", &self.id).finish()
    }
}

impl CallGuard {
    pub fn id(&self) -> &CallId {
        &self.id
    }

    pub fn set_state(&self, state: CallState) {
        if let Some(mut e) = self.registry.calls.get_mut(&self.id) {
            e.info.state = state;
        }
    }

    pub fn set_quality(&self, quality: CallQuality) {
        if let Some(mut e) = self.registry.calls.get_mut(&self.id) {
            e.info.quality = quality;
        }
    }

    pub fn set_room(&self, room: Option<RoomName>) {
        if let Some(mut e) = self.registry.calls.get_mut(&self.id) {
            e.info.room = room;
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.registry.calls.remove(&self.id).is_some() {
            self.registry.release_slot(&self.trunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_call(id: &str, trunk: &str, node_limit: usize, trunk_limit: usize) -> NewCall {
        NewCall {
            id: CallId::new(id),
            trunk: TrunkId::parse(trunk).unwrap(),
            caller: PhoneNumber::new("+33612345678"),
            started_at: Utc::now(),
            node_limit,
            trunk_limit,
        }
    }

    #[test]
    fn registered_call_is_listed_with_masked_caller_until_its_guard_drops() {
        let reg = CallRegistry::new();
        let (guard, _rx) = reg.register(new_call("c1", "t", 10, 10)).unwrap();
        guard.set_state(CallState::InRoom);
        guard.set_room(Some(RoomName::parse("r").unwrap()));
        let listed = reg.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].caller, "••••5678");
        assert_eq!(listed[0].state, CallState::InRoom);
        drop(guard);
        assert!(reg.list().is_empty());
        assert_eq!(reg.len(), 0);
        assert_eq!(reg.count_for_trunk(&TrunkId::parse("t").unwrap()), 0);
    }

    #[test]
    fn hang_up_reaches_the_owning_task() {
        let reg = CallRegistry::new();
        let (_guard, mut rx) = reg.register(new_call("c1", "t", 10, 10)).unwrap();
        assert!(reg.hang_up(&CallId::new("c1")));
        assert_eq!(rx.try_recv().ok(), Some(CallCommand::HangUp));
        assert!(!reg.hang_up(&CallId::new("nope")));
    }

    #[test]
    fn node_and_trunk_limits_refuse_extra_calls() {
        let reg = CallRegistry::new();
        let (_a, _) = reg.register(new_call("a", "t1", 2, 1)).unwrap();
        assert!(matches!(
            reg.register(new_call("b", "t1", 2, 1)),
            Err(RegisterError::TrunkFull { .. })
        ));
        let (_c, _) = reg.register(new_call("c", "t2", 2, 1)).unwrap();
        assert!(matches!(
            reg.register(new_call("d", "t3", 2, 1)),
            Err(RegisterError::NodeFull { limit: 2 })
        ));
        assert_eq!(reg.len(), 2);
    }

    #[test]
    fn duplicate_call_id_is_refused_without_leaking_a_slot() {
        let reg = CallRegistry::new();
        let (_a, _) = reg.register(new_call("a", "t", 10, 10)).unwrap();
        assert!(matches!(
            reg.register(new_call("a", "t", 10, 10)),
            Err(RegisterError::Duplicate(_))
        ));
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.count_for_trunk(&TrunkId::parse("t").unwrap()), 1);
    }

    #[test]
    fn states_serialize_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&CallState::CollectingPin).unwrap(),
            "\"collecting_pin\""
        );
        assert_eq!(
            serde_json::to_string(&CallOutcome::RtpTimeout).unwrap(),
            "\"rtp_timeout\""
        );
        for o in CallOutcome::ALL {
            assert_eq!(CallOutcome::parse(o.as_str()), Some(o));
        }
    }
}
