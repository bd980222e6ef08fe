//! The operator's certificates (issue 5, item 5): a CA kept in the kubernetes.io/tls Secret
//! [`CA_SECRET`](plan::CA_SECRET) in the operator's namespace, which issues
//!
//! - a serving certificate for each ApiRoute with `spec.tls.issue: true` (SANs: the route's
//!   `hosts`; `<route>.<namespace>.svc` for a route without hosts), written as the
//!   kubernetes.io/tls Secret `<route>-portcullis-tls` in the route's namespace;
//! - a client certificate (`CN=<namespace>/<route>`) for each ApiRoute with
//!   `backend.origin.tls.clientCertificate.issue: true`, as `<route>-portcullis-client`;
//!
//! each with `tls.crt` (leaf, then the CA), `tls.key`, `ca.crt` (the issuing CA) and an
//! owner reference to its route, renewed at two thirds of its lifetime or when the route's
//! hosts change. The CA itself is rotated at two thirds of its lifetime; the previous CA
//! stays in the bundle while a certificate it signed is in use, and for one leaf lifetime
//! after the rotation. The bundle (`ca.crt` of the ConfigMap
//! [`BUNDLE_CONFIGMAP`](plan::BUNDLE_CONFIGMAP)) is published in the operator's namespace and
//! in every namespace that has ApiRoutes, for origins to allow-list. Each route's status
//! lists its certificates with `notAfter` and SHA-256 fingerprint.
//!
//! [`plan`] decides (pure, unit-tested with a fixed clock); [`manager`] runs on the leader
//! and writes.

pub mod manager;
pub mod plan;

pub use plan::{Lifetimes, parse_duration};

/// The wall clock, in Unix seconds (what the pure plan takes as `now`).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
