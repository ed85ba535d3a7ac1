//! The tokio driver around [`Endpoint`]: one task owns it.
//!
//! The task receives from the transport's incoming channel and from the
//! gateway's command channel, sleeps until [`Endpoint::poll_timeout`], sends
//! every [`Transmit`] and forwards every [`Event`]. Nothing else touches the
//! endpoint, so there is no lock. Datagram sends are awaited in line (a UDP
//! `send_to` does not block); stream sends, which may have to connect, run in
//! their own tasks so that one slow peer never stalls the others.

use super::{CallKey, CommandError, Endpoint, EndpointConfig, Event, Transmit};
use crate::header::HeaderName;
use crate::message::{StatusCode, Text};
use crate::transport::{Incoming, Transports};
use bytes::Bytes;
use std::time::Instant;
use tokio::sync::mpsc;

/// Events queued for the gateway before the driver waits for it.
const EVENT_QUEUE: usize = 4096;
/// Incoming messages handled per wake-up before timers and commands get a turn.
const BATCH: usize = 64;

/// The driver task is gone (shut down or panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the SIP endpoint driver has stopped")]
pub struct DriverClosed;

#[derive(Debug)]
enum Command {
    Ringing(CallKey),
    Progress(CallKey, Option<Bytes>),
    Answer(CallKey, Option<Bytes>, Vec<(HeaderName, Text)>),
    Reject(CallKey, StatusCode, Option<String>, Vec<(HeaderName, Text)>),
    Hangup(CallKey),
    RespondReInvite(CallKey, Result<Bytes, StatusCode>),
    SendInfo(CallKey, String, Bytes),
    Shutdown,
}

/// The gateway's handle on the endpoint task: commands are queued and
/// applied in order; a command for a call that is gone is logged and dropped
/// (its [`Event::CallEnded`] is already on the way).
#[derive(Debug, Clone)]
pub struct EndpointHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl EndpointHandle {
    fn send(&self, c: Command) -> Result<(), DriverClosed> {
        self.tx.send(c).map_err(|_| DriverClosed)
    }
    pub fn ringing(&self, key: CallKey) -> Result<(), DriverClosed> {
        self.send(Command::Ringing(key))
    }
    pub fn progress(&self, key: CallKey, sdp: Option<Bytes>) -> Result<(), DriverClosed> {
        self.send(Command::Progress(key, sdp))
    }
    pub fn answer(
        &self,
        key: CallKey,
        sdp: Option<Bytes>,
        headers: Vec<(HeaderName, Text)>,
    ) -> Result<(), DriverClosed> {
        self.send(Command::Answer(key, sdp, headers))
    }
    pub fn reject(
        &self,
        key: CallKey,
        status: StatusCode,
        reason: Option<String>,
        headers: Vec<(HeaderName, Text)>,
    ) -> Result<(), DriverClosed> {
        self.send(Command::Reject(key, status, reason, headers))
    }
    pub fn hangup(&self, key: CallKey) -> Result<(), DriverClosed> {
        self.send(Command::Hangup(key))
    }
    pub fn respond_reinvite(
        &self,
        key: CallKey,
        answer: Result<Bytes, StatusCode>,
    ) -> Result<(), DriverClosed> {
        self.send(Command::RespondReInvite(key, answer))
    }
    pub fn send_info(
        &self,
        key: CallKey,
        content_type: &str,
        body: Bytes,
    ) -> Result<(), DriverClosed> {
        self.send(Command::SendInfo(key, content_type.to_owned(), body))
    }
    /// Stops the task (calls are dropped without BYE; hang them up first).
    pub fn shutdown(&self) -> Result<(), DriverClosed> {
        self.send(Command::Shutdown)
    }
}

/// Spawns the endpoint task.
pub struct EndpointDriver;

impl EndpointDriver {
    /// Starts the task owning an [`Endpoint`] fed by `incoming` (from
    /// [`Transports::bind`]). `config.local_addrs` is filled from the bound
    /// transports when empty. Must be called inside a tokio runtime.
    pub fn spawn(
        transports: Transports,
        incoming: mpsc::Receiver<Incoming>,
        mut config: EndpointConfig,
    ) -> (EndpointHandle, mpsc::Receiver<Event>) {
        if config.local_addrs.is_empty() {
            config.local_addrs = transports.local_addrs().to_vec();
        }
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(run(
            Endpoint::new(config),
            transports,
            incoming,
            cmd_rx,
            ev_tx,
        ));
        (EndpointHandle { tx: cmd_tx }, ev_rx)
    }
}

fn apply(ep: &mut Endpoint, cmd: Command, now: Instant) -> Result<(), CommandError> {
    match cmd {
        Command::Ringing(k) => ep.ringing(k, now),
        Command::Progress(k, sdp) => ep.progress(k, sdp, now),
        Command::Answer(k, sdp, h) => ep.answer(k, sdp, h, now),
        Command::Reject(k, s, r, h) => ep.reject(k, s, r.as_deref(), h, now),
        Command::Hangup(k) => ep.hangup(k, now),
        Command::RespondReInvite(k, a) => ep.respond_reinvite(k, a, now),
        Command::SendInfo(k, ct, b) => ep.send_info(k, &ct, b, now),
        Command::Shutdown => Ok(()),
    }
}

async fn run(
    mut ep: Endpoint,
    transports: Transports,
    mut incoming: mpsc::Receiver<Incoming>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<Event>,
) {
    loop {
        let deadline = ep.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            msg = incoming.recv() => {
                let Some(msg) = msg else { break };
                let now = Instant::now();
                ep.handle_incoming(msg, now);
                for _ in 1..BATCH {
                    match incoming.try_recv() {
                        Ok(m) => ep.handle_incoming(m, now),
                        Err(_) => break,
                    }
                }
            }
            cmd = commands.recv() => {
                match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(c) => {
                        if let Err(e) = apply(&mut ep, c, Instant::now()) {
                            tracing::debug!("endpoint command refused: {e}");
                        }
                    }
                }
            }
            _ = sleep => ep.handle_timeout(Instant::now()),
        }
        while let Some(t) = ep.poll_transmit() {
            send(&transports, t).await;
        }
        while let Some(e) = ep.poll_event() {
            if events.send(e).await.is_err() {
                tracing::debug!("endpoint event receiver dropped");
            }
        }
    }
}

async fn send(transports: &Transports, t: Transmit) {
    if t.target.transport.is_stream() {
        // On an open connection, queued in order right here; only opening a connection (a
        // request to a new peer) is left to a task of its own, so a slow connect never holds
        // up the endpoint.
        let bytes = match transports.send_queued(&t.target, t.bytes) {
            Ok(()) => return,
            Err(bytes) => bytes,
        };
        let tr = transports.clone();
        tokio::spawn(async move {
            if let Err(e) = tr.send(&t.target, bytes).await {
                tracing::debug!("SIP send to {} failed: {e}", t.target.addr);
            }
        });
    } else if let Err(e) = transports.send(&t.target, t.bytes).await {
        tracing::debug!("SIP send to {} failed: {e}", t.target.addr);
    }
}
