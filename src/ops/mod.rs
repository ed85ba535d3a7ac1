//! Running the gateway as a service: Prometheus metrics ([`metrics`]), overload admission
//! control ([`overload`]), the open-file budget ([`fd`]) and the log ([`log`]).

pub mod fd;
pub mod log;
pub mod metrics;
pub mod overload;
