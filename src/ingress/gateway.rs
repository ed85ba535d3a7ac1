//! The gateway's SIP front (DESIGN.md §Call flow steps 1–2): from an INVITE to a running
//! call task.
//!
//! Sources matching no trunk never reach this task: [`source_filter`] runs inside the SIP
//! endpoint, before any transaction or `100 Trying`, and answers them with a stateless `403`
//! at a bounded rate per source, then drops them silently (DESIGN.md §Privacy and security
//! defaults). One task owns the endpoint's event stream. For each new INVITE it decides, in
//! this order and before allocating anything: draining → `503`; source address matching no
//! trunk (the trunks changed since the filter looked) → `403`, same rate bound; called
//! number not accepted → `403`; digest credentials when the trunk has them → `401`
//! challenge (`stale=true` on an expired nonce); media loops running late
//! ([`crate::ops::overload`]) or concurrent-call limits (global, per trunk) → `503` +
//! `Retry-After`; SDP negotiation → `488` when no codec matches. Then it leases an RTP port, binds it, answers
//! `200 OK` with our SDP and hands the call to [`crate::call::run`]. Later events of a call
//! (ACK, BYE, INFO, re-INVITE…) are routed to its task by [`CallKey`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chrono::Utc;
use dialin_media::codec::CodecConfig;
use dialin_media::ports::{PortAllocator, PortLease};
use dialin_media::stream::SourcePolicy;
use dialin_media::prompt::{Language as PromptLanguage, PromptCatalog};
use dialin_sip::digest::{Algorithm, Credential, DigestServer, VerifyOutcome};
use dialin_sip::endpoint::{
    CallKey, EndpointHandle, Event as SipEvent, SourceFilter, SourceVerdict,
};
use dialin_sip::header::HeaderName;
use dialin_sip::message::{Method, Request, StatusCode, Text};
use dialin_sip::sdp::{
    self, AnswerPolicy, LocalMedia, OfferPolicy, SessionDescription, SrtpPolicy as SdpSrtp,
};
use dialin_sip::transport::Transport;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::call::{self, CallLimits, CallSetup, LegTemplate};
use crate::call::registry::{CallId, NewCall, RegisterError};
use crate::config::{Config, Language, SrtpPolicy, TrunkConfig};
use crate::call::ivr::IvrConfig;
use crate::call::leg::CallerLeg;
use crate::privacy::PhoneNumber;
use crate::room::RoomBackend;
use crate::serve::Services;
use crate::store::CallRecordStart;
use crate::ingress::trunk::TrunkMatch;

/// Seconds a refused caller should wait before retrying (RFC 3261 §20.33).
const RETRY_AFTER_S: &str = "5";
/// Lifetime of our digest nonces; a later response gets `stale=true` (RFC 7616 §3.3).
const NONCE_TTL: Duration = Duration::from_secs(300);
/// How often forgotten sources are pruned from the unmatched-source rate limiter.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The endpoint's pre-filter: a request from an address no trunk allows gets a stateless
/// `403` while its source's token bucket (`[security.unmatched_source]`) has tokens, then
/// nothing, counted in `dialin_unmatched_source_dropped_total`. Runs on the endpoint task
/// for every request; costs one read of the trunk table and one bucket update.
pub fn source_filter(services: &Services) -> SourceFilter {
    let trunks = services.trunks.clone();
    let limiter = services.unmatched.clone();
    let metrics = services.metrics.clone();
    let readiness = services.readiness.clone();
    let overload = services.overload.clone();
    SourceFilter::new(move |ip, req, now| {
        if trunks.load().is_trunk_address(ip) {
            // A SIP load balancer probes nodes with OPTIONS (Kamailio's dispatcher): a
            // draining or overloaded node answers 503 so that it is taken out of rotation.
            if req.method == Method::Options
                && (readiness.is_draining()
                    || overload.is_overloaded()
                    || readiness.store_problem().is_some())
            {
                SourceVerdict::Reject(StatusCode(503))
            } else {
                SourceVerdict::Allow
            }
        } else if limiter.allow(ip, now) {
            SourceVerdict::Reject(StatusCode(403))
        } else {
            metrics.unmatched_source_dropped();
            SourceVerdict::Drop
        }
    })
}

/// Prompt catalogs, one per language, loaded once and shared by every call.
#[derive(Clone)]
pub struct Prompts {
    en: PromptCatalog,
    fr: PromptCatalog,
}

impl Prompts {
    /// Loads the embedded prompts, overridden by `<dir>/<lang>/*.wav` when configured.
    pub fn load(dir: Option<&std::path::Path>) -> anyhow::Result<Prompts> {
        let load = |lang: PromptLanguage| {
            let sub = dir.map(|d| d.join(lang.code())).filter(|p| p.is_dir());
            PromptCatalog::load(lang, sub.as_deref())
        };
        Ok(Prompts {
            en: load(PromptLanguage::En)?,
            fr: load(PromptLanguage::Fr)?,
        })
    }

    pub fn for_language(&self, lang: Language) -> &PromptCatalog {
        match lang {
            Language::Fr => &self.fr,
            _ => &self.en,
        }
    }
}

/// What the SIP front needs; built by `serve`.
pub struct Gateway {
    pub config: Arc<Config>,
    pub services: Services,
    pub sip: EndpointHandle,
    pub ports: PortAllocator,
    pub rooms: Arc<dyn RoomBackend>,
    pub prompts: Prompts,
    /// The IPs RTP sockets bind to, per address family.
    pub media_bind: MediaBind,
    pub shutdown: watch::Receiver<bool>,
}

struct Front {
    gw: Gateway,
    digest: DigestServer,
    calls: HashMap<CallKey, mpsc::UnboundedSender<SipEvent>>,
    next_id: u64,
    id_prefix: String,
}

/// Runs the SIP front until the endpoint's event stream ends.
pub async fn run(gw: Gateway, mut events: mpsc::Receiver<SipEvent>) {
    let secret: [u8; 32] = rand::random();
    let mut front = Front {
        digest: DigestServer::new("dialin", &secret, NONCE_TTL),
        calls: HashMap::new(),
        next_id: 0,
        id_prefix: format!("{:08x}", rand::random::<u32>()),
        gw,
    };
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => front.on_event(ev).await,
                None => break,
            },
            _ = prune.tick() => front.gw.services.unmatched.prune(Instant::now()),
        }
    }
}

impl Front {
    async fn on_event(&mut self, ev: SipEvent) {
        let key = match &ev {
            SipEvent::IncomingCall { .. } => None,
            SipEvent::Cancelled { key }
            | SipEvent::Acked { key, .. }
            | SipEvent::AckTimeout { key }
            | SipEvent::ReInvite { key, .. }
            | SipEvent::Info { key, .. }
            | SipEvent::Bye { key }
            | SipEvent::SessionExpired { key }
            | SipEvent::CallEnded { key, .. } => Some(*key),
        };
        match key {
            None => {
                if let SipEvent::IncomingCall {
                    key,
                    request,
                    source,
                    transport,
                } = ev
                {
                    if let Err(refusal) = self.on_invite(key, &request, source, transport).await {
                        self.refuse(key, refusal);
                    }
                }
            }
            Some(key) => {
                let ended = matches!(ev, SipEvent::CallEnded { .. });
                if let Some(tx) = self.calls.get(&key) {
                    let _ = tx.send(ev);
                }
                if ended {
                    self.calls.remove(&key);
                }
            }
        }
    }

    fn refuse(&mut self, key: CallKey, refusal: Refusal) {
        let sip = &self.gw.sip;
        let _ = match refusal {
            Refusal::Drop => Ok(()),
            Refusal::Status(s, headers) => sip.reject(key, s, None, headers),
        };
    }

    async fn on_invite(
        &mut self,
        key: CallKey,
        req: &Request,
        source: SocketAddr,
        transport: Transport,
    ) -> Result<(), Refusal> {
        let config = self.gw.config.clone();
        if self.gw.services.readiness.is_draining() {
            return Err(Refusal::unavailable());
        }

        let called = called_number(req);
        let trunks = self.gw.services.trunks.load();
        let calling = calling_number(req);
        let trunk = match trunks.match_call_from(source.ip(), &called, Some(&calling)) {
            TrunkMatch::Matched(t) => Arc::new(t.clone()),
            TrunkMatch::NoTrunkForSource => {
                if self
                    .gw
                    .services
                    .unmatched
                    .allow(source.ip(), Instant::now())
                {
                    debug!(source = %source.ip(), "INVITE from a source matching no trunk");
                    return Err(Refusal::Status(StatusCode(403), vec![]));
                }
                self.gw.services.metrics.unmatched_source_dropped();
                return Err(Refusal::Drop);
            }
            TrunkMatch::NumberNotAccepted => {
                debug!(called = %crate::privacy::mask_number(&called), "called number not served by the trunk");
                return Err(Refusal::Status(StatusCode(403), vec![]));
            }
        };
        if let Some(auth) = &trunk.auth {
            let now = SystemTime::now();
            let authz: Vec<&str> = req
                .headers
                .get_all(&HeaderName::Authorization)
                .map(|t| t.as_str())
                .collect();
            let outcome = self
                .digest
                .verify(now, "INVITE", req.uri.as_str(), authz, |user| {
                    (user == auth.username)
                        .then(|| Credential::Password(auth.password.expose().to_owned()))
                });
            match outcome {
                VerifyOutcome::Ok { .. } => {}
                VerifyOutcome::Stale => return Err(self.challenge(true, &auth.algorithms)),
                VerifyOutcome::Missing => return Err(self.challenge(false, &auth.algorithms)),
                VerifyOutcome::Invalid(reason) => {
                    info!(trunk = %trunk.id, source = %source.ip(), reason = ?reason, "digest authentication failed");
                    return Err(self.challenge(false, &auth.algorithms));
                }
            }
        }

        if self
            .gw
            .services
            .overload
            .check(Instant::now(), self.gw.services.calls.len())
        {
            self.gw.services.metrics.overload_refused();
            info!(trunk = %trunk.id, "call refused: media loops running late (overload)");
            return Err(Refusal::unavailable());
        }

        let caller = PhoneNumber::new(&calling_number(req));
        let id = self.next_call_id();
        let (guard, commands) = self
            .gw
            .services
            .calls
            .register(NewCall {
                id: id.clone(),
                trunk: trunk.id.clone(),
                caller: caller.clone(),
                started_at: Utc::now(),
                node_limit: config.limits.max_calls as usize,
                trunk_limit: trunk.max_calls as usize,
            })
            .map_err(|e| match e {
                RegisterError::NodeFull { .. } | RegisterError::TrunkFull { .. } => {
                    info!(trunk = %trunk.id, reason = %e, "call refused: limit reached");
                    Refusal::unavailable()
                }
                RegisterError::Duplicate(_) => Refusal::Status(StatusCode(500), vec![]),
            })?;

        // SDP: an offer in the INVITE, or none (we offer in the 200, the answer is in the ACK).
        let policy = answer_policy(&trunk);
        // The offer is the body when it is SDP, or the SDP part of a multipart body; any
        // other body (or none) is no offer: we offer in the 200.
        let content_type = req
            .headers
            .get(&HeaderName::ContentType)
            .map(|t| t.as_str().to_owned());
        let offer_text = sdp::offer_body(content_type.as_deref(), &req.body).map_err(|e| {
            debug!(error = %e, "unusable INVITE body");
            Refusal::Status(e.status(), vec![])
        })?;
        let offer = match offer_text {
            None => None,
            Some(text) => {
            let offer = SessionDescription::parse(text).map_err(|e| {
                debug!(error = %e, "bad SDP offer");
                Refusal::Status(StatusCode(400), vec![])
            })?;
            if !offer.ignored.is_empty() {
                debug!(lines = offer.ignored.len(), "SDP offer: lines ignored");
            }
            let negotiated = sdp::negotiate(&offer, &policy).map_err(|e| {
                info!(trunk = %trunk.id, reason = %e, "no acceptable media: 488");
                Refusal::Status(StatusCode(488), vec![])
            })?;
            Some(negotiated)
            }
        };
        // Media goes over the family of the offer's address (of the signalling for a late
        // offer): an IPv6 offer answered with an IPv4 address would be silence.
        let media_v6 = match &offer {
            Some(n) => is_v6(n.remote_rtp.ip()),
            None => is_v6(source.ip()),
        };
        let Some(bind_ip) = self.gw.media_bind.for_family(media_v6) else {
            warn!(
                trunk = %trunk.id,
                family = if media_v6 { "IPv6" } else { "IPv4" },
                "the offer's media address family has no sip.listen address to bind RTP to: 488"
            );
            return Err(Refusal::Status(StatusCode(488), vec![]));
        };
        // A port of the range may be held by another program: skip it and lease the next.
        // The skipped leases go back to the pool once this call has its port.
        let mut skipped = Vec::new();
        let (lease, socket) = loop {
            let lease = self.gw.ports.allocate().map_err(|_| {
                warn!(skipped = skipped.len(), "RTP ports exhausted");
                Refusal::unavailable()
            })?;
            match bind_rtp(bind_ip, &lease).await {
                Ok(socket) => break (lease, socket),
                Err(e) => {
                    warn!(port = lease.rtp_port(), error = %e, "RTP port taken by another program; trying the next");
                    skipped.push(lease);
                    if skipped.len() >= RTP_BIND_ATTEMPTS {
                        warn!(attempts = RTP_BIND_ATTEMPTS, "no RTP port could be bound");
                        return Err(Refusal::unavailable());
                    }
                }
            }
        };
        drop(skipped);
        let media_peer = match &offer {
            Some(n) => n.remote_rtp,
            None => source,
        };
        let local = LocalMedia {
            addr: advertised_ip(&config, bind_ip, media_peer),
            port: lease.rtp_port(),
            session_id: rand::random::<u32>() as u64,
            version: 1,
            username: "dialin".to_owned(),
        };
        let template = LegTemplate {
            sources: media_sources(&trunk, source.ip()),
            codec_config: CodecConfig {
                opus_complexity: config.media.opus_complexity,
                ..CodecConfig::default()
            },
            jitter_min: config.media.jitter_min(),
            jitter_max: config.media.jitter_max(),
        };
        let (answer_sdp, leg, pending_offer, negotiated) = match offer {
            None => {
                let offer = sdp::build_offer(&offer_policy(&trunk), &local);
                (Bytes::from(offer.sdp.clone()), None, Some(offer), None)
            }
            Some(negotiated) => {
                let params = template
                    .params(&negotiated)
                    .ok_or(Refusal::Status(StatusCode(488), vec![]))?;
                let leg = CallerLeg::new(&params).map_err(|e| {
                    warn!(error = %e, "media leg");
                    Refusal::Status(StatusCode(488), vec![])
                })?;
                (
                    Bytes::from(negotiated.answer_sdp(&local)),
                    Some(leg),
                    None,
                    Some(negotiated),
                )
            }
        };

        // The record is written beside the call, never in this task's way: while the store is
        // unreachable each write waits for the pool's acquire timeout, and this task admits
        // every call. The call can still be served (it tells the caller the service is
        // unavailable when the PIN cannot be looked up); its record will be missing.
        let store = self.gw.services.store.clone();
        let record = CallRecordStart {
            id: id.clone(),
            trunk: trunk.id.clone(),
            caller_masked: caller.masked(),
            setup_at: Utc::now(),
            node: Some(self.gw.services.node.clone()),
        };
        tokio::spawn(async move {
            if let Err(e) = store.insert_call_record(&record).await {
                warn!(call = %record.id, error = %e, "could not insert the call record");
            }
        });

        let _ = self.gw.sip.answer(key, Some(answer_sdp), vec![]);
        info!(call = %id, trunk = %trunk.id, caller = %caller.masked(), transport = %transport.via_token(), "call answered");

        let (tx, sip_events) = mpsc::unbounded_channel();
        self.calls.insert(key, tx);
        let attributes = trunk_attributes(&trunk, req);
        let setup = CallSetup {
            id,
            key,
            called: called.clone(),
            attributes,
            prompts: self.gw.prompts.for_language(trunk.language).clone(),
            trunk,
            caller,
            sip: self.gw.sip.clone(),
            sip_events,
            guard,
            commands,
            socket,
            lease,
            leg,
            pending_offer,
            negotiated,
            answer_policy: policy,
            local_media: local,
            leg_template: template,
            services: self.gw.services.clone(),
            rooms: self.gw.rooms.clone(),
            limits: CallLimits {
                rtp_timeout: config.media.rtp_timeout(),
                max_duration: config.media.max_call_duration(),
            },
            ivr: IvrConfig {
                first_digit_timeout: config.ivr.first_digit_timeout(),
                inter_digit_timeout: config.ivr.inter_digit_timeout(),
                max_attempts: 3,
                max_prompt_replays: config.ivr.max_prompt_replays,
                max_ivr_time: config.ivr.max_ivr_time(),
            },
            setup_started: Instant::now(),
            started_at: Utc::now(),
            shutdown: self.gw.shutdown.clone(),
        };
        let mut setup = setup;
        setup.ivr.max_attempts = setup.trunk.max_attempts;
        tokio::spawn(call::run(setup));
        Ok(())
    }

    /// A `401` with one challenge per algorithm of the trunk, in the trunk's order.
    fn challenge(&self, stale: bool, algorithms: &[crate::config::DigestAlgorithm]) -> Refusal {
        let algorithms: Vec<Algorithm> = algorithms
            .iter()
            .map(|a| match a {
                crate::config::DigestAlgorithm::Sha256 => Algorithm::Sha256,
                crate::config::DigestAlgorithm::Md5 => Algorithm::Md5,
            })
            .collect();
        let values = self.digest.challenge(SystemTime::now(), stale, &algorithms);
        let headers = values
            .into_iter()
            .map(|v| (HeaderName::WwwAuthenticate, Text::from(v)))
            .collect();
        Refusal::Status(StatusCode(401), headers)
    }

    fn next_call_id(&mut self) -> CallId {
        self.next_id += 1;
        CallId::new(format!("CA_{}{:06}", self.id_prefix, self.next_id))
    }
}

enum Refusal {
    Status(StatusCode, Vec<(HeaderName, Text)>),
    /// Silently dropped (flooding source).
    Drop,
}

impl Refusal {
    fn unavailable() -> Refusal {
        Refusal::Status(
            StatusCode(503),
            vec![(HeaderName::RetryAfter, Text::from(RETRY_AFTER_S.to_owned()))],
        )
    }
}

fn answer_policy(trunk: &TrunkConfig) -> AnswerPolicy {
    AnswerPolicy {
        srtp: sdp_srtp(trunk.srtp),
        ..AnswerPolicy::default()
    }
}

fn offer_policy(trunk: &TrunkConfig) -> OfferPolicy {
    OfferPolicy {
        srtp: sdp_srtp(trunk.srtp),
        ..OfferPolicy::default()
    }
}

fn sdp_srtp(p: SrtpPolicy) -> SdpSrtp {
    match p {
        SrtpPolicy::Disable => SdpSrtp::Disable,
        SrtpPolicy::Allow => SdpSrtp::Allow,
        SrtpPolicy::Require => SdpSrtp::Require,
    }
}

/// The participant attributes a trunk gives its calls: its `attributes`, and for each
/// `headers_to_attributes` entry the INVITE header's value (first occurrence, at most 256
/// bytes, control characters dropped), as LiveKit's SIP service maps them.
fn trunk_attributes(
    trunk: &TrunkConfig,
    req: &Request,
) -> std::collections::BTreeMap<String, String> {
    let mut out = trunk.attributes.clone();
    for (header, attribute) in &trunk.headers_to_attributes {
        let Some(value) = req
            .headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(header))
            .map(|h| h.value.as_str())
        else {
            continue;
        };
        let clean: String = value
            .chars()
            .filter(|c| !c.is_control())
            .take(256)
            .collect();
        out.insert(attribute.clone(), clean);
    }
    out
}

/// The called number: the Request-URI user, else the To user (DESIGN.md §Call flow step 1).
fn called_number(req: &Request) -> String {
    if let Some(u) = req.uri.user() {
        return u.as_str().to_owned();
    }
    req.headers
        .to()
        .ok()
        .and_then(|to| to.uri.user().map(|u| u.as_str().to_owned()))
        .unwrap_or_default()
}

/// The calling number from From (P-Asserted-Identity when the trunk provides it).
fn calling_number(req: &Request) -> String {
    let pai = HeaderName::parse(&Text::from("P-Asserted-Identity".to_owned()));
    if let Some(v) = req.headers.get(&pai) {
        if let Ok(na) = dialin_sip::header::NameAddr::parse(v, "P-Asserted-Identity") {
            if let Some(u) = na.uri.user() {
                return u.as_str().to_owned();
            }
        }
    }
    req.headers
        .from()
        .ok()
        .and_then(|f| f.uri.user().map(|u| u.as_str().to_owned()))
        .unwrap_or_else(|| "anonymous".to_owned())
}

/// Who may send a call's media besides the address in its SDP: the IP the INVITE came from
/// (any port, learned on the first packet) and the trunk's `media_sources`.
fn media_sources(trunk: &TrunkConfig, signalling: IpAddr) -> SourcePolicy {
    let policy = SourcePolicy::with_signalling(signalling);
    if trunk.media_sources.is_empty() {
        return policy;
    }
    let nets = trunk.media_sources.clone();
    policy.also(Arc::new(move |ip| nets.iter().any(|n| n.contains(ip))))
}

/// Leases tried per call when ports of the range are bound by other programs.
const RTP_BIND_ATTEMPTS: usize = 8;

async fn bind_rtp(ip: IpAddr, lease: &PortLease) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::new(ip, lease.rtp_port())).await
}

/// The IPs RTP sockets bind to: one per address family the SIP listeners serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaBind {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
}

impl MediaBind {
    /// From the SIP listen addresses: the first of each family. A `[::]` listener is
    /// dual-stack on Linux, so it also serves IPv4 callers (media on `0.0.0.0`).
    pub fn from_listen(listen: &[SocketAddr]) -> MediaBind {
        let v4 = listen
            .iter()
            .map(|a| a.ip())
            .find(|ip| !is_v6(*ip))
            .map(|ip| match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            })
            .or_else(|| {
                listen
                    .iter()
                    .any(|a| a.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED))
                    .then_some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            });
        let v6 = listen.iter().map(|a| a.ip()).find(|ip| is_v6(*ip));
        MediaBind { v4, v6 }
    }

    /// Where RTP of that family binds; `None` when no listener serves it.
    pub fn for_family(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.v6
        } else {
            self.v4
        }
    }
}

/// IPv6 and not an IPv4-mapped address.
fn is_v6(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none())
}

/// The address written in our SDP: `public_address` when it is of the media's family, else
/// the bound IP, else the local IP the kernel would use to reach the caller's media.
fn advertised_ip(config: &Config, bind: IpAddr, peer: SocketAddr) -> IpAddr {
    if let Some(ip) = config.sip.public_address {
        if is_v6(ip) == is_v6(bind) {
            return ip;
        }
    }
    if !bind.is_unspecified() {
        return bind;
    }
    let (any, loopback) = if is_v6(bind) {
        (
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        )
    };
    std::net::UdpSocket::bind(SocketAddr::new(any, 0))
        .and_then(|s| {
            s.connect(peer)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(loopback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn media_binds_one_address_per_family_the_listeners_serve() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let b = MediaBind::from_listen(&addrs(&["[2001:db8::5]:5060", "192.0.2.7:5060"]));
        assert_eq!((b.for_family(false), b.for_family(true)), (ip("192.0.2.7"), ip("2001:db8::5")));
        let b = MediaBind::from_listen(&addrs(&["127.0.0.1:5060"]));
        assert_eq!((b.v4, b.v6), (ip("127.0.0.1"), None));
        // A dual-stack wildcard serves both.
        let b = MediaBind::from_listen(&addrs(&["[::]:5060"]));
        assert_eq!((b.v4, b.v6), (ip("0.0.0.0"), ip("::")));
        let b = MediaBind::from_listen(&addrs(&["[::1]:5060"]));
        assert_eq!((b.v4, b.v6), (None, ip("::1")));
    }
}
