//! dialin: a SIP gateway that lets phone callers join rooms with a PIN.
//!
//! The gateway half of the workspace, on top of `dialin-sip` and `dialin-media`:
//! configuration and trunks ([`config`], [`trunk`]), the PIN store ([`store`], [`pin`]), the SIP
//! front that admits calls ([`gateway`]), one task per call ([`call`]) with its media leg
//! ([`leg`]) and PIN menu ([`ivr`]), room backends ([`room`]), the registry of calls in
//! progress ([`calls`]), metrics, the admin HTTP API and the command line.

pub mod admin;
pub mod call;
pub mod calls;
pub mod cli;
pub mod config;
pub mod fd;
pub mod gateway;
pub mod ivr;
pub mod leg;
pub mod metrics;
pub mod overload;
pub mod pin;
pub mod pin_guard;
pub mod privacy;
pub mod room;
pub mod serve;
pub mod store;
pub mod tick;
pub mod trunk;
