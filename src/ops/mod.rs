//! Running the gateway as a service: Prometheus metrics ([`metrics`]), overload admission
//! control ([`overload`]) and the open-file budget ([`fd`]).

pub mod fd;
pub mod metrics;
pub mod overload;
