//! Access-token check at the door of `/rtc` and `/rtc/validate`: the JWT a client presents
//! (HS256 signed with the API secret, issuer = API key, `exp`/`nbf` honoured) is turned into a
//! typed [`JoinGrant`] or refused with a [`TokenError`] that becomes an HTTP 401 body, before
//! any WebSocket upgrade, as LiveKit's auth middleware and `RTCService.validate` do. The room
//! service's requests are verified the same way ([`TokenCheck::verify`]) and their grants
//! checked per method (modules `room_service` and `sip_service`).

use std::collections::HashMap;

use livekit_api::access_token::{Claims, TokenVerifier};
use livekit_protocol::participant_info::Kind;

/// Why a token was refused. The `Display` text is the 401 body.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: no access_token query parameter or Authorization header")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("permission denied: token has no roomJoin grant")]
    NoRoomJoin,
    #[error("permission denied: token names no room")]
    NoRoom,
    #[error("permission denied: token is for room {token_room:?}, not {requested:?}")]
    WrongRoom {
        token_room: String,
        requested: String,
    },
    #[error("identity cannot be empty")]
    NoIdentity,
}

impl TokenError {
    /// HTTP status the real server answers with: 401 for token and grant problems, 400 for an
    /// empty identity (`ErrIdentityEmpty`).
    pub(crate) fn http_status(&self) -> u16 {
        match self {
            TokenError::NoIdentity => 400,
            _ => 401,
        }
    }
}

/// What a verified token lets its bearer do in one room.
#[derive(Debug, Clone)]
pub(crate) struct JoinGrant {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub kind: Kind,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    pub can_update_own_metadata: bool,
    /// `video.hidden`: the participant is left out of what others are told about the room.
    pub hidden: bool,
}

/// Verifies tokens signed for one API key/secret pair.
#[derive(Clone)]
pub(crate) struct TokenCheck {
    verifier: TokenVerifier,
}

impl TokenCheck {
    pub(crate) fn new(api_key: &str, api_secret: &str) -> Self {
        Self {
            verifier: TokenVerifier::with_api_key(api_key, api_secret),
        }
    }

    /// Verify `token`'s signature, issuer and validity period, and nothing else: what LiveKit's
    /// API-key middleware does before a Twirp handler looks at the grants.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verifier
            .verify(token)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Verify `token`; `requested_room` is the optional `room` query parameter, which must match
    /// the token's room when present.
    pub(crate) fn check(
        &self,
        token: Option<&str>,
        requested_room: Option<&str>,
    ) -> Result<JoinGrant, TokenError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(TokenError::Missing)?;
        let claims = self.verify(token)?;
        if !claims.video.room_join {
            return Err(TokenError::NoRoomJoin);
        }
        if claims.video.room.is_empty() {
            return Err(TokenError::NoRoom);
        }
        if let Some(req) = requested_room.filter(|r| !r.is_empty()) {
            if req != claims.video.room {
                return Err(TokenError::WrongRoom {
                    token_room: claims.video.room.clone(),
                    requested: req.to_owned(),
                });
            }
        }
        if claims.sub.is_empty() {
            return Err(TokenError::NoIdentity);
        }
        Ok(JoinGrant {
            room: claims.video.room.clone(),
            identity: claims.sub.clone(),
            name: claims.name.clone(),
            kind: kind_from_claim(&claims.kind),
            metadata: claims.metadata.clone(),
            attributes: claims.attributes.clone(),
            can_publish: claims.video.can_publish(),
            can_subscribe: claims.video.can_subscribe(),
            can_publish_data: claims.video.can_publish_data(),
            can_update_own_metadata: claims.video.can_update_own_metadata(),
            hidden: claims.video.hidden,
        })
    }
}

/// The token's `kind` claim, spelled as the server SDKs write it (`"sip"`, `"agent"`, ...).
fn kind_from_claim(kind: &str) -> Kind {
    match kind {
        "sip" => Kind::Sip,
        "agent" => Kind::Agent,
        "ingress" => Kind::Ingress,
        "egress" => Kind::Egress,
        "connector" => Kind::Connector,
        "bridge" => Kind::Bridge,
        _ => Kind::Standard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_api::access_token::{AccessToken, VideoGrants};

    fn mint(kind: &str, room: &str) -> String {
        AccessToken::with_api_key("k", "s")
            .with_identity("id")
            .with_kind(kind)
            .with_grants(VideoGrants {
                room_join: true,
                room: room.into(),
                ..Default::default()
            })
            .to_jwt()
            .unwrap()
    }

    #[test]
    fn kind_claim_sip_makes_a_sip_participant() {
        let g = TokenCheck::new("k", "s")
            .check(Some(&mint("sip", "r")), None)
            .unwrap();
        assert_eq!(g.kind, Kind::Sip);
        assert_eq!(g.room, "r");
        assert!(
            g.can_publish && g.can_subscribe && g.can_publish_data && !g.can_update_own_metadata
        );
    }

    #[test]
    fn token_from_another_api_key_is_invalid() {
        let err = TokenCheck::new("other", "s")
            .check(Some(&mint("", "r")), None)
            .unwrap_err();
        assert!(matches!(err, TokenError::Invalid(_)));
        assert_eq!(err.http_status(), 401);
    }

    #[test]
    fn room_query_parameter_must_match_the_token() {
        let check = TokenCheck::new("k", "s");
        assert!(check.check(Some(&mint("", "r")), Some("r")).is_ok());
        assert!(matches!(
            check.check(Some(&mint("", "r")), Some("x")),
            Err(TokenError::WrongRoom { .. })
        ));
        assert!(matches!(check.check(None, None), Err(TokenError::Missing)));
    }
}
