//! The SIP endpoint: dialin's user agent server, the API the gateway drives.
//!
//! ```text
//!  transport ──Incoming──▶ Endpoint::handle_message ──▶ transactions (§17) ──▶ dialogs (§12)
//!                               │                                              │
//!        ◀── poll_transmit ─────┘          poll_event ──▶ gateway ── answer/reject/hangup ─┘
//! ```
//!
//! [`Endpoint`] is sans-IO like the transactions and dialogs inside it: the
//! driver feeds it received messages and the time, and drains
//! [`Endpoint::poll_transmit`], [`Endpoint::poll_event`] and
//! [`Endpoint::poll_timeout`]. Each inbound INVITE becomes a call named by a
//! [`CallKey`]; the gateway answers it with the commands ([`Endpoint::answer`],
//! [`Endpoint::reject`], [`Endpoint::hangup`]...). The endpoint handles alone
//! what needs no decision: 100 Trying, retransmissions, CANCEL (RFC 3261 §9.2),
//! OPTIONS, 405/501 for methods we do not serve, 481 for unknown dialogs,
//! request validation (RFC 3261 §8.2), session-timer refreshes (RFC 4028).
//! [`driver::EndpointDriver`] is the thin tokio task around it.

pub mod driver;

pub use driver::{DriverClosed, EndpointDriver, EndpointHandle};

use crate::dialog::{
    negotiate_session_timer, Dialog, DialogTimeout, InDialog, OfferKind, SessionTimer,
    SessionTimerPolicy,
};
use crate::header::{HeaderName, Refresher};
use crate::message::{
    reject_unparsable, Limits, Message, Method, Request, Response, StatusCode, Text,
};
use crate::timer::Timers;
use crate::transaction::{
    ack_for_non2xx, ClientKey, ClientResponse, ClientTimeout, ClientTransaction, ServerTimeout,
    ServerTransaction, TransactionKey,
};
use crate::transport::{
    response_target, stamp_received, ConnectionId, Incoming, ListenAddr, Target, Transport,
};
use crate::validate::{check_request, ValidationPolicy};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Methods we implement, for `Allow` (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE";
/// Bodies we accept, for `Accept` (RFC 3261 §20.1).
pub const ACCEPT: &str = "application/sdp, application/dtmf-relay, application/dtmf";
/// Option tags we support (RFC 4028 session timers).
pub const SUPPORTED: &str = "timer";
/// Seconds a 503 asks the peer to wait (RFC 3261 §20.33).
const RETRY_AFTER_S: &str = "5";

/// Names one inbound call for the gateway: assigned by the endpoint to each
/// new INVITE, never reused within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);

impl fmt::Display for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call-{}", self.0)
    }
}

/// Endpoint settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub timers: Timers,
    /// Our bound addresses: Contact and Via use the one of the request's transport.
    pub local_addrs: Vec<ListenAddr>,
    /// Advertised instead of the bound IP (behind NAT).
    pub public_address: Option<IpAddr>,
    /// Value of `Server` / `User-Agent`.
    pub user_agent: String,
    /// Concurrent calls; more get 503 with Retry-After.
    pub max_calls: usize,
    /// Concurrent server+client transactions; more get a stateless 503.
    pub max_transactions: usize,
    pub session_timer: SessionTimerPolicy,
    pub validation: ValidationPolicy,
    pub limits: Limits,
    /// A call the gateway neither answers nor rejects within this is refused
    /// with 480, so no call waits forever (proxies give up after Timer C,
    /// more than 3 minutes, RFC 3261 §16.6).
    pub answer_timeout: Duration,
    /// Consulted for every request before any transaction exists or any
    /// `100 Trying` goes out; `None` lets everything in.
    pub source_filter: Option<SourceFilter>,
}

/// What the endpoint does with a request, decided from its source before any
/// work: a gateway on a public address refuses sources it has no trunk for
/// without spending transaction state on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceVerdict {
    /// Handle the request normally.
    Allow,
    /// Answer statelessly with this final status (RFC 3261 §8.2: a UAS may
    /// reject before creating a transaction); an ACK is dropped instead.
    Reject(StatusCode),
    /// Send nothing, keep nothing.
    Drop,
}

/// The gateway's decision function for [`EndpointConfig::source_filter`]:
/// `(source IP, request, now) -> verdict`. It runs on the endpoint task for
/// every request, so it must be quick and must not block.
#[derive(Clone)]
pub struct SourceFilter(Arc<FilterFn>);

type FilterFn = dyn Fn(IpAddr, &Request, Instant) -> SourceVerdict + Send + Sync;

impl SourceFilter {
    pub fn new(
        f: impl Fn(IpAddr, &Request, Instant) -> SourceVerdict + Send + Sync + 'static,
    ) -> SourceFilter {
        SourceFilter(Arc::new(f))
    }

    fn verdict(&self, source: IpAddr, req: &Request, now: Instant) -> SourceVerdict {
        (self.0)(source, req, now)
    }
}

impl fmt::Debug for SourceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SourceFilter(..)")
    }
}

impl Default for EndpointConfig {
    fn default() -> EndpointConfig {
        // We do session timers only: a Require of 100rel etc. gets 420.
        let validation = ValidationPolicy {
            supported: vec!["timer"],
            ..ValidationPolicy::default()
        };
        EndpointConfig {
            timers: Timers::default(),
            local_addrs: Vec::new(),
            public_address: None,
            user_agent: "dialin".to_owned(),
            max_calls: 10_000,
            max_transactions: 100_000,
            session_timer: SessionTimerPolicy::default(),
            validation,
            limits: Limits::default(),
            answer_timeout: Duration::from_secs(180),
            source_filter: None,
        }
    }
}

/// Octets to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub target: Target,
    pub bytes: Bytes,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE (answered 200).
    RemoteBye,
    /// The caller cancelled before the answer (200 to CANCEL, 487 to INVITE).
    Cancelled,
    /// The gateway rejected the INVITE with this status.
    Rejected(StatusCode),
    /// We hung up and our BYE got a final response.
    LocalHangup,
    /// We hung up and our BYE got no response (Timer F).
    ByeTimedOut,
    /// No ACK came for our 2xx; we sent BYE.
    AckTimeout,
    /// The session timer expired (RFC 4028 §10); we sent BYE.
    SessionExpired,
    /// The gateway did not answer within `answer_timeout`; we sent 480.
    Unanswered,
}

/// What the endpoint tells the gateway.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new INVITE (already answered 100 Trying). The gateway reads the
    /// Request-URI, From, To, Authorization and body, then calls
    /// [`Endpoint::answer`] or [`Endpoint::reject`].
    IncomingCall {
        key: CallKey,
        request: Box<Request>,
        source: SocketAddr,
        transport: Transport,
    },
    /// The caller cancelled before the answer; the endpoint sent 487.
    Cancelled { key: CallKey },
    /// The ACK for our 2xx; `body` is the caller's answer when our 2xx offered.
    Acked { key: CallKey, body: Option<Bytes> },
    /// No ACK for our 2xx within 64·T1; the endpoint sends BYE.
    AckTimeout { key: CallKey },
    /// A re-INVITE or UPDATE with an SDP offer: answer with [`Endpoint::respond_reinvite`].
    ReInvite {
        key: CallKey,
        kind: OfferKind,
        body: Bytes,
    },
    /// An in-dialog INFO (already answered 200).
    Info {
        key: CallKey,
        content_type: Option<Text>,
        body: Bytes,
    },
    /// The caller hung up (already answered 200).
    Bye { key: CallKey },
    /// The session timer ran out; the endpoint sends BYE.
    SessionExpired { key: CallKey },
    /// The endpoint forgot the call; the last event of every call.
    CallEnded { key: CallKey, reason: EndReason },
}

/// Why a gateway command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("{0} is not a current call")]
    UnknownCall(CallKey),
    #[error("{0} cannot do that now: {1}")]
    WrongState(CallKey, &'static str),
    #[error("status {0} is not valid here")]
    BadStatus(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Server(u64),
    Client(u64),
    Call(u64),
}

struct ServerEntry {
    key: TransactionKey,
    tx: ServerTransaction,
    call: Option<CallKey>,
    armed: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Bye,
    Refresh { cseq: u32 },
    Info,
}

struct ClientEntry {
    key: ClientKey,
    tx: ClientTransaction,
    call: CallKey,
    purpose: Purpose,
    request: Request,
    armed: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE received, no final response yet.
    Offered,
    /// 2xx sent, waiting for the ACK.
    Answered,
    Confirmed,
    /// Our BYE is out.
    Ending,
}

struct ReOffer {
    tx: u64,
    kind: OfferKind,
    request: Request,
}

struct Call {
    invite: Request,
    invite_tx: u64,
    invite_cseq: u32,
    /// The flow the INVITE came on; in-dialog requests go back over it.
    target: Target,
    local_tag: String,
    phase: Phase,
    dialog: Option<Dialog>,
    session: Option<SessionTimer>,
    reoffer: Option<ReOffer>,
    hangup_after_ack: bool,
    end_reason: EndReason,
    /// While Offered: when the endpoint refuses the call itself.
    answer_by: Instant,
    armed: Option<Instant>,
}

/// The sans-IO SIP user agent server. See the module docs for the loop.
pub struct Endpoint {
    config: EndpointConfig,
    next_id: u64,
    servers: HashMap<u64, ServerEntry>,
    server_index: HashMap<TransactionKey, u64>,
    clients: HashMap<u64, ClientEntry>,
    client_index: HashMap<ClientKey, u64>,
    calls: HashMap<u64, Call>,
    dialogs: HashMap<(Text, Text), CallKey>,
    timers: BinaryHeap<Reverse<(Instant, Slot)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl Endpoint {
    pub fn new(config: EndpointConfig) -> Endpoint {
        Endpoint {
            config,
            next_id: 1,
            servers: HashMap::new(),
            server_index: HashMap::new(),
            clients: HashMap::new(),
            client_index: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Number of calls the endpoint holds.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Number of live transactions (server and client).
    pub fn transaction_count(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    // ------------------------------------------------------------------
    // Output

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    // ------------------------------------------------------------------
    // Input

    /// Feeds a message from the transport driver.
    pub fn handle_incoming(&mut self, incoming: Incoming, now: Instant) {
        self.handle_message(
            incoming.message,
            incoming.source,
            incoming.transport,
            incoming.conn,
            now,
        );
    }

    /// Feeds raw octets (one datagram or one stream frame): parses, stamps
    /// `received`/`rport` (RFC 3581) and answers unparsable requests (400...).
    pub fn handle_datagram(
        &mut self,
        data: Bytes,
        source: SocketAddr,
        transport: Transport,
        conn: Option<ConnectionId>,
        now: Instant,
    ) {
        match Message::parse(data.clone(), &self.config.limits) {
            Ok(Message::Request(mut req)) => {
                stamp_received(&mut req, source);
                self.handle_message(Message::Request(req), source, transport, conn, now);
            }
            Ok(msg) => self.handle_message(msg, source, transport, conn, now),
            Err(e) => {
                if e.in_response {
                    return;
                }
                if let Some(resp) = reject_unparsable(&data, &e) {
                    if let Ok(via) = resp.headers.top_via() {
                        if let Ok(mut t) = response_target(&via, source, transport) {
                            t.conn = conn;
                            self.transmits.push_back(Transmit {
                                target: t,
                                bytes: resp.to_bytes(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Feeds a parsed message (requests must already carry `received`/`rport`).
    pub fn handle_message(
        &mut self,
        msg: Message,
        source: SocketAddr,
        transport: Transport,
        conn: Option<ConnectionId>,
        now: Instant,
    ) {
        match msg {
            Message::Request(req) => self.on_request(req, source, transport, conn, now),
            Message::Response(resp) => self.on_response(resp, now),
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, slot))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match slot {
                Slot::Server(id) => self.server_timeout(id, at, now),
                Slot::Client(id) => self.client_timeout(id, at, now),
                Slot::Call(id) => self.call_timeout(id, at, now),
            }
        }
    }

    // ------------------------------------------------------------------
    // Commands

    /// Sends a 180 Ringing (with our To tag, Contact and Record-Route).
    pub fn ringing(&mut self, key: CallKey, now: Instant) -> Result<(), CommandError> {
        self.provisional(key, StatusCode::RINGING, None, now)
    }

    /// Sends 183 Session Progress, with early media SDP if given.
    pub fn progress(
        &mut self,
        key: CallKey,
        sdp: Option<Bytes>,
        now: Instant,
    ) -> Result<(), CommandError> {
        self.provisional(key, StatusCode::SESSION_PROGRESS, sdp, now)
    }

    fn provisional(
        &mut self,
        key: CallKey,
        status: StatusCode,
        sdp: Option<Bytes>,
        now: Instant,
    ) -> Result<(), CommandError> {
        let call = self
            .calls
            .get(&key.0)
            .ok_or(CommandError::UnknownCall(key))?;
        if call.phase != Phase::Offered {
            return Err(CommandError::WrongState(key, "already answered"));
        }
        let mut resp = self.dialog_response(call, &call.invite, status);
        if let Some(sdp) = sdp {
            resp = resp.with_body("application/sdp", sdp);
        }
        let tx = call.invite_tx;
        self.respond(tx, resp, now);
        Ok(())
    }

    /// Answers the call with 200 OK: Contact, Allow, Supported, Record-Route
    /// copied, Session-Expires when negotiated, `sdp` as application/sdp (the
    /// answer; or our offer when the INVITE had none, then the caller's answer
    /// arrives in [`Event::Acked`]). `headers` are added as given.
    pub fn answer(
        &mut self,
        key: CallKey,
        sdp: Option<Bytes>,
        headers: Vec<(HeaderName, Text)>,
        now: Instant,
    ) -> Result<(), CommandError> {
        let call = self
            .calls
            .get(&key.0)
            .ok_or(CommandError::UnknownCall(key))?;
        if call.phase != Phase::Offered {
            return Err(CommandError::WrongState(key, "already answered"));
        }
        let mut dialog = Dialog::from_invite(&call.invite, &call.local_tag, self.config.timers)
            .map_err(|_| CommandError::WrongState(key, "INVITE cannot make a dialog"))?;
        let mut resp = self.dialog_response(call, &call.invite, StatusCode::OK);
        resp.headers
            .push(HeaderName::Allow, Text::from_static(ALLOW));
        resp.headers
            .push(HeaderName::Supported, Text::from_static(SUPPORTED));
        if let Some(st) = call.session {
            resp.headers
                .push(HeaderName::SessionExpires, Text::from(st.header_value()));
            if st.require {
                resp.headers
                    .push(HeaderName::Require, Text::from_static("timer"));
            }
        }
        for (n, v) in headers {
            resp.headers.push(n, v);
        }
        if let Some(sdp) = &sdp {
            resp = resp.with_body("application/sdp", sdp.clone());
        }
        let (tx, cseq, session, target) =
            (call.invite_tx, call.invite_cseq, call.session, call.target);
        let Some(bytes) = self.respond(tx, resp, now) else {
            return Err(CommandError::WrongState(key, "INVITE transaction is over"));
        };
        dialog.set_local_sdp(sdp);
        dialog.sent_2xx(cseq, bytes, target, now);
        dialog.start_session_timer(session, now);
        self.dialogs
            .insert((dialog.call_id().clone(), dialog.local_tag().clone()), key);
        if let Some(call) = self.calls.get_mut(&key.0) {
            call.dialog = Some(dialog);
            call.phase = Phase::Answered;
        }
        self.rearm(Slot::Call(key.0));
        Ok(())
    }

    /// Rejects the call with a final non-2xx (401 with `WWW-Authenticate`,
    /// 403, 488, 503 with `Retry-After`...); `headers` are added as given.
    pub fn reject(
        &mut self,
        key: CallKey,
        status: StatusCode,
        reason: Option<&str>,
        headers: Vec<(HeaderName, Text)>,
        now: Instant,
    ) -> Result<(), CommandError> {
        if status.0 < 300 || status.0 > 699 {
            return Err(CommandError::BadStatus(status.0));
        }
        let call = self
            .calls
            .get(&key.0)
            .ok_or(CommandError::UnknownCall(key))?;
        if call.phase != Phase::Offered {
            return Err(CommandError::WrongState(key, "already answered"));
        }
        let mut resp =
            Response::to_request(&call.invite, status, reason).with_to_tag(&call.local_tag);
        resp.headers.push(
            HeaderName::Server,
            Text::from(self.config.user_agent.clone()),
        );
        for (n, v) in headers {
            resp.headers.push(n, v);
        }
        let tx = call.invite_tx;
        self.respond(tx, resp, now);
        self.end_call(key, EndReason::Rejected(status));
        Ok(())
    }

    /// Ends the call: BYE when answered (after the ACK if it is still due),
    /// 480 Temporarily Unavailable when not answered yet.
    pub fn hangup(&mut self, key: CallKey, now: Instant) -> Result<(), CommandError> {
        let call = self
            .calls
            .get_mut(&key.0)
            .ok_or(CommandError::UnknownCall(key))?;
        match call.phase {
            Phase::Offered => self.reject(
                key,
                StatusCode::TEMPORARILY_UNAVAILABLE,
                None,
                Vec::new(),
                now,
            ),
            // RFC 3261 §15: the callee must not send BYE before the ACK (or its timeout).
            Phase::Answered => {
                call.hangup_after_ack = true;
                Ok(())
            }
            Phase::Confirmed => {
                self.send_bye(key, EndReason::LocalHangup, now);
                Ok(())
            }
            Phase::Ending => Ok(()),
        }
    }

    /// Answers a pending re-INVITE/UPDATE offer ([`Event::ReInvite`]): 200 with
    /// the SDP answer, or the given error status (488, 491...).
    pub fn respond_reinvite(
        &mut self,
        key: CallKey,
        answer: Result<Bytes, StatusCode>,
        now: Instant,
    ) -> Result<(), CommandError> {
        let call = self
            .calls
            .get_mut(&key.0)
            .ok_or(CommandError::UnknownCall(key))?;
        let offer = call
            .reoffer
            .take()
            .ok_or(CommandError::WrongState(key, "no offer pending"))?;
        if let Some(d) = call.dialog.as_mut() {
            d.offer_answered();
        }
        let call = self
            .calls
            .get(&key.0)
            .ok_or(CommandError::UnknownCall(key))?;
        match answer {
            Ok(sdp) => {
                let mut resp = self.dialog_response(call, &offer.request, StatusCode::OK);
                self.add_session_headers(call, &mut resp);
                resp = resp.with_body("application/sdp", sdp.clone());
                let target = call.target;
                if let Some(bytes) = self.respond(offer.tx, resp, now) {
                    if let Some(d) = self.calls.get_mut(&key.0).and_then(|c| c.dialog.as_mut()) {
                        d.set_local_sdp(Some(sdp));
                        if offer.kind == OfferKind::Invite {
                            if let Ok(c) = offer.request.headers.cseq() {
                                d.sent_2xx(c.seq, bytes, target, now);
                            }
                        }
                    }
                    self.rearm(Slot::Call(key.0));
                }
                Ok(())
            }
            Err(status) if status.0 >= 300 && status.0 <= 699 => {
                let resp = Response::to_request(&offer.request, status, None);
                self.respond(offer.tx, resp, now);
                Ok(())
            }
            Err(status) => Err(CommandError::BadStatus(status.0)),
        }
    }

    /// Sends an INFO in the dialog (e.g. DTMF relay).
    pub fn send_info(
        &mut self,
        key: CallKey,
        content_type: &str,
        body: Bytes,
        now: Instant,
    ) -> Result<(), CommandError> {
        let call = self
            .calls
            .get(&key.0)
            .ok_or(CommandError::UnknownCall(key))?;
        if call.phase != Phase::Confirmed {
            return Err(CommandError::WrongState(key, "not confirmed"));
        }
        let ct = Text::from(content_type.to_owned());
        self.send_in_dialog(
            key,
            Method::Info,
            Purpose::Info,
            Some((ct, body)),
            Vec::new(),
            now,
        );
        Ok(())
    }

    // ------------------------------------------------------------------
    // Requests

    fn on_request(
        &mut self,
        req: Request,
        source: SocketAddr,
        transport: Transport,
        conn: Option<ConnectionId>,
        now: Instant,
    ) {
        // Where the response goes when the Via cannot say: back to the source address and
        // port, as rport would (RFC 3581 §4); on a stream, the connection it came on, which
        // is where RFC 3261 §18.2.2 sends every response anyway.
        let to_source = Target {
            addr: source,
            transport,
            conn,
        };
        let via = match req.headers.top_via() {
            Ok(via) => via,
            Err(e) => {
                // The response still copies the Via as received (RFC 3261 §8.2.6.2), which
                // is all the client needs to match it. An ACK is never answered (§17.2.1).
                tracing::debug!(%source, error = %e, "request with a malformed top Via: 400");
                if req.method != Method::Ack && req.headers.get(&HeaderName::Via).is_some() {
                    let resp = Response::to_request(&req, StatusCode::BAD_REQUEST, Some("Bad Via"))
                        .with_to_tag(&random_token());
                    self.transmits.push_back(Transmit {
                        target: to_source,
                        bytes: resp.to_bytes(),
                    });
                }
                return;
            }
        };
        let target = match response_target(&via, source, transport) {
            Ok(mut t) => {
                t.conn = conn;
                t
            }
            Err(e) => {
                // A Via we cannot route by (a transport token we do not run, a sent-by
                // that needs DNS): the source it came from can still hear the answer.
                tracing::debug!(%source, error = %e, "Via unusable for the response; answering the source");
                to_source
            }
        };
        if let Some(filter) = &self.config.source_filter {
            match filter.verdict(source.ip(), &req, now) {
                SourceVerdict::Allow => {}
                SourceVerdict::Drop => return,
                // RFC 3261 §17.2.1: an ACK is never answered.
                SourceVerdict::Reject(_) if req.method == Method::Ack => return,
                SourceVerdict::Reject(status) => {
                    let resp =
                        Response::to_request(&req, status, None).with_to_tag(&random_token());
                    self.transmits.push_back(Transmit {
                        target,
                        bytes: resp.to_bytes(),
                    });
                    return;
                }
            }
        }
        if req.method == Method::Ack {
            self.on_ack(req, now);
            return;
        }
        let Ok(key) = TransactionKey::for_request(&req) else {
            // Missing headers: answer statelessly (validation names the problem).
            if let Err(r) = check_request(&req, &self.config.validation) {
                let resp = r.to_response(&req).with_to_tag(&random_token());
                self.transmits.push_back(Transmit {
                    target,
                    bytes: resp.to_bytes(),
                });
            }
            return;
        };
        if let Some(id) = self.server_index.get(&key) {
            // RFC 3261 §17.2.3: a retransmission; resend our last response.
            if let Some(b) = self.servers.get(id).and_then(|e| e.tx.on_retransmission()) {
                self.transmits.push_back(Transmit { target, bytes: b });
            }
            return;
        }
        if self.transaction_count() >= self.config.max_transactions {
            let resp = Response::to_request(&req, StatusCode::SERVICE_UNAVAILABLE, None)
                .with_to_tag(&random_token())
                .header(HeaderName::RetryAfter, RETRY_AFTER_S);
            self.transmits.push_back(Transmit {
                target,
                bytes: resp.to_bytes(),
            });
            return;
        }
        let id = self.new_server(key.clone(), &req.method, target);
        if req.method == Method::Invite {
            // RFC 3261 §17.2.1: 100 Trying at once so the caller stops retransmitting.
            let trying = Response::to_request(&req, StatusCode::TRYING, None);
            self.respond(id, trying, now);
        }
        if let Err(r) = check_request(&req, &self.config.validation) {
            let resp = r.to_response(&req).with_to_tag(&random_token());
            self.respond(id, resp, now);
            return;
        }
        let to_tag = req
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(|s| Text::from(s.to_owned())));
        match (&req.method, to_tag) {
            (Method::Cancel, _) => self.on_cancel(id, &key, &req, now),
            (_, Some(tag)) => self.on_in_dialog(id, tag, req, now),
            (Method::Invite, None) => self.on_invite(id, req, source, transport, now),
            (Method::Options, None) => {
                let resp = self.options_response(&req).with_to_tag(&random_token());
                self.respond(id, resp, now);
            }
            (Method::Bye | Method::Info | Method::Update | Method::Prack, None) => {
                self.simple(id, &req, StatusCode::CALL_DOES_NOT_EXIST, now)
            }
            (Method::Other(_), None) => self.simple(id, &req, StatusCode::NOT_IMPLEMENTED, now),
            (_, None) => {
                // REGISTER, SUBSCRIBE, MESSAGE...: known, but not served here.
                let resp = Response::to_request(&req, StatusCode::METHOD_NOT_ALLOWED, None)
                    .with_to_tag(&random_token())
                    .header(HeaderName::Allow, ALLOW);
                self.respond(id, resp, now);
            }
        }
    }

    fn on_invite(
        &mut self,
        tx: u64,
        req: Request,
        source: SocketAddr,
        transport: Transport,
        now: Instant,
    ) {
        if self.calls.len() >= self.config.max_calls {
            let resp = Response::to_request(&req, StatusCode::SERVICE_UNAVAILABLE, None)
                .with_to_tag(&random_token())
                .header(HeaderName::RetryAfter, RETRY_AFTER_S);
            self.respond(tx, resp, now);
            return;
        }
        // No Contact at all is RFC 2543 (RFC 4475 §3.4.1): accepted for backward
        // compatibility, the dialog then targets the From URI. A Contact we cannot read, or
        // `*`, is refused.
        let has_contact = req.headers.get(&HeaderName::Contact).is_some();
        if has_contact && req.headers.contacts().map(|c| c.is_empty()).unwrap_or(true) {
            let resp = Response::to_request(&req, StatusCode::BAD_REQUEST, Some("Bad Contact"))
                .with_to_tag(&random_token());
            self.respond(tx, resp, now);
            return;
        }
        let session = match negotiate_session_timer(&req, &self.config.session_timer) {
            Ok(s) => s,
            Err(min_se) => {
                // RFC 4028 §9: Session-Expires below our Min-SE.
                let resp = Response::to_request(&req, StatusCode::SESSION_INTERVAL_TOO_SMALL, None)
                    .with_to_tag(&random_token())
                    .header(HeaderName::MinSe, Text::from(min_se.to_string()));
                self.respond(tx, resp, now);
                return;
            }
        };
        let Some(target) = self.servers.get(&tx).map(|e| e.tx.target) else {
            return;
        };
        let invite_cseq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
        let key = CallKey(self.next_id);
        self.next_id += 1;
        if let Some(e) = self.servers.get_mut(&tx) {
            e.call = Some(key);
        }
        self.calls.insert(
            key.0,
            Call {
                invite: req.clone(),
                invite_tx: tx,
                invite_cseq,
                target,
                local_tag: random_token(),
                phase: Phase::Offered,
                dialog: None,
                session,
                reoffer: None,
                hangup_after_ack: false,
                end_reason: EndReason::LocalHangup,
                answer_by: now + self.config.answer_timeout,
                armed: None,
            },
        );
        self.rearm(Slot::Call(key.0));
        self.events.push_back(Event::IncomingCall {
            key,
            request: Box::new(req),
            source,
            transport,
        });
    }

    /// RFC 3261 §9.2: CANCEL matches the INVITE server transaction by branch.
    fn on_cancel(&mut self, tx: u64, key: &TransactionKey, req: &Request, now: Instant) {
        let Some(&inv) = self.server_index.get(&key.with_method(Method::Invite)) else {
            self.simple(tx, req, StatusCode::CALL_DOES_NOT_EXIST, now);
            return;
        };
        let resp = Response::to_request(req, StatusCode::OK, None);
        let call = self.servers.get(&inv).and_then(|e| e.call);
        let local_tag = call
            .and_then(|k| self.calls.get(&k.0))
            .map(|c| c.local_tag.clone());
        let resp = resp.with_to_tag(local_tag.as_deref().unwrap_or(&random_token()));
        self.respond(tx, resp, now);
        let Some(key) = call else { return };
        let Some(c) = self.calls.get(&key.0) else {
            return;
        };
        if c.phase != Phase::Offered {
            // Already answered: the CANCEL has no effect (RFC 3261 §9.2).
            return;
        }
        let resp = Response::to_request(&c.invite, StatusCode::REQUEST_TERMINATED, None)
            .with_to_tag(&c.local_tag);
        self.respond(inv, resp, now);
        self.events.push_back(Event::Cancelled { key });
        self.end_call(key, EndReason::Cancelled);
    }

    fn on_ack(&mut self, req: Request, now: Instant) {
        if let Ok(key) = TransactionKey::for_request(&req) {
            if let Some(&id) = self.server_index.get(&key) {
                let acked = self.servers.get_mut(&id).is_some_and(|e| e.tx.on_ack(now));
                if acked {
                    self.rearm(Slot::Server(id));
                    return;
                }
            }
        }
        let Some(call_key) = self.dialog_of(&req) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&call_key.0) else {
            return;
        };
        let Some(dialog) = call.dialog.as_mut() else {
            return;
        };
        if let InDialog::Ack { cseq, body } = dialog.on_request(&req, now) {
            if cseq == call.invite_cseq && call.phase == Phase::Answered {
                call.phase = Phase::Confirmed;
                let bye = call.hangup_after_ack;
                self.events.push_back(Event::Acked {
                    key: call_key,
                    body,
                });
                if bye {
                    self.send_bye(call_key, EndReason::LocalHangup, now);
                }
            }
            self.rearm(Slot::Call(call_key.0));
        }
    }

    fn dialog_of(&self, req: &Request) -> Option<CallKey> {
        let call_id = req.headers.call_id().ok()?;
        let to = req.headers.to().ok()?;
        let tag = to.tag()?;
        self.dialogs
            .get(&(call_id.clone(), Text::from(tag.to_owned())))
            .copied()
    }

    fn on_in_dialog(&mut self, tx: u64, _tag: Text, req: Request, now: Instant) {
        let Some(key) = self.dialog_of(&req) else {
            // RFC 3261 §12.2.2: no such dialog.
            self.simple(tx, &req, StatusCode::CALL_DOES_NOT_EXIST, now);
            return;
        };
        let Some(call) = self.calls.get_mut(&key.0) else {
            self.simple(tx, &req, StatusCode::CALL_DOES_NOT_EXIST, now);
            return;
        };
        if let Some(e) = self.servers.get_mut(&tx) {
            e.call = Some(key);
        }
        let Some(dialog) = call.dialog.as_mut() else {
            self.simple(tx, &req, StatusCode::CALL_DOES_NOT_EXIST, now);
            return;
        };
        let outcome = dialog.on_request(&req, now);
        match outcome {
            InDialog::Bye => {
                self.simple(tx, &req, StatusCode::OK, now);
                // RFC 3261 §15.1.2: pending requests in the dialog get 487.
                if let Some(off) = self.calls.get_mut(&key.0).and_then(|c| c.reoffer.take()) {
                    let r =
                        Response::to_request(&off.request, StatusCode::REQUEST_TERMINATED, None);
                    self.respond(off.tx, r, now);
                }
                let ending = self
                    .calls
                    .get(&key.0)
                    .is_some_and(|c| c.phase == Phase::Ending);
                self.events.push_back(Event::Bye { key });
                if !ending {
                    self.end_call(key, EndReason::RemoteBye);
                }
            }
            InDialog::Info { content_type, body } => {
                self.simple(tx, &req, StatusCode::OK, now);
                self.events.push_back(Event::Info {
                    key,
                    content_type,
                    body,
                });
            }
            InDialog::Options => {
                let resp = self.options_response(&req);
                self.respond(tx, resp, now);
            }
            InDialog::Offer { kind, body } => {
                if let Some(c) = self.calls.get_mut(&key.0) {
                    c.reoffer = Some(ReOffer {
                        tx,
                        kind,
                        request: req,
                    });
                }
                self.events.push_back(Event::ReInvite { key, kind, body });
                self.rearm(Slot::Call(key.0));
            }
            InDialog::Refresh { kind } => {
                let Some(call) = self.calls.get(&key.0) else {
                    return;
                };
                let mut resp = self.dialog_response(call, &req, StatusCode::OK);
                self.add_session_headers(call, &mut resp);
                let sdp = call.dialog.as_ref().and_then(|d| d.local_sdp().cloned());
                let target = call.target;
                if kind == OfferKind::Invite {
                    if let Some(sdp) = sdp {
                        resp = resp.with_body("application/sdp", sdp);
                    }
                }
                if let Some(bytes) = self.respond(tx, resp, now) {
                    if kind == OfferKind::Invite {
                        if let (Some(d), Ok(c)) = (
                            self.calls.get_mut(&key.0).and_then(|c| c.dialog.as_mut()),
                            req.headers.cseq(),
                        ) {
                            d.sent_2xx(c.seq, bytes, target, now);
                        }
                    }
                }
                self.rearm(Slot::Call(key.0));
            }
            InDialog::Reject(status) => {
                let mut resp = Response::to_request(&req, status, None);
                if status == StatusCode::METHOD_NOT_ALLOWED {
                    resp.headers
                        .push(HeaderName::Allow, Text::from_static(ALLOW));
                }
                self.respond(tx, resp, now);
            }
            InDialog::Ack { .. } | InDialog::AckAbsorbed => {}
        }
    }

    // ------------------------------------------------------------------
    // Responses to our requests

    fn on_response(&mut self, resp: Response, now: Instant) {
        let Ok(key) = ClientKey::for_response(&resp) else {
            return;
        };
        let Some(&id) = self.client_index.get(&key) else {
            // Stray response (RFC 3261 §18.1.2: no matching transaction): dropped.
            return;
        };
        let Some(entry) = self.clients.get_mut(&id) else {
            return;
        };
        let outcome = entry.tx.on_response(resp.status, now);
        let (call, purpose, target) = (entry.call, entry.purpose, entry.tx.target);
        match outcome {
            ClientResponse::Absorb(Some(ack)) => {
                self.transmits.push_back(Transmit { target, bytes: ack })
            }
            ClientResponse::Absorb(None) => {}
            ClientResponse::DeliverAndAck => {
                let ack = ack_for_non2xx(&entry.request, &resp).to_bytes();
                entry.tx.set_ack(ack.clone());
                self.transmits.push_back(Transmit { target, bytes: ack });
                self.client_final(call, purpose, Some(resp.status), now);
            }
            ClientResponse::Deliver => {
                if resp.status.is_final() {
                    if let (Purpose::Refresh { cseq }, true) = (purpose, resp.status.is_success()) {
                        self.ack_refresh(call, cseq, now);
                    }
                    self.client_final(call, purpose, Some(resp.status), now);
                }
            }
        }
        self.rearm(Slot::Client(id));
    }

    fn ack_refresh(&mut self, key: CallKey, cseq: u32, _now: Instant) {
        let via = self.our_via(key);
        let Some(call) = self.calls.get(&key.0) else {
            return;
        };
        let Some(d) = call.dialog.as_ref() else {
            return;
        };
        let ack = d.ack_for_2xx(cseq, &via).to_bytes();
        self.transmits.push_back(Transmit {
            target: call.target,
            bytes: ack,
        });
    }

    /// A final response (or `None`: a timeout) to one of our requests.
    fn client_final(
        &mut self,
        key: CallKey,
        purpose: Purpose,
        status: Option<StatusCode>,
        now: Instant,
    ) {
        match purpose {
            Purpose::Bye => {
                let reason = match (status, self.calls.get(&key.0)) {
                    (None, _) => EndReason::ByeTimedOut,
                    (Some(_), Some(c)) => c.end_reason,
                    (Some(_), None) => EndReason::LocalHangup,
                };
                self.end_call(key, reason);
            }
            Purpose::Refresh { .. } => {
                let session = self.calls.get(&key.0).and_then(|c| c.session);
                if let Some(d) = self.calls.get_mut(&key.0).and_then(|c| c.dialog.as_mut()) {
                    d.set_local_invite_pending(false);
                }
                match status {
                    Some(s) if s.is_success() => {
                        if let Some(d) = self.calls.get_mut(&key.0).and_then(|c| c.dialog.as_mut())
                        {
                            d.start_session_timer(session, now);
                        }
                        self.rearm(Slot::Call(key.0));
                    }
                    // RFC 4028 §7.1 leaves a failed refresh to expiry; we end the call then and there.
                    _ => {
                        if self.calls.contains_key(&key.0) {
                            self.events.push_back(Event::SessionExpired { key });
                            self.send_bye(key, EndReason::SessionExpired, now);
                        }
                    }
                }
            }
            Purpose::Info => {}
        }
    }

    // ------------------------------------------------------------------
    // Timers

    fn server_timeout(&mut self, id: u64, at: Instant, now: Instant) {
        let Some(e) = self.servers.get_mut(&id) else {
            return;
        };
        if e.armed != Some(at) {
            return;
        }
        e.armed = None;
        match e.tx.handle_timeout(now) {
            ServerTimeout::Retransmit(b) => {
                let target = e.tx.target;
                self.transmits.push_back(Transmit { target, bytes: b });
            }
            ServerTimeout::NoAck | ServerTimeout::Terminated => {
                let key = e.key.clone();
                self.servers.remove(&id);
                self.server_index.remove(&key);
                return;
            }
            ServerTimeout::Idle => {}
        }
        self.rearm(Slot::Server(id));
    }

    fn client_timeout(&mut self, id: u64, at: Instant, now: Instant) {
        let Some(e) = self.clients.get_mut(&id) else {
            return;
        };
        if e.armed != Some(at) {
            return;
        }
        e.armed = None;
        match e.tx.handle_timeout(now) {
            ClientTimeout::Retransmit(b) => {
                let target = e.tx.target;
                self.transmits.push_back(Transmit { target, bytes: b });
            }
            ClientTimeout::TimedOut => {
                let (call, purpose, key) = (e.call, e.purpose, e.key.clone());
                self.clients.remove(&id);
                self.client_index.remove(&key);
                self.client_final(call, purpose, None, now);
                return;
            }
            ClientTimeout::Terminated => {
                let key = e.key.clone();
                self.clients.remove(&id);
                self.client_index.remove(&key);
                return;
            }
            ClientTimeout::Idle => {}
        }
        self.rearm(Slot::Client(id));
    }

    fn call_timeout(&mut self, id: u64, at: Instant, now: Instant) {
        let key = CallKey(id);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.armed != Some(at) {
            return;
        }
        c.armed = None;
        if c.phase == Phase::Offered {
            if now >= c.answer_by {
                let resp =
                    Response::to_request(&c.invite, StatusCode::TEMPORARILY_UNAVAILABLE, None)
                        .with_to_tag(&c.local_tag);
                let tx = c.invite_tx;
                self.respond(tx, resp, now);
                self.end_call(key, EndReason::Unanswered);
            } else {
                self.rearm(Slot::Call(id));
            }
            return;
        }
        let Some(d) = c.dialog.as_mut() else { return };
        match d.handle_timeout(now) {
            DialogTimeout::Retransmit2xx(bytes, target) => {
                self.transmits.push_back(Transmit { target, bytes })
            }
            DialogTimeout::AckTimeout => {
                let initial = c.phase == Phase::Answered;
                if initial {
                    c.phase = Phase::Confirmed;
                }
                self.events.push_back(Event::AckTimeout { key });
                // RFC 3261 §13.3.1.4: the dialog is confirmed but the session ends.
                self.send_bye(key, EndReason::AckTimeout, now);
            }
            DialogTimeout::SessionExpired => {
                if c.phase == Phase::Answered {
                    c.phase = Phase::Confirmed;
                }
                self.events.push_back(Event::SessionExpired { key });
                self.send_bye(key, EndReason::SessionExpired, now);
            }
            DialogTimeout::RefreshDue => self.send_refresh(key, now),
            DialogTimeout::Idle => {}
        }
        self.rearm(Slot::Call(id));
    }

    fn rearm(&mut self, slot: Slot) {
        let (deadline, armed) = match slot {
            Slot::Server(id) => match self.servers.get_mut(&id) {
                Some(e) => (e.tx.poll_timeout(), &mut e.armed),
                None => return,
            },
            Slot::Client(id) => match self.clients.get_mut(&id) {
                Some(e) => (e.tx.poll_timeout(), &mut e.armed),
                None => return,
            },
            Slot::Call(id) => match self.calls.get_mut(&id) {
                Some(c) if c.phase == Phase::Offered => (Some(c.answer_by), &mut c.armed),
                Some(c) => (
                    c.dialog.as_ref().and_then(|d| d.poll_timeout()),
                    &mut c.armed,
                ),
                None => return,
            },
        };
        if deadline != *armed {
            *armed = deadline;
            if let Some(d) = deadline {
                self.timers.push(Reverse((d, slot)));
            }
        }
    }

    // ------------------------------------------------------------------
    // Building and sending

    fn new_server(&mut self, key: TransactionKey, method: &Method, target: Target) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let tx = ServerTransaction::new(method, target, self.config.timers);
        self.server_index.insert(key.clone(), id);
        self.servers.insert(
            id,
            ServerEntry {
                key,
                tx,
                call: None,
                armed: None,
            },
        );
        id
    }

    /// Sends `resp` through server transaction `id`; returns the octets sent.
    fn respond(&mut self, id: u64, mut resp: Response, now: Instant) -> Option<Bytes> {
        if resp.headers.get(&HeaderName::Server).is_none() && resp.status.0 != 100 {
            resp.headers.push(
                HeaderName::Server,
                Text::from(self.config.user_agent.clone()),
            );
        }
        let e = self.servers.get_mut(&id)?;
        let bytes = e.tx.respond(resp.status, resp.to_bytes(), now)?;
        let target = e.tx.target;
        self.transmits.push_back(Transmit {
            target,
            bytes: bytes.clone(),
        });
        self.rearm(Slot::Server(id));
        Some(bytes)
    }

    fn simple(&mut self, id: u64, req: &Request, status: StatusCode, now: Instant) {
        let mut resp = Response::to_request(req, status, None);
        let has_tag = req.headers.to().ok().is_some_and(|t| t.tag().is_some());
        if !has_tag && status.0 != 100 {
            resp.set_to_tag(&random_token());
        }
        self.respond(id, resp, now);
    }

    fn options_response(&self, req: &Request) -> Response {
        Response::to_request(req, StatusCode::OK, None)
            .header(HeaderName::Allow, ALLOW)
            .header(HeaderName::Accept, ACCEPT)
            .header(HeaderName::Supported, SUPPORTED)
    }

    /// Our host and port as advertised for `transport`.
    fn local_hostport(&self, transport: Transport, req_uri_host: Option<IpAddr>) -> (IpAddr, u16) {
        let la = self
            .config
            .local_addrs
            .iter()
            .find(|l| l.transport == transport);
        let port = la
            .map(|l| l.addr.port())
            .unwrap_or(transport.default_port());
        let bound = la.map(|l| l.addr.ip());
        let ip = match (self.config.public_address, bound) {
            (Some(p), _) => p,
            (None, Some(b)) if !b.is_unspecified() => b,
            // Bound to any address: the address the caller reached us at.
            _ => req_uri_host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        (ip, port)
    }

    fn contact_for(&self, call: &Call) -> Text {
        let uri_host = call.invite.uri.as_sip().and_then(|u| u.host.ip());
        let (ip, port) = self.local_hostport(call.target.transport, uri_host);
        let host = match ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let tp = match call.target.transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        };
        Text::from(format!("<sip:{host}:{port}{tp}>"))
    }

    /// A response in the call's dialog: our To tag, Record-Route copied
    /// (RFC 3261 §12.1.1), Contact.
    fn dialog_response(&self, call: &Call, req: &Request, status: StatusCode) -> Response {
        let mut resp = Response::to_request(req, status, None).with_to_tag(&call.local_tag);
        // Only responses to the dialog-creating INVITE carry Record-Route; in-dialog
        // requests are matched here by their CSeq, the initial INVITE's being fixed.
        let initial = req.method == Method::Invite
            && req.headers.cseq().is_ok_and(|c| c.seq == call.invite_cseq);
        if initial {
            for rr in req.headers.get_all(&HeaderName::RecordRoute) {
                resp.headers.push(HeaderName::RecordRoute, rr.clone());
            }
        }
        resp.headers
            .push(HeaderName::Contact, self.contact_for(call));
        resp
    }

    fn add_session_headers(&self, call: &Call, resp: &mut Response) {
        if let Some(st) = call.dialog.as_ref().and_then(|d| d.session_timer()) {
            resp.headers
                .push(HeaderName::SessionExpires, Text::from(st.header_value()));
            if st.require {
                resp.headers
                    .push(HeaderName::Require, Text::from_static("timer"));
            }
        }
    }

    fn our_via(&self, key: CallKey) -> String {
        let (transport, uri_host) = match self.calls.get(&key.0) {
            Some(c) => (
                c.target.transport,
                c.invite.uri.as_sip().and_then(|u| u.host.ip()),
            ),
            None => (Transport::Udp, None),
        };
        let (ip, port) = self.local_hostport(transport, uri_host);
        let host = match ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        format!(
            "SIP/2.0/{} {host}:{port};branch=z9hG4bK{};rport",
            transport.via_token(),
            random_token()
        )
    }

    fn send_in_dialog(
        &mut self,
        key: CallKey,
        method: Method,
        purpose: Purpose,
        body: Option<(Text, Bytes)>,
        extra: Vec<(HeaderName, Text)>,
        now: Instant,
    ) {
        let via = self.our_via(key);
        let ua = Text::from(self.config.user_agent.clone());
        let Some(call) = self.calls.get_mut(&key.0) else {
            return;
        };
        let target = call.target;
        let contact = Text::default();
        let Some(dialog) = call.dialog.as_mut() else {
            return;
        };
        let mut b = dialog
            .request(method.clone(), &via)
            .header(HeaderName::UserAgent, ua);
        if method == Method::Invite {
            b = b
                .header(HeaderName::Supported, SUPPORTED)
                .header(HeaderName::Allow, ALLOW);
            dialog.set_local_invite_pending(true);
        }
        for (n, v) in extra {
            b = b.header(n, v);
        }
        if let Some((ct, body)) = body {
            b = b.body(ct, body);
        }
        let mut req = b.build();
        if method == Method::Invite {
            let c = self
                .calls
                .get(&key.0)
                .map(|c| self.contact_for(c))
                .unwrap_or(contact);
            req.headers.push(HeaderName::Contact, c);
        }
        let Ok(ckey) = req.headers.top_via().map_err(|_| ()).and_then(|v| {
            v.branch()
                .map(|b| ClientKey {
                    branch: Text::from(b.to_owned()),
                    method: method.clone(),
                })
                .ok_or(())
        }) else {
            return;
        };
        let bytes = req.to_bytes();
        let id = self.next_id;
        self.next_id += 1;
        let tx = ClientTransaction::new(&method, bytes.clone(), target, self.config.timers, now);
        self.client_index.insert(ckey.clone(), id);
        self.clients.insert(
            id,
            ClientEntry {
                key: ckey,
                tx,
                call: key,
                purpose,
                request: req,
                armed: None,
            },
        );
        self.transmits.push_back(Transmit { target, bytes });
        self.rearm(Slot::Client(id));
    }

    fn send_bye(&mut self, key: CallKey, reason: EndReason, now: Instant) {
        let Some(call) = self.calls.get_mut(&key.0) else {
            return;
        };
        if call.phase == Phase::Ending {
            return;
        }
        call.phase = Phase::Ending;
        call.end_reason = reason;
        if let Some(d) = call.dialog.as_mut() {
            d.terminate();
        }
        self.send_in_dialog(key, Method::Bye, Purpose::Bye, None, Vec::new(), now);
        self.rearm(Slot::Call(key.0));
    }

    fn send_refresh(&mut self, key: CallKey, now: Instant) {
        let Some(call) = self.calls.get(&key.0) else {
            return;
        };
        let Some(d) = call.dialog.as_ref() else {
            return;
        };
        let sdp = d.local_sdp().cloned();
        let session = call.session;
        let cseq = d.local_cseq() + 1;
        let body = sdp.map(|s| (Text::from_static("application/sdp"), s));
        // Our refresh restates the interval with us as refresher (RFC 4028 §7.4).
        let extra: Vec<(HeaderName, Text)> = session
            .map(|st| {
                let st = SessionTimer {
                    refresher: Refresher::Uas,
                    ..st
                };
                vec![(HeaderName::SessionExpires, Text::from(st.header_value()))]
            })
            .unwrap_or_default();
        self.send_in_dialog(
            key,
            Method::Invite,
            Purpose::Refresh { cseq },
            body,
            extra,
            now,
        );
    }

    fn end_call(&mut self, key: CallKey, reason: EndReason) {
        if let Some(call) = self.calls.remove(&key.0) {
            if let Some(d) = call.dialog {
                self.dialogs
                    .remove(&(d.call_id().clone(), d.local_tag().clone()));
            }
            self.events.push_back(Event::CallEnded { key, reason });
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("calls", &self.calls.len())
            .field("server_transactions", &self.servers.len())
            .field("client_transactions", &self.clients.len())
            .finish()
    }
}
