//! The audit trail: one JSON line per hit, as a `tracing` event of target [`TARGET`].
//!
//! The binary routes this target to `--audit-log` (or stdout), always as JSON. The record
//! holds the path without its query string (API keys and signatures travel there) and never a
//! header value other than the identity the profile chose to log.

use std::net::IpAddr;
use std::time::Duration;

/// The `tracing` target of audit events.
pub const TARGET: &str = "portcullis::audit";

/// What is logged about one request.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// Route that matched, `-` when none did.
    pub route: &'a str,
    /// Profile that admitted (or last refused) the call, `-` when none.
    pub profile: &'a str,
    /// Identity admitted, `-` when none.
    pub identity: &'a str,
    /// The client address (after trusted proxies).
    pub client_ip: IpAddr,
    pub method: &'a str,
    /// Path only: the query string is never logged.
    pub path: &'a str,
    pub status: u16,
    pub latency: Duration,
    /// `allow`, `deny`, `no_route`, `redirect` or `error`.
    pub decision: &'a str,
    /// Why the call was refused or failed, `-` when it was not.
    pub reason: &'a str,
}

impl Record<'_> {
    /// Emits the audit line.
    pub fn emit(&self) {
        tracing::info!(
            target: TARGET,
            route = self.route,
            profile = self.profile,
            identity = self.identity,
            client_ip = %self.client_ip,
            method = self.method,
            path = self.path,
            status = self.status,
            latency_ms = self.latency.as_secs_f64() * 1000.0,
            decision = self.decision,
            reason = self.reason,
            "hit"
        );
    }
}
