//! Where a keyed PIN is looked up: the sources of `[pins] sources`, tried in order.
//!
//! A meeting app keeps its PINs where it already does: in dialin's store (`store`), as
//! dispatch rules of LiveKit's SIP service (`livekit`, module `pins::livekit`), or behind
//! its own HTTP endpoint (`http`, module `pins::http`). Each source answers a
//! [`SourceQuery`] with a [`SourceVerdict`]; [`PinSources::resolve`] asks them in order and
//! the first [`SourceVerdict::Room`] wins. Every source sits behind the same guard, lockout
//! and privacy rules (module `pins::guard`): a source only says where a PIN leads.
//!
//! When no source has the PIN, the most telling refusal is kept (a revoked or expired PIN
//! of the store rather than "unknown"); when one of them could not answer and none had it,
//! the entry is not judged ("service unavailable"): the PIN may have been there.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ingress::trunk::TrunkId;
use crate::ops::metrics::Metrics;
use crate::pins::{Pin, PinNamespace, PinRole};
use crate::privacy::PhoneNumber;
use crate::store::{Resolution, Store};

/// A kind of PIN source, as `[pins] sources` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// dialin's own store (the admin API and CLI).
    Store,
    /// LiveKit's SIP dispatch rules.
    Livekit,
    /// The meeting app's HTTP resolver.
    Http,
}

impl SourceKind {
    pub const ALL: [SourceKind; 3] = [SourceKind::Store, SourceKind::Livekit, SourceKind::Http];

    /// The `source` label of the lookup metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            SourceKind::Store => "store",
            SourceKind::Livekit => "livekit",
            SourceKind::Http => "http",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lookup, with what a source may use to decide (the LiveKit rules' trunk and number
/// filters; the HTTP resolver's request).
#[derive(Debug, Clone)]
pub struct SourceQuery<'a> {
    pub pin: &'a Pin,
    pub namespace: &'a PinNamespace,
    pub trunk: &'a TrunkId,
    /// The number the caller dialled (Request-URI user part), when known.
    pub called: Option<&'a str>,
    pub caller: &'a PhoneNumber,
    /// Whether the trunk lets the caller's full number out (`expose_phone_number`); else
    /// sources are given the masked number.
    pub expose_caller: bool,
    pub call_id: &'a str,
    pub now: DateTime<Utc>,
}

impl SourceQuery<'_> {
    /// The caller's number as a source may see it.
    pub fn caller_for_source(&self) -> String {
        if self.expose_caller {
            self.caller.expose().to_owned()
        } else {
            self.caller.masked()
        }
    }
}

/// Where a PIN leads, and how its caller appears there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    pub room: String,
    pub participant_name: Option<String>,
    /// The participant's identity; `None`: dialin's `sip_<call id>`.
    pub participant_identity: Option<String>,
    /// Attributes added to the participant's `sip.*` ones (a source cannot replace those).
    pub attributes: BTreeMap<String, String>,
    pub metadata: Option<String>,
    pub role: PinRole,
    pub wait_for_host: bool,
    /// Forces the caller's number out of the participant (a LiveKit rule's
    /// `hide_phone_number`), whatever the trunk says.
    pub hide_phone_number: bool,
    /// How LiveKit creates the room if the caller is the first (a LiveKit rule's
    /// `room_config`), carried in the participant's token.
    pub room_config: Option<livekit_protocol::RoomConfiguration>,
}

/// A source's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceVerdict {
    Room(Grant),
    Unknown,
    Revoked,
    NotYetValid,
    Expired,
}

impl SourceVerdict {
    /// The `result` label of the lookup metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SourceVerdict::Room(_) => "found",
            SourceVerdict::Unknown => "unknown",
            SourceVerdict::Revoked => "revoked",
            SourceVerdict::NotYetValid => "not_yet_valid",
            SourceVerdict::Expired => "expired",
        }
    }
}

/// A source could not answer (down, slow, refused, or answered nonsense). The message is
/// for logs: it never holds the PIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_kind} PIN source: {message}")]
pub struct SourceError {
    pub source_kind: SourceKind,
    pub message: String,
}

impl SourceError {
    pub fn new(source_kind: SourceKind, message: impl Into<String>) -> SourceError {
        SourceError {
            source_kind,
            message: message.into(),
        }
    }
}

/// Future of [`PinSource::resolve`].
pub type SourceFuture<'a> =
    StdPin<Box<dyn Future<Output = Result<SourceVerdict, SourceError>> + Send + 'a>>;

/// A place PINs are looked up.
pub trait PinSource: Send + Sync {
    fn kind(&self) -> SourceKind;
    fn resolve<'a>(&'a self, query: &'a SourceQuery<'a>) -> SourceFuture<'a>;
}

/// The configured sources, in order.
#[derive(Clone)]
pub struct PinSources {
    sources: Vec<Arc<dyn PinSource>>,
}

impl fmt::Debug for PinSources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.sources.iter().map(|s| s.kind()))
            .finish()
    }
}

impl PinSources {
    pub fn new(sources: Vec<Arc<dyn PinSource>>) -> PinSources {
        PinSources { sources }
    }

    /// The store alone (the default `sources = ["store"]`).
    pub fn store_only(store: Store) -> PinSources {
        PinSources::new(vec![Arc::new(StoreSource(store))])
    }

    pub fn kinds(&self) -> Vec<SourceKind> {
        self.sources.iter().map(|s| s.kind()).collect()
    }

    /// Asks each source in order; the first room wins. Counts each answer in `metrics`.
    pub async fn resolve(
        &self,
        query: &SourceQuery<'_>,
        metrics: &Metrics,
    ) -> Result<(SourceKind, SourceVerdict), SourceError> {
        let mut refusal: Option<(SourceKind, SourceVerdict)> = None;
        let mut failure: Option<SourceError> = None;
        for source in &self.sources {
            let started = Instant::now();
            let answer = source.resolve(query).await;
            let kind = source.kind();
            let label = match &answer {
                Ok(v) => v.label(),
                Err(_) => "error",
            };
            metrics.pin_lookup(kind, label, started.elapsed());
            match answer {
                Ok(SourceVerdict::Room(grant)) => return Ok((kind, SourceVerdict::Room(grant))),
                Ok(SourceVerdict::Unknown) => {
                    refusal.get_or_insert((kind, SourceVerdict::Unknown));
                }
                Ok(other) => {
                    if refusal
                        .as_ref()
                        .is_none_or(|(_, r)| *r == SourceVerdict::Unknown)
                    {
                        refusal = Some((kind, other));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "PIN source could not answer");
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(refusal.unwrap_or((SourceKind::Store, SourceVerdict::Unknown)))
    }
}

/// dialin's own store.
pub struct StoreSource(pub Store);

impl PinSource for StoreSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Store
    }

    fn resolve<'a>(&'a self, query: &'a SourceQuery<'a>) -> SourceFuture<'a> {
        Box::pin(async move {
            let resolution = self
                .0
                .resolve(query.namespace, query.pin, query.now)
                .await
                .map_err(|e| SourceError::new(SourceKind::Store, e.to_string()))?;
            Ok(match resolution {
                Resolution::Room {
                    room,
                    participant_name,
                    role,
                    wait_for_host,
                } => SourceVerdict::Room(Grant {
                    room: room.as_str().to_owned(),
                    participant_name: participant_name.map(|n| n.as_str().to_owned()),
                    role,
                    wait_for_host,
                    ..Grant::default()
                }),
                Resolution::Unknown => SourceVerdict::Unknown,
                Resolution::Revoked => SourceVerdict::Revoked,
                Resolution::NotYetValid => SourceVerdict::NotYetValid,
                Resolution::Expired => SourceVerdict::Expired,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that always gives the same answer.
    struct Fixed(SourceKind, Result<SourceVerdict, SourceError>);

    impl PinSource for Fixed {
        fn kind(&self) -> SourceKind {
            self.0
        }
        fn resolve<'a>(&'a self, _: &'a SourceQuery<'a>) -> SourceFuture<'a> {
            let answer = self.1.clone();
            Box::pin(async move { answer })
        }
    }

    fn room(name: &str) -> SourceVerdict {
        SourceVerdict::Room(Grant {
            room: name.into(),
            ..Grant::default()
        })
    }

    fn down(kind: SourceKind) -> Result<SourceVerdict, SourceError> {
        Err(SourceError::new(kind, "down"))
    }

    async fn ask(sources: Vec<(SourceKind, Result<SourceVerdict, SourceError>)>) -> Result<(SourceKind, SourceVerdict), SourceError> {
        let list = sources
            .into_iter()
            .map(|(k, a)| Arc::new(Fixed(k, a)) as Arc<dyn PinSource>)
            .collect();
        let pin = Pin::parse("12345678").expect("pin");
        let ns = PinNamespace::default();
        let trunk = TrunkId::parse("t").expect("trunk");
        let caller = PhoneNumber::new("+33612345678");
        let q = SourceQuery {
            pin: &pin,
            namespace: &ns,
            trunk: &trunk,
            called: None,
            caller: &caller,
            expose_caller: false,
            call_id: "CA_1",
            now: Utc::now(),
        };
        PinSources::new(list).resolve(&q, &Metrics::new()).await
    }

    use SourceKind::{Http, Livekit, Store};

    #[tokio::test]
    async fn the_first_source_with_a_room_wins() {
        let got = ask(vec![
            (Store, Ok(SourceVerdict::Unknown)),
            (Livekit, Ok(room("a"))),
            (Http, Ok(room("b"))),
        ])
        .await;
        assert_eq!(got, Ok((Livekit, room("a"))));
    }

    #[tokio::test]
    async fn a_source_down_does_not_hide_a_later_match_but_fails_a_miss() {
        let got = ask(vec![(Livekit, down(Livekit)), (Http, Ok(room("b")))]).await;
        assert_eq!(got, Ok((Http, room("b"))));
        let got = ask(vec![(Store, Ok(SourceVerdict::Unknown)), (Http, down(Http))]).await;
        assert_eq!(got.map_err(|e| e.source_kind), Err(Http), "not judged: the PIN may be there");
    }

    #[tokio::test]
    async fn the_most_telling_refusal_is_kept() {
        let got = ask(vec![
            (Store, Ok(SourceVerdict::Expired)),
            (Livekit, Ok(SourceVerdict::Unknown)),
        ])
        .await;
        assert_eq!(got, Ok((Store, SourceVerdict::Expired)));
        let got = ask(vec![
            (Livekit, Ok(SourceVerdict::Unknown)),
            (Store, Ok(SourceVerdict::Revoked)),
        ])
        .await;
        assert_eq!(got, Ok((Store, SourceVerdict::Revoked)));
    }
}
