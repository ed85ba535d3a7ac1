//! dialin: a SIP gateway that lets phone callers join rooms with a PIN.
//!
//! The gateway half of the workspace, on top of `dialin-sip` and `dialin-media`. The modules
//! follow a call:
//! - [`ingress`]: the SIP front that admits calls from trunks ([`ingress::trunk`],
//!   [`ingress::gateway`]);
//! - [`call`]: one task per call ([`call`]), its media leg ([`call::leg`]), PIN menu
//!   ([`call::ivr`]) and the registry of calls in progress ([`call::registry`]);
//! - [`pins`]: PINs and the guard that turns a keyed PIN into a verdict ([`pins::guard`]);
//! - [`room`]: the rooms callers are bridged into (local, LiveKit), on the media clock of
//!   [`tick`];
//! - [`store`]: PINs, call records and guessing counters, SQLite or PostgreSQL;
//! - [`admin`]: the admin HTTP API; [`ops`]: metrics, overload, descriptors; [`serve`],
//!   [`config`], [`cli`], [`privacy`].

pub mod admin;
pub mod call;
pub mod cli;
pub mod config;
pub mod ingress;
pub mod ops;
pub mod pins;
pub mod privacy;
pub mod room;
pub mod serve;
pub mod store;
pub mod tick;
