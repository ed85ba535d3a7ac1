//! dialin-media
pub mod mixer;
pub mod prompt;
pub mod tone;
