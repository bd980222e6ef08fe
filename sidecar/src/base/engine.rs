//! The seam between the proxy and the policy engine ([`portcullis_policy`]): the engine the
//! sidecar runs, with the in-process limiter whose counts outlive configuration reloads.

pub use portcullis_policy::path::NormalPath;
pub use portcullis_policy::throttle::Budget;
pub use portcullis_policy::{
    Admission, CompileError, Denial, DenialKind, InMemoryLimiter, Listener, Outcome, PeerCertificate, RateInfo,
    RequestView, Scope,
};

/// The engine as the sidecar runs it.
pub type Engine = portcullis_policy::Engine<InMemoryLimiter>;
