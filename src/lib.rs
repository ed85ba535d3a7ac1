//! dialin: a SIP gateway that lets phone callers join rooms with a PIN.
//!
//! The gateway half of the workspace: configuration and trunks, the PIN store, the
//! registry of calls in progress, metrics, the admin HTTP API and the command line.

pub mod admin;
pub mod calls;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod pin;
pub mod privacy;
pub mod serve;
pub mod store;
pub mod trunk;
