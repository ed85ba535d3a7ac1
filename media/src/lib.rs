//! dialin-media
pub mod dtmf;
pub mod jitter;
