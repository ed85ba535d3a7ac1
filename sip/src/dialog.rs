//! UAS dialogs (RFC 3261 §12–§15) with session timers (RFC 4028), sans-IO.
//!
//! A [`Dialog`] is made when we answer an inbound INVITE (RFC 3261 §12.1.1):
//! the caller's From tag and our To tag identify it, its route set is the
//! INVITE's Record-Route, its remote target the INVITE's Contact (the From URI for an
//! RFC 2543 INVITE without one). It then
//! classifies every in-dialog request ([`Dialog::on_request`]: ACK, BYE,
//! INFO, re-INVITE/UPDATE offers and refreshes, OPTIONS), checks CSeq order
//! (§12.2.2), retransmits our 2xx until the ACK comes (§13.3.1.4), builds the
//! requests we send in it (§12.2.1.1: BYE, re-INVITE, INFO) and runs the
//! RFC 4028 session timer. Building responses and sending them is the
//! endpoint's job; this module decides.

use crate::header::{HeaderName, Refresher};
use crate::message::{Method, Request, RequestBuilder, StatusCode, Text};
use crate::timer::Timers;
use crate::transport::Target;
use crate::uri::Uri;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Why a dialog could not be made from an INVITE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error("INVITE has no usable Contact (RFC 3261 §8.1.1.8)")]
    NoContact,
    #[error("INVITE has a malformed {0}")]
    Malformed(&'static str),
}

/// Dialog state (RFC 3261 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Our 2xx is sent, its ACK not yet received.
    Early,
    Confirmed,
    Terminated,
}

/// How an offer reached us in the dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OfferKind {
    Invite,
    Update,
}

/// What an in-dialog request means for the TU, decided by [`Dialog::on_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InDialog {
    /// The ACK for our pending 2xx; its body (the answer when our 2xx offered).
    Ack { cseq: u32, body: Option<Bytes> },
    /// An ACK we have nothing pending for (a retransmission): dropped.
    AckAbsorbed,
    /// Answer 200; the call is over (RFC 3261 §15.1.2).
    Bye,
    /// Answer 200; pass the body on (DTMF relay etc.).
    Info {
        content_type: Option<Text>,
        body: Bytes,
    },
    /// A re-INVITE or UPDATE with an SDP offer: the TU answers.
    Offer { kind: OfferKind, body: Bytes },
    /// A re-INVITE or UPDATE without a body: a session refresh (RFC 4028 §7.4).
    /// The endpoint answers it itself: 200 with our last SDP for INVITE (an
    /// offer, whose answer in the ACK is the unchanged session), no body for UPDATE.
    Refresh { kind: OfferKind },
    /// Answer 200 with our capabilities.
    Options,
    /// Answer with this status (491 glare, 500 out of order, 405 unsupported).
    Reject(StatusCode),
}

/// What a dialog timer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogTimeout {
    Idle,
    /// Resend our 2xx (RFC 3261 §13.3.1.4: T1 doubling to T2).
    Retransmit2xx(Bytes, Target),
    /// No ACK within 64·T1 of our 2xx: the session should end with a BYE.
    AckTimeout,
    /// RFC 4028 §10: no refresh before expiry (minus the safety margin); BYE.
    SessionExpired,
    /// RFC 4028 §7.1: we are the refresher and half the interval has passed.
    RefreshDue,
}

/// The session-timer rules we apply to inbound INVITEs (RFC 4028).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerPolicy {
    /// Our Min-SE: smaller Session-Expires get 422 (RFC 4028 §5: at least 90 s).
    pub min_se: u32,
    /// The interval we ask for when the caller supports timers but did not
    /// ask one, and the largest we accept (we lower larger ones, §9).
    pub session_expires: u32,
}

impl Default for SessionTimerPolicy {
    fn default() -> SessionTimerPolicy {
        // RFC 4028 §4: recommended default 1800 s; §5: Min-SE floor 90 s.
        SessionTimerPolicy {
            min_se: 90,
            session_expires: 1800,
        }
    }
}

/// A negotiated session timer: what our 2xx says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval: u32,
    pub refresher: Refresher,
    /// Put `Require: timer` in the 2xx (the caller supports timers, RFC 4028 §9).
    pub require: bool,
}

impl SessionTimer {
    /// The `Session-Expires` value for our 2xx.
    pub fn header_value(&self) -> String {
        let r = match self.refresher {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        };
        format!("{};refresher={}", self.interval, r)
    }
}

/// Negotiates RFC 4028 session timers for an inbound INVITE.
/// `Ok(None)`: no session timer (the caller neither asked nor supports it).
/// `Err(min_se)`: answer 422 with `Min-SE: <min_se>` (RFC 4028 §9).
pub fn negotiate_session_timer(
    invite: &Request,
    policy: &SessionTimerPolicy,
) -> Result<Option<SessionTimer>, u32> {
    let supports = invite
        .headers
        .supported()
        .iter()
        .any(|t| t.eq_ignore_ascii_case("timer"));
    let se = invite.headers.session_expires().ok().flatten();
    let peer_min = invite
        .headers
        .get(&HeaderName::MinSe)
        .and_then(|v| {
            v.split(';')
                .next()
                .and_then(|n| n.trim().parse::<u32>().ok())
        })
        .unwrap_or(0);
    let min = policy.min_se.max(peer_min);
    match se {
        Some(se) => {
            if se.delta_seconds < policy.min_se {
                return Err(min);
            }
            let interval = se.delta_seconds.min(policy.session_expires.max(min));
            // RFC 4028 §9: keep the caller's choice; otherwise let a timer-capable
            // caller refresh, and refresh ourselves for one that cannot.
            let refresher = match se.refresher {
                Some(r) => r,
                None if supports => Refresher::Uac,
                None => Refresher::Uas,
            };
            Ok(Some(SessionTimer {
                interval,
                refresher,
                require: supports,
            }))
        }
        None if supports => Ok(Some(SessionTimer {
            interval: policy.session_expires.max(min),
            refresher: Refresher::Uac,
            require: true,
        })),
        None => Ok(None),
    }
}

#[derive(Debug, Clone)]
struct Pending2xx {
    cseq: u32,
    bytes: Bytes,
    target: Target,
    retransmit: bool,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// A UAS dialog.
#[derive(Debug, Clone)]
pub struct Dialog {
    call_id: Text,
    local_tag: Text,
    remote_tag: Option<Text>,
    /// Our URI as the caller's To, with our tag: the From of our requests.
    local_party: Text,
    /// The caller's From (with its tag): the To of our requests.
    remote_party: Text,
    route_set: Vec<Text>,
    remote_target: Uri,
    remote_cseq: u32,
    local_cseq: u32,
    state: DialogState,
    timers: Timers,
    pending_2xx: Option<Pending2xx>,
    /// A re-INVITE/UPDATE offer we have not answered yet.
    offer_pending: Option<OfferKind>,
    /// A re-INVITE of ours is in progress (glare, RFC 3261 §14.1).
    local_invite_pending: bool,
    session: Option<SessionTimer>,
    session_deadline: Option<Instant>,
    local_sdp: Option<Bytes>,
}

impl Dialog {
    /// The dialog our 2xx to `invite` creates (RFC 3261 §12.1.1).
    pub fn from_invite(
        invite: &Request,
        local_tag: &str,
        timers: Timers,
    ) -> Result<Dialog, DialogError> {
        let h = &invite.headers;
        let call_id = h
            .call_id()
            .map_err(|_| DialogError::Malformed("Call-ID"))?
            .clone();
        let from = h.from().map_err(|_| DialogError::Malformed("From"))?;
        let to_value = h.get(&HeaderName::To).ok_or(DialogError::Malformed("To"))?;
        let from_value = h
            .get(&HeaderName::From)
            .ok_or(DialogError::Malformed("From"))?;
        let cseq = h.cseq().map_err(|_| DialogError::Malformed("CSeq"))?;
        // RFC 2543 did not require a Contact; without one, requests in the dialog go to
        // the From URI, where an RFC 2543 user agent takes them.
        let remote_target = if h.get(&HeaderName::Contact).is_none() {
            from.uri.clone()
        } else {
            h.contacts()
                .ok()
                .and_then(|c| c.into_iter().next())
                .ok_or(DialogError::NoContact)?
                .uri
        };
        let route_set: Vec<Text> = h.values(&HeaderName::RecordRoute).collect();
        Ok(Dialog {
            call_id,
            local_tag: Text::from(local_tag.to_owned()),
            remote_tag: from.tag().map(|t| Text::from(t.to_owned())),
            local_party: Text::from(format!("{to_value};tag={local_tag}")),
            remote_party: from_value.clone(),
            route_set,
            remote_target,
            remote_cseq: cseq.seq,
            local_cseq: 0,
            state: DialogState::Early,
            timers,
            pending_2xx: None,
            offer_pending: None,
            local_invite_pending: false,
            session: None,
            session_deadline: None,
            local_sdp: None,
        })
    }

    pub fn call_id(&self) -> &Text {
        &self.call_id
    }
    pub fn local_tag(&self) -> &Text {
        &self.local_tag
    }
    pub fn remote_tag(&self) -> Option<&Text> {
        self.remote_tag.as_ref()
    }
    pub fn state(&self) -> DialogState {
        self.state
    }
    pub fn route_set(&self) -> &[Text] {
        &self.route_set
    }
    pub fn remote_target(&self) -> &Uri {
        &self.remote_target
    }
    pub fn local_cseq(&self) -> u32 {
        self.local_cseq
    }
    pub fn session_timer(&self) -> Option<SessionTimer> {
        self.session
    }
    /// Our last SDP (the answer or offer in our last 2xx).
    pub fn local_sdp(&self) -> Option<&Bytes> {
        self.local_sdp.as_ref()
    }
    pub fn set_local_sdp(&mut self, sdp: Option<Bytes>) {
        if sdp.is_some() {
            self.local_sdp = sdp;
        }
    }
    /// True while a re-INVITE/UPDATE offer waits for the TU's answer.
    pub fn offer_pending(&self) -> Option<OfferKind> {
        self.offer_pending
    }
    pub fn set_local_invite_pending(&mut self, pending: bool) {
        self.local_invite_pending = pending;
    }

    /// Our 2xx with CSeq `cseq` was sent to `target`: retransmit it over
    /// unreliable transports until its ACK, give up after 64·T1 (§13.3.1.4).
    pub fn sent_2xx(&mut self, cseq: u32, bytes: Bytes, target: Target, now: Instant) {
        self.pending_2xx = Some(Pending2xx {
            cseq,
            bytes,
            target,
            retransmit: !target.transport.is_stream(),
            next: now + self.timers.t1,
            interval: self.timers.t1,
            give_up: now + self.timers.transaction_timeout(),
        });
    }

    /// The TU answered the pending offer (or rejected it).
    pub fn offer_answered(&mut self) {
        self.offer_pending = None;
    }

    /// Starts (or restarts, on a refresh) the RFC 4028 session timer.
    pub fn start_session_timer(&mut self, timer: Option<SessionTimer>, now: Instant) {
        self.session = timer;
        self.session_deadline = timer.map(|t| {
            let interval = Duration::from_secs(u64::from(t.interval));
            match t.refresher {
                // §7.1: the refresher refreshes at half the interval.
                Refresher::Uas => now + interval / 2,
                // §10: the other side sends BYE at expiry minus min(32 s, interval/3).
                Refresher::Uac => now + interval - (interval / 3).min(Duration::from_secs(32)),
            }
        });
    }

    /// Classifies an in-dialog request (its transaction already made, so
    /// retransmissions never get here) and updates the dialog state.
    pub fn on_request(&mut self, req: &Request, now: Instant) -> InDialog {
        let Ok(cseq) = req.headers.cseq() else {
            return InDialog::Reject(StatusCode::BAD_REQUEST);
        };
        if req.method == Method::Ack {
            return match &self.pending_2xx {
                Some(p) if p.cseq == cseq.seq => {
                    self.pending_2xx = None;
                    self.state = DialogState::Confirmed;
                    let body = if req.body.is_empty() {
                        None
                    } else {
                        Some(req.body.clone())
                    };
                    InDialog::Ack {
                        cseq: cseq.seq,
                        body,
                    }
                }
                _ => InDialog::AckAbsorbed,
            };
        }
        // RFC 3261 §12.2.2: a lower CSeq than the last one is out of order → 500.
        if cseq.seq <= self.remote_cseq {
            return InDialog::Reject(StatusCode::SERVER_INTERNAL_ERROR);
        }
        self.remote_cseq = cseq.seq;
        match req.method {
            Method::Bye => {
                self.state = DialogState::Terminated;
                self.pending_2xx = None;
                self.session_deadline = None;
                InDialog::Bye
            }
            Method::Info => InDialog::Info {
                content_type: req.headers.get(&HeaderName::ContentType).cloned(),
                body: req.body.clone(),
            },
            Method::Options => InDialog::Options,
            Method::Invite | Method::Update => {
                let kind = if req.method == Method::Invite {
                    OfferKind::Invite
                } else {
                    OfferKind::Update
                };
                // RFC 3261 §14.2 / RFC 3311 §5.2: an offer while one is outstanding → 491.
                if self.offer_pending.is_some() || self.local_invite_pending {
                    return InDialog::Reject(StatusCode::REQUEST_PENDING);
                }
                if kind == OfferKind::Invite && self.pending_2xx.is_some() {
                    return InDialog::Reject(StatusCode::REQUEST_PENDING);
                }
                // Any re-INVITE/UPDATE refreshes the session (RFC 4028 §10).
                if let Some(mut t) = self.session {
                    if let Ok(Some(se)) = req.headers.session_expires() {
                        t.interval = se.delta_seconds.max(90);
                        if let Some(r) = se.refresher {
                            t.refresher = r;
                        }
                    }
                    self.start_session_timer(Some(t), now);
                }
                if req.body.is_empty() {
                    InDialog::Refresh { kind }
                } else {
                    self.offer_pending = Some(kind);
                    InDialog::Offer {
                        kind,
                        body: req.body.clone(),
                    }
                }
            }
            _ => InDialog::Reject(StatusCode::METHOD_NOT_ALLOWED),
        }
    }

    /// The dialog ended (BYE sent or received).
    pub fn terminate(&mut self) {
        self.state = DialogState::Terminated;
        self.pending_2xx = None;
        self.session_deadline = None;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let p = self.pending_2xx.as_ref().map(|p| {
            if p.retransmit {
                p.next.min(p.give_up)
            } else {
                p.give_up
            }
        });
        match (p, self.session_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> DialogTimeout {
        if let Some(p) = &mut self.pending_2xx {
            if now >= p.give_up {
                self.pending_2xx = None;
                return DialogTimeout::AckTimeout;
            }
            if p.retransmit && now >= p.next {
                p.interval = self.timers.backoff_capped(p.interval);
                p.next = now + p.interval;
                return DialogTimeout::Retransmit2xx(p.bytes.clone(), p.target);
            }
        }
        if let (Some(d), Some(t)) = (self.session_deadline, self.session) {
            if now >= d {
                return match t.refresher {
                    Refresher::Uac => {
                        self.session_deadline = None;
                        DialogTimeout::SessionExpired
                    }
                    Refresher::Uas => {
                        // The endpoint sends the refresh and restarts the timer
                        // when it succeeds, or ends the call when it fails.
                        self.session_deadline = None;
                        DialogTimeout::RefreshDue
                    }
                };
            }
        }
        DialogTimeout::Idle
    }

    /// A request in this dialog (RFC 3261 §12.2.1.1): Request-URI = remote
    /// target, Route = route set (loose routing), From/To/Call-ID of the
    /// dialog, the next local CSeq, Max-Forwards 70 and our Via (`via`, with
    /// its branch). Add a body with [`RequestBuilder::body`].
    pub fn request(&mut self, method: Method, via: &str) -> RequestBuilder {
        self.local_cseq += 1;
        let mut b = RequestBuilder::new(method, self.remote_target.clone())
            .header(HeaderName::Via, via.to_owned());
        for r in &self.route_set {
            b = b.header(HeaderName::Route, r.clone());
        }
        b.header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, self.local_party.clone())
            .header(HeaderName::To, self.remote_party.clone())
            .header(HeaderName::CallId, self.call_id.clone())
            .cseq(self.local_cseq)
    }

    /// The ACK for the 2xx to our re-INVITE with CSeq `cseq` (RFC 3261 §13.2.2.4):
    /// a new transaction (new branch in `via`), the INVITE's CSeq number.
    pub fn ack_for_2xx(&self, cseq: u32, via: &str) -> Request {
        let mut b = RequestBuilder::new(Method::Ack, self.remote_target.clone())
            .header(HeaderName::Via, via.to_owned());
        for r in &self.route_set {
            b = b.header(HeaderName::Route, r.clone());
        }
        b.header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, self.local_party.clone())
            .header(HeaderName::To, self.remote_party.clone())
            .header(HeaderName::CallId, self.call_id.clone())
            .cseq(cseq)
            .build()
    }
}
