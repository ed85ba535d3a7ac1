//! dialin-media
pub mod ports;
pub mod rtcp;
pub mod rtp;
pub mod srtp;
pub mod stream;
