//! LiveKit's `RoomService` (livekit_room.proto), served over Twirp (module `twirp`):
//! `POST /twirp/livekit.RoomService/<Method>`. Every method needs a token with `roomAdmin` for
//! the room it names; its work is done by the engine task, asked with a `Command`.
//!
//! Served: `ListParticipants`, `MutePublishedTrack`, `UpdateParticipant`. The other
//! RoomService methods answer `unimplemented`.

use livekit_protocol as proto;
use tokio::sync::{mpsc, oneshot};

use crate::engine::Command;
use crate::twirp::{Answer, Call, Code, TwirpError};

pub(crate) const SERVICE: &str = "livekit.RoomService";
/// RoomService methods this server does not serve (livekit_room.proto).
const UNSERVED: &[&str] = &[
    "CreateRoom",
    "ListRooms",
    "DeleteRoom",
    "GetParticipant",
    "RemoveParticipant",
    "UpdateSubscriptions",
    "SendData",
    "UpdateRoomMetadata",
    "ForwardParticipant",
    "MoveParticipant",
    "PerformRpc",
];

/// Why the engine refused a room service request; the text is livekit-server's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomServiceError {
    #[error("requested room does not exist")]
    RoomNotFound,
    #[error("participant does not exist")]
    ParticipantNotFound,
    /// An unmute while [`crate::EngineConfig::remote_unmute`] is off.
    #[error("remote unmute not enabled")]
    RemoteUnmuteDisabled,
}

impl RoomServiceError {
    fn code(&self) -> Code {
        match self {
            RoomServiceError::RoomNotFound | RoomServiceError::ParticipantNotFound => {
                Code::NotFound
            }
            RoomServiceError::RemoteUnmuteDisabled => Code::FailedPrecondition,
        }
    }
}

impl From<RoomServiceError> for TwirpError {
    fn from(e: RoomServiceError) -> Self {
        TwirpError::new(e.code(), e.to_string())
    }
}

/// `method` of the room service, or `None` if there is no such method.
pub(crate) async fn call(call: Call<'_>, engine: &mpsc::UnboundedSender<Command>) -> Answer {
    let Call {
        method,
        encoding: enc,
        body,
        claims,
    } = call;
    let admin = |room: &str| -> Result<(), TwirpError> {
        match claims {
            Some(c) if c.video.room_admin && c.video.room == room => Ok(()),
            _ => Err(TwirpError::permissions_denied()),
        }
    };
    let out = match method {
        "ListParticipants" => {
            let req: proto::ListParticipantsRequest = enc.decode(body)?;
            admin(&req.room)?;
            let participants = ask(engine, |reply| Command::ListParticipants {
                room: req.room.clone(),
                reply,
            })
            .await?;
            enc.encode(&proto::ListParticipantsResponse { participants })?
        }
        "MutePublishedTrack" => {
            let req: proto::MuteRoomTrackRequest = enc.decode(body)?;
            admin(&req.room)?;
            let track = ask(engine, |reply| Command::MutePublishedTrack {
                request: req,
                reply,
            })
            .await??;
            enc.encode(&proto::MuteRoomTrackResponse { track })?
        }
        "UpdateParticipant" => {
            let req: proto::UpdateParticipantRequest = enc.decode(body)?;
            admin(&req.room)?;
            let info = ask(engine, |reply| Command::UpdateParticipant {
                request: Box::new(req),
                reply,
            })
            .await??;
            enc.encode(&info)?
        }
        m if UNSERVED.contains(&m) => {
            return Err(TwirpError::new(
                Code::Unimplemented,
                format!("{SERVICE}.{m} is not served by this test server"),
            ))
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

async fn ask<T>(
    engine: &mpsc::UnboundedSender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, TwirpError> {
    let stopped = || TwirpError::new(Code::Internal, "the server task has stopped");
    let (tx, rx) = oneshot::channel();
    engine.send(make(tx)).map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_livekit_server_codes() {
        let e = TwirpError::from(RoomServiceError::RemoteUnmuteDisabled);
        assert_eq!(e.code.http_status(), 412);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["code"], "failed_precondition");
        assert_eq!(v["msg"], "remote unmute not enabled");
        assert_eq!(
            TwirpError::from(RoomServiceError::ParticipantNotFound)
                .code
                .http_status(),
            404
        );
    }
}
