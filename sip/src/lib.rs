//! dialin-sip
pub mod digest;
pub mod sdp;
