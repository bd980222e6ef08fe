//! The ground floor: what every other layer may use, and which uses nothing of the crate above
//! it. The one body type and its small answers ([`body`]), the wall clock ([`clock`]), form
//! encoding ([`form`]), the header names and header hygiene shared by the request path, the
//! upstreams and the audit ([`headers`]), the TLS primitives and the system roots ([`tls`]),
//! numbers as header values and a configuration's limits made once ([`values`]),
//! and the seam to the policy engine ([`engine`]). Nothing here does I/O beyond reading the
//! system roots once.

pub mod body;
pub mod clock;
pub mod cpus;
pub mod engine;
pub mod form;
pub mod headers;
pub mod tls;
pub mod values;
