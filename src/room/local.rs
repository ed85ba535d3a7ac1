//! The `local` room backend: an in-process conference per room name, mixed by
//! `dialin_media::mixer` (everyone hears everyone but themselves, top-K loudest speakers).
//!
//! Each room is one tokio task owning its [`Mixer`], woken every 20 ms: it takes at most one
//! frame per participant from their inbound channel (a participant whose frame is late counts as
//! silent for that tick), mixes, and hands each participant their mix. The task exists while the
//! room has members and ends with the last one; a join racing with that end simply creates the
//! room again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use dialin_media::mixer::{Mixer, ParticipantId};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::debug;

use super::{
    AudioFrame, HostFuture, JoinFuture, JoinRequest, RoomBackend, RoomError, RoomEvent, RoomHandle,
};
use crate::ingress::trunk::TrunkId;
use crate::pins::PinRole;

/// Local rooms mix narrowband: every leg can produce 8 kHz without loss of what a phone carries.
pub const LOCAL_SAMPLE_RATE: u32 = 8000;
const FRAME_SAMPLES: usize = 160;
/// Frames a participant's channels hold each way: 60 ms, enough to ride over scheduling jitter
/// between the call's clock and the room's, small enough that latency cannot build up.
const CHANNEL_FRAMES: usize = 3;
const TICK: Duration = Duration::from_millis(20);

enum RoomMsg {
    Join {
        id: ParticipantId,
        identity: String,
        inbound: mpsc::Receiver<AudioFrame>,
        outbound: mpsc::Sender<AudioFrame>,
        events: mpsc::Sender<RoomEvent>,
        joined: oneshot::Sender<usize>,
    },
    Leave {
        id: ParticipantId,
    },
}

/// All local rooms of this gateway.
#[derive(Default)]
pub struct LocalRooms {
    rooms: Arc<DashMap<String, mpsc::UnboundedSender<RoomMsg>>>,
    next_id: AtomicU32,
    /// Frames dropped because a channel was full (a participant or the room fell behind).
    dropped_frames: Arc<AtomicU64>,
    /// Hosts (callers of a host PIN) in each room, for participants waiting for one.
    hosts: Arc<Hosts>,
}

/// Host callers per room, and a wake-up for those waiting for one.
#[derive(Default)]
struct Hosts {
    count: DashMap<String, usize>,
    arrived: Notify,
}

impl Hosts {
    fn present(&self, room: &str) -> bool {
        self.count.get(room).is_some_and(|n| *n > 0)
    }
}

/// A host's presence, counted while it is in the room.
struct HostPresence {
    hosts: Arc<Hosts>,
    room: String,
}

impl HostPresence {
    fn enter(hosts: Arc<Hosts>, room: String) -> HostPresence {
        *hosts.count.entry(room.clone()).or_insert(0) += 1;
        hosts.arrived.notify_waiters();
        HostPresence { hosts, room }
    }
}

impl Drop for HostPresence {
    fn drop(&mut self) {
        if let Some(mut n) = self.hosts.count.get_mut(&self.room) {
            *n = n.saturating_sub(1);
        }
        self.hosts.count.remove_if(&self.room, |_, n| *n == 0);
    }
}

impl LocalRooms {
    pub fn new() -> LocalRooms {
        LocalRooms::default()
    }

    /// Rooms that currently have members.
    pub fn active_rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Frames dropped on full channels since start.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames.load(Ordering::Relaxed)
    }

    async fn join_room(&self, req: JoinRequest) -> Result<RoomHandle, RoomError> {
        let id = ParticipantId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (to_room, inbound) = mpsc::channel(CHANNEL_FRAMES);
        let (outbound, from_room) = mpsc::channel(CHANNEL_FRAMES);
        let (events_tx, events) = mpsc::channel(16);
        let (joined_tx, joined_rx) = oneshot::channel();
        let mut msg = RoomMsg::Join {
            id,
            identity: req.identity.clone(),
            inbound,
            outbound,
            events: events_tx,
            joined: joined_tx,
        };
        // A room whose task just ended still has its entry for an instant: retry on a fresh one.
        for _ in 0..3 {
            let tx = self
                .rooms
                .entry(req.room.clone())
                .or_insert_with(|| {
                    spawn_room(
                        req.room.clone(),
                        self.rooms.clone(),
                        self.dropped_frames.clone(),
                    )
                })
                .clone();
            match tx.send(msg) {
                Ok(()) => {
                    let others = joined_rx.await.map_err(|_| {
                        RoomError::Unreachable("local room ended during join".into())
                    })?;
                    let host = (req.role == PinRole::Host)
                        .then(|| HostPresence::enter(self.hosts.clone(), req.room.clone()));
                    return Ok(RoomHandle {
                        sample_rate: LOCAL_SAMPLE_RATE,
                        others_at_join: others,
                        to_room,
                        from_room,
                        events,
                        dtmf: None,
                        mute: None,
                        attributes: None,
                        _membership: Box::new(Membership {
                            id,
                            room: tx,
                            _host: host,
                        }),
                    });
                }
                Err(mpsc::error::SendError(m)) => {
                    msg = m;
                    self.rooms.remove_if(&req.room, |_, v| v.same_channel(&tx));
                }
            }
        }
        Err(RoomError::Unreachable(
            "local room could not be created".into(),
        ))
    }
}

impl RoomBackend for LocalRooms {
    fn join(&self, req: JoinRequest) -> JoinFuture<'_> {
        Box::pin(self.join_room(req))
    }

    fn wait_for_host(&self, room: String, _trunk: TrunkId) -> HostFuture<'_> {
        Box::pin(async move {
            loop {
                let arrived = self.hosts.arrived.notified();
                tokio::pin!(arrived);
                // Registered before the check, so a host arriving in between still wakes us.
                arrived.as_mut().enable();
                if self.hosts.present(&room) {
                    return Ok(());
                }
                arrived.await;
            }
        })
    }

    fn name(&self) -> &'static str {
        "local"
    }
}

/// Leaves the room when the call drops its handle.
struct Membership {
    id: ParticipantId,
    room: mpsc::UnboundedSender<RoomMsg>,
    _host: Option<HostPresence>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let _ = self.room.send(RoomMsg::Leave { id: self.id });
    }
}

struct Member {
    identity: String,
    inbound: mpsc::Receiver<AudioFrame>,
    outbound: mpsc::Sender<AudioFrame>,
    events: mpsc::Sender<RoomEvent>,
}

fn spawn_room(
    name: String,
    rooms: Arc<DashMap<String, mpsc::UnboundedSender<RoomMsg>>>,
    dropped: Arc<AtomicU64>,
) -> mpsc::UnboundedSender<RoomMsg> {
    let (tx, rx) = mpsc::unbounded_channel();
    let me = tx.clone();
    tokio::spawn(run_room(name, rx, me, rooms, dropped));
    tx
}

async fn run_room(
    name: String,
    mut rx: mpsc::UnboundedReceiver<RoomMsg>,
    me: mpsc::UnboundedSender<RoomMsg>,
    rooms: Arc<DashMap<String, mpsc::UnboundedSender<RoomMsg>>>,
    dropped: Arc<AtomicU64>,
) {
    let mut mixer = Mixer::new(FRAME_SAMPLES);
    let mut members: HashMap<ParticipantId, Member> = HashMap::new();
    // On the process-wide grid, with the calls' own ticks: one runtime wake-up serves them all.
    let first = tokio::time::Instant::from_std(crate::tick::next_tick(std::time::Instant::now()));
    let mut tick = tokio::time::interval_at(first, TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    debug!(room = %name, "local room opened");
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(RoomMsg::Join { id, identity, inbound, outbound, events, joined }) => {
                    if mixer.add(id).is_err() {
                        continue;
                    }
                    for m in members.values() {
                        let _ = m.events.try_send(RoomEvent::ParticipantJoined { identity: identity.clone() });
                    }
                    let _ = joined.send(members.len());
                    members.insert(id, Member { identity, inbound, outbound, events });
                }
                Some(RoomMsg::Leave { id }) => {
                    let _ = mixer.remove(id);
                    if let Some(left) = members.remove(&id) {
                        for m in members.values() {
                            let _ = m.events.try_send(RoomEvent::ParticipantLeft { identity: left.identity.clone() });
                        }
                    }
                    if members.is_empty() {
                        // Close under the map's entry lock so that a concurrent join either
                        // reaches us before this point or finds no entry and creates a new room.
                        let removed = rooms.remove_if(&name, |_, v| v.same_channel(&me));
                        if removed.is_some() {
                            rx.close();
                            // Joins that slipped in before the removal get an error and retry.
                            while rx.try_recv().is_ok() {}
                            break;
                        }
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if members.len() < 2 {
                    // Nobody to hear: drain input so it does not go stale.
                    for m in members.values_mut() {
                        while m.inbound.try_recv().is_ok() {}
                    }
                    continue;
                }
                for (id, m) in members.iter_mut() {
                    let (frame, surplus) = crate::room::next_frame(&mut m.inbound);
                    if surplus > 0 {
                        dropped.fetch_add(surplus, Ordering::Relaxed);
                    }
                    if let Some(f) = frame {
                        let _ = mixer.push(*id, f.samples());
                    }
                }
                mixer.mix();
                for (id, m) in members.iter() {
                    if let Some(out) = mixer.output_for(*id) {
                        if m.outbound.try_send(AudioFrame::from_samples(out)).is_err() {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
    debug!(room = %name, "local room closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(room: &str, identity: &str) -> JoinRequest {
        JoinRequest {
            room: room.into(),
            identity: identity.into(),
            name: identity.into(),
            attributes: Default::default(),
            sample_rate: 8_000,
            role: PinRole::Participant,
            metadata: None,
            room_config: None,
        }
    }

    /// Polls once: whether the future is still waiting.
    fn pending(f: std::pin::Pin<&mut (dyn std::future::Future<Output = Result<(), RoomError>> + Send + '_)>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.poll(&mut cx).is_pending()
    }

    fn trunk() -> TrunkId {
        TrunkId::parse("default").expect("trunk id")
    }

    #[tokio::test]
    async fn waiting_for_a_host_ends_when_a_host_joins_that_room() {
        let rooms = LocalRooms::new();
        let participant = rooms.join(req("r1", "p")).await.expect("join");
        let mut wait = rooms.wait_for_host("r1".into(), trunk());
        // A participant is no host, nor is a host of another room.
        let other = rooms
            .join(JoinRequest {
                role: PinRole::Host,
                ..req("r2", "h2")
            })
            .await
            .expect("join");
        assert!(pending(wait.as_mut()));
        let host = rooms
            .join(JoinRequest {
                role: PinRole::Host,
                ..req("r1", "h1")
            })
            .await
            .expect("join");
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("the host's arrival ends the wait")
            .expect("no error");
        // A host already there: at once. Gone again: waiting again.
        rooms.wait_for_host("r1".into(), trunk()).await.expect("at once");
        drop(host);
        let mut again = rooms.wait_for_host("r1".into(), trunk());
        assert!(pending(again.as_mut()));
        drop((participant, other));
    }

    fn tone(freq: f32, amp: f32) -> AudioFrame {
        let pcm: Vec<i16> = (0..FRAME_SAMPLES)
            .map(|n| (amp * (2.0 * std::f32::consts::PI * freq * n as f32 / 8000.0).sin()) as i16)
            .collect();
        AudioFrame::from_samples(&pcm)
    }

    fn energy(f: &AudioFrame) -> f64 {
        f.samples()
            .iter()
            .map(|&s| f64::from(s) * f64::from(s))
            .sum::<f64>()
            / f.samples().len() as f64
    }

    #[tokio::test]
    async fn two_callers_in_one_room_hear_each_other_but_not_themselves() {
        let rooms = LocalRooms::new();
        let mut a = rooms.join(req("r1", "a")).await.unwrap();
        assert_eq!(a.others_at_join, 0);
        let mut b = rooms.join(req("r1", "b")).await.unwrap();
        assert_eq!(b.others_at_join, 1);
        assert_eq!(
            a.events.recv().await,
            Some(RoomEvent::ParticipantJoined {
                identity: "b".into()
            })
        );
        let mut heard_by_b = 0.0f64;
        let mut heard_by_a = 0.0f64;
        for _ in 0..20 {
            let _ = a.to_room.try_send(tone(440.0, 8000.0));
            let _ = b
                .to_room
                .try_send(AudioFrame::from_samples(&[0; FRAME_SAMPLES]));
            tokio::time::sleep(Duration::from_millis(20)).await;
            while let Ok(f) = b.from_room.try_recv() {
                heard_by_b = heard_by_b.max(energy(&f));
            }
            while let Ok(f) = a.from_room.try_recv() {
                heard_by_a = heard_by_a.max(energy(&f));
            }
        }
        assert!(
            heard_by_b > 1.0e6,
            "b should hear a's tone, energy {heard_by_b}"
        );
        assert!(
            heard_by_a < 1.0,
            "a must not hear itself, energy {heard_by_a}"
        );
    }

    #[tokio::test]
    async fn callers_in_different_rooms_do_not_hear_each_other() {
        let rooms = LocalRooms::new();
        let a = rooms.join(req("r1", "a")).await.unwrap();
        let _a2 = rooms.join(req("r1", "a2")).await.unwrap();
        let mut b = rooms.join(req("r2", "b")).await.unwrap();
        let _b2 = rooms.join(req("r2", "b2")).await.unwrap();
        let mut heard = 0.0f64;
        for _ in 0..10 {
            let _ = a.to_room.try_send(tone(440.0, 8000.0));
            tokio::time::sleep(Duration::from_millis(20)).await;
            while let Ok(f) = b.from_room.try_recv() {
                heard = heard.max(energy(&f));
            }
        }
        assert!(heard < 1.0);
    }

    #[tokio::test]
    async fn leaving_notifies_others_and_last_leave_closes_the_room() {
        let rooms = LocalRooms::new();
        let mut a = rooms.join(req("r1", "a")).await.unwrap();
        let b = rooms.join(req("r1", "b")).await.unwrap();
        assert_eq!(
            a.events.recv().await,
            Some(RoomEvent::ParticipantJoined {
                identity: "b".into()
            })
        );
        drop(b);
        assert_eq!(
            a.events.recv().await,
            Some(RoomEvent::ParticipantLeft {
                identity: "b".into()
            })
        );
        assert_eq!(rooms.active_rooms(), 1);
        drop(a);
        for _ in 0..50 {
            if rooms.active_rooms() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(rooms.active_rooms(), 0);
        // The room can be used again afterwards.
        let c = rooms.join(req("r1", "c")).await.unwrap();
        assert_eq!(c.others_at_join, 0);
    }
}
