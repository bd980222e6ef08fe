//! Prometheus metrics in a private registry, rendered by the admin listener.
//!
//! Labels are route and profile names, decisions, status classes and fixed kinds: all
//! bounded by the configuration, never an identity or anything secret.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the sidecar exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    rate_limited: IntCounterVec,
    reloads: IntCounterVec,
    backend_errors: IntCounterVec,
    config_info: IntGaugeVec,
    ready: IntGauge,
    certificate_expiry: IntGaugeVec,
    connections_open: IntGaugeVec,
    connections_refused: IntCounterVec,
    connections_timed_out: IntCounterVec,
    connections_reset_abuse: IntCounterVec,
    introspections_pending: IntGauge,
}

/// The request metrics of one route, resolved when the configuration is loaded: its latency
/// histogram and, per profile, the counter of calls admitted and answered 2xx (the common
/// case), so that recording them hashes no label and takes no lock.
#[derive(Clone)]
pub struct RouteMetrics {
    latency: Histogram,
    allowed: Box<[(Box<str>, IntCounter)]>,
}

/// `portcullis_requests_total`'s status class.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The metrics of the shared limits store.
#[derive(Clone)]
pub struct LimitsStoreMetrics {
    mode: IntGaugeVec,
    round_trip: prometheus::Histogram,
    errors: IntCounter,
}

impl LimitsStoreMetrics {
    /// The counts now in force (`shared` or `local_share`).
    pub fn mode(&self, mode: &str) {
        for m in ["shared", "local_share"] {
            self.mode.with_label_values(&[m]).set(i64::from(m == mode));
        }
    }

    /// One call to the store.
    pub fn round_trip(&self, took: Duration, failed: bool) {
        self.round_trip.observe(took.as_secs_f64());
        if failed {
            self.errors.inc();
        }
    }
}

/// The connection metrics of one listener, resolved once (nothing is looked up per
/// connection).
#[derive(Clone)]
pub struct ListenerMetrics {
    /// `portcullis_connections_open{listener}`.
    pub open: IntGauge,
    /// `portcullis_connections_refused_total{listener}`.
    pub refused: IntCounter,
    /// `portcullis_connections_timed_out_total{listener, phase="handshake"}`.
    pub handshake_timeouts: IntCounter,
    /// `portcullis_connections_timed_out_total{listener, phase="idle"}`.
    pub idle_timeouts: IntCounter,
    /// `portcullis_connections_timed_out_total{listener, phase="send"}`.
    pub send_timeouts: IntCounter,
    /// `portcullis_connections_closed_for_resets_total{listener}`.
    pub reset_abuse: IntCounter,
}

/// Outcome of a configuration reload attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    Ok,
    Error,
}

/// Why a forwarded call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The backend refused or did not accept the connection.
    Connect,
    /// The backend did not answer in time.
    Timeout,
    /// The connection failed mid-call.
    Protocol,
    /// The route's backend kind is not served by this sidecar.
    Unsupported,
    /// An OAuth2 introspection endpoint failed (the call was answered 503).
    Introspection,
    /// An OpenID provider of a sign-in was not discovered, or its token endpoint failed.
    Login,
}

impl BackendErrorKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::Unsupported => "unsupported",
            Self::Introspection => "introspection",
            Self::Login => "login",
        }
    }
}

impl Metrics {
    /// Creates the metrics in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "portcullis_requests_total",
                "Requests by route, profile, decision and status class.",
            ),
            &["route", "profile", "decision", "status_class"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Time from the request to the response headers, by route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "portcullis_rate_limit_rejections_total",
                "Hits rejected by a rate limit, by scope.",
            ),
            &["scope"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new("portcullis_config_reloads_total", "Configuration loads by result."),
            &["result"],
        )
        .expect("valid metric");
        let backend_errors = IntCounterVec::new(
            Opts::new(
                "portcullis_backend_errors_total",
                "Forwarded calls that failed, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let config_info = IntGaugeVec::new(
            Opts::new(
                "portcullis_config_info",
                "The configuration generation enforced (value 1).",
            ),
            &["generation"],
        )
        .expect("valid metric");
        let ready =
            IntGauge::new("portcullis_ready", "1 once a valid configuration is enforced.").expect("valid metric");
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "portcullis_certificate_expiry_seconds",
                "notAfter of each route's client-facing certificate, in Unix seconds.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let connections_open = IntGaugeVec::new(
            Opts::new("portcullis_connections_open", "Connections open, by listener."),
            &["listener"],
        )
        .expect("valid metric");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "portcullis_connections_refused_total",
                "Connections closed as soon as accepted because the listener was full (--max-connections), by listener.",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let connections_timed_out = IntCounterVec::new(
            Opts::new(
                "portcullis_connections_timed_out_total",
                "Connections closed by a timeout, by listener and phase (handshake: no HTTP within --handshake-timeout; idle: no request for --idle-timeout, or no whole HTTP/1.1 head within --header-read-timeout; send: an answer the client took nothing of for --idle-timeout, its HTTP/1.1 connection closed or its HTTP/2 stream reset).",
            ),
            &["listener", "phase"],
        )
        .expect("valid metric");
        let connections_reset_abuse = IntCounterVec::new(
            Opts::new(
                "portcullis_connections_closed_for_resets_total",
                "HTTP/2 connections closed because the client reset most of its requests after they were forwarded (at least 100, and more than half), by listener.",
            ),
            &["listener"],
        )
        .expect("valid metric");
        let introspections_pending = IntGauge::new(
            "portcullis_introspections_pending",
            "Opaque tokens being introspected now (at the last scrape).",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(introspections_pending.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_refused.clone()),
            Box::new(connections_timed_out.clone()),
            Box::new(connections_reset_abuse.clone()),
            Box::new(latency.clone()),
            Box::new(rate_limited.clone()),
            Box::new(reloads.clone()),
            Box::new(backend_errors.clone()),
            Box::new(config_info.clone()),
            Box::new(ready.clone()),
            Box::new(certificate_expiry.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            latency,
            rate_limited,
            reloads,
            backend_errors,
            config_info,
            ready,
            certificate_expiry,
            connections_open,
            connections_refused,
            connections_timed_out,
            connections_reset_abuse,
            introspections_pending,
        }
    }

    /// Records how many tokens are being introspected now.
    pub fn introspections_pending(&self, n: usize) {
        self.introspections_pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The connection metrics of the listener named `listener` (`inbound`, `inbound_tls`,
    /// `egress`, `admin`), all exported from now on (at zero).
    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        ListenerMetrics {
            open: self.connections_open.with_label_values(&[listener]),
            refused: self.connections_refused.with_label_values(&[listener]),
            handshake_timeouts: self.connections_timed_out.with_label_values(&[listener, "handshake"]),
            idle_timeouts: self.connections_timed_out.with_label_values(&[listener, "idle"]),
            send_timeouts: self.connections_timed_out.with_label_values(&[listener, "send"]),
            reset_abuse: self.connections_reset_abuse.with_label_values(&[listener]),
        }
    }

    /// Counts one request and its latency.
    pub fn request(&self, route: &str, profile: &str, decision: &str, status: u16, latency: Duration) {
        self.requests
            .with_label_values(&[route, profile, decision, status_class(status)])
            .inc();
        self.latency.with_label_values(&[route]).observe(latency.as_secs_f64());
    }

    /// The request metrics of a route, resolved once per configuration ([`RouteMetrics`]).
    pub fn route(&self, route: &str, profiles: &[String]) -> RouteMetrics {
        RouteMetrics {
            latency: self.latency.with_label_values(&[route]),
            allowed: profiles
                .iter()
                .map(|profile| {
                    let counter = self.requests.with_label_values(&[route, profile, "allow", "2xx"]);
                    (profile.as_str().into(), counter)
                })
                .collect(),
        }
    }

    /// Counts one request of the route `resolved` is for, as [`Metrics::request`] does,
    /// looking nothing up when it was admitted and answered 2xx.
    pub fn request_on(
        &self,
        resolved: &RouteMetrics,
        route: &str,
        profile: &str,
        decision: &str,
        status: u16,
        latency: Duration,
    ) {
        let class = status_class(status);
        match resolved.allowed.iter().find(|(p, _)| **p == *profile) {
            Some((_, counter)) if decision == "allow" && class == "2xx" => counter.inc(),
            _ => self
                .requests
                .with_label_values(&[route, profile, decision, class])
                .inc(),
        }
        resolved.latency.observe(latency.as_secs_f64());
    }

    /// Counts a rate-limit rejection (`scope`: `org`, `profile`, `consumer`, `quota`, `auth_failures`,
    /// `introspection` or `introspection_client`).
    pub fn rate_limited(&self, scope: &str) {
        self.rate_limited.with_label_values(&[scope]).inc();
    }

    /// Counts a reload attempt.
    pub fn reload(&self, result: ReloadResult) {
        let label = match result {
            ReloadResult::Ok => "ok",
            ReloadResult::Error => "error",
        };
        self.reloads.with_label_values(&[label]).inc();
    }

    /// Counts a failed forward.
    pub fn backend_error(&self, kind: BackendErrorKind) {
        self.backend_errors.with_label_values(&[kind.as_str()]).inc();
    }

    /// Records the generation now enforced and whether it is a real (ready) configuration.
    pub fn enforcing(&self, generation: &str, ready: bool) {
        self.config_info.reset();
        self.config_info.with_label_values(&[generation]).set(1);
        self.ready.set(i64::from(ready));
    }

    /// Records the notAfter (Unix seconds) of each route's certificate now served.
    pub fn certificates(&self, expiry: &[(String, i64)]) {
        self.certificate_expiry.reset();
        for (route, not_after) in expiry {
            self.certificate_expiry.with_label_values(&[route]).set(*not_after);
        }
    }

    /// The metrics of the shared limits store, registered when one is configured.
    pub fn limits_store(&self) -> LimitsStoreMetrics {
        let mode = IntGaugeVec::new(
            Opts::new(
                "portcullis_limits_store_mode",
                "1 for the counts in force: shared (the store), local_share (the store is unavailable: this replica's share of each limit).",
            ),
            &["mode"],
        )
        .expect("valid metric");
        let round_trip = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "portcullis_limits_store_round_trip_seconds",
                "Calls to the limits store, requests waiting and blocks reserved ahead.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ]),
        )
        .expect("valid metric");
        let errors = IntCounter::new(
            "portcullis_limits_store_errors_total",
            "Calls to the limits store that failed or timed out.",
        )
        .expect("valid metric");
        for c in [
            Box::new(mode.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(round_trip.clone()),
            Box::new(errors.clone()),
        ] {
            if let Err(e) = self.registry.register(c) {
                tracing::warn!(error = %e, "cannot register a metric");
            }
        }
        LimitsStoreMetrics {
            mode,
            round_trip,
            errors,
        }
    }

    /// Adds a counter kept elsewhere (the audit log's drops) to the exposition.
    pub fn register_counter(&self, counter: prometheus::IntCounter) {
        if let Err(e) = self.registry.register(Box::new(counter)) {
            tracing::warn!(error = %e, "cannot register a metric");
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on invalid metric families, which `new` rules out.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
