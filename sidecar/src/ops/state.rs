//! The active configuration and everything the request path shares.
//!
//! The request path reads the active configuration with one atomic load ([`ArcSwap`]); a
//! reload compiles the new configuration aside and swaps it in whole, so a request sees
//! either the old or the new configuration, never a mix, and never waits on a lock.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use portcullis_config::{Loaded, SidecarConfig};

use crate::base::engine::{CompileError, Engine, Limits};
use crate::base::headers::RouteNames;
use crate::base::values::LimitValues;
use crate::identity::introspection::Introspector;
use crate::listen::ServerTls;
use crate::telemetry::audit::AuditLog;
use crate::telemetry::metrics::{Metrics, RouteMetrics};
use crate::upstream::{Forwarder, Origins};

/// One compiled configuration.
pub struct Active {
    /// The configuration as read (no secret in it), for `/config`.
    pub config: SidecarConfig,
    /// The compiled decision engine.
    pub engine: Engine,
    /// The client-facing TLS (`None`: no route has a certificate; TLS connections are
    /// refused).
    pub tls: Option<Arc<ServerTls>>,
    /// The pooled clients toward the routes' origins, by route index.
    pub origins: Origins,
    /// A valid configuration was loaded (false for the empty startup configuration).
    pub ready: bool,
    /// The routes' and their profiles' names as header values, by route index.
    pub names: Box<[RouteNames]>,
    /// The routes' request metrics, resolved, by route index.
    pub route_metrics: Box<[RouteMetrics]>,
    /// The profiles' limits as `RateLimit-Limit` values.
    pub limit_values: LimitValues,
}

impl Active {
    /// The configuration served before any valid one was loaded: no routes, not ready.
    pub fn empty(limiter: Arc<Limits>) -> Self {
        Self {
            config: SidecarConfig::empty(""),
            engine: Engine::empty(limiter),
            tls: None,
            origins: Origins::default(),
            ready: false,
            names: Box::default(),
            route_metrics: Box::default(),
            limit_values: LimitValues::default(),
        }
    }

    /// Compiles a loaded configuration, counting hits with `limiter`, with its TLS and
    /// origin clients (built aside by the caller).
    pub fn compile(
        loaded: &Loaded,
        limiter: Arc<Limits>,
        tls: Option<ServerTls>,
        origins: Origins,
        metrics: &Metrics,
    ) -> Result<Self, CompileError> {
        Ok(Self {
            engine: Engine::compile(loaded, limiter)?,
            tls: tls.map(Arc::new),
            origins,
            config: loaded.config.clone(),
            ready: true,
            names: loaded
                .config
                .routes
                .iter()
                .map(|route| RouteNames::new(&route.name, route.profiles.iter().map(String::as_str)))
                .collect(),
            route_metrics: loaded
                .config
                .routes
                .iter()
                .map(|route| metrics.route(&route.name, &route.profiles))
                .collect(),
            limit_values: LimitValues::new(
                loaded
                    .config
                    .profiles
                    .iter()
                    .flat_map(|p| [p.rate_limit_per_minute, p.quota.map(|q| q.requests)])
                    .flatten(),
            ),
        })
    }

    /// The generation enforced (empty before the first valid configuration).
    pub fn generation(&self) -> &str {
        &self.config.generation
    }
}

/// State shared by every listener.
pub struct Shared {
    /// The configuration in force.
    pub active: ArcSwap<Active>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Pooled client toward the backends.
    pub forwarder: Forwarder,
    /// Largest request head accepted (request target and headers), in bytes.
    pub max_header_bytes: usize,
    /// Largest body read to check a signed digest (`--max-signed-body-bytes`).
    pub max_signed_body_bytes: usize,
    /// Longest wait for the next part of a request body (`--body-read-timeout`).
    pub body_read_timeout: Duration,
    /// Rate-limit counts (and the replay caches of HttpSignature profiles), kept across
    /// reloads.
    pub limiter: Arc<Limits>,
    /// Where audit lines go.
    pub audit: Arc<AuditLog>,
    /// Asks OAuth2 introspection endpoints about opaque tokens (one call per token at once,
    /// within a budget).
    pub introspector: Introspector,
}

/// The sizes and waits the request path bounds.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Largest request head accepted (`--max-header-bytes`).
    pub max_header_bytes: usize,
    /// Largest body read to check a signed digest (`--max-signed-body-bytes`).
    pub max_signed_body_bytes: usize,
    /// Longest wait for the next part of a request body (`--body-read-timeout`).
    pub body_read_timeout: Duration,
}

impl Shared {
    /// Shared state starting from `active`.
    pub fn new(
        active: Active,
        metrics: Metrics,
        forwarder: Forwarder,
        bounds: Bounds,
        limiter: Arc<Limits>,
        audit: Arc<AuditLog>,
        introspector: Introspector,
    ) -> Arc<Self> {
        metrics.enforcing(active.generation(), active.ready);
        metrics.certificates(active.tls.as_deref().map_or(&[], ServerTls::expiry));
        Arc::new(Self {
            active: ArcSwap::from_pointee(active),
            metrics,
            forwarder,
            max_header_bytes: bounds.max_header_bytes,
            max_signed_body_bytes: bounds.max_signed_body_bytes,
            body_read_timeout: bounds.body_read_timeout,
            limiter,
            audit,
            introspector,
        })
    }

    /// Puts `active` in force.
    pub fn swap(&self, active: Active) {
        self.metrics.enforcing(active.generation(), active.ready);
        self.metrics
            .certificates(active.tls.as_deref().map_or(&[], ServerTls::expiry));
        self.active.store(Arc::new(active));
    }
}
