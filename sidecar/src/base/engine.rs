//! The seam between the proxy and the policy engine ([`portcullis_policy`]): the engine the
//! sidecar runs, with the limiter whose counts outlive configuration reloads (in process, or
//! shared through Redis: [`portcullis_limits`]).

pub use portcullis_policy::path::NormalPath;
pub use portcullis_policy::throttle::Budget;
pub use portcullis_policy::{
    Admission, CompileError, Denial, DenialKind, InMemoryLimiter, Listener, Outcome, PeerCertificate, RateInfo,
    RequestView, Scope,
};

/// The engine as the sidecar runs it.
pub type Engine = portcullis_policy::Engine<Limits>;

/// The limiter the sidecar counts with.
pub type Limits = portcullis_limits::SharedLimiter;
