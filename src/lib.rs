//! dialin
pub mod ivr;
