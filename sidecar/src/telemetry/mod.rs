//! What the sidecar records about its work: the Prometheus registry ([`metrics`]) and the
//! audit log, one JSON line per request ([`audit`]). Both are written from the request path,
//! so both are cheap: counters and a buffered log swapped out under a short lock. Uses only
//! [`crate::base`].

pub mod audit;
pub mod metrics;
