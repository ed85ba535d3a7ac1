//! SIP transactions (RFC 3261 §17), sans-IO.
//!
//! The layer between the transport and the dialogs: a server transaction
//! absorbs retransmitted requests by resending its last response and
//! retransmits non-2xx finals to INVITEs until the ACK (Timers G, H, I); a
//! client transaction retransmits our requests over UDP until a response
//! (Timers A, B, D for INVITE; E, F, K otherwise). Nothing here owns a socket
//! or a clock: inputs carry `now`, [`ServerTransaction::poll_timeout`] /
//! [`ClientTransaction::poll_timeout`] say when to call back, and what to send
//! is returned as octets. Transactions are matched by [`TransactionKey`]
//! (RFC 3261 §17.2.3 with the RFC 2543 fallback) or [`ClientKey`] (§17.1.3).
//! 2xx responses to INVITE are not retransmitted here: that is the dialog's job
//! (§13.3.1.4); the server transaction only waits in the Accepted state of
//! RFC 6026 so that a retransmitted INVITE is not taken for a new call.

use crate::header::{HeaderError, BRANCH_MAGIC_COOKIE};
use crate::message::{Method, Request, Response, StatusCode, Text};
use crate::timer::Timers;
use crate::transport::Target;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Identifies a server transaction (RFC 3261 §17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    /// The top Via carries an RFC 3261 branch (magic cookie): branch, sent-by
    /// and method, with ACK folded into INVITE so that it finds its transaction.
    Rfc3261 {
        branch: Text,
        sent_by: String,
        method: Method,
    },
    /// RFC 2543 peers (no magic cookie): Request-URI, Call-ID, CSeq number,
    /// From tag, top Via and method. The To tag is left out for INVITE and ACK:
    /// the ACK carries our tag, which the INVITE did not.
    Rfc2543 {
        uri: Text,
        call_id: Text,
        cseq: u32,
        from_tag: Option<Text>,
        to_tag: Option<Text>,
        via: String,
        method: Method,
    },
}

impl TransactionKey {
    /// The key of the server transaction `req` belongs to (an ACK or a CANCEL
    /// maps to its own method; see [`TransactionKey::with_method`]).
    pub fn for_request(req: &Request) -> Result<TransactionKey, HeaderError> {
        let via = req.headers.top_via()?;
        let method = match req.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        let sent_by = format!("{}:{}", via.host, via.sent_by_port());
        match via.branch() {
            Some(b) if via.is_rfc3261_branch() && b.len() > BRANCH_MAGIC_COOKIE.len() => {
                Ok(TransactionKey::Rfc3261 {
                    branch: Text::from(b.to_owned()),
                    sent_by,
                    method,
                })
            }
            _ => {
                let cseq = req.headers.cseq()?;
                let from_tag = req.headers.from()?.tag().map(|t| Text::from(t.to_owned()));
                let to_tag = if method == Method::Invite {
                    None
                } else {
                    req.headers.to()?.tag().map(|t| Text::from(t.to_owned()))
                };
                let via = match via.branch() {
                    Some(b) => format!("{sent_by};branch={b}"),
                    None => sent_by,
                };
                Ok(TransactionKey::Rfc2543 {
                    uri: req.uri.as_text().clone(),
                    call_id: req.headers.call_id()?.clone(),
                    cseq: cseq.seq,
                    from_tag,
                    to_tag,
                    via,
                    method,
                })
            }
        }
    }

    /// The same key for another method: a CANCEL looks up `with_method(Invite)`
    /// (RFC 3261 §9.2).
    pub fn with_method(&self, m: Method) -> TransactionKey {
        let mut k = self.clone();
        match &mut k {
            TransactionKey::Rfc3261 { method, .. } | TransactionKey::Rfc2543 { method, .. } => {
                *method = m
            }
        }
        k
    }

    /// The method of the transaction (INVITE for an ACK).
    pub fn method(&self) -> &Method {
        match self {
            TransactionKey::Rfc3261 { method, .. } | TransactionKey::Rfc2543 { method, .. } => {
                method
            }
        }
    }
}

/// Identifies a client transaction (RFC 3261 §17.1.3): our branch and the CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub branch: Text,
    pub method: Method,
}

impl ClientKey {
    /// The client transaction a response belongs to.
    pub fn for_response(resp: &Response) -> Result<ClientKey, HeaderError> {
        let via = resp.headers.top_via()?;
        let branch = via.branch().ok_or(HeaderError::Malformed("Via"))?;
        let cseq = resp.headers.cseq()?;
        Ok(ClientKey {
            branch: Text::from(branch.to_owned()),
            method: cseq.method,
        })
    }
}

/// States of a server transaction (RFC 3261 Figures 7 and 8, RFC 6026 Accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE, nothing sent yet.
    Trying,
    /// A provisional response was sent (INVITE starts here: 100 Trying).
    Proceeding,
    /// INVITE answered 2xx: waits Timer L absorbing retransmitted INVITEs.
    Accepted,
    /// Final (non-2xx for INVITE) sent; retransmitted until ACK for INVITE.
    Completed,
    /// INVITE: ACK received, waits Timer I absorbing ACK retransmissions.
    Confirmed,
    Terminated,
}

/// What a server transaction's timer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTimeout {
    /// Nothing due yet.
    Idle,
    /// Timer G: resend this non-2xx final.
    Retransmit(Bytes),
    /// Timer H: no ACK for our non-2xx final within 64·T1 (RFC 3261 §17.2.1).
    NoAck,
    /// Timer I, J or L: the transaction is over; forget it.
    Terminated,
}

/// A server transaction: one received request and our responses to it.
#[derive(Debug, Clone)]
pub struct ServerTransaction {
    invite: bool,
    state: ServerState,
    reliable: bool,
    timers: Timers,
    /// Where responses go (RFC 3261 §18.2.2).
    pub target: Target,
    last_response: Option<Bytes>,
    last_status: Option<StatusCode>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    end_at: Option<Instant>,
}

impl ServerTransaction {
    /// A transaction for a new request. An INVITE starts in Proceeding (its
    /// 100 Trying is sent by the caller right away), others in Trying.
    pub fn new(method: &Method, target: Target, timers: Timers) -> ServerTransaction {
        let invite = *method == Method::Invite;
        ServerTransaction {
            invite,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            reliable: target.transport.is_stream(),
            timers,
            target,
            last_response: None,
            last_status: None,
            retransmit_at: None,
            interval: timers.t1,
            end_at: None,
        }
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    pub fn is_invite(&self) -> bool {
        self.invite
    }

    /// The status of the last response sent.
    pub fn last_status(&self) -> Option<StatusCode> {
        self.last_status
    }

    /// True once a final response was sent.
    pub fn has_final(&self) -> bool {
        self.last_status.is_some_and(|s| s.is_final())
    }

    /// Passes a response from the TU: returns the octets to send now, or `None`
    /// if the transaction can no longer send (a final was already sent).
    pub fn respond(&mut self, status: StatusCode, bytes: Bytes, now: Instant) -> Option<Bytes> {
        match self.state {
            ServerState::Trying | ServerState::Proceeding => {}
            _ => return None,
        }
        self.last_response = Some(bytes.clone());
        self.last_status = Some(status);
        let timeout = self.timers.transaction_timeout();
        if status.is_provisional() {
            self.state = ServerState::Proceeding;
        } else if self.invite && status.is_success() {
            // RFC 6026 §7.1: Accepted, Timer L = 64·T1.
            self.state = ServerState::Accepted;
            self.end_at = Some(now + timeout);
        } else if self.invite {
            // RFC 3261 §17.2.1: Timer G (unreliable only) and Timer H.
            self.state = ServerState::Completed;
            self.interval = self.timers.t1;
            self.retransmit_at = if self.reliable {
                None
            } else {
                Some(now + self.interval)
            };
            self.end_at = Some(now + timeout);
        } else {
            // RFC 3261 §17.2.2: Timer J.
            self.state = ServerState::Completed;
            self.end_at = Some(now + self.timers.timer_j(self.reliable));
        }
        Some(bytes)
    }

    /// A retransmission of the request arrived: the octets to resend, if any
    /// (RFC 3261 §17.2.1 and §17.2.2: the last provisional or final response).
    pub fn on_retransmission(&self) -> Option<Bytes> {
        match self.state {
            ServerState::Proceeding | ServerState::Completed | ServerState::Accepted => {
                self.last_response.clone()
            }
            ServerState::Trying | ServerState::Confirmed | ServerState::Terminated => None,
        }
    }

    /// An ACK matched this transaction. Returns true when it acknowledged our
    /// non-2xx final (then Timer I starts); ACKs to 2xx belong to the dialog.
    pub fn on_ack(&mut self, now: Instant) -> bool {
        match self.state {
            ServerState::Completed if self.invite => {
                self.state = ServerState::Confirmed;
                self.retransmit_at = None;
                self.end_at = Some(now + self.timers.timer_i(self.reliable));
                true
            }
            ServerState::Confirmed => true,
            _ => false,
        }
    }

    /// The next instant [`ServerTransaction::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.retransmit_at, self.end_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires whichever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> ServerTimeout {
        if let Some(end) = self.end_at {
            if now >= end {
                let timed_out = self.state == ServerState::Completed && self.invite;
                self.state = ServerState::Terminated;
                self.retransmit_at = None;
                self.end_at = None;
                return if timed_out {
                    ServerTimeout::NoAck
                } else {
                    ServerTimeout::Terminated
                };
            }
        }
        if let Some(at) = self.retransmit_at {
            if now >= at {
                // RFC 3261 §17.2.1: Timer G doubles up to T2.
                self.interval = self.timers.backoff_capped(self.interval);
                self.retransmit_at = Some(now + self.interval);
                if let Some(b) = &self.last_response {
                    return ServerTimeout::Retransmit(b.clone());
                }
            }
        }
        ServerTimeout::Idle
    }
}

/// States of a client transaction (RFC 3261 Figures 5 and 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, no response yet.
    Calling,
    /// Non-INVITE sent, no response yet.
    Trying,
    Proceeding,
    /// Final received; absorbing retransmitted finals (Timer D or K).
    Completed,
    Terminated,
}

/// What a response does to a client transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientResponse {
    /// Hand the response to the TU.
    Deliver,
    /// Hand it to the TU; and, being a non-2xx final to an INVITE, the ACK must
    /// be sent: build it with [`ack_for_non2xx`] and pass it to
    /// [`ClientTransaction::set_ack`].
    DeliverAndAck,
    /// A retransmitted final: resend this ACK (INVITE) or ignore (`None`).
    Absorb(Option<Bytes>),
}

/// What a client transaction's timer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientTimeout {
    Idle,
    /// Timer A or E: resend the request.
    Retransmit(Bytes),
    /// Timer B or F: no final response within 64·T1; tell the TU (as a 408).
    TimedOut,
    /// Timer D or K: over; forget it.
    Terminated,
}

/// A client transaction: one request we sent.
#[derive(Debug, Clone)]
pub struct ClientTransaction {
    invite: bool,
    state: ClientState,
    reliable: bool,
    timers: Timers,
    pub target: Target,
    request: Bytes,
    ack: Option<Bytes>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    end_at: Option<Instant>,
}

impl ClientTransaction {
    /// Starts a transaction for `request` (already serialized; the caller sends
    /// it once now). Timers A/E run only over unreliable transports.
    pub fn new(
        method: &Method,
        request: Bytes,
        target: Target,
        timers: Timers,
        now: Instant,
    ) -> ClientTransaction {
        let invite = *method == Method::Invite;
        let reliable = target.transport.is_stream();
        ClientTransaction {
            invite,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            reliable,
            timers,
            target,
            request,
            ack: None,
            retransmit_at: if reliable {
                None
            } else {
                Some(now + timers.t1)
            },
            interval: timers.t1,
            end_at: Some(now + timers.transaction_timeout()),
        }
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The request as sent.
    pub fn request(&self) -> &Bytes {
        &self.request
    }

    /// Feeds a response with status `status`.
    pub fn on_response(&mut self, status: StatusCode, now: Instant) -> ClientResponse {
        use ClientState::*;
        match self.state {
            Calling | Trying | Proceeding => {
                if status.is_provisional() {
                    self.state = Proceeding;
                    if self.invite {
                        // RFC 3261 §17.1.1.2: Timer A stops in Proceeding.
                        self.retransmit_at = None;
                    } else if !self.reliable {
                        // RFC 3261 §17.1.2.2: in Proceeding, retransmit every T2.
                        self.interval = self.timers.t2;
                        self.retransmit_at = Some(now + self.interval);
                    }
                    return ClientResponse::Deliver;
                }
                self.retransmit_at = None;
                if self.invite && status.is_success() {
                    // RFC 3261 §17.1.1.2: a 2xx ends the transaction; the ACK is the dialog's.
                    self.state = Terminated;
                    self.end_at = None;
                    return ClientResponse::Deliver;
                }
                self.state = Completed;
                if self.invite {
                    self.end_at = Some(now + self.timers.timer_d(self.reliable));
                    ClientResponse::DeliverAndAck
                } else {
                    self.end_at = Some(now + self.timers.timer_k(self.reliable));
                    ClientResponse::Deliver
                }
            }
            Completed => ClientResponse::Absorb(if self.invite { self.ack.clone() } else { None }),
            Terminated => ClientResponse::Absorb(None),
        }
    }

    /// Stores the ACK for a non-2xx final so that retransmitted finals get it again.
    pub fn set_ack(&mut self, ack: Bytes) {
        self.ack = Some(ack);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.retransmit_at, self.end_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> ClientTimeout {
        if let Some(end) = self.end_at {
            if now >= end {
                let timed_out = matches!(
                    self.state,
                    ClientState::Calling | ClientState::Trying | ClientState::Proceeding
                );
                self.state = ClientState::Terminated;
                self.retransmit_at = None;
                self.end_at = None;
                return if timed_out {
                    ClientTimeout::TimedOut
                } else {
                    ClientTimeout::Terminated
                };
            }
        }
        if let Some(at) = self.retransmit_at {
            if now >= at {
                self.interval = if self.invite {
                    // RFC 3261 §17.1.1.2: Timer A doubles with no cap.
                    self.interval.saturating_mul(2)
                } else if self.state == ClientState::Proceeding {
                    self.timers.t2
                } else {
                    self.timers.backoff_capped(self.interval)
                };
                self.retransmit_at = Some(now + self.interval);
                return ClientTimeout::Retransmit(self.request.clone());
            }
        }
        ClientTimeout::Idle
    }
}

/// Builds the ACK for a non-2xx final response to `invite` (RFC 3261 §17.1.1.3):
/// same Request-URI, Call-ID, From, top Via (hence branch) and Route as the
/// INVITE, the To of the response, and `CSeq: <n> ACK`.
pub fn ack_for_non2xx(invite: &Request, response: &Response) -> Request {
    use crate::header::HeaderName;
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    if let Some(v) = invite.headers.values(&HeaderName::Via).next() {
        ack.headers.push(HeaderName::Via, v);
    }
    for h in &invite.headers {
        match h.name {
            HeaderName::From | HeaderName::CallId | HeaderName::Route | HeaderName::MaxForwards => {
                ack.headers.push(h.name.clone(), h.value.clone())
            }
            _ => {}
        }
    }
    if let Some(to) = response.headers.get(&HeaderName::To) {
        ack.headers.push(HeaderName::To, to.clone());
    }
    if let Ok(c) = invite.headers.cseq() {
        ack.headers
            .push(HeaderName::CSeq, Text::from(format!("{} ACK", c.seq)));
    }
    ack
}
