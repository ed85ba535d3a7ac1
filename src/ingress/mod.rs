//! Where calls come in: the trunks a call may come from ([`trunk`]) and the SIP front that
//! admits an INVITE and starts its call task ([`gateway`]).

pub mod gateway;
pub mod livekit_trunks;
pub mod trunk;
