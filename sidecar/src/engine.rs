//! The seam between the proxy and the policy engine ([`portcullis_policy`]).
//!
//! INTERIM: the policy crate has not published its API yet; until it does, every request is
//! answered as matching no route.

use std::net::IpAddr;

use http::HeaderMap;
use portcullis_config::Loaded;

use crate::respond::RateInfo;

/// Why a configuration does not compile into an engine.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(String);

/// What the engine looks at.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub peer: IpAddr,
    pub tls: bool,
}

/// What to do with a request.
pub enum Outcome {
    /// No route matches: 404, never counted.
    NoRoute,
    /// The route is HTTPS-only.
    Redirect { route: String, location: String },
    /// Refused.
    Deny(Denial),
    /// Admitted: forward.
    Allow(Admission),
}

/// A refused call.
pub struct Denial {
    pub route: String,
    /// The profile that refused it last, `-` when none applies.
    pub profile: String,
    pub client_ip: IpAddr,
    pub kind: DenialKind,
    /// Why, for the audit log (never a secret).
    pub reason: String,
}

/// How a call was refused.
pub enum DenialKind {
    /// Credentials missing or wrong: 401 with these `WWW-Authenticate` challenges.
    Unauthorized { challenges: Vec<String> },
    /// Credentials right but not allowed: 403.
    Forbidden,
    /// Over a limit: 429.
    RateLimited { scope: &'static str, info: RateInfo },
}

/// An admitted call.
pub struct Admission {
    pub route: String,
    pub profile: String,
    pub identity: String,
    pub client_ip: IpAddr,
    pub port: Option<u16>,
    pub rate: Option<RateInfo>,
}

/// A compiled configuration.
pub struct Engine {}

impl Engine {
    /// Compiles `loaded`.
    pub fn compile(_loaded: &Loaded) -> Result<Self, CompileError> {
        Ok(Self {})
    }

    /// An engine that admits nothing.
    pub fn deny_all() -> Self {
        Self {}
    }

    /// Decides what to do with `req`.
    pub fn decide(&self, _req: &RequestView<'_>) -> Outcome {
        Outcome::NoRoute
    }

    /// Gives back the hit of an admission the backend answered with 404.
    pub fn refund(&self, _admission: &Admission) {}
}
